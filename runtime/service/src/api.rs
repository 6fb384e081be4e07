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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Multipart, Path, Query, Request, State,
};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use palisade_document::{
    BacktestDocument, MonteCarloDocument, OptimizeDocument, ResultDocument, WalkForwardDocument,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::auth::Principal;
use crate::deployments::{DeploymentError, Imposed, Scope};
use crate::jobs::JobView;
use crate::jobs::{self, JobRequest, Kind};
use crate::problem::{ApiError, Fault, Problem};
use crate::service::ServiceError;
use crate::service::{Claim, ResultRead, Service};
use crate::storage::{sha256_hex, JobFilter, JobState, Spool};
use crate::views::{
    DatasetList, DatasetView, JobList, PolicyChange, PolicyList, PolicyView, StatusView, StrategyList,
    StrategyView,
};
use crate::worker::Role;
use palisade_live::{Command, DriftError, LiveFill};

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
        if service.role == Role::Worker && service.tokens.is_open() {
            // A worker without tokens (it listens on loopback only): the
            // caller the forwarding API node authenticated, if it says.
            let get = |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
            };
            if let Some(tenant) = get(crate::fleet::FORWARDED_TENANT) {
                return Ok(Auth(Principal {
                    tenant: tenant.to_owned(),
                    operator: get(crate::fleet::FORWARDED_OPERATOR) == Some("true"),
                }));
            }
        }
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

/// The router of a worker (`palisade worker`): its probes and metrics.
pub fn worker_router(service: Arc<Service>) -> Router {
    let json_limit = service.config.max_json_bytes as usize;
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if service.leases.url.get().is_some() {
        // The deployments it runs, for API nodes to forward to (only when
        // it runs deployments: with tokens, or on loopback).
        router = router
            .nest(
                "/v1",
                deployment_routes(json_limit)
                    .route_layer(middleware::from_fn_with_state(service.clone(), while_starting)),
            )
            .route("/internal/stops/apply", post(apply_stops));
    }
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(service.clone(), observe))
        .with_state(service)
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
                .delete(revert_policy)
                .layer(DefaultBodyLimit::max(json_limit)),
        )
        .merge(if service.role == Role::Api {
            // Distributed mode: the worker holding a deployment's lease
            // answers for it.
            deployment_routes(json_limit).route_layer(middleware::from_fn_with_state(
                service.clone(),
                forward_deployment,
            ))
        } else {
            deployment_routes(json_limit)
        })
        .route("/emergency-stop", post(emergency_stop))
        .route("/emergency-stop/release", post(release_emergency_stop))
        .route("/status", get(status))
        .route("/workers", get(list_workers))
        .route("/openapi.json", get(openapi_document));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/v1", v1)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(service.clone(), observe))
        // Faults are logged once, with their cause, by `observe`; the
        // trace layer's own 5xx line is debug (a shutdown answers every
        // request 503, which is no error of the server).
        .layer(
            TraceLayer::new_for_http()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(service)
}

/// The routes of live deployments (under `/v1`): the whole API's, and a
/// worker's.
fn deployment_routes(json_limit: usize) -> Router<Arc<Service>> {
    Router::new()
        .route(
            "/deployments",
            get(list_deployments)
                .post(create_deployment)
                .layer(DefaultBodyLimit::max(json_limit)),
        )
        .route("/deployments/{id}", get(show_deployment).delete(stop_deployment))
        .route("/deployments/{id}/gate", post(gate_deployment))
        .route("/deployments/{id}/audit", get(deployment_audit))
        .route("/deployments/{id}/fills", post(report_fill))
        .route("/deployments/{id}/verify", post(verify_deployment))
        .route("/deployments/{id}/intents", get(deployment_intents))
}

/// An API node in the distributed mode answers a deployment's request by
/// forwarding it to the worker holding the deployment's lease (a new
/// deployment: to the live worker running fewest); the list gathers every
/// worker's.
async fn forward_deployment(State(service): State<Arc<Service>>, req: Request, _next: Next) -> Response {
    match forward(&service, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn forward(service: &Arc<Service>, req: Request) -> Result<Response, ApiError> {
    use crate::fleet;
    let (parts, body) = req.into_parts();
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = service
        .tokens
        .authenticate(header)
        .map_err(ApiError::Unauthorized)?;
    let limit = service.config.max_json_bytes;
    let body = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    let pool = shared_store(service)?;
    // Nested under `/v1`, the router sees `/deployments…`.
    let path = parts.uri.path().to_owned();
    let path_and_query = format!(
        "/v1{}",
        parts.uri.path_and_query().map_or(path.as_str(), |p| p.as_str())
    );
    let path_and_query = path_and_query.as_str();
    let rest = path.strip_prefix("/deployments").unwrap_or_default();
    // Who the caller is, for a worker without tokens of its own.
    let mut forwarded = parts.headers.clone();
    forwarded.remove(crate::fleet::FORWARDED_TENANT);
    forwarded.remove(crate::fleet::FORWARDED_OPERATOR);
    if let Ok(tenant) = HeaderValue::from_str(&who.tenant) {
        forwarded.insert(crate::fleet::FORWARDED_TENANT, tenant);
        forwarded.insert(
            crate::fleet::FORWARDED_OPERATOR,
            HeaderValue::from_static(if who.operator { "true" } else { "false" }),
        );
    }
    let (method, headers) = (&parts.method, &forwarded);
    let send = |url: String, body| async move {
        service
            .forwarder
            .send(&url, method.clone(), path_and_query, headers, body)
            .await
            .map_err(|e| ApiError::Unavailable {
                detail: format!("the worker at {url} does not answer ({e}); try again in a few seconds"),
            })
    };
    if rest.is_empty() {
        if parts.method == Method::POST {
            let url = service
                .worker_for_deployment()
                .await
                .map_err(|detail| ApiError::Unavailable { detail })?;
            return Ok(send(url, body).await?.into_response());
        }
        let rows = fleet::list(pool, (!who.operator).then_some(who.tenant.as_str()))
            .await
            .map_err(store_unreadable)?;
        let mut statuses: HashMap<String, serde_json::Value> = HashMap::new();
        let mut urls: Vec<String> = rows
            .iter()
            .filter(|r| r.live)
            .filter_map(|r| r.owner_url.clone())
            .collect();
        urls.sort();
        urls.dedup();
        for url in urls {
            let answer = service
                .forwarder
                .send(&url, Method::GET, "/v1/deployments", headers, Bytes::new())
                .await;
            let Ok(a) = answer.inspect_err(
                |e| tracing::warn!(worker = %url, error = %e, "a worker did not list its deployments"),
            ) else {
                continue;
            };
            let list: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
            for d in list["deployments"].as_array().into_iter().flatten() {
                if let Some(id) = d["id"].as_str() {
                    statuses.insert(id.to_owned(), d.clone());
                }
            }
        }
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                if let Some(error) = &r.failed {
                    return failed_row(r, error);
                }
                let mut v = statuses.remove(&r.id).filter(|_| r.live).unwrap_or_else(
                    || serde_json::json!({ "id": r.id, "tenant": r.tenant, "state": "moving" }),
                );
                v["worker"] = serde_json::json!(r.owner.clone().filter(|_| r.live));
                v
            })
            .collect();
        service
            .deployments
            .reload_stops()
            .await
            .map_err(deployment_error)?;
        let stops = service.deployments.stops_seen_by(&who.tenant, who.operator, |d| {
            rows.iter().any(|r| r.id == d && r.tenant == who.tenant)
        });
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "deployments": list, "emergency_stops": stops }),
        ));
    }
    let id = rest.trim_start_matches('/').split('/').next().unwrap_or_default();
    let not_found = || ApiError::NotFound {
        what: "deployment",
        id: id.to_owned(),
    };
    let row = visible_row(service, &who, id)
        .await?
        .filter(|r| !r.stopped || r.failed.is_some())
        .ok_or_else(not_found)?;
    let whole = rest.trim_start_matches('/') == id;
    // Stopped after failed takeovers: shown, and stopped for good by DELETE
    // (below, as any deployment no worker holds); nothing else reaches it.
    match &row.failed {
        Some(error) if whole && method == Method::GET => {
            return Ok(json_response(StatusCode::OK, &failed_row(&row, error)));
        }
        Some(error) if !(whole && method == Method::DELETE) => {
            return Err(ApiError::Conflict(format!(
                "deployment {id} did not start on {} takeovers in a row ({error}); DELETE it",
                fleet::MAX_FAILED_STARTS
            )));
        }
        _ => {}
    }
    match row.owner_url.clone().filter(|_| row.live) {
        Some(url) => {
            let answer = send(url, body).await?;
            if whole && method == Method::GET && answer.status.is_success() {
                if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&answer.body) {
                    v["worker"] = serde_json::json!(row.owner);
                    return Ok(json_response(answer.status, &v));
                }
            }
            Ok(answer.into_response())
        }
        None if whole
            && method == Method::DELETE
            && fleet::mark_stopped_if_free(pool, id)
                .await
                .map_err(store_unreadable)? =>
        {
            // No worker runs it: stopped in the store, nobody takes it over.
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "id": id, "tenant": row.tenant, "state": "stopped" }),
            ))
        }
        None => Err(ApiError::Unavailable {
            detail: format!(
                "deployment {id} is moving to another worker (its worker's lease expired); try again in a few seconds"
            ),
        }),
    }
}

