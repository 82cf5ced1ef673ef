//! Policies: what a request must satisfy before it reaches a backend, for HTTP requests and
//! WebSocket handshakes alike.
//!
//! Owns the registry of policy types ([`REGISTRY`]: each type is one file with its fields,
//! its parser and what it does to a request head), the phases they run in ([`Phase`]), the
//! [`Chain`] compiled for each route (the environment's policies, then the proxy's), and the
//! consumers with their hashed credentials ([`consumers`]). It decides; it never does I/O —
//! no sockets, files or store — except verifying argon2 password hashes, which it runs off
//! the async workers, and fetching a `jwt` policy's JWK set from its `jwks_url`. It may not
//! touch routing, connections or configuration text: the configuration checker reads a
//! policy's fields through [`Fields`], and the proxy runs the chain on a request head
//! ([`Head`]).
//!
//! Adding a policy: write `policy/<name>.rs` with a `pub const KIND: Kind` and a type
//! implementing [`Policy`], then list it in [`REGISTRY`].

mod acl;
mod api_key;
mod basic_auth;
pub mod consumers;
mod cors;
mod headers;
mod ip_filter;
mod jwks;
mod jwt;
mod origin;
mod rate_limit;
mod request_size;
mod ws_connections;
mod ws_message_rate;
mod ws_message_size;

pub use ws_message_rate::MessageGate;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};

use crate::error::{ErrorKind, GatewayError};
use consumers::{Directory, Identity};

/// Every policy type. A new policy is one file and one line here.
pub const REGISTRY: &[&Kind] = &[
    &api_key::KIND,
    &basic_auth::KIND,
    &acl::KIND,
    &rate_limit::KIND,
    &ws_connections::KIND,
    &request_size::KIND,
    &ws_message_size::KIND,
    &ws_message_rate::KIND,
    &origin::KIND,
    &ip_filter::KIND,
    &jwt::KIND,
    &cors::KIND,
    &headers::KIND,
];

/// The phases, in the order they run whatever order the policies are listed in. Within a
/// phase, the environment's policies run before the proxy's, each in listed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Where the request comes from: client address and `Origin` rules, before anyone is
    /// asked for credentials (as nginx's allow/deny); every policy must agree (403).
    Access,
    /// Who is calling: any one policy admitting is enough; none → 401.
    Authentication,
    /// Whether that consumer may: every policy must agree (403).
    Authorization,
    /// How much: rate and connection limits (429).
    Limits,
    /// What reaches the backend: header and body changes.
    Transforms,
}

/// The value a field holds, for the documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Text,
    Flag,
    /// A list of text.
    Texts,
    /// A whole number.
    Number,
    /// A duration such as `1m`.
    Duration,
}

/// One field of a policy entry, besides `type`.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
    /// One sentence for the OpenAPI document.
    pub doc: &'static str,
}

/// A policy type: its name in `type:`, its phase, its fields and its parser.
pub struct Kind {
    pub name: &'static str,
    pub phase: Phase,
    /// One sentence for the OpenAPI document.
    pub doc: &'static str,
    pub fields: &'static [Field],
    /// Reads the entry's fields (reporting every problem through `fields`) into the policy.
    pub parse: Parse,
}

/// A policy type's parser.
pub type Parse = fn(&mut dyn Fields) -> Result<Arc<dyn Policy>, Reported>;

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kind").field("name", &self.name).finish()
    }
}

/// The policy type named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    REGISTRY.iter().copied().find(|k| k.name == name)
}

