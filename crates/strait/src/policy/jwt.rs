//! `jwt`: a JSON Web Token (RFC 7519) signed with one of the configured algorithms (never
//! `none`), from `Authorization: Bearer`, else a query parameter, else a cookie (browsers
//! cannot set headers on a WebSocket handshake). The key is an inline HMAC `secret`, a PEM
//! public key (`public_key_file`) or a JWK set (`jwks_file`, or `jwks_url` fetched and
//! refreshed as [`super::jwks`] says; the key chosen by the token's `kid`, a token without
//! one checked against a set of exactly one key). Key files are read and checked with the
//! configuration; a URL is fetched on first use. `exp` is required; `exp` and `nbf` are checked
//! with `clock_skew`, `iss` and `aud` when configured. The consumer is the one whose
//! `jwt_subject` equals the `claim` (default `sub`); with `anonymous: true` a valid token
//! naming no consumer is admitted without one. Every refused token gets the same answer,
//! with `error="invalid_token"` in the challenge (RFC 6750); a missing one, without. An
//! admitted token's claims are handed on for `headers`' `$jwt.<claim>`.
//!
//! A token taken from the query is removed before forwarding unless `keep: true`; the
//! `Authorization` header and cookies are forwarded (backends commonly read the claims).
//! With `close_on_expiry: true`, a WebSocket handshake hands its session a deadline
//! ([`Held::expiry`]): at `exp` plus the skew the session is closed with 1008.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Uri;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::api_key::{query_value, remove_param};
use super::consumers::{Directory, Identity, KeyDigest};
use super::jwks::Remote;
use super::{Expiry, Field, Fields, Head, Held, Kind, Phase, Policy, Reported, Shape, Verdict};

pub const KIND: Kind = Kind {
    name: "jwt",
    phase: Phase::Authentication,
    doc: "A JSON Web Token from `Authorization: Bearer`, a query parameter or a cookie, verified with a secret, a PEM public key or a JWK set; its claim (default `sub`) names the consumer.",
    fields: &[
        Field {
            name: "algorithms",
            shape: Shape::Texts,
            doc: "The accepted signature algorithms (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA); default HS256 with a secret, RS256 with a key file.",
        },
        Field {
            name: "secret",
            shape: Shape::Text,
            doc: "The HMAC secret (write it as `${ENV_VAR}`).",
        },
        Field {
            name: "public_key_file",
            shape: Shape::Text,
            doc: "A PEM public key (RSA, EC or Ed25519), relative to the configuration file.",
        },
        Field {
            name: "jwks_file",
            shape: Shape::Text,
            doc: "A JWK set (JSON), relative to the configuration file; the key is chosen by the token's `kid`.",
        },
        Field {
            name: "jwks_url",
            shape: Shape::Text,
            doc: "An http:// or https:// URL serving a JWK set, fetched on first use and again on a `kid` it lacks (at most once per 10s).",
        },
        Field {
            name: "jwks_refresh",
            shape: Shape::Duration,
            doc: "How often the `jwks_url` set is fetched again (default 5m, at least 10s).",
        },
        Field {
            name: "issuer",
            shape: Shape::Text,
            doc: "The required `iss` claim (unchecked unless set).",
        },
        Field {
            name: "audience",
            shape: Shape::Text,
            doc: "A value the `aud` claim must hold (unchecked unless set).",
        },
        Field {
            name: "claim",
            shape: Shape::Text,
            doc: "The claim matched against consumers' `jwt_subject` (default `sub`).",
        },
        Field {
            name: "clock_skew",
            shape: Shape::Duration,
            doc: "Leeway for `exp` and `nbf` (default 30s).",
        },
        Field {
            name: "anonymous",
            shape: Shape::Flag,
            doc: "Admit a valid token whose claim names no consumer, without a consumer (default false).",
        },
        Field {
            name: "header",
            shape: Shape::Text,
            doc: "The header carrying `Bearer <token>` (default `Authorization`).",
        },
        Field {
            name: "query",
            shape: Shape::Text,
            doc: "A query parameter that may carry the token (off unless set; for browsers' WebSocket handshakes).",
        },
        Field {
            name: "cookie",
            shape: Shape::Text,
            doc: "A cookie that may carry the token (off unless set).",
        },
        Field {
            name: "keep",
            shape: Shape::Flag,
            doc: "Forward a token given in the query to the backend (default false: it is removed).",
        },
        Field {
            name: "close_on_expiry",
            shape: Shape::Flag,
            doc: "Close a WebSocket session with 1008 when its token's `exp` (plus `clock_skew`) passes (default false).",
        },
    ],
    parse,
};

