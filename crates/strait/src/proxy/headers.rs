//! Header rules shared by HTTP forwarding and WebSocket handshakes: the client's `Host`
//! (RFC 9112 §3.2), hop-by-hop removal (RFC 9110 §7.6.1) and the `X-Forwarded-*` family.

use std::net::IpAddr;

use http::Version;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use super::pipeline::ConnInfo;
use super::snapshot::Route;
use crate::error::{ErrorKind, GatewayError};
use crate::routing::{is_sub_delim, is_unreserved};

/// Room for the headers the gateway adds to a handshake's request on its way to the backend
/// (`X-Request-Id`, `traceparent`, `X-Forwarded-For`/`-Proto`/`-Host`, `Host`, `Connection`,
/// `Upgrade`): a map made with it never grows (a rehash of every header) on the way.
pub const ADDED_TO_REQUEST: usize = 8;

/// Removes the client's hop-by-hop headers (RFC 9110 §7.6.1) and those its `Connection`
/// names, before the gateway and its policies add their own: a client naming
/// `X-Request-Id` or a policy's `X-Consumer` in `Connection` names only its own copy away.
/// A handshake keeps `Connection` and `Upgrade`, which [`to_backend`] overwrites.
/// A body in a transfer coding other than `chunked` is refused with 501, as RFC 9112 §6.1
/// and nginx do: hyper decodes only the chunks.
pub fn from_client(headers: &mut HeaderMap, websocket: bool) -> Result<(), GatewayError> {
    // A handshake's are overwritten where the client put them: a removal shifts the map's
    // entries (~230 instructions each), and they would be added again at once.
    let kept = if websocket {
        &[header::CONNECTION, header::UPGRADE][..]
    } else {
        &[]
    };
    match strip(headers, kept) {
        None => Ok(()),
        Some(coding) => Err(GatewayError::new(
            ErrorKind::NotImplemented,
            format!(
                "the gateway does not forward a body in the transfer coding {coding:?}; send it with `Transfer-Encoding: chunked` alone"
            ),
        )),
    }
}

/// Turns the request headers, after [`from_client`] and the policies, into the backend's:
/// for a WebSocket handshake `Connection: Upgrade` and `Upgrade: websocket`, `X-Forwarded-*`
/// set, and `Host` set to the backend's authority (or kept with `preserve_host`).
/// `authority` is the request target's (HTTP/2's `:authority`, or an HTTP/1 absolute-form
/// target's), which names the host before `Host` does (RFC 9112 §3.2.2).
pub fn to_backend(
    headers: &mut HeaderMap,
    authority: Option<&http::uri::Authority>,
    conn: &ConnInfo,
    route: &Route,
    websocket: bool,
) -> Result<(), GatewayError> {
    let original_host = authority
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| headers.get(header::HOST).cloned());
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    set_forwarded(headers, conn, original_host.as_ref());
    let host = match original_host {
        Some(host) if route.preserve_host => host,
        _ => route.backend_host.clone().ok_or_else(|| {
            GatewayError::new(
                ErrorKind::BadGateway,
                format!("backend {} has no usable host", route.backend.as_str()),
            )
        })?,
    };
    headers.insert(header::HOST, host);
    Ok(())
}

/// The elements of a comma-separated list header (all its lines), trimmed; lines that are
/// not visible ASCII are skipped.
pub fn list_items(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers.get_all(name).into_iter().flat_map(value_items)
}

/// The elements of one line of a list header.
pub fn value_items(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Whether a list header (`Connection`, `Upgrade`) names `token`, in any case.
pub fn lists_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| value_lists(v, token))
}

/// Whether one line of a list header names `token`, in any case.
pub fn value_lists(value: &HeaderValue, token: &str) -> bool {
    // Most senders put the one token alone: no split then.
    value.as_bytes().eq_ignore_ascii_case(token.as_bytes())
        || value_items(value).any(|item| item.eq_ignore_ascii_case(token))
}

