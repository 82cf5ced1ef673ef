//! The `jwt` policy end to end, with real clients over loopback, on HTTP and on WebSocket:
//! RS256 and ES256 tokens verified with a JWK set chosen by `kid`, RS256 with a PEM public
//! key, HS256 with an inline secret; expired tokens, a wrong audience or issuer, an unknown
//! key all get the same 401; the token from the query on a WebSocket handshake (removed
//! before the backend, masked in the connection list); the consumer mapped from `sub` owning
//! the session; `anonymous`; key files resolved against the configuration file.
//!
//! `fixtures/jwt-rsa.pem` is a test-only RSA key (PKCS#1), `jwt-rsa.pub.pem` its public key
//! and `jwt-rsa.jwk.json` the same as a JWK (`kid: test-rsa`). The EC key is made per run.

mod support;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderMap, Method, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};
use strait::echo;
use support::{Stack, expect_close, json_of, round_trip, with_prod, within};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "an-hs256-secret-for-tests-only";
const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "strait-api";
const SUBJECT: &str = "carol@example.com";
const CHALLENGE: &str = "Bearer realm=\"strait\"";
const INVALID: &str = "Bearer realm=\"strait\", error=\"invalid_token\"";
const UNAUTHORIZED: &str =
    "this API proxy needs valid credentials, and the request did not present any";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The signing keys: the fixture RSA key and an EC P-256 key made for this run.
struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
    /// The JWK set with both public keys (`test-rsa`, `test-ec`).
    jwks: Value,
}

fn keys() -> Keys {
    let rsa_pem = std::fs::read(fixture("jwt-rsa.pem")).expect("the fixture key");
    let rsa_jwk: Value = serde_json::from_slice(
        &std::fs::read(fixture("jwt-rsa.jwk.json")).expect("the fixture JWK"),
    )
    .expect("JSON");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("an EC key");
    let point = ec.public_key_raw();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "test-ec", "use": "sig",
        "x": base64url(&point[1..33]), "y": base64url(&point[33..])});
    Keys {
        rsa: EncodingKey::from_rsa_pem(&rsa_pem).expect("an RSA signing key"),
        ec: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("an EC signing key"),
        jwks: json!({"keys": [rsa_jwk, ec_jwk]}),
    }
}

