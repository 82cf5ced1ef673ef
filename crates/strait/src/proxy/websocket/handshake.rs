//! Connect phase for WebSocket: forward the client's upgrade to the backend on a fresh
//! connection and give the client **the backend's own answer** — its 101 with the
//! subprotocol and extensions it chose, or its refusal as it was. Only after both sides
//! have upgraded does the relay start, as a tracked task so shutdown can close it.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper_util::rt::TokioIo;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

use super::backend;
use super::relay::{
    CLOSE_GOING_AWAY, CloseFrame, DirectionStats, MessageLimits, RelayConfig, relay,
};
use crate::error::{ErrorKind, GatewayError, JsonAnswers};
use crate::proxy::connect;
use crate::proxy::exchange::Exchange;
use crate::proxy::headers::{strip_hop_by_hop, to_backend};
use crate::proxy::listener::ClientStream;
use crate::proxy::pipeline::{Body, ConnInfo, Matched, Shared};
use crate::proxy::send_timeout::SendTimeout;
use crate::proxy::sessions::SessionInfo;
use crate::proxy::snapshot::{EnvRoutes, Route};
use crate::telemetry::access::{SessionRecord, Traffic};
use crate::telemetry::{Tracer, Upgrade};
use crate::upstream::UpstreamError;
use crate::upstream::pool::Outcome;
use crate::upstream::settings::Rebalance;

/// Where the session gets the client's connection once the 101 has gone out.
pub enum ClientSide {
    /// From hyper, which wrote the 101 (and read the head).
    Hyper(hyper::upgrade::OnUpgrade),
    /// From the listener, which read the head itself and writes the 101 (see
    /// [`crate::proxy::sniff`]); dropped unsent if it did not.
    Direct(oneshot::Receiver<ClientStream>),
}

impl ClientSide {
    /// The upgraded connection, with what the client sent after its head (hyper may have
    /// read some of it already).
    async fn upgraded(self) -> Result<(ClientStream, Bytes), &'static str> {
        match self {
            ClientSide::Hyper(upgrade) => {
                let upgraded = upgrade
                    .await
                    .map_err(|_| "the client connection was not upgraded")?;
                // Unwrapped from hyper's upgrade: the relay reads and writes the connection
                // directly instead of through a boxed, rewindable wrapper.
                let parts = upgraded
                    .downcast::<TokioIo<SendTimeout<JsonAnswers<ClientStream>>>>()
                    .map_err(|_| "an upgraded connection is of an unexpected type")?;
                let stream = parts.io.into_inner().into_inner().into_inner();
                Ok((stream, parts.read_buf))
            }
            ClientSide::Direct(stream) => stream
                .await
                .map(|stream| (stream, Bytes::new()))
                .map_err(|_| "the 101 did not reach the client"),
        }
    }
}

#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice: see `pipeline::handle`"
)]
pub fn forward(
    shared: &Shared,
    conn: &ConnInfo,
    matched: Matched,
    mut req: Request<()>,
    client: ClientSide,
    exchange: &mut Exchange,
) -> impl Future<Output = Result<Response<Body>, GatewayError>> {
    async move {
        let Matched {
            env,
            route,
            target,
            remaining,
        } = matched;
        let result = handshake(
            shared,
            conn,
            (env, route.clone()),
            (target, remaining),
            &mut req,
            client,
            exchange,
        )
        .await;
        let outcome = match &result {
            Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                Upgrade::Upgraded
            }
            Ok(_) => Upgrade::RefusedByBackend,
            Err(_) => Upgrade::BackendUnreachable,
        };
        route.metrics.upgrade(outcome);
        exchange.upgraded = outcome == Upgrade::Upgraded;
        result
    }
}

