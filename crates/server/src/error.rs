//! The error a chat operation returns to a client: a protocol [`ErrorCode`]
//! plus a human message. The same value becomes a WebSocket `error` frame or
//! an HTTP `{"error":{…}}` body, so REST and WebSocket report alike.

use parley_protocol::ErrorCode;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ChatError {
    pub code: ErrorCode,
    pub message: String,
}

impl ChatError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
}

impl From<StoreError> for ChatError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %err, "storage unavailable");
                ChatError::new(
                    ErrorCode::Unavailable,
                    "storage is unavailable; nothing was stored, retry later",
                )
            }
            StoreError::Conflict(what) => ChatError::new(ErrorCode::Conflict, what),
            StoreError::Invalid(what) => ChatError::bad_request(what),
            StoreError::Internal(_) => {
                tracing::error!(error = %err, "storage error");
                ChatError::new(ErrorCode::Internal, "internal storage error")
            }
        }
    }
}
