//! `cors`: Cross-Origin Resource Sharing for browsers' `fetch`, as Kong's and APISIX's `cors`
//! plugins do it.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from a listed
//!   origin is answered by the gateway itself — 204 with `Access-Control-Allow-Origin`
//!   (the origin echoed, with `Vary: Origin`), `-Allow-Methods`, `-Allow-Headers` (the
//!   listed ones, or those the preflight asks for when none are listed), `-Max-Age` and
//!   `-Allow-Credentials` when set — and never reaches the backend. It runs in the access
//!   phase, before authentication: browsers send no credentials with a preflight.
//! - A preflight from an origin not listed gets 403 (JSON), which says more than a bare
//!   answer without CORS headers would (the browser blocks the request either way).
//! - Any other request from a listed origin gets `Access-Control-Allow-Origin` (with
//!   `Vary: Origin`), `-Allow-Credentials` and `-Expose-Headers` on its response; from an
//!   origin not listed, or without `Origin`, it passes with no CORS headers, and the
//!   browser keeps the response from the page.
//!
//! `origins: ["*"]` allows every origin (answered with `*`), but not with
//! `credentials: true`, which browsers refuse. This policy is independent of `origin`
//! (which refuses requests from unlisted origins, against WebSocket hijacking): listing
//! both, `origin` also judges preflights, and refuses those from its unlisted origins.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

use super::origin::{OriginError, serialise};
use super::{Answer, Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};
use crate::error::{ErrorKind, GatewayError};

pub const KIND: Kind = Kind {
    name: "cors",
    phase: Phase::Access,
    doc: "Cross-Origin Resource Sharing: answers preflights from the listed origins itself (204; 403 from others) and adds Access-Control-* headers to other responses to them.",
    fields: &[
        Field {
            name: "origins",
            shape: Shape::Texts,
            doc: "The origins allowed, such as `https://app.example.com`, or `*` for any (required).",
        },
        Field {
            name: "methods",
            shape: Shape::Texts,
            doc: "The methods allowed (default GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS).",
        },
        Field {
            name: "headers",
            shape: Shape::Texts,
            doc: "The request headers allowed (default: those the preflight asks for).",
        },
        Field {
            name: "expose_headers",
            shape: Shape::Texts,
            doc: "The response headers a page may read besides the simple ones.",
        },
        Field {
            name: "credentials",
            shape: Shape::Flag,
            doc: "Whether the page may send cookies and read the response (default false; not with `*`).",
        },
        Field {
            name: "max_age",
            shape: Shape::Duration,
            doc: "How long a browser may cache a preflight's answer, such as 1h.",
        },
    ],
    parse,
};

const DEFAULT_METHODS: &str = "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS";

#[derive(Debug, PartialEq, Eq)]
enum Origins {
    Any,
    /// Serialised as RFC 6454 says.
    Listed(Vec<String>),
}

