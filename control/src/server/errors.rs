//! API errors: one type for every refusal, rendered once, at the edge.
//!
//! Handlers and the gate return [`ApiError`]; its `IntoResponse` only marks the response
//! with an [`ErrorMark`], and the gate renders the body at the end, when it knows the
//! request id and whether the call was a Tencent-style action (`POST /`, answered in the
//! `{"Response":{"Error":...}}` envelope with HTTP 200, as Tencent Cloud does) or a REST call
//! (`{code, message, request_id}` with the HTTP status). Responses that axum produces itself
//! (unknown route, wrong method, unreadable path parameter) carry no mark; the gate maps their
//! status to the same JSON form, so every error has one shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Longest error message, in bytes; longer ones are cut (messages may quote input).
pub const MAX_MESSAGE_LEN: usize = 512;

/// An API error: HTTP status, Tencent-style code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status of the REST form.
    pub status: StatusCode,
    /// The code, e.g. `InvalidParameter` or `AuthFailure.SignatureFailure`.
    pub code: String,
    /// What went wrong; names the field and the bound for parameter errors.
    pub message: String,
    /// Seconds the client should wait (429).
    pub retry_after: Option<u64>,
}

/// Marks a response as an error for the gate to render; see the module docs.
#[derive(Debug, Clone)]
pub struct ErrorMark(pub ApiError);

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { status, code: code.into(), message: truncate(message.into()), retry_after: None }
    }
    /// 400 `InvalidParameter`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameter", message)
    }
    /// 400 `MissingParameter`.
    pub fn missing(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MissingParameter", message)
    }
    /// 400 `MalformedJson`.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MalformedJson", message)
    }
    /// 401 `AuthFailure.<reason>`.
    pub fn auth(reason: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, format!("AuthFailure.{reason}"), message)
    }
    /// 403 `UnauthorizedOperation`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "UnauthorizedOperation", message)
    }
    /// 404 `ResourceNotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", message)
    }
    /// 409 `ResourceInUse`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ResourceInUse", message)
    }
    /// 429 `RequestLimitExceeded` with `Retry-After`.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e =
            Self::new(StatusCode::TOO_MANY_REQUESTS, "RequestLimitExceeded", format!("retry after {retry_after} s"));
        e.retry_after = Some(retry_after);
        e
    }
    /// 503 `ResourceUnavailable.Relayd`: the call needs relayd and the link is down.
    pub fn relayd_unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "ResourceUnavailable.Relayd", message)
    }
    /// 500 `InternalError` (store failure); the detail goes to the log, not the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "internal error; see the daemon log")
    }

    /// The error for a response axum produced itself with `status`.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => {
                Self::new(status, "UnsupportedOperation", "method not allowed on this resource")
            }
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(status, "RequestSizeLimitExceeded", "body larger than 64 KiB"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::new(status, "UnsupportedMediaType", "content-type must be application/json")
            }
            s if s.is_client_error() => Self::invalid("malformed request (path or query)"),
            s => Self::new(s, "InternalError", "internal error; see the daemon log"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = self.status.into_response();
        r.extensions_mut().insert(ErrorMark(self));
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::keys::KeyError;
        use crate::store::StoreError as S;
        match e {
            S::AppExists(id) => Self::conflict(format!("app {id} already exists")),
            S::AppNotFound(id) => Self::not_found(format!("app {id} not found")),
            S::KeyExists => Self::conflict("api key already exists"),
            S::KeyNotFound => Self::not_found("api key not found"),
            S::Key(KeyError::Revoked) => Self::conflict("api key already revoked"),
            S::Key(KeyError::AlreadyRotated) => Self::conflict("api key already rotated; rotate its successor"),
            S::Key(KeyError::InvalidLabel) => Self::invalid("label must be at most 128 printable ASCII characters"),
            S::InvalidQuotas(e) | S::InvalidLimits(e) => Self::invalid(e.to_string()),
            S::InvalidBlock(m) => Self::invalid(format!("cidr: {m}")),
            S::BlockNotFound => Self::not_found("no live blocklist entry for this prefix"),
            S::BlocklistFull | S::LastAdmin => Self::conflict(e.to_string()),
            other => Self::internal(other),
        }
    }
}

impl From<crate::cluster::ClusterError> for ApiError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        use crate::cluster::ClusterError as C;
        match e {
            C::Store(e) => e.into(),
            C::Unavailable(_) | C::Contended => {
                let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "ResourceUnavailable.Cluster", e.to_string());
                err.retry_after = Some(1);
                err
            }
            other => Self::internal(other),
        }
    }
}

impl From<super::push::LinkError> for ApiError {
    fn from(e: super::push::LinkError) -> Self {
        use super::push::LinkError as L;
        match e {
            L::Refused(m) => Self::invalid(format!("relayd refused: {m}")),
            other => Self::relayd_unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_on_a_char_boundary() {
        let e = ApiError::invalid("é".repeat(400));
        assert!(e.message.len() <= MAX_MESSAGE_LEN && e.message.len() >= MAX_MESSAGE_LEN - 1);
    }

    #[test]
    fn into_response_marks_the_error() {
        let r = ApiError::conflict("x").into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.extensions().get::<ErrorMark>().unwrap().0.code, "ResourceInUse");
        assert_eq!(ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED).code, "UnsupportedOperation");
        assert_eq!(ApiError::rate_limited(3).retry_after, Some(3));
    }
}
