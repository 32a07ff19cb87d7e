//! The HTTP endpoint target of `http` nodes and tools: a checked URL and headers (secrets kept
//! out of logs and `Debug`), a JSON POST, and the answer fed to a sink as it arrives.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{StatusCode, Url};

use super::failure::{chain, quote, Failure, FailureKind, QUOTE_CHARS};
use crate::engine::toml::retry::retry_after;

/// An HTTP endpoint: a URL, extra headers, and the client that reaches it.
pub(in crate::engine::toml) struct Endpoint {
    url: Url,
    /// May hold secrets: never logged, and `Debug` shows only their names.
    headers: HeaderMap,
    client: reqwest::Client,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.describe())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Checks and builds an endpoint of `owner` ("node 'x'", "tool 'x'").
    pub(super) fn new(
        owner: &str,
        url: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|error| {
            format!("{owner} has url {url:?}, which is not a valid URL ({error})")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{owner} has url {:?}; expected an http or https URL",
                url.as_str()
            ));
        }
        let mut header_map = HeaderMap::new();
        for (name, value) in headers {
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("{owner} has header {name:?}, which is not a valid header name")
            })?;
            // The value is not quoted: headers often carry credentials.
            let header_value = HeaderValue::from_str(value).map_err(|_| {
                format!("{owner} has a value for header {name:?} that is not a valid header value")
            })?;
            header_map.insert(header_name, header_value);
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|error| format!("{owner}: cannot build an HTTP client ({error})"))?;
        Ok(Endpoint {
            url,
            headers: header_map,
            client,
        })
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{}{}",
            self.url.origin().ascii_serialization(),
            self.url.path()
        )
    }

    /// POSTs `body` as JSON; a non-2xx status fails with the status and the start of the body.
    pub(super) async fn post(
        &self,
        body: Bytes,
        sink: impl FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/x-ndjson, application/json, text/plain")
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            .map_err(|error| {
                Failure::new(
                    FailureKind::Transport,
                    format!(
                        "could not reach {}: {}",
                        self.describe(),
                        chain(&error.without_url())
                    ),
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_failure(status, response).await);
        }
        self.read(response, sink).await
    }

    /// The failure a non-2xx answer gives: its status, the wait it asks for, and the start of
    /// its body.
    async fn status_failure(&self, status: StatusCode, response: reqwest::Response) -> Failure {
        let retry_after = retry_after(status, response.headers());
        let mut start = Vec::new();
        // Only the start of the body is quoted, so reading stops there; a broken body changes
        // nothing about the failure.
        let _ = self
            .read(response, |chunk| {
                start.extend_from_slice(chunk);
                if start.len() > QUOTE_CHARS * 4 {
                    return Err(Failure::new(FailureKind::Output, "enough is quoted"));
                }
                Ok(())
            })
            .await;
        Failure::new(
            FailureKind::Status {
                code: status.as_u16(),
                retry_after,
            },
            format!(
                "answered HTTP {status}: {}",
                quote(&String::from_utf8_lossy(&start))
            ),
        )
    }

    async fn read(
        &self,
        mut response: reqwest::Response,
        mut sink: impl FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        loop {
            let chunk = response.chunk().await.map_err(|error| {
                Failure::new(
                    FailureKind::Transport,
                    format!(
                        "broke off its answer from {}: {}",
                        self.describe(),
                        chain(&error.without_url())
                    ),
                )
            })?;
            match chunk {
                Some(chunk) => sink(&chunk)?,
                None => return Ok(()),
            }
        }
    }
}
