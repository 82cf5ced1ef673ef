//! The live WebSocket sessions as admin objects: list (filtered, paged), look at one,
//! close one or all of a consumer's with a chosen code. Reads the gateway's session
//! registry; never touches the configuration, so it works in both modes.

use std::sync::Arc;

use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, ErrorKind};
use super::request::ConnectionFilter;
use super::routes::{Reply, json, no_content};
use crate::control::Control;
use crate::proxy::Session;
use crate::proxy::websocket::relay::{CloseFrame, DirectionStats};
use crate::store::time::rfc3339_millis;

/// One live WebSocket session.
#[derive(Debug, Serialize, ToSchema)]
pub struct Connection {
    /// Unique while the process runs.
    pub id: u64,
    #[schema(example = "production")]
    pub environment: String,
    #[schema(example = "chat")]
    pub proxy: String,
    /// The client's address as the listener saw it.
    #[schema(example = "203.0.113.7:51234")]
    pub client: String,
    /// The handshake's `Origin` header.
    pub origin: Option<String>,
    /// The consumer an authentication policy identified at the handshake (`null`: none ran).
    pub consumer: Option<String>,
    /// The subprotocol the backend chose.
    pub subprotocol: Option<String>,
    /// The backend URL the session was opened to.
    #[schema(example = "ws://10.0.0.1:9090/websocket/room/1")]
    pub backend: String,
    /// RFC 3339, UTC.
    pub started: String,
    /// RFC 3339, UTC: when a frame last passed either way (`null`: none yet).
    pub last_activity: Option<String>,
    pub client_to_backend: Traffic,
    pub backend_to_client: Traffic,
}

/// What passed in one direction.
#[derive(Debug, Serialize, ToSchema)]
pub struct Traffic {
    /// Every frame, control frames included.
    pub frames: u64,
    /// Whole data messages (text or binary, however fragmented).
    pub messages: u64,
    /// Payload bytes.
    pub bytes: u64,
}

impl From<DirectionStats> for Traffic {
    fn from(stats: DirectionStats) -> Self {
        let DirectionStats {
            frames,
            messages,
            bytes,
            ..
        } = stats;
        Traffic {
            frames,
            messages,
            bytes,
        }
    }
}

impl From<&Session> for Connection {
    fn from(session: &Session) -> Self {
        let info = &session.info;
        Connection {
            id: session.id,
            environment: info.env.to_string(),
            proxy: info.proxy.to_string(),
            client: info.client.to_string(),
            origin: info.origin.clone(),
            consumer: info.consumer.clone(),
            subprotocol: info.subprotocol.clone(),
            backend: info.target.clone(),
            started: rfc3339_millis(session.started),
            last_activity: session.live.last_activity().map(rfc3339_millis),
            client_to_backend: session.live.client_to_backend().into(),
            backend_to_client: session.live.backend_to_client().into(),
        }
    }
}

/// One page of live sessions, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    /// 1-based.
    pub page: u64,
    pub per_page: u64,
    /// Sessions matching the filter, on every page.
    pub total: u64,
    pub connections: Vec<Connection>,
}

/// How many sessions a bulk close reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct Closed {
    pub closed: u64,
}

/// The sessions matching `filter`, in no particular order.
fn matching(control: &Control, filter: &ConnectionFilter) -> Vec<Arc<Session>> {
    let wanted = |want: &Option<String>, have: Option<&str>| {
        want.as_deref().is_none_or(|want| Some(want) == have)
    };
    control
        .gateway()
        .sessions()
        .into_iter()
        .filter(|s| {
            wanted(&filter.environment, Some(&s.info.env))
                && wanted(&filter.proxy, Some(&s.info.proxy))
                && wanted(&filter.consumer, s.info.consumer.as_deref())
        })
        .collect()
}

/// Items `skip..skip + take` of `items` in `key` order. Only the items up to the page's end
/// are sorted: a first page of a million sessions costs one selection pass, not a full sort.
fn page<T, K: Ord>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> K + Copy,
    skip: usize,
    take: usize,
) -> Vec<T> {
    let end = skip.saturating_add(take).min(items.len());
    if end < items.len() {
        items.select_nth_unstable_by_key(end, key);
        items.truncate(end);
    }
    items.sort_unstable_by_key(key);
    items.split_off(skip.min(items.len()))
}

fn unknown(id: u64) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("there is no open WebSocket connection with id {id}"),
    )
}

