//! Backend host names resolved at connect time, end to end: a tiny DNS server on loopback
//! answers `svc.strait.test` with 127.0.0.2 (TTL 1s), then with 127.0.0.3; two backends on
//! the same port of those addresses say who they are and close every connection, so each
//! request is a new backend connection. Within the TTL the cached answer is used (no new
//! query); once it has passed, new HTTP requests and WebSocket handshakes reach the new
//! address, with no reload.

mod common;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use strait::{Gateway, GatewayHandle, GatewayOptions};
use tokio::net::{TcpListener, UdpSocket};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const NAME: &str = "svc.strait.test";
const TTL: Duration = Duration::from_secs(1);
/// The longest any wait may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

/// Answers A queries for [`NAME`] with `address` and [`TTL`]; anything else gets an empty
/// answer. Counts the A queries for [`NAME`] and notes when it last answered one.
struct Dns {
    addr: SocketAddr,
    address: Mutex<Ipv4Addr>,
    queries: AtomicUsize,
    answered: Mutex<Option<Instant>>,
}

impl Dns {
    async fn start(address: Ipv4Addr) -> Arc<Dns> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dns = Arc::new(Dns {
            addr: socket.local_addr().unwrap(),
            address: Mutex::new(address),
            queries: AtomicUsize::new(0),
            answered: Mutex::new(None),
        });
        let server = dns.clone();
        tokio::spawn(async move {
            let mut buf = vec![0; 1500];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let answer = server.answer(&buf[..len]);
                let _ = socket.send_to(&answer, from).await;
            }
        });
        dns
    }

    fn answer(&self, query: &[u8]) -> Vec<u8> {
        let query = Message::from_vec(query).unwrap();
        let mut answer = Message::error_msg(
            query.metadata.id,
            query.metadata.op_code,
            ResponseCode::NoError,
        );
        answer.metadata.recursion_desired = query.metadata.recursion_desired;
        answer.metadata.recursion_available = true;
        for question in &query.queries {
            let name = question.name().to_ascii().to_ascii_lowercase();
            if name.trim_end_matches('.') == NAME && question.query_type() == RecordType::A {
                self.queries.fetch_add(1, Ordering::SeqCst);
                let address = *self.address.lock().unwrap();
                let ttl = u32::try_from(TTL.as_secs()).unwrap();
                answer.add_answer(Record::from_rdata(
                    question.name().clone(),
                    ttl,
                    RData::A(A(address)),
                ));
                *self.answered.lock().unwrap() = Some(Instant::now());
            }
        }
        answer.queries = query.queries;
        answer.to_vec().unwrap()
    }

    fn set(&self, address: Ipv4Addr) {
        *self.address.lock().unwrap() = address;
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    fn answered(&self) -> Instant {
        self.answered
            .lock()
            .unwrap()
            .expect("an A query was answered")
    }
}

/// A backend on `ip:port` that answers its name (body, `x-backend`, and in the 101 of a
/// WebSocket handshake) and closes the connection after every answer.
async fn backend(ip: Ipv4Addr, port: u16, name: &'static str) -> u16 {
    let listener = TcpListener::bind((ip, port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, name));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

async fn answer(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match req.headers().get(header::SEC_WEBSOCKET_KEY) {
        // The handshake is all this test needs; the upgraded connection is dropped.
        Some(key) => Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(
                header::SEC_WEBSOCKET_ACCEPT,
                derive_accept_key(key.as_bytes()),
            )
            .header("x-backend", name)
            .body(Full::new(Bytes::new())),
        None => Response::builder()
            .header(header::CONNECTION, "close")
            .header("x-backend", name)
            .body(Full::new(Bytes::from(name))),
    };
    Ok(response.unwrap())
}

/// The DNS server, both backends on one port, and a gateway proxying `/svc/*` to
/// `http://svc.strait.test:PORT` and resolving through that DNS server only.
async fn setup() -> (Arc<Dns>, GatewayHandle) {
    let dns = Dns::start(Ipv4Addr::new(127, 0, 0, 2)).await;
    let port = backend(Ipv4Addr::new(127, 0, 0, 2), 0, "one").await;
    backend(Ipv4Addr::new(127, 0, 0, 3), port, "two").await;
    let yaml = common::single_env(
        true,
        &format!(
            "  - name: svc\n    path: /svc/*\n    backend: http://{NAME}:{port}\n    deploy: [test]\n"
        ),
    );
    let config = strait::config::parse_str(&yaml, std::path::Path::new("dns.yaml")).unwrap();
    let options = GatewayOptions {
        dns_servers: Some(vec![dns.addr]),
        ..GatewayOptions::default()
    };
    let gateway = Gateway::start_with(&config, options).await.unwrap();
    (dns, gateway)
}

/// Which backend answered a GET through the gateway.
async fn http_backend(client: &common::HttpClient, gateway: &GatewayHandle) -> String {
    let url = format!("http://{}/svc/who", common::addr(gateway));
    let (response, body) = common::get(client, &url).await;
    assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(&body));
    String::from_utf8(body.to_vec()).unwrap()
}

