//! `headers`: sets, adds and removes request headers (what the backend receives; for a
//! WebSocket, the handshake) and response headers (what the client receives; for a
//! WebSocket, the 101), as Kong's request- and response-transformer plugins do.
//!
//! The checker reads no mappings, so each change is a list of `"Name: value"` text (names
//! only for `remove`): `request_set: ["X-Consumer: $consumer"]`. Within each direction the
//! removals come first, then `set` (replacing every value of that name), then `add`
//! (another value beside those there). Response changes apply to the backend's headers; a
//! response `remove` does not reach headers another policy adds (`RateLimit-*`, CORS).
//!
//! Values may use `$client_ip`, `$consumer` (empty without one), `$request_id` and
//! `$jwt.<claim>` (a claim of the token a `jwt` policy admitted: text as it is, other values
//! as their JSON text); `$$` is a `$`. Any other `$name` is a problem. A value that comes
//! out empty, or names a claim the token lacks (or `null`), is not added, and `set` to such
//! a value removes the header — a client cannot smuggle its own `X-Consumer` through a
//! `set` that has no consumer.
//! Headers the gateway manages (`Host`, `Connection`, `Upgrade`, `Content-Length`,
//! `Transfer-Encoding`, `Sec-WebSocket-*`) cannot be changed.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};
use crate::telemetry::trace::X_REQUEST_ID;

pub const KIND: Kind = Kind {
    name: "headers",
    phase: Phase::Transforms,
    doc: "Sets, adds and removes request headers (to the backend, the WebSocket handshake included) and response headers (to the client, the 101 included); values may use $client_ip, $consumer, $request_id and $jwt.<claim>.",
    fields: &[
        Field {
            name: "request_set",
            shape: Shape::Texts,
            doc: "Request headers to set, replacing the client's, as \"Name: value\".",
        },
        Field {
            name: "request_add",
            shape: Shape::Texts,
            doc: "Request headers to add beside the client's, as \"Name: value\".",
        },
        Field {
            name: "request_remove",
            shape: Shape::Texts,
            doc: "Request header names to remove before forwarding.",
        },
        Field {
            name: "response_set",
            shape: Shape::Texts,
            doc: "Response headers to set, replacing the backend's, as \"Name: value\".",
        },
        Field {
            name: "response_add",
            shape: Shape::Texts,
            doc: "Response headers to add beside the backend's, as \"Name: value\".",
        },
        Field {
            name: "response_remove",
            shape: Shape::Texts,
            doc: "Response header names to remove from the backend's response.",
        },
    ],
    parse,
};

/// Headers the gateway itself manages.
const MANAGED: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "te",
    "trailer",
];

/// One piece of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    ClientIp,
    Consumer,
    RequestId,
    /// `$jwt.<claim>`: a claim of the admitted token.
    Claim(String),
}