/// How an API node shows a deployment stopped after failed takeovers: as
/// the embedded service shows one that did not restart.
fn failed_row(r: &crate::fleet::DeploymentRow, error: &str) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "tenant": r.tenant, "state": "failed", "start_error": error, "worker": null
    })
}

/// The shared store (distributed mode).
fn shared_store(service: &Service) -> Result<&sqlx::PgPool, ApiError> {
    service
        .store
        .postgres()
        .ok_or_else(|| ApiError::Internal("the distributed mode without a shared store".into()))
}

fn store_unreadable(e: sqlx::Error) -> ApiError {
    ApiError::Unavailable {
        detail: format!("the shared store cannot be read ({e}); try again later"),
    }
}

/// Deployment `id`'s row in the shared store, if `who` may see it (its
/// tenant's, or any for an operator).
async fn visible_row(
    service: &Service,
    who: &Principal,
    id: &str,
) -> Result<Option<crate::fleet::DeploymentRow>, ApiError> {
    let row = crate::fleet::find(shared_store(service)?, id)
        .await
        .map_err(store_unreadable)?;
    Ok(row.filter(|r| who.operator || r.tenant == who.tenant))
}

/// A worker: a deployment it claimed and is still starting (restoring its
/// files, recovering) answers 503, not 404.
async fn while_starting(
    State(service): State<Arc<Service>>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    let lost_for = service.config.heartbeat_ttl() * 2;
    match params.get("id") {
        Some(id) if service.leases.is_unavailable(id, lost_for) => ApiError::Unavailable {
            detail: format!(
                "deployment {id} is moving to or from this worker (recovering by replay); try again in a few seconds"
            ),
        }
        .into_response(),
        _ => next.run(req).await,
    }
}

/// A worker: applies the emergency stops in force now (an API node asks
/// after a stop is imposed or lifted, naming its scope in the body). The
/// answer's `stopped` is every deployment here the scope holds stopped
/// (its heartbeat may have applied the stop first).
async fn apply_stops(State(service): State<Arc<Service>>, Auth(_who): Auth, body: Bytes) -> ApiResult {
    let scope: Option<Scope> = if body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("a scope: {e}")))?)
    };
    let (mut stopped, released) = service.deployments.sync_stops().await.map_err(deployment_error)?;
    if let Some(scope) = scope {
        stopped = service.deployments.stopped_in(&scope);
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "stopped": stopped, "released": released }),
    ))
}

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The `Idempotency-Key` header of a submission, if any: 1 to 255 visible
/// ASCII characters.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY_BYTES
        || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters (no spaces)"
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Longest body of a framework rejection carried into the problem's detail.
const REJECTION_TEXT_BYTES: usize = 4 << 10;

/// An error response the framework made (a path, query or body it could
/// not extract: plain text) made problem+json like every error of ours,
/// its text as the detail; anything else unchanged.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, REJECTION_TEXT_BYTES).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_owned(),
        _ => crate::problem::title(status).to_owned(),
    };
    let mut fresh = crate::problem::problem(status, crate::problem::type_of_status(status), &text, None);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *fresh.extensions_mut() = parts.extensions;
    fresh
}

/// Logs errors (server faults with their cause) and records the request's
/// duration by route template.
async fn observe(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Labels take values from closed sets, whatever a client sends: methods
    // outside the standard ones are `other`, paths outside the routes
    // `unmatched`.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // A query that is not UTF-8 once percent-decoded is refused here, so
    // no value reaches a handler with U+FFFD in place of the bytes sent.
    let query_is_utf8 = request
        .uri()
        .query()
        .is_none_or(|q| percent_encoding::percent_decode_str(q).decode_utf8().is_ok());
    let response = if query_is_utf8 {
        as_problem(next.run(request).await).await
    } else {
        ApiError::BadRequest("query: not UTF-8 once percent-decoded".into()).into_response()
    };
    let status = response.status();
    if let Some(Fault(message)) = response.extensions().get::<Fault>() {
        tracing::error!(%method, %route, status = status.as_u16(), error = %message, "request failed");
    } else if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE {
        // 503: shutting down or starting (the store's failures are logged
        // by its writer).
        tracing::debug!(%method, %route, status = status.as_u16(), "request refused");
    } else if status.is_server_error() {
        tracing::warn!(%method, %route, status = status.as_u16(), "request not served");
    }
    service
        .metrics
        .http_seconds
        .with_label_values(&[method, &route, status.as_str()])
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

/// Parses a JSON body whose nested settings the OpenAPI document leaves
/// open: a syntax error is 400 (`bad-request`), anything else, a missing or
/// unknown field or a wrong value, is `invalid` (422), naming the field.
fn parse_settings<T: serde::de::DeserializeOwned>(
    body: &[u8],
    invalid: fn(String) -> ApiError,
) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path == "?" || path.is_empty() {
            invalid(inner.to_string())
        } else {
            invalid(format!("field `{path}`: {inner}"))
        }
    })
}

/// Reads a whole body within the route's limit.
async fn body_bytes(request: Request, service: &Arc<Service>, limit: u64) -> Result<Bytes, ApiError> {
    let request = refuse_declared_length(request, service, limit).await?;
    within_body_time(service, Bytes::from_request(request, service))
        .await?
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })
}

/// Writes a whole body to a file in the store's `tmp/` as it arrives,
/// hashing it on the way, within the route's limit and `body_timeout_ms`.
async fn spool_body(request: Request, service: &Arc<Service>, limit: u64) -> Result<Spool, ApiError> {
    let request = refuse_declared_length(request, service, limit).await?;
    let body = request.into_body().into_data_stream();
    within_body_time(
        service,
        spool(service, body, limit, |e| {
            ApiError::BadRequest(format!("reading the body: {e}"))
        }),
    )
    .await?
}

/// Bytes gathered before each write of a spooled upload: what one upload
/// holds in memory at most.
const SPOOL_CHUNK: usize = 256 << 10;

