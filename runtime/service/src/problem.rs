//! Every error the API answers with: one [`ApiError`], answered as
//! `application/problem+json` (`type`, `title`, `status`, `detail`) with a
//! stable type name (`urn:palisade:problem:<name>`, every name in
//! [`PROBLEM_TYPES`]). Server faults carry their cause for the logging
//! middleware ([`Fault`]) and answer a generic detail, never the internals.

use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::scheduler::Refused;
use crate::service::ServiceError;

/// Every error the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("unknown {what} {id}")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("{cause}: {message}")]
    InvalidModule { cause: String, message: String },
    #[error("{0}")]
    InvalidDataset(String),
    #[error("{0}")]
    InvalidJob(String),
    #[error("{0}")]
    InvalidPolicy(String),
    #[error("{0}")]
    InvalidDeployment(String),
    /// A reported live fill that cannot apply (invalid, overfill, duplicate).
    #[error("{0}")]
    InvalidFill(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{refused}")]
    TooManyRequests { refused: Refused },
    #[error("{detail}")]
    Unavailable { detail: String },
    /// The body did not all arrive in time (408): nothing was stored.
    #[error("the request's body did not all arrive within {ms} ms (body_timeout_ms); nothing was stored")]
    RequestTimeout { ms: u64 },
    /// The store had no room for the write (507): nothing was stored.
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A fault of the server: logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The detail of a server fault, attached to the response for the logging
/// middleware.
#[derive(Clone, Debug)]
pub struct Fault(pub String);

impl ApiError {
    /// Status and stable problem type name.
    pub fn status_and_type(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            ApiError::InvalidModule { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-module"),
            ApiError::InvalidDataset(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-dataset"),
            ApiError::InvalidJob(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-job"),
            ApiError::InvalidPolicy(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-policy"),
            ApiError::InvalidDeployment(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-deployment"),
            ApiError::InvalidFill(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-fill"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooManyRequests { refused } => match refused {
                Refused::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
                _ => (StatusCode::TOO_MANY_REQUESTS, "queue-full"),
            },
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient-storage"),
            ApiError::RequestTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request-timeout"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Every problem type name, for the OpenAPI document and the docs.
pub const PROBLEM_TYPES: [&str; 23] = [
    "unauthorized",
    "forbidden",
    "not-found",
    "bad-request",
    "payload-too-large",
    "unsupported-media-type",
    "invalid-module",
    "invalid-dataset",
    "invalid-job",
    "invalid-policy",
    "invalid-deployment",
    "invalid-fill",
    "conflict",
    "rate-limited",
    "queue-full",
    "unavailable",
    "insufficient-storage",
    "request-timeout",
    "method-not-allowed",
    "uri-too-long",
    "header-fields-too-large",
    "internal",
    "error",
];

/// The problem type name of an error response that carries no problem of
/// ours (a rejection by the framework): by its status.
pub fn type_of_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::URI_TOO_LONG => "uri-too-long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header-fields-too-large",
        StatusCode::REQUEST_TIMEOUT => "request-timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::INSUFFICIENT_STORAGE => "insufficient-storage",
        StatusCode::INTERNAL_SERVER_ERROR => "internal",
        _ => "error",
    }
}

/// The reason phrase of a status, the title of its problems.
pub fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// The body of every error (RFC 9457 problem details).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:palisade:problem:<name>`, the name one of: unauthorized,
    /// forbidden, not-found, bad-request, payload-too-large,
    /// unsupported-media-type, invalid-module, invalid-dataset, invalid-job,
    /// invalid-policy, conflict, rate-limited, queue-full, unavailable,
    /// insufficient-storage, request-timeout, method-not-allowed,
    /// uri-too-long, header-fields-too-large, internal, error (another
    /// status).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, naming the field, line, limit or id.
    pub detail: String,
    /// invalid-module only: the classified cause, e.g. `forbidden_import`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// The JSON text of a problem without a cause.
pub fn body(status: StatusCode, kind: &str, detail: &str) -> String {
    text(status, kind, detail, None)
}

fn text(status: StatusCode, kind: &str, detail: &str, cause: Option<String>) -> String {
    let body = Problem {
        kind: format!("urn:palisade:problem:{kind}"),
        title: title(status).to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        cause,
    };
    serde_json::to_string(&body).expect("a problem serializes")
}

/// A `application/problem+json` response.
pub fn problem(status: StatusCode, kind: &str, detail: &str, cause: Option<String>) -> Response {
    let text = text(status, kind, detail, cause);
    let mut response = (status, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_type();
        let detail = match &self {
            ApiError::Internal(_) => {
                "the server failed to handle the request; the error is logged".to_owned()
            }
            other => other.to_string(),
        };
        let cause = match &self {
            ApiError::InvalidModule { cause, .. } => Some(cause.clone()),
            _ => None,
        };
        let mut response = problem(status, kind, &detail, cause);
        match &self {
            ApiError::TooManyRequests { refused } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(refused.retry_after_secs()));
            }
            ApiError::Unavailable { .. } | ApiError::InsufficientStorage(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(5u64));
            }
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"palisade\""),
                );
            }
            ApiError::Internal(message) => {
                response.extensions_mut().insert(Fault(message.clone()));
            }
            ApiError::RequestTimeout { .. } => {
                // The rest of the body is not read: the connection cannot
                // carry another request.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound { what, id } => ApiError::NotFound { what, id },
            ServiceError::InvalidModule(f) => ApiError::InvalidModule {
                cause: f.cause.as_str().to_owned(),
                message: f.message,
            },
            ServiceError::InvalidDataset(m) => ApiError::InvalidDataset(m),
            ServiceError::InvalidJob(m) => ApiError::InvalidJob(m),
            ServiceError::InvalidPolicy(m) => ApiError::InvalidPolicy(m),
            ServiceError::Refused(Refused::ShuttingDown) => ApiError::Unavailable {
                detail: "the server is shutting down".into(),
            },
            ServiceError::Refused(refused) => ApiError::TooManyRequests { refused },
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::Forbidden => ApiError::Forbidden("only operators may change policies".into()),
            ServiceError::StoreFull(m) => ApiError::InsufficientStorage(format!(
                "nothing was stored: the server's disk is full ({m}); try again later"
            )),
            ServiceError::StoreUnavailable(m) => ApiError::Unavailable {
                detail: format!("nothing was stored: the server cannot write ({m}); try again later"),
            },
            ServiceError::Internal(m) => ApiError::Internal(m),
        }
    }
}
