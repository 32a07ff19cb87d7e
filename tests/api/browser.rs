//! A web page cannot drive Spindle: a cross-site `text/plain` POST (no CORS preflight) and a
//! DNS-rebinding request (`Host` of the attacker's name) are refused and change nothing, while
//! requests without `Origin` (curl, the SDKs), same-origin requests and allowed origins (with
//! CORS) work; `server.allowed_hosts` and a bind to all interfaces behave as documented.

use reqwest::Method;

use crate::helpers::{run_id, spawn_app, spawn_app_with, Reply, TestApp};

/// The origin of the attacker's page.
const EVIL_ORIGIN: &str = "http://evil.example";

/// An origin the tests list in `server.cors_allowed_origins`.
const APP_ORIGIN: &str = "http://app.example:3000";

/// The body a page can send with `text/plain` and no preflight, cancelling every run.
const CANCEL_ALL: &str = r#"{"status": "all"}"#;

/// The server's port.
fn port(app: &TestApp) -> u16 {
    app.address.rsplit(':').next().unwrap().parse().unwrap()
}

/// Sends a request with exactly these extra headers (a `Host` here replaces the client's).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&'static str>,
) -> Reply {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    Reply::read(request.send().await.expect("the request is sent")).await
}

/// With these headers: cancels every run, creates a thread and reads thread `thread_id`.
async fn cancel_create_and_read(
    app: &TestApp,
    headers: &[(&str, String)],
    thread_id: &str,
) -> [Reply; 3] {
    [
        send(app, Method::POST, "/runs/cancel", headers, Some(CANCEL_ALL)).await,
        send(app, Method::POST, "/threads", headers, Some("{}")).await,
        send(
            app,
            Method::GET,
            &format!("/threads/{thread_id}"),
            headers,
            None,
        )
        .await,
    ]
}

/// A header of a reply, as text ("" when absent).
fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .map(|value| value.to_str().unwrap())
        .unwrap_or_default()
}

/// Starts a gated run and waits until it is running at its gate; returns (thread, run).
async fn held_run(app: &TestApp, gate: &str) -> (String, String) {
    let thread_id = app.create_thread().await;
    let run = run_id(&app.gated_run(&thread_id, "hold", gate, "reject").await);
    app.gates.arrivals(gate, 1).await;
    assert_eq!(app.run_status(&thread_id, &run).await, "running");
    (thread_id, run)
}

/// The held run is still running, then finishes normally once its gate opens.
async fn still_runs_to_success(app: &TestApp, gate: &str, thread_id: &str, run: &str) {
    assert_eq!(app.run_status(thread_id, run).await, "running");
    app.gates.open(gate);
    app.join(thread_id, run).await;
    assert_eq!(app.run_status(thread_id, run).await, "success");
}

#[tokio::test]
async fn a_cross_origin_text_plain_post_is_refused_with_403_and_cancels_nothing() {
    let app = spawn_app().await;
    let (thread_id, run) = held_run(&app, "cross-origin").await;
    let before = app.row_counts().await;

    let refused = send(
        &app,
        Method::POST,
        "/runs/cancel",
        &[
            ("content-type", "text/plain;charset=UTF-8".into()),
            ("origin", EVIL_ORIGIN.into()),
        ],
        Some(CANCEL_ALL),
    )
    .await;

    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert!(
        refused.detail().contains(EVIL_ORIGIN)
            && refused.detail().contains("server.cors_allowed_origins"),
        "{}",
        refused.detail()
    );
    assert_eq!(
        header(&refused, "access-control-allow-origin"),
        "",
        "a refused page must not read the answer"
    );
    assert_eq!(app.row_counts().await, before);
    still_runs_to_success(&app, "cross-origin", &thread_id, &run).await;
}

