//! The HTTP routes. Every error is JSON: `{"code", "message"}`, plus `line`/`column` for SQL
//! errors (positions in the text the client sent) and `file` for application files.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use super::app::{parse_application, Application};
use super::capture::{ChannelSink, CollectSink, Collected};
use super::config::{Config, RestartPolicy};
use super::follow::{follow, Feed, Framing, StopOnDrop};
use super::jobs::{DeployOptions, JobManager, ManagedJob};
use crate::error::VeloError;
use crate::job::{JobHooks, JobSpec, JobStats, ReadSpec, RuntimeOptions};
use velo_connectors::kafka::StartOffset;

/// Most rows an ad-hoc query returns (without `follow`).
pub const MAX_RESULT_ROWS: usize = 100_000;

/// A stream registered through the API or the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct RegisteredStream {
    pub name: String,
    /// Where it came from: `api`, `config` or `application`.
    pub origin: String,
    /// The `CREATE STREAM` declaration every query and job sees.
    pub ddl: String,
    /// The request that registered it (API streams).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub definition: serde_json::Value,
}

/// Shared by every route.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub jobs: Arc<JobManager>,
    streams: Arc<Mutex<BTreeMap<String, RegisteredStream>>>,
    queries: Arc<Semaphore>,
    metrics: PrometheusHandle,
    /// Turns true when the server shuts down: every follower ends.
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// One client asking the broker for metadata (`/ready`), made once.
    metadata: Arc<velo_connectors::kafka::MetadataClient>,
    /// Refused requests (`/security/events`).
    security: Arc<super::recent::Recent<super::recent::SecurityEvent>>,
    /// Recent ad-hoc queries (`/metrics/queries/*`).
    recent_queries: Arc<super::recent::Recent<super::recent::QueryRecord>>,
}

impl AppState {
    pub fn new(config: Arc<Config>, metrics: PrometheusHandle) -> crate::error::Result<Self> {
        let metadata = Arc::new(velo_connectors::kafka::MetadataClient::new(
            &config.kafka_connection(Duration::from_secs(
                config.kafka.timeout_seconds.clamp(1, 5),
            ))?,
        )?);
        let state = Self {
            jobs: JobManager::new(config.clone()),
            streams: Arc::default(),
            queries: Arc::new(Semaphore::new(config.server.max_concurrent_queries)),
            security: Arc::new(super::recent::Recent::new(200)),
            recent_queries: Arc::new(super::recent::Recent::new(200)),
            config,
            metrics,
            shutdown: Arc::new(tokio::sync::watch::channel(false).0),
            metadata,
        };
        for ddl in &state.config.sql.streams {
            state
                .register_ddl(ddl, "config", serde_json::Value::Null)
                .map_err(|e| VeloError::Usage(format!("sql.streams: {}", e.message)))?;
        }
        Ok(state)
    }

    /// Ends every follower (the server is shutting down).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The declarations of every registered stream, one per line.
    fn declarations(&self) -> String {
        self.streams
            .lock()
            .expect("streams lock")
            .values()
            .map(|s| format!("{};\n", s.ddl.trim().trim_end_matches(';')))
            .collect()
    }

    fn register_ddl(
        &self,
        ddl: &str,
        origin: &str,
        spec: serde_json::Value,
    ) -> Result<RegisteredStream, ApiError> {
        let script = crate::sql::parse_script(ddl)?;
        let [decl] = script.streams.as_slice() else {
            return Err(ApiError::bad_request(
                "give exactly one CREATE STREAM declaration",
            ));
        };
        if script.query.is_some() {
            return Err(ApiError::bad_request("a stream declaration holds no query"));
        }
        crate::catalog::StreamDef::from_decl(decl).map_err(|e| {
            if origin == "api" {
                crate::job::sandbox::conceal(&format!("declaring '{}'", decl.name), e)
            } else {
                e
            }
        })?;
        let stream = RegisteredStream {
            name: decl.name.clone(),
            origin: origin.to_string(),
            ddl: ddl.trim().trim_end_matches(';').to_string(),
            definition: spec,
        };
        self.streams
            .lock()
            .expect("streams lock")
            .insert(decl.name.clone(), stream.clone());
        Ok(stream)
    }

    /// How `POST /jobs` and `SQL_FILE` deploy when the request says nothing else.
    pub fn default_deploy(&self) -> DeployOptions {
        DeployOptions {
            job_prefix: String::new(),
            group_prefix: self.config.kafka.group_prefix.clone(),
            default_topic: None,
            restart_policy: self.config.sql.restart_policy,
            max_jobs: None,
            continuous: true,
            reconcile: false,
            trusted: false,
        }
    }

    /// Refuses SQL from an HTTP caller that names files or registries the sandbox does not
    /// allow (see [`crate::job::sandbox`]).
    pub fn check_sandbox(&self, script: &crate::sql::Script) -> Result<(), ApiError> {
        let sandbox = self.config.sandbox();
        for decl in &script.streams {
            sandbox.check(decl)?;
        }
        Ok(())
    }

