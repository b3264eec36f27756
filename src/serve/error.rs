//! Errors as OpenAI shapes them: `{"error": {"message", "type", "param", "code"}}` with
//! the HTTP status that says whose fault it is.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`: "invalid_request_error", "authentication_error", "server_error", ...
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A short machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds to wait before retrying (sent as `Retry-After` with 429).
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    /// 400 for an invalid value of the field `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: Some("invalid_value"),
            retry_after_s: None,
        }
    }

    /// 400 for a malformed body (not JSON, wrong type of a field).
    pub fn bad_body(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some("invalid_json"),
            param: None,
            ..ApiError::invalid("", message)
        }
    }

    /// 400 for a model name the server does not serve.
    pub fn unknown_model(name: &str, known: &[String]) -> ApiError {
        ApiError {
            code: Some("model_not_found"),
            ..ApiError::invalid(
                "model",
                format!(
                    "the model {name:?} does not exist; this server has {}",
                    known.join(", ")
                ),
            )
        }
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or incorrect API key (send `Authorization: Bearer KEY`)".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after_s: None,
        }
    }

    /// 429: the queue is full.
    pub fn overloaded(queue: usize) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "the server is busy: every batch slot is taken and {queue} requests are waiting; retry later"
            ),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            retry_after_s: Some(1),
        }
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the server is shutting down".into(),
            kind: "server_error",
            param: None,
            code: Some("shutting_down"),
            retry_after_s: None,
        }
    }

    /// 500: something failed inside the server.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: Some("internal_error"),
            retry_after_s: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        resp
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> ApiError {
        let mut e = ApiError::bad_body(r.body_text());
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            e.status = StatusCode::PAYLOAD_TOO_LARGE;
            e.code = Some("body_too_large");
        }
        e
    }
}
