//! The supervisor's HTTP face (axum): the client JSON API and the agents'
//! WebSocket endpoint, on one port.
//!
//! | route | request | answer |
//! |---|---|---|
//! | `GET /healthz` | — | `200 {"status":"ok"}`, no token needed |
//! | `POST /v1/jobs` | [`SubmitRequest`] | the job |
//! | `GET /v1/jobs` | — | the caller's jobs |
//! | `GET /v1/jobs/{id}` | — | the job |
//! | `POST /v1/jobs/{id}/cancel` | — | the job |
//! | `GET /v1/status` | — | the resource overview |
//! | `GET /v1/agent` | WebSocket upgrade | core's agent protocol |
//!
//! Bodies in both directions are the protocol types in the codec's versioned
//! envelope (`{"version":1,"body":…}`); answers are [`ClientResponse`]s with
//! the HTTP status of their error code. Clients authenticate with
//! `Authorization: Bearer TOKEN` (401 otherwise); agents authenticate inside
//! the WebSocket with their hello, which core checks.
//!
//! Bad input never panics and never reaches core: an oversized body is 413,
//! malformed JSON 400, both with a JSON error. When a client disconnects,
//! axum drops the handler's future; core is drop-safe at every await.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use faultline_core::codec;
use faultline_core::protocol::{ClientRequest, ClientResponse, ErrorCode, JobId, SubmitRequest};
use faultline_core::runtime::{BoxFuture, Connection, MAX_FRAME_BYTES};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::ws;

/// What the HTTP layer needs from the supervisor. Implemented by the real
/// supervisor (see [`super::backend`]) and by fakes in tests.
pub trait Backend: Send + Sync + 'static {
    /// The user a client token belongs to, if any.
    fn authenticate_user(&self, token: &str) -> Option<String>;
    /// Answer one client request on behalf of `user`. Drop-safe.
    fn handle_client(
        &self,
        user: String,
        request: ClientRequest,
    ) -> BoxFuture<'static, ClientResponse>;
    /// Speak the agent protocol on `connection` until it ends.
    fn serve_agent(&self, connection: Connection) -> BoxFuture<'static, ()>;
}

/// Bounds of the HTTP layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body accepted; larger ones get 413.
    pub body_bytes_max: usize,
    /// Client requests served at once; more get 503.
    pub requests_in_flight_max: usize,
    /// Agent connections open at once; more get 503.
    pub agent_connections_max: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            body_bytes_max: 64 * 1024,
            requests_in_flight_max: 1024,
            agent_connections_max: 1024,
        }
    }
}

#[derive(Clone)]
struct AppState {
    backend: Arc<dyn Backend>,
    requests: Arc<Semaphore>,
    agents: Arc<Semaphore>,
}

/// The HTTP API and the agent endpoint over `backend`. Serve it with
/// [`super::listener::serve`], which gives each request its peer's
/// address (the agent endpoint needs it).
pub fn router(backend: Arc<dyn Backend>, limits: HttpLimits) -> Router {
    let state = AppState {
        backend,
        requests: Arc::new(Semaphore::new(limits.requests_in_flight_max)),
        agents: Arc::new(Semaphore::new(limits.agent_connections_max)),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/jobs/{id}/cancel", post(cancel))
        .route("/v1/status", get(overview))
        .route("/v1/agent", get(agent))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.body_bytes_max))
        .with_state(state)
}

/// The HTTP status for an error code (core states the mapping).
pub fn http_status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status())
        .expect("ErrorCode::http_status returns valid HTTP status codes")
}

/// A [`ClientResponse`] as an HTTP response.
fn respond(response: &ClientResponse) -> Response {
    let status = match response {
        ClientResponse::Error { code, .. } => http_status(*code),
        _ => StatusCode::OK,
    };
    let mut answer = (status, codec::encode(response)).into_response();
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        answer
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    answer
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    respond(&ClientResponse::Error {
        code,
        message: message.into(),
    })
}

/// A request refused before it reaches the supervisor.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.code, self.message)
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// The caller's user name, or the 401 to send.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<String, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return Err(refuse(
            ErrorCode::Unauthorized,
            "missing `Authorization: Bearer TOKEN` header",
        ));
    };
    state
        .backend
        .authenticate_user(token)
        .ok_or_else(|| refuse(ErrorCode::Unauthorized, "invalid token"))
}

/// Hand one authenticated request to the supervisor, within the in-flight bound.
async fn call(state: &AppState, user: String, request: ClientRequest) -> Response {
    let Ok(_permit) = state.requests.try_acquire() else {
        tracing::warn!(%user, "too many requests in flight, refusing one");
        return error(ErrorCode::Unavailable, "too many requests in flight; retry");
    };
    let span = tracing::info_span!("client", %user, request = request_name(&request));
    let response = state
        .backend
        .handle_client(user, request)
        .instrument(span.clone())
        .await;
    if let ClientResponse::Error { code, message } = &response {
        span.in_scope(|| tracing::info!(?code, %message, "request refused"));
    }
    respond(&response)
}

