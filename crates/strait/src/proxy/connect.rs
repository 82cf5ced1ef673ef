//! Connect phase, shared by HTTP forwarding and WebSocket handshakes: which of the backend's
//! targets an attempt goes to, the target URI and `Host` there, and the error when none can
//! take it. The pool ([`crate::upstream::pool`]) decides; this turns its answer into a request.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use http::header::{self, HeaderMap, HeaderValue};

use super::snapshot::Route;
use crate::error::{ErrorKind, GatewayError};
use crate::routing::target_uri;
use crate::upstream::balance::hash_key;
use crate::upstream::pool::{Lease, NoTarget, Outcome};

/// A request's attempts on the backend's targets: each on a target not tried yet, at most
/// `retries` after the first.
pub struct Attempts {
    /// The request's `consistent_hash` key, kept for every attempt.
    key: Option<Vec<u8>>,
    retries: u32,
    tried: Vec<usize>,
    /// The error the latest attempt ended with.
    last: Option<GatewayError>,
}

impl Attempts {
    pub fn new(route: &Route, headers: &HeaderMap, target: &Uri, client: SocketAddr) -> Self {
        let key = route.pool.hash_on().and_then(|hash_on| {
            hash_key(hash_on, headers, target.query(), client.ip())
                .map(|key| key.as_bytes().to_vec())
        });
        Attempts {
            key,
            retries: route.pool.retries(),
            tried: Vec::new(),
            last: None,
        }
    }

    /// Whether another attempt may follow this one.
    pub fn can_retry(&self) -> bool {
        self.retries > 0
    }

    /// Whether a target other than the current attempt's is left to try.
    pub fn others_left(&self, route: &Route) -> bool {
        self.tried.len() + 1 < route.pool.targets().len()
    }

    /// A target for the next attempt. Every target down: 503 at once. Every target tried:
    /// the error the latest attempt ended with.
    pub fn lease(&mut self, route: &Route) -> Result<Lease, GatewayError> {
        match route.pool.select(self.key.as_deref(), &self.tried) {
            Ok(lease) => Ok(lease),
            Err(NoTarget::AllTried) => Err(self.last.take().unwrap_or_else(|| all_down(route))),
            Err(NoTarget::AllDown) => Err(all_down(route)),
        }
    }

    /// The attempt on `lease` failed with `error` (if it was an error): try another target.
    pub fn retry(&mut self, lease: &Lease, error: Option<GatewayError>) {
        self.retries = self.retries.saturating_sub(1);
        self.tried.push(lease.index());
        self.last = error;
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

/// The backend of `route` did not answer (`what`: "", or " the WebSocket handshake") within
/// `timeout`; the lease is reported as timed out.
pub fn timed_out(lease: &mut Lease, route: &Route, what: &str, timeout: Duration) -> GatewayError {
    lease.report(Outcome::Timeout);
    GatewayError::new(
        ErrorKind::GatewayTimeout,
        format!(
            "the backend of API proxy \"{}\" did not answer{what} within {timeout:?}",
            route.proxy
        ),
    )
}
