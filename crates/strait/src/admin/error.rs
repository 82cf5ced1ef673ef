//! Admin API errors: the same JSON shape as the data plane's gateway errors
//! (`{"status": 404, "error": "not_found", "message": "..."}`), plus `problems` on a 422.
//! Owns the mapping from [`ControlError`] to a status and a kind.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use utoipa::ToSchema;

use crate::control::{ControlError, FieldProblem};

/// What went wrong, machine-readable; the snake_case string is part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 400: malformed JSON body, bad query parameter, bad percent-encoding, an empty name,
    /// or a request that is not valid HTTP/1.1 (answered before routing).
    BadRequest,
    /// 401: the bearer token is missing or wrong.
    Unauthorized,
    /// 404: no such environment, proxy or deployment.
    NotFound,
    /// 404: the admin API has no such route.
    NoRoute,
    /// 405: the route exists but not with this method (see `Allow`).
    MethodNotAllowed,
    /// 405: a write in declarative mode; edit the configuration file instead.
    ReadOnly,
    /// 409: the change conflicts with the running state (deployments left, address in use...).
    Conflict,
    /// 413: the request body is over 1 MiB.
    PayloadTooLarge,
    /// 414: the request target is too long (answered before routing).
    #[allow(
        dead_code,
        reason = "written by crate::error::JsonAnswers; listed for the document"
    )]
    UriTooLong,
    /// 422: the change is not valid; see `problems`.
    Invalid,
    /// 431: the request head is over 64 KiB or 100 header fields (answered before routing).
    #[allow(
        dead_code,
        reason = "written by crate::error::JsonAnswers; listed for the document"
    )]
    HeadersTooLarge,
    /// 500: the database failed.
    Storage,
    /// 500: a bug in the admin API itself.
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound | ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed | ErrorKind::ReadOnly => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Storage | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One validation problem of a 422.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// Where, relative to the object: e.g. `path`, `timeouts.connect`; empty for the whole body.
    #[schema(example = "timeouts.connect")]
    pub field: String,
    pub message: String,
}

impl From<FieldProblem> for Problem {
    fn from(problem: FieldProblem) -> Self {
        let FieldProblem { field, message } = problem;
        Problem { field, message }
    }
}

/// Every error answer of the admin API.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "status": 404,
    "error": "not_found",
    "message": "there is no environment named \"staging\""
})))]
pub struct ErrorBody {
    /// The HTTP status again.
    pub status: u16,
    pub error: ErrorKind,
    /// A sentence for humans.
    pub message: String,
    /// Only on `invalid` (422): every problem found.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub problems: Option<Vec<Problem>>,
}

/// An error the admin API answers with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub problems: Vec<Problem>,
    /// Extra response headers (`Allow` on a 405, `WWW-Authenticate` on a 401).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            problems: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            status: self.kind.status().as_u16(),
            error: self.kind,
            message: self.message.clone(),
            problems: (self.kind == ErrorKind::Invalid).then(|| self.problems.clone()),
        }
    }

    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let body = match serde_json::to_vec(&self.body()) {
            Ok(body) => Bytes::from(body),
            // Cannot happen (plain strings and numbers), but never answer without a body.
            Err(_) => Bytes::from_static(
                br#"{"status":500,"error":"internal","message":"the error could not be encoded"}"#,
            ),
        };
        crate::error::json_response(self.kind.status(), body, &self.headers)
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        let message = error.to_string();
        match error {
            ControlError::NotFound(_) => ApiError::new(ErrorKind::NotFound, message),
            ControlError::ReadOnly => ApiError::new(ErrorKind::ReadOnly, message),
            ControlError::Invalid(problems) => ApiError {
                problems: problems.into_iter().map(Problem::from).collect(),
                ..ApiError::new(ErrorKind::Invalid, message)
            },
            ControlError::Conflict(_) => ApiError::new(ErrorKind::Conflict, message),
            ControlError::Storage(_) => {
                tracing::error!(%message, "admin API: storage failed");
                ApiError::new(ErrorKind::Storage, message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;
    use serde_json::{Value, json};

    fn body_of(error: &ApiError) -> Value {
        serde_json::to_value(error.body()).unwrap()
    }

    #[test]
    fn kinds_serialize_to_their_contract_strings_and_statuses() {
        let cases = [
            (ErrorKind::BadRequest, "bad_request", 400),
            (ErrorKind::Unauthorized, "unauthorized", 401),
            (ErrorKind::NotFound, "not_found", 404),
            (ErrorKind::NoRoute, "no_route", 404),
            (ErrorKind::MethodNotAllowed, "method_not_allowed", 405),
            (ErrorKind::ReadOnly, "read_only", 405),
            (ErrorKind::Conflict, "conflict", 409),
            (ErrorKind::PayloadTooLarge, "payload_too_large", 413),
            (ErrorKind::Invalid, "invalid", 422),
            (ErrorKind::Storage, "storage", 500),
            (ErrorKind::Internal, "internal", 500),
        ];
        for (kind, name, status) in cases {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(name));
            assert_eq!(kind.status().as_u16(), status, "{name}");
        }
    }

    #[test]
    fn control_errors_map_to_status_kind_and_message() {
        let cases = [
            (
                ControlError::NotFound("there is no proxy named \"x\"".into()),
                404,
                "not_found",
            ),
            (ControlError::ReadOnly, 405, "read_only"),
            (ControlError::Conflict("in use".into()), 409, "conflict"),
            (ControlError::Storage("disk full".into()), 500, "storage"),
        ];
        for (control, status, kind) in cases {
            let message = control.to_string();
            let error = ApiError::from(control);
            let body = body_of(&error);
            assert_eq!(body["status"], status);
            assert_eq!(body["error"], kind);
            assert_eq!(body["message"], message.as_str());
            assert!(body.get("problems").is_none());
            assert_eq!(error.to_response().status().as_u16(), status);
        }
        let read_only = body_of(&ApiError::from(ControlError::ReadOnly));
        assert!(
            read_only["message"]
                .as_str()
                .unwrap()
                .contains("edit the file instead")
        );
    }

    #[test]
    fn invalid_lists_its_problems() {
        let error = ApiError::from(ControlError::Invalid(vec![
            FieldProblem {
                field: "timeouts.connect".into(),
                message: "not a duration".into(),
            },
            FieldProblem {
                field: "path".into(),
                message: "must start with /".into(),
            },
        ]));
        let response = error.to_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_of(&error),
            json!({
                "status": 422,
                "error": "invalid",
                "message": "the change is not valid",
                "problems": [
                    {"field": "timeouts.connect", "message": "not a duration"},
                    {"field": "path", "message": "must start with /"},
                ],
            })
        );
    }

    #[test]
    fn extra_headers_reach_the_response() {
        let response = ApiError::new(ErrorKind::MethodNotAllowed, "no")
            .with_header(header::ALLOW, HeaderValue::from_static("GET, PUT"))
            .to_response();
        assert_eq!(response.headers()[header::ALLOW], "GET, PUT");
    }
}