fn claims(sub: &str, exp_from_now: i64, aud: &str) -> Value {
    let now = i64::try_from(get_current_timestamp()).expect("a timestamp");
    json!({"sub": sub, "iss": ISSUER, "aud": aud, "iat": now, "exp": now + exp_from_now})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut head = Header::new(alg);
    head.kid = kid.map(str::to_owned);
    encode(&head, claims, key).expect("a token")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

/// A stateful gateway: environment `prod` (WebSocket on), consumer carol (`jwt_subject`
/// carol@example.com), all proxies to the echo backend: `/jwks/*` RS256 or ES256 from a JWK
/// set with issuer and audience, the token also from `?access_token=`; `/pem/*` RS256 with
/// the fixture's PEM public key; `/hs/*` HS256 with an inline secret, also from cookie
/// `jwt`; `/anon/*` HS256 admitting valid tokens that name no consumer; `/expiring/*` HS256
/// with `close_on_expiry` and no clock skew.
struct Fixture {
    api: Stack,
    _echo: echo::EchoHandle,
    keys: Keys,
    _files: tempfile::TempDir,
}

async fn setup() -> Fixture {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let keys = keys();
    let files = tempfile::tempdir().expect("a folder");
    let jwks = files.path().join("jwks.json");
    std::fs::write(&jwks, keys.jwks.to_string()).expect("write the JWK set");
    let api = with_prod().await;
    api.put(
        "/consumers/carol",
        &json!({"groups": ["users"], "credentials": {"jwt_subject": SUBJECT}}),
    )
    .await
    .expect(201, "consumer");
    let echo_url = format!("http://{}/svc", echo.local_addr());
    let proxies = [
        (
            "jwks",
            json!({"type": "jwt", "algorithms": ["RS256", "ES256"],
                   "jwks_file": jwks.to_str().expect("utf-8"),
                   "issuer": ISSUER, "audience": AUDIENCE, "query": "access_token"}),
        ),
        (
            "pem",
            json!({"type": "jwt", "algorithms": ["RS256"],
                   "public_key_file": fixture("jwt-rsa.pub.pem").to_str().expect("utf-8")}),
        ),
        (
            "hs",
            json!({"type": "jwt", "secret": SECRET, "cookie": "jwt"}),
        ),
        (
            "anon",
            json!({"type": "jwt", "secret": SECRET, "anonymous": true}),
        ),
        (
            "expiring",
            json!({"type": "jwt", "secret": SECRET, "close_on_expiry": true, "clock_skew": "0s"}),
        ),
    ];
    for (name, policy) in proxies {
        api.put(
            &format!("/proxies/{name}"),
            &json!({"path": format!("/{name}/*"), "backend": echo_url, "policies": [policy]}),
        )
        .await
        .expect(201, &format!("proxy {name}"));
        api.deploy(name, "prod").await;
    }
    Fixture {
        api,
        _echo: echo,
        keys,
        _files: files,
    }
}

async fn send(api: &Stack, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Bytes) {
    api.request(Method::GET, "prod", path, headers, Bytes::new())
        .await
}

/// Asserts the one 401 for a refused token: JSON error, the one message, the Bearer
/// challenge with `error="invalid_token"`.
#[track_caller]
fn assert_unauthorized(answer: &(u16, HeaderMap, Bytes), what: &str) {
    assert_401(answer, INVALID, what);
}

#[track_caller]
fn assert_401(answer: &(u16, HeaderMap, Bytes), challenge: &str, what: &str) {
    let (status, headers, body) = answer;
    assert_eq!(*status, 401, "{what}: {}", String::from_utf8_lossy(body));
    let sent: Vec<&str> = headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(sent, [challenge], "{what}");
    assert_eq!(
        json_of(body),
        json!({"status": 401, "error": "unauthorized", "message": UNAUTHORIZED}),
        "{what}: the same answer whatever was wrong"
    );
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_jwks_file_are_checked_over_http() {
    let fx = setup().await;
    let api = &fx.api;
    let good = claims(SUBJECT, 300, AUDIENCE);
    let rsa = sign(Algorithm::RS256, Some("test-rsa"), &fx.keys.rsa, &good);
    let (status, _, body) = send(api, "/jwks/a", &[("authorization", &bearer(&rsa))]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        json_of(&body)["headers"]["authorization"],
        bearer(&rsa),
        "the header reaches the backend, which may read the claims"
    );
    let ec = sign(Algorithm::ES256, Some("test-ec"), &fx.keys.ec, &good);
    let (status, _, _) = send(api, "/jwks/a", &[("authorization", &bearer(&ec))]).await;
    assert_eq!(status, 200, "the EC key of the set, by kid");

    let refused = [
        (
            sign(
                Algorithm::RS256,
                Some("test-rsa"),
                &fx.keys.rsa,
                &claims(SUBJECT, -120, AUDIENCE),
            ),
            "expired beyond the clock skew",
        ),
        (
            sign(
                Algorithm::RS256,
                Some("test-rsa"),
                &fx.keys.rsa,
                &claims(SUBJECT, 300, "another-api"),
            ),
            "a wrong audience",
        ),
        (
            sign(Algorithm::RS256, Some("unknown"), &fx.keys.rsa, &good),
            "an unknown kid",
        ),
        (
            sign(Algorithm::RS256, None, &fx.keys.rsa, &good),
            "no kid with a set of two keys",
        ),
        (
            sign(Algorithm::ES256, Some("test-rsa"), &fx.keys.ec, &good),
            "the EC key presented as the RSA one",
        ),
        (hs256(&good), "HS256 is not among the algorithms"),
        (
            sign(
                Algorithm::RS256,
                Some("test-rsa"),
                &fx.keys.rsa,
                &claims("nobody@example.com", 300, AUDIENCE),
            ),
            "a subject that is no consumer",
        ),
    ];
    for (token, what) in &refused {
        let answer = send(api, "/jwks/a", &[("authorization", &bearer(token))]).await;
        assert_unauthorized(&answer, what);
    }
    assert_401(&send(api, "/jwks/a", &[]).await, CHALLENGE, "no token");
    assert_401(
        &send(api, "/jwks/a", &[("authorization", "Basic YTpi")]).await,
        CHALLENGE,
        "another scheme is no token",
    );
    assert_unauthorized(
        &send(api, "/jwks/a", &[("authorization", "Bearer not.a.token")]).await,
        "garbage",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_key_an_inline_secret_a_cookie_and_anonymous_tokens() {
    let fx = setup().await;
    let api = &fx.api;
    let good = claims(SUBJECT, 300, "any");
    let rsa = sign(Algorithm::RS256, None, &fx.keys.rsa, &good);
    let (status, _, _) = send(api, "/pem/a", &[("authorization", &bearer(&rsa))]).await;
    assert_eq!(status, 200, "RS256 with the PEM public key");

    let hs = hs256(&good);
    let (status, _, _) = send(api, "/hs/a", &[("authorization", &bearer(&hs))]).await;
    assert_eq!(status, 200, "HS256 with the inline secret");
    let cookie = format!("theme=dark; jwt={hs}");
    let (status, _, _) = send(api, "/hs/a", &[("cookie", &cookie)]).await;
    assert_eq!(status, 200, "HS256 from the cookie");
    let expired = hs256(&claims(SUBJECT, -3600, "any"));
    assert_unauthorized(
        &send(api, "/hs/a", &[("authorization", &bearer(&expired))]).await,
        "an expired HS256 token",
    );
    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another secret"),
        &good,
    );
    assert_unauthorized(
        &send(api, "/hs/a", &[("authorization", &bearer(&forged))]).await,
        "a token signed with another secret",
    );

    let stranger = hs256(&claims("nobody@example.com", 300, "any"));
    let (status, _, _) = send(api, "/anon/a", &[("authorization", &bearer(&stranger))]).await;
    assert_eq!(status, 200, "anonymous: a valid token naming no consumer");
    assert_unauthorized(
        &send(api, "/anon/a", &[("authorization", &bearer(&expired))]).await,
        "anonymous admits valid tokens only",
    );
    assert_unauthorized(
        &send(api, "/hs/a", &[("authorization", &bearer(&stranger))]).await,
        "without anonymous, a token naming no consumer",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_with_the_token_in_the_query() {
    let fx = setup().await;
    let api = &fx.api;
    let token = sign(
        Algorithm::RS256,
        Some("test-rsa"),
        &fx.keys.rsa,
        &claims(SUBJECT, 300, AUDIENCE),
    );
    let url = format!("ws://{}/jwks/room?x=1&access_token={token}", api.gw("prod"));
    let (mut ws, response) = within("the handshake", connect_async(url))
        .await
        .expect("a token in the query admits the handshake");
    assert_eq!(
        response.headers()[echo::ECHO_URI_HEADER],
        "/svc/room?x=1",
        "the token's parameter is removed before the backend"
    );
    round_trip(&mut ws, "hello").await;

    let listed = api.get("/connections").await.expect(200, "list").json();
    let connections = listed["connections"].as_array().expect("a list");
    assert_eq!(connections.len(), 1, "{listed}");
    assert_eq!(connections[0]["consumer"], "carol", "mapped from sub");
    assert!(
        !listed.to_string().contains(&token),
        "no token in the list: {listed}"
    );

    // A header on a handshake works too; an expired token is refused with the 401.
    let mut request = format!("ws://{}/hs/room", api.gw("prod"))
        .into_client_request()
        .expect("a request");
    let expired = hs256(&claims(SUBJECT, -3600, "any"));
    request.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&bearer(&expired)).expect("value"),
    );
    match within("the refused handshake", connect_async(request)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401);
            assert_eq!(response.headers()[header::WWW_AUTHENTICATE], INVALID);
        }
        Err(other) => panic!("the handshake failed without an answer: {other}"),
        Ok(_) => panic!("an expired token was admitted"),
    }
    let url = format!("ws://{}/jwks/room?access_token=bad", api.gw("prod"));
    assert!(
        matches!(
            within("the refused handshake", connect_async(url)).await,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401
        ),
        "a bad token in the query"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_on_expiry_closes_a_live_session_with_1008() {
    let fx = setup().await;
    let api = &fx.api;
    // Expires in two seconds (`exp` counts whole seconds); no clock skew on that proxy. The
    // same token opens a session on `/hs/*` (no option, 30s skew) as a control.
    let token = hs256(&claims(SUBJECT, 2, "any"));
    let open = |path: &str| {
        let mut request = format!("ws://{}{path}", api.gw("prod"))
            .into_client_request()
            .expect("a request");
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&bearer(&token)).expect("value"),
        );
        connect_async(request)
    };
    let (mut expiring, _) = within("the handshake", open("/expiring/room"))
        .await
        .expect("a valid token admits the handshake");
    let (mut kept, _) = within("the handshake", open("/hs/room"))
        .await
        .expect("admitted");
    round_trip(&mut expiring, "while valid").await;
    round_trip(&mut kept, "while valid").await;

    let frame = within("the close at expiry", expect_close(&mut expiring)).await;
    assert_eq!(u16::from(frame.code), 1008);
    assert_eq!(frame.reason.as_str(), "token expired");
    // The token has expired by now; without the option the session goes on.
    round_trip(&mut kept, "still here").await;
    let listed = api.get("/connections").await.expect(200, "list").json();
    let kept_listed = listed["connections"]
        .as_array()
        .is_some_and(|all| all.iter().any(|c| c["proxy"] == "hs"));
    assert!(kept_listed, "{listed}");
}

#[test]
fn key_files_are_read_relative_to_the_configuration_and_checked() {
    let dir = tempfile::tempdir().expect("a folder");
    std::fs::write(dir.path().join("jwks.json"), keys().jwks.to_string()).expect("write");
    let yaml = |file: &str| {
        format!(
            "environments:\n  - name: prod\n    listen: 127.0.0.1:0\nproxies:\n  - name: api\n    path: /api/*\n    backend: http://127.0.0.1:9/\n    policies:\n      - {{type: jwt, {file}}}\n    deploy: [prod]\n"
        )
    };
    let config = dir.path().join("strait.yaml");
    std::fs::write(&config, yaml("jwks_file: jwks.json")).expect("write");
    strait::config::load(&config).expect("a JWK set beside the configuration file");

    for (file, needle) in [
        ("jwks_file: missing.json", "missing.json"),
        ("public_key_file: jwks.json", "not a PEM public key"),
        ("secret: s, jwks_file: jwks.json", "exactly one key"),
    ] {
        std::fs::write(&config, yaml(file)).expect("write");
        let problem = strait::config::load(&config).expect_err(file).to_string();
        assert!(problem.contains(needle), "{file}: {problem}");
    }
}

/// A JWKS server on 127.0.0.1:0: serves the document it holds now, counting the fetches.
struct JwksServer {
    addr: std::net::SocketAddr,
    document: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(document: Value) -> JwksServer {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let document = std::sync::Arc::new(std::sync::Mutex::new(document));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (served, counted) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let text = served.lock().expect("not poisoned").to_string();
                        async move {
                            let response = http::Response::builder()
                                .header(header::CONTENT_TYPE, "application/json")
                                .body(http_body_util::Full::new(Bytes::from(text)))
                                .expect("a response");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            document,
            fetches,
        }
    }

    fn serve(&self, document: Value) {
        *self.document.lock().expect("not poisoned") = document;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The fixture RSA public key as a JWK set of one key named `kid`.
fn rsa_set(kid: &str) -> Value {
    let mut jwk: Value = serde_json::from_slice(
        &std::fs::read(fixture("jwt-rsa.jwk.json")).expect("the fixture JWK"),
    )
    .expect("JSON");
    jwk["kid"] = json!(kid);
    json!({"keys": [jwk]})
}

/// A gateway with `/remote/*` to the echo backend: `jwt` with `jwks_url` (token also from
/// `?access_token=`) and `headers` handing `$jwt.email` to the client.
async fn remote_setup(jwks_url: &str) -> (Stack, echo::EchoHandle) {
    let echo = echo::spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the echo backend starts");
    let api = with_prod().await;
    api.put(
        "/consumers/carol",
        &json!({"groups": ["users"], "credentials": {"jwt_subject": SUBJECT}}),
    )
    .await
    .expect(201, "consumer");
    let policies = json!([
        {"type": "jwt", "jwks_url": jwks_url, "query": "access_token"},
        {"type": "headers", "response_set": ["X-Email: $jwt.email"]},
    ]);
    api.put(
        "/proxies/remote",
        &json!({"path": "/remote/*", "backend": format!("http://{}/svc", echo.local_addr()),
                "policies": policies}),
    )
    .await
    .expect(201, "proxy");
    api.deploy("remote", "prod").await;
    (api, echo)
}

fn rsa_token(kid: &str) -> String {
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rsa.pem")).expect("key"))
        .expect("an RSA signing key");
    let mut claims = claims(SUBJECT, 300, "any");
    claims["email"] = json!("carol@mail.example");
    sign(Algorithm::RS256, Some(kid), &key, &claims)
}

/// A WebSocket handshake with the token in the query: the 101's headers, or the refusal.
async fn ws_handshake(
    api: &Stack,
    token: &str,
) -> Result<(support::Ws, tokio_tungstenite::tungstenite::http::HeaderMap), u16> {
    let url = format!("ws://{}/remote/room?access_token={token}", api.gw("prod"));
    match within("the handshake", connect_async(url)).await {
        Ok((ws, response)) => Ok((ws, response.headers().clone())),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(other) => panic!("the handshake failed without an answer: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_on_first_use_and_again_once_for_an_unknown_kid() {
    let jwks = JwksServer::start(rsa_set("key-a")).await;
    let (api, _echo) = remote_setup(&format!("http://{}/jwks.json", jwks.addr)).await;
    assert_eq!(jwks.fetches(), 0, "fetched on first use");

    let a = rsa_token("key-a");
    for _ in 0..2 {
        let (status, headers, body) =
            send(&api, "/remote/x", &[("authorization", &bearer(&a))]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers["x-email"], "carol@mail.example", "$jwt.email");
    }
    assert_eq!(jwks.fetches(), 1, "fetched once, then cached");

    // The server rotates to kid key-b: its token fetches the set once more and passes.
    jwks.serve(rsa_set("key-b"));
    let b = rsa_token("key-b");
    let (status, _, body) = send(&api, "/remote/x", &[("authorization", &bearer(&b))]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(jwks.fetches(), 2, "exactly one fetch for the unknown kid");
    let (status, _, _) = send(&api, "/remote/x", &[("authorization", &bearer(&b))]).await;
    assert_eq!(status, 200);
    assert_eq!(jwks.fetches(), 2, "key-b is now cached");

    // Unknown kids within the window: refused, without fetching.
    for kid in ["key-c", "key-d", "key-c", "key-a"] {
        let token = rsa_token(kid);
        let answer = send(&api, "/remote/x", &[("authorization", &bearer(&token))]).await;
        assert_unauthorized(&answer, kid);
    }
    assert_eq!(
        jwks.fetches(),
        2,
        "unknown kids do not hammer the JWKS server"
    );

    // A WebSocket handshake: the cached key admits it; an unknown kid is refused, unfetched.
    let (mut ws, headers) = ws_handshake(&api, &b).await.expect("a 101");
    assert_eq!(
        headers["x-email"], "carol@mail.example",
        "$jwt.email on the 101"
    );
    round_trip(&mut ws, "hello").await;
    assert_eq!(
        ws_handshake(&api, &rsa_token("key-e")).await.err(),
        Some(401)
    );
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_fetches_the_jwks_on_first_use() {
    let jwks = JwksServer::start(rsa_set("key-a")).await;
    let (api, _echo) = remote_setup(&format!("http://{}/jwks.json", jwks.addr)).await;
    let (mut ws, headers) = ws_handshake(&api, &rsa_token("key-a"))
        .await
        .expect("a 101");
    assert_eq!(headers["x-email"], "carol@mail.example");
    round_trip(&mut ws, "hello").await;
    assert_eq!(jwks.fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_server_that_is_down_gets_tokens_refused_with_401() {
    // A port nobody listens on any more.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr")
    };
    let (api, _echo) = remote_setup(&format!("http://{closed}/jwks.json")).await;
    let token = rsa_token("key-a");
    for _ in 0..3 {
        let answer = send(&api, "/remote/x", &[("authorization", &bearer(&token))]).await;
        assert_unauthorized(&answer, "no JWK set could be fetched");
    }
    assert_eq!(ws_handshake(&api, &token).await.err(), Some(401));
}

#[test]
fn a_jwks_url_must_be_http_or_https() {
    let dir = tempfile::tempdir().expect("a folder");
    let config = dir.path().join("strait.yaml");
    let yaml = |fields: &str| {
        format!(
            "environments:\n  - name: prod\n    listen: 127.0.0.1:0\nproxies:\n  - name: api\n    path: /api/*\n    backend: http://127.0.0.1:9/\n    policies:\n      - {{type: jwt, {fields}}}\n    deploy: [prod]\n"
        )
    };
    std::fs::write(
        &config,
        yaml("jwks_url: \"https://id.example/.well-known/jwks.json\", jwks_refresh: 1m"),
    )
    .expect("write");
    strait::config::load(&config).expect("an https JWKS URL");
    for (fields, needle) in [
        ("jwks_url: \"ftp://id.example/jwks\"", "http:// or https://"),
        ("jwks_url: \"/jwks.json\"", "http:// or https://"),
        ("secret: s, jwks_refresh: 1m", "jwks_refresh"),
        (
            "jwks_url: \"https://id.example/jwks\", secret: s",
            "exactly one key",
        ),
    ] {
        std::fs::write(&config, yaml(fields)).expect("write");
        let problem = strait::config::load(&config).expect_err(fields).to_string();
        assert!(problem.contains(needle), "{fields}: {problem}");
    }
}
