//! Connect + relay phases for plain HTTP: stream the request to the backend through the
//! pooled client and stream its response back. Bodies are never buffered whole.

use std::time::Instant;

use http::{Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;

use super::connect;
use super::exchange::Exchange;
use super::headers::{strip_hop_by_hop, to_backend};
use super::pipeline::{Body, ConnInfo, Matched};
use crate::error::{ErrorKind, GatewayError};
use crate::telemetry::{Counted, TooLarge};
use crate::upstream::pool::Outcome;
use crate::upstream::replay::{Replay, Returned};

pub async fn forward(
    conn: &ConnInfo,
    matched: Matched,
    req: Request<Counted<Incoming>>,
    exchange: &mut Exchange,
) -> Result<Response<Body>, GatewayError> {
    let Matched {
        env,
        route,
        target,
        remaining,
    } = matched;
    let (mut parts, body) = req.into_parts();
    to_backend(&mut parts.headers, parts.uri.authority(), conn, &route)?;
    parts.version = Version::HTTP_11;
    let key = connect::affinity(&route, &parts.headers, &target, conn.client);
    let idempotent = parts.method.is_idempotent();
    let mut retries = route.pool.retries();
    // Without retries the body goes once; with, it comes back from an attempt that did not
    // send any of it.
    let (mut body, mut returned) = match retries {
        0 => (Replay::once(body), None),
        _ => {
            let (body, returned) = Replay::new(body);
            (body, Some(returned))
        }
    };
    let mut tried = Vec::new();
    let mut last = None;
    loop {
        let mut lease = connect::lease(&route, key.as_deref(), &tried, last.take())?;
        let uri = connect::target_on(&lease, &route, &target, remaining.as_deref(), false)?;
        // The last attempt takes the head; one that may be followed by another copies it.
        let mut head = if retries > 0 && returned.is_some() {
            let mut copy = Request::new(());
            *copy.method_mut() = parts.method.clone();
            *copy.headers_mut() = parts.headers.clone();
            copy.into_parts().0
        } else {
            let (empty, ()) = Request::new(()).into_parts();
            std::mem::replace(&mut parts, empty)
        };
        head.uri = uri;
        head.version = Version::HTTP_11;
        connect::host_on(&lease, &route, &mut head.headers);
        if remaining.is_some() {
            exchange.target = Some(head.uri.clone());
        }

        let asked = Instant::now();
        let sent = route
            .upstream
            .http()
            .request(Request::from_parts(head, body));
        let outcome = tokio::time::timeout(env.timeouts.response, sent).await;
        // The body, if this attempt dropped it unsent.
        let again = returned.take().and_then(Returned::take);
        let response = match outcome {
            Err(_) => {
                lease.report(Outcome::Timeout);
                return Err(GatewayError::new(
                    ErrorKind::GatewayTimeout,
                    format!(
                        "the backend of API proxy \"{}\" did not answer within {:?}",
                        route.proxy, env.timeouts.response
                    ),
                ));
            }
            Ok(Err(error)) => {
                // The client's body went past a `request_size` limit: the backend's request
                // was aborted there.
                if let Some(too_large) = TooLarge::within(&error) {
                    return Err(GatewayError::new(
                        ErrorKind::PayloadTooLarge,
                        too_large.to_string(),
                    ));
                }
                lease.report(Outcome::ConnectFailed);
                let failed = backend_error(&route.proxy, lease.url().as_str(), &error);
                // Another target may take it if none of the body went out: after a connect
                // failure whatever the method, after a lost connection if idempotent.
                match again {
                    Some(unsent) if retries > 0 && (error.is_connect() || idempotent) => {
                        (body, returned) = (unsent.0, Some(unsent.1));
                        retries -= 1;
                        tried.push(lease.index());
                        last = Some(failed);
                        continue;
                    }
                    _ => return Err(failed),
                }
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        lease.report(Outcome::from_status(status));
        if let Some(unsent) = again
            && retries > 0
            && idempotent
            && matches!(status.as_u16(), 502..=504)
        {
            tracing::debug!(proxy = %route.proxy, target = lease.url().as_str(), %status, "retrying on another target");
            (body, returned) = (unsent.0, Some(unsent.1));
            retries -= 1;
            tried.push(lease.index());
            continue;
        }
        let took = asked.elapsed();
        exchange.backend_took = Some(took);
        route.metrics.backend_answered(took);
        if status == http::StatusCode::SWITCHING_PROTOCOLS {
            // Only an upgrade request may be answered with 101, and this was not one.
            return Err(GatewayError::new(
                ErrorKind::BadGateway,
                format!(
                    "the backend of API proxy \"{}\" switched protocols on a plain HTTP request",
                    route.proxy
                ),
            ));
        }
        // The target counts the request as active until its response body ends.
        exchange.lease = Some(lease);
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(parts, Either::Left(body)));
    }
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