/// List live WebSocket connections
///
/// Every open session with its owner, backend and counters, oldest first, one page at a time.
#[utoipa::path(
    get,
    path = "/connections",
    tag = "connections",
    params(
        ("environment" = Option<String>, Query, description = "Only sessions in this environment"),
        ("proxy" = Option<String>, Query, description = "Only sessions of this proxy"),
        ("consumer" = Option<String>, Query, description = "Only sessions of this consumer"),
        ("page" = Option<u64>, Query, minimum = 1, description = "1-based page number (default 1)"),
        ("per_page" = Option<u64>, Query, minimum = 1, maximum = 500, description = "Sessions per page (default 50, at most 500)"),
    ),
    responses(
        (status = 200, description = "One page of sessions", body = ConnectionList),
        (status = 400, description = "`bad_request`: a parameter out of range", body = ErrorBody),
    ),
)]
pub fn list(control: &Control, filter: &ConnectionFilter, page: u64, per_page: u64) -> Reply {
    let sessions = matching(control, filter);
    let total = sessions.len() as u64;
    let skip =
        usize::try_from(page.saturating_sub(1).saturating_mul(per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(per_page).unwrap_or(usize::MAX);
    json(
        StatusCode::OK,
        &ConnectionList {
            page,
            per_page,
            total,
            connections: self::page(sessions, |s| s.id, skip, take)
                .iter()
                .map(|s| Connection::from(&**s))
                .collect(),
        },
    )
}

/// Get one live WebSocket connection
#[utoipa::path(
    get,
    path = "/connections/{id}",
    tag = "connections",
    params(("id" = u64, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The session", body = Connection),
        (status = 404, description = "`not_found`: no such open session", body = ErrorBody),
    ),
)]
pub fn get(control: &Control, id: u64) -> Reply {
    match control.gateway().session(id) {
        Some(session) => json(StatusCode::OK, &Connection::from(&*session)),
        None => Err(unknown(id)),
    }
}

/// Close one live WebSocket connection
///
/// Both the client and the backend get a close frame with this code and reason; the
/// answer comes once the close is under way.
#[utoipa::path(
    delete,
    path = "/connections/{id}",
    tag = "connections",
    params(
        ("id" = u64, Path, description = "The connection's id"),
        ("code" = Option<u16>, Query, description = "Close code (default 1008): 1000-1003, 1007-1014 or 3000-4999"),
        ("reason" = Option<String>, Query, description = "Close reason, at most 123 bytes (default `closed by the operator`)"),
    ),
    responses(
        (status = 204, description = "Closing"),
        (status = 400, description = "`bad_request`: a code that may not be sent, or a reason too long", body = ErrorBody),
        (status = 404, description = "`not_found`: no such open session", body = ErrorBody),
    ),
)]
pub fn close(control: &Control, id: u64, code: u16, reason: String) -> Reply {
    let session = control.gateway().session(id).ok_or_else(|| unknown(id))?;
    tracing::info!(id, code, %reason, "closing a WebSocket session on request");
    if !session.close(CloseFrame::new(code, reason)) {
        return Err(unknown(id));
    }
    no_content()
}

/// Close every matching WebSocket connection
///
/// For example every session of one consumer after revoking its key. At least one of
/// environment, proxy and consumer is required.
#[utoipa::path(
    delete,
    path = "/connections",
    tag = "connections",
    params(
        ("environment" = Option<String>, Query, description = "Sessions in this environment"),
        ("proxy" = Option<String>, Query, description = "Sessions of this proxy"),
        ("consumer" = Option<String>, Query, description = "Sessions of this consumer"),
        ("code" = Option<u16>, Query, description = "Close code (default 1008): 1000-1003, 1007-1014 or 3000-4999"),
        ("reason" = Option<String>, Query, description = "Close reason, at most 123 bytes (default `closed by the operator`)"),
    ),
    responses(
        (status = 200, description = "How many sessions are closing", body = Closed),
        (status = 400, description = "`bad_request`: no filter, or a bad code or reason", body = ErrorBody),
    ),
)]
pub fn close_matching(
    control: &Control,
    filter: &ConnectionFilter,
    code: u16,
    reason: &str,
) -> Reply {
    let closed = matching(control, filter)
        .iter()
        .filter(|s| s.close(CloseFrame::new(code, reason)))
        .count() as u64;
    tracing::info!(
        ?filter,
        code,
        reason,
        closed,
        "closing WebSocket sessions on request"
    );
    json(StatusCode::OK, &Closed { closed })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page of every shuffled list is the sorted list's slice, past the end included.
    #[test]
    fn a_page_is_the_slice_of_the_sorted_items() {
        for n in 0..24usize {
            // A permutation of 0..n (17 is coprime with every n that is not a multiple of 17).
            let shuffled: Vec<usize> = match n % 17 {
                0 => (0..n).rev().collect(),
                _ => (0..n).map(|i| i * 17 % n).collect(),
            };
            for skip in 0..n + 3 {
                for take in [1, 2, 5, 50, usize::MAX] {
                    let want: Vec<usize> = (0..n).skip(skip).take(take).collect();
                    let got = page(shuffled.clone(), |&i| i, skip, take);
                    assert_eq!(got, want, "n {n}, skip {skip}, take {take}");
                }
            }
        }
    }
}
