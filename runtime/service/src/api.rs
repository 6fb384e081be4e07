//! The HTTP API (axum): JSON under `/v1`, the OpenAPI document at
//! `/v1/openapi.json`, `/healthz`, `/readyz` and `/metrics`.
//!
//! Every error is one [`ApiError`], answered as `application/problem+json`
//! (`type`, `title`, `status`, `detail`) with a stable type name
//! (`urn:palisade:problem:<name>`); server faults are logged with their
//! cause by the middleware and answered with a generic detail, never the
//! internals. Every request gets a `tracing` span (tower-http's
//! `TraceLayer`) and is counted in `palisade_http_request_duration_seconds`
//! by route template.
//!
//! Only this module knows HTTP and JSON shapes; the work is done by
//! [`Service`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Multipart, Path, Query, Request, State,
};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tower_http::trace::TraceLayer;

use crate::auth::Principal;
use crate::jobs::{self, JobRequest, Kind};
use crate::openapi;
use crate::problem::{ApiError, Fault};
use crate::service::{ResultRead, Service};
use crate::storage::{DatasetRecord, JobFilter, JobState, StrategyRecord};

/// Default number of jobs `GET /v1/jobs` lists.
pub const DEFAULT_LIST_LIMIT: i64 = 100;
/// Most jobs `GET /v1/jobs` lists.
pub const MAX_LIST_LIMIT: i64 = 1000;

type ApiResult = Result<Response, ApiError>;

/// The authenticated caller.
struct Auth(Principal);

impl FromRequestParts<Arc<Service>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, service: &Arc<Service>) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        service
            .tokens
            .authenticate(header)
            .map(Auth)
            .map_err(ApiError::Unauthorized)
    }
}

/// The router of the whole API over `service`.
pub fn router(service: Arc<Service>) -> Router {
    let c = &service.config;
    let module_limit = c.max_module_bytes as usize;
    let dataset_limit = c.max_dataset_bytes as usize;
    let json_limit = c.max_json_bytes as usize;
    let v1 = Router::new()
        .route(
            "/strategies",
            get(list_strategies)
                .post(upload_strategy)
                .layer(DefaultBodyLimit::max(module_limit)),
        )
        .route("/strategies/{id}", get(show_strategy).delete(delete_strategy))
        .route(
            "/datasets",
            get(list_datasets)
                .post(upload_dataset)
                .layer(DefaultBodyLimit::max(dataset_limit)),
        )
        .route("/datasets/{id}", get(show_dataset).delete(delete_dataset))
        .route(
            "/jobs",
            get(list_jobs)
                .post(submit_job)
                .layer(DefaultBodyLimit::max(json_limit)),
        )
        .route("/jobs/{id}", get(show_job).delete(cancel_job))
        .route("/jobs/{id}/result", get(job_result))
        .route("/policies", get(list_policies))
        .route(
            "/policies/{name}",
            get(show_policy)
                .put(replace_policy)
                .layer(DefaultBodyLimit::max(json_limit)),
        )
        .route("/status", get(status))
        .route("/openapi.json", get(openapi_document));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/v1", v1)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(service.clone(), observe))
        .layer(TraceLayer::new_for_http())
        .with_state(service)
}

/// Logs errors (server faults with their cause) and records the request's
/// duration by route template.
async fn observe(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    if let Some(Fault(message)) = response.extensions().get::<Fault>() {
        tracing::error!(%method, %route, status = status.as_u16(), error = %message, "request failed");
    } else if status.is_client_error() {
        tracing::debug!(%method, %route, status = status.as_u16(), "request refused");
    }
    service
        .metrics
        .http_seconds
        .with_label_values(&[method.as_str(), &route, status.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NotFound {
        what: "route",
        id: request.uri().path().to_owned(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn json_response(status: StatusCode, v: &impl serde::Serialize) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::Internal(format!("cannot write a response: {e}")).into_response(),
    }
}

/// Parses a JSON body; errors name the field (`params.fast: invalid type`)
/// or the position of a syntax error.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path == "?" || path.is_empty() {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        } else {
            ApiError::BadRequest(format!("malformed JSON: field `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Reads a whole body within the route's limit.
async fn body_bytes(request: Request, service: &Arc<Service>, limit: u64) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, service).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })
}

fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))
}