    /// An application file sent over HTTP: its jobs, checked against the sandbox (the file's
    /// own declarations; the server's registered streams are the operator's).
    pub fn http_application(&self, text: &str, file: &str) -> Result<Application, ApiError> {
        let own = parse_application(text).map_err(|e| ApiError::from(e).in_file(file))?;
        for job in &own.jobs {
            let script =
                crate::sql::parse_script(&job.sql).map_err(|e| ApiError::from(e).in_file(file))?;
            self.check_sandbox(&script).map_err(|e| e.in_file(file))?;
        }
        self.application(text, file)
    }

    /// An application file's jobs; registered streams are visible to them.
    pub fn application(&self, text: &str, file: &str) -> Result<Application, ApiError> {
        let mut app = parse_application(text).map_err(|e| ApiError::from(e).in_file(file))?;
        let declarations = self.declarations();
        for job in &mut app.jobs {
            // After the job's own text, so its line numbers stay the file's.
            job.sql = format!("{}\n;\n{declarations}", job.sql);
        }
        Ok(app)
    }

    /// Deploys an application file's text sent over HTTP.
    pub fn deploy_text(
        &self,
        text: &str,
        file: &str,
        options: DeployOptions,
    ) -> Result<Vec<String>, ApiError> {
        let app = self.http_application(text, file)?;
        Ok(self.jobs.deploy(&app, &options)?)
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub location: Option<crate::error::SqlLocation>,
    pub file: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            location: None,
            file: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(what: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} '{name}' does not exist"),
        )
    }

    /// The message with its place (`line L, column C`), for logs.
    pub fn describe(&self) -> String {
        match self.location {
            Some(l) => format!("{l}: {}", self.message),
            None => self.message.clone(),
        }
    }

    fn in_file(mut self, file: &str) -> Self {
        self.file = Some(file.to_string());
        self
    }
}

impl From<VeloError> for ApiError {
    fn from(e: VeloError) -> Self {
        use velo_connectors::ConnectorError;
        let (status, code) = match &e {
            VeloError::Sql { .. } => (StatusCode::BAD_REQUEST, "sql_error"),
            VeloError::UnknownTable { .. } => (StatusCode::BAD_REQUEST, "unknown_table"),
            VeloError::Unsupported(_) => (StatusCode::BAD_REQUEST, "unsupported_query"),
            VeloError::Usage(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            VeloError::OverLimit(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_jobs"),
            VeloError::StateLimit { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "memory_limit"),
            VeloError::Connector(ConnectorError::BrokerUnreachable { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "broker_unreachable")
            }
            VeloError::Connector(ConnectorError::UnknownTopic { .. }) => {
                (StatusCode::BAD_REQUEST, "unknown_topic")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "execution_error"),
        };
        let location = match &e {
            VeloError::Sql { location, .. } | VeloError::UnknownTable { location, .. } => *location,
            _ => None,
        };
        let mut error = ApiError::new(status, code, e.to_string());
        error.location = location;
        error
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        VeloError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(l) = self.location {
            body["line"] = json!(l.line);
            body["column"] = json!(l.column);
        }
        if let Some(f) = self.file {
            body["file"] = json!(f);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON body whose rejections are JSON errors: 400 malformed, 413 too large, 415 not JSON.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => {
                let (status, code) = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                    }
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json")
                    }
                    // Bad syntax and wrong fields alike: a malformed body.
                    _ => (StatusCode::BAD_REQUEST, "malformed_json"),
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

/// The routes, as (method, path) in the OpenAPI document's spelling.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/metrics/prometheus"),
    ("get", "/metrics/memory"),
    ("get", "/metrics/kafka"),
    ("get", "/metrics/health"),
    ("get", "/metrics/performance"),
    ("get", "/metrics/report"),
    ("get", "/metrics/queries/slow"),
    ("get", "/metrics/queries/performance"),
    ("get", "/security/events"),
    ("get", "/health/kafka"),
    ("get", "/openapi.json"),
    ("get", "/streams"),
    ("post", "/streams"),
    ("get", "/streams/{name}"),
    ("delete", "/streams/{name}"),
    ("post", "/sql"),
    ("get", "/jobs"),
    ("post", "/jobs"),
    ("get", "/jobs/{id}"),
    ("delete", "/jobs/{id}"),
    ("post", "/jobs/{id}/stop"),
    ("post", "/jobs/{id}/pause"),
    ("post", "/jobs/{id}/resume"),
    ("post", "/jobs/{id}/restart"),
    ("post", "/jobs/{id}/savepoint"),
    ("get", "/jobs/{id}/output"),
    ("get", "/jobs/{id}/logs"),
    ("get", "/state"),
    ("post", "/state"),
];

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// The separate metrics listener's routes (`server.metrics_port`): Prometheus text and
/// liveness, behind the same token as the API.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/metrics/prometheus", get(metrics_text))
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/metrics/prometheus", get(metrics_text))
        .route("/metrics/memory", get(memory_view))
        .route("/metrics/kafka", get(kafka_view))
        .route("/metrics/health", get(health_view))
        .route("/metrics/performance", get(performance_view))
        .route("/metrics/report", get(report_view))
        .route("/metrics/queries/slow", get(slow_queries))
        .route("/metrics/queries/performance", get(query_performance))
        .route("/security/events", get(security_events))
        .route("/health/kafka", get(kafka_health))
        .route("/openapi.json", get(openapi))
        .route("/streams", get(list_streams).post(create_stream))
        .route("/streams/{name}", get(get_stream).delete(delete_stream))
        .route("/sql", post(run_sql))
        .route("/jobs", get(list_jobs).post(deploy_jobs))
        .route("/jobs/{id}", get(get_job).delete(delete_job))
        .route("/jobs/{id}/savepoint", post(job_savepoint))
        .route("/jobs/{id}/{action}", post(job_action))
        .route(
            "/state",
            get(export_state)
                .post(import_state)
                .layer(axum::extract::DefaultBodyLimit::max(
                    config.server.max_import_bytes,
                )),
        )
        .route("/jobs/{id}/output", get(job_output))
        .route("/jobs/{id}/logs", get(job_logs))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::extract::DefaultBodyLimit::max(
            config.server.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state);
    if !config.server.cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        // `"*"` allows any origin; the rest were checked when the configuration loaded.
        let origins = if config.server.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                config
                    .server
                    .cors_origins
                    .iter()
                    .filter_map(|o| o.parse::<HeaderValue>().ok()),
            )
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]),
        );
    }
    router
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such route; see /openapi.json",
    )
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