/// Writes the chunks of `body` to a new [`Spool`], refusing more than
/// `limit` bytes (413) as soon as they arrive. Writes run on the blocking
/// pool, [`SPOOL_CHUNK`] bytes at a time.
async fn spool<E>(
    service: &Arc<Service>,
    mut body: impl futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    limit: u64,
    error: impl Fn(E) -> ApiError,
) -> Result<Spool, ApiError> {
    use futures_util::StreamExt;
    let mut spool = service.spool()?;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = body.next().await.transpose().map_err(&error)?;
        let end = chunk.is_none();
        if let Some(chunk) = chunk {
            if spool.size() + (pending.len() + chunk.len()) as u64 > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            pending.extend_from_slice(&chunk);
        }
        if pending.len() >= SPOOL_CHUNK || (end && !pending.is_empty()) {
            let data = std::mem::take(&mut pending);
            spool = tokio::task::spawn_blocking(move || spool.write(&data).map(|()| spool))
                .await
                .map_err(|e| ApiError::Internal(format!("spool task: {e}")))?
                .map_err(|e| ApiError::from(crate::service::ServiceError::from(e)))?;
        }
        if end {
            return Ok(spool);
        }
    }
}

/// Bytes a multipart form may add around its one field (boundaries and
/// part headers).
const MULTIPART_OVERHEAD: u64 = 64 << 10;

/// Largest body read and dropped before a refusal from its declared
/// length is answered (see [`refuse_declared_length`]).
const DRAIN_BYTES: u64 = 4 << 20;

/// Refuses a body whose `Content-Length` says it is over `limit` (413)
/// before storing any of it. A body of at most [`DRAIN_BYTES`] is read and
/// dropped first (within `body_timeout_ms`): closing a connection with
/// unread bytes makes the kernel reset it, and the reset can destroy the
/// answer before the client reads it. A larger one is refused at once.
async fn refuse_declared_length(
    request: Request,
    service: &Arc<Service>,
    limit: u64,
) -> Result<Request, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => {
            if n <= DRAIN_BYTES {
                use futures_util::StreamExt;
                let mut body = request.into_body().into_data_stream();
                let drain = async { while let Some(Ok(_)) = body.next().await {} };
                let _ = within_body_time(service, drain).await;
            }
            Err(ApiError::PayloadTooLarge { limit })
        }
        _ => Ok(request),
    }
}

/// Runs a read of a request's body within `body_timeout_ms`; a client that
/// sends too slowly gets 408 (and its connection closed).
async fn within_body_time<T>(
    service: &Service,
    read: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    let ms = service.config.body_timeout_ms;
    tokio::time::timeout(Duration::from_millis(ms), read)
        .await
        .map_err(|_| ApiError::RequestTimeout { ms })
}

fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))
}

// ---- health, metrics, docs ----

#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Liveness: 200 while the HTTP runtime answers",
    security(()),
    responses(
        (status = 200, description = "alive", body = String, content_type = "text/plain"),
    )
)]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(
    get,
    path = "/readyz",
    summary = "Readiness: 200 once recovery is done and while the store can write; 503 while starting, shutting down or unable to write",
    security(()),
    responses(
        (status = 200, description = "ready", body = String, content_type = "text/plain"),
        (status = 503, description = "starting, shutting down, or the store cannot write (a full disk); the detail says which (Retry-After)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn readyz(State(service): State<Arc<Service>>) -> Result<&'static str, ApiError> {
    match service.readiness().await {
        Ok(()) => Ok("ready\n"),
        Err(detail) => Err(ApiError::Unavailable { detail }),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics (text exposition format)",
    security(()),
    responses(
        (status = 200, description = "the metrics", body = String, content_type = "text/plain"),
    )
)]
async fn metrics(State(service): State<Arc<Service>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        service.render_metrics(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    summary = "This document",
    security(()),
    responses(
        (status = 200, description = "the OpenAPI document", body = Object),
    )
)]
async fn openapi_document() -> Response {
    json_response(StatusCode::OK, openapi_json())
}

/// The OpenAPI 3.1 document of this API, derived from the handlers'
/// `#[utoipa::path]` attributes and the request and response types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Palisade",
        description = "Sandboxed WebAssembly trading strategies: uploads, jobs, policies. Errors are application/problem+json."
    ),
    paths(
        healthz, readyz, metrics, openapi_document, status, list_workers,
        upload_strategy, list_strategies, show_strategy, delete_strategy,
        upload_dataset, list_datasets, show_dataset, delete_dataset,
        submit_job, list_jobs, show_job, cancel_job, job_result,
        list_policies, show_policy, replace_policy, revert_policy,
        create_deployment, list_deployments, show_deployment, stop_deployment, gate_deployment,
        deployment_audit, report_fill, verify_deployment, deployment_intents,
        emergency_stop, release_emergency_stop,
    ),
    components(schemas(Problem, ResultDocument, BacktestDocument, OptimizeDocument, WalkForwardDocument, MonteCarloDocument)),
    modifiers(&BearerAuth, &StoreRefusals),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// Adds the bearer-token scheme every authenticated route uses.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", scheme);
    }
}

/// Adds to every route that writes (POST, PUT, DELETE) the answers of a
/// store that cannot write: 507 when it has no room, 503 on an I/O error.
struct StoreRefusals;

impl Modify for StoreRefusals {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let refusal = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.post, &mut item.put, &mut item.delete]
                .into_iter()
                .flatten()
            {
                let responses = &mut op.responses.responses;
                responses.insert(
                    "507".into(),
                    refusal("the server's disk is full; nothing was stored (Retry-After)").into(),
                );
                responses.entry("503".into()).or_insert_with(|| {
                    refusal("shutting down, or the store cannot write; nothing was stored (Retry-After)")
                        .into()
                });
            }
        }
    }
}

/// The document, built once.
pub fn openapi_json() -> &'static utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

#[utoipa::path(
    get,
    path = "/v1/status",
    summary = "Queue depths, running jobs, workers and the limits in force",
    responses(
        (status = 200, description = "the service's state", body = StatusView),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn status(State(service): State<Arc<Service>>, Auth(who): Auth) -> Response {
    json_response(StatusCode::OK, &service.status(&who))
}

/// The workers of the distributed mode, as their heartbeats say.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerList {
    /// `embedded` (this process runs its own jobs; no workers) or
    /// `distributed`.
    pub mode: &'static str,
    /// Workers that beat in the last ten minutes; those whose heartbeat
    /// expired are `down`.
    pub workers: Vec<crate::queue::WorkerInfo>,
}

#[utoipa::path(
    get,
    path = "/v1/workers",
    summary = "The workers of the distributed mode and their heartbeats (operators only)",
    responses(
        (status = 200, description = "every worker seen in the last ten minutes", body = WorkerList),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "the queue (Redis) cannot be reached (Retry-After)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_workers(State(service): State<Arc<Service>>, Auth(who): Auth) -> Result<Response, ApiError> {
    if !who.operator {
        return Err(ApiError::Forbidden("only operators may list workers".into()));
    }
    let workers = service.workers().await?;
    let mode = if service.config.is_distributed() {
        "distributed"
    } else {
        "embedded"
    };
    Ok(json_response(StatusCode::OK, &WorkerList { mode, workers }))
}