// ---- health, metrics, docs ----

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(service): State<Arc<Service>>) -> Result<&'static str, ApiError> {
    if service.is_ready() {
        Ok("ready\n")
    } else {
        Err(ApiError::Unavailable {
            detail: "not ready: starting or shutting down".into(),
        })
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        service.metrics.render(),
    )
        .into_response()
}

async fn openapi_document() -> Response {
    json_response(StatusCode::OK, &openapi::document())
}

async fn status(State(service): State<Arc<Service>>, Auth(_): Auth) -> Response {
    json_response(StatusCode::OK, &service.status())
}

// ---- strategies ----

fn strategy_view(r: &StrategyRecord) -> Value {
    let manifest: Value = serde_json::from_str(&r.manifest).unwrap_or(Value::Null);
    let info: Value = serde_json::from_str(&r.info).unwrap_or(Value::Null);
    json!({
        "id": r.sha256,
        "sha256": r.sha256,
        "name": r.name,
        "version": r.version,
        "size": r.size,
        "created": jobs::rfc3339(r.created),
        "manifest": manifest,
        "parameters": manifest.get("params").cloned().unwrap_or(Value::Null),
        "imports": info.get("imports").cloned().unwrap_or(Value::Null),
        "exports": info.get("exports").cloned().unwrap_or(Value::Null),
        "functions": info.get("functions").cloned().unwrap_or(Value::Null),
        "memory_min_pages": info.get("memory_min_pages").cloned().unwrap_or(Value::Null),
        "memory_max_pages": info.get("memory_max_pages").cloned().unwrap_or(Value::Null),
    })
}

fn created_or_ok(created: bool, location: String, v: &impl serde::Serialize) -> Response {
    let response = json_response(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        v,
    );
    with_location(response, &location)
}

fn with_location(mut response: Response, location: &str) -> Response {
    if let Ok(l) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, l);
    }
    response
}

/// `POST /v1/strategies`: the module as the raw body, or as the first file
/// field of a `multipart/form-data` body.
async fn upload_strategy(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    request: Request,
) -> ApiResult {
    let limit = service.config.max_module_bytes;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let bytes = if is_multipart {
        let mut form = Multipart::from_request(request, &service)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let field = form
            .next_field()
            .await
            .map_err(|e| multipart_error(&e, limit))?
            .ok_or_else(|| ApiError::BadRequest("multipart body has no field".into()))?;
        field.bytes().await.map_err(|e| multipart_error(&e, limit))?
    } else {
        body_bytes(request, &service, limit).await?
    };
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the body is empty: send the module's bytes".into(),
        ));
    }
    let (record, created) = service.upload_strategy(&who.tenant, bytes).await?;
    Ok(created_or_ok(
        created,
        format!("/v1/strategies/{}", record.sha256),
        &strategy_view(&record),
    ))
}

fn multipart_error(e: &axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadRequest(e.body_text())
    }
}

async fn list_strategies(State(service): State<Arc<Service>>, Auth(who): Auth) -> ApiResult {
    let list = service.strategies(&who.tenant).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "strategies": list.iter().map(strategy_view).collect::<Vec<_>>() }),
    ))
}

async fn show_strategy(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let r = service.strategy(&who.tenant, &id).await?;
    Ok(json_response(StatusCode::OK, &strategy_view(&r)))
}

async fn delete_strategy(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    service.delete_strategy(&who.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- datasets ----

fn dataset_view(r: &DatasetRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "symbols": [r.name],
        "bars": r.bars,
        "first": jobs::rfc3339(r.first_ts.saturating_mul(1000)),
        "last": jobs::rfc3339(r.last_ts.saturating_mul(1000)),
        "sha256": r.sha256,
        "size": r.size,
        "created": jobs::rfc3339(r.created),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetQuery {
    name: String,
}

/// `POST /v1/datasets?name=SYMBOL`: the CSV bars of one symbol as the body.
async fn upload_dataset(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    q: Result<Query<DatasetQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> ApiResult {
    let q = query(q)?;
    let bytes = body_bytes(request, &service, service.config.max_dataset_bytes).await?;
    let (record, created) = service.upload_dataset(&who.tenant, &q.name, bytes).await?;
    Ok(created_or_ok(
        created,
        format!("/v1/datasets/{}", record.id),
        &dataset_view(&record),
    ))
}

async fn list_datasets(State(service): State<Arc<Service>>, Auth(who): Auth) -> ApiResult {
    let list = service.datasets(&who.tenant).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "datasets": list.iter().map(dataset_view).collect::<Vec<_>>() }),
    ))
}