/// The `Host` rules of RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`, an
/// HTTP/1.0 request at most one, and its value is a host with an optional port. Two hosts,
/// or one that is not a host, could name one site to the gateway and another to a backend.
/// The request target's `authority` (an absolute-form target's, HTTP/2's `:authority`),
/// which names the host before `Host` does, must be a host with an optional port too: `http`
/// admits user information there (`user:pw@host`), which no backend should get as a host.
pub fn check_host(
    version: Version,
    authority: Option<&http::uri::Authority>,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    if authority.is_some_and(|a| !is_host(a.as_str().as_bytes())) {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "the request target's authority is not a host name or address with an optional port",
        ));
    }
    if version > Version::HTTP_11 {
        return Ok(());
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let problem = match (hosts.next(), hosts.count()) {
        (None, _) if version == Version::HTTP_11 => {
            "an HTTP/1.1 request must carry a Host header".to_owned()
        }
        (None, _) => return Ok(()),
        (Some(_), 1..) => format!(
            "the request carries {} Host headers; HTTP allows one",
            headers.get_all(header::HOST).iter().count()
        ),
        (Some(host), 0) if !is_host(host.as_bytes()) => {
            "the Host header is not a host name or address with an optional port".to_owned()
        }
        (Some(_), 0) => return Ok(()),
    };
    Err(GatewayError::new(ErrorKind::BadRequest, problem))
}

/// Whether `value` is `host[:port]` (RFC 3986: a registered name, an IPv4 address or a
/// bracketed IPv6 literal), without user information or percent-encoding (which `http`'s
/// `Authority` refuses in a host, so a backend request could not carry it).
fn is_host(value: &[u8]) -> bool {
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(literal) => {
            let Some(end) = literal.iter().position(|&b| b == b']') else {
                return false;
            };
            let (inside, after) = literal.split_at(end);
            let ok = !inside.is_empty()
                && inside
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            (ok, after.get(1..).unwrap_or_default())
        }
        None => {
            let (host, port) = match value.iter().position(|&b| b == b':') {
                Some(colon) => value.split_at(colon),
                None => (value, &b""[..]),
            };
            let ok = !host.is_empty()
                && host
                    .iter()
                    .all(|&b| NAME_BYTE.get(usize::from(b)) == Some(&true));
            (ok, port)
        }
    };
    let port_ok = match port.strip_prefix(b":") {
        Some(digits) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        None => port.is_empty(),
    };
    host_ok && port_ok
}

/// The bytes of a registered name (RFC 3986 `unreserved` and `sub-delims`), by value: one
/// load per byte of every request's `Host` instead of a search of the punctuation.
#[allow(clippy::indexing_slicing, reason = "built at compile time, below 256")]
static NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_unreserved(b as u8) || is_sub_delim(b as u8);
        b += 1;
    }
    table
};

/// Hop-by-hop headers (RFC 9110 §7.6.1, and the legacy `Keep-Alive` and `Proxy-Connection`).
const HOPS: usize = 8;
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The lengths of the hop-by-hop names (2, 7, 10, 16, 17, 19) as a bit set.
const HOP_LENGTHS: u32 = 1 << 2 | 1 << 7 | 1 << 10 | 1 << 16 | 1 << 17 | 1 << 19;

/// Whether `name` may be hop-by-hop: most names have another length and are passed over
/// without a comparison (eight per header were ~1.5 % of a proxied request's instructions).
fn maybe_hop(name: &HeaderName) -> bool {
    let len = name.as_str().len();
    len < 32 && HOP_LENGTHS & (1 << len) != 0
}

/// Removes hop-by-hop headers and every header named in `Connection` (and `Content-Length`
/// beside `Transfer-Encoding`); `Some` with a transfer coding other than `chunked` the
/// message was in, which hyper did not decode (see [`strip`]).
#[must_use]
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<String> {
    strip(headers, &[])
}

