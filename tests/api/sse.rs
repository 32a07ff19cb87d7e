//! A minimal Server-Sent Events client for the tests: reads a streaming reqwest response and
//! parses `event:`/`data:`/`id:` frames (CRLF line ends), skipping `: heartbeat` comments.

use serde_json::Value;

use crate::helpers::DEADLINE;

/// One parsed event.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
    pub id: Option<u64>,
}

/// Reads events from a streaming response.
pub struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// Every byte received, for framing checks.
    pub raw: Vec<u8>,
    /// `: heartbeat` comments seen.
    pub heartbeats: usize,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        Self {
            response,
            buffer: vec![],
            raw: vec![],
            heartbeats: 0,
        }
    }

    /// The response headers.
    pub fn header(&self, name: &str) -> String {
        self.response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 4).collect();
                let text = String::from_utf8(frame).unwrap();
                if text.starts_with(':') {
                    self.heartbeats += 1;
                    continue;
                }
                return Some(parse(&text));
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("the stream sends something in time")
                .expect("the stream is readable");
            match chunk {
                Some(bytes) => {
                    self.raw.extend_from_slice(&bytes);
                    self.buffer.extend_from_slice(&bytes);
                }
                None => {
                    assert!(self.buffer.is_empty(), "a partial frame at the end");
                    return None;
                }
            }
        }
    }

    /// The next bytes received, unparsed (for checking heartbeats while nothing else happens).
    pub async fn raw_chunk(&mut self) -> Vec<u8> {
        assert!(self.buffer.is_empty(), "unparsed bytes are pending");
        let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
            .await
            .expect("the stream sends something in time")
            .expect("the stream is readable")
            .expect("the stream is still open");
        self.raw.extend_from_slice(&chunk);
        chunk.to_vec()
    }

    /// Every remaining event until the stream ends.
    pub async fn collect(&mut self) -> Vec<SseEvent> {
        let mut events = vec![];
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn parse(frame: &str) -> SseEvent {
    let mut name = String::new();
    let mut data = Value::Null;
    let mut id = None;
    for line in frame.split("\r\n").filter(|line| !line.is_empty()) {
        let (field, value) = line.split_once(": ").expect("a field line");
        match field {
            "event" => name = value.to_owned(),
            "data" => data = serde_json::from_str(value).expect("data is JSON"),
            "id" => id = Some(value.parse().expect("a numeric id")),
            other => panic!("unexpected field {other} in {frame:?}"),
        }
    }
    SseEvent { name, data, id }
}

/// The names of `events`.
pub fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|event| event.name.as_str()).collect()
}
