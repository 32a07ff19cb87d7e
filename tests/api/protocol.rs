//! Mistakes below the API: a body that cannot be read, a URL or headers over the limits, a
//! `Last-Event-ID` that is not an event id, repeated query parameters. Each gets a JSON
//! `{"detail": …}`, except heads actix-web cannot parse at all, which it answers itself with an
//! empty body and a closed connection.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app, Reply, TestApp};
use crate::validation::refused;

/// A response read off the wire.
struct RawReply {
    status: u16,
    /// Header names in lowercase, with their values.
    headers: Vec<(String, String)>,
    body: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The `detail` of a JSON error body, checking that it is one.
    fn detail(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{} {}",
            self.status,
            self.body
        );
        let body: Value = serde_json::from_str(&self.body).expect("a JSON body");
        body["detail"].as_str().expect("a detail").to_owned()
    }
}

/// Sends `request` as it is on a new connection and reads the answer until the server closes
/// the connection (every request here asks it to, or is one it closes after).
async fn exchange(app: &TestApp, request: &[u8]) -> RawReply {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // The server may answer and close before it has read everything; that is not a failure.
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(count) => bytes.extend_from_slice(&buffer[..count]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    RawReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn a_body_with_a_broken_chunked_encoding_gets_a_json_400_and_writes_nothing() {
    let app = spawn_app().await;
    let before = app.row_counts().await;
    let heads = "POST /threads HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    for chunks in [
        "zz\r\n{}\r\n0\r\n\r\n",
        "2\r\n{}XX0\r\n\r\n",
        "5\r\n{}\r\n0\r\n\r\n",
    ] {
        let reply = exchange(&app, format!("{heads}{chunks}").as_bytes()).await;
        assert_eq!(reply.status, 400, "{chunks:?}: {}", reply.body);
        let detail = reply.detail();
        assert!(
            detail.starts_with("Malformed request body: "),
            "{chunks:?}: {detail}"
        );
    }
    assert_eq!(app.row_counts().await, before);
    // An endpoint that answers without reading the body keeps its answer; actix-web then
    // closes the connection without a second response.
    let ignored = "GET /ok HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    let reply = exchange(&app, ignored.as_bytes()).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "{\"ok\":true}"));
}

#[tokio::test]
async fn a_url_over_the_limit_gets_a_json_414() {
    let app = spawn_app().await;
    let within = format!("/threads/search?padding={}", "a".repeat(8000));
    let reply = app.request(Method::POST, &within, Some(json!({}))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    for length in [8193, 20_000, 60_000] {
        let path = format!("/ok?{}", "a".repeat(length - 4));
        let reply = app.get(&path).await;
        assert_eq!(reply.status, 414, "{length}: {:?}", reply.body);
        assert_eq!(
            reply.detail(),
            format!("URL too long: {length} bytes, at most 8192")
        );
    }
}

#[tokio::test]
async fn headers_over_the_limits_get_a_json_431() {
    let app = spawn_app().await;
    let send = |headers: HeaderMap| {
        app.client
            .get(format!("{}/ok", app.address))
            .headers(headers)
            .send()
    };
    let many = |count: usize| -> HeaderMap {
        (0..count)
            .map(|index| {
                let name = HeaderName::try_from(format!("x-header-{index}")).unwrap();
                (name, HeaderValue::from_static("v"))
            })
            .collect()
    };
    let big = |bytes: usize| -> HeaderMap {
        let value = HeaderValue::try_from("v".repeat(bytes)).unwrap();
        [(HeaderName::from_static("x-big"), value)]
            .into_iter()
            .collect()
    };
    // reqwest adds `accept` and `host` of its own.
    assert_eq!(send(many(60)).await.unwrap().status(), 200);
    assert_eq!(send(big(30_000)).await.unwrap().status(), 200);
    for (headers, expected) in [
        (many(70), "72 headers, at most 64"),
        (many(90), "92 headers, at most 64"),
        // The size counts every header's name and value, `host` and `accept` included.
        (big(40_000), " bytes, at most 32768"),
        (big(100_000), " bytes, at most 32768"),
    ] {
        let reply = send(headers).await.unwrap();
        assert_eq!(reply.status(), 431);
        let body: Value = reply.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("Request headers too large: ") && detail.ends_with(expected),
            "{detail}"
        );
    }
}

