//! Connect + relay phases for plain HTTP: stream the request to the backend through the
//! pooled client and stream its response back. Bodies are never buffered whole.

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use super::headers::{set_forwarded, strip_hop_by_hop};
use super::pipeline::{Body, ConnInfo, Matched};
use crate::error::{ErrorKind, GatewayError};

pub async fn forward(
    conn: &ConnInfo,
    matched: Matched,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let Matched { env, route, target } = matched;
    let uri: Uri = target.parse().map_err(|_| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("the resolved target {target:?} is not a valid URI"),
        )
    })?;
    let (mut parts, body) = req.into_parts();
    let original_host = original_host(&parts);
    strip_hop_by_hop(&mut parts.headers);
    set_forwarded(&mut parts.headers, conn, original_host.as_ref());
    let host = match (&original_host, route.preserve_host) {
        (Some(host), true) => host.clone(),
        _ => backend_host(&route.backend)?,
    };
    parts.headers.insert(header::HOST, host);
    parts.uri = uri;
    parts.version = Version::HTTP_11;

    let sent = route
        .upstream
        .http()
        .request(Request::from_parts(parts, body));
    let response = match tokio::time::timeout(env.timeouts.response, sent).await {
        Err(_) => {
            return Err(GatewayError::new(
                ErrorKind::GatewayTimeout,
                format!(
                    "the backend of API proxy \"{}\" did not answer within {:?}",
                    route.proxy, env.timeouts.response
                ),
            ));
        }
        Ok(Err(error)) => return Err(backend_error(&route.proxy, route.backend.as_str(), &error)),
        Ok(Ok(response)) => response,
    };
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // Only an upgrade request may be answered with 101, and this was not one.
        return Err(GatewayError::new(
            ErrorKind::BadGateway,
            format!(
                "the backend of API proxy \"{}\" switched protocols on a plain HTTP request",
                route.proxy
            ),
        ));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Either::Left(body)))
}

/// The host the client asked for: its `Host` header, or the HTTP/2 `:authority`.
pub fn original_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

pub fn backend_host(backend: &crate::routing::BackendUrl) -> Result<HeaderValue, GatewayError> {
    HeaderValue::from_str(backend.authority()).map_err(|_| {
        GatewayError::new(
            ErrorKind::BadGateway,
            format!("backend {} has no usable host", backend.as_str()),
        )
    })
}

fn backend_error(
    proxy: &str,
    backend: &str,
    error: &hyper_util::client::legacy::Error,
) -> GatewayError {
    use std::error::Error as _;
    let mut cause = String::new();
    let mut source = error.source();
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    let what = if error.is_connect() {
        "could not be reached"
    } else {
        "failed before answering"
    };
    tracing::warn!(proxy, backend, %cause, "backend {what}");
    GatewayError::new(
        ErrorKind::BadGateway,
        format!("the backend of API proxy \"{proxy}\" {what}: {cause}"),
    )
}