/// Bearer-token check for every route but `/health`, when a token is configured.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.config.server.auth_token {
        if request.uri().path() != "/health" {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            // Compared in constant time: how long the check takes says nothing of the token.
            let matches = given.is_some_and(|given| {
                use subtle::ConstantTimeEq;
                bool::from(given.as_bytes().ct_eq(token.as_bytes()))
            });
            if !matches {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this server needs 'Authorization: Bearer <token>'",
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}

/// Counts requests by route and status, and remembers the refused ones (`/security/events`).
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // Labels from fixed sets only: a caller inventing methods cannot create metric series.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(request).await;
    let kind = match response.status() {
        StatusCode::UNAUTHORIZED => Some("unauthorized"),
        StatusCode::PAYLOAD_TOO_LARGE => Some("too_large"),
        StatusCode::TOO_MANY_REQUESTS => Some("too_many_queries"),
        _ => None,
    };
    if let Some(kind) = kind {
        state.security.push(super::recent::SecurityEvent {
            at: super::recent::now(),
            kind,
            method: method.to_string(),
            route: route.clone(),
        });
    }
    metrics::counter!(
        "velo_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok"}))
}

/// Asks the broker for its topics now (off the async workers): how many, or why not.
async fn broker_topics(state: &AppState) -> std::result::Result<usize, String> {
    let client = state.metadata.clone();
    match tokio::task::spawn_blocking(move || client.topics()).await {
        Ok(Ok(topics)) => Ok(topics.len()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Each job's view, as `view` makes it from the job and its status.
fn per_job(
    state: &AppState,
    view: impl Fn(&ManagedJob, super::jobs::JobStatus) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    state
        .jobs
        .list()
        .iter()
        .map(|j| view(j, j.status()))
        .collect()
}

async fn ready(State(state): State<AppState>) -> Response {
    let broker_error = broker_topics(&state).await.err();
    let jobs_started = state.jobs.all_started();
    let ready = broker_error.is_none() && jobs_started;
    let body = json!({
        "ready": ready,
        "broker": {"reachable": broker_error.is_none(), "error": broker_error},
        "jobs_started": jobs_started,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /health/kafka`: whether the broker answers a metadata request now, and how fast.
async fn kafka_health(State(state): State<AppState>) -> Response {
    let started = std::time::Instant::now();
    let answer = broker_topics(&state).await;
    let response_ms = started.elapsed().as_millis() as u64;
    let brokers = &state.config.kafka.brokers;
    let (status, body) = match answer {
        Ok(topics) => (
            StatusCode::OK,
            json!({"status": "ok", "brokers": brokers, "topics": topics, "response_ms": response_ms}),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unreachable", "brokers": brokers, "error": error,
                   "response_ms": response_ms}),
        ),
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics/memory`: the process's resident memory and each job's operator state.
async fn memory_view(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let jobs = per_job(&state, |_, s| {
        json!({"job_id": s.id, "status": s.status.name(),
               "state_bytes": s.state_bytes, "state_rows": s.state_rows})
    });
    let state_bytes: u64 = jobs.iter().filter_map(|j| j["state_bytes"].as_u64()).sum();
    axum::Json(json!({
        "process_resident_bytes": resident_bytes(),
        "state_bytes": state_bytes,
        "jobs": jobs,
    }))
}

/// `GET /metrics/kafka`: each job's consumer group and, per partition it reads, its position,
/// the partition's end offset and the lag between them (sampled each second by the job).
async fn kafka_view(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let jobs = per_job(&state, |j, s| {
        let partitions: Vec<serde_json::Value> = j
            .partitions()
            .into_iter()
            .map(|(stream, p)| {
                json!({"stream": stream, "partition": p.partition, "offset": p.read,
                           "end_offset": p.total, "lag": (p.total - p.read).max(0)})
            })
            .collect();
        json!({"job_id": s.id, "status": s.status.name(), "consumer_group": s.consumer_group,
                   "lag": s.lag, "partitions": partitions})
    });
    axum::Json(json!({"brokers": state.config.kafka.brokers, "jobs": jobs}))
}

/// `GET /metrics/health`: `ok`, or `degraded` when a job has failed; jobs counted by status.
async fn health_view(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let mut by_status: BTreeMap<&'static str, u64> = BTreeMap::new();
    for job in state.jobs.list() {
        *by_status.entry(job.state().name()).or_default() += 1;
    }
    let failed = by_status.get("failed").copied().unwrap_or(0);
    axum::Json(json!({
        "status": if failed > 0 { "degraded" } else { "ok" },
        "jobs": by_status,
        "queries_in_flight": state.config.server.max_concurrent_queries
            .saturating_sub(state.queries.available_permits()),
    }))
}

/// `GET /metrics/performance`: each job's throughput and micro-batch latency percentiles.
async fn performance_view(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let jobs = per_job(&state, |j, s| {
        let mut view = j.performance();
        view["job_id"] = json!(s.id);
        view
    });
    axum::Json(json!({"jobs": jobs}))
}

/// `GET /metrics/report`: one document for a person or a ticket — health, every job's status,
/// throughput, latency, state and lag, and the ad-hoc query figures.
async fn report_view(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let axum::Json(health) = health_view(State(state.clone())).await;
    let axum::Json(queries) = query_performance(State(state.clone())).await;
    let jobs = per_job(&state, |j, s| {
        json!({
            "job_id": s.id, "status": s.status.name(), "error": s.error,
            "performance": j.performance(),
            "state_bytes": s.state_bytes, "state_rows": s.state_rows, "lag": s.lag,
            "errors": s.errors, "dead_letters": s.dead_letters,
            "checkpoints": s.checkpoints, "restarts": s.restarts,
        })
    });
    axum::Json(json!({
        "generated_at": super::recent::now(),
        "health": health,
        "process_resident_bytes": resident_bytes(),
        "jobs": jobs,
        "queries": {"count": queries["count"], "failed": queries["failed"],
                    "p50_ms": queries["p50_ms"], "p95_ms": queries["p95_ms"]},
    }))
}

/// `GET /metrics/queries/slow`: the ten slowest of the recent ad-hoc queries.
async fn slow_queries(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let mut queries = state.recent_queries.all();
    queries.sort_by_key(|q| std::cmp::Reverse(q.duration_ms));
    queries.truncate(10);
    axum::Json(json!({"queries": queries}))
}

/// `GET /metrics/queries/performance`: how long recent ad-hoc queries took (percentiles) and
/// how they ended.
async fn query_performance(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let queries = state.recent_queries.all();
    let mut durations: Vec<u64> = queries.iter().map(|q| q.duration_ms).collect();
    durations.sort_unstable();
    let percentile = |p: f64| -> Option<u64> {
        (!durations.is_empty())
            .then(|| durations[((durations.len() - 1) as f64 * p).round() as usize])
    };
    let failed = queries.iter().filter(|q| q.status >= 400).count();
    axum::Json(json!({
        "count": queries.len(),
        "failed": failed,
        "p50_ms": percentile(0.5),
        "p95_ms": percentile(0.95),
        "max_ms": durations.last(),
        "recent": queries.iter().rev().take(20).collect::<Vec<_>>(),
    }))
}

/// `GET /security/events`: recent refused requests (401, 413, 429), newest last.
async fn security_events(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({"events": state.security.all()}))
}

/// The process's resident set size (Linux `/proc/self/statm`), `null` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `POST /streams`: a declaration as SQL, or its parts.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    /// A whole `CREATE STREAM … WITH (…)` statement (instead of the fields below).
    pub sql: Option<String>,
    pub name: Option<String>,
    pub kafka_topic: Option<String>,
    /// json (default), avro or protobuf.
    pub serialization: Option<String>,
    /// Payload columns as a SQL column list (`"symbol VARCHAR, price DECIMAL(18,4)"`).
    pub columns: Option<String>,
    /// An .avsc or .proto file on the server.
    pub schema_file: Option<String>,
    /// An Avro schema given inline (JSON).
    pub avro_schema: Option<serde_json::Value>,
    /// The Protobuf message type in `schema_file`.
    pub proto_message: Option<String>,
    /// The event-time column (default: the Kafka timestamp).
    pub event_time: Option<String>,
    /// Allowed out-of-orderness, e.g. `5s`.
    pub watermark: Option<String>,
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl StreamRequest {
    /// The declaration this request stands for.
    fn ddl(&self, dir: &std::path::Path) -> Result<String, ApiError> {
        if let Some(sql) = &self.sql {
            return Ok(sql.clone());
        }
        let name = self
            .name
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("a stream needs a name (or give sql)"))?;
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ApiError::bad_request(format!(
                "stream name '{name}': use letters, digits and _"
            )));
        }
        let mut options = vec![format!(
            "'topic' = {}",
            quoted(self.kafka_topic.as_deref().unwrap_or(name))
        )];
        let serialization = self.serialization.as_deref().unwrap_or("json");
        match serialization {
            "json" => {
                // JSON reads its columns from `columns` (or infers them): a schema given for
                // it would be ignored, so it is refused rather than dropped.
                let given = [
                    ("schema_file", self.schema_file.is_some()),
                    ("avro_schema", self.avro_schema.is_some()),
                    ("proto_message", self.proto_message.is_some()),
                ];
                if let Some((field, _)) = given.iter().find(|(_, set)| *set) {
                    return Err(ApiError::bad_request(format!(
                        "{field} applies to serialization avro or protobuf; a json stream takes \
                         its columns from 'columns' (or infers them from the topic)"
                    )));
                }
            }
            "avro" => {
                let file = match (&self.schema_file, &self.avro_schema) {
                    (Some(f), _) => f.clone(),
                    (None, Some(schema)) => {
                        std::fs::create_dir_all(dir)?;
                        let path = dir.join(format!("{name}.avsc"));
                        std::fs::write(&path, schema.to_string())?;
                        path.display().to_string()
                    }
                    (None, None) => {
                        return Err(ApiError::bad_request(
                            "an avro stream needs schema_file or avro_schema",
                        ))
                    }
                };
                options.push("'format' = 'avro'".into());
                options.push(format!("'avro.schema.file' = {}", quoted(&file)));
            }
            "protobuf" => {
                let (Some(file), Some(message)) = (&self.schema_file, &self.proto_message) else {
                    return Err(ApiError::bad_request(
                        "a protobuf stream needs schema_file (.proto) and proto_message",
                    ));
                };
                options.push("'format' = 'protobuf'".into());
                options.push(format!("'protobuf.file' = {}", quoted(file)));
                options.push(format!("'protobuf.message' = {}", quoted(message)));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "serialization '{other}' is not json, avro or protobuf"
                )))
            }
        }
        if let Some(column) = &self.event_time {
            options.push(format!("'event_time' = {}", quoted(column)));
        }
        if let Some(delay) = &self.watermark {
            crate::sql::window::parse_duration(delay)
                .map_err(|why| ApiError::bad_request(format!("watermark: {why}")))?;
            options.push(format!("'watermark_delay' = {}", quoted(delay)));
        }
        let columns = self
            .columns
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        Ok(format!(
            "CREATE STREAM {name}{columns} WITH ({})",
            options.join(", ")
        ))
    }
}