const DEFAULT_HEADER: &str = "Authorization";
const DEFAULT_CLAIM: &str = "sub";
const DEFAULT_SKEW: Duration = Duration::from_secs(30);
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// RFC 6455 §7.4.1: the close code for a session whose token expired.
const POLICY_VIOLATION: u16 = 1008;
const EXPIRED_REASON: &str = "token expired";
const CHALLENGE: &str = "Bearer realm=\"strait\"";
/// RFC 6750 §3.1: a token was presented and refused (expired, forged, wrong audience...).
const INVALID_CHALLENGE: &str = "Bearer realm=\"strait\", error=\"invalid_token\"";

/// Where the keys are.
enum Source {
    /// Given with the configuration.
    Fixed(Keys),
    /// Fetched from `jwks_url`.
    Remote(Arc<Remote<Keys>>),
}

/// What checking a token found.
enum Checked {
    Valid(Map<String, Value>),
    Invalid,
    /// Its `kid` names no key of the fetched set (or no set could be fetched yet).
    UnknownKey(Option<String>),
}

/// The verification keys.
enum Keys {
    /// A secret or a PEM key: every token is checked with it.
    One(DecodingKey),
    /// A JWK set: the token's `kid` picks the key (`None`: the set's key has no `kid`).
    Set(Vec<(Option<String>, DecodingKey)>),
}

impl Keys {
    /// The key for a token whose header names `kid`.
    fn pick(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match (self, kid) {
            (Keys::One(key), _) => Some(key),
            (Keys::Set(keys), Some(kid)) => keys
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid))
                .map(|(_, key)| key),
            (Keys::Set(keys), None) => match keys.as_slice() {
                [(_, key)] => Some(key),
                _ => None,
            },
        }
    }
}

struct Jwt {
    keys: Source,
    /// The SHA-256 of the key material, so `Debug` (which compares configurations) changes
    /// when the key does without showing it.
    key_digest: KeyDigest,
    /// One per family of the configured algorithms: `jsonwebtoken` wants every algorithm of
    /// a validation to fit the key.
    validations: Vec<(Family, Validation)>,
    claim: String,
    anonymous: bool,
    header: HeaderName,
    query: Option<String>,
    cookie: Option<String>,
    keep: bool,
    close_on_expiry: bool,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("key_digest", &self.key_digest)
            .field("validations", &self.validations)
            .field("claim", &self.claim)
            .field("anonymous", &self.anonymous)
            .field("header", &self.header)
            .field("query", &self.query)
            .field("cookie", &self.cookie)
            .field("keep", &self.keep)
            .field("close_on_expiry", &self.close_on_expiry)
            .finish()
    }
}

