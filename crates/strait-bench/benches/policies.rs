//! What an authentication policy adds to each request: `Chain::admit` (the policy chain a
//! route runs on every request head before it is forwarded) with a valid credential, for
//! chains built from a parsed configuration the way the gateway's snapshot builds them:
//! - `policy_chain/none`: no policies (the baseline: an empty chain);
//! - `policy_chain/api_key`: `{type: api_key}` with a consumer's key in `X-API-Key` (hashed,
//!   looked up among the consumers, removed from the headers);
//! - `policy_chain/jwt_hs256`: `{type: jwt, secret: ...}` with an HS256 bearer token;
//! - `policy_chain/jwt_rs256`: `{type: jwt, public_key_file: ...}` with an RS256 bearer token
//!   (the 2048-bit test key in `crates/strait/tests/fixtures`).
//!
//! Each iteration starts from fresh copies of the request's headers and target (the copy is
//! made outside the timed part); the tokens are signed once, before timing. The chain's
//! policies never wait, so its future is polled once with a no-op waker, without a runtime.

use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use http::uri::Uri;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::json;
use strait::config::{Config, parse_str};
use strait::policy::Chain;
use strait::policy::consumers::Directory;

const API_KEY: &str = "bench-api-key-0123456789abcdef";
const SECRET: &str = "an-hs256-secret-for-benchmarks-only";
const SUBJECT: &str = "alice@example.com";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../strait/tests/fixtures")
        .join(name)
}

/// One environment, one proxy per case (each with only its own policy) and one consumer with
/// an API key and a JWT subject.
fn config() -> Config {
    let public_key = fixture("jwt-rsa.pub.pem");
    let yaml = format!(
        "environments:
  - name: prod
    listen: 127.0.0.1:0
proxies:
  - name: none
    path: /none/*
    backend: http://127.0.0.1:9/
    deploy: [prod]
  - name: api_key
    path: /key/*
    backend: http://127.0.0.1:9/
    deploy: [prod]
    policies:
      - {{type: api_key}}
  - name: jwt_hs256
    path: /hs/*
    backend: http://127.0.0.1:9/
    deploy: [prod]
    policies:
      - {{type: jwt, secret: {SECRET}, algorithms: [HS256]}}
  - name: jwt_rs256
    path: /rs/*
    backend: http://127.0.0.1:9/
    deploy: [prod]
    policies:
      - {{type: jwt, public_key_file: {}, algorithms: [RS256]}}
consumers:
  - name: alice
    credentials:
      api_keys: [{API_KEY}]
      jwt_subject: {SUBJECT}
",
        public_key.display()
    );
    parse_str(&yaml, Path::new("bench.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// The chain of proxy `name`, as the snapshot builds it.
fn chain(config: &Config, consumers: &Arc<Directory>, name: &str) -> Chain {
    let env = &config.environments[0];
    let proxy = config
        .proxies
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("proxy {name}"));
    Chain::new(
        env.policies.iter().chain(&proxy.policies),
        consumers.clone(),
    )
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let now = get_current_timestamp();
    let claims = json!({"sub": SUBJECT, "iat": now, "exp": now + 3600});
    encode(&Header::new(alg), &claims, key).expect("a token")
}

/// `future`'s output, when it is ready at its first poll (the chain's policies never wait).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the chain waited"),
    }
}

fn policies(c: &mut Criterion) {
    let config = config();
    let consumers = Arc::new(Directory::new(&config.consumers));
    let rsa_pem = std::fs::read(fixture("jwt-rsa.pem")).expect("the fixture key");
    let rs256 = token(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&rsa_pem).expect("an RSA signing key"),
    );
    let hs256 = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    let bearer = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).expect("a header value");

    let client: SocketAddr = "127.0.0.1:40000".parse().expect("an address");
    let target: Uri = "/v1/orders/42?page=2".parse().expect("a target");
    let mut common = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
    ] {
        common.insert(name, HeaderValue::from_static(value));
    }
    let with = |name: &'static str, value: HeaderValue| {
        let mut headers = common.clone();
        headers.insert(name, value);
        headers
    };
    let cases = [
        ("none", common.clone(), false),
        (
            "api_key",
            with("x-api-key", HeaderValue::from_static(API_KEY)),
            true,
        ),
        (
            "jwt_hs256",
            with(AUTHORIZATION.as_str(), bearer(&hs256)),
            true,
        ),
        (
            "jwt_rs256",
            with(AUTHORIZATION.as_str(), bearer(&rs256)),
            true,
        ),
    ];

    let mut group = c.benchmark_group("policy_chain");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, headers, consumer) in cases {
        let chain = chain(&config, &consumers, name);
        // Checked once: the credential is accepted and names the consumer.
        let (mut h, mut t) = (headers.clone(), target.clone());
        let admitted = ready(chain.admit(&mut h, &mut t, client, false))
            .unwrap_or_else(|e| panic!("{name}: refused: {e:?}"));
        assert_eq!(admitted.consumer.is_some(), consumer, "{name}");
        group.bench_function(name, |b| {
            b.iter_batched(
                || (headers.clone(), target.clone()),
                |(mut headers, mut target)| {
                    let admission = ready(chain.admit(&mut headers, &mut target, client, false));
                    black_box((admission.is_ok(), headers, target))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, policies);
criterion_main!(benches);
