//! Requests from web pages: the `Host` check (against DNS rebinding), the `Origin` check on
//! requests that change something (against cross-site requests, which need no CORS preflight
//! when sent as `text/plain`), and CORS, all from `server.allowed_hosts` and
//! `server.cors_allowed_origins`. A request without `Origin` (curl, the SDKs outside a browser)
//! passes the origin check untouched. Refusals are `ApiError`s; no status is chosen here.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{RequestHead, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use crate::config::ServerSettings;
use crate::error::ApiError;

/// Which hosts the server answers to and which web origins may call it; built once from
/// `[server]`.
#[derive(Debug)]
pub struct BrowserPolicy {
    hosts: Allowed,
    origins: Allowed,
}

/// The response headers the SDKs read, which a page's script may read too.
const EXPOSED_HEADERS: [&str; 4] = [
    "location",
    "content-location",
    "x-pagination-total",
    "x-pagination-next",
];

/// Seconds a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECONDS: usize = 3600;

/// The names a server answers to whenever it checks hosts at all (with its own address).
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl BrowserPolicy {
    /// The policy of `server`: with `allowed_hosts = []`, a server bound to loopback answers to
    /// the loopback names and its own address, one bound elsewhere to any host; a list adds its
    /// names to those; `"*"` anywhere means any host (and any origin in `cors_allowed_origins`).
    pub fn new(server: &ServerSettings) -> BrowserPolicy {
        let wildcard = |entries: &[String]| entries.iter().any(|entry| entry == "*");
        let hosts = if wildcard(&server.allowed_hosts)
            || (server.allowed_hosts.is_empty() && !is_loopback(&server.host))
        {
            Allowed::Any
        } else {
            let names = LOOPBACK_NAMES
                .into_iter()
                .chain(std::iter::once(server.host.as_str()))
                .chain(server.allowed_hosts.iter().map(String::as_str))
                .filter_map(host_name)
                .collect();
            Allowed::Only(names)
        };
        let origins = if wildcard(&server.cors_allowed_origins) {
            Allowed::Any
        } else {
            // Browsers send scheme and host in lower case; the comparison is exact, as in CORS.
            Allowed::Only(
                server
                    .cors_allowed_origins
                    .iter()
                    .map(|origin| origin.to_ascii_lowercase())
                    .collect(),
            )
        };
        BrowserPolicy { hosts, origins }
    }

    /// Refuses a request whose `Host` the server does not answer to, and a request that changes
    /// something (POST, PUT, PATCH, DELETE) or asks to (a CORS preflight) from a web page whose
    /// `Origin` is not allowed. A request without `Host` or without `Origin` comes from no
    /// browser and passes that check.
    pub fn check(&self, head: &RequestHead) -> Result<(), ApiError> {
        if let Some(host) = request_host(head) {
            let served = match host.to_str() {
                Ok(host) => host_name(host).is_some_and(|name| self.hosts.contains(&name)),
                Err(_) => false,
            };
            if !served && !matches!(self.hosts, Allowed::Any) {
                return Err(ApiError::HostNotAllowed {
                    host: String::from_utf8_lossy(host.as_bytes()).into_owned(),
                });
            }
        }
        if let Some(origin) = head.headers.get(header::ORIGIN) {
            if changes_something(head) && !self.allows_origin(origin, head) {
                return Err(ApiError::OriginNotAllowed {
                    origin: String::from_utf8_lossy(origin.as_bytes()).into_owned(),
                });
            }
        }
        Ok(())
    }

    /// Whether a page of `origin` may call the API: it is listed, or it is the server's own
    /// origin (the `Host` the request was sent to, which `check` has accepted).
    pub fn allows_origin(&self, origin: &HeaderValue, head: &RequestHead) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.origins.contains(origin) {
            return true;
        }
        let authority = origin.split_once("://").map(|(_, authority)| authority);
        let host = request_host(head).and_then(|host| host.to_str().ok());
        matches!((authority, host), (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host))
    }
}

