//! Consumers and their credentials: the validated model (API keys as SHA-256 digests, a
//! basic-auth login whose password is kept as an argon2id PHC string, a JWT subject), the
//! sealing that turns plaintext secrets in a document into those hashed forms before the
//! control plane keeps it, the summary the admin API shows instead, and the [`Directory`]
//! the data plane looks credentials up in.
//!
//! Plaintext never leaves this module's functions: API keys are digested as they are read,
//! a password given in a file is kept only as its digest, and one sent to the admin API is
//! hashed with argon2id before it is stored.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, Params, PasswordHash};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Prefix of an API key digest as written in a file: `sha256:<64 hex digits>`.
pub const DIGEST_PREFIX: &str = "sha256:";

// Bounds on the cost a stored argon2 hash may ask for, so one hash cannot make every
// verification allocate gigabytes: 256 MiB of memory, 16 passes, 16 lanes.
const MAX_M_COST: u32 = 256 * 1024;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;

/// The SHA-256 digest of a secret (an API key, or a password given in a file).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(secret: &[u8]) -> KeyDigest {
        KeyDigest(Sha256::digest(secret).into())
    }

    /// Reads `sha256:<64 hex digits>` (either case).
    pub fn parse(text: &str) -> Result<KeyDigest, String> {
        let hex = text.strip_prefix(DIGEST_PREFIX).ok_or_else(|| {
            format!("a digest is written {DIGEST_PREFIX}<64 hex digits> (the SHA-256 of the key)")
        })?;
        let mut bytes = [0u8; 32];
        let digits = hex.as_bytes();
        if digits.len() != 64 {
            return Err(format!(
                "a SHA-256 digest has 64 hex digits after {DIGEST_PREFIX}, not {}",
                digits.len()
            ));
        }
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let (Some(high), Some(low)) = (
                pair.first().and_then(|d| hex_value(*d)),
                pair.get(1).and_then(|d| hex_value(*d)),
            ) else {
                return Err(format!(
                    "a digest is written {DIGEST_PREFIX} followed by hex digits (0-9, a-f) only"
                ));
            };
            *byte = high << 4 | low;
        }
        Ok(KeyDigest(bytes))
    }

    /// Compares without stopping at the first difference.
    pub fn matches(&self, other: &KeyDigest) -> bool {
        let difference = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DIGEST_PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({self})")
    }
}

/// How a basic-auth password is checked.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// Given in plaintext in a configuration file: only its digest is kept.
    Digest(KeyDigest),
    /// An argon2id PHC string (`$argon2id$v=19$m=...`), checked within the cost bounds.
    Argon2(String),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Digest(_) => f.write_str("Password::Digest(..)"),
            Password::Argon2(_) => f.write_str("Password::Argon2(..)"),
        }
    }
}

/// A basic-auth username and how its password is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: Password,
}

/// A consumer as validated: a named identity with groups and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub groups: Vec<String>,
    /// Every API key, as its digest.
    pub api_keys: Vec<KeyDigest>,
    pub basic_auth: Option<Login>,
    /// The JWT subject (or configured claim value) that maps to this consumer.
    pub jwt_subject: Option<String>,
}

/// Checks that `text` is an argon2id PHC string within the cost bounds.
pub fn check_password_hash(text: &str) -> Result<(), String> {
    let hash = PasswordHash::new(text).map_err(|_| {
        "password_hash must be an argon2id PHC string such as $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>".to_owned()
    })?;
    if hash.algorithm.as_str() != argon2::ARGON2ID_IDENT.as_str() {
        return Err(format!(
            "password_hash uses {}; only argon2id hashes are accepted",
            hash.algorithm
        ));
    }
    let params = Params::try_from(&hash)
        .map_err(|e| format!("password_hash has unusable parameters: {e}"))?;
    if params.m_cost() > MAX_M_COST || params.t_cost() > MAX_T_COST || params.p_cost() > MAX_P_COST
    {
        return Err(format!(
            "password_hash asks for more than m={MAX_M_COST},t={MAX_T_COST},p={MAX_P_COST}; every check would cost that much"
        ));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("password_hash has no salt or no hash part".to_owned());
    }
    Ok(())
}