async fn list_streams(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let streams: Vec<RegisteredStream> = state
        .streams
        .lock()
        .expect("streams lock")
        .values()
        .cloned()
        .collect();
    axum::Json(json!({ "streams": streams }))
}

async fn create_stream(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<StreamRequest>,
) -> Result<Response, ApiError> {
    // What the client names may touch only what the sandbox allows (an inline schema is written
    // by the server itself).
    if let Some(sql) = &request.sql {
        state.check_sandbox(&crate::sql::parse_script(sql)?)?;
    }
    let dir = std::env::temp_dir().join(format!("velo-server-{}", std::process::id()));
    let ddl = request.ddl(&dir)?;
    if let Some(file) = &request.schema_file {
        state
            .config
            .sandbox()
            .check_file(std::path::Path::new(file))
            .map_err(ApiError::bad_request)?;
    }
    let spec = serde_json::to_value(&request).unwrap_or_default();
    let stream = state.register_ddl(&ddl, "api", spec)?;
    Ok((StatusCode::CREATED, axum::Json(stream)).into_response())
}

async fn get_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<RegisteredStream>, ApiError> {
    state
        .streams
        .lock()
        .expect("streams lock")
        .get(&name)
        .cloned()
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("stream", &name))
}

async fn delete_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .streams
        .lock()
        .expect("streams lock")
        .remove(&name)
        .map(|_| StatusCode::NO_CONTENT)
        .ok_or_else(|| ApiError::not_found("stream", &name))
}