async fn handshake(
    shared: &Shared,
    conn: &ConnInfo,
    (env, route): (Arc<EnvRoutes>, Arc<Route>),
    (target, remaining): (Uri, Option<String>),
    req: &mut Request<()>,
    client_upgrade: ClientSide,
    exchange: &mut Exchange,
) -> Result<Response<Body>, GatewayError> {
    let mut headers = std::mem::take(req.headers_mut());
    let origin = text_header(&headers, header::ORIGIN);
    to_backend(&mut headers, req.uri().authority(), conn, &route, true)?;

    // A target whose connect fails is tried no more: the next attempt goes to another. A
    // backend that answers, even to refuse, is never asked again.
    let mut attempts = connect::Attempts::new(&route, &headers, &target, conn.client);
    let (mut lease, mut stream, target) = loop {
        let mut lease = attempts.lease(&route)?;
        let target = connect::target_on(&lease, &route, &target, remaining.as_deref(), true)?;
        match route.upstream.connect(lease.url()).await {
            Ok(stream) => break (lease, stream, target),
            Err(error) => {
                lease.report(Outcome::ConnectFailed);
                let failed = connect_error(&route.proxy, &error);
                if !attempts.can_retry() {
                    return Err(failed);
                }
                attempts.retry(&lease, Some(failed));
            }
        }
    };
    connect::host_on(&lease, &route, &mut headers);
    if remaining.is_some() {
        exchange.keep_target(|| target.clone());
    }

    // Origin form (`/path?query`) on the request line; the host travels in `Host`.
    let path = target.path_and_query().map_or("/", |pq| pq.as_str());
    let head = backend::request_head(path, &headers);
    let timed_out = |lease: &mut _| {
        connect::timed_out(
            lease,
            &route,
            " the WebSocket handshake",
            env.timeouts.response,
        )
    };
    let asked = Instant::now();
    let answer =
        match tokio::time::timeout(env.timeouts.response, backend::ask(&mut stream, &head)).await {
            Err(_) => return Err(timed_out(&mut lease)),
            Ok(Err(error)) => {
                lease.report(Outcome::ConnectFailed);
                return Err(bad_gateway(&route.proxy, &error));
            }
            Ok(Ok(answer)) => answer,
        };
    if let backend::Answer::Switched {
        headers: answered, ..
    } = &answer
        && let Err(error) = backend::check_switch(&headers, answered)
    {
        lease.report(Outcome::ConnectFailed);
        return Err(bad_gateway(&route.proxy, &error));
    }
    lease.report(Outcome::from_status(answer.status()));
    let took = asked.elapsed();
    exchange.backend_took = Some(took);
    route.metrics.backend_answered(took);

    let (answered, from_backend) = match answer {
        backend::Answer::Switched { headers, rest } => (headers, rest),
        backend::Answer::Refused { status, read } => {
            // The backend refused: its answer reaches the client as it was.
            tracing::debug!(proxy = %route.proxy, %status, target = %exchange.shown(&target.to_string()), "backend refused the WebSocket upgrade");
            // Its head is read already; only a hyper that cannot parse it again waits.
            let response =
                match tokio::time::timeout(env.timeouts.response, backend::refusal(stream, read))
                    .await
                {
                    Ok(Ok(response)) => response,
                    Ok(Err(error)) => return Err(bad_gateway(&route.proxy, &error)),
                    Err(_) => return Err(timed_out(&mut lease)),
                };
            let (mut parts, body) = response.into_parts();
            if strip_hop_by_hop(&mut parts.headers).is_some() {
                return Err(GatewayError::new(
                    ErrorKind::BadGateway,
                    format!(
                        "the backend of API proxy \"{}\" refused the WebSocket upgrade in a transfer coding the gateway does not forward",
                        route.proxy
                    ),
                ));
            }
            return Ok(Response::from_parts(parts, Either::Left(body)));
        }
    };
    let subprotocol = text_header(&answered, header::SEC_WEBSOCKET_PROTOCOL);
    let mut answer = Response::new(Either::Right(Full::new(Bytes::new())));
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *answer.headers_mut() = answered;

    let config = RelayConfig {
        idle_timeout: env.timeouts.websocket_idle,
        close_timeout: shared.close_timeout,
        send_timeout: env.timeouts.send,
        ping_interval: env.timeouts.websocket_ping,
        pong_timeout: env.timeouts.websocket_pong_timeout,
        ping_rtt: env
            .timeouts
            .websocket_ping
            .map(|_| route.metrics.ping_rtt()),
        limits: MessageLimits::from_policies(
            exchange
                .effects
                .iter()
                .flat_map(|effects| &effects.held)
                .filter_map(|h| h.message_limit()),
        ),
        extensions: answer
            .headers()
            .contains_key(header::SEC_WEBSOCKET_EXTENSIONS),
    };
    let max_lifetime = env.timeouts.websocket_max_lifetime;
    let shutdown = shared.shutdown.clone();
    // Shown in the connection list and logs: a credential kept in the query is masked.
    let target = target.to_string();
    let target = match exchange.shown(&target) {
        Cow::Borrowed(_) => target,
        Cow::Owned(masked) => masked,
    };
    let info = SessionInfo {
        env: env.name.clone(),
        proxy: route.proxy.clone(),
        client: conn.client,
        origin,
        subprotocol,
        consumer: exchange.consumer.as_deref().map(str::to_owned),
        target: target.clone(),
    };
    let access_log = env.access_log.clone();
    // Names and paths are formatted only for a span or an access-log line that will use them.
    let logged = access_log.is_some() || exchange.tracer.is_some();
    // Header values may be slices of the handshake's whole head (cookies and all): the
    // session keeps its own copies, and only of what a log line or span will show.
    let kept = |value: Option<&HeaderValue>| {
        value
            .filter(|_| logged)
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
    };
    let log = SessionLog {
        request_id: kept(Some(&exchange.trace.request_id))
            .unwrap_or_else(|| HeaderValue::from_static("-")),
        trace_id: exchange.trace.trace_id,
        span_id: exchange.trace.span_id,
        parent_span_id: exchange.trace.parent_span_id,
        span_name: match exchange.tracer {
            Some(_) => exchange.span_name("WebSocket"),
            None => String::new(),
        },
        began: exchange.arrived(),
        upgraded: SystemTime::now(),
        tracer: exchange.tracer.clone(),
        path: if logged {
            exchange.logged_path().into_owned()
        } else {
            String::new()
        },
        referer: kept(exchange.referer.as_ref()),
        user_agent: kept(exchange.user_agent.as_ref()),
    };
    let proxy = route.proxy.clone();
    let client = conn.client;
    // The session counts on its worker as the connection did.
    let serving = conn.serving.clone();
    // Listed from the moment the client is told 101; the record goes if the upgrade fails.
    let (registration, close_requested) = shared.registry.register(info);
    // What the policies handed the handshake (a `ws_connections` slot) lives as long as the
    // session task, however it ends.
    let held = exchange
        .effects
        .as_mut()
        .map(|effects| std::mem::take(&mut effects.held))
        .unwrap_or_default();
    // The earliest deadline a policy set (a `jwt` with `close_on_expiry`).
    let expiry = held
        .iter()
        .filter_map(|h| h.expires())
        .min_by_key(|e| e.at)
        .cloned();
    // Under `rebalance: drain`, a session on a target the configuration no longer lists is
    // closed once the environment's undeploy grace has passed.
    let drain = (route.pool.rebalance() == Rebalance::Drain)
        .then(|| lease.target().retired().clone())
        .zip(env.undeploy_grace);
    // Boxed, like connection tasks: cheaper to spawn than moving the session state by value.
    shared.sessions.spawn(Box::pin(async move {
        let (held, _serving) = (held, serving);
        // The target counts the session as open until it ends.
        let lease = lease;
        let client_io = match client_upgrade.upgraded().await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%proxy, error, "WebSocket upgrade did not complete");
                return;
            }
        };
        // The session's own limits (lifetime, token expiry, drain), boxed together: a
        // session without any carries none of their timers.
        let expiry = expiry.map(|expiry| {
            let left = expiry
                .at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            (left, expiry)
        });
        let limits = (max_lifetime.is_some() || expiry.is_some() || drain.is_some()).then(|| {
            Box::pin(async move {
                let lifetime = async move {
                    match max_lifetime {
                        Some(limit) => tokio::time::sleep(limit).await,
                        None => std::future::pending().await,
                    }
                };
                let expired = async move {
                    match expiry {
                        Some((left, expiry)) => {
                            tokio::time::sleep(left).await;
                            CloseFrame::new(expiry.code, expiry.reason)
                        }
                        None => std::future::pending().await,
                    }
                };
                let drained = async move {
                    match drain {
                        Some((retired, grace)) => {
                            retired.cancelled().await;
                            tokio::time::sleep(grace).await;
                            CloseFrame::new(CLOSE_GOING_AWAY, "backend target removed")
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    frame = expired => frame,
                    frame = drained => frame,
                    _ = lifetime => CloseFrame::new(CLOSE_GOING_AWAY, "maximum session lifetime reached"),
                }
            })
        });
        let stop = std::pin::pin!(async move {
            let limited = async move {
                match limits {
                    Some(limits) => limits.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => CloseFrame::new(CLOSE_GOING_AWAY, "gateway shutting down"),
                Ok(frame) = close_requested => frame,
                frame = limited => frame,
            }
        });
        tracing::debug!(%proxy, %client, %target, "WebSocket session open");
        let started = Instant::now();
        let outcome = relay(
            client_io,
            (stream, from_backend),
            &config,
            &registration.session.live,
            stop,
        )
        .await;
        let lasted = started.elapsed();
        let code = outcome.close.as_ref().map(|c| c.code);
        let initiator = outcome.initiator.as_str();
        route.metrics.session_closed(code, initiator, lasted);
        let session = &registration.session;
        tracing::debug!(%proxy, %client, %target, ?code, initiator, "WebSocket session closed");
        #[cfg(feature = "otlp")]
        if let Some(tracer) = &log.tracer {
            tracer.send(session_span(&log, &registration.session, &outcome));
        }
        if let Some(access_log) = access_log {
            let info = &session.info;
            let traffic = |stats: DirectionStats| Traffic {
                messages: stats.messages,
                bytes: stats.bytes,
            };
            access_log.session(&SessionRecord {
                kind: "websocket_session",
                time: SystemTime::now(),
                request_id: log.request_id.to_str().unwrap_or("-"),
                trace_id: format!("{:032x}", log.trace_id),
                session_id: session.id,
                environment: &info.env,
                proxy: &info.proxy,
                path: &log.path,
                duration: lasted,
                client_to_backend: traffic(outcome.client_to_backend),
                backend_to_client: traffic(outcome.backend_to_client),
                close_code: code,
                close_reason: outcome.close.as_ref().map_or("", |c| c.reason.as_str()),
                initiator,
                client,
                consumer: info.consumer.as_deref(),
                backend: &info.target,
                subprotocol: info.subprotocol.as_deref(),
                referer: log.referer.as_ref().and_then(|v| v.to_str().ok()),
                user_agent: log.user_agent.as_ref().and_then(|v| v.to_str().ok()),
            });
        }
        // The slots first: once the session has left the list, its places are free.
        drop(held);
        drop(lease);
        drop(registration);
    }));
    Ok(answer)
}