/// Hashes a password with argon2id and the default parameters (OWASP's: 19 MiB, 2 passes).
/// Costs tens of milliseconds: call it off the async workers.
pub fn hash_password(password: &str) -> Result<String, SealError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| SealError(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`. Costs what the hash's parameters say.
pub fn verify_password(password: &[u8], hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Hashing a password failed (the system's random source did not answer).
#[derive(Debug, thiserror::Error)]
#[error("the password could not be hashed: {0}")]
pub struct SealError(String);

/// The consumer document (as in the YAML) with every plaintext secret replaced by its hashed
/// form: `api_keys` merged into `api_key_digests` (sorted, without repeats) and `password`
/// into `password_hash`. A password that verifies against `previous`'s hash keeps that hash,
/// so sealing the same document twice gives the same result. Values of the wrong shape are
/// left as they are for validation to report. Costs an argon2 hash or verification when a
/// password is given: call it off the async workers.
pub fn seal(body: &Value, previous: Option<&Value>) -> Result<Value, SealError> {
    let mut body = body.clone();
    let Some(credentials) = body.get_mut("credentials").and_then(Value::as_object_mut) else {
        return Ok(body);
    };
    seal_api_keys(credentials);
    let previous_hash = previous
        .and_then(|p| p.pointer("/credentials/basic_auth/password_hash"))
        .and_then(Value::as_str);
    if let Some(login) = credentials
        .get_mut("basic_auth")
        .and_then(Value::as_object_mut)
        && let Some(Value::String(password)) = login.get("password")
        && !password.is_empty()
    {
        let hash = match previous_hash {
            Some(hash) if verify_password(password.as_bytes(), hash) => hash.to_owned(),
            _ => hash_password(password)?,
        };
        login.remove("password");
        login.insert("password_hash".into(), Value::String(hash));
    }
    Ok(body)
}

/// `api_keys` (when every entry is non-empty text) become digests, merged with
/// `api_key_digests` (when every entry is a digest) in one sorted list without repeats.
fn seal_api_keys(credentials: &mut Map<String, Value>) {
    let keys: Option<Vec<KeyDigest>> = match credentials.get("api_keys") {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item.as_str() {
                Some(key) if !key.is_empty() => Some(KeyDigest::of(key.as_bytes())),
                _ => None,
            })
            .collect(),
        Some(_) => None,
    };
    let digests: Option<Vec<KeyDigest>> = match credentials.get("api_key_digests") {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().and_then(|t| KeyDigest::parse(t).ok()))
            .collect(),
        Some(_) => None,
    };
    let (Some(keys), Some(digests)) = (keys, digests) else {
        return;
    };
    let mut all: Vec<String> = keys.iter().chain(&digests).map(|d| d.to_string()).collect();
    all.sort();
    all.dedup();
    credentials.remove("api_keys");
    if all.is_empty() {
        credentials.remove("api_key_digests");
    } else {
        let all = all.into_iter().map(Value::String).collect();
        credentials.insert("api_key_digests".into(), Value::Array(all));
    }
}

/// Whether a consumer document still holds a plaintext secret (`api_keys` or `password`).
pub fn has_plaintext(body: &Value) -> bool {
    body.pointer("/credentials/api_keys").is_some()
        || body.pointer("/credentials/basic_auth/password").is_some()
}

/// What the admin API shows of a (sealed) consumer: its name, groups and which credentials
/// it has — the number of API keys and the basic-auth username — never a secret or a hash.
pub fn summary(body: &Value) -> Value {
    let mut credentials = Map::new();
    let api_keys = body
        .pointer("/credentials/api_key_digests")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    credentials.insert("api_keys".into(), Value::from(api_keys));
    if let Some(username) = body.pointer("/credentials/basic_auth/username") {
        credentials.insert(
            "basic_auth".into(),
            serde_json::json!({"username": username}),
        );
    }
    if let Some(subject) = body.pointer("/credentials/jwt_subject") {
        credentials.insert("jwt_subject".into(), subject.clone());
    }
    serde_json::json!({
        "name": body.get("name").cloned().unwrap_or(Value::Null),
        "groups": body.get("groups").cloned().unwrap_or_else(|| Value::Array(Vec::new())),
        "credentials": credentials,
    })
}

/// An authenticated consumer as the data plane carries it.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: Arc<str>,
    pub groups: Vec<Arc<str>>,
}

/// A basic-auth login in the directory.
#[derive(Debug)]
pub struct Account {
    pub identity: Arc<Identity>,
    /// `None`: the password was given in a file and only `verified` can match it.
    hash: Option<String>,
    /// The digest of the password that last verified (or of the file's password). One slot
    /// per account bounds the cache by the number of consumers; `OnceLock` makes a hit one
    /// atomic load, no lock. It lives in the snapshot, so a new password starts empty.
    verified: OnceLock<KeyDigest>,
}

impl Account {
    /// Whether `password` is the one that verified before (constant-time comparison).
    pub fn cached(&self, password: &KeyDigest) -> bool {
        self.verified
            .get()
            .is_some_and(|known| known.matches(password))
    }

    /// The argon2 hash to verify against on a cache miss (`None`: nothing else can match).
    pub fn hash(&self) -> Option<&str> {
        self.hash.as_deref()
    }

    /// Remembers a password that verified.
    pub fn remember(&self, password: KeyDigest) {
        let _ = self.verified.set(password);
    }
}

/// Every consumer's credentials, compiled into the snapshot: API key digests and basic-auth
/// usernames to identities. Immutable once built, except the verification slots.
#[derive(Debug)]
pub struct Directory {
    by_key: HashMap<KeyDigest, Arc<Identity>>,
    by_username: HashMap<String, Arc<Account>>,
    by_subject: HashMap<String, Arc<Identity>>,
    /// Bounds concurrent argon2 verifications to the number of cores, so a flood of wrong
    /// passwords queues instead of taking every blocking thread.
    pub verifications: Arc<Semaphore>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new(&[])
    }
}

impl Directory {
    pub fn new(consumers: &[Consumer]) -> Directory {
        let mut directory = Directory {
            by_key: HashMap::new(),
            by_username: HashMap::new(),
            by_subject: HashMap::new(),
            verifications: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, usize::from),
            )),
        };
        for consumer in consumers {
            let identity = Arc::new(Identity {
                name: Arc::from(consumer.name.as_str()),
                groups: consumer
                    .groups
                    .iter()
                    .map(|g| Arc::from(g.as_str()))
                    .collect(),
            });
            for key in &consumer.api_keys {
                directory.by_key.insert(*key, identity.clone());
            }
            if let Some(login) = &consumer.basic_auth {
                let (hash, verified) = match &login.password {
                    Password::Digest(digest) => (None, OnceLock::from(*digest)),
                    Password::Argon2(hash) => (Some(hash.clone()), OnceLock::new()),
                };
                let account = Account {
                    identity: identity.clone(),
                    hash,
                    verified,
                };
                directory
                    .by_username
                    .insert(login.username.clone(), Arc::new(account));
            }
            if let Some(subject) = &consumer.jwt_subject {
                directory.by_subject.insert(subject.clone(), identity);
            }
        }
        directory
    }

    /// The consumer holding the API key with this digest.
    pub fn by_api_key(&self, digest: &KeyDigest) -> Option<&Arc<Identity>> {
        self.by_key.get(digest)
    }

    pub fn by_username(&self, username: &str) -> Option<&Arc<Account>> {
        self.by_username.get(username)
    }

    /// The consumer a JWT subject maps to.
    pub fn by_subject(&self, subject: &str) -> Option<&Arc<Identity>> {
        self.by_subject.get(subject)
    }
}

/// A hash to verify against when the username is unknown, so that case costs what a wrong
/// password costs and the timing does not tell which was wrong. Made once per process.
pub fn decoy_hash() -> Option<&'static str> {
    static DECOY: OnceLock<Option<String>> = OnceLock::new();
    DECOY
        .get_or_init(|| hash_password("strait decoy password").ok())
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digests_read_back_and_compare() {
        let digest = KeyDigest::of(b"k3y");
        let text = digest.to_string();
        assert!(
            text.starts_with("sha256:") && text.len() == 7 + 64,
            "{text}"
        );
        assert_eq!(KeyDigest::parse(&text).unwrap(), digest);
        assert_eq!(
            KeyDigest::parse(&text.to_uppercase().replace("SHA256", "sha256")).unwrap(),
            digest
        );
        assert!(digest.matches(&KeyDigest::of(b"k3y")));
        assert!(!digest.matches(&KeyDigest::of(b"k3z")));
        for bad in ["", "sha256:", "md5:00", "sha256:zz", &format!("{text}0")] {
            assert!(KeyDigest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_hashes_are_checked() {
        let hash = hash_password("pw").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(check_password_hash(&hash).is_ok());
        assert!(verify_password(b"pw", &hash));
        assert!(!verify_password(b"pW", &hash));
        let argon2i = hash.replace("$argon2id$", "$argon2i$");
        assert!(
            check_password_hash(&argon2i)
                .unwrap_err()
                .contains("argon2id")
        );
        let costly = hash.replace("m=19456", "m=4194304");
        assert!(
            check_password_hash(&costly)
                .unwrap_err()
                .contains("more than")
        );
        assert!(check_password_hash("hunter2").is_err());
    }

    #[test]
    fn sealing_hashes_every_secret_and_is_stable() {
        let body = json!({"name": "alice", "credentials": {
            "api_keys": ["b-key", "a-key", "b-key"],
            "api_key_digests": [KeyDigest::of(b"c-key").to_string()],
            "basic_auth": {"username": "alice", "password": "pw"},
        }});
        let sealed = seal(&body, None).unwrap();
        assert!(!has_plaintext(&sealed));
        let text = sealed.to_string();
        assert!(
            !text.contains("a-key") && !text.contains("\"pw\""),
            "{text}"
        );
        let digests = sealed["credentials"]["api_key_digests"].as_array().unwrap();
        assert_eq!(digests.len(), 3, "repeats merged: {digests:?}");
        let mut sorted = digests.clone();
        sorted.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        assert_eq!(&sorted, digests);
        let hash = sealed["credentials"]["basic_auth"]["password_hash"]
            .as_str()
            .unwrap();
        assert!(verify_password(b"pw", hash));
        // Sealing again against what was stored keeps the same hash: nothing changed.
        assert_eq!(seal(&body, Some(&sealed)).unwrap(), sealed);
        // A sealed document seals to itself.
        assert_eq!(seal(&sealed, None).unwrap(), sealed);
        // Another password gets another hash.
        let changed = json!({"name": "alice", "credentials": {"basic_auth": {"username": "alice", "password": "other"}}});
        let resealed = seal(&changed, Some(&sealed)).unwrap();
        assert_ne!(resealed["credentials"]["basic_auth"]["password_hash"], hash);
    }

    #[test]
    fn wrong_shapes_are_left_for_validation() {
        let body = json!({"credentials": {"api_keys": ["ok", 5], "basic_auth": {"password": 7}}});
        assert_eq!(seal(&body, None).unwrap(), body);
        assert!(has_plaintext(&body));
    }

    #[test]
    fn the_summary_shows_no_secret() {
        let sealed = seal(
            &json!({"name": "alice", "groups": ["admins"], "credentials": {
                "api_keys": ["k1", "k2"], "basic_auth": {"username": "al", "password": "pw"},
                "jwt_subject": "alice@example.com"}}),
            None,
        )
        .unwrap();
        assert_eq!(
            summary(&sealed),
            json!({"name": "alice", "groups": ["admins"], "credentials": {
                "api_keys": 2, "basic_auth": {"username": "al"}, "jwt_subject": "alice@example.com"}})
        );
    }

    #[test]
    fn the_directory_finds_consumers_by_credential() {
        let consumers = [Consumer {
            name: "alice".into(),
            groups: vec!["admins".into()],
            api_keys: vec![KeyDigest::of(b"k")],
            basic_auth: Some(Login {
                username: "al".into(),
                password: Password::Digest(KeyDigest::of(b"pw")),
            }),
            jwt_subject: Some("alice@example.com".into()),
        }];
        let directory = Directory::new(&consumers);
        assert_eq!(
            &*directory.by_api_key(&KeyDigest::of(b"k")).unwrap().name,
            "alice"
        );
        assert!(directory.by_api_key(&KeyDigest::of(b"x")).is_none());
        let account = directory.by_username("al").unwrap();
        assert!(account.cached(&KeyDigest::of(b"pw")));
        assert!(!account.cached(&KeyDigest::of(b"pW")));
        assert!(account.hash().is_none());
        assert_eq!(
            directory.by_subject("alice@example.com").map(|i| &*i.name),
            Some("alice")
        );
    }
}