/// A value with its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(rest.get(..at).unwrap_or_default());
            let after = rest.get(at + 1..).unwrap_or_default();
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                rest = tail;
                continue;
            }
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(after.len());
            let (name, tail) = after.split_at(len);
            let piece = match name {
                "client_ip" => Piece::ClientIp,
                "consumer" => Piece::Consumer,
                "request_id" => Piece::RequestId,
                _ if name.starts_with("jwt.") => match name.strip_prefix("jwt.") {
                    Some(claim) if !claim.is_empty() => Piece::Claim(claim.to_owned()),
                    _ => {
                        return Err("$jwt. needs a claim name, as in $jwt.email".to_owned());
                    }
                },
                "" => {
                    return Err(
                        "a lone $ starts no variable; write $$ for a dollar sign".to_owned()
                    );
                }
                _ => {
                    return Err(format!(
                        "${name} is not a variable; use $client_ip, $consumer, $request_id or $jwt.<claim> ($$ for a dollar sign)"
                    ));
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            rest = tail;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// The value for this request; `None` when it comes out empty, names a claim the token
    /// lacks, or is not a header value.
    fn render(&self, head: &Head<'_>) -> Option<HeaderValue> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::ClientIp => out.push_str(&head.client.ip().to_canonical().to_string()),
                Piece::Consumer => {
                    if let Some(consumer) = &head.consumer {
                        out.push_str(&consumer.name);
                    }
                }
                Piece::RequestId => {
                    if let Some(id) = head
                        .headers
                        .get(&X_REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                    {
                        out.push_str(id);
                    }
                }
                Piece::Claim(claim) => match head.claims.as_ref()?.get(claim)? {
                    serde_json::Value::Null => return None,
                    serde_json::Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        let out = out.trim();
        if out.is_empty() {
            return None;
        }
        HeaderValue::from_str(out).ok()
    }
}

/// What one direction changes.
#[derive(Debug, Default)]
struct Changes {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Template)>,
    add: Vec<(HeaderName, Template)>,
}

#[derive(Debug)]
struct Headers {
    request: Changes,
    response: Changes,
}

fn name(text: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a header name", text.trim()))?;
    if MANAGED.contains(&name.as_str()) || name.as_str().starts_with("sec-websocket-") {
        return Err(format!(
            "{name} is managed by the gateway and cannot be changed"
        ));
    }
    Ok(name)
}

fn pair(text: &str) -> Result<(HeaderName, Template), String> {
    let (header, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not \"Name: value\""))?;
    let template = Template::parse(value.trim())?;
    // The literal parts must be valid in a header value.
    for piece in &template.0 {
        if let Piece::Text(literal) = piece
            && HeaderValue::from_str(literal).is_err()
        {
            return Err(format!("{value:?} is not a valid header value"));
        }
    }
    Ok((name(header)?, template))
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let mut failed = None;
    let mut any = false;
    let mut read = |fields: &mut dyn Fields, prefix: &str| -> Changes {
        let mut changes = Changes::default();
        for (suffix, kind) in [("remove", 0), ("set", 1), ("add", 2)] {
            let key = format!("{prefix}_{suffix}");
            let list = match fields.texts(&key) {
                Ok(list) => list.unwrap_or_default(),
                Err(reported) => {
                    failed = Some(reported);
                    continue;
                }
            };
            any |= !list.is_empty();
            for text in &list {
                let result = if kind == 0 {
                    name(text).map(|n| changes.remove.push(n))
                } else {
                    pair(text).map(|p| {
                        if kind == 1 {
                            changes.set.push(p);
                        } else {
                            changes.add.push(p);
                        }
                    })
                };
                if let Err(why) = result {
                    failed = Some(fields.problem(&key, why));
                }
            }
        }
        changes
    };
    let request = read(fields, "request");
    let response = read(fields, "response");
    if let Some(reported) = failed {
        return Err(reported);
    }
    if !any {
        return Err(fields.problem(
            "request_set",
            "changes nothing; give at least one of request_set, request_add, request_remove, response_set, response_add, response_remove".to_owned(),
        ));
    }
    Ok(Arc::new(Headers { request, response }))
}

impl Policy for Headers {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        // Rendered first: every value sees the request as the client sent it.
        let render = |list: &[(HeaderName, Template)], head: &Head<'_>| {
            list.iter()
                .map(|(name, template)| (name.clone(), template.render(head)))
                .collect::<Vec<_>>()
        };
        let request_set = render(&self.request.set, head);
        let request_add = render(&self.request.add, head);
        let response_set = render(&self.response.set, head);
        let response_add = render(&self.response.add, head);

        let headers: &mut HeaderMap = head.headers;
        for name in &self.request.remove {
            headers.remove(name);
        }
        for (name, value) in request_set {
            headers.remove(&name);
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
        for (name, value) in request_add {
            if let Some(value) = value {
                headers.append(name, value);
            }
        }

        head.effects
            .response_removed
            .extend(self.response.remove.iter().cloned());
        for (name, value) in response_set {
            match value {
                Some(value) => {
                    head.effects.response_headers.insert(name, value);
                }
                None => head.effects.response_removed.push(name),
            }
        }
        for (name, value) in response_add {
            if let Some(value) = value {
                head.effects.response_appended.append(name, value);
            }
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::super::Chain;
    use super::super::tests::{Given, directory, policy};
    use super::*;
    use http::{Method, Uri};
    use serde_json::json;

    #[test]
    fn templates_know_their_variables() {
        assert_eq!(
            Template::parse("id=$request_id; ip=$client_ip, $$5 $consumer").unwrap(),
            Template(vec![
                Piece::Text("id=".into()),
                Piece::RequestId,
                Piece::Text("; ip=".into()),
                Piece::ClientIp,
                Piece::Text(", $5 ".into()),
                Piece::Consumer,
            ])
        );
        assert_eq!(Template::parse("plain").unwrap().0.len(), 1);
        assert_eq!(
            Template::parse("<$jwt.email>").unwrap(),
            Template(vec![
                Piece::Text("<".into()),
                Piece::Claim("email".into()),
                Piece::Text(">".into()),
            ])
        );
        assert!(
            Template::parse("$jwt.")
                .unwrap_err()
                .contains("needs a claim name")
        );
        assert!(
            Template::parse("$nope")
                .unwrap_err()
                .contains("$nope is not")
        );
        assert!(Template::parse("5 $").unwrap_err().contains("lone $"));
    }

    #[test]
    fn bad_settings_are_problems() {
        for (values, needle) in [
            (vec![], "changes nothing"),
            (
                vec![("request_set", json!(["X-A v"]))],
                "request_set: \"X-A v\" is not \"Name: value\"",
            ),
            (
                vec![("response_add", json!(["X-A: $who"]))],
                "response_add: $who is not a variable",
            ),
            (
                vec![("request_remove", json!(["Host"]))],
                "request_remove: host is managed",
            ),
            (
                vec![("response_set", json!(["Bad Name: v"]))],
                "response_set: \"Bad Name\" is not a header name",
            ),
        ] {
            let mut given = Given::new(&values);
            assert!((KIND.parse)(&mut given).is_err(), "{values:?}");
            assert_eq!(given.problems.len(), 1, "{:?}", given.problems);
            assert!(
                given.problems[0].contains(needle),
                "{needle}: {:?}",
                given.problems
            );
        }
    }

    #[tokio::test]
    async fn request_and_response_changes_land_in_their_places() {
        let chain = Chain::new(
            [
                &policy(
                    "headers",
                    &[
                        ("request_remove", json!(["X-Secret"])),
                        (
                            "request_set",
                            json!([
                                "X-Consumer: $consumer",
                                "X-Via: ip=$client_ip id=$request_id"
                            ]),
                        ),
                        ("request_add", json!(["X-Multi: two"])),
                        ("response_remove", json!(["Server"])),
                        (
                            "response_set",
                            json!(["X-Frame-Options: DENY", "X-Who: $consumer"]),
                        ),
                        ("response_add", json!(["Cache-Control: no-store"])),
                    ],
                ),
                &policy("api_key", &[]),
            ],
            directory(),
        );
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-api-key", "bob-key"),
            ("x-secret", "s"),
            ("x-consumer", "admin"),
            ("x-multi", "one"),
            ("x-request-id", "rid-1"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let mut target: Uri = "http://b/".parse().unwrap();
        let admission = chain
            .admit_as(
                &Method::GET,
                &mut headers,
                &mut target,
                "10.0.0.7:1".parse().unwrap(),
                false,
            )
            .await
            .unwrap();
        assert!(!headers.contains_key("x-secret"));
        assert_eq!(headers["x-consumer"], "bob");
        assert_eq!(headers["x-via"], "ip=10.0.0.7 id=rid-1");
        let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
        assert_eq!(admission.effects.response_removed, ["server"]);
        assert_eq!(
            admission.effects.response_headers["x-frame-options"],
            "DENY"
        );
        assert_eq!(admission.effects.response_headers["x-who"], "bob");
        assert_eq!(
            admission.effects.response_appended["cache-control"],
            "no-store"
        );
    }

    #[tokio::test]
    async fn a_set_without_a_consumer_removes_the_clients_value() {
        let chain = Chain::new(
            [&policy(
                "headers",
                &[
                    ("request_set", json!(["X-Consumer: $consumer"])),
                    ("response_set", json!(["X-Who: $consumer"])),
                ],
            )],
            directory(),
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-consumer", HeaderValue::from_static("admin"));
        let mut target: Uri = "http://b/".parse().unwrap();
        let admission = chain
            .admit(
                &mut headers,
                &mut target,
                "127.0.0.1:1".parse().unwrap(),
                true,
            )
            .await
            .unwrap();
        assert!(!headers.contains_key("x-consumer"));
        assert!(!admission.effects.response_headers.contains_key("x-who"));
        assert_eq!(admission.effects.response_removed, ["x-who"]);
    }

    #[tokio::test]
    async fn jwt_claims_fill_values_and_an_absent_claim_sets_nothing() {
        let secret = "a-long-enough-test-secret";
        let chain = Chain::new(
            [
                &policy(
                    "headers",
                    &[
                        (
                            "request_set",
                            json!([
                                "X-Email: $jwt.email",
                                "X-Level: $jwt.level",
                                "X-Admin: admin=$jwt.admin",
                                "X-Missing: $jwt.missing",
                                "X-Null: $jwt.nothing",
                            ]),
                        ),
                        ("response_add", json!(["X-Sub: $jwt.sub"])),
                    ],
                ),
                &policy(
                    "jwt",
                    &[("secret", json!(secret)), ("anonymous", json!(true))],
                ),
            ],
            directory(),
        );
        let claims = json!({"sub": "s-1", "email": "a@example.com", "level": 3,
            "admin": true, "nothing": null, "exp": jsonwebtoken::get_current_timestamp() + 60});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers.insert("x-missing", HeaderValue::from_static("spoofed"));
        let mut target: Uri = "http://b/".parse().unwrap();
        let admission = chain
            .admit(
                &mut headers,
                &mut target,
                "127.0.0.1:1".parse().unwrap(),
                false,
            )
            .await
            .unwrap();
        assert_eq!(headers["x-email"], "a@example.com");
        assert_eq!(headers["x-level"], "3");
        assert_eq!(headers["x-admin"], "admin=true");
        assert!(!headers.contains_key("x-missing"), "removed, not set");
        assert!(!headers.contains_key("x-null"));
        assert_eq!(admission.effects.response_appended["x-sub"], "s-1");
    }
}