/// What the session's access-log line needs from its handshake.
#[cfg_attr(
    not(feature = "otlp"),
    allow(dead_code, reason = "the span fields serve the otlp feature")
)]
struct SessionLog {
    request_id: HeaderValue,
    trace_id: u128,
    span_id: u64,
    parent_span_id: Option<u64>,
    span_name: String,
    /// When the handshake arrived, and when the 101 went out.
    began: SystemTime,
    upgraded: SystemTime,
    tracer: Option<Tracer>,
    path: String,
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

/// The session as one span from handshake to close, with both as events.
#[cfg(feature = "otlp")]
fn session_span(
    log: &SessionLog,
    session: &crate::proxy::Session,
    outcome: &super::relay::RelayOutcome,
) -> crate::telemetry::otlp::Span {
    use crate::telemetry::otlp::{Attr, Event, Span};
    let int = |n: u64| Attr::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let text = |s: &str| Attr::Text(s.to_owned());
    let info = &session.info;
    let mut attributes = vec![
        ("strait.environment", text(&info.env)),
        ("strait.proxy", text(&info.proxy)),
        (
            "strait.request_id",
            text(log.request_id.to_str().unwrap_or("-")),
        ),
        ("strait.session_id", int(session.id)),
        ("url.path", text(&log.path)),
        ("client.address", text(&info.client.ip().to_string())),
        (
            "websocket.messages.client_to_backend",
            int(outcome.client_to_backend.messages),
        ),
        (
            "websocket.messages.backend_to_client",
            int(outcome.backend_to_client.messages),
        ),
        (
            "websocket.bytes.client_to_backend",
            int(outcome.client_to_backend.bytes),
        ),
        (
            "websocket.bytes.backend_to_client",
            int(outcome.backend_to_client.bytes),
        ),
        (
            "websocket.close.initiator",
            text(outcome.initiator.as_str()),
        ),
    ];
    if let Some(close) = &outcome.close {
        attributes.push(("websocket.close.code", Attr::Int(i64::from(close.code))));
    }
    if let Some(consumer) = &info.consumer {
        attributes.push(("enduser.id", text(consumer)));
    }
    let mut closed = vec![(
        "websocket.close.initiator",
        text(outcome.initiator.as_str()),
    )];
    if let Some(close) = &outcome.close {
        closed.push(("websocket.close.code", Attr::Int(i64::from(close.code))));
        closed.push(("websocket.close.reason", text(&close.reason)));
    }
    let end = SystemTime::now();
    Span {
        trace_id: log.trace_id,
        span_id: log.span_id,
        parent_span_id: log.parent_span_id,
        name: log.span_name.clone(),
        start: log.began,
        end,
        attributes,
        events: vec![
            Event {
                name: "handshake",
                time: log.upgraded,
                attributes: vec![("http.response.status_code", Attr::Int(101))],
            },
            Event {
                name: "close",
                time: end,
                attributes: closed,
            },
        ],
        error: outcome.close.is_none() || outcome.initiator.as_str() == "gateway",
    }
}

/// A header's value as text, if present and visible ASCII.
fn text_header(headers: &http::HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn connect_error(proxy: &str, error: &UpstreamError) -> GatewayError {
    tracing::warn!(proxy, %error, "WebSocket backend could not be reached");
    let kind = match error {
        UpstreamError::ConnectTimeout { .. } => ErrorKind::GatewayTimeout,
        _ => ErrorKind::BadGateway,
    };
    GatewayError::new(
        kind,
        format!("the backend of API proxy \"{proxy}\" could not be reached: {error}"),
    )
}

fn bad_gateway(proxy: &str, error: &backend::AnswerError) -> GatewayError {
    tracing::warn!(proxy, %error, "WebSocket handshake with the backend failed");
    GatewayError::new(
        ErrorKind::BadGateway,
        format!(
            "the backend of API proxy \"{proxy}\" failed during the WebSocket handshake: {error}"
        ),
    )
}
