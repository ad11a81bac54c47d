//! The HTTP client the CLI uses to talk to a supervisor.
//!
//! One HTTP/1.1 connection per request (the CLI makes a handful), every
//! request bounded by a timeout and every answer by a size limit. Server
//! errors come back as [`ClientError::Server`] with the supervisor's code
//! and message, so the CLI can say what went wrong in words.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, Method, Request, StatusCode, Uri};
use faultline_core::codec;
use faultline_core::protocol::{ClientRequest, ClientResponse, ErrorCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

/// How long one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer accepted (a long job list or a big overview).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://host[:port][/prefix]`.
    #[error("invalid supervisor URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing answered at the address.
    #[error("cannot reach the supervisor at {url}: {reason}")]
    Unreachable {
        /// The supervisor's URL.
        url: String,
        /// The transport's explanation.
        reason: String,
    },
    /// The supervisor did not answer in time.
    #[error("the supervisor at {url} did not answer within {}s", .after.as_secs())]
    Timeout {
        /// The supervisor's URL.
        url: String,
        /// The timeout in force.
        after: Duration,
    },
    /// The supervisor answered with an error.
    #[error("{message} (HTTP {status})")]
    Server {
        /// HTTP status.
        status: u16,
        /// The supervisor's error category.
        code: ErrorCode,
        /// The supervisor's explanation.
        message: String,
    },
    /// The answer was not a supervisor's answer.
    #[error("unexpected answer from {url} (HTTP {status}): {detail}")]
    Malformed {
        /// The supervisor's URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
}

/// A supervisor's client API at one URL, with one user's token.
#[derive(Clone, Debug)]
pub struct Client {
    url: String,
    authority: String,
    prefix: String,
    token: Option<String>,
}

impl Client {
    /// A client for the supervisor at `url` (`http://host:port`), sending
    /// `token` as a bearer token when given.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let authority = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.host()),
        };
        if uri.query().is_some() {
            return Err(invalid("a query string is not allowed"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Client {
            url: url.trim_end_matches('/').to_owned(),
            authority,
            prefix,
            token,
        })
    }

    /// The supervisor's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Send `request` and return the supervisor's successful answer.
    pub async fn call(&self, request: &ClientRequest) -> Result<ClientResponse, ClientError> {
        let (method, path, body) = match request {
            ClientRequest::Submit(submit) => {
                (Method::POST, "/v1/jobs".to_owned(), codec::encode(submit))
            }
            ClientRequest::Status { job } => (
                Method::GET,
                format!("/v1/jobs/{}", escape(&job.0)),
                Vec::new(),
            ),
            ClientRequest::Cancel { job } => (
                Method::POST,
                format!("/v1/jobs/{}/cancel", escape(&job.0)),
                Vec::new(),
            ),
            ClientRequest::List => (Method::GET, "/v1/jobs".to_owned(), Vec::new()),
            ClientRequest::Overview => (Method::GET, "/v1/status".to_owned(), Vec::new()),
        };
        let (status, answer) = self.exchange(method, &path, body).await?;
        let response: ClientResponse =
            codec::decode(&answer).map_err(|problem| ClientError::Malformed {
                url: self.url.clone(),
                status: status.as_u16(),
                detail: problem.to_string(),
            })?;
        match response {
            ClientResponse::Error { code, message } => Err(ClientError::Server {
                status: status.as_u16(),
                code,
                message,
            }),
            answer => Ok(answer),
        }
    }

    /// One request and its raw answer, within [`REQUEST_TIMEOUT`].
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange_unbounded(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.url.clone(),
                after: REQUEST_TIMEOUT,
            })?
    }

    async fn exchange_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.url.clone(),
            reason,
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(header::HOST, &self.authority)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| unreachable(format!("cannot build the request: {error}")))?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), RESPONSE_BYTES_MAX)
            .collect()
            .await
            .map_err(|error| ClientError::Malformed {
                url: self.url.clone(),
                status: status.as_u16(),
                detail: format!("reading the answer: {error}"),
            })?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }
}

/// Percent-encode everything in a path segment but unreserved characters.
fn escape(segment: &str) -> String {
    let mut escaped = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_port_default_to_80_and_keep_their_prefix() {
        let client = Client::new("http://example.test/base/", None).expect("valid");
        assert_eq!(client.authority, "example.test:80");
        assert_eq!(client.prefix, "/base");
        assert_eq!(client.url(), "http://example.test/base");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        for url in ["https://x:1", "ws://x:1", "x:1", "http://x:1/?a=b", ""] {
            assert!(
                matches!(Client::new(url, None), Err(ClientError::InvalidUrl { .. })),
                "{url} should be refused"
            );
        }
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(escape("j-12"), "j-12");
        assert_eq!(escape("../a b?"), "..%2Fa%20b%3F");
    }

    #[tokio::test]
    async fn an_absent_server_is_reported_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let client = Client::new(&format!("http://{addr}"), None).expect("valid");
        let result = client.call(&ClientRequest::List).await;
        assert!(
            matches!(result, Err(ClientError::Unreachable { .. })),
            "{result:?}"
        );
    }
}
