//! `api_key`: a consumer's API key, from a header (default `X-API-Key`) or, when `query` is
//! set, a query parameter (browsers cannot set headers on a WebSocket handshake). The header
//! wins when both are present. On success the key is removed before forwarding — the header,
//! and the parameter from the target's query with every other parameter kept byte for byte —
//! unless `keep: true`.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};

use super::consumers::KeyDigest;
use super::{Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};

pub const KIND: Kind = Kind {
    name: "api_key",
    phase: Phase::Authentication,
    doc: "A consumer's API key, from a header or a query parameter; removed before forwarding unless `keep`.",
    fields: &[
        Field {
            name: "header",
            shape: Shape::Text,
            doc: "The header carrying the key (default `X-API-Key`).",
        },
        Field {
            name: "query",
            shape: Shape::Text,
            doc: "A query parameter that may carry the key instead (off unless set; for browsers' WebSocket handshakes).",
        },
        Field {
            name: "keep",
            shape: Shape::Flag,
            doc: "Forward the key to the backend (default false: it is removed).",
        },
    ],
    parse,
};

const DEFAULT_HEADER: &str = "X-API-Key";

#[derive(Debug)]
struct ApiKey {
    header: HeaderName,
    query: Option<String>,
    keep: bool,
    challenge: HeaderValue,
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let header = fields.text("header");
    let query = fields.text("query");
    let keep = fields.flag("keep");
    let written = header?.unwrap_or_else(|| DEFAULT_HEADER.to_owned());
    let name = HeaderName::from_bytes(written.as_bytes()).map_err(|_| {
        fields.problem(
            "header",
            format!("header {written:?} is not a header name (letters, digits and - only)"),
        )
    })?;
    let query = query?;
    if let Some(param) = &query
        && param
            .bytes()
            .any(|b| b"&=#?+% ".contains(&b) || !b.is_ascii_graphic())
    {
        return Err(fields.problem(
            "query",
            format!(
                "query {param:?} is not a plain parameter name (no &, =, #, ?, +, % or spaces)"
            ),
        ));
    }
    let mut challenge = format!("ApiKey header=\"{written}\"");
    if let Some(param) = &query {
        challenge.push_str(&format!(", query=\"{param}\""));
    }
    let challenge = HeaderValue::from_str(&challenge)
        .map_err(|_| fields.problem("header", format!("header {written:?} cannot be sent")))?;
    Ok(Arc::new(ApiKey {
        header: name,
        query,
        keep: keep?.unwrap_or(false),
        challenge,
    }))
}

impl Policy for ApiKey {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        let presented = match head.headers.get(&self.header) {
            Some(value) => Some(KeyDigest::of(value.as_bytes())),
            None => self
                .query
                .as_deref()
                .and_then(|param| query_value(head.target.query()?, param))
                .map(|key| KeyDigest::of(key.as_bytes())),
        };
        match presented.and_then(|digest| head.consumers.by_api_key(&digest)) {
            Some(identity) => Verdict::Admit(identity.clone()),
            None => Verdict::Unauthenticated,
        }
    }

    fn admitted(&self, head: &mut Head<'_>) {
        if self.keep {
            return;
        }
        head.headers.remove(&self.header);
        if let Some(param) = &self.query {
            remove_param(head.target, param);
        }
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn secret_param(&self) -> Option<&str> {
        self.query.as_deref()
    }
}

/// The decoded value of the first parameter named `name` (names compared decoded too).
/// Decoding is a form's: `%XX` and `+` for a space. `None` when absent or badly encoded.
pub(super) fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key)?.as_ref() == name).then(|| form_decode(value))?
    })
}

/// `query` without every parameter named `name`, the others byte for byte in their order;
/// `None` when no parameter had that name.
/// Removes the query parameter `name` from `target`, the other parameters byte for byte.
pub(super) fn remove_param(target: &mut Uri, name: &str) {
    let Some(rest) = target.query().and_then(|query| without_param(query, name)) else {
        return;
    };
    let path = target.path();
    let pq = if rest.is_empty() {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("{path}?{rest}"))
    };
    let Ok(pq) = PathAndQuery::try_from(pq.as_ref()) else {
        return;
    };
    let mut parts = target.clone().into_parts();
    parts.path_and_query = Some(pq);
    if let Ok(uri) = Uri::from_parts(parts) {
        *target = uri;
    }
}

pub(super) fn without_param(query: &str, name: &str) -> Option<String> {
    let named = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        form_decode(key).is_some_and(|key| key == name)
    };
    if !query.split('&').any(named) {
        return None;
    }
    Some(
        query
            .split('&')
            .filter(|pair| !named(pair))
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// The text masking secret parameters' values.
const MASK: &str = "REDACTED";

/// `uri` with the value of every query parameter named in `secret` replaced by `REDACTED`.
pub(super) fn mask_params<'u>(uri: &'u str, secret: &[String]) -> Cow<'u, str> {
    // Most chains name no parameter to mask: the query is not even looked for (this runs
    // for every access-log line).
    if secret.is_empty() {
        return Cow::Borrowed(uri);
    }
    let Some((before, query)) = uri.split_once('?') else {
        return Cow::Borrowed(uri);
    };
    let is_secret = |pair: &str| {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        form_decode(key).is_some_and(|key| secret.iter().any(|s| **s == *key))
    };
    if !query.split('&').any(is_secret) {
        return Cow::Borrowed(uri);
    }
    let masked: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret(pair) => Cow::Owned(format!("{key}={MASK}")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(format!("{before}?{}", masked.join("&")))
}