/// The same, leaving the hop-by-hop headers named in `kept` for the caller to overwrite;
/// `Some` with a transfer coding other than `chunked` it removed (`gzip` of `gzip, chunked`),
/// which hyper did not decode: its bytes would go on as if they were the body.
fn strip(headers: &mut HeaderMap, kept: &[HeaderName]) -> Option<String> {
    // One pass over the names finds the hop-by-hop ones present; most messages carry none,
    // and a WebSocket handshake two (`Connection`, `Upgrade`, which `to_backend` then
    // overwrites): only those are removed.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if maybe_hop(name)
            && let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name)
            && let Some(slot) = present.get_mut(i)
        {
            *slot = true;
        }
    }
    if !present.contains(&true) {
        return None;
    }
    // A message framed by `Transfer-Encoding` loses its `Content-Length` too: the encoding
    // decides the length (RFC 9112 §6.3), and a length that does not hold would reach the
    // next hop once the encoding is gone.
    let mut other_coding = None;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
        other_coding = list_items(headers, header::TRANSFER_ENCODING)
            .find(|coding| !coding.eq_ignore_ascii_case("chunked"))
            .map(str::to_owned);
    }
    // Headers `Connection` names besides those (none without `Connection`).
    let named: Vec<HeaderName> = list_items(headers, header::CONNECTION)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .filter(|name| !HOP_BY_HOP.contains(name))
        .collect();
    for (hop, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        if !kept.contains(hop) {
            headers.remove(hop);
        }
    }
    for name in &named {
        headers.remove(name);
    }
    other_coding
}

/// An HTTP/1 head: the start line (in pieces), each header on its line, the empty line. The
/// `http` types admit no CR or LF in a path or a value, so nothing here can split the head.
pub fn http1_head(start_line: &[&[u8]], headers: &HeaderMap) -> Vec<u8> {
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>();
    let start = start_line.iter().map(|piece| piece.len()).sum::<usize>();
    let mut head = Vec::with_capacity(start + size + 4);
    for piece in start_line {
        head.extend_from_slice(piece);
    }
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// `ip` as header text (`X-Forwarded-For`). IPv4, what most clients are, is written by
/// hand: `Display` costs a connection ~1.3k instructions through the formatting machinery.
pub fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut text = Vec::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        if octet >= 100 {
            text.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            text.push(b'0' + octet / 10 % 10);
        }
        text.push(b'0' + octet % 10);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
}