/// The CORS middleware of `policy`: preflights of allowed origins are answered, their responses
/// carry `Access-Control-Allow-Origin` and expose the headers the SDKs read. No credentials.
pub fn cors(policy: Arc<BrowserPolicy>) -> Cors {
    Cors::default()
        .allowed_origin_fn(move |origin, head| policy.allows_origin(origin, head))
        .allow_any_method()
        .allow_any_header()
        .expose_headers(EXPOSED_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE_SECONDS)
}

/// Middleware: answers a request the policy refuses with its error, before CORS, routing or
/// the body are looked at; passes the others on.
/// The policy is the app data `web::Data<BrowserPolicy>`.
pub async fn refuse_foreign(
    policy: web::Data<BrowserPolicy>,
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match policy.check(request.head()) {
        Err(refusal) => Ok(request.error_response(refusal).map_into_right_body()),
        Ok(()) => next
            .call(request)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

impl std::fmt::Display for BrowserPolicy {
    /// `hosts=localhost,127.0.0.1,::1 origins=none`, for the start-up log.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "hosts={} origins={}", self.hosts, self.origins)
    }
}

/// Hosts or origins: any, or these.
#[derive(Debug)]
enum Allowed {
    Any,
    Only(HashSet<String>),
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowed::Any => formatter.write_str("any"),
            Allowed::Only(values) if values.is_empty() => formatter.write_str("none"),
            Allowed::Only(values) => {
                let mut values: Vec<&str> = values.iter().map(String::as_str).collect();
                values.sort_unstable();
                formatter.write_str(&values.join(","))
            }
        }
    }
}

impl Allowed {
    fn contains(&self, value: &str) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(values) => values.contains(value),
        }
    }
}

/// The `Host` header (browsers always send one).
fn request_host(head: &RequestHead) -> Option<&HeaderValue> {
    head.headers.get(header::HOST)
}

/// Whether a request changes something or is the preflight of one that may.
fn changes_something(head: &RequestHead) -> bool {
    let method = &head.method;
    *method == Method::POST
        || *method == Method::PUT
        || *method == Method::PATCH
        || *method == Method::DELETE
        || (*method == Method::OPTIONS
            && head
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD))
}

/// Whether the listen address is a loopback one (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(listen_host: &str) -> bool {
    listen_host.eq_ignore_ascii_case("localhost")
        || host_name(listen_host)
            .and_then(|name| name.parse::<IpAddr>().ok())
            .is_some_and(|address| address.is_loopback())
}