/// `POST /sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    pub sql: String,
    /// json (default), json-lines, csv or arrow (an Arrow IPC stream).
    pub format: Option<String>,
    /// Follow a continuous query: rows as NDJSON (or server-sent events when the request
    /// accepts text/event-stream) until the client goes away.
    #[serde(default)]
    pub follow: bool,
}

/// `POST /sql`, timed: each answered (not followed) query is remembered for
/// `/metrics/queries/*`.
async fn run_sql(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SqlRequest>,
) -> Response {
    let started = std::time::Instant::now();
    let sql: String = request.sql.chars().take(200).collect();
    let format = request.format.clone().unwrap_or_else(|| "json".into());
    let follow = request.follow;
    let response = answer_sql(State(state.clone()), headers, JsonBody(request))
        .await
        .into_response();
    if !follow {
        state.recent_queries.push(super::recent::QueryRecord {
            at: super::recent::now(),
            sql,
            format,
            status: response.status().as_u16(),
            duration_ms: started.elapsed().as_millis() as u64,
        });
    }
    response
}

async fn answer_sql(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SqlRequest>,
) -> Result<Response, ApiError> {
    let format = request.format.clone().unwrap_or_else(|| "json".into());
    if !matches!(
        format.as_str(),
        "json" | "json-lines" | "csv" | "arrow" | "parquet"
    ) {
        return Err(ApiError::bad_request(format!(
            "format '{format}' is not json, json-lines, csv, arrow or parquet"
        )));
    }
    let permit = state.queries.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_queries",
            format!(
                "{} queries are running (server.max_concurrent_queries); try again later",
                state.config.server.max_concurrent_queries
            ),
        )
    })?;
    // What the client declares may touch only what the sandbox allows.
    state.check_sandbox(&crate::sql::parse_script(&request.sql)?)?;
    // The registered streams' declarations go after the query, so its line numbers stay the
    // client's.
    let text = format!(
        "{}\n;\n{}",
        request.sql.trim_end().trim_end_matches(';'),
        state.declarations()
    );
    let config = &state.config;
    let performance = config.performance()?;
    let mut spec = JobSpec::new("sql", text);
    spec.conceal_file_errors = true;
    config.kafka_spec(&mut spec.kafka)?;
    spec.runtime = RuntimeOptions {
        batch_size: performance.batch_size,
        flush_interval: Duration::from_millis(if request.follow {
            performance.flush_interval_ms
        } else {
            50
        }),
        max_state_bytes: Some(config.sql.memory_limit_mb.saturating_mul(1024 * 1024)),
        parallelism: config.sql.worker_threads,
        ..RuntimeOptions::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    if request.follow {
        // Each follower reads everything with a consumer group of its own.
        static FOLLOWERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        spec.read = ReadSpec::Continuous {
            group_id: Some(format!(
                "{}sql-follow-{}-{}",
                config.kafka.group_prefix,
                std::process::id(),
                FOLLOWERS.fetch_add(1, Ordering::Relaxed)
            )),
            reset: StartOffset::Earliest,
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(1024);
        let hooks = JobHooks {
            stop: Some(stop.clone()),
            progress: None,
            sink: Some(Box::new(move |_, _| Ok(Box::new(ChannelSink::new(tx))))),
        };
        let sse = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        tokio::spawn(async move {
            let _permit = permit;
            let result = run_blocking(spec, hooks).await;
            if let Err(e) = result {
                tracing::warn!("followed query ended: {e}");
            }
        });
        // The query stops when its response goes (the client left, or the server stops).
        let lines = follow(
            Feed::Lines(rx),
            if sse { Framing::Events } else { Framing::Lines },
            state.shutdown_signal(),
            Some(StopOnDrop(stop)),
        );
        let content_type = if sse {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        };
        return Ok((
            [(header::CONTENT_TYPE, content_type)],
            Body::from_stream(lines),
        )
            .into_response());
    }
    let collected = Arc::new(Mutex::new(Collected::default()));
    let into = collected.clone();
    spec.read = ReadSpec::Bounded {
        start: StartOffset::Earliest,
        partition: None,
        group_id: None,
    };
    let hooks = JobHooks {
        stop: Some(stop.clone()),
        progress: None,
        sink: Some(Box::new(move |schema, _| {
            Ok(Box::new(CollectSink::new(schema, into, MAX_RESULT_ROWS)))
        })),
    };
    let timeout = Duration::from_secs(config.server.query_timeout_seconds.max(1));
    // The slot is given back when the query's thread has ended, not before.
    let (done, finished) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let result = run_blocking(spec, hooks).await;
        drop(permit);
        let _ = done.send(result);
    });
    let run = tokio::time::timeout(timeout, finished).await;
    match run {
        Ok(Err(_)) => {
            return Err(VeloError::Execution("the query's thread went away".into()).into());
        }
        Err(_) => {
            // The query stops at its next micro-batch boundary; its state goes with it.
            stop.store(true, Ordering::Relaxed);
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the query ran longer than {} s (server.query_timeout_seconds)",
                    timeout.as_secs()
                ),
            ));
        }
        Ok(Ok(result)) => {
            result?;
        }
    }
    let collected = std::mem::take(&mut *collected.lock().expect("collect lock"));
    render(&format, collected)
}

