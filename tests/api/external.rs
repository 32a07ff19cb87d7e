//! http and command nodes and tools against real servers and scripts on loopback.