/// Which kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(algorithm: Algorithm) -> Family {
    match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
    }
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let algorithms = fields.texts("algorithms");
    let secret = fields.text("secret");
    let pem = fields.file("public_key_file");
    let jwks = fields.file("jwks_file");
    let jwks_url = fields.text("jwks_url");
    let refresh = fields.duration("jwks_refresh");
    let issuer = fields.text("issuer");
    let audience = fields.text("audience");
    let claim = fields.text("claim");
    let skew = fields.duration("clock_skew");
    let anonymous = fields.flag("anonymous");
    let header = fields.text("header");
    let query = fields.text("query");
    let cookie = fields.text("cookie");
    let keep = fields.flag("keep");
    let close_on_expiry = fields.flag("close_on_expiry");
    let (secret, pem, jwks, jwks_url, refresh) = (secret?, pem?, jwks?, jwks_url?, refresh?);

    let given = [
        secret.is_some(),
        pem.is_some(),
        jwks.is_some(),
        jwks_url.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(fields.problem(
            "",
            "give exactly one key: secret, public_key_file, jwks_file or jwks_url".into(),
        ));
    }
    if refresh.is_some() && jwks_url.is_none() {
        return Err(fields.problem(
            "jwks_refresh",
            "jwks_refresh is for a JWK set from jwks_url".into(),
        ));
    }
    let refresh = refresh.unwrap_or(DEFAULT_REFRESH);
    if refresh < super::jwks::ON_DEMAND_EVERY {
        return Err(fields.problem(
            "jwks_refresh",
            format!("jwks_refresh {refresh:?} is too short; give 10s or more"),
        ));
    }
    let default = if secret.is_some() { "HS256" } else { "RS256" };
    let written = algorithms?.unwrap_or_else(|| vec![default.to_owned()]);
    let mut parsed = Vec::new();
    for name in &written {
        match Algorithm::from_str(name) {
            Ok(algorithm) => parsed.push(algorithm),
            Err(_) => {
                return Err(fields.problem(
                    "algorithms",
                    format!(
                        "{name:?} is not an algorithm; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"
                    ),
                ));
            }
        }
    }
    let Some(first) = parsed.first().copied() else {
        return Err(fields.problem("algorithms", "list at least one algorithm".into()));
    };
    let families: Vec<Family> = parsed.iter().map(|a| family(*a)).collect();

    let (keys, material) = if let Some(secret) = secret {
        if families.iter().any(|f| *f != Family::Hmac) {
            return Err(fields.problem(
                "algorithms",
                "a secret verifies HS256, HS384 or HS512 only; use public_key_file or jwks_file for the others".into(),
            ));
        }
        let key = DecodingKey::from_secret(secret.as_bytes());
        (Source::Fixed(Keys::One(key)), secret.into_bytes())
    } else if let Some(pem) = pem {
        if families.contains(&Family::Hmac) {
            return Err(fields.problem(
                "algorithms",
                "HS256/384/512 need a secret, not a public key".into(),
            ));
        }
        if families.iter().any(|f| *f != family(first)) {
            return Err(fields.problem(
                "algorithms",
                "one public key verifies one family of algorithms (RS/PS, ES or EdDSA)".into(),
            ));
        }
        let key = match family(first) {
            Family::Rsa => DecodingKey::from_rsa_pem(&pem),
            Family::Ec => DecodingKey::from_ec_pem(&pem),
            Family::Ed | Family::Hmac => DecodingKey::from_ed_pem(&pem),
        };
        let key = key.map_err(|why| {
            fields.problem(
                "public_key_file",
                format!("not a PEM public key for {first:?}: {why}"),
            )
        })?;
        (Source::Fixed(Keys::One(key)), pem)
    } else if let Some(jwks) = jwks {
        if families.contains(&Family::Hmac) {
            return Err(fields.problem(
                "algorithms",
                "HS256/384/512 need a secret, not a JWK set".into(),
            ));
        }
        let keys = jwk_set(&jwks).map_err(|why| fields.problem("jwks_file", why))?;
        (Source::Fixed(keys), jwks)
    } else if let Some(written) = jwks_url {
        if families.contains(&Family::Hmac) {
            return Err(fields.problem(
                "algorithms",
                "HS256/384/512 need a secret, not a JWK set".into(),
            ));
        }
        let url = jwks_url_of(&written).map_err(|why| fields.problem("jwks_url", why))?;
        let remote = Remote::new(url, refresh, usable_jwk_set);
        // The URL and the period stand for the keys in `Debug`.
        let material = format!("{written} {refresh:?}").into_bytes();
        (Source::Remote(Arc::new(remote)), material)
    } else {
        return Err(fields.problem(
            "",
            "give a secret, public_key_file, jwks_file or jwks_url".into(),
        ));
    };

    let skew = skew?.unwrap_or(DEFAULT_SKEW);
    let mut validation = Validation::new(first);
    validation.leeway = skew.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    if let Some(issuer) = issuer? {
        validation.set_issuer(&[issuer]);
    }
    match audience? {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    let mut validations: Vec<(Family, Validation)> = Vec::new();
    for algorithm in parsed {
        let family = family(algorithm);
        match validations.iter_mut().find(|(f, _)| *f == family) {
            Some((_, validation)) => validation.algorithms.push(algorithm),
            None => {
                let mut validation = validation.clone();
                validation.algorithms = vec![algorithm];
                validations.push((family, validation));
            }
        }
    }

    let written = header?.unwrap_or_else(|| DEFAULT_HEADER.to_owned());
    let header = HeaderName::from_bytes(written.as_bytes()).map_err(|_| {
        fields.problem(
            "header",
            format!("header {written:?} is not a header name (letters, digits and - only)"),
        )
    })?;
    let query = query?;
    if let Some(param) = &query
        && !plain_name(param)
    {
        return Err(fields.problem(
            "query",
            format!(
                "query {param:?} is not a plain parameter name (no &, =, #, ?, +, % or spaces)"
            ),
        ));
    }
    let cookie = cookie?;
    if let Some(name) = &cookie
        && (!plain_name(name) || name.contains(';') || name.contains(','))
    {
        return Err(fields.problem("cookie", format!("cookie {name:?} is not a cookie name")));
    }
    Ok(Arc::new(Jwt {
        keys,
        key_digest: KeyDigest::of(&material),
        validations,
        claim: claim?.unwrap_or_else(|| DEFAULT_CLAIM.to_owned()),
        anonymous: anonymous?.unwrap_or(false),
        header,
        query,
        cookie,
        keep: keep?.unwrap_or(false),
        close_on_expiry: close_on_expiry?.unwrap_or(false),
    }))
}

