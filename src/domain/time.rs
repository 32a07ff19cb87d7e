//! Wall-clock timestamps in the wire format `2026-11-23T22:13:18.008418+00:00`.
//! The text form has a fixed width, so text order is time order (SQLite sorts them as TEXT).

use std::fmt;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now())
    }

    /// This instant plus `seconds` (fractions kept to the microsecond); `None` when the result
    /// is out of range or past year 9999 (which the fixed-width text form cannot hold).
    pub fn plus_seconds(self, seconds: f64) -> Option<Self> {
        if !seconds.is_finite() || seconds.abs() > 1e11 {
            return None;
        }
        let micros = (seconds * 1_000_000.0).round() as i64;
        let time = self.0.checked_add_signed(Duration::microseconds(micros))?;
        (time.format("%Y").to_string().len() == 4).then_some(Self(time))
    }

    /// How long from now until this instant; zero if it is in the past.
    pub fn until(self) -> std::time::Duration {
        self.after(Self::now())
    }

    /// How long after `earlier` this instant is; zero if it is not after it.
    pub fn after(self, earlier: Timestamp) -> std::time::Duration {
        (self.0 - earlier.0).to_std().unwrap_or_default()
    }

    /// Parses the wire format (any RFC 3339 offset is accepted).
    pub fn parse(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| Self(time.with_timezone(&Utc)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `use_z = false` gives `+00:00`, as the official server writes it.
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Micros, false))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("invalid timestamp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_microseconds_and_explicit_offset() {
        let time = Timestamp::parse("2026-11-23T22:13:18.008418Z").unwrap();
        assert_eq!(time.to_string(), "2026-11-23T22:13:18.008418+00:00");
        assert_eq!(Timestamp::parse(&time.to_string()), Some(time));
    }

    #[test]
    fn plus_seconds_keeps_fractions() {
        let time = Timestamp::parse("2026-11-23T22:13:18.000000+00:00").unwrap();
        assert_eq!(
            time.plus_seconds(1.5).unwrap().to_string(),
            "2026-11-23T22:13:19.500000+00:00"
        );
        assert_eq!(time.plus_seconds(1e12), None);
        assert_eq!(time.plus_seconds(3e11), None);
        assert_eq!(time.plus_seconds(f64::NAN), None);
    }
}