async fn run_blocking(spec: JobSpec, hooks: JobHooks) -> Result<JobStats, VeloError> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(crate::job::run(spec, hooks)))
        .await
        .map_err(|e| VeloError::Execution(format!("the query thread failed: {e}")))?
}

/// The SQL spelling of a column type, for `columns` in JSON results.
/// The SQL name of a column type (`BIGINT`, `DECIMAL(18,4)`).
pub fn sql_type_name(t: &arrow::datatypes::DataType) -> String {
    use arrow::datatypes::DataType::*;
    match t {
        Utf8 | LargeUtf8 | Utf8View => "VARCHAR".into(),
        Boolean => "BOOLEAN".into(),
        Int8 => "TINYINT".into(),
        Int16 => "SMALLINT".into(),
        Int32 => "INT".into(),
        Int64 => "BIGINT".into(),
        UInt64 => "BIGINT UNSIGNED".into(),
        Float32 => "FLOAT".into(),
        Float64 => "DOUBLE".into(),
        Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        Timestamp(_, _) => "TIMESTAMP".into(),
        Date32 | Date64 => "DATE".into(),
        other => other.to_string(),
    }
}

/// An ad-hoc query's result in the requested format.
fn render(format: &str, collected: Collected) -> Result<Response, ApiError> {
    use velo_connectors::codec::{DecimalFormat, EncodedRows, JsonEncoder};
    let schema = collected
        .schema
        .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
    let batches = collected.batches;
    let json_rows = || -> Result<Vec<String>, ApiError> {
        let encoder = JsonEncoder::new(DecimalFormat::String);
        let mut rows = EncodedRows::default();
        for b in &batches {
            encoder.encode(b, &mut rows).map_err(VeloError::from)?;
        }
        Ok(rows
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect())
    };
    Ok(match format {
        "json" => {
            let columns: Vec<serde_json::Value> = schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": sql_type_name(f.data_type())}))
                .collect();
            let body = format!(
                "{{\"columns\":{},\"rows\":[{}]}}",
                serde_json::Value::Array(columns),
                json_rows()?.join(",")
            );
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        "json-lines" => {
            let mut body = json_rows()?.join("\n");
            if !body.is_empty() {
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        "csv" => {
            let mut writer = velo_connectors::format::FormattedWriter::new(
                Vec::new(),
                velo_connectors::format::OutputFormat::Csv,
                true,
                schema,
                DecimalFormat::String,
            );
            for b in &batches {
                writer.write(b).map_err(VeloError::from)?;
            }
            writer.finish().map_err(VeloError::from)?;
            ([(header::CONTENT_TYPE, "text/csv")], writer.into_inner()).into_response()
        }
        "parquet" => {
            let bytes = velo_connectors::parquet_file::ParquetOptions::default()
                .to_bytes(&schema, &batches)
                .map_err(VeloError::from)?;
            (
                [
                    (header::CONTENT_TYPE, "application/vnd.apache.parquet"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"result.parquet\"",
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        _ => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)
                    .map_err(VeloError::from)?;
                for b in &batches {
                    writer.write(b).map_err(VeloError::from)?;
                }
                writer.finish().map_err(VeloError::from)?;
            }
            (
                [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
                out,
            )
                .into_response()
        }
    })
}

/// `POST /jobs`: an application file's text, and how to deploy it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub sql: String,
    /// The file's name, for error messages.
    pub file: Option<String>,
    pub job_prefix: Option<String>,
    pub group_prefix: Option<String>,
    pub default_topic: Option<String>,
    pub restart_policy: Option<RestartPolicy>,
    pub max_jobs: Option<usize>,
}

async fn deploy_jobs(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<DeployRequest>,
) -> Result<Response, ApiError> {
    let mut options = state.default_deploy();
    if let Some(p) = request.job_prefix {
        options.job_prefix = p;
    }
    if let Some(g) = request.group_prefix {
        options.group_prefix = g;
    }
    options.default_topic = request.default_topic;
    if let Some(r) = request.restart_policy {
        options.restart_policy = r;
    }
    options.max_jobs = request.max_jobs;
    let file = request.file.unwrap_or_else(|| "request".into());
    let ids = state.deploy_text(&request.sql, &file, options)?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "jobs": ids }))).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> axum::Json<serde_json::Value> {
    let jobs: Vec<_> = state
        .jobs
        .list()
        .iter()
        .map(|j| j.status())
        .filter(|s| {
            query
                .status
                .as_deref()
                .is_none_or(|wanted| wanted == "all" || s.status.name() == wanted)
        })
        .collect();
    axum::Json(json!({ "jobs": jobs }))
}

fn job(state: &AppState, id: &str) -> Result<Arc<ManagedJob>, ApiError> {
    state
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found("job", id))
}

