//! Gateway-made errors: every response the gateway itself produces is JSON
//! `{"status": 404, "error": "no_route", "message": "..."}`.
//! Owns only the error shape, and [`JsonAnswers`], which puts it in place of the empty
//! answers hyper makes by itself to requests it cannot parse (the data plane's listeners and
//! the admin API both use it); it knows nothing of routing or connections.

mod parse_errors;

pub use parse_errors::{JsonAnswers, MAX_HEAD_BYTES, MAX_HEADERS};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// A machine-readable error kind; the string is part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No proxy matches this path in this environment.
    NoRoute,
    /// The proxy does not allow this method.
    MethodNotAllowed,
    /// The request or its path is malformed (bad percent-encoding, climbs above the root...).
    BadRequest,
    /// A WebSocket upgrade arrived on an environment with `websocket: false`.
    WebsocketDisabled,
    /// No valid credentials: missing or wrong (deliberately not told apart; with
    /// `WWW-Authenticate`).
    Unauthorized,
    /// The authenticated consumer may not use this proxy.
    Forbidden,
    /// The request body is larger than a `request_size` policy allows.
    PayloadTooLarge,
    /// The request target is longer than the gateway reads.
    UriTooLong,
    /// The request head is over the gateway's size or header-count limit.
    HeadersTooLarge,
    /// The request body stopped arriving before it ended.
    RequestTimeout,
    /// A WebSocket upgrade asked for a protocol version other than 13 (with
    /// `Sec-WebSocket-Version: 13`).
    UpgradeRequired,
    /// Over a rate or connection limit (with `Retry-After` when waiting helps).
    TooManyRequests,
    /// The backend refused, reset or failed TLS.
    BadGateway,
    /// The backend did not answer within the `response` timeout.
    GatewayTimeout,
    /// The gateway is shutting down or over a limit.
    Unavailable,
    /// The request needs what the gateway does not do (a transfer coding other than chunked).
    NotImplemented,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::WebsocketDisabled => "websocket_disabled",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::UpgradeRequired => "websocket_version",
            ErrorKind::TooManyRequests => "too_many_requests",
            ErrorKind::BadGateway => "bad_gateway",
            ErrorKind::GatewayTimeout => "gateway_timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not_implemented",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadRequest | ErrorKind::WebsocketDisabled => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// An error the gateway answers itself, with a sentence for humans.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub message: String,
    /// Extra response headers (`Allow` on a 405, later `Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The JSON body, `{"status":..,"error":..,"message":..}`.
    pub fn body(&self) -> Bytes {
        let value = serde_json::json!({
            "status": self.kind.status().as_u16(),
            "error": self.kind.as_str(),
            "message": self.message,
        });
        Bytes::from(value.to_string())
    }

    pub fn to_response(&self) -> Response<Full<Bytes>> {
        json_response(self.kind.status(), self.body(), &self.headers)
    }
}

/// A JSON answer: `status`, `body`, the extra `headers` and `Content-Type: application/json`
/// (the admin API's errors are built the same way).
pub fn json_response(
    status: StatusCode,
    body: Bytes,
    headers: &[(HeaderName, HeaderValue)],
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().append(name, value.clone());
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_status_kind_and_message() {
        let err = GatewayError::new(
            ErrorKind::NoRoute,
            "no proxy serves /x in environment \"prod\"",
        );
        let value: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(value["status"], 404);
        assert_eq!(value["error"], "no_route");
        assert_eq!(
            value["message"],
            "no proxy serves /x in environment \"prod\""
        );
        let response = err.to_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