async fn show_dataset(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let r = service.dataset(&who.tenant, &id).await?;
    Ok(json_response(StatusCode::OK, &dataset_view(&r)))
}

async fn delete_dataset(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    service.delete_dataset(&who.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- jobs ----

/// `POST /v1/jobs[?wait=ms]`: 201 with the job's status. With `wait`, the
/// answer comes once the job ended or the wait is over, whichever is first;
/// a job that ended carries its result document under `"output"` (its
/// `"result"` is the link, as in every status).
async fn submit_job(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    q: Result<Query<ResultQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> ApiResult {
    let wait = query(q)?.wait.unwrap_or(0);
    let bytes = body_bytes(request, &service, service.config.max_json_bytes).await?;
    let job: JobRequest = parse_json(&bytes)?;
    if wait == 0 {
        let record = service.submit(&who, job).await?;
        return Ok(created_or_ok(
            true,
            format!("/v1/jobs/{}", record.id),
            &jobs::view(&record),
        ));
    }
    let (record, result) = service
        .submit_and_wait(&who, job, Duration::from_millis(wait))
        .await?;
    let location = format!("/v1/jobs/{}", record.id);
    let mut view = jobs::view(&record);
    // The stored document as it is (it is JSON: the library wrote it).
    let output = match result.as_deref().map(serde_json::from_str::<&RawValue>) {
        Some(Ok(raw)) => Some(raw),
        Some(Err(e)) => {
            return Err(ApiError::Internal(format!(
                "job {}: stored result: {e}",
                record.id
            )))
        }
        None => None,
    };
    view.output = output;
    Ok(created_or_ok(true, location, &view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    state: Option<String>,
    kind: Option<String>,
    strategy: Option<String>,
    before: Option<String>,
    limit: Option<i64>,
}

async fn list_jobs(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let state = q
        .state
        .as_deref()
        .map(|s| {
            s.parse::<JobState>()
                .map_err(|_| ApiError::BadRequest(format!("query: state {s:?} is not one of queued, running, succeeded, failed, cancelled, timed_out")))
        })
        .transpose()?;
    if let Some(k) = &q.kind {
        if Kind::parse(k).is_none() {
            return Err(ApiError::BadRequest(format!(
                "query: kind {k:?} is not one of backtest, optimize, walk_forward, monte_carlo"
            )));
        }
    }
    let before = q
        .before
        .as_deref()
        .map(|b| {
            b.strip_prefix('j')
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| ApiError::BadRequest(format!("query: before {b:?} is not a job id")))
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "query: limit {limit} is not in 1..={MAX_LIST_LIMIT}"
        )));
    }
    let filter = JobFilter {
        state,
        kind: q.kind,
        strategy: q.strategy,
        before,
        limit,
    };
    let list = service.jobs(&who.tenant, &filter).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "jobs": list.iter().map(jobs::view).collect::<Vec<_>>() }),
    ))
}