// ---- strategies ----

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
/// field of a `multipart/form-data` body. A body that is UTF-8 text, not a
/// wasm module, is a Python strategy's source.
#[utoipa::path(
    post,
    path = "/v1/strategies",
    summary = "Upload a strategy: a wasm module, or Python source (raw body or multipart); validated and compiled once. 201 when new, 200 when the tenant already has it",
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "the module, or a Python strategy's source as UTF-8 text (any content type, e.g. text/x-python), or a multipart/form-data body whose first file field is either"),
    responses(
        (status = 201, description = "uploaded", body = StrategyView),
        (status = 200, description = "the tenant already has it", body = StrategyView),
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the content is refused (validation names why)", body = Problem, content_type = "application/problem+json"),
    )
)]
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
    let spool = if is_multipart {
        let request = refuse_declared_length(request, &service, limit + MULTIPART_OVERHEAD).await?;
        let mut form = Multipart::from_request(request, &service)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let read = async {
            let field = form
                .next_field()
                .await
                .map_err(|e| multipart_error(&e, limit))?
                .ok_or_else(|| ApiError::BadRequest("multipart body has no field".into()))?;
            spool(&service, field, limit, |e| multipart_error(&e, limit)).await
        };
        within_body_time(&service, read).await??
    } else {
        spool_body(request, &service, limit).await?
    };
    if spool.size() == 0 {
        return Err(ApiError::BadRequest(
            "the body is empty: send the module's bytes".into(),
        ));
    }
    let (record, created) = service.upload_strategy(&who.tenant, spool).await?;
    Ok(created_or_ok(
        created,
        format!("/v1/strategies/{}", record.sha256),
        &StrategyView::of(&record),
    ))
}

fn multipart_error(e: &axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadRequest(e.body_text())
    }
}

