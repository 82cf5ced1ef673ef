//! Request ids and W3C trace context (<https://www.w3.org/TR/trace-context/>).
//!
//! A client's `X-Request-Id` is kept when it is reasonable (1 to 128 visible ASCII
//! characters), otherwise one is generated. A valid `traceparent` continues its trace with
//! a new span id for the gateway's hop; otherwise a new sampled trace starts. `tracestate`
//! is forwarded as it came.
//!
//! Both values are marked sensitive: HTTP/2 (HPACK) then sends them as never-indexed
//! literals. A value that differs on every request would only fill each side's header
//! table, and finding a place for it there cost the encoder ~4k instructions per response
//! (it compared the new id with every id the table held).

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Longest client-supplied request id kept.
const MAX_REQUEST_ID: usize = 128;

/// The identity of one request through the gateway, made once by
/// [`TraceContext::from_request`] (its `traceparent` is written from the ids then).
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub request_id: HeaderValue,
    pub trace_id: u128,
    /// The gateway's own span for this request.
    pub span_id: u64,
    /// The caller's span, when the request arrived with a trace.
    pub parent_span_id: Option<u64>,
    pub flags: u8,
    /// This trace with the gateway's span as parent, as the backend receives it: made with
    /// the request id, moved into the backend's request by [`TraceContext::to_backend`].
    traceparent: Option<HeaderValue>,
}

/// Digits of a request id the gateway makes.
const ID_LEN: usize = 32;
/// `00-{trace:032x}-{span:016x}-{flags:02x}`.
const TRACEPARENT_LEN: usize = 55;

impl TraceContext {
    /// Reads the client's request id and trace context, or starts new ones.
    pub fn from_request(headers: &HeaderMap) -> TraceContext {
        let kept = headers
            .get(&X_REQUEST_ID)
            .filter(|v| valid_request_id(v.as_bytes()));
        let parent = headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let span_id = nonzero_u64();
        let (trace_id, parent_span_id, flags) = match parent {
            Some((trace_id, parent_span_id, flags)) => (trace_id, Some(parent_span_id), flags),
            None => (
                u128::from(nonzero_u64()) << 64 | u128::from(random_u64()),
                None,
                1,
            ),
        };
        let (request_id, traceparent) = ids(kept, trace_id, span_id, flags);
        TraceContext {
            request_id,
            trace_id,
            span_id,
            parent_span_id,
            flags,
            traceparent: Some(traceparent),
        }
    }

    /// The id as text, for logs.
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    /// The `traceparent` the backend receives: this trace, the gateway's span as parent.
    pub fn traceparent(&self) -> HeaderValue {
        self.traceparent.clone().unwrap_or_else(|| {
            let mut text = [0; TRACEPARENT_LEN];
            put_traceparent(&mut text, self.trace_id, self.span_id, self.flags);
            let mut value =
                HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"));
            value.set_sensitive(true);
            value
        })
    }

    /// Sets `X-Request-Id` and `traceparent` on a request to the backend. The first call
    /// moves the `traceparent` made with the request id there (a clone and a drop saved,
    /// each an atomic reference count); a later one makes it again.
    pub fn to_backend(&mut self, headers: &mut HeaderMap) {
        headers.insert(X_REQUEST_ID.clone(), self.request_id.clone());
        let traceparent = match self.traceparent.take() {
            Some(made) => made,
            None => self.traceparent(),
        };
        headers.insert(TRACEPARENT.clone(), traceparent);
    }
}

/// The request id (the client's `kept` one, or a new one) and the `traceparent`, both
/// marked sensitive. Written without `format!`, into one buffer that a new id, the
/// `traceparent` and their clones share: one allocation per request instead of three (a
/// copied value is copied again into a shared one at its first clone).
fn ids(
    kept: Option<&HeaderValue>,
    trace_id: u128,
    span_id: u64,
    flags: u8,
) -> (HeaderValue, HeaderValue) {
    let mut text = [b'-'; ID_LEN + TRACEPARENT_LEN];
    let (id, parent) = text.split_at_mut(ID_LEN);
    if kept.is_none() {
        put_hex(
            id,
            u128::from(random_u64()) << 64 | u128::from(random_u64()),
        );
    }
    put_traceparent(parent, trace_id, span_id, flags);
    let text = Bytes::from_owner(text);
    // Only hex digits and dashes: always valid header values.
    let value = |range| {
        let mut value = HeaderValue::from_maybe_shared(text.slice(range))
            .unwrap_or_else(|_| HeaderValue::from_static("-"));
        value.set_sensitive(true);
        value
    };
    let request_id = match kept {
        Some(kept) => {
            let mut kept = kept.clone();
            kept.set_sensitive(true);
            kept
        }
        None => value(0..ID_LEN),
    };
    (request_id, value(ID_LEN..ID_LEN + TRACEPARENT_LEN))
}

/// `00-{trace:032x}-{span:016x}-{flags:02x}` into `out`, [`TRACEPARENT_LEN`] bytes long.
fn put_traceparent(out: &mut [u8], trace_id: u128, span_id: u64, flags: u8) {
    out.fill(b'-');
    let (version, rest) = out.split_at_mut(3);
    version.copy_from_slice(b"00-");
    let (trace, rest) = rest.split_at_mut(32);
    put_hex(trace, trace_id);
    let (span, rest) = rest.split_at_mut(1).1.split_at_mut(16);
    put_hex(span, u128::from(span_id));
    put_hex(rest.split_at_mut(1).1, u128::from(flags));
}

/// A trace id as 32 lowercase hex digits, for logs.
pub fn trace_id_hex(id: u128) -> [u8; 32] {
    let mut text = [b'0'; 32];
    put_hex(&mut text, id);
    text
}