#[tokio::test]
async fn heads_actix_web_cannot_parse_get_its_own_empty_answer_and_a_closed_connection() {
    let app = spawn_app().await;
    // Over actix-web's own limits (a head of 128 KiB, 96 headers) and unparseable heads: it
    // answers before any of Spindle's code runs, with an empty body, and closes.
    let huge = format!(
        "GET /ok HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "v".repeat(140_000)
    );
    let many: String = (0..100).map(|index| format!("X-H{index}: v\r\n")).collect();
    let many = format!("GET /ok HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
    let long_url = format!(
        "GET /ok?{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(140_000)
    );
    for (request, status) in [
        (huge, 431),
        (many, 431),
        (long_url, 431),
        ("GARBAGE\r\n\r\n".to_owned(), 400),
        (
            "GET /ok HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n".to_owned(),
            400,
        ),
        (
            "POST /threads HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n{}".to_owned(),
            400,
        ),
    ] {
        let reply = exchange(&app, request.as_bytes()).await;
        let first_line = request.lines().next().unwrap_or_default();
        let first_line = &first_line[..first_line.len().min(40)];
        assert_eq!(reply.status, status, "{first_line}");
        assert_eq!(reply.header("connection"), Some("close"), "{first_line}");
        assert_eq!(reply.body, "", "{first_line}");
    }
    // The server still serves.
    assert_eq!(app.get("/ok").await.status, 200);
}

#[tokio::test]
async fn a_last_event_id_that_is_not_utf8_or_not_an_event_id_is_422() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    app.echo_run(&thread_id, json!({"stream_resumable": true}))
        .await;
    let runs = app.get(&format!("/threads/{thread_id}/runs")).await;
    let run = runs.body[0]["run_id"].as_str().unwrap().to_owned();
    let join = format!("{}/threads/{thread_id}/runs/{run}/stream", app.address);
    for (value, expected) in [
        (&b"\xff\xfe"[..], "Invalid Last-Event-ID: not UTF-8"),
        (&b"caf\xc3\xa9"[..], "Invalid Last-Event-ID 'caf\u{e9}'"),
        (&b"1.5"[..], "Invalid Last-Event-ID '1.5'"),
        (&b"-1"[..], "Invalid Last-Event-ID '-1'"),
    ] {
        let reply = app
            .client
            .get(&join)
            .header("Last-Event-ID", HeaderValue::from_bytes(value).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 422, "{value:?}");
        let body: Value = reply.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.starts_with(expected), "{value:?}: {detail}");
    }
    // `-` still replays everything, and an event id what follows it.
    for value in ["-", "1"] {
        let reply = app
            .client
            .get(&join)
            .header("Last-Event-ID", value)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{value}");
    }
}

#[tokio::test]
async fn a_repeated_query_parameter_takes_its_last_value_on_every_endpoint() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    for _ in 0..3 {
        app.echo_run(&thread_id, json!({})).await;
    }
    let history = format!("/threads/{thread_id}/history");
    let runs = format!("/threads/{thread_id}/runs");
    let checkpoint = app.get(&format!("{history}?limit=1")).await.body[0]["checkpoint_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let count = |reply: &Reply| reply.body.as_array().map_or(0, Vec::len);
    // The last value counts, whatever came before it (even a value that is not valid).
    for (path, expected) in [
        (format!("{history}?limit=bogus&limit=2"), 2),
        (format!("{history}?limit=1&limit=3"), 3),
        (
            format!("{history}?before=nope&before={checkpoint}&limit=1"),
            1,
        ),
        (format!("{runs}?limit=bogus&limit=2"), 2),
        (format!("{runs}?offset=-1&offset=2"), 1),
        (format!("{runs}?status=sleepy&status=success"), 3),
    ] {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        assert_eq!(count(&reply), expected, "{path}");
    }
    // A repeat whose last value is wrong is refused, naming the parameter.
    for (path, expected) in [
        (
            format!("{history}?limit=2&limit=bogus"),
            "Invalid limit bogus",
        ),
        (
            format!("{history}?before={checkpoint}&before=nope"),
            "Invalid checkpoint ID",
        ),
        (format!("{runs}?limit=2&limit=bogus"), "Invalid limit bogus"),
        (
            format!("{runs}?status=success&status=sleepy"),
            "Invalid status 'sleepy'",
        ),
        (
            format!(
                "{runs}/{}/cancel?action=interrupt&action=explode",
                uuid::Uuid::now_v7()
            ),
            "Invalid action 'explode'",
        ),
    ] {
        let method = if path.ends_with("explode") {
            Method::POST
        } else {
            Method::GET
        };
        refused(&app, method, &path, None, 422, expected).await;
    }
    // `stream_mode` and `select` are lists: their repeats add up.
    let run = app.get(&runs).await.body[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let selected = app
        .get(&format!("{runs}?select=run_id&select=status&limit=1"))
        .await;
    let keys: Vec<&String> = selected.body[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["run_id", "status"]);
    let joined = app
        .client
        .get(format!(
            "{}{runs}/{run}/stream?stream_mode=values&stream_mode=updates",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 200);
}