async fn show_job(State(service): State<Arc<Service>>, Auth(who): Auth, Path(id): Path<String>) -> ApiResult {
    let r = service.job(&who.tenant, &id).await?;
    Ok(json_response(StatusCode::OK, &jobs::view(&r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultQuery {
    /// Milliseconds to wait for the job to finish.
    wait: Option<u64>,
}

/// `GET /v1/jobs/{id}/result[?wait=ms]`: 200 with the result document; 202
/// with the job's status while it is queued or running.
async fn job_result(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
    q: Result<Query<ResultQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let wait = Duration::from_millis(q.wait.unwrap_or(0));
    match service.result(&who.tenant, &id, wait).await? {
        ResultRead::Ready(json) => Ok((
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(json.to_string()),
        )
            .into_response()),
        ResultRead::Pending(record) => {
            let mut response = json_response(StatusCode::ACCEPTED, &jobs::view(&record));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            Ok(response)
        }
    }
}

/// `DELETE /v1/jobs/{id}`: 200 when a queued job is now cancelled, 202 when a
/// running job was told to stop (it stops within a few milliseconds).
async fn cancel_job(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let r = service.cancel(&who.tenant, &id).await?;
    let status = if r.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(json_response(status, &jobs::view(&r)))
}

// ---- policies ----

async fn list_policies(State(service): State<Arc<Service>>, Auth(_): Auth) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        &json!({ "policies": service.policies() }),
    ))
}

async fn show_policy(
    State(service): State<Arc<Service>>,
    Auth(_): Auth,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(json_response(StatusCode::OK, &service.policy(&name).await?))
}

/// `PUT /v1/policies/{name}`: the policy as a TOML body; operators only.
async fn replace_policy(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(name): Path<String>,
    request: Request,
) -> ApiResult {
    if !who.operator {
        return Err(ApiError::Forbidden("only operators may change policies".into()));
    }
    let bytes = body_bytes(request, &service, service.config.max_json_bytes).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::BadRequest("the policy is not UTF-8 text".into()))?;
    Ok(json_response(
        StatusCode::OK,
        &service.replace_policy(&who, &name, text).await?,
    ))
}