fn valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// `version-traceid-parentid-flags`, version 00 (or a later version's first four fields, as
/// the spec asks). All-zero ids are invalid.
fn parse_traceparent(text: &str) -> Option<(u128, u64, u8)> {
    let text = text.trim();
    let mut parts = text.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2)
    {
        return None;
    }
    if version == "00" && rest.is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
    let parent_id = u64::from_str_radix(parent, 16).ok().filter(|id| *id != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, parent_id, flags))
}

/// Writes the low `out.len()` (at most 32) hex digits of `value`, lowercase, most significant
/// first. By 64-bit halves (shifting a `u128` costs more) and two digits per table load:
/// a digit at a time was ~450 instructions per proxied request (82 digits of ids).
#[allow(
    clippy::indexing_slicing,
    reason = "indexes are a byte or a nibble into tables of 256 and 16"
)]
fn put_hex(out: &mut [u8], value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    static PAIRS: [[u8; 2]; 256] = {
        let mut pairs = [[0; 2]; 256];
        let mut byte = 0;
        while byte < 256 {
            pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
            byte += 1;
        }
        pairs
    };
    let halves = [value as u64, (value >> 64) as u64];
    for (chunk, mut rest) in out.rchunks_mut(16).zip(halves) {
        let mut pairs = chunk.rchunks_exact_mut(2);
        for pair in &mut pairs {
            // The low eight bits: always a valid index.
            pair.copy_from_slice(&PAIRS[(rest & 0xff) as usize]);
            rest >>= 8;
        }
        if let [digit] = pairs.into_remainder() {
            *digit = DIGITS[(rest & 0xf) as usize];
        }
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
}

/// A fast per-thread pseudo-random number (splitmix64), seeded from the OS via `RandomState`.
/// Ids need to be unique and unguessable enough for correlation, not secret.
pub fn random_u64() -> u64 {
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

fn nonzero_u64() -> u64 {
    random_u64().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_clients_trace_continues_with_a_new_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::from_request(&headers(&[("traceparent", incoming)]));
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.parent_span_id, Some(0x00f067aa0ba902b7));
        let out = ctx.traceparent();
        let out = out.to_str().unwrap();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert_ne!(&out[36..52], "00f067aa0ba902b7", "the gateway's own span");
        assert_eq!(parse_traceparent(out).map(|t| t.0), Some(ctx.trace_id));
    }

    #[test]
    fn invalid_trace_context_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let ctx = TraceContext::from_request(&headers(&[("traceparent", bad)]));
            assert_eq!(ctx.parent_span_id, None, "{bad}");
            assert_ne!(ctx.trace_id, 0);
            let out = ctx.traceparent();
            assert!(parse_traceparent(out.to_str().unwrap()).is_some());
        }
        // A later version may carry more fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(parse_traceparent(later).is_some());
    }

    #[test]
    fn hex_matches_format() {
        for (trace_id, span_id, flags) in [
            (1u128, 1u64, 0u8),
            (u128::MAX, u64::MAX, 0xff),
            (0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1),
        ] {
            let (id, traceparent) = ids(None, trace_id, span_id, flags);
            let expected = format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}");
            assert_eq!(traceparent.to_str().unwrap(), expected);
            let id = id.to_str().unwrap();
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_eq!(
                trace_id_hex(trace_id),
                format!("{trace_id:032x}").as_bytes()
            );
        }
        // Odd lengths too, and every byte value.
        for value in [0u128, 0x0123_4567_89ab_cdef, u128::MAX, 0xfedc_ba98 << 70] {
            for len in 1..=32 {
                let mut out = vec![b'?'; len];
                put_hex(&mut out, value);
                let all = format!("{value:032x}");
                assert_eq!(out, all.as_bytes()[32 - len..], "{value:x} in {len}");
            }
        }
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let kept = TraceContext::from_request(&headers(&[("x-request-id", "abc-123")]));
        assert_eq!(kept.request_id(), "abc-123");
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        for bad in ["", "has space", long.as_str()] {
            let made = TraceContext::from_request(&headers(&[("x-request-id", bad)]));
            assert_ne!(made.request_id(), bad);
            assert_eq!(made.request_id().len(), 32);
        }
        let a = TraceContext::from_request(&HeaderMap::new());
        let b = TraceContext::from_request(&HeaderMap::new());
        assert_ne!(a.request_id(), b.request_id());
        assert_ne!(a.trace_id, b.trace_id);
    }

    #[test]
    fn every_request_to_the_backend_gets_the_same_trace_context() {
        let mut trace = TraceContext::from_request(&HeaderMap::new());
        let (mut first, mut again) = (HeaderMap::new(), HeaderMap::new());
        trace.to_backend(&mut first);
        trace.to_backend(&mut again);
        for header in [&TRACEPARENT, &X_REQUEST_ID] {
            assert_eq!(first.get(header), again.get(header), "{header}");
        }
        let made = again.get(&TRACEPARENT).unwrap();
        assert!(made.is_sensitive());
        assert_eq!(trace.traceparent(), made);
        let parsed = parse_traceparent(made.to_str().unwrap());
        assert_eq!(parsed, Some((trace.trace_id, trace.span_id, trace.flags)));
    }

    #[test]
    fn ids_are_marked_for_hpack_never_to_index() {
        // h2 sends a sensitive value as a never-indexed literal, outside its header table.
        let kept = TraceContext::from_request(&headers(&[("x-request-id", "abc-123")]));
        let made = TraceContext::from_request(&HeaderMap::new());
        for trace in [kept, made] {
            assert!(trace.request_id.is_sensitive());
            assert!(trace.request_id.clone().is_sensitive(), "kept by clones");
            assert!(trace.traceparent().is_sensitive());
        }
    }
}