/// The names of every policy type, for messages.
pub fn kind_names() -> String {
    REGISTRY
        .iter()
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A problem was reported (with its place) through [`Fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported;

/// How a policy reads the fields of its entry. The configuration checker implements it:
/// wrong types are reported there with their line and field, so a parser only checks values.
pub trait Fields {
    /// Non-empty text; `Ok(None)` when absent.
    fn text(&mut self, key: &str) -> Result<Option<String>, Reported>;
    /// `true` or `false`; `Ok(None)` when absent.
    fn flag(&mut self, key: &str) -> Result<Option<bool>, Reported>;
    /// A list of non-empty text; `Ok(None)` when absent.
    fn texts(&mut self, key: &str) -> Result<Option<Vec<String>>, Reported>;
    /// A whole number (0 or more); `Ok(None)` when absent.
    fn number(&mut self, key: &str) -> Result<Option<u64>, Reported>;
    /// A duration such as `1m` or `500ms`; `Ok(None)` when absent.
    fn duration(&mut self, key: &str) -> Result<Option<Duration>, Reported>;
    /// The contents of the file named under `key` (relative to the configuration file's
    /// folder), read by the checker; an unreadable file is reported. `Ok(None)` when absent.
    fn file(&mut self, key: &str) -> Result<Option<Vec<u8>>, Reported>;
    /// Reports `message` about the value under `key` (or the entry, when `key` is absent).
    fn problem(&mut self, key: &str, message: String) -> Reported;
}

/// What a policy says about a request.
pub enum Verdict {
    /// Nothing against it: the next policy runs.
    Pass,
    /// Authentication: these credentials belong to this consumer.
    Admit(Arc<Identity>),
    /// Authentication: valid credentials that name no consumer, admitted without one (a
    /// `jwt` policy with `anonymous: true`).
    Anonymous,
    /// No valid credentials — missing or wrong, deliberately not told apart.
    Unauthenticated,
    /// Authentication: credentials were presented and are not valid. Answered as
    /// [`Verdict::Unauthenticated`], with the policy's [`Policy::invalid_challenge`].
    Invalid,
    /// Refused with this error.
    Refuse(GatewayError),
    /// Answered by the gateway itself, not forwarded (a CORS preflight).
    Respond(Answer),
    /// The verdict needs work off the async workers (an argon2 verification).
    Later(Pin<Box<dyn Future<Output = Verdict> + Send>>),
    /// The policy's state changed while it waited (a JWK set was fetched): it is asked
    /// again, once; a second `Retry` counts as [`Verdict::Invalid`].
    Retry,
}

/// A response the gateway gives itself instead of forwarding: a status and headers, no body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// The request head as policies see it, once per HTTP request or WebSocket handshake.
pub struct Head<'a> {
    pub method: &'a Method,
    pub headers: &'a mut HeaderMap,
    /// The backend target; its query is the client's, byte for byte.
    pub target: &'a mut Uri,
    pub client: SocketAddr,
    pub websocket: bool,
    /// Set once an authentication policy admitted the request.
    pub consumer: Option<Arc<Identity>>,
    pub consumers: &'a Arc<Directory>,
    /// What the policies leave for the response and for the request's life.
    pub effects: Effects,
    /// The most request body bytes the backend may receive (`request_size`).
    pub body_limit: Option<u64>,
    /// The verified claims of the token a `jwt` policy admitted, for `$jwt.<claim>`.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// Something a policy hands the request to keep until it ends — for a WebSocket handshake,
/// until the session ends however it ends (a `ws_connections` slot, released on drop), or
/// a deadline for that session ([`Held::expiry`]).
pub struct Held {
    #[allow(dead_code, reason = "held for its drop")]
    value: Box<dyn Send + Sync>,
    expiry: Option<Expiry>,
    messages: Option<MessageLimit>,
}

/// Whose messages a message limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Backend,
}

/// A limit on the messages one side of a WebSocket session sends, enforced by the relay
/// as each frame header passes (HTTP requests have none).
#[derive(Debug, Clone)]
pub struct MessageLimit {
    pub from: Sender,
    pub rule: MessageRule,
}

#[derive(Debug, Clone)]
pub enum MessageRule {
    /// A message larger than this many bytes closes the session: 1009 to the sender, 1001
    /// to the other side.
    MaxSize(u64),
    /// Each message must pass the gate; one that does not closes the session (1008 to the
    /// sender, 1001 to the other side), or with `drop` is left out silently.
    Rate { gate: Arc<MessageGate>, drop: bool },
}

/// When a WebSocket session must end — its credential expires — and the close it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub at: std::time::SystemTime,
    pub code: u16,
    pub reason: &'static str,
}

impl Head<'_> {
    /// What the chain admitted the request with, answered by the gateway when `answer` is set.
    fn admission(self, answer: Option<Answer>) -> Admission {
        Admission {
            consumer: self.consumer,
            answer,
            effects: self.effects,
            body_limit: self.body_limit,
        }
    }

    fn answer(self, answer: Answer) -> Admission {
        self.admission(Some(answer))
    }

    /// `error` with the response headers earlier policies added (CORS, `RateLimit-*`), so a
    /// browser can read a 401; the error's own headers of the same name win.
    fn refused(&self, mut error: GatewayError) -> GatewayError {
        let own: Vec<HeaderName> = error.headers.iter().map(|(n, _)| n.clone()).collect();
        let added = self
            .effects
            .response_headers
            .iter()
            .filter(|(n, _)| !own.contains(n));
        for (name, value) in added.chain(&self.effects.response_appended) {
            error.headers.push((name.clone(), value.clone()));
        }
        error
    }
}

impl Held {
    pub fn new(value: impl Send + Sync + 'static) -> Held {
        Held {
            value: Box::new(value),
            expiry: None,
            messages: None,
        }
    }

    /// A deadline for the WebSocket session the handshake becomes (nothing for HTTP).
    pub fn expiry(expiry: Expiry) -> Held {
        Held {
            expiry: Some(expiry),
            ..Held::new(())
        }
    }

    /// A limit on the messages of the WebSocket session the handshake becomes.
    pub fn messages(limit: MessageLimit) -> Held {
        Held {
            messages: Some(limit),
            ..Held::new(())
        }
    }

    pub fn expires(&self) -> Option<&Expiry> {
        self.expiry.as_ref()
    }

    pub fn message_limit(&self) -> Option<&MessageLimit> {
        self.messages.as_ref()
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Held")
    }
}

/// What the chain admitted a request with.
#[derive(Debug, Default)]
pub struct Admission {
    /// The consumer an authentication policy found.
    pub consumer: Option<Arc<Identity>>,
    /// A policy answered the request itself: send this, forward nothing.
    pub answer: Option<Answer>,
    /// What the policies left for the response and for the request's life.
    pub effects: Effects,
    /// The most request body bytes to forward; beyond them the request fails with 413.
    pub body_limit: Option<u64>,
}

/// What the policies left for a request beyond admitting it; empty for most requests.
#[derive(Debug, Default)]
pub struct Effects {
    /// Headers for the response to this request, whatever answers it (`RateLimit-*`); they
    /// replace the backend's (or the gateway's own) of the same name.
    pub response_headers: HeaderMap,
    /// Headers added to the response besides the backend's of the same name (`Vary`).
    pub response_appended: HeaderMap,
    /// Headers removed from the backend's response (before the two above are added).
    pub response_removed: Vec<HeaderName>,
    /// What must live as long as the request or the WebSocket session it becomes.
    pub held: Vec<Held>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.response_headers.is_empty()
            && self.response_appended.is_empty()
            && self.response_removed.is_empty()
            && self.held.is_empty()
    }
}

/// One configured policy, ready to run. Built by its [`Kind`]'s parser; immutable.
pub trait Policy: fmt::Debug + Send + Sync {
    fn kind(&self) -> &'static Kind;

    /// Looks at (and may change) the request head.
    fn apply(&self, head: &mut Head<'_>) -> Verdict;

    /// Called when this policy admitted the request: removes its credential unless `keep`.
    fn admitted(&self, _head: &mut Head<'_>) {}

    /// The `WWW-Authenticate` challenge of an authentication policy.
    fn challenge(&self) -> Option<HeaderValue> {
        None
    }

    /// The challenge after this policy refused the credentials presented to it (RFC 6750's
    /// `error="invalid_token"`); by default the same as [`Policy::challenge`].
    fn invalid_challenge(&self) -> Option<HeaderValue> {
        self.challenge()
    }

    /// A query parameter that carries a secret, masked in the access log.
    fn secret_param(&self) -> Option<&str> {
        None
    }
}

/// A configured policy in the validated configuration.
#[derive(Debug, Clone)]
pub struct PolicyEntry(pub Arc<dyn Policy>);

/// Configurations are compared in tests; a policy is plain settings, so its `Debug` text
/// says everything it holds.
impl PartialEq for PolicyEntry {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || format!("{:?}", self.0) == format!("{:?}", other.0)
    }
}

/// The policies of one route, in phase order, with the consumers they look credentials up in.
#[derive(Debug, Default)]
pub struct Chain {
    /// Any one admitting is enough.
    authentication: Vec<Arc<dyn Policy>>,
    /// Every other policy, in phase order.
    rest: Vec<Arc<dyn Policy>>,
    consumers: Arc<Directory>,
    /// One `WWW-Authenticate` per authentication policy, for the 401.
    challenges: Vec<HeaderValue>,
    secret_params: Vec<String>,
}

/// The 401 message: the same whatever was missing or wrong.
pub const UNAUTHORIZED_MESSAGE: &str =
    "this API proxy needs valid credentials, and the request did not present any";

impl Chain {
    /// `policies` in listed order (the environment's first); they run phase by phase.
    pub fn new<'p>(
        policies: impl IntoIterator<Item = &'p PolicyEntry>,
        consumers: Arc<Directory>,
    ) -> Chain {
        let mut all: Vec<Arc<dyn Policy>> = policies.into_iter().map(|p| p.0.clone()).collect();
        // Stable: listed order is kept within a phase.
        all.sort_by_key(|p| p.kind().phase);
        let (authentication, rest): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|p| p.kind().phase == Phase::Authentication);
        let challenges = authentication
            .iter()
            .filter_map(|p| p.challenge())
            .collect();
        let secret_params = authentication
            .iter()
            .chain(&rest)
            .filter_map(|p| p.secret_param().map(str::to_owned))
            .collect();
        Chain {
            authentication,
            rest,
            consumers,
            challenges,
            secret_params,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.authentication.is_empty() && self.rest.is_empty()
    }

    /// Query parameters whose values the access log masks.
    pub fn secret_params(&self) -> &[String] {
        &self.secret_params
    }

    /// `uri` (a path and query, or a URL) with the values of the secret query parameters
    /// masked, for logs and the connection list.
    pub fn redact<'u>(&self, uri: &'u str) -> std::borrow::Cow<'u, str> {
        api_key::mask_params(uri, &self.secret_params)
    }

    /// The policy types in the order they run (for tests and logs).
    pub fn order(&self) -> Vec<&'static str> {
        let (access, rest) = self.rest.split_at(self.access_len());
        access
            .iter()
            .chain(&self.authentication)
            .chain(rest)
            .map(|p| p.kind().name)
            .collect()
    }

    /// How many access-phase policies `rest` starts with (it is in phase order).
    fn access_len(&self) -> usize {
        self.rest
            .partition_point(|p| p.kind().phase == Phase::Access)
    }

    /// Runs every policy on the head. `Ok` with the authenticated consumer (if any policy
    /// authenticated one), or the error to answer with.
    pub async fn run(
        &self,
        headers: &mut HeaderMap,
        target: &mut Uri,
        client: SocketAddr,
        websocket: bool,
    ) -> Result<Option<Arc<Identity>>, GatewayError> {
        let admission = self.admit(headers, target, client, websocket).await?;
        Ok(admission.consumer)
    }

    /// [`Chain::run`], with what the admission carries besides the consumer: response
    /// headers and what must be held for the request's (or the session's) life. The request
    /// is taken as a GET; [`Chain::admit_as`] gives its method.
    pub async fn admit(
        &self,
        headers: &mut HeaderMap,
        target: &mut Uri,
        client: SocketAddr,
        websocket: bool,
    ) -> Result<Admission, GatewayError> {
        self.admit_as(&Method::GET, headers, target, client, websocket)
            .await
    }

    /// [`Chain::admit`] for a request with this method.
    pub async fn admit_as(
        &self,
        method: &Method,
        headers: &mut HeaderMap,
        target: &mut Uri,
        client: SocketAddr,
        websocket: bool,
    ) -> Result<Admission, GatewayError> {
        let mut head = Head {
            method,
            headers,
            target,
            client,
            websocket,
            consumer: None,
            consumers: &self.consumers,
            effects: Effects::default(),
            body_limit: None,
            claims: None,
        };
        let (access, rest) = self.rest.split_at(self.access_len());
        for policy in access {
            match decide(policy.as_ref(), &mut head).await {
                Verdict::Refuse(error) => return Err(head.refused(error)),
                Verdict::Respond(answer) => return Ok(head.answer(answer)),
                Verdict::Pass
                | Verdict::Admit(_)
                | Verdict::Anonymous
                | Verdict::Unauthenticated
                | Verdict::Invalid
                | Verdict::Later(_)
                | Verdict::Retry => {}
            }
        }
        if !self.authentication.is_empty() {
            let mut anonymous = false;
            let mut invalid = Vec::new();
            for policy in &self.authentication {
                match decide(policy.as_ref(), &mut head).await {
                    Verdict::Admit(identity) => {
                        policy.admitted(&mut head);
                        head.consumer = Some(identity);
                        break;
                    }
                    Verdict::Anonymous => {
                        policy.admitted(&mut head);
                        anonymous = true;
                        break;
                    }
                    Verdict::Refuse(error) => return Err(head.refused(error)),
                    Verdict::Respond(answer) => return Ok(head.answer(answer)),
                    Verdict::Invalid => invalid.push(policy),
                    Verdict::Pass
                    | Verdict::Unauthenticated
                    | Verdict::Later(_)
                    | Verdict::Retry => {}
                }
            }
            if head.consumer.is_none() && !anonymous {
                return Err(head.refused(self.unauthorized_after(&invalid)));
            }
        }
        for policy in rest {
            match decide(policy.as_ref(), &mut head).await {
                Verdict::Pass | Verdict::Admit(_) | Verdict::Anonymous | Verdict::Later(_) => {}
                Verdict::Unauthenticated | Verdict::Invalid | Verdict::Retry => {
                    return Err(head.refused(self.unauthorized()));
                }
                Verdict::Refuse(error) => return Err(head.refused(error)),
                Verdict::Respond(answer) => return Ok(head.answer(answer)),
            }
        }
        Ok(head.admission(None))
    }

    fn unauthorized(&self) -> GatewayError {
        self.challenges.iter().fold(
            GatewayError::new(ErrorKind::Unauthorized, UNAUTHORIZED_MESSAGE),
            |error, challenge| error.with_header(header::WWW_AUTHENTICATE, challenge.clone()),
        )
    }

    /// The 401 after the `invalid` policies refused the credentials shown to them: their
    /// challenges say so.
    fn unauthorized_after(&self, invalid: &[&Arc<dyn Policy>]) -> GatewayError {
        if invalid.is_empty() {
            return self.unauthorized();
        }
        self.authentication
            .iter()
            .filter_map(|policy| {
                if invalid.iter().any(|i| Arc::ptr_eq(i, policy)) {
                    policy.invalid_challenge()
                } else {
                    policy.challenge()
                }
            })
            .fold(
                GatewayError::new(ErrorKind::Unauthorized, UNAUTHORIZED_MESSAGE),
                |error, challenge| error.with_header(header::WWW_AUTHENTICATE, challenge),
            )
    }
}

/// Awaits a verdict that needs work elsewhere.
async fn settle(mut verdict: Verdict) -> Verdict {
    while let Verdict::Later(pending) = verdict {
        verdict = pending.await;
    }
    verdict
}

/// The policy's settled verdict on the head, asking it once more after a [`Verdict::Retry`].
async fn decide(policy: &dyn Policy, head: &mut Head<'_>) -> Verdict {
    match settle(policy.apply(head)).await {
        Verdict::Retry => match settle(policy.apply(head)).await {
            Verdict::Retry => Verdict::Invalid,
            verdict => verdict,
        },
        verdict => verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consumers::{Consumer, KeyDigest, Login, Password};
    use std::collections::HashMap;

    /// Fields given as a map of JSON values; problems are collected as text.
    #[derive(Default)]
    pub(super) struct Given {
        pub values: HashMap<&'static str, serde_json::Value>,
        pub problems: Vec<String>,
    }

    impl Given {
        pub fn new(values: &[(&'static str, serde_json::Value)]) -> Given {
            Given {
                values: values.iter().cloned().collect(),
                problems: Vec::new(),
            }
        }
    }

    impl Fields for Given {
        fn text(&mut self, key: &str) -> Result<Option<String>, Reported> {
            match self.values.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(self.problem(key, "not text".into())),
            }
        }
        fn flag(&mut self, key: &str) -> Result<Option<bool>, Reported> {
            match self.values.get(key) {
                None => Ok(None),
                Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err(self.problem(key, "not a flag".into())),
            }
        }
        fn texts(&mut self, key: &str) -> Result<Option<Vec<String>>, Reported> {
            match self.values.get(key) {
                None => Ok(None),
                Some(serde_json::Value::Array(items)) => Ok(Some(
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                )),
                Some(_) => Err(self.problem(key, "not a list".into())),
            }
        }
        fn number(&mut self, key: &str) -> Result<Option<u64>, Reported> {
            match self.values.get(key) {
                None => Ok(None),
                Some(serde_json::Value::Number(n)) if n.is_u64() => Ok(n.as_u64()),
                Some(_) => Err(self.problem(key, "not a whole number".into())),
            }
        }
        fn duration(&mut self, key: &str) -> Result<Option<Duration>, Reported> {
            match self.values.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => crate::config::parse_duration(s)
                    .map(Some)
                    .map_err(|why| self.problem(key, why)),
                Some(_) => Err(self.problem(key, "not a duration".into())),
            }
        }
        fn file(&mut self, key: &str) -> Result<Option<Vec<u8>>, Reported> {
            let Some(path) = self.text(key)? else {
                return Ok(None);
            };
            std::fs::read(&path)
                .map(Some)
                .map_err(|why| self.problem(key, format!("{path}: {why}")))
        }
        fn problem(&mut self, key: &str, message: String) -> Reported {
            self.problems.push(format!("{key}: {message}"));
            Reported
        }
    }

    pub(super) fn policy(name: &str, values: &[(&'static str, serde_json::Value)]) -> PolicyEntry {
        let mut given = Given::new(values);
        let parsed = (kind(name).expect("a known type").parse)(&mut given);
        PolicyEntry(parsed.unwrap_or_else(|_| panic!("{name}: {:?}", given.problems)))
    }

    pub(super) fn directory() -> Arc<Directory> {
        Arc::new(Directory::new(&[
            Consumer {
                name: "alice".into(),
                groups: vec!["admins".into(), "beta".into()],
                api_keys: vec![KeyDigest::of(b"alice-key")],
                basic_auth: Some(Login {
                    username: "alice".into(),
                    password: Password::Digest(KeyDigest::of(b"alice-pw")),
                }),
                jwt_subject: None,
            },
            Consumer {
                name: "bob".into(),
                groups: vec!["users".into()],
                api_keys: vec![KeyDigest::of(b"bob-key")],
                basic_auth: None,
                jwt_subject: None,
            },
        ]))
    }

    pub(super) async fn run(
        chain: &Chain,
        headers: &[(&str, &str)],
        target: &str,
    ) -> (Result<Option<String>, GatewayError>, HeaderMap, Uri) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut uri: Uri = target.parse().unwrap();
        let client = "127.0.0.1:1".parse().unwrap();
        let result = chain.run(&mut map, &mut uri, client, false).await;
        (result.map(|c| c.map(|i| i.name.to_string())), map, uri)
    }

    #[test]
    fn phases_run_in_order_whatever_the_listing() {
        let acl = policy("acl", &[("allow", serde_json::json!(["admins"]))]);
        let key = policy("api_key", &[]);
        let basic = policy("basic_auth", &[]);
        let chain = Chain::new([&acl, &key, &basic], directory());
        assert_eq!(chain.order(), ["api_key", "basic_auth", "acl"]);
        assert!(!chain.is_empty());
        assert!(Chain::default().is_empty());
    }

    #[test]
    fn every_kind_documents_its_fields() {
        for kind in REGISTRY {
            assert!(!kind.doc.is_empty(), "{}", kind.name);
            for field in kind.fields {
                assert!(!field.doc.is_empty(), "{}.{}", kind.name, field.name);
                assert_ne!(field.name, "type");
            }
        }
    }

    #[tokio::test]
    async fn any_authentication_policy_admits_and_none_is_one_401() {
        let chain = Chain::new(
            [&policy("api_key", &[]), &policy("basic_auth", &[])],
            directory(),
        );
        let (admitted, _, _) = run(&chain, &[("x-api-key", "bob-key")], "http://b/").await;
        assert_eq!(admitted.unwrap().as_deref(), Some("bob"));
        let basic = format!("Basic {}", basic_auth::encode("alice", "alice-pw"));
        let (admitted, _, _) = run(&chain, &[("authorization", &basic)], "http://b/").await;
        assert_eq!(admitted.unwrap().as_deref(), Some("alice"));

        let wrong = format!("Basic {}", basic_auth::encode("alice", "nope"));
        let unknown = format!("Basic {}", basic_auth::encode("mallory", "alice-pw"));
        for headers in [
            vec![],
            vec![("x-api-key", "nope")],
            vec![("authorization", wrong.as_str())],
            vec![("authorization", unknown.as_str())],
        ] {
            let (result, _, _) = run(&chain, &headers, "http://b/").await;
            let error = result.unwrap_err();
            assert_eq!(error.kind, ErrorKind::Unauthorized, "{headers:?}");
            assert_eq!(error.message, UNAUTHORIZED_MESSAGE);
            let challenges: Vec<_> = error
                .headers
                .iter()
                .filter(|(n, _)| n == header::WWW_AUTHENTICATE)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
                .collect();
            assert_eq!(
                challenges,
                [
                    "ApiKey header=\"X-API-Key\"",
                    "Basic realm=\"strait\", charset=\"UTF-8\""
                ]
            );
        }
    }

    #[tokio::test]
    async fn authorization_follows_authentication() {
        let chain = Chain::new(
            [
                &policy("acl", &[("allow", serde_json::json!(["admins"]))]),
                &policy("api_key", &[]),
            ],
            directory(),
        );
        let (ok, _, _) = run(&chain, &[("x-api-key", "alice-key")], "http://b/").await;
        assert_eq!(ok.unwrap().as_deref(), Some("alice"));
        let (refused, _, _) = run(&chain, &[("x-api-key", "bob-key")], "http://b/").await;
        assert_eq!(refused.unwrap_err().kind, ErrorKind::Forbidden);
        // An acl alone has no consumer to judge: 401, as Kong's acl answers.
        let alone = Chain::new(
            [&policy("acl", &[("deny", serde_json::json!(["users"]))])],
            directory(),
        );
        let (result, _, _) = run(&alone, &[], "http://b/").await;
        assert_eq!(result.unwrap_err().kind, ErrorKind::Unauthorized);
    }
}
