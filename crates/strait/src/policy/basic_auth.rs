//! `basic_auth`: `Authorization: Basic base64(username:password)` (RFC 7617) checked against
//! the consumers' logins. A password held as an argon2id hash is verified off the async
//! workers (it costs tens of milliseconds), at most one verification per core at a time; a
//! success is remembered in the account's slot, so the next request with the same password
//! costs one SHA-256. Every failure costs one verification — against a decoy hash when
//! the username is unknown — so the time taken does not tell which part was wrong. On success the `Authorization` header is removed before
//! forwarding unless `keep: true`.

use std::sync::Arc;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::header::{self, HeaderValue};

use super::consumers::{Account, KeyDigest, decoy_hash, verify_password};
use super::{Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};
use tokio::sync::Semaphore;

pub const KIND: Kind = Kind {
    name: "basic_auth",
    phase: Phase::Authentication,
    doc: "A consumer's basic-auth username and password (`Authorization: Basic`); the header is removed before forwarding unless `keep`.",
    fields: &[
        Field {
            name: "realm",
            shape: Shape::Text,
            doc: "The realm named in `WWW-Authenticate` (default `strait`).",
        },
        Field {
            name: "keep",
            shape: Shape::Flag,
            doc: "Forward the `Authorization` header to the backend (default false: it is removed).",
        },
    ],
    parse,
};

/// Padding optional: some clients leave it out.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug)]
struct BasicAuth {
    keep: bool,
    challenge: HeaderValue,
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let realm = fields.text("realm");
    let keep = fields.flag("keep");
    let realm = realm?.unwrap_or_else(|| "strait".to_owned());
    if realm
        .bytes()
        .any(|b| b == b'"' || b == b'\\' || !(b == b' ' || b.is_ascii_graphic()))
    {
        return Err(fields.problem(
            "realm",
            format!("realm {realm:?} must be printable ASCII without quotes or backslashes"),
        ));
    }
    let challenge = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
    let challenge = HeaderValue::from_str(&challenge)
        .map_err(|_| fields.problem("realm", format!("realm {realm:?} cannot be sent")))?;
    Ok(Arc::new(BasicAuth {
        keep: keep?.unwrap_or(false),
        challenge,
    }))
}

impl Policy for BasicAuth {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        let Some((username, password)) = head
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| credentials(value.as_bytes()))
        else {
            return Verdict::Unauthenticated;
        };
        let presented = KeyDigest::of(password.as_bytes());
        let account = head.consumers.by_username(&username).cloned();
        if let Some(account) = &account
            && account.cached(&presented)
        {
            return Verdict::Admit(account.identity.clone());
        }
        let slots = head.consumers.verifications.clone();
        Verdict::Later(Box::pin(verify(slots, account, password, presented)))
    }

    fn admitted(&self, head: &mut Head<'_>) {
        if !self.keep {
            head.headers.remove(header::AUTHORIZATION);
        }
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }
}

/// Verifies off the async workers, one verification per core at a time. Without a hash to
/// check (an unknown username, or a password from a file that did not match) the decoy is
/// verified and the answer is no.
async fn verify(
    slots: Arc<Semaphore>,
    account: Option<Arc<Account>>,
    password: String,
    presented: KeyDigest,
) -> Verdict {
    let Ok(_permit) = slots.acquire_owned().await else {
        return Verdict::Unauthenticated;
    };
    let hash = account.as_ref().and_then(|a| a.hash().map(str::to_owned));
    let verified = tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_password(password.as_bytes(), &hash),
        None => {
            if let Some(decoy) = decoy_hash() {
                verify_password(password.as_bytes(), decoy);
            }
            false
        }
    })
    .await
    .unwrap_or(false);
    match account {
        Some(account) if verified => {
            account.remember(presented);
            Verdict::Admit(account.identity.clone())
        }
        _ => Verdict::Unauthenticated,
    }
}

/// The username and password of an `Authorization: Basic ...` value (scheme in any case).
/// The username ends at the first colon; both must be UTF-8.
pub(super) fn credentials(value: &[u8]) -> Option<(String, String)> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = BASE64.decode(rest.trim_ascii()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    Some((username.to_owned(), password.to_owned()))
}

/// The credentials part of a `Basic` header value (for tests and clients).
#[cfg(test)]
pub(super) fn encode(username: &str, password: &str) -> String {
    BASE64.encode(format!("{username}:{password}"))
}

#[cfg(test)]
mod tests {
    use super::super::consumers::{Consumer, Directory, Login, Password, hash_password};
    use super::super::tests::{Given, policy, run};
    use super::super::{Chain, ErrorKind};
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_are_parsed_as_rfc_7617_says() {
        let ok = |v: &str| credentials(v.as_bytes());
        assert_eq!(
            ok("Basic YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            ok("basic   YWxpY2U6cGE6c3M"),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(ok("Basic OnB3"), Some((String::new(), "pw".into())));
        for bad in [
            "Bearer YWxpY2U6cHc=",
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U=",
            "Basic /w==",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }

    #[test]
    fn realms_must_be_quotable() {
        let mut given = Given::new(&[("realm", json!("a\"b"))]);
        assert!((KIND.parse)(&mut given).is_err());
        assert_eq!(given.problems.len(), 1);
    }

    #[tokio::test]
    async fn argon2_hashes_verify_off_thread_and_successes_are_remembered() {
        let hash = hash_password("s3cret").unwrap();
        let directory = Arc::new(Directory::new(&[Consumer {
            name: "carol".into(),
            groups: vec![],
            api_keys: vec![],
            basic_auth: Some(Login {
                username: "carol".into(),
                password: Password::Argon2(hash),
            }),
            jwt_subject: None,
        }]));
        let chain = Chain::new(
            [&policy("basic_auth", &[("keep", json!(true))])],
            directory.clone(),
        );
        let good = format!("Basic {}", encode("carol", "s3cret"));
        let account = directory.by_username("carol").unwrap().clone();
        assert!(!account.cached(&KeyDigest::of(b"s3cret")));
        let (who, headers, _) = run(&chain, &[("authorization", &good)], "http://b/").await;
        assert_eq!(who.unwrap().as_deref(), Some("carol"));
        assert_eq!(headers["authorization"], good.as_str(), "keep: true");
        assert!(account.cached(&KeyDigest::of(b"s3cret")), "remembered");
        let (again, _, _) = run(&chain, &[("authorization", &good)], "http://b/").await;
        assert_eq!(again.unwrap().as_deref(), Some("carol"));
        let bad = format!("Basic {}", encode("carol", "s3creT"));
        let (refused, _, _) = run(&chain, &[("authorization", &bad)], "http://b/").await;
        assert_eq!(refused.unwrap_err().kind, ErrorKind::Unauthorized);
    }
}