#[utoipa::path(
    get,
    path = "/v1/strategies",
    summary = "The tenant's strategies",
    responses(
        (status = 200, description = "the strategies", body = StrategyList),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_strategies(State(service): State<Arc<Service>>, Auth(who): Auth) -> ApiResult {
    let list = service.strategies(&who.tenant).await?;
    Ok(json_response(
        StatusCode::OK,
        &StrategyList {
            strategies: list.iter().map(StrategyView::of).collect(),
        },
    ))
}

#[utoipa::path(
    get,
    path = "/v1/strategies/{id}",
    summary = "A strategy: manifest, parameter schema, imports, exports, size, hash",
    params(
        ("id" = String, Path, description = "the strategy id (its content's SHA-256 in hex)", pattern = "^[0-9a-f]{64}$"),
    ),
    responses(
        (status = 200, description = "the strategy", body = StrategyView),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show_strategy(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let r = service.strategy(&who.tenant, &id).await?;
    Ok(json_response(StatusCode::OK, &StrategyView::of(&r)))
}

#[utoipa::path(
    delete,
    path = "/v1/strategies/{id}",
    summary = "Delete a strategy (jobs already submitted still run)",
    params(
        ("id" = String, Path, description = "the strategy id (its content's SHA-256 in hex)", pattern = "^[0-9a-f]{64}$"),
    ),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_strategy(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    service.delete_strategy(&who.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- datasets ----

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DatasetQuery {
    /// The symbol: 1 to 64 characters, without commas or control characters.
    #[param(pattern = "^[^,\\u0000-\\u001f\\u007f-\\u009f]{1,64}$")]
    name: String,
}

/// `POST /v1/datasets?name=SYMBOL`: the CSV bars of one symbol as the body.
#[utoipa::path(
    post,
    path = "/v1/datasets",
    summary = "Upload the CSV bars of one symbol; errors name the line. 201 when new, 200 when the tenant already has it",
    params(
        DatasetQuery,
    ),
    request_body(content = String, content_type = "text/csv", description = "timestamp,open,high,low,close,volume"),
    responses(
        (status = 201, description = "uploaded", body = DatasetView),
        (status = 200, description = "the tenant already has it", body = DatasetView),
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the content is refused (validation names why)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn upload_dataset(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    q: Result<Query<DatasetQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> ApiResult {
    let q = query(q)?;
    let spool = spool_body(request, &service, service.config.max_dataset_bytes).await?;
    let (record, created) = service.upload_dataset(&who.tenant, &q.name, spool).await?;
    Ok(created_or_ok(
        created,
        format!("/v1/datasets/{}", record.id),
        &DatasetView::of(&record),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/datasets",
    summary = "The tenant's datasets",
    responses(
        (status = 200, description = "the datasets", body = DatasetList),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_datasets(State(service): State<Arc<Service>>, Auth(who): Auth) -> ApiResult {
    let list = service.datasets(&who.tenant).await?;
    Ok(json_response(
        StatusCode::OK,
        &DatasetList {
            datasets: list.iter().map(DatasetView::of).collect(),
        },
    ))
}

#[utoipa::path(
    get,
    path = "/v1/datasets/{id}",
    summary = "A dataset",
    params(
        ("id" = String, Path, description = "the dataset id (16 hex digits)", pattern = "^[0-9a-f]{16}$"),
    ),
    responses(
        (status = 200, description = "the dataset", body = DatasetView),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show_dataset(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let r = service.dataset(&who.tenant, &id).await?;
    Ok(json_response(StatusCode::OK, &DatasetView::of(&r)))
}

#[utoipa::path(
    delete,
    path = "/v1/datasets/{id}",
    summary = "Delete a dataset (jobs already submitted still run)",
    params(
        ("id" = String, Path, description = "the dataset id (16 hex digits)", pattern = "^[0-9a-f]{16}$"),
    ),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/jobs",
    summary = "Submit a job; acknowledged once durably recorded. With wait, answered once it ended (its result document under \"output\") or the wait is over",
    params(
        ResultQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body gets the job it created (200, Idempotent-Replayed: true), never a second job", pattern = "^[!-~]{1,255}$"),
    ),
    request_body(content = JobRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "the job's status", body = JobView),
        (status = 200, description = "the key was sent before with this body: the job it created, as it is now", body = JobView),
        (status = 202, description = "with wait: the server is shutting down; the job is recorded as it stands and runs again after the restart", body = JobView),
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the key is in use by a request in flight, or was sent with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the content is refused (validation names why)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate limited or the queue is full (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "starting or shutting down, or the store cannot write (Retry-After)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn submit_job(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    q: Result<Query<ResultQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> ApiResult {
    let wait = query(q)?.wait.unwrap_or(0);
    let key = idempotency_key(request.headers())?;
    let bytes = body_bytes(request, &service, service.config.max_json_bytes).await?;
    let job: JobRequest = parse_json(&bytes)?;
    let claim = match key {
        None => None,
        Some(key) => match service.claim_key(&who, &key, &sha256_hex(&bytes)).await? {
            Claim::New(claim) => Some(claim),
            Claim::Replay(record) => {
                // Submitted before with this key: the job as it is now.
                let mut response =
                    created_or_ok(false, format!("/v1/jobs/{}", record.id), &jobs::view(&record));
                response
                    .headers_mut()
                    .insert("idempotent-replayed", header::HeaderValue::from_static("true"));
                return Ok(response);
            }
        },
    };
    if wait == 0 {
        let record = service.submit(&who, job, claim.as_ref()).await?;
        return Ok(created_or_ok(
            true,
            format!("/v1/jobs/{}", record.id),
            &jobs::view(&record),
        ));
    }
    let crate::service::Waited { record, result, cut } = service
        .submit_and_wait(&who, job, Duration::from_millis(wait), claim.as_ref())
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
    if cut {
        // Shutting down: the job is recorded as it stands and runs (again)
        // after the restart.
        return Ok(with_location(
            json_response(StatusCode::ACCEPTED, &view),
            &location,
        ));
    }
    Ok(created_or_ok(true, location, &view))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Only jobs of this kind.
    #[param(value_type = Option<Kind>)]
    kind: Option<String>,
    /// Only jobs of this strategy id.
    #[param(pattern = "^[0-9a-f]{64}$")]
    strategy: Option<String>,
    /// Only jobs older than this job id (the next page).
    #[param(pattern = "^j[0-9a-f]{16}$")]
    before: Option<String>,
    /// At most this many jobs (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/jobs",
    summary = "The tenant's jobs, newest first",
    params(
        JobsQuery,
    ),
    responses(
        (status = 200, description = "the jobs", body = JobList),
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`before` names no job of this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
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
    if let Some(id) = q
        .strategy
        .as_deref()
        .filter(|id| !crate::storage::is_sha256_hex(id))
    {
        return Err(ApiError::BadRequest(format!(
            "query: strategy {id:?} is not a strategy id (64 lowercase hex digits)"
        )));
    }
    // The page after a job of the caller's: jobs are ordered by their
    // submission number, which ids do not show.
    let before = match q.before.as_deref() {
        None => None,
        Some(b) if !crate::service::is_job_id(b) => {
            return Err(ApiError::BadRequest(format!(
                "query: before {b:?} is not a job id (j and 16 lowercase hex digits)"
            )))
        }
        Some(b) => Some(service.job(&who.tenant, b).await?.seq),
    };
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
        &JobList {
            jobs: list.iter().map(jobs::view).collect(),
        },
    ))
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    summary = "A job's status and progress",
    params(
        ("id" = String, Path, description = "the job id", pattern = "^j[0-9a-f]{16}$"),
    ),
    responses(
        (status = 200, description = "the job's status", body = JobView),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show_job(State(service): State<Arc<Service>>, Auth(who): Auth, Path(id): Path<String>) -> ApiResult {
    let r = service.job(&who.tenant, &id).await?;
    Ok(json_response(StatusCode::OK, &jobs::view(&r)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ResultQuery {
    /// Milliseconds to wait for the job to end (longer waits are cut to
    /// 60000).
    #[param(format = "uint64", minimum = 0, maximum = 18446744073709551615_u64)]
    wait: Option<u64>,
}

/// `GET /v1/jobs/{id}/result[?wait=ms]`: 200 with the result document; 202
/// with the job's status while it is queued or running.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/result",
    summary = "A job's result document (200), or its status while queued or running (202)",
    params(
        ("id" = String, Path, description = "the job id", pattern = "^j[0-9a-f]{16}$"),
        ResultQuery,
    ),
    responses(
        (status = 200, description = "the result document, the same as the command line's --json", body = ResultDocument),
        (status = 202, description = "queued or running (Retry-After)", body = JobView),
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "conflicts with the resource's state", body = Problem, content_type = "application/problem+json"),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    summary = "Cancel a job: 200 when it was queued (now cancelled), 202 when running (stops within a few ms)",
    params(
        ("id" = String, Path, description = "the job id", pattern = "^j[0-9a-f]{16}$"),
    ),
    responses(
        (status = 200, description = "cancelled", body = JobView),
        (status = 202, description = "told to stop", body = JobView),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "conflicts with the resource's state", body = Problem, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/policies",
    summary = "Every policy: name, hash, source (builtin, file, api)",
    responses(
        (status = 200, description = "the policies", body = PolicyList),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_policies(State(service): State<Arc<Service>>, Auth(_): Auth) -> ApiResult {
    Ok(json_response(StatusCode::OK, &service.policies()))
}

#[utoipa::path(
    get,
    path = "/v1/policies/{name}",
    summary = "A policy's values, canonical TOML and audit trail",
    params(
        ("name" = String, Path, description = "the policy name", pattern = "^[a-z0-9_-]{1,64}$"),
    ),
    responses(
        (status = 200, description = "the policy", body = PolicyView),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such resource for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show_policy(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(json_response(StatusCode::OK, &service.policy(&who, &name).await?))
}

/// `PUT /v1/policies/{name}`: the policy as a TOML body; operators only.
#[utoipa::path(
    put,
    path = "/v1/policies/{name}",
    summary = "Replace or create a policy (TOML body) for new jobs; operators only; audited",
    params(
        ("name" = String, Path, description = "the policy name", pattern = "^[a-z0-9_-]{1,64}$"),
    ),
    request_body(content = String, content_type = "application/toml", description = "a policy file, see policies/README.md"),
    responses(
        (status = 200, description = "replaced", body = PolicyChange),
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the content is refused (validation names why)", body = Problem, content_type = "application/problem+json"),
    )
)]
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

/// `DELETE /v1/policies/{name}`: back to the shipped policy; operators only.
#[utoipa::path(
    delete,
    path = "/v1/policies/{name}",
    summary = "Remove a policy's replacement: new jobs get the shipped policy again (a file or a built-in), or none for a policy only the API made; operators only; audited",
    params(
        ("name" = String, Path, description = "the policy name", pattern = "^[a-z0-9_-]{1,64}$"),
    ),
    responses(
        (status = 200, description = "reverted (source: builtin, file) or deleted (source: deleted, hash empty)", body = PolicyChange),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "not allowed for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such policy", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the policy is the shipped one already", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revert_policy(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        &service.revert_policy(&who, &name).await?,
    ))
}

/// The methods the router answers for a path of the OpenAPI table (for the
/// test that keeps them in step).
pub fn documented_methods() -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in &openapi_json().paths.paths {
        for (method, op) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
        ] {
            if op.is_some() {
                out.push((method, path.clone()));
            }
        }
    }
    out
}

// ---- live deployments ----

/// A deployment to start (docs/deployments.md): the strategy on a live
/// feed. The nested settings (`feed`, `backtest`, `drift`, `gate`, `venue`,
/// `webhook`) are described in docs/deployments.md and docs/live.md.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// 1 to 64 characters of A-Z, a-z, 0-9, _ and -.
    id: String,
    /// Strategy id (the module's SHA-256).
    strategy: String,
    /// The symbols traded, in the order of their ids.
    symbols: Vec<String>,
    /// The bar interval in seconds (gaps, feed lag).
    #[serde(default)]
    interval_secs: Option<i64>,
    /// `{"url": "ws://…" or "wss://…", "format": "palisade" | "binance"}`.
    #[schema(value_type = Object)]
    feed: palisade_deployment::FeedSpec,
    /// Parameter values by name.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: serde_json::Map<String, serde_json::Value>,
    /// Policy name; the server's default policy when absent.
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    #[schema(value_type = Object)]
    backtest: palisade_backtest::BacktestConfig,
    #[serde(default)]
    #[schema(value_type = Object)]
    drift: palisade_live::DriftPolicy,
    #[serde(default)]
    #[schema(value_type = Object)]
    gate: palisade_live::GatePolicy,
    /// `disk` or `os`.
    #[serde(default)]
    #[schema(value_type = String)]
    durability: palisade_live::barlog::Durability,
    #[serde(default)]
    #[schema(value_type = Object)]
    venue: Option<palisade_live::VenueConfig>,
    #[serde(default)]
    #[schema(value_type = Object)]
    webhook: Option<palisade_live::webhook::WebhookSpec>,
    /// Bars between signal checks; 0: only on demand.
    #[serde(default = "default_verify_every")]
    verify_every: u64,
}

fn default_verify_every() -> u64 {
    1_440
}

fn deployment_error(e: DeploymentError) -> ApiError {
    match e {
        DeploymentError::NotFound(id) => ApiError::NotFound {
            what: "deployment",
            id,
        },
        DeploymentError::Invalid(m) => ApiError::InvalidDeployment(m),
        DeploymentError::Conflict(m) => ApiError::Conflict(m),
        DeploymentError::Forbidden(m) => ApiError::Forbidden(m),
        DeploymentError::Fill(DriftError::UnknownIntent { intent_id }) => ApiError::NotFound {
            what: "intent",
            id: intent_id,
        },
        DeploymentError::Fill(other) => ApiError::InvalidFill(other.to_string()),
        DeploymentError::Internal(m) => ApiError::Internal(m),
        DeploymentError::Unavailable(detail) => ApiError::Unavailable { detail },
    }
}

/// Longest reason a gate command or an emergency stop may give, in bytes
/// (it is written to the audit log of every deployment concerned).
const MAX_REASON_BYTES: usize = 1_000;

fn check_reason(reason: &str) -> Result<(), ApiError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::InvalidDeployment(format!(
            "reason: {} bytes; at most {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    // Control characters, line and paragraph separators, and the
    // direction overrides that make a log line read other than it is.
    let hostile = |c: char| {
        c.is_control() && c != '\t'
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if reason.chars().any(hostile) {
        return Err(ApiError::InvalidDeployment(
            "reason: control characters, line separators or direction overrides".into(),
        ));
    }
    Ok(())
}

/// Who an audit entry names: the caller's tenant, marked when an operator.
fn actor_of(who: &Principal) -> String {
    if who.operator {
        format!("operator:{}", who.tenant)
    } else {
        format!("tenant:{}", who.tenant)
    }
}

#[utoipa::path(
    post,
    path = "/v1/deployments",
    summary = "Start a live deployment: the strategy on a live bar feed, paper broker, intents behind a drift gate",
    request_body(content = DeploymentRequest, content_type = "application/json"),
    responses(
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "started; the deployment's status", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown strategy or policy", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "a deployment with this id exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid settings or parameters", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_deployment(State(service): State<Arc<Service>>, Auth(who): Auth, body: Bytes) -> ApiResult {
    let r: DeploymentRequest = parse_settings(&body, ApiError::InvalidDeployment)?;
    let overrides = crate::jobs::overrides_of(&r.params).map_err(ApiError::InvalidDeployment)?;
    let policy = r
        .policy
        .clone()
        .unwrap_or_else(|| service.config.default_policy.clone());
    let spec = palisade_deployment::DeploymentSpec {
        id: r.id,
        tenant: who.tenant.clone(),
        symbols: r.symbols,
        interval_secs: r.interval_secs,
        feed: r.feed,
        params: Vec::new(),
        seed: r.seed,
        backtest: r.backtest,
        drift: r.drift,
        gate: r.gate,
        durability: r.durability,
        venue: r.venue,
        verify_every: r.verify_every,
        webhook: r.webhook,
    };
    let location = format!("/v1/deployments/{}", spec.id);
    let status = service
        .deploy(&who.tenant, &r.strategy, &policy, spec, Some(overrides))
        .await
        .map_err(|e| match e {
            ServiceError::InvalidJob(m) => ApiError::InvalidDeployment(m),
            e => e.into(),
        })?;
    Ok(with_location(
        json_response(StatusCode::CREATED, &status),
        &location,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/deployments",
    summary = "The caller's deployments (every tenant's for an operator), with their status",
    responses(
        (status = 200, description = "the deployments", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_deployments(State(service): State<Arc<Service>>, Auth(who): Auth) -> ApiResult {
    let list = service.deployments.list(&who.tenant, who.operator);
    let stops = service.deployments.stops_for(&who.tenant, who.operator);
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "deployments": list, "emergency_stops": stops }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{id}",
    summary = "A deployment's status: lifecycle, gate, drift, feed, counts",
    params(("id" = String, Path, description = "the deployment id")),
    responses(
        (status = 200, description = "the status", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such deployment for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show_deployment(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let h = service
        .deployments
        .get(&who.tenant, who.operator, &id)
        .map_err(deployment_error)?;
    Ok(json_response(StatusCode::OK, &h.status()))
}

#[utoipa::path(
    delete,
    path = "/v1/deployments/{id}",
    summary = "Stop a deployment for good (its files stay; it is not restarted with the service)",
    params(("id" = String, Path, description = "the deployment id")),
    responses(
        (status = 200, description = "stopped; its last status", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such deployment for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn stop_deployment(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let status = match service.deployments.stop(&who.tenant, who.operator, &id).await {
        // Stopped here by an earlier DELETE whose answer was 503: this
        // worker still holds its lease until the store says stopped.
        Err(DeploymentError::NotFound(_)) if service.leases.get(&id).is_some() => {
            if visible_row(&service, &who, &id).await?.is_none() {
                return Err(deployment_error(DeploymentError::NotFound(id)));
            }
            service.leased_stopped(&id).await?;
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({ "id": id, "state": "stopped" }),
            ));
        }
        other => other.map_err(deployment_error)?,
    };
    service.leased_stopped(&id).await?;
    Ok(json_response(StatusCode::OK, &status))
}

/// A gate override.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateRequest {
    /// `suspend`, `resume`, `force_open`, `emergency_stop` or `release`.
    #[schema(value_type = String)]
    action: Command,
    /// Why; written to the audit log (required for `force_open`).
    #[serde(default)]
    reason: String,
}

/// A real fill of one of the deployment's intents (docs/live.md).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FillRequest {
    /// The intent's id, `deployment:order_id`.
    intent_id: String,
    /// This fill's quantity, > 0.
    qty: f64,
    /// > 0.
    price: f64,
    /// When the venue filled it, unix milliseconds.
    ts_ms: i64,
    /// The venue's id of the fill; a repeated one is refused.
    #[serde(default)]
    venue_fill_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{id}/gate",
    summary = "Override the gate: suspend, resume, force_open (reason required), emergency_stop, release; audited before it takes effect",
    params(("id" = String, Path, description = "the deployment id")),
    request_body(content = GateRequest, content_type = "application/json"),
    responses(
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the content is refused (the problem names why: an unknown action, a missing reason for force_open, a reason over 1,000 bytes)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "the audit entry of the transition", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such deployment for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not allowed from the gate's state", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn gate_deployment(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let r: GateRequest = parse_settings(&body, ApiError::InvalidDeployment)?;
    check_reason(&r.reason)?;
    let entry = service
        .deployments
        .gate(
            &who.tenant,
            who.operator,
            &id,
            r.action,
            &actor_of(&who),
            &r.reason,
        )
        .await;
    // Stored with the deployment before it is answered, refused or not: a
    // refusal may stand on a change not shipped yet (distributed mode).
    if !matches!(entry, Err(DeploymentError::NotFound(_))) {
        service.shipped(&id).await?;
    }
    let entry = entry.map_err(deployment_error)?;
    Ok(json_response(StatusCode::OK, &entry))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Entries numbered after this one (default 0: from the first).
    #[param(format = "uint64", minimum = 0, maximum = 18446744073709551615_u64)]
    since: Option<u64>,
    /// Most entries (default and maximum 1000).
    #[param(minimum = 0, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{id}/audit",
    summary = "The gate's audit log: time, from, to, reason, actor and the drift measures of every transition",
    params(("id" = String, Path, description = "the deployment id"), AuditQuery),
    responses(
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "the entries, oldest first", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such deployment for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn deployment_audit(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(1000).min(1000) as usize;
    let entries = service
        .deployments
        .audit(&who.tenant, who.operator, &id, q.since.unwrap_or(0), limit)
        .await
        .map_err(deployment_error)?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "entries": entries }),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{id}/fills",
    summary = "Report a real fill of one of the deployment's intents (from the organisation's execution system)",
    params(("id" = String, Path, description = "the deployment id")),
    request_body(content = FillRequest, content_type = "application/json"),
    responses(
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "applied; the drift measures after it", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown deployment for this tenant, or unknown intent", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid fill, more than the intent's quantity, or a duplicate", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn report_fill(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let f: FillRequest = parse_settings(&body, ApiError::InvalidFill)?;
    let fill = LiveFill {
        intent_id: f.intent_id,
        qty: f.qty,
        price: f.price,
        ts_ms: f.ts_ms,
        venue_fill_id: f.venue_fill_id,
    };
    let snap = service.deployments.fill(&who.tenant, &id, fill).await;
    // Stored with the deployment before it is answered, applied or refused:
    // a repeat is refused on a fill that may not be shipped yet.
    if !matches!(snap, Err(DeploymentError::NotFound(_))) {
        service.shipped(&id).await?;
    }
    let snap = snap.map_err(deployment_error)?;
    Ok(json_response(StatusCode::OK, &snap))
}

#[utoipa::path(
    post,
    path = "/v1/deployments/{id}/verify",
    summary = "Run the signal check now: replay the stored bars offline and compare the orders bit for bit",
    params(("id" = String, Path, description = "the deployment id")),
    responses(
        (status = 200, description = "what the check found", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such deployment for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "a check is running, or the replay failed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn verify_deployment(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let check = service
        .deployments
        .verify(&who.tenant, who.operator, &id)
        .await
        .map_err(deployment_error)?;
    Ok(json_response(StatusCode::OK, &check))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct IntentsQuery {
    /// Intents of orders after this order id (default 0: every one).
    #[param(format = "uint64", minimum = 0, maximum = 18446744073709551615_u64)]
    after: Option<u64>,
    /// Milliseconds to wait for a new intent when there is none (longer
    /// waits are cut to 60000).
    #[param(format = "uint64", minimum = 0, maximum = 18446744073709551615_u64)]
    wait: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/deployments/{id}/intents",
    summary = "Published order intents after an order id, from the deployment's journal; waits for the next with ?wait",
    params(("id" = String, Path, description = "the deployment id"), IntentsQuery),
    responses(
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "the intents, oldest first", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such deployment for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn deployment_intents(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Query(q): Query<IntentsQuery>,
) -> ApiResult {
    let h = service
        .deployments
        .get(&who.tenant, who.operator, &id)
        .map_err(deployment_error)?;
    let after = q.after.unwrap_or(0);
    let mut rx = h.intents();
    let mut intents = service
        .deployments
        .intents_after(&id, after)
        .await
        .map_err(ApiError::Internal)?;
    if intents.is_empty() {
        let wait = Duration::from_millis(q.wait.unwrap_or(0).min(60_000));
        let next = async {
            loop {
                match rx.recv().await {
                    Ok(i) if i.order_id > after => return Some(i),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            }
        };
        if let Ok(Some(i)) = tokio::time::timeout(wait, next).await {
            intents.push(i);
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "intents": intents }),
    ))
}

/// An emergency stop's scope.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyRequest {
    /// `deployment`, `tenant` or `all`.
    scope: String,
    #[serde(default)]
    deployment: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    reason: String,
}

impl EmergencyRequest {
    fn scope(&self) -> Result<Scope, ApiError> {
        let bad = |m: &str| ApiError::InvalidDeployment(m.to_owned());
        match (self.scope.as_str(), &self.deployment, &self.tenant) {
            ("deployment", Some(d), None) => Ok(Scope::Deployment {
                deployment: d.clone(),
            }),
            ("tenant", None, Some(t)) => Ok(Scope::Tenant { tenant: t.clone() }),
            ("all", None, None) => Ok(Scope::All),
            ("deployment", _, _) => Err(bad("scope deployment takes `deployment` (an id) and no `tenant`")),
            ("tenant", _, _) => Err(bad("scope tenant takes `tenant` (a name) and no `deployment`")),
            ("all", _, _) => Err(bad("scope all takes neither `deployment` nor `tenant`")),
            (other, _, _) => Err(bad(&format!(
                "scope `{other}` is not one of: deployment, tenant, all"
            ))),
        }
    }
}

/// Whether the caller may name `scope`: `all` and other tenants need an
/// operator; a deployment must be the caller's (when stopping; a stop of a
/// deployment since removed can still be lifted).
async fn check_scope(
    who: &Principal,
    scope: &Scope,
    service: &Service,
    releasing: bool,
) -> Result<(), ApiError> {
    let verb = if releasing { "release" } else { "stop" };
    match scope {
        Scope::Deployment { deployment } if !releasing && service.role == Role::Api => {
            visible_row(service, who, deployment)
                .await?
                .filter(|r| !r.stopped)
                .map(drop)
                .ok_or_else(|| ApiError::NotFound {
                    what: "deployment",
                    id: deployment.clone(),
                })
        }
        Scope::Deployment { .. } if releasing => Ok(()),
        Scope::All if !who.operator => Err(ApiError::Forbidden(format!(
            "only operators may {verb} every deployment"
        ))),
        Scope::Tenant { tenant } if !who.operator && tenant != &who.tenant => Err(ApiError::Forbidden(
            format!("only operators may {verb} another tenant's deployments"),
        )),
        Scope::Deployment { deployment } => service
            .deployments
            .get(&who.tenant, who.operator, deployment)
            .map(drop)
            .map_err(deployment_error),
        _ => Ok(()),
    }
}

#[utoipa::path(
    post,
    path = "/v1/emergency-stop",
    summary = "Emergency stop: every deployment in scope (one, a tenant's, all) stops publishing intents, audited; stays in force for deployments started later",
    request_body(content = EmergencyRequest, content_type = "application/json"),
    responses(
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the content is refused (the problem names why)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "the deployments stopped now", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "the scope is beyond the caller's tenant", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such deployment for this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn emergency_stop(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let r: EmergencyRequest = parse_settings(&body, ApiError::InvalidDeployment)?;
    check_reason(&r.reason)?;
    let scope = r.scope()?;
    check_scope(&who, &scope, &service, false).await?;
    let reason = if r.reason.trim().is_empty() {
        "emergency stop".to_owned()
    } else {
        r.reason
    };
    let by = Imposed {
        tenant: who.tenant.clone(),
        operator: who.operator,
        reason: reason.clone(),
    };
    let mut stopped = service
        .deployments
        .emergency_stop(scope.clone(), by, &actor_of(&who), &reason)
        .await
        .map_err(deployment_error)?;
    let mut answer = serde_json::json!({ "stopped": stopped });
    if service.role == Role::Api {
        let applied = service.apply_stops_everywhere(&headers, &scope).await;
        stopped.extend(applied.stopped);
        answer = serde_json::json!({ "stopped": stopped, "unreached_workers": applied.unreached });
    }
    Ok(json_response(StatusCode::OK, &answer))
}

#[utoipa::path(
    post,
    path = "/v1/emergency-stop/release",
    summary = "Lift an emergency stop; the deployments it stopped go to suspended, to be resumed one by one",
    request_body(content = EmergencyRequest, content_type = "application/json"),
    responses(
        (status = 400, description = "the request is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is over its size limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "the content is refused (the problem names why)", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "the deployments released", body = Object),
        (status = 401, description = "no valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "the scope is beyond the caller's tenant, or an operator imposed the stop", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such emergency stop in force", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn release_emergency_stop(
    State(service): State<Arc<Service>>,
    Auth(who): Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let r: EmergencyRequest = parse_settings(&body, ApiError::InvalidDeployment)?;
    check_reason(&r.reason)?;
    let scope = r.scope()?;
    check_scope(&who, &scope, &service, true).await?;
    let reason = if r.reason.trim().is_empty() {
        "emergency stop lifted".to_owned()
    } else {
        r.reason
    };
    let caller = Imposed {
        tenant: who.tenant.clone(),
        operator: who.operator,
        reason: String::new(),
    };
    let mut released = service
        .deployments
        .release(scope.clone(), &caller, &actor_of(&who), &reason)
        .await
        .map_err(deployment_error)?;
    let mut answer = serde_json::json!({ "released": released });
    if service.role == Role::Api {
        let applied = service.apply_stops_everywhere(&headers, &scope).await;
        released.extend(applied.released);
        answer = serde_json::json!({ "released": released, "unreached_workers": applied.unreached });
    }
    Ok(json_response(StatusCode::OK, &answer))
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
    use serde_json::Value;

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

    /// A streamed body (no Content-Length) is counted as it arrives: one
    /// byte over the limit is 413 and leaves no file behind; at the limit it
    /// is read, stored and validated.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streamed_uploads_are_spooled_within_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let header = "timestamp,open,high,low,close,volume\n";
        let row = "2020-01-01T00:00:00Z,1,1,1,1,1\n";
        // Rows of distinct days, exactly `limit` bytes with the header.
        let rows: Vec<String> = (0..100)
            .map(|d| row.replace("2020-01-01", &format!("2020-{:02}-{:02}", 1 + d / 28, 1 + d % 28)))
            .collect();
        let csv = format!("{header}{}", rows.concat());
        let limit = csv.len() as u64;
        let config = Config {
            data_dir: dir.path().to_owned(),
            max_dataset_bytes: limit,
            ..Config::default()
        };
        let service = Service::start(config, Tokens::default(), tokio::runtime::Handle::current())
            .await
            .unwrap();
        let app = router(service.clone());
        let streamed = |text: String| {
            let chunks: Vec<Result<Bytes, std::io::Error>> = text
                .into_bytes()
                .chunks(100)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Body::from_stream(futures_util::stream::iter(chunks))
        };
        let post = |body: Body| {
            let app = app.clone();
            async move {
                let req = HttpRequest::builder()
                    .method("POST")
                    .uri("/v1/datasets?name=X")
                    .body(body)
                    .unwrap();
                let response = app.oneshot(req).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        let tmp_files = || std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        let (status, text) = post(streamed(format!("{csv}x"))).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
        assert!(text.contains("payload-too-large"), "{text}");
        assert_eq!(tmp_files(), 0, "nothing left of a refused upload");
        let (status, text) = post(streamed(csv.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["bars"], 100);
        assert_eq!(v["sha256"], sha256_hex(csv.as_bytes()));
        assert_eq!(tmp_files(), 0, "kept: moved into the store");
        // Content refused after the whole body arrived: no file either.
        let (status, text) = post(streamed(format!("{header}garbage\n"))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
        assert_eq!(tmp_files(), 0);
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_of_1_to_255_bytes() {
        let key = |bytes: &[u8]| {
            let mut h = axum::http::HeaderMap::new();
            h.insert("idempotency-key", header::HeaderValue::from_bytes(bytes).unwrap());
            idempotency_key(&h)
        };
        assert_eq!(idempotency_key(&axum::http::HeaderMap::new()).unwrap(), None);
        assert_eq!(key(b"a").unwrap().as_deref(), Some("a"));
        assert_eq!(key(&[b'k'; 255]).unwrap().map(|k| k.len()), Some(255));
        for bad in [
            &b""[..],
            &[b'k'; 256],
            b"a b",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
        ] {
            assert!(key(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn made_up_methods_do_not_grow_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path(), false).await;
        let app = router(service.clone());
        for i in 0..50 {
            send(&app, &format!("M{i}"), "/healthz", None, Vec::new()).await;
            send(&app, "GET", &format!("/nope/{i}"), None, Vec::new()).await;
        }
        let text = service.metrics.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("palisade_http_request_duration_seconds_count"))
            .collect();
        assert!(
            series.iter().any(|l| l.contains("method=\"other\"")),
            "{series:#?}"
        );
        assert!(!text.contains("method=\"M1\""), "a made-up method became a label");
        assert!(series.len() <= 3, "{series:#?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_metrics_route_publishes_capacity_readiness_and_a_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path(), false).await;
        let app = router(service.clone());
        let scrape = || async {
            let (status, _, body) = send(&app, "GET", "/metrics", None, Vec::new()).await;
            assert_eq!(status, StatusCode::OK);
            String::from_utf8(body).unwrap()
        };
        let value = |text: &str, series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no `{series}` in\n{text}"))
        };
        // The executor beats once as it starts, then every second.
        let mut text = scrape().await;
        for _ in 0..100 {
            if value(&text, "palisade_executor_heartbeat_timestamp_seconds") > 0.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            text = scrape().await;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let beat = value(&text, "palisade_executor_heartbeat_timestamp_seconds");
        assert!(beat > now - 60.0 && beat <= now, "{beat} vs {now}");
        let config = &service.config;
        assert_eq!(value(&text, "palisade_ready"), 1.0);
        assert_eq!(value(&text, "palisade_queue_capacity"), config.queue_depth as f64);
        assert_eq!(
            value(&text, "palisade_executor_job_slots"),
            config.max_running as f64
        );
        assert_eq!(
            value(&text, "palisade_executor_instance_slots"),
            f64::from(config.max_instances)
        );
        assert_eq!(
            value(&text, "palisade_executor_threads"),
            config.executor_threads() as f64
        );
        assert_eq!(
            value(&text, "palisade_queue_oldest_age_seconds{priority=\"normal\"}"),
            0.0
        );
        assert_eq!(value(&text, "palisade_running_job_max_stall_seconds"), 0.0);
        assert_eq!(value(&text, "palisade_store_write_errors_total"), 0.0);
        assert_eq!(
            value(
                &text,
                "palisade_jobs_total{kind=\"walk_forward\",source=\"restart\",status=\"timed_out\"}"
            ),
            0.0,
            "every job counter exists from the start"
        );
        service.shutdown(std::time::Duration::from_millis(10)).await;
        assert_eq!(value(&scrape().await, "palisade_ready"), 0.0, "shutting down");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_documented_route_is_routed() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(service(dir.path(), false).await);
        let documented = documented_methods();
        assert_eq!(documented.len(), 34, "{documented:?}");
        for (method, path) in &documented {
            let uri = path.replace("{id}", "x").replace("{name}", "x");
            let (status, _, body) = send(&app, method.as_str(), &uri, None, Vec::new()).await;
            let text = String::from_utf8_lossy(&body);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !text.contains("unknown route"),
                "{method} {path} is not routed: {text}"
            );
        }
        // And the other way: on every documented path, a method the
        // document does not list is not routed either.
        let paths: std::collections::BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
        for path in paths {
            let uri = path.replace("{id}", "x").replace("{name}", "x");
            for method in [
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
            ] {
                if documented.iter().any(|(m, p)| *m == method && p == path) {
                    continue;
                }
                let (status, _, _) = send(&app, method.as_str(), &uri, None, Vec::new()).await;
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed but not documented"
                );
            }
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
        // Rejections of the framework itself (a path segment that is not
        // UTF-8) are problem+json too, their text as the detail.
        let v = check(
            &app,
            "GET",
            "/v1/jobs/%FF%FE",
            Some(ALICE),
            b"",
            400,
            "bad-request",
        )
        .await;
        assert!(v["detail"].as_str().unwrap().contains("UTF-8"), "{v}");
        let v = check(
            &app,
            "DELETE",
            "/v1/policies/%C0",
            Some(OPS),
            b"",
            400,
            "bad-request",
        )
        .await;
        assert!(v["detail"].as_str().unwrap().contains("UTF-8"), "{v}");
        // A query value that is not UTF-8 is refused, not stored as U+FFFD.
        for (method, uri) in [
            ("POST", "/v1/datasets?name=%FFspy"),
            ("GET", "/v1/jobs?strategy=%E2%82"),
        ] {
            let v = check(&app, method, uri, Some(ALICE), b"x", 400, "bad-request").await;
            assert!(v["detail"].as_str().unwrap().contains("UTF-8"), "{v}");
        }
        // Valid multi-byte UTF-8 passes the check and meets the handler,
        // which names what is wrong with the value itself.
        let v = check(
            &app,
            "GET",
            "/v1/jobs?strategy=%E2%82%AC",
            Some(ALICE),
            b"",
            400,
            "bad-request",
        )
        .await;
        assert!(
            v["detail"].as_str().unwrap().contains("is not a strategy id"),
            "{v}"
        );
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