/// A request's name, for logs.
fn request_name(request: &ClientRequest) -> &'static str {
    match request {
        ClientRequest::Submit(_) => "submit",
        ClientRequest::Status { .. } => "status",
        ClientRequest::Cancel { .. } => "cancel",
        ClientRequest::List => "list",
        ClientRequest::Overview => "overview",
    }
}

fn body_error(rejection: &BytesRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        error(ErrorCode::TooLarge, "request body too large")
    } else {
        error(ErrorCode::BadRequest, rejection.body_text())
    }
}

fn job_id(path: Result<Path<String>, PathRejection>) -> Result<JobId, Refusal> {
    match path {
        Ok(Path(id)) => Ok(JobId(id)),
        Err(rejection) => Err(refuse(ErrorCode::BadRequest, rejection.body_text())),
    }
}

async fn healthz() -> Response {
    let mut answer = (StatusCode::OK, r#"{"status":"ok"}"#).into_response();
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    answer
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let user = match authenticate(&state, &headers) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(&rejection),
    };
    match codec::decode::<SubmitRequest>(&body) {
        Ok(submit) => call(&state, user, ClientRequest::Submit(submit)).await,
        Err(problem) => error(ErrorCode::BadRequest, problem.to_string()),
    }
}

async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match authenticate(&state, &headers) {
        Ok(user) => call(&state, user, ClientRequest::List).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match authenticate(&state, &headers) {
        Ok(user) => call(&state, user, ClientRequest::Overview).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn job_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let user = match authenticate(&state, &headers) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    match job_id(path) {
        Ok(job) => call(&state, user, ClientRequest::Status { job }).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let user = match authenticate(&state, &headers) {
        Ok(user) => user,
        Err(refusal) => return refusal.into_response(),
    };
    match job_id(path) {
        Ok(job) => call(&state, user, ClientRequest::Cancel { job }).await,
        Err(refusal) => refusal.into_response(),
    }
}

async fn agent(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            tracing::info!(%peer, reason = %rejection.body_text(), "refused a non-WebSocket request on the agent endpoint");
            return error(ErrorCode::BadRequest, rejection.body_text());
        }
    };
    let Ok(permit) = Arc::clone(&state.agents).try_acquire_owned() else {
        tracing::warn!(%peer, "too many agent connections, refusing one");
        return error(ErrorCode::Unavailable, "too many agent connections");
    };
    let backend = Arc::clone(&state.backend);
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_failed_upgrade(move |problem| {
            tracing::info!(%peer, %problem, "agent WebSocket upgrade failed");
        })
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            let connection = ws::accept_socket(socket, peer.to_string());
            tracing::debug!(%peer, "agent connection opened");
            backend.serve_agent(connection).await;
            tracing::debug!(%peer, "agent connection ended");
        })
}