/// The methods the router answers for a path of the OpenAPI table (for the
/// test that keeps them in step).
pub fn documented_methods() -> Vec<(Method, &'static str)> {
    openapi::ROUTES
        .iter()
        .map(|r| {
            (
                r.method.to_ascii_uppercase().parse().expect("valid method"),
                r.path,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::http::Request as HttpRequest;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::Tokens;
    use crate::config::Config;
    use crate::problem::PROBLEM_TYPES;

    const ALICE: &str = "alice-token-0123456789";
    const OPS: &str = "ops-token-0123456789abc";

    async fn service(dir: &Path, tokens: bool) -> Arc<Service> {
        let config = Config {
            data_dir: dir.to_owned(),
            max_json_bytes: 1024,
            ..Config::default()
        };
        let tokens = if tokens {
            let text = format!(
                "[[token]]\ntoken = \"{ALICE}\"\ntenant = \"alice\"\n[[token]]\ntoken = \"{OPS}\"\ntenant = \"ops\"\noperator = true\n"
            );
            Tokens::from_toml(&text, Path::new("tokens.toml")).unwrap()
        } else {
            Tokens::default()
        };
        Service::start(config, tokens, tokio::runtime::Handle::current())
            .await
            .unwrap()
    }

    async fn send(
        app: &Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = HttpRequest::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response = app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, bytes.to_vec())
    }

    /// Checks one request's problem+json answer: status and type name.
    async fn check(
        app: &Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &[u8],
        status: u16,
        kind: &str,
    ) -> Value {
        let (st, headers, bytes) = send(app, method, uri, token, body.to_vec()).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(st.as_u16(), status, "{method} {uri}: {v}");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{method} {uri}"
        );
        assert_eq!(
            v["type"],
            format!("urn:palisade:problem:{kind}"),
            "{method} {uri}: {v}"
        );
        assert_eq!(v["status"], status);
        assert_eq!(
            v["title"],
            StatusCode::from_u16(status).unwrap().canonical_reason().unwrap()
        );
        assert!(PROBLEM_TYPES.contains(&kind), "{kind} is not listed");
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_documented_route_is_routed() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(service(dir.path(), false).await);
        for (method, path) in documented_methods() {
            let uri = path.replace("{id}", "x").replace("{name}", "x");
            let (status, _, body) = send(&app, method.as_str(), &uri, None, Vec::new()).await;
            let text = String::from_utf8_lossy(&body);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !text.contains("unknown route"),
                "{method} {path} is not routed: {text}"
            );
        }
        // And the fallbacks answer problem+json too.
        check(&app, "GET", "/v1/nope", None, b"", 404, "not-found").await;
        check(&app, "PATCH", "/v1/jobs", None, b"", 405, "method-not-allowed").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_problem_json_with_stable_types() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(service(dir.path(), true).await);
        let (status, headers, _) = send(&app, "GET", "/v1/jobs", None, Vec::new()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer realm=\"palisade\"");
        check(&app, "GET", "/v1/jobs", None, b"", 401, "unauthorized").await;
        check(
            &app,
            "GET",
            "/v1/jobs",
            Some("wrong-token-0000000000"),
            b"",
            401,
            "unauthorized",
        )
        .await;
        check(&app, "PUT", "/v1/policies/p", Some(ALICE), b"", 403, "forbidden").await;
        check(&app, "GET", "/v1/jobs/j1", Some(ALICE), b"", 404, "not-found").await;
        check(
            &app,
            "GET",
            "/v1/strategies/abc",
            Some(ALICE),
            b"",
            404,
            "not-found",
        )
        .await;
        let v = check(
            &app,
            "POST",
            "/v1/jobs",
            Some(ALICE),
            br#"{"strategy":"s","dataset":"d","seed":-1}"#,
            400,
            "bad-request",
        )
        .await;
        assert!(v["detail"].as_str().unwrap().contains("field `seed`"), "{v}");
        check(
            &app,
            "POST",
            "/v1/jobs",
            Some(ALICE),
            &[b' '; 2000],
            413,
            "payload-too-large",
        )
        .await;
        check(
            &app,
            "POST",
            "/v1/datasets?name=x",
            Some(ALICE),
            b"timestamp,open\n",
            422,
            "invalid-dataset",
        )
        .await;
        check(
            &app,
            "GET",
            "/v1/jobs?limit=0",
            Some(ALICE),
            b"",
            400,
            "bad-request",
        )
        .await;
        check(
            &app,
            "GET",
            "/v1/jobs?colour=red",
            Some(ALICE),
            b"",
            400,
            "bad-request",
        )
        .await;
        let v = check(
            &app,
            "PUT",
            "/v1/policies/p",
            Some(OPS),
            b"stack_bytes = 1",
            422,
            "invalid-policy",
        )
        .await;
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("stack_bytes = 1 is out of range"),
            "{v}"
        );
        check(
            &app,
            "PUT",
            "/v1/policies/Bad%20Name",
            Some(OPS),
            b"",
            422,
            "invalid-policy",
        )
        .await;
        // Probes need no token.
        assert_eq!(
            send(&app, "GET", "/healthz", None, Vec::new()).await.0,
            StatusCode::OK
        );
        assert_eq!(
            send(&app, "GET", "/readyz", None, Vec::new()).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_are_content_addressed_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(service(dir.path(), false).await);
        let module = palisade_testkit::guests::bytes("sma_cross");
        let (status, headers, body) = send(&app, "POST", "/v1/strategies", None, module.clone()).await;
        assert_eq!(status, StatusCode::CREATED);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let sha = crate::storage::sha256_hex(&module);
        assert_eq!(v["id"], sha.as_str());
        assert_eq!(
            headers[header::LOCATION],
            format!("/v1/strategies/{sha}").as_str()
        );
        assert_eq!(v["manifest"]["name"], "sma-cross");
        let (status, _, _) = send(&app, "POST", "/v1/strategies", None, module).await;
        assert_eq!(status, StatusCode::OK, "a duplicate is the existing strategy");
        let forbidden = wat::parse_str(r#"(module (import "env" "system" (func)))"#).unwrap();
        let v = check(
            &app,
            "POST",
            "/v1/strategies",
            None,
            &forbidden,
            422,
            "invalid-module",
        )
        .await;
        assert_eq!(v["cause"], "forbidden_import");
        assert_eq!(v["detail"], "forbidden_import: forbidden import env.system");
        let (_, _, body) = send(&app, "GET", "/v1/strategies", None, Vec::new()).await;
        let list: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["strategies"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn server_faults_are_not_shown() {
        let response = ApiError::Internal("database /secret/path is locked".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.extensions().get::<Fault>().is_some(), "kept for the log");
        let body = futures_body(response);
        assert!(!body.contains("secret"), "{body}");
        assert!(body.contains("urn:palisade:problem:internal"), "{body}");
    }

    fn futures_body(response: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
