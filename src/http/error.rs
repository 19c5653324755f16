//! `ApiError`: the one error answer of the HTTP API. Every body is JSON with an `error` code
//! and the fields that explain it, e.g. `{"error":"invalid_event","field":"visibility",
//! "reason":"expected one of broadcast,direct"}`. Module errors convert into it.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Map<String, Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str) -> Self {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(code.to_string()));
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body.insert(key.to_string(), value.into());
        self
    }

    pub fn message(self, msg: impl Into<String>) -> Self {
        self.with("message", Value::String(msg.into()))
    }

    pub fn header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn code(&self) -> &str {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("error")
    }

    pub fn bad_request(code: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code)
    }
    pub fn unauthorized(code: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code)
            .header(axum::http::header::WWW_AUTHENTICATE, "Bearer")
    }
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden").with("reason", reason.into())
    }
    pub fn not_found(code: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code)
    }
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable").with("reason", reason.into())
    }
    pub fn internal(reason: impl std::fmt::Display) -> Self {
        tracing::error!(error = %reason, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(Value::Object(self.body))).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        ApiError::unavailable("store unavailable")
    }
}