async fn not_found() -> Response {
    error(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> Response {
    let mut answer = error(ErrorCode::BadRequest, "method not allowed on this route");
    *answer.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::Request;
    use faultline_core::protocol::{JobKind, JobStatus, JobView};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// Knows one user, `alice` with token `secret`, and records every
    /// request that reaches it.
    #[derive(Default)]
    struct FakeBackend {
        requests: Mutex<Vec<(String, ClientRequest)>>,
    }

    fn job_view(id: &str, owner: &str) -> JobView {
        JobView {
            id: JobId(id.into()),
            owner: owner.into(),
            kind: JobKind::Parallel,
            command: vec!["true".into()],
            status: JobStatus::Pending,
            queue_position: Some(1),
            max_run_ms: 1_000,
            attempts: 0,
            agent: None,
            situation: None,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            exit: None,
            reason: None,
        }
    }

    impl Backend for FakeBackend {
        fn authenticate_user(&self, token: &str) -> Option<String> {
            (token == "secret").then(|| "alice".to_owned())
        }
        fn handle_client(
            &self,
            user: String,
            request: ClientRequest,
        ) -> BoxFuture<'static, ClientResponse> {
            self.requests
                .lock()
                .expect("test lock")
                .push((user.clone(), request.clone()));
            let response = match request {
                ClientRequest::Status { job } if job.0 == "j-1" => ClientResponse::Job {
                    job: job_view("j-1", &user),
                },
                ClientRequest::Submit(_) => ClientResponse::Job {
                    job: job_view("j-2", &user),
                },
                _ => ClientResponse::Error {
                    code: ErrorCode::NotFound,
                    message: "no such job".into(),
                },
            };
            Box::pin(async move { response })
        }
        fn serve_agent(&self, _connection: Connection) -> BoxFuture<'static, ()> {
            Box::pin(async {})
        }
    }

    fn app() -> (Arc<FakeBackend>, Router) {
        let backend = Arc::new(FakeBackend::default());
        let limits = HttpLimits {
            body_bytes_max: 1024,
            ..HttpLimits::default()
        };
        (Arc::clone(&backend) as _, router(backend, limits))
    }

    async fn send(app: Router, request: Request<Body>) -> (StatusCode, ClientResponse) {
        let answer = app.oneshot(request).await.expect("router is infallible");
        let status = answer.status();
        let body = answer.into_body().collect().await.expect("body").to_bytes();
        let response = codec::decode(&body)
            .unwrap_or_else(|error| panic!("answer is not a ClientResponse ({error}): {body:?}"));
        (status, response)
    }

    fn request(method: &str, uri: &str, token: Option<&str>, body: Vec<u8>) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(Body::from(body)).expect("valid request")
    }

    fn code_of(response: &ClientResponse) -> Option<ErrorCode> {
        match response {
            ClientResponse::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn requests_without_a_valid_token_get_401_and_never_reach_the_supervisor() {
        for token in [None, Some("wrong"), Some("")] {
            let (backend, app) = app();
            let (status, response) = send(app, request("GET", "/v1/jobs", token, vec![])).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "token {token:?}");
            assert_eq!(code_of(&response), Some(ErrorCode::Unauthorized));
            assert!(backend.requests.lock().expect("test lock").is_empty());
        }
    }

    #[tokio::test]
    async fn a_valid_submit_reaches_the_supervisor_as_its_user() {
        let (backend, app) = app();
        let submit = SubmitRequest {
            kind: JobKind::Sequential,
            command: vec!["sleep".into(), "1".into()],
            max_run_ms: Some(5_000),
            idempotency_key: None,
        };
        let body = codec::encode(&submit);
        let (status, response) = send(app, request("POST", "/v1/jobs", Some("secret"), body)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(matches!(response, ClientResponse::Job { job } if job.id.0 == "j-2"));
        let requests = backend.requests.lock().expect("test lock");
        assert_eq!(
            requests.as_slice(),
            &[("alice".to_owned(), ClientRequest::Submit(submit))]
        );
    }

    #[tokio::test]
    async fn malformed_json_gets_a_json_400() {
        for body in [
            &b"{not json"[..],
            br#"{"version":1,"body":{"kind":"huge"}}"#,
            b"",
        ] {
            let (backend, app) = app();
            let (status, response) = send(
                app,
                request("POST", "/v1/jobs", Some("secret"), body.to_vec()),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(code_of(&response), Some(ErrorCode::BadRequest));
            assert!(backend.requests.lock().expect("test lock").is_empty());
        }
    }

    #[tokio::test]
    async fn an_oversized_body_gets_a_json_413() {
        let (backend, app) = app();
        let body = vec![b' '; 4096];
        let (status, response) = send(app, request("POST", "/v1/jobs", Some("secret"), body)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(code_of(&response), Some(ErrorCode::TooLarge));
        assert!(backend.requests.lock().expect("test lock").is_empty());
    }

    #[tokio::test]
    async fn supervisor_errors_carry_their_http_status() {
        let (_, app) = app();
        let (status, response) = send(
            app,
            request("GET", "/v1/jobs/j-404", Some("secret"), vec![]),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code_of(&response), Some(ErrorCode::NotFound));
    }

    #[tokio::test]
    async fn cancel_and_status_name_the_job_from_the_path() {
        let (backend, app) = app();
        let (status, _) = send(
            app.clone(),
            request("POST", "/v1/jobs/j-1/cancel", Some("secret"), vec![]),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send(app, request("GET", "/v1/jobs/j-1", Some("secret"), vec![])).await;
        assert_eq!(status, StatusCode::OK);
        let requests = backend.requests.lock().expect("test lock");
        let job = JobId("j-1".into());
        assert_eq!(requests[0].1, ClientRequest::Cancel { job: job.clone() });
        assert_eq!(requests[1].1, ClientRequest::Status { job });
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_in_json() {
        let (_, app) = app();
        let (status, response) = send(app.clone(), request("GET", "/nope", None, vec![])).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(code_of(&response), Some(ErrorCode::NotFound));
        let (status, _) = send(app, request("DELETE", "/v1/jobs", None, vec![])).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn the_client_speaks_this_api() {
        let (_, app) = app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(super::super::listener::serve(
            listener,
            app,
            std::time::Duration::from_secs(10),
            std::future::pending(),
        ));
        let url = format!("http://{addr}");
        let client = super::super::client::Client::new(&url, Some("secret".into())).expect("url");
        let response = client
            .call(&ClientRequest::Status {
                job: JobId("j-1".into()),
            })
            .await
            .expect("found");
        assert!(matches!(response, ClientResponse::Job { .. }));
        let error = client
            .call(&ClientRequest::Cancel {
                job: JobId("j-9".into()),
            })
            .await
            .expect_err("not found");
        assert!(matches!(
            error,
            super::super::client::ClientError::Server {
                status: 404,
                code: ErrorCode::NotFound,
                ..
            }
        ));
        let anonymous = super::super::client::Client::new(&url, None).expect("url");
        let error = anonymous.call(&ClientRequest::List).await.expect_err("401");
        assert!(matches!(
            error,
            super::super::client::ClientError::Server { status: 401, .. }
        ));
    }
}