/// Form decoding: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn form_decode(text: &str) -> Option<Cow<'_, str>> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let high = char::from(bytes.next()?).to_digit(16)?;
                let low = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(high << 4 | low).ok()?);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Given, directory, policy, run};
    use super::super::{Chain, UNAUTHORIZED_MESSAGE};
    use super::*;
    use serde_json::json;

    #[test]
    fn query_values_are_form_decoded() {
        assert_eq!(
            query_value("a=1&api_key=k%2By+z", "api_key").as_deref(),
            Some("k+y z")
        );
        assert_eq!(query_value("api%5Fkey=k", "api_key").as_deref(), Some("k"));
        assert_eq!(query_value("api_key", "api_key").as_deref(), Some(""));
        assert_eq!(query_value("x=1", "api_key"), None);
        assert_eq!(query_value("api_key=%zz", "api_key"), None);
        assert_eq!(
            query_value("api_key=a&api_key=b", "api_key").as_deref(),
            Some("a")
        );
    }

    #[test]
    fn removal_keeps_every_other_parameter_byte_for_byte() {
        let cases = [
            ("a=%41&api_key=k&b=c+d", Some("a=%41&b=c+d")),
            ("api_key=k", Some("")),
            ("api_key=a&x=1&api%5Fkey=b", Some("x=1")),
            ("x=1&&api_key=k", Some("x=1&")),
            ("x=api_key&api_keys=1", None),
        ];
        for (query, expected) in cases {
            assert_eq!(
                without_param(query, "api_key").as_deref(),
                expected,
                "{query}"
            );
        }
    }

    #[test]
    fn secret_parameters_are_masked() {
        let secret = ["api_key".to_owned()];
        assert_eq!(
            mask_params("/p?a=1&api_key=k&b", &secret),
            "/p?a=1&api_key=REDACTED&b"
        );
        assert_eq!(
            mask_params("ws://h/p?api%5Fkey=k", &secret),
            "ws://h/p?api%5Fkey=REDACTED"
        );
        assert!(matches!(mask_params("/p?a=1", &secret), Cow::Borrowed(_)));
        assert!(matches!(mask_params("/p", &secret), Cow::Borrowed(_)));
        assert_eq!(
            mask_params("/p?api_key", &secret),
            "/p?api_key",
            "no value to hide"
        );
    }

    #[test]
    fn bad_fields_are_problems() {
        for (values, needle) in [
            (vec![("header", json!("X API Key"))], "header"),
            (vec![("query", json!("a&b"))], "query"),
            (vec![("keep", json!("yes"))], "keep"),
        ] {
            let mut given = Given::new(&values);
            assert!((KIND.parse)(&mut given).is_err());
            assert!(
                given.problems.iter().any(|p| p.starts_with(needle)),
                "{:?}",
                given.problems
            );
        }
    }

    #[tokio::test]
    async fn the_key_is_taken_from_the_header_or_the_query_and_removed() {
        let chain = Chain::new(
            [&policy("api_key", &[("query", json!("api_key"))])],
            directory(),
        );
        let (who, headers, target) = run(
            &chain,
            &[("x-api-key", "alice-key")],
            "http://b/p?api_key=x&q=1",
        )
        .await;
        assert_eq!(who.unwrap().as_deref(), Some("alice"), "the header wins");
        assert!(!headers.contains_key("x-api-key"));
        assert_eq!(target, "http://b/p?q=1");

        let (who, _, target) = run(&chain, &[], "http://b/p?q=%20&api_key=bob-key").await;
        assert_eq!(who.unwrap().as_deref(), Some("bob"));
        assert_eq!(target, "http://b/p?q=%20");
        let (_, _, target) = run(&chain, &[], "http://b/p?api_key=bob-key").await;
        assert_eq!(target, "http://b/p");

        let (refused, _, target) = run(&chain, &[], "http://b/p?api_key=wrong").await;
        assert_eq!(refused.unwrap_err().message, UNAUTHORIZED_MESSAGE);
        assert_eq!(
            target, "http://b/p?api_key=wrong",
            "nothing removed on failure"
        );
    }

    #[tokio::test]
    async fn keep_forwards_the_key() {
        let chain = Chain::new(
            [&policy(
                "api_key",
                &[
                    ("header", json!("Token")),
                    ("query", json!("k")),
                    ("keep", json!(true)),
                ],
            )],
            directory(),
        );
        let (who, headers, _) = run(&chain, &[("token", "alice-key")], "http://b/").await;
        assert_eq!(who.unwrap().as_deref(), Some("alice"));
        assert_eq!(headers["token"], "alice-key");
        let (_, _, target) = run(&chain, &[], "http://b/?k=bob-key").await;
        assert_eq!(target, "http://b/?k=bob-key");
        assert_eq!(chain.secret_params(), ["k"]);
    }
}