/// The host name of `host[:port]` (a `Host` header or a setting), in lower case, without the
/// port, the brackets of an IPv6 address or a trailing dot; `None` when it is malformed.
fn host_name(authority: &str) -> Option<String> {
    let authority = authority.trim().to_ascii_lowercase();
    let name = if let Some(bracketed) = authority.strip_prefix('[') {
        let (address, after) = bracketed.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        address.to_owned()
    } else if authority.parse::<Ipv6Addr>().is_ok() {
        // A bare IPv6 address, as a setting may give it.
        authority
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name.to_owned(),
            Some(_) => return None,
            None => authority,
        }
    };
    let name = name.trim_end_matches('.');
    (!name.is_empty()).then(|| name.to_owned())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn server(host: &str, allowed_hosts: &[&str], origins: &[&str]) -> ServerSettings {
        ServerSettings {
            host: host.into(),
            port: 8123,
            workers: 1,
            body_limit_bytes: 1024,
            shutdown_grace_seconds: 1.0,
            allowed_hosts: allowed_hosts.iter().map(|host| (*host).into()).collect(),
            cors_allowed_origins: origins.iter().map(|origin| (*origin).into()).collect(),
            keep_alive_seconds: 75.0,
        }
    }

    /// Whether a POST with these headers passes the policy.
    fn passes(policy: &BrowserPolicy, headers: &[(&str, &str)]) -> bool {
        let mut request = TestRequest::post();
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        policy.check(request.to_srv_request().head()).is_ok()
    }

    #[test]
    fn host_names_drop_the_port_brackets_case_and_trailing_dot() {
        for (authority, expected) in [
            ("localhost:8123", Some("localhost")),
            ("LocalHost.", Some("localhost")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("[::1]:8123", Some("::1")),
            ("[::1]", Some("::1")),
            ("::1", Some("::1")),
            ("evil.example:8123", Some("evil.example")),
            ("localhost:80:evil", None),
            ("localhost:", None),
            ("[::1]x", None),
            ("", None),
        ] {
            assert_eq!(host_name(authority).as_deref(), expected, "{authority}");
        }
    }

    #[test]
    fn a_loopback_server_answers_only_to_loopback_names_and_its_own_address() {
        for listen in ["127.0.0.1", "127.0.0.2", "localhost", "::1"] {
            let policy = BrowserPolicy::new(&server(listen, &[], &[]));
            for host in [
                "localhost:8123",
                "127.0.0.1:8123",
                "[::1]:8123",
                "LOCALHOST",
            ] {
                assert!(passes(&policy, &[("host", host)]), "{listen} {host}");
            }
            assert!(
                !passes(&policy, &[("host", "evil.example:8123")]),
                "{listen}"
            );
            assert!(
                !passes(&policy, &[("host", "localhost:1:evil")]),
                "{listen}"
            );
        }
        let policy = BrowserPolicy::new(&server("127.0.0.2", &[], &[]));
        assert!(passes(&policy, &[("host", "127.0.0.2:8123")]));
    }

    #[test]
    fn a_server_bound_elsewhere_answers_to_any_host_unless_a_list_is_given() {
        let any = BrowserPolicy::new(&server("0.0.0.0", &[], &[]));
        assert!(passes(&any, &[("host", "evil.example:8123")]));
        let listed = BrowserPolicy::new(&server("0.0.0.0", &["Spindle.Example.com"], &[]));
        assert!(passes(&listed, &[("host", "spindle.example.com")]));
        assert!(passes(&listed, &[("host", "localhost:8123")]));
        assert!(passes(&listed, &[("host", "0.0.0.0:8123")]));
        assert!(!passes(&listed, &[("host", "evil.example")]));
        let wildcard = BrowserPolicy::new(&server("127.0.0.1", &["*"], &[]));
        assert!(passes(&wildcard, &[("host", "evil.example:8123")]));
    }

    #[test]
    fn a_request_without_host_or_origin_passes() {
        let policy = BrowserPolicy::new(&server("127.0.0.1", &[], &[]));
        assert!(passes(&policy, &[]));
        assert!(passes(&policy, &[("host", "127.0.0.1:8123")]));
    }

    #[test]
    fn an_origin_passes_when_listed_or_the_servers_own_and_only_changes_are_checked() {
        let policy = BrowserPolicy::new(&server("127.0.0.1", &[], &["http://app.example:3000"]));
        let host = ("host", "127.0.0.1:8123");
        assert!(passes(
            &policy,
            &[host, ("origin", "http://app.example:3000")]
        ));
        assert!(passes(
            &policy,
            &[host, ("origin", "http://127.0.0.1:8123")]
        ));
        assert!(!passes(&policy, &[host, ("origin", "http://evil.example")]));
        assert!(!passes(&policy, &[host, ("origin", "null")]));
        assert!(!passes(
            &policy,
            &[host, ("origin", "http://127.0.0.1:9999")]
        ));
        let read = TestRequest::get()
            .insert_header(host)
            .insert_header(("origin", "http://evil.example"))
            .to_srv_request();
        assert!(policy.check(read.head()).is_ok());
        let preflight = TestRequest::default()
            .method(Method::OPTIONS)
            .insert_header(host)
            .insert_header(("origin", "http://evil.example"))
            .insert_header(("access-control-request-method", "POST"))
            .to_srv_request();
        assert!(policy.check(preflight.head()).is_err());
        let any = BrowserPolicy::new(&server("127.0.0.1", &[], &["*"]));
        assert!(passes(&any, &[host, ("origin", "http://evil.example")]));
    }
}