async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<super::jobs::JobStatus>, ApiError> {
    Ok(axum::Json(job(&state, &id)?.status()))
}

async fn delete_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let j = job(&state, &id)?;
    state.jobs.delete(&j).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn job_action(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<axum::Json<super::jobs::JobStatus>, ApiError> {
    let j = job(&state, &id)?;
    match action.as_str() {
        "stop" => state.jobs.stop(&j).await,
        "pause" => state.jobs.pause(&j),
        "resume" => state.jobs.resume(&j),
        "restart" => state.jobs.restart(&j).await,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                format!("unknown job action '{other}' (stop, pause, resume, restart)"),
            ))
        }
    }
    Ok(axum::Json(j.status()))
}

/// `POST /jobs/{id}/savepoint`: a fresh checkpoint of the job, copied to the savepoints folder.
async fn job_savepoint(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let j = job(&state, &id)?;
    let (folder, checkpoint) = state.jobs.savepoint(&j).await?;
    Ok(axum::Json(json!({
        "id": j.id,
        "checkpoint": checkpoint,
        "savepoint": folder.display().to_string(),
    })))
}

#[derive(Debug, Deserialize)]
struct ExportQuery {
    job: Option<String>,
}

/// `GET /state`: every job's (or `?job=ID`'s) definition and newest checkpoint.
async fn export_state(
    State(state): State<AppState>,
    Query(query): Query<ExportQuery>,
) -> Result<axum::Json<super::state::Export>, ApiError> {
    let export = state.jobs.export(query.job.as_deref()).await;
    match (export, &query.job) {
        (Err(VeloError::Usage(_)), Some(id)) => Err(ApiError::not_found("job", id)),
        (result, _) => Ok(axum::Json(result?)),
    }
}