/// Which backend accepted a WebSocket handshake through the gateway.
async fn ws_backend(gateway: &GatewayHandle) -> String {
    let url = format!("ws://{}/svc/ws", common::addr(gateway));
    let (_ws, response) = connect_async(url.as_str()).await.unwrap();
    response.headers()["x-backend"].to_str().unwrap().to_owned()
}

/// Calls `which` while the first answer is fresh (each must reach backend one with no new
/// query), then switches the record and waits for `which` to reach backend two.
async fn follows_the_record<F, Fut>(dns: &Dns, which: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    assert_eq!(which().await, "one");
    let queries = dns.queries();
    assert!(queries >= 1, "the name was looked up");
    let first = dns.answered();

    dns.set(Ipv4Addr::new(127, 0, 0, 3));
    // While the record is fresh the cached answer is used: no new query, same backend.
    let fresh_for = TTL / 2;
    let mut calls = 0;
    while first.elapsed() < fresh_for || calls == 0 {
        assert_eq!(
            which().await,
            "one",
            "the cached answer is used within the TTL"
        );
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dns.queries(), queries, "no query while the record is fresh");

    // Once the TTL has passed, a new connection looks the name up again.
    let deadline = Instant::now() + LIMIT;
    loop {
        if which().await == "two" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new record was not used within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        first.elapsed() >= TTL,
        "the first answer was kept for its TTL"
    );
    assert!(dns.queries() > queries, "the name was looked up again");
}

#[tokio::test]
async fn http_requests_follow_a_changed_record_after_its_ttl() {
    let (dns, gateway) = setup().await;
    let client = common::client();
    tokio::time::timeout(
        LIMIT * 2,
        follows_the_record(&dns, || http_backend(&client, &gateway)),
    )
    .await
    .unwrap();
    gateway.shutdown().await;
}

#[tokio::test]
async fn websocket_handshakes_follow_a_changed_record_after_its_ttl() {
    let (dns, gateway) = setup().await;
    tokio::time::timeout(LIMIT * 2, follows_the_record(&dns, || ws_backend(&gateway)))
        .await
        .unwrap();
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_unknown_host_is_a_clear_bad_gateway() {
    let dns = Dns::start(Ipv4Addr::new(127, 0, 0, 2)).await;
    let yaml = common::single_env(
        false,
        "  - name: gone\n    path: /gone/*\n    backend: http://gone.strait.test:1\n    deploy: [test]\n",
    );
    let config = strait::config::parse_str(&yaml, std::path::Path::new("dns.yaml")).unwrap();
    let options = GatewayOptions {
        dns_servers: Some(vec![dns.addr]),
        ..GatewayOptions::default()
    };
    let gateway = Gateway::start_with(&config, options).await.unwrap();
    let url = format!("http://{}/gone/x", common::addr(&gateway));
    let (response, body) = common::get(&common::client(), &url).await;
    common::assert_error(&response, &body, 502, "bad_gateway");
    let message = common::json(&body)["message"].as_str().unwrap().to_owned();
    assert!(
        message
            .contains("cannot resolve the backend host gone.strait.test: the name has no address"),
        "{message}"
    );
    gateway.shutdown().await;
}
