//! Connect + relay phases for plain HTTP: stream the request to the backend through the
//! pooled client and stream its response back. Bodies are never buffered whole.

use std::time::Instant;

use http::{Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use super::exchange::Exchange;
use super::headers::{strip_hop_by_hop, to_backend};
use super::pipeline::{Body, ConnInfo, Matched};
use crate::error::{ErrorKind, GatewayError};
use crate::telemetry::Counted;

pub async fn forward(
    conn: &ConnInfo,
    matched: Matched,
    req: Request<Counted<Incoming>>,
    exchange: &mut Exchange,
) -> Result<Response<Body>, GatewayError> {
    let Matched { env, route, target } = matched;
    let (mut parts, body) = req.into_parts();
    to_backend(&mut parts.headers, parts.uri.authority(), conn, &route)?;
    parts.uri = target;
    parts.version = Version::HTTP_11;

    let asked = Instant::now();
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
    let took = asked.elapsed();
    exchange.backend_took = Some(took);
    route.metrics.backend_answered(took);
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
