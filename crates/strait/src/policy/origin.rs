//! `origin`: an allow-list of `Origin` values, against cross-site WebSocket hijacking (a
//! browser sends a page's cookies with any site's WebSocket handshake; only `Origin` says
//! which site opened it). A WebSocket handshake without `Origin`, or with one not listed,
//! gets 403. A plain HTTP request is judged the same when it carries `Origin` (a browser
//! sent it); without one it passes, as non-browser clients send none.
//!
//! Origins compare as RFC 6454 serialises them: scheme and host lower-cased, the scheme's
//! default port left out (`HTTPS://App.Example.com:443` is `https://app.example.com`),
//! nothing else. `*` and `null` cannot be listed: the first is no policy at all, the second
//! is what any sandboxed or `file:` page sends.

use std::sync::Arc;

use http::header::{self, HeaderMap};
use http::uri::Authority;

use super::{Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};
use crate::error::{ErrorKind, GatewayError};

pub const KIND: Kind = Kind {
    name: "origin",
    phase: Phase::Access,
    doc: "Allows WebSocket handshakes (and HTTP requests that carry `Origin`) only from these origins (403); a handshake without `Origin` is refused.",
    fields: &[Field {
        name: "allow",
        shape: Shape::Texts,
        doc: "The origins that may connect, such as `https://app.example.com` (scheme, host and port only).",
    }],
    parse,
};

/// Why an origin was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum OriginError {
    #[error(
        "\"*\" would allow every origin, which is no check at all; remove the origin policy instead"
    )]
    Wildcard,
    #[error(
        "\"null\" is what any sandboxed or file: page sends, so it cannot be trusted; list the real origins"
    )]
    Null,
    #[error(
        "{0:?} is not an origin: write scheme://host or scheme://host:port, such as https://app.example.com, with no path"
    )]
    Malformed(String),
}

/// `text` as RFC 6454 serialises an origin, or why it is not one.
pub(super) fn serialise(text: &str) -> Result<String, OriginError> {
    let malformed = || OriginError::Malformed(text.to_owned());
    match text {
        "*" => return Err(OriginError::Wildcard),
        _ if text.eq_ignore_ascii_case("null") => return Err(OriginError::Null),
        _ => {}
    }
    let (scheme, authority) = text.split_once("://").ok_or_else(malformed)?;
    let mut scheme_bytes = scheme.bytes();
    let scheme_ok = scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    // An authority without user information, path, query or fragment.
    if !scheme_ok || authority.is_empty() || authority.bytes().any(|b| b"/?#@".contains(&b)) {
        return Err(malformed());
    }
    let authority: Authority = authority.parse().map_err(|_| malformed())?;
    let host = authority.host();
    if host.is_empty() {
        return Err(malformed());
    }
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    // What follows the host: nothing, `:` (the default port, RFC 3986 allows it) or `:port`.
    let port = match authority.as_str().get(host.len()..) {
        Some("" | ":") => None,
        Some(rest) => {
            let digits = rest.strip_prefix(':').ok_or_else(malformed)?;
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            Some(digits.parse::<u16>().map_err(|_| malformed())?)
        }
        None => return Err(malformed()),
    };
    let mut origin = format!("{scheme}://{}", host.to_ascii_lowercase());
    if let Some(port) = port
        && Some(port) != default_port
    {
        origin.push_str(&format!(":{port}"));
    }
    Ok(origin)
}

#[derive(Debug)]
struct Origin {
    /// Serialised.
    allow: Vec<String>,
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let Some(written) = fields.texts("allow")? else {
        return Err(fields.problem(
            "allow",
            "needs allow, the origins that may connect, such as allow: [\"https://app.example.com\"]"
                .to_owned(),
        ));
    };
    if written.is_empty() {
        return Err(fields.problem(
            "allow",
            "allow is an empty list; name at least one origin".to_owned(),
        ));
    }
    let mut allow = Vec::with_capacity(written.len());
    let mut failed = None;
    for text in &written {
        match serialise(text.trim()) {
            Ok(origin) => allow.push(origin),
            Err(error) => failed = Some(fields.problem("allow", error.to_string())),
        }
    }
    if let Some(reported) = failed {
        return Err(reported);
    }
    Ok(Arc::new(Origin { allow }))
}

/// What the request says about its origin.
enum Sent<'h> {
    None,
    One(&'h str),
    /// Several `Origin` headers, or one that is not text: nothing to trust.
    Unusable,
}

fn sent(headers: &HeaderMap) -> Sent<'_> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    match (values.next(), values.next()) {
        (None, _) => Sent::None,
        (Some(value), None) => value.to_str().map_or(Sent::Unusable, Sent::One),
        (Some(_), Some(_)) => Sent::Unusable,
    }
}