fn plain_name(name: &str) -> bool {
    !name
        .bytes()
        .any(|b| b"&=#?+% ".contains(&b) || !b.is_ascii_graphic())
}

/// `jwks_url` as a URL: http or https, with a host.
fn jwks_url_of(written: &str) -> Result<Uri, String> {
    let url: Uri = written
        .parse()
        .map_err(|why| format!("{written:?} is not a URL: {why}"))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        return Err(format!(
            "{written:?} is not an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}

/// The keys of a fetched JWK set that can verify signatures: others (encryption keys,
/// unsupported types) are left out; a set with none is refused.
fn usable_jwk_set(text: &[u8]) -> Result<Keys, String> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|why| format!("not a JWK set: {why}"))?;
    let keys: Vec<_> = set
        .keys
        .iter()
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((jwk.common.key_id.clone(), key))
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWK set has no key that can verify signatures".into());
    }
    Ok(Keys::Set(keys))
}

/// The keys of a JWK set; a set without keys, or with a key that cannot verify, is refused.
fn jwk_set(text: &[u8]) -> Result<Keys, String> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|why| format!("not a JWK set: {why}"))?;
    if set.keys.is_empty() {
        return Err("the JWK set has no keys".into());
    }
    let mut keys = Vec::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.iter().enumerate() {
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|why| format!("key #{} cannot verify signatures: {why}", index + 1))?;
        keys.push((jwk.common.key_id.clone(), key));
    }
    Ok(Keys::Set(keys))
}

impl Jwt {
    /// The token: `Bearer` in the header, else the query parameter, else the cookie.
    fn token<'h>(&self, headers: &'h HeaderMap, target: &'h Uri) -> Option<Cow<'h, str>> {
        if let Some(token) = headers
            .get_all(&self.header)
            .iter()
            .find_map(|value| bearer(value.as_bytes()))
        {
            return Some(Cow::Borrowed(token));
        }
        if let Some(param) = &self.query
            && let Some(token) = target.query().and_then(|q| query_value(q, param))
            && !token.is_empty()
        {
            return Some(token);
        }
        let name = self.cookie.as_deref()?;
        headers
            .get_all(header::COOKIE)
            .iter()
            .find_map(|value| cookie_value(value.to_str().ok()?, name))
            .map(Cow::Borrowed)
    }