/// Appends the client to `X-Forwarded-For`, sets `X-Forwarded-Proto` (as the client
/// connected) and `X-Forwarded-Host` (the host the client asked for).
fn set_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, original_host: Option<&HeaderValue>) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    // One lookup for both the client's value and the gateway's.
    match headers.entry(XFF) {
        // The connection's address, formatted once when it was accepted.
        Entry::Vacant(vacant) => {
            if let Some(value) = &conn.client_ip {
                vacant.insert(value.clone());
            }
        }
        Entry::Occupied(mut occupied) => {
            let earlier: Vec<&str> = occupied.iter().filter_map(|v| v.to_str().ok()).collect();
            let client_ip = conn.client.ip().to_string();
            let joined = match earlier.is_empty() {
                true => client_ip,
                false => format!("{}, {client_ip}", earlier.join(", ")),
            };
            if let Ok(value) = HeaderValue::from_str(&joined) {
                occupied.insert(value);
            }
        }
    }
    headers.insert(
        XFP,
        HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
    );
    match original_host {
        Some(host) => {
            headers.insert(XFH, host.clone());
        }
        None => {
            headers.remove(XFH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes: no panic, and what passes is an authority `http` accepts too.
        #[test]
        fn a_host_that_passes_is_an_authority(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if is_host(&bytes) {
                prop_assert!(http::uri::Authority::try_from(bytes.as_slice()).is_ok(), "{:?}", bytes);
            }
        }
    }

    /// Every value of one or two bytes, so no character the host check lets through can be
    /// missed by chance.
    #[test]
    fn every_short_host_that_passes_is_an_authority() {
        let pairs = (0..=u8::MAX).flat_map(|a| (0..=u8::MAX).map(move |b| vec![a, b]));
        for bytes in (0..=u8::MAX).map(|a| vec![a]).chain(pairs) {
            if is_host(&bytes) {
                assert!(
                    http::uri::Authority::try_from(bytes.as_slice()).is_ok(),
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn hosts_are_names_or_addresses_with_an_optional_port() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "[2001:db8::ffff:10.0.0.1]:1",
            "xn--bcher-kva.example",
            "a_b-c~d",
        ] {
            assert!(is_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "a b",
            "user@example.com",
            "example.com:80:80",
            "example.com:port",
            "example.com:123456",
            "example.com/path",
            "[::1",
            "[]",
            "[::1]x",
            "[::g]",
            "exa\\mple",
            "\u{7f}",
            "%",
            "ex%41mple.com",
        ] {
            assert!(!is_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn a_request_carries_one_valid_host_as_its_version_asks() {
        let with = |hosts: &[&str]| {
            let mut headers = HeaderMap::new();
            for host in hosts {
                headers.append(header::HOST, HeaderValue::from_str(host).unwrap());
            }
            headers
        };
        let check = |version, hosts: &[&str]| check_host(version, None, &with(hosts));
        assert!(check(Version::HTTP_11, &["a.example"]).is_ok());
        assert!(check(Version::HTTP_10, &[]).is_ok());
        assert!(check(Version::HTTP_2, &[]).is_ok());
        let authority = |a: &'static str| http::uri::Authority::from_static(a);
        for (good, a) in [
            (true, "a.example:8080"),
            (true, "[::1]:80"),
            (false, "user:pw@evil"),
            (false, "u@a.example"),
        ] {
            for version in [Version::HTTP_11, Version::HTTP_2] {
                let result = check_host(version, Some(&authority(a)), &with(&["a.example"]));
                assert_eq!(result.is_ok(), good, "{a} over {version:?}: {result:?}");
            }
        }
        for (version, hosts, says) in [
            (Version::HTTP_11, &[][..], "must carry a Host header"),
            (Version::HTTP_11, &["a", "b"][..], "carries 2 Host headers"),
            (
                Version::HTTP_10,
                &["a", "a", "a"][..],
                "carries 3 Host headers",
            ),
            (Version::HTTP_11, &["a b"][..], "not a host name"),
            (Version::HTTP_10, &["u@a"][..], "not a host name"),
        ] {
            let error = check(version, hosts).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest);
            assert!(error.message.contains(says), "{hosts:?}: {}", error.message);
        }
    }

    #[test]
    fn ip_text_is_what_display_writes() {
        let v4 = [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 255];
        for a in v4 {
            for b in v4 {
                let ip = IpAddr::from([a, b, 255 - a, 9]);
                assert_eq!(ip_value(ip).unwrap(), ip.to_string().as_str());
            }
        }
        for ip in ["::1", "fe80::1:2", "::ffff:10.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip).unwrap(), ip.to_string().as_str());
        }
    }

    #[test]
    fn strips_standard_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        let before = headers.clone();
        let _ = strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-kept"], "yes");
        // A handshake's `Connection` and `Upgrade` stay for the caller to overwrite; what
        // `Connection` names goes all the same.
        let mut headers = before;
        strip(&mut headers, &[header::CONNECTION, header::UPGRADE]);
        let mut left: Vec<_> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["connection", "upgrade", "x-kept"]);

        for hop in &HOP_BY_HOP {
            assert!(maybe_hop(hop), "{hop}: its length is in HOP_LENGTHS");
            let mut headers = HeaderMap::new();
            headers.insert(hop, HeaderValue::from_static("x"));
            headers.insert("x-kept", HeaderValue::from_static("yes"));
            let _ = strip_hop_by_hop(&mut headers);
            assert_eq!(headers.len(), 1, "{hop}");
        }
        let mut untouched = HeaderMap::new();
        untouched.insert("x-kept", HeaderValue::from_static("yes"));
        let _ = strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched.len(), 1);
    }
}