#[tokio::test]
async fn a_dns_rebinding_request_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let (thread_id, run) = held_run(&app, "rebinding").await;
    let before = app.row_counts().await;
    // After rebinding, the page's own name resolves to 127.0.0.1: its requests are same-origin
    // to the browser, with the attacker's name as Host and Origin.
    let rebound = format!("evil.example:{}", port(&app));
    let headers = [
        ("host", rebound.clone()),
        ("origin", format!("http://{rebound}")),
        ("content-type", "text/plain".into()),
    ];

    let replies = cancel_create_and_read(&app, &headers, &thread_id).await;

    for refused in &replies {
        assert_eq!(refused.status, 421, "{:?}", refused.body);
        assert!(
            refused.detail().contains(&rebound)
                && refused.detail().contains("server.allowed_hosts"),
            "{}",
            refused.detail()
        );
    }
    assert_eq!(
        replies[2].body.get("values"),
        None,
        "the thread was not read"
    );
    assert_eq!(app.row_counts().await, before);
    still_runs_to_success(&app, "rebinding", &thread_id, &run).await;
}

#[tokio::test]
async fn requests_without_origin_to_the_loopback_names_work_as_before() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;
    let port = port(&app);
    // As curl sends the README's examples: `-d` makes the body form-encoded, and no Origin.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_owned(),
    ] {
        let headers = [
            ("host", host.clone()),
            ("content-type", "application/x-www-form-urlencoded".into()),
        ];

        let replies = cancel_create_and_read(&app, &headers, &thread_id).await;

        let statuses = replies.each_ref().map(|reply| reply.status);
        // 404: nothing to cancel, which is not a refusal.
        assert_eq!(statuses, [404, 200, 200], "{host}: {:?}", replies[1].body);
        assert_eq!(replies[2].body["thread_id"], thread_id.as_str(), "{host}");
    }
}

#[tokio::test]
async fn a_same_origin_browser_request_works() {
    let app = spawn_app().await;
    let (thread_id, run) = held_run(&app, "same-origin").await;
    for host in [
        format!("127.0.0.1:{}", port(&app)),
        format!("localhost:{}", port(&app)),
    ] {
        let created = send(
            &app,
            Method::POST,
            "/threads",
            &[
                ("host", host.clone()),
                ("origin", format!("http://{host}")),
                ("content-type", "application/json".into()),
            ],
            Some("{}"),
        )
        .await;
        assert_eq!(created.status, 200, "{host}: {:?}", created.body);
    }

    let cancelled = send(
        &app,
        Method::POST,
        &format!("/threads/{thread_id}/runs/{run}/cancel"),
        &[("origin", app.address.clone())],
        None,
    )
    .await;

    assert_eq!(cancelled.status, 202, "{:?}", cancelled.body);
    app.join(&thread_id, &run).await;
    assert_eq!(app.run_status(&thread_id, &run).await, "interrupted");
}

#[tokio::test]
async fn a_foreign_page_may_send_reads_but_cannot_read_the_answers() {
    let app = spawn_app().await;
    let thread_id = app.create_thread().await;

    let read = send(
        &app,
        Method::GET,
        &format!("/threads/{thread_id}"),
        &[("origin", EVIL_ORIGIN.into())],
        None,
    )
    .await;

    assert_eq!(read.status, 200, "{:?}", read.body);
    assert_eq!(header(&read, "access-control-allow-origin"), "");
}