#[derive(Debug)]
struct Cors {
    origins: Origins,
    methods: HeaderValue,
    /// `None`: the headers the preflight asks for.
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

/// `names` joined with ", " as a header value; `Err` with the first that is not a token.
fn joined(names: &[String], upper: bool) -> Result<HeaderValue, String> {
    let mut parts = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(name.to_owned());
        }
        parts.push(if upper {
            name.to_ascii_uppercase()
        } else {
            name.to_owned()
        });
    }
    HeaderValue::from_str(&parts.join(", ")).map_err(|_| names.join(", "))
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let origins = fields.texts("origins");
    let methods = fields.texts("methods");
    let headers = fields.texts("headers");
    let expose = fields.texts("expose_headers");
    let credentials = fields.flag("credentials");
    let max_age = fields.duration("max_age");
    let (origins, methods, headers, expose, credentials, max_age) = (
        origins?,
        methods?,
        headers?,
        expose?,
        credentials?,
        max_age?,
    );
    let credentials = credentials.unwrap_or(false);

    let origins = match origins {
        None => {
            return Err(fields.problem(
                "origins",
                "needs origins, the origins allowed, such as origins: [\"https://app.example.com\"] (or [\"*\"])".to_owned(),
            ));
        }
        Some(list) if list.is_empty() => {
            return Err(fields.problem(
                "origins",
                "origins is an empty list; name at least one origin, or \"*\"".to_owned(),
            ));
        }
        Some(list) if list.iter().any(|o| o.trim() == "*") => {
            if list.len() > 1 {
                return Err(fields.problem(
                    "origins",
                    "\"*\" allows every origin; list it alone".to_owned(),
                ));
            }
            if credentials {
                return Err(fields.problem(
                    "credentials",
                    "credentials: true cannot go with origins: [\"*\"] (browsers refuse it); list the origins".to_owned(),
                ));
            }
            Origins::Any
        }
        Some(list) => {
            let mut serialised = Vec::with_capacity(list.len());
            let mut failed = None;
            for text in &list {
                match serialise(text.trim()) {
                    Ok(origin) => serialised.push(origin),
                    Err(OriginError::Wildcard) => {}
                    Err(error) => failed = Some(fields.problem("origins", error.to_string())),
                }
            }
            if let Some(reported) = failed {
                return Err(reported);
            }
            Origins::Listed(serialised)
        }
    };
    let methods = match methods {
        None => HeaderValue::from_static(DEFAULT_METHODS),
        Some(list) if list.is_empty() => {
            return Err(fields.problem("methods", "methods is an empty list".to_owned()));
        }
        Some(list) => joined(&list, true)
            .map_err(|bad| fields.problem("methods", format!("{bad:?} is not an HTTP method")))?,
    };
    let mut names = |key: &str, list: Option<Vec<String>>| match list {
        None => Ok(None),
        Some(list) if list.is_empty() => Ok(None),
        Some(list) => joined(&list, false)
            .map(Some)
            .map_err(|bad| fields.problem(key, format!("{bad:?} is not a header name"))),
    };
    let headers = names("headers", headers)?;
    let expose = names("expose_headers", expose)?;
    let max_age = max_age.map(|age: Duration| HeaderValue::from(age.as_secs()));
    Ok(Arc::new(Cors {
        origins,
        methods,
        headers,
        expose,
        credentials,
        max_age,
    }))
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for `origin`, when it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::Listed(list) => {
                let text = origin.to_str().ok()?;
                let serialised = serialise(text.trim()).ok()?;
                list.contains(&serialised).then(|| origin.clone())
            }
        }
    }

    /// The headers every answer to an allowed origin carries.
    fn common(&self, allow: HeaderValue, headers: &mut HeaderMap, vary: &mut HeaderMap) {
        let echoed = allow != "*";
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if echoed {
            vary.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn preflight(&self, head: &Head<'_>, allow: HeaderValue) -> Answer {
        let mut headers = HeaderMap::new();
        let mut vary = HeaderMap::new();
        self.common(allow, &mut headers, &mut vary);
        headers.extend(vary);
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let asked = head
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        if let Some(allowed) = self.headers.clone().or(asked) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        if let Some(age) = &self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        Answer {
            status: StatusCode::NO_CONTENT,
            headers,
        }
    }
}

/// The request's one `Origin`; none when absent or repeated.
fn sent_origin(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

impl Policy for Cors {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        let is_preflight = *head.method == Method::OPTIONS
            && head
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let allow = sent_origin(head.headers).and_then(|origin| self.allow_origin(origin));
        match (is_preflight, allow) {
            (true, Some(allow)) => Verdict::Respond(self.preflight(head, allow)),
            (true, None) if head.headers.contains_key(header::ORIGIN) => {
                Verdict::Refuse(GatewayError::new(
                    ErrorKind::Forbidden,
                    "the preflight's Origin is not allowed by this API proxy's CORS policy",
                ))
            }
            // An OPTIONS without Origin is no preflight: it goes to the backend.
            (true, None) | (false, None) => Verdict::Pass,
            (false, Some(allow)) => {
                self.common(
                    allow,
                    &mut head.effects.response_headers,
                    &mut head.effects.response_appended,
                );
                if let Some(expose) = &self.expose {
                    head.effects
                        .response_headers
                        .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
                }
                Verdict::Pass
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Given, directory, policy};
    use super::super::{Admission, Chain};
    use super::*;
    use http::Uri;
    use serde_json::json;

    fn chain(values: &[(&'static str, serde_json::Value)]) -> Chain {
        Chain::new([&policy("cors", values)], directory())
    }

    async fn judge(
        chain: &Chain,
        method: Method,
        headers: &[(&'static str, &str)],
    ) -> Result<Admission, GatewayError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        let mut target: Uri = "http://b/".parse().unwrap();
        let client = "127.0.0.1:1".parse().unwrap();
        chain
            .admit_as(&method, &mut map, &mut target, client, false)
            .await
    }

    fn listed() -> Chain {
        chain(&[
            ("origins", json!(["https://App.example.com"])),
            ("methods", json!(["get", "POST"])),
            ("headers", json!(["Authorization", "X-Trace"])),
            ("expose_headers", json!(["X-Total"])),
            ("credentials", json!(true)),
            ("max_age", json!("1h")),
        ])
    }

    #[tokio::test]
    async fn a_preflight_from_a_listed_origin_is_answered() {
        let admission = judge(
            &listed(),
            Method::OPTIONS,
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await
        .unwrap();
        let answer = admission.answer.unwrap();
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        let h = &answer.headers;
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["vary"], "Origin");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(h["access-control-allow-headers"], "Authorization, X-Trace");
        assert_eq!(h["access-control-max-age"], "3600");
        assert_eq!(h["access-control-allow-credentials"], "true");
    }

    #[tokio::test]
    async fn a_preflight_from_another_origin_is_403() {
        for origin in ["https://evil.example", "null", "http://app.example.com"] {
            let error = judge(
                &listed(),
                Method::OPTIONS,
                &[("origin", origin), ("access-control-request-method", "GET")],
            )
            .await
            .unwrap_err();
            assert_eq!(error.kind, ErrorKind::Forbidden, "{origin}");
        }
        // OPTIONS without Origin is no preflight.
        let passed = judge(&listed(), Method::OPTIONS, &[]).await.unwrap();
        assert!(passed.answer.is_none());
    }

    #[tokio::test]
    async fn actual_requests_get_headers_only_from_listed_origins() {
        let admission = judge(
            &listed(),
            Method::POST,
            &[("origin", "https://app.example.com")],
        )
        .await
        .unwrap();
        assert!(admission.answer.is_none());
        let h = &admission.effects.response_headers;
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "X-Total");
        assert_eq!(admission.effects.response_appended["vary"], "Origin");

        for headers in [vec![("origin", "https://evil.example")], vec![]] {
            let admission = judge(&listed(), Method::GET, &headers).await.unwrap();
            assert!(admission.answer.is_none());
            assert!(admission.effects.response_headers.is_empty(), "{headers:?}");
            assert!(
                admission.effects.response_appended.is_empty(),
                "{headers:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_later_refusal_carries_the_cors_headers() {
        let chain = Chain::new(
            [
                &policy("api_key", &[]),
                &policy("cors", &[("origins", json!(["https://app.example.com"]))]),
            ],
            directory(),
        );
        let error = judge(
            &chain,
            Method::GET,
            &[("origin", "https://app.example.com")],
        )
        .await
        .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unauthorized);
        let response = error.to_response();
        let h = response.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["vary"], "Origin");
        assert!(h.contains_key("www-authenticate"));
    }

    #[tokio::test]
    async fn any_origin_answers_star_and_echoes_asked_headers() {
        let any = chain(&[("origins", json!(["*"]))]);
        let admission = judge(
            &any,
            Method::OPTIONS,
            &[
                ("origin", "https://whoever.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-one, x-two"),
            ],
        )
        .await
        .unwrap();
        let h = admission.answer.unwrap().headers;
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(!h.contains_key("vary"));
        assert!(!h.contains_key("access-control-allow-credentials"));
        assert!(!h.contains_key("access-control-max-age"));
        assert_eq!(h["access-control-allow-methods"], DEFAULT_METHODS);
        assert_eq!(h["access-control-allow-headers"], "x-one, x-two");
    }

    #[test]
    fn bad_settings_are_problems() {
        for (values, needle) in [
            (vec![], "origins: needs origins"),
            (vec![("origins", json!([]))], "origins: origins is an empty"),
            (
                vec![("origins", json!(["*"])), ("credentials", json!(true))],
                "credentials: credentials: true cannot",
            ),
            (
                vec![("origins", json!(["*", "https://a.example"]))],
                "origins: \"*\" allows every origin",
            ),
            (vec![("origins", json!(["null"]))], "origins: \"null\""),
            (
                vec![("origins", json!(["https://a.example/x"]))],
                "https://a.example/x",
            ),
            (
                vec![
                    ("origins", json!(["https://a.example"])),
                    ("methods", json!(["GE T"])),
                ],
                "methods: \"GE T\"",
            ),
            (
                vec![
                    ("origins", json!(["https://a.example"])),
                    ("headers", json!(["X:Y"])),
                ],
                "headers: \"X:Y\"",
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
}
