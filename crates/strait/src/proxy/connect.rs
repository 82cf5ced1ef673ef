//! Connect phase, shared by HTTP forwarding and WebSocket handshakes: which of the backend's
//! targets an attempt goes to, the target URI and `Host` there, and the error when none can
//! take it. The pool ([`crate::upstream::pool`]) decides; this turns its answer into a request.

use std::net::SocketAddr;

use http::Uri;
use http::header::{self, HeaderMap, HeaderValue};

use super::snapshot::Route;
use crate::error::{ErrorKind, GatewayError};
use crate::routing::target_uri;
use crate::upstream::balance::hash_key;
use crate::upstream::pool::{Lease, NoTarget};

/// The request's `consistent_hash` key, kept for every attempt (`None` without one).
pub fn affinity(
    route: &Route,
    headers: &HeaderMap,
    target: &Uri,
    client: SocketAddr,
) -> Option<Vec<u8>> {
    let hash_on = route.pool.hash_on()?;
    hash_key(hash_on, headers, target.query(), client.ip()).map(|key| key.as_bytes().to_vec())
}

/// A target for the next attempt, skipping those in `tried`. Every target down: 503 at once.
/// Every target tried: `last`, the error the latest attempt ended with.
pub fn lease(
    route: &Route,
    key: Option<&[u8]>,
    tried: &[usize],
    last: Option<GatewayError>,
) -> Result<Lease, GatewayError> {
    match route.pool.select(key, tried) {
        Ok(lease) => Ok(lease),
        Err(NoTarget::AllTried) => Err(last.unwrap_or_else(|| all_down(route))),
        Err(NoTarget::AllDown) => Err(all_down(route)),
    }
}

fn all_down(route: &Route) -> GatewayError {
    GatewayError::new(
        ErrorKind::Unavailable,
        format!(
            "every backend target of API proxy \"{}\" is down; try again later",
            route.proxy
        ),
    )
}

/// The target URI on the leased target: the matched one when it is the first target (the
/// one it was resolved on), else `remaining` resolved again there, with the query as the
/// policies left it.
pub fn target_on(
    lease: &Lease,
    route: &Route,
    matched: &Uri,
    remaining: Option<&str>,
    websocket: bool,
) -> Result<Uri, GatewayError> {
    let (Some(remaining), false) = (remaining, lease.url() == &route.backend) else {
        return Ok(matched.clone());
    };
    let text = target_uri(lease.url(), remaining, matched.query(), websocket);
    text.parse().map_err(|_| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("the resolved target {text:?} is not a valid URI"),
        )
    })
}

/// Points `Host` at the leased target, unless the proxy preserves the client's.
pub fn host_on(lease: &Lease, route: &Route, headers: &mut HeaderMap) {
    if route.preserve_host || lease.url() == &route.backend {
        return;
    }
    if let Ok(host) = HeaderValue::from_str(lease.url().authority()) {
        headers.insert(header::HOST, host);
    }
}