#[derive(Debug, Deserialize)]
struct ImportQuery {
    #[serde(default)]
    replace: bool,
}

/// `POST /state`: jobs exported by another server (or this one) are written to the state
/// folder and started from their checkpoints.
async fn import_state(
    State(state): State<AppState>,
    Query(query): Query<ImportQuery>,
    JsonBody(export): JsonBody<super::state::Export>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let ids = state
        .jobs
        .import(&export, query.replace)
        .await
        .map_err(|e| match e {
            VeloError::Usage(m) if m.contains("exists already") => {
                ApiError::new(StatusCode::CONFLICT, "job_exists", m)
            }
            other => other.into(),
        })?;
    Ok(axum::Json(json!({ "jobs": ids })))
}

#[derive(Debug, Deserialize)]
struct FollowQuery {
    #[serde(default)]
    follow: bool,
    limit: Option<usize>,
    tail: Option<usize>,
    /// `parquet`: the kept rows as one Parquet file (`/jobs/{id}/output` only).
    format: Option<String>,
}

/// Lines so far, then (when following) new ones as they come.
fn line_stream(state: &AppState, recent: Vec<String>, feed: Option<Feed>) -> Response {
    use futures::StreamExt;
    let head = futures::stream::iter(
        recent
            .into_iter()
            .map(|l| Ok::<_, std::io::Error>(format!("{l}\n"))),
    );
    let body = match feed {
        None => Body::from_stream(head),
        Some(feed) => Body::from_stream(head.chain(follow(
            feed,
            Framing::Lines,
            state.shutdown_signal(),
            None,
        ))),
    };
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn job_output(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<FollowQuery>,
) -> Result<Response, ApiError> {
    let j = job(&state, &id)?;
    match query.format.as_deref() {
        None | Some("json-lines") => {}
        Some("parquet") => {
            // Every row kept (the job's current output), typed, as a Parquet file.
            let n = query.limit.or(query.tail).unwrap_or(usize::MAX);
            let Some(batch) = j.output.recent_batch(n).map_err(VeloError::from)? else {
                return Err(ApiError::bad_request(format!(
                    "job '{id}' has produced no output yet"
                )));
            };
            let bytes = velo_connectors::parquet_file::ParquetOptions::default()
                .to_bytes(&batch.schema(), &[batch])
                .map_err(VeloError::from)?;
            return Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        "application/vnd.apache.parquet".to_string(),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{id}.parquet\""),
                    ),
                ],
                bytes,
            )
                .into_response());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format '{other}' is not json-lines or parquet"
            )))
        }
    }
    let feed = query.follow.then(|| Feed::Rows(j.output.subscribe()));
    let recent = j.output.recent(query.limit.or(query.tail).unwrap_or(100));
    Ok(line_stream(&state, recent, feed))
}

async fn job_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<FollowQuery>,
) -> Result<Response, ApiError> {
    let j = job(&state, &id)?;
    let feed = query.follow.then(|| Feed::Logs(j.logs.subscribe()));
    let recent = j.logs.tail(query.tail.or(query.limit).unwrap_or(100));
    Ok(line_stream(&state, recent, feed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