#[tokio::test]
async fn an_allowed_origin_gets_a_cors_preflight_answer_and_its_post_works() {
    let app = spawn_app_with(|settings| {
        settings.server.cors_allowed_origins = vec![APP_ORIGIN.into()];
    })
    .await;
    let preflight_headers = |origin: &str| {
        [
            ("origin", origin.to_owned()),
            ("access-control-request-method", "POST".to_owned()),
            ("access-control-request-headers", "content-type".to_owned()),
        ]
    };

    let preflight = send(
        &app,
        Method::OPTIONS,
        "/threads",
        &preflight_headers(APP_ORIGIN),
        None,
    )
    .await;
    let created = send(
        &app,
        Method::POST,
        "/threads",
        &[
            ("origin", APP_ORIGIN.into()),
            ("content-type", "application/json".into()),
        ],
        Some("{}"),
    )
    .await;
    let foreign = send(
        &app,
        Method::OPTIONS,
        "/threads",
        &preflight_headers(EVIL_ORIGIN),
        None,
    )
    .await;

    assert_eq!(preflight.status, 200, "{:?}", preflight.body);
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        APP_ORIGIN
    );
    assert!(header(&preflight, "access-control-allow-methods").contains("POST"));
    assert!(header(&preflight, "access-control-allow-headers").contains("content-type"));
    assert_eq!(header(&preflight, "access-control-allow-credentials"), "");
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(header(&created, "access-control-allow-origin"), APP_ORIGIN);
    let exposed = header(&created, "access-control-expose-headers").to_ascii_lowercase();
    for name in [
        "location",
        "content-location",
        "x-pagination-total",
        "x-pagination-next",
    ] {
        assert!(
            exposed.split(',').any(|listed| listed.trim() == name),
            "{name} not in {exposed}"
        );
    }
    assert_eq!(foreign.status, 403, "{:?}", foreign.body);
    assert!(
        foreign.detail().contains(EVIL_ORIGIN),
        "{}",
        foreign.detail()
    );
    assert_eq!(header(&foreign, "access-control-allow-origin"), "");
}

#[tokio::test]
async fn allowed_hosts_wildcard_serves_any_host_but_foreign_origins_still_change_nothing() {
    let app = spawn_app_with(|settings| settings.server.allowed_hosts = vec!["*".into()]).await;
    let (thread_id, run) = held_run(&app, "wildcard").await;
    let host = format!("evil.example:{}", port(&app));

    let plain = send(
        &app,
        Method::POST,
        "/threads",
        &[("host", host.clone())],
        Some("{}"),
    )
    .await;
    let from_page = send(
        &app,
        Method::POST,
        "/runs/cancel",
        &[("host", host), ("origin", EVIL_ORIGIN.into())],
        Some(CANCEL_ALL),
    )
    .await;

    assert_eq!(plain.status, 200, "{:?}", plain.body);
    assert_eq!(from_page.status, 403, "{:?}", from_page.body);
    still_runs_to_success(&app, "wildcard", &thread_id, &run).await;
}

#[tokio::test]
async fn a_server_bound_to_all_interfaces_serves_any_host_unless_allowed_hosts_lists_some() {
    let open = spawn_app_with(|settings| settings.server.host = "0.0.0.0".into()).await;
    let listed = spawn_app_with(|settings| {
        settings.server.host = "0.0.0.0".into();
        settings.server.allowed_hosts = vec!["spindle.example".into()];
    })
    .await;
    let (thread_id, run) = held_run(&open, "all-interfaces").await;

    let any_host = send(
        &open,
        Method::POST,
        "/threads",
        &[("host", format!("anything.example:{}", port(&open)))],
        Some("{}"),
    )
    .await;
    let from_page = send(
        &open,
        Method::POST,
        "/runs/cancel",
        &[("origin", EVIL_ORIGIN.into())],
        Some(CANCEL_ALL),
    )
    .await;
    let mut listed_replies = Vec::new();
    for host in [
        "spindle.example".to_owned(),
        format!("SPINDLE.example:{}", port(&listed)),
        format!("localhost:{}", port(&listed)),
        format!("0.0.0.0:{}", port(&listed)),
        format!("anything.example:{}", port(&listed)),
    ] {
        let reply = send(&listed, Method::GET, "/ok", &[("host", host.clone())], None).await;
        listed_replies.push((host, reply.status));
    }

    assert_eq!(any_host.status, 200, "{:?}", any_host.body);
    assert_eq!(from_page.status, 403, "{:?}", from_page.body);
    still_runs_to_success(&open, "all-interfaces", &thread_id, &run).await;
    let statuses: Vec<u16> = listed_replies.iter().map(|(_, status)| *status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 421], "{listed_replies:?}");
}