    /// When a token with these (verified) claims stops being valid: `exp` plus the skew.
    fn expiry(&self, claims: &Map<String, Value>) -> Option<SystemTime> {
        let exp = claims.get("exp")?.as_u64()?;
        UNIX_EPOCH
            .checked_add(Duration::from_secs(exp))?
            .checked_add(Duration::from_secs(self.validations.first()?.1.leeway))
    }

    /// The verified claims, or what was wrong.
    fn verify(&self, token: &str) -> Checked {
        let Ok(head) = jsonwebtoken::decode_header(token) else {
            return Checked::Invalid;
        };
        let Some((_, validation)) = self
            .validations
            .iter()
            .find(|(known, _)| *known == family(head.alg))
        else {
            return Checked::Invalid;
        };
        let fetched;
        let key = match &self.keys {
            Source::Fixed(keys) => keys.pick(head.kid.as_deref()),
            Source::Remote(remote) => {
                fetched = remote.current();
                let key = fetched
                    .as_ref()
                    .and_then(|set| set.keys.pick(head.kid.as_deref()));
                if key.is_none() {
                    return Checked::UnknownKey(head.kid);
                }
                key
            }
        };
        let Some(key) = key else {
            return Checked::Invalid;
        };
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
            Ok(data) => Checked::Valid(data.claims),
            Err(_) => Checked::Invalid,
        }
    }

    /// For a token whose key the fetched set lacks: fetch the set again (unless that was
    /// done too recently), then ask again if the key came.
    fn fetch_for(&self, kid: Option<String>) -> Verdict {
        let Source::Remote(remote) = &self.keys else {
            return Verdict::Invalid;
        };
        let Some(fetch) = remote.on_demand() else {
            return Verdict::Invalid;
        };
        let remote = remote.clone();
        Verdict::Later(Box::pin(async move {
            fetch.await;
            let found = remote
                .current()
                .is_some_and(|set| set.keys.pick(kid.as_deref()).is_some());
            if found {
                Verdict::Retry
            } else {
                Verdict::Invalid
            }
        }))
    }
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The value of the cookie `name` in a `Cookie` header (RFC 6265: `a=b; c=d`).
fn cookie_value<'c>(header: &'c str, name: &str) -> Option<&'c str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        let value = value.trim().trim_matches('"');
        (key.trim() == name && !value.is_empty()).then_some(value)
    })
}

/// The consumer the claim names: its text (or number) is a `jwt_subject`.
fn consumer<'d>(
    directory: &'d Directory,
    claims: &Map<String, Value>,
    claim: &str,
) -> Option<&'d Arc<Identity>> {
    match claims.get(claim)? {
        Value::String(subject) => directory.by_subject(subject),
        Value::Number(number) => directory.by_subject(&number.to_string()),
        _ => None,
    }
}