impl Policy for Origin {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        let message = match sent(head.headers) {
            Sent::None if !head.websocket => return Verdict::Pass,
            Sent::None => "a WebSocket handshake on this API proxy must carry an Origin header",
            Sent::One(value)
                if serialise(value.trim()).is_ok_and(|origin| self.allow.contains(&origin)) =>
            {
                return Verdict::Pass;
            }
            Sent::One(_) | Sent::Unusable => {
                "the request's Origin is not allowed on this API proxy"
            }
        };
        Verdict::Refuse(GatewayError::new(ErrorKind::Forbidden, message))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Chain;
    use super::super::tests::{Given, directory, policy};
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    #[test]
    fn origins_are_serialised_as_rfc_6454_says() {
        for (written, expected) in [
            ("https://app.example.com", "https://app.example.com"),
            ("HTTPS://App.Example.COM", "https://app.example.com"),
            ("https://app.example.com:443", "https://app.example.com"),
            ("http://app.example.com:80", "http://app.example.com"),
            ("http://app.example.com:443", "http://app.example.com:443"),
            (
                "https://app.example.com:8443",
                "https://app.example.com:8443",
            ),
            ("https://app.example.com:", "https://app.example.com"),
            ("http://[2001:DB8::1]:8080", "http://[2001:db8::1]:8080"),
            ("http://127.0.0.1", "http://127.0.0.1"),
            ("chrome-extension://abcdef", "chrome-extension://abcdef"),
        ] {
            assert_eq!(serialise(written).as_deref(), Ok(expected), "{written}");
        }
        assert_eq!(serialise("*"), Err(OriginError::Wildcard));
        assert_eq!(serialise("null"), Err(OriginError::Null));
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://app.example.com?x",
            "https://user@app.example.com",
            "https://",
            "https://:443",
            "https://app.example.com:99999",
            "https://app.example.com:x",
            "1http://a",
            "://a",
        ] {
            assert!(
                matches!(serialise(bad), Err(OriginError::Malformed(_))),
                "{bad}: {:?}",
                serialise(bad)
            );
        }
    }

    #[test]
    fn bad_lists_are_problems() {
        for (values, needle) in [
            (vec![], "needs allow"),
            (vec![("allow", json!([]))], "empty"),
            (vec![("allow", json!(["*"]))], "remove the origin policy"),
            (
                vec![("allow", json!(["https://a.example", "null"]))],
                "null",
            ),
            (
                vec![("allow", json!(["https://a.example/x"]))],
                "https://a.example/x",
            ),
        ] {
            let mut given = Given::new(&values);
            assert!((KIND.parse)(&mut given).is_err(), "{values:?}");
            assert_eq!(given.problems.len(), 1, "{:?}", given.problems);
            assert!(
                given.problems[0].starts_with("allow") && given.problems[0].contains(needle),
                "{:?}",
                given.problems
            );
        }
    }

    async fn judge(websocket: bool, origins: &[&str]) -> Result<(), String> {
        let chain = Chain::new(
            [&policy(
                "origin",
                &[(
                    "allow",
                    json!(["https://App.example.com", "http://localhost:3000"]),
                )],
            )],
            directory(),
        );
        let mut headers = HeaderMap::new();
        for origin in origins {
            headers.append(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        let mut target = "http://b/".parse().unwrap();
        let client = "127.0.0.1:1".parse().unwrap();
        chain
            .run(&mut headers, &mut target, client, websocket)
            .await
            .map(|_| ())
            .map_err(|error| {
                assert_eq!(error.kind, ErrorKind::Forbidden);
                error.message
            })
    }

    #[tokio::test]
    async fn listed_origins_pass_on_both_protocols() {
        for websocket in [false, true] {
            for origin in [
                "https://app.example.com",
                "HTTPS://APP.EXAMPLE.COM:443",
                "http://localhost:3000",
            ] {
                assert_eq!(judge(websocket, &[origin]).await, Ok(()), "{origin}");
            }
            for origin in [
                "https://evil.example.com",
                "http://app.example.com",
                "https://app.example.com:8443",
                "https://app.example.com.evil.example",
                "http://localhost:3001",
                "null",
                "https://app.example.com/",
            ] {
                assert!(judge(websocket, &[origin]).await.is_err(), "{origin}");
            }
            assert!(
                judge(
                    websocket,
                    &["https://app.example.com", "https://evil.example"]
                )
                .await
                .is_err(),
                "two Origin headers"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_origin_is_refused_only_on_a_handshake() {
        assert_eq!(judge(false, &[]).await, Ok(()));
        let refused = judge(true, &[]).await.unwrap_err();
        assert!(refused.contains("must carry an Origin"), "{refused}");
    }
}