impl Policy for Jwt {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        let Some(token) = self.token(head.headers, head.target) else {
            return Verdict::Unauthenticated;
        };
        if let Source::Remote(remote) = &self.keys {
            remote.refresh_if_stale();
        }
        let claims = match self.verify(&token) {
            Checked::Valid(claims) => claims,
            Checked::Invalid => return Verdict::Invalid,
            Checked::UnknownKey(kid) => return self.fetch_for(kid),
        };
        let verdict = match consumer(head.consumers, &claims, &self.claim) {
            Some(identity) => Verdict::Admit(identity.clone()),
            None if self.anonymous => Verdict::Anonymous,
            // A valid token for no consumer: refused like any bad token, nothing told apart.
            None => return Verdict::Invalid,
        };
        if self.close_on_expiry
            && head.websocket
            && let Some(at) = self.expiry(&claims)
        {
            head.effects.held.push(Held::expiry(Expiry {
                at,
                code: POLICY_VIOLATION,
                reason: EXPIRED_REASON,
            }));
        }
        head.claims = Some(Arc::new(claims));
        verdict
    }

    fn admitted(&self, head: &mut Head<'_>) {
        if self.keep {
            return;
        }
        if let Some(param) = &self.query {
            remove_param(head.target, param);
        }
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(CHALLENGE))
    }

    fn invalid_challenge(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(INVALID_CHALLENGE))
    }

    fn secret_param(&self) -> Option<&str> {
        self.query.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Given, directory, policy, run};
    use super::super::{Chain, UNAUTHORIZED_MESSAGE};
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-long-enough-test-secret";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs256(claims: &Value) -> String {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn directory_with_subject() -> Arc<Directory> {
        use super::super::consumers::Consumer;
        Arc::new(Directory::new(&[Consumer {
            name: "carol".into(),
            groups: vec![],
            api_keys: vec![],
            basic_auth: None,
            jwt_subject: Some("carol@example.com".into()),
        }]))
    }

    #[test]
    fn bearer_and_cookies_are_read() {
        assert_eq!(bearer(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(cookie_value("a=1; token=xyz; b=2", "token"), Some("xyz"));
        assert_eq!(cookie_value("token=\"q\"", "token"), Some("q"));
        assert_eq!(cookie_value("tokens=1", "token"), None);
        assert_eq!(cookie_value("token=", "token"), None);
    }

    #[test]
    fn the_claim_maps_to_a_consumer() {
        let directory = directory_with_subject();
        let claims = |v: Value| v.as_object().cloned().unwrap();
        let found = consumer(
            &directory,
            &claims(json!({"sub": "carol@example.com"})),
            "sub",
        );
        assert_eq!(found.map(|i| &*i.name), Some("carol"));
        let email = claims(json!({"sub": "x", "email": "carol@example.com"}));
        assert_eq!(
            consumer(&directory, &email, "email").map(|i| &*i.name),
            Some("carol")
        );
        assert!(consumer(&directory, &email, "sub").is_none());
        assert!(
            consumer(
                &directory,
                &claims(json!({"sub": ["carol@example.com"]})),
                "sub"
            )
            .is_none()
        );
        assert!(consumer(&directory, &claims(json!({})), "sub").is_none());
    }

    #[tokio::test]
    async fn tokens_come_from_the_header_then_the_query_then_the_cookie() {
        let chain = Chain::new(
            [&policy(
                "jwt",
                &[
                    ("secret", json!(SECRET)),
                    ("query", json!("token")),
                    ("cookie", json!("jwt")),
                ],
            )],
            directory_with_subject(),
        );
        let good = hs256(&json!({"sub": "carol@example.com", "exp": now() + 60}));
        let bearer = format!("Bearer {good}");
        let (who, headers, _) = run(&chain, &[("authorization", &bearer)], "http://b/").await;
        assert_eq!(who.unwrap().as_deref(), Some("carol"));
        assert!(headers.contains_key("authorization"), "forwarded");

        let target = format!("http://b/p?a=1&token={good}");
        let (who, _, target) = run(&chain, &[], &target).await;
        assert_eq!(who.unwrap().as_deref(), Some("carol"));
        assert_eq!(target, "http://b/p?a=1", "removed from the query");

        let cookie = format!("x=1; jwt={good}");
        let (who, _, _) = run(&chain, &[("cookie", &cookie)], "http://b/").await;
        assert_eq!(who.unwrap().as_deref(), Some("carol"));

        let (refused, _, _) = run(&chain, &[("authorization", "Bearer nope")], "http://b/").await;
        assert_eq!(refused.unwrap_err().message, UNAUTHORIZED_MESSAGE);
        assert_eq!(chain.secret_params(), ["token"]);
    }

    #[tokio::test]
    async fn expiry_honours_the_clock_skew_and_audience_issuer_are_checked() {
        let chain = |skew: &str| {
            Chain::new(
                [&policy(
                    "jwt",
                    &[
                        ("secret", json!(SECRET)),
                        ("clock_skew", json!(skew)),
                        ("issuer", json!("https://issuer")),
                        ("audience", json!("strait")),
                    ],
                )],
                directory_with_subject(),
            )
        };
        let claims = |exp: u64, aud: &str, iss: &str| json!({"sub": "carol@example.com", "exp": exp, "aud": aud, "iss": iss});
        let cases = [
            ("30s", claims(now() + 60, "strait", "https://issuer"), true),
            ("30s", claims(now() - 10, "strait", "https://issuer"), true),
            ("0s", claims(now() - 10, "strait", "https://issuer"), false),
            (
                "30s",
                claims(now() - 120, "strait", "https://issuer"),
                false,
            ),
            ("30s", claims(now() + 60, "other", "https://issuer"), false),
            ("30s", claims(now() + 60, "strait", "https://evil"), false),
            ("30s", json!({"sub": "carol@example.com"}), false),
            (
                "30s",
                json!({"sub": "carol@example.com", "exp": now() + 600, "nbf": now() + 300, "aud": "strait", "iss": "https://issuer"}),
                false,
            ),
        ];
        for (skew, claims, admitted) in cases {
            let bearer = format!("Bearer {}", hs256(&claims));
            let (who, _, _) = run(&chain(skew), &[("authorization", &bearer)], "http://b/").await;
            match who {
                Ok(who) => assert!(admitted && who.as_deref() == Some("carol"), "{claims}"),
                Err(error) => {
                    assert!(!admitted, "{claims}");
                    assert_eq!(error.message, UNAUTHORIZED_MESSAGE);
                    assert!(
                        error
                            .headers
                            .iter()
                            .any(|(n, v)| n == header::WWW_AUTHENTICATE && v == INVALID_CHALLENGE)
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn anonymous_admits_a_valid_token_without_a_consumer() {
        let token = hs256(&json!({"sub": "nobody", "exp": now() + 60}));
        let bearer = format!("Bearer {token}");
        let strict = Chain::new([&policy("jwt", &[("secret", json!(SECRET))])], directory());
        let (refused, _, _) = run(&strict, &[("authorization", &bearer)], "http://b/").await;
        assert!(refused.is_err());
        let open = Chain::new(
            [&policy(
                "jwt",
                &[("secret", json!(SECRET)), ("anonymous", json!(true))],
            )],
            directory(),
        );
        let (who, _, _) = run(&open, &[("authorization", &bearer)], "http://b/").await;
        assert_eq!(who.unwrap(), None);
        let (refused, _, _) = run(&open, &[("authorization", "Bearer x.y.z")], "http://b/").await;
        assert!(refused.is_err(), "an invalid token is never anonymous");
    }

    #[tokio::test]
    async fn only_the_configured_algorithms_are_accepted() {
        let chain = Chain::new(
            [&policy(
                "jwt",
                &[("secret", json!(SECRET)), ("algorithms", json!(["HS512"]))],
            )],
            directory_with_subject(),
        );
        let claims = json!({"sub": "carol@example.com", "exp": now() + 60});
        let bearer = format!("Bearer {}", hs256(&claims));
        assert!(
            run(&chain, &[("authorization", &bearer)], "http://b/")
                .await
                .0
                .is_err()
        );
        // alg "none": header {"alg":"none"}, no signature.
        let none = format!(
            "Bearer eyJhbGciOiJub25lIn0.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                claims.to_string()
            )
        );
        assert!(
            run(&chain, &[("authorization", &none)], "http://b/")
                .await
                .0
                .is_err()
        );
    }

    #[tokio::test]
    async fn close_on_expiry_hands_a_websocket_session_its_deadline() {
        let exp = now() + 60;
        let bearer = format!(
            "Bearer {}",
            hs256(&json!({"sub": "carol@example.com", "exp": exp}))
        );
        let deadlines = |close: bool, websocket: bool| {
            let chain = Chain::new(
                [&policy(
                    "jwt",
                    &[
                        ("secret", json!(SECRET)),
                        ("close_on_expiry", json!(close)),
                        ("clock_skew", json!("5s")),
                    ],
                )],
                directory_with_subject(),
            );
            let bearer = bearer.clone();
            async move {
                let mut headers = HeaderMap::new();
                headers.insert(header::AUTHORIZATION, bearer.parse().unwrap());
                let mut target: Uri = "http://b/".parse().unwrap();
                let client = "127.0.0.1:1".parse().unwrap();
                let admission = chain
                    .admit(&mut headers, &mut target, client, websocket)
                    .await
                    .unwrap();
                admission
                    .effects
                    .held
                    .iter()
                    .filter_map(|h| h.expires().cloned())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            deadlines(true, true).await,
            [Expiry {
                at: UNIX_EPOCH + Duration::from_secs(exp + 5),
                code: 1008,
                reason: "token expired",
            }],
            "exp plus the skew"
        );
        assert!(deadlines(true, false).await.is_empty(), "HTTP: nothing");
        assert!(deadlines(false, true).await.is_empty(), "not asked");
    }

    #[tokio::test]
    async fn only_a_refused_token_says_invalid_token() {
        let chain = Chain::new(
            [
                &policy("api_key", &[]),
                &policy("jwt", &[("secret", json!(SECRET))]),
            ],
            directory_with_subject(),
        );
        let challenges = |error: crate::error::GatewayError| {
            error
                .headers
                .iter()
                .filter(|(n, _)| n == header::WWW_AUTHENTICATE)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        let (missing, _, _) = run(&chain, &[], "http://b/").await;
        assert_eq!(
            challenges(missing.unwrap_err()),
            ["ApiKey header=\"X-API-Key\"", CHALLENGE]
        );
        let (bad, _, _) = run(&chain, &[("authorization", "Bearer a.b.c")], "http://b/").await;
        assert_eq!(
            challenges(bad.unwrap_err()),
            ["ApiKey header=\"X-API-Key\"", INVALID_CHALLENGE]
        );
    }

    #[test]
    fn bad_fields_are_problems() {
        for (values, needle) in [
            (vec![], ""),
            (
                vec![("secret", json!("s")), ("jwks_file", json!("/nonexistent"))],
                "jwks_file",
            ),
            (
                vec![("secret", json!("s")), ("algorithms", json!(["none"]))],
                "algorithms",
            ),
            (
                vec![("secret", json!("s")), ("algorithms", json!(["RS256"]))],
                "algorithms",
            ),
            (
                vec![("secret", json!("s")), ("algorithms", json!([]))],
                "algorithms",
            ),
            (
                vec![("secret", json!("s")), ("query", json!("a b"))],
                "query",
            ),
            (
                vec![("secret", json!("s")), ("header", json!("a b"))],
                "header",
            ),
            (
                vec![("jwks_url", json!("ftp://id.example/jwks"))],
                "jwks_url",
            ),
            (vec![("jwks_url", json!("jwks.json"))], "jwks_url"),
            (
                vec![("secret", json!("s")), ("jwks_refresh", json!("1m"))],
                "jwks_refresh",
            ),
            (
                vec![
                    ("jwks_url", json!("https://id.example/jwks")),
                    ("jwks_refresh", json!("10ms")),
                ],
                "jwks_refresh",
            ),
            (
                vec![
                    ("jwks_url", json!("https://id.example/jwks")),
                    ("algorithms", json!(["HS256"])),
                ],
                "algorithms",
            ),
        ] {
            let mut given = Given::new(&values);
            assert!((KIND.parse)(&mut given).is_err(), "{values:?}");
            assert!(
                given.problems.iter().any(|p| p.starts_with(needle)),
                "{:?}",
                given.problems
            );
        }
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{\"keys\": []}").unwrap();
        let not_pem = dir.path().join("key.pem");
        std::fs::write(&not_pem, b"hello").unwrap();
        for (key, path) in [("jwks_file", &bad), ("public_key_file", &not_pem)] {
            let mut given = Given::new(&[(key, json!(path.to_str().unwrap()))]);
            assert!((KIND.parse)(&mut given).is_err());
            assert!(
                given.problems.iter().any(|p| p.starts_with(key)),
                "{:?}",
                given.problems
            );
        }
    }
}
