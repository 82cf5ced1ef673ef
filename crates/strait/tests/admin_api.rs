//! The admin API over real HTTP, against a real `Control::stateful` (a temporary SQLite
//! database) and its gateway: every route, every documented status, authentication, the
//! error shapes, the body limit and the OpenAPI document.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::{Method, header};
use serde_json::{Value, json};
use support::stateful;

fn env_body(websocket: bool) -> Value {
    json!({"listen": "127.0.0.1:0", "websocket": websocket})
}

fn proxy_body(path: &str, backend: &str) -> Value {
    json!({"path": path, "backend": backend})
}

#[tokio::test]
async fn objects_and_deployments_answer_the_documented_statuses() {
    let echo = common::echo().await;
    let backend = format!("http://{}/svc", echo.local_addr());
    let api = stateful(None).await;

    // Empty to start with.
    let listed = api.get("/environments").await.expect(200, "list").json();
    assert_eq!(listed, json!({"environments": []}));
    let listed = api.get("/proxies").await.expect(200, "list").json();
    assert_eq!(listed, json!({"proxies": []}));

    // Environments: 201 when created, 200 when unchanged or replaced; the stored object
    // (with its name) comes back.
    let stored = api
        .put("/environments/prod", &env_body(true))
        .await
        .expect(201, "create environment")
        .json();
    assert_eq!(
        stored,
        json!({"name": "prod", "listen": "127.0.0.1:0", "websocket": true})
    );
    api.put("/environments/prod", &env_body(true))
        .await
        .expect(200, "the same environment again");
    let replaced =
        json!({"name": "prod", "listen": "127.0.0.1:0", "websocket": false, "undeploy_grace": "0"});
    let stored = api
        .put("/environments/prod", &replaced)
        .await
        .expect(200, "replace environment")
        .json();
    assert_eq!(stored, replaced);
    let got = api
        .get("/environments/prod")
        .await
        .expect(200, "get")
        .json();
    assert_eq!(got, replaced);
    let listed = api.get("/environments").await.expect(200, "list").json();
    assert_eq!(listed, json!({"environments": [replaced]}));

    // Proxies likewise.
    let users = proxy_body("/api/*", &backend);
    let stored = api
        .put("/proxies/users", &users)
        .await
        .expect(201, "create proxy")
        .json();
    assert_eq!(stored["name"], "users");
    assert_eq!(stored["path"], "/api/*");
    api.put("/proxies/users", &users)
        .await
        .expect(200, "the same proxy again");
    let users = json!({"path": "/api/*", "backend": backend, "methods": ["GET", "POST"]});
    api.put("/proxies/users", &users)
        .await
        .expect(200, "replace proxy");
    let got = api.get("/proxies/users").await.expect(200, "get").json();
    assert_eq!(got["methods"], json!(["GET", "POST"]));
    let listed = api.get("/proxies").await.expect(200, "list").json();
    assert_eq!(listed["proxies"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["proxies"][0]["name"], "users");

    // Not deployed yet: the gateway has no route.
    let (status, _) = api.through("prod", "/api/x").await;
    assert_eq!(status, 404, "not deployed yet");
    let deployments = api
        .get("/proxies/users/deployments")
        .await
        .expect(200, "deployments")
        .json();
    assert_eq!(deployments, json!({"proxy": "users", "environments": []}));

    // Deployments: 201 then 200 (idempotent); live when the answer arrives.
    let deployed = api
        .put("/proxies/users/deployments/prod", &Value::Null)
        .await
        .expect(201, "deploy");
    assert_eq!(
        deployed.json(),
        json!({"proxy": "users", "environment": "prod"})
    );
    api.call(Method::PUT, "/proxies/users/deployments/prod", None)
        .await
        .expect(200, "deploy again");
    let (status, body) = api.through("prod", "/api/x?y=1").await;
    assert_eq!(status, 200, "deployed: {}", String::from_utf8_lossy(&body));
    assert_eq!(common::json(&body)["path"], "/svc/x");
    let deployments = api
        .get("/proxies/users/deployments")
        .await
        .expect(200, "deployments")
        .json();
    assert_eq!(
        deployments,
        json!({"proxy": "users", "environments": ["prod"]})
    );

    // Undeploy: 204, then 404 for a deployment that no longer exists.
    let gone = api
        .delete("/proxies/users/deployments/prod")
        .await
        .expect(204, "undeploy");
    assert!(gone.body.is_empty(), "204 has no body");
    api.delete("/proxies/users/deployments/prod")
        .await
        .expect_error(404, "not_found", "undeploy again");
    let (status, _) = api.through("prod", "/api/x").await;
    assert_eq!(status, 404, "undeployed at once");

    // Deleting a proxy: 204, then it is gone.
    api.delete("/proxies/users")
        .await
        .expect(204, "delete proxy");
    api.get("/proxies/users")
        .await
        .expect_error(404, "not_found", "deleted proxy");
    api.delete("/proxies/users")
        .await
        .expect_error(404, "not_found", "delete again");

    // Deleting an environment: 204, then its listener is gone.
    let addr = api.gw("prod");
    api.delete("/environments/prod")
        .await
        .expect(204, "delete environment");
    api.get("/environments/prod")
        .await
        .expect_error(404, "not_found", "deleted environment");
    assert!(
        api.gateway.local_addr("prod").is_none(),
        "no listener for a deleted environment"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err()
            || api.gateway.local_addr("prod").is_none(),
        "the deleted environment's address stops accepting"
    );
}

#[tokio::test]
async fn unknown_objects_and_routes_are_404_and_wrong_methods_405() {
    let api = stateful(None).await;
    api.put("/environments/prod", &env_body(false))
        .await
        .expect(201, "create environment");
    for path in ["/environments/nope", "/proxies/nope"] {
        let body = api.get(path).await.expect_error(404, "not_found", path);
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("nope"),
            "names the object: {body}"
        );
        api.delete(path).await.expect_error(404, "not_found", path);
    }
    api.get("/proxies/nope/deployments").await.expect_error(
        404,
        "not_found",
        "deployments of an unknown proxy",
    );
    api.call(Method::PUT, "/proxies/nope/deployments/prod", None)
        .await
        .expect_error(404, "not_found", "deploy an unknown proxy");
    api.put("/proxies/users", &proxy_body("/u/*", "http://127.0.0.1:9/"))
        .await
        .expect(201, "create proxy");
    api.call(Method::PUT, "/proxies/users/deployments/nope", None)
        .await
        .expect_error(404, "not_found", "deploy to an unknown environment");
    api.delete("/proxies/users/deployments/prod")
        .await
        .expect_error(404, "not_found", "undeploy what is not deployed");
    api.get("/nope")
        .await
        .expect_error(404, "no_route", "unknown route");
    let answer = api.call(Method::POST, "/environments/prod", None).await;
    assert_eq!(answer.headers[header::ALLOW], "GET, PUT, DELETE");
    answer.expect_error(405, "method_not_allowed", "POST to an environment");
}

#[tokio::test]
async fn config_history_and_health() {
    let api = stateful(None).await;
    let health = api.get("/health").await.expect(200, "health");
    assert_eq!(health.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(health.json(), json!({"status": "ok", "mode": "stateful"}));

    // Seven changes, plus two writes that change nothing (no history entry for those).
    api.put("/environments/prod", &env_body(true))
        .await
        .expect(201, "1");
    api.put("/environments/prod", &env_body(true))
        .await
        .expect(200, "unchanged: no entry");
    api.put("/environments/staging", &env_body(false))
        .await
        .expect(201, "2");
    api.put("/proxies/a", &proxy_body("/a/*", "http://127.0.0.1:9/a"))
        .await
        .expect(201, "3");
    api.put("/proxies/b", &proxy_body("/b", "http://127.0.0.1:9/b"))
        .await
        .expect(201, "4");
    api.deploy("a", "prod").await; // 5
    api.call(Method::PUT, "/proxies/a/deployments/prod", None)
        .await
        .expect(200, "already deployed: no entry");
    api.deploy("b", "staging").await; // 6
    api.put(
        "/proxies/a",
        &json!({"path": "/a/*", "backend": "http://127.0.0.1:9/a", "preserve_host": true}),
    )
    .await
    .expect(200, "7");

    // GET /config is the whole state in the file format.
    let config = api.get("/config").await.expect(200, "config");
    assert_eq!(config.headers[header::CONTENT_TYPE], "application/yaml");
    let parsed = strait::config::parse_str(&config.text(), std::path::Path::new("dump.yaml"))
        .unwrap_or_else(|e| panic!("GET /config is a valid file:\n{e}\n{}", config.text()));
    let envs: Vec<&str> = parsed
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(envs, ["prod", "staging"]);
    let deploys: BTreeMap<&str, Vec<String>> = parsed
        .proxies
        .iter()
        .map(|p| (p.name.as_str(), p.deploy.clone()))
        .collect();
    assert_eq!(
        deploys,
        BTreeMap::from([
            ("a", vec!["prod".to_owned()]),
            ("b", vec!["staging".to_owned()])
        ])
    );
    assert!(
        parsed
            .proxies
            .iter()
            .any(|p| p.name == "a" && p.preserve_host)
    );

    // History: newest first, paged, with the total.
    let page1 = api
        .get("/history?per_page=3")
        .await
        .expect(200, "history")
        .json();
    assert_eq!(page1["total"], 7, "{page1}");
    assert_eq!(page1["page"], 1);
    assert_eq!(page1["per_page"], 3);
    let actions = |page: &Value| -> Vec<(String, String)> {
        page["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or_default().to_owned(),
                    e["object"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let pair = |a: &str, o: &str| (a.to_owned(), o.to_owned());
    assert_eq!(
        actions(&page1),
        [
            pair("put_proxy", "proxies/a"),
            pair("deploy", "proxies/b/deployments/staging"),
            pair("deploy", "proxies/a/deployments/prod"),
        ]
    );
    let page3 = api
        .get("/history?per_page=3&page=3")
        .await
        .expect(200, "history page 3")
        .json();
    assert_eq!(
        actions(&page3),
        [pair("put_environment", "environments/prod")]
    );
    let oldest = &page3["entries"][0];
    assert_eq!(oldest["before"], Value::Null, "created: no before");
    assert_eq!(oldest["after"]["listen"], "127.0.0.1:0");
    assert!(
        oldest["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "RFC 3339 UTC: {oldest}"
    );
    let newest = &page1["entries"][0];
    assert_eq!(newest["before"]["preserve_host"], Value::Null);
    assert_eq!(newest["after"]["preserve_host"], true);
    let all = api
        .get("/history?per_page=500")
        .await
        .expect(200, "all")
        .json();
    let ids: Vec<u64> = all["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["id"].as_u64().expect("numeric id"))
        .collect();
    assert_eq!(ids.len(), 7);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let beyond = api
        .get("/history?page=9")
        .await
        .expect(200, "beyond")
        .json();
    assert_eq!(beyond["entries"], json!([]));
    assert_eq!(beyond["total"], 7);
    api.get("/history?per_page=0")
        .await
        .expect_error(400, "bad_request", "per_page 0");
}

#[tokio::test]
async fn a_token_guards_everything_but_health() {
    let api = stateful(Some("s3cret-token")).await;
    let no_token = api
        .raw(Method::GET, "/health", Bytes::new(), None)
        .await
        .expect(200, "health is open");
    assert_eq!(no_token.json()["status"], "ok");

    let body = Bytes::from(env_body(false).to_string());
    for (method, path, body) in [
        (Method::GET, "/environments", Bytes::new()),
        (Method::GET, "/openapi.json", Bytes::new()),
        (Method::GET, "/config", Bytes::new()),
        (Method::GET, "/history", Bytes::new()),
        (Method::PUT, "/environments/prod", body.clone()),
        (Method::GET, "/nope", Bytes::new()),
    ] {
        for authorization in [None, Some("Bearer wrong-token"), Some("Basic s3cret-token")] {
            let answer = api
                .raw(method.clone(), path, body.clone(), authorization)
                .await;
            assert_eq!(
                answer
                    .headers
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{method} {path} with {authorization:?}"
            );
            answer.expect_error(
                401,
                "unauthorized",
                &format!("{method} {path} {authorization:?}"),
            );
        }
    }
    // Nothing was written by the refused PUTs.
    let listed = api
        .get("/environments")
        .await
        .expect(200, "with the token")
        .json();
    assert_eq!(listed, json!({"environments": []}));
    api.raw(
        Method::PUT,
        "/environments/prod",
        body,
        Some("Bearer s3cret-token"),
    )
    .await
    .expect(201, "with the token");
}

#[tokio::test]
async fn conflicts_answer_409_and_change_nothing() {
    let echo = common::echo().await;
    let backend = format!("http://{}/", echo.local_addr());
    let api = stateful(None).await;
    api.put("/environments/prod", &env_body(false))
        .await
        .expect(201, "environment");
    api.put("/proxies/first", &proxy_body("/same/*", &backend))
        .await
        .expect(201, "first proxy");
    api.put("/proxies/second", &proxy_body("/same/*", &backend))
        .await
        .expect(
            201,
            "second proxy on the same path: fine while not deployed",
        );
    api.deploy("first", "prod").await;

    // Two proxies with one path in one environment.
    let body = api
        .call(Method::PUT, "/proxies/second/deployments/prod", None)
        .await
        .expect_error(409, "conflict", "the same path twice in one environment");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/same/*"),
        "names the path: {body}"
    );
    let deployments = api
        .get("/proxies/second/deployments")
        .await
        .expect(200, "deployments")
        .json();
    assert_eq!(deployments["environments"], json!([]), "not deployed");
    let (status, _) = api.through("prod", "/same/x").await;
    assert_eq!(status, 200, "the first proxy still serves");

    // Deleting an environment with deployments needs ?force=true.
    let body = api.delete("/environments/prod").await.expect_error(
        409,
        "conflict",
        "delete with deployments",
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("first"),
        "names the deployed proxy: {body}"
    );
    api.get("/environments/prod")
        .await
        .expect(200, "still there");
    let (status, _) = api.through("prod", "/same/x").await;
    assert_eq!(status, 200, "still serving after the refused delete");
    api.delete("/environments/prod?force=true")
        .await
        .expect(204, "forced delete");
    let deployments = api
        .get("/proxies/first/deployments")
        .await
        .expect(200, "deployments")
        .json();
    assert_eq!(
        deployments["environments"],
        json!([]),
        "undeployed by force"
    );

    // An address held by another socket: 409, and nothing is stored.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let addr = held.local_addr().expect("held address");
    let body = api
        .put("/environments/busy", &json!({"listen": addr.to_string()}))
        .await
        .expect_error(409, "conflict", "listen on a port in use");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&addr.to_string()),
        "names the address: {body}"
    );
    api.get("/environments/busy").await.expect_error(
        404,
        "not_found",
        "the refused environment is not stored",
    );

    // Two environments on one address.
    drop(held);
    api.put("/environments/one", &json!({"listen": addr.to_string()}))
        .await
        .expect(201, "first on the address");
    api.put("/environments/two", &json!({"listen": addr.to_string()}))
        .await
        .expect_error(409, "conflict", "second on the same address");
    api.get("/environments/two")
        .await
        .expect_error(404, "not_found", "not stored");
}

/// The problem list of a 422, as (field, message) pairs.
fn problems(body: &Value) -> Vec<(String, String)> {
    body["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("a problems list: {body}"))
        .iter()
        .map(|p| {
            let field = p["field"].as_str().expect("field is text").to_owned();
            let message = p["message"].as_str().expect("message is text").to_owned();
            assert!(!message.is_empty(), "a sentence: {p}");
            (field, message)
        })
        .collect()
}

#[tokio::test]
async fn invalid_bodies_answer_422_with_every_problem() {
    let api = stateful(None).await;
    api.put("/environments/prod", &env_body(false))
        .await
        .expect(201, "environment");

    // A bad duration.
    let body = api
        .put(
            "/environments/slow",
            &json!({"listen": "127.0.0.1:0", "timeouts": {"connect": "5 parsecs"}}),
        )
        .await
        .expect_error(422, "invalid", "bad duration");
    let found = problems(&body);
    assert!(
        found
            .iter()
            .any(|(f, m)| f.ends_with("timeouts.connect") && m.contains("5 parsecs")),
        "the duration's field and value: {found:?}"
    );

    // `*` in the middle of a path.
    let body = api
        .put(
            "/proxies/mid",
            &proxy_body("/api/*/users", "http://127.0.0.1:9/"),
        )
        .await
        .expect_error(422, "invalid", "wildcard in the middle");
    let found = problems(&body);
    assert!(
        found
            .iter()
            .any(|(f, m)| f.ends_with("path") && m.contains("/api/*/users") && m.contains('*')),
        "the path's field and value: {found:?}"
    );

    // An unknown key.
    let body = api
        .put(
            "/proxies/colour",
            &json!({"path": "/c", "backend": "http://127.0.0.1:9/", "colour": "blue"}),
        )
        .await
        .expect_error(422, "invalid", "unknown key");
    let found = problems(&body);
    assert!(
        found.iter().any(|(_, m)| m.contains("colour")),
        "names the key: {found:?}"
    );

    // Every problem at once.
    let body = api
        .put(
            "/environments/many",
            &json!({"listen": "nowhere", "shutdown_grace": "1.5s", "extra": 1}),
        )
        .await
        .expect_error(422, "invalid", "three problems");
    assert_eq!(problems(&body).len(), 3, "every problem: {body}");

    // A name in the body that is not the URL's, and `deploy` in a proxy body.
    let body = api
        .put(
            "/environments/prod",
            &json!({"name": "other", "listen": "127.0.0.1:0"}),
        )
        .await
        .expect_error(422, "invalid", "name mismatch");
    assert_eq!(problems(&body)[0].0, "name");
    let body = api
        .put(
            "/proxies/d",
            &json!({"path": "/d", "backend": "http://127.0.0.1:9/", "deploy": ["prod"]}),
        )
        .await
        .expect_error(422, "invalid", "deploy in the body");
    assert_eq!(problems(&body)[0].0, "deploy");

    // Not JSON at all is a 400, without problems.
    let answer = api
        .raw(
            Method::PUT,
            "/proxies/x",
            Bytes::from_static(b"{\"path\": "),
            None,
        )
        .await;
    let body = answer.expect_error(400, "bad_request", "not JSON");
    assert!(body.get("problems").is_none(), "{body}");

    // None of these was stored.
    for path in [
        "/environments/slow",
        "/environments/many",
        "/proxies/mid",
        "/proxies/colour",
        "/proxies/d",
        "/proxies/x",
    ] {
        api.get(path)
            .await
            .expect_error(404, "not_found", &format!("{path} not stored"));
    }
    assert_eq!(
        api.get("/environments/prod")
            .await
            .expect(200, "prod")
            .json()["listen"],
        "127.0.0.1:0",
        "unchanged by the refused rename"
    );
    let history = api.get("/history").await.expect(200, "history").json();
    assert_eq!(history["total"], 1, "refused writes leave no history");
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let api = stateful(None).await;
    // Valid JSON, 1 MiB + 1 byte: a string with its quotes.
    let big = format!("\"{}\"", "a".repeat(1024 * 1024 - 1));
    assert_eq!(big.len(), 1024 * 1024 + 1);
    api.raw(Method::PUT, "/environments/big", Bytes::from(big), None)
        .await
        .expect_error(413, "payload_too_large", "declared length over 1 MiB");

    // Without a Content-Length the limit holds while reading (chunked upload).
    let addr = api.admin.local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /proxies/big HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(head.as_bytes()).await.expect("send the head");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    // Up to 2 MiB; the server may answer (and stop reading) any time after 1 MiB.
    while sent < 2 * 1024 * 1024 {
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        if tcp.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = support::within("the 413", tcp.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "a streamed body over 1 MiB is refused with 413: {text}"
    );
    assert!(text.contains("payload_too_large"), "{text}");
    api.get("/proxies/big")
        .await
        .expect_error(404, "not_found", "nothing stored");
}

#[tokio::test]
async fn a_request_that_is_not_http_gets_a_json_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = stateful(None).await;
    let addr = api.admin.local_addr();
    let big = "a".repeat(80 * 1024);
    for (garbage, status, kind) in [
        ("\x01\x02 nonsense\r\n\r\n".to_owned(), 400, "bad_request"),
        (
            "GET /health HTTP/1.1\r\nBad Header Line\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
            431,
            "headers_too_large",
        ),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(garbage.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        support::within("the admin API's answer", tcp.read_to_end(&mut answer))
            .await
            .expect("read the answer");
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(body["status"], status, "{body}");
        assert_eq!(body["error"], kind, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    api.get("/health").await.expect(200, "still serving");
}

/// Removes every `null`-valued key, at any depth.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Every `$ref` in the document, as JSON pointers.
fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => {
                        out.insert(target.clone());
                    }
                    _ => refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The OpenAPI document is checked with `oas3`, the OpenAPI 3.1 model: it must deserialize
/// into the typed model and serialize back to the very same JSON (so no key is unknown to
/// OpenAPI 3.1 and no value has the wrong shape), every `$ref` must resolve, and it must
/// describe exactly the routes the server answers.
#[tokio::test]
async fn openapi_json_is_a_valid_openapi_3_1_document_of_the_served_api() {
    let api = stateful(Some("tok")).await;
    let answer = api.get("/openapi.json").await.expect(200, "openapi.json");
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let text = answer.text();
    let document: Value = answer.json();

    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not OpenAPI 3.1: {e}"));
    let version = spec
        .validate_version()
        .unwrap_or_else(|e| panic!("unsupported OpenAPI version: {e}"));
    assert_eq!((version.major, version.minor), (3, 1));
    let mut again = serde_json::to_value(&spec).expect("the model serializes");
    // The model writes every absent optional field as `null`; the document leaves them out.
    drop_nulls(&mut again);
    assert_eq!(
        again, document,
        "the document survives a round trip through the OpenAPI 3.1 model unchanged"
    );

    // Every reference resolves.
    let mut targets = BTreeSet::new();
    refs(&document, &mut targets);
    assert!(!targets.is_empty(), "the document uses components");
    for target in &targets {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target} is a local reference"));
        assert!(
            document.pointer(pointer).is_some(),
            "{target} resolves in the document"
        );
    }

    // Exactly the served routes, each answering as documented.
    let operations: BTreeSet<(String, String)> = spec
        .operations()
        .map(|(path, method, _)| (method.to_string(), path))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/health"),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/config"),
        ("GET", "/history"),
        ("GET", "/environments"),
        ("GET", "/environments/{name}"),
        ("PUT", "/environments/{name}"),
        ("DELETE", "/environments/{name}"),
        ("GET", "/proxies"),
        ("GET", "/proxies/{name}"),
        ("PUT", "/proxies/{name}"),
        ("DELETE", "/proxies/{name}"),
        ("GET", "/proxies/{name}/deployments"),
        ("GET", "/proxies/{name}/targets"),
        ("PUT", "/proxies/{name}/deployments/{environment}"),
        ("DELETE", "/proxies/{name}/deployments/{environment}"),
        ("GET", "/consumers"),
        ("GET", "/consumers/{name}"),
        ("PUT", "/consumers/{name}"),
        ("DELETE", "/consumers/{name}"),
        ("GET", "/upstreams"),
        ("GET", "/upstreams/{name}"),
        ("PUT", "/upstreams/{name}"),
        ("DELETE", "/upstreams/{name}"),
        ("GET", "/connections"),
        ("DELETE", "/connections"),
        ("GET", "/connections/{id}"),
        ("DELETE", "/connections/{id}"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(operations, expected, "the documented operations");
    for (method, path) in &operations {
        let operation = &document["paths"][path][method.to_lowercase()];
        // Path templates are declared as path parameters.
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let declared = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true);
            assert!(declared, "{method} {path} declares its {name} parameter");
        }
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has responses"));
        if path == "/health" {
            assert_eq!(operation["security"], json!([{}]), "health is open");
        } else {
            assert!(
                responses.contains_key("401"),
                "{method} {path} documents the 401"
            );
        }
        // The route exists on the server with this method: a call answers one of the
        // documented statuses (never no_route or method_not_allowed).
        let concrete = path
            .replace("{name}", "p")
            .replace("{environment}", "e")
            .replace("{id}", "1");
        let body = (method == "PUT" && !concrete.contains("deployments"))
            .then(|| json!({"listen": "127.0.0.1:0"}));
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let answer = api.call(method.clone(), &concrete, body.as_ref()).await;
        assert!(
            responses.contains_key(answer.status.as_str()),
            "{method} {concrete} answered {}, which {path} does not document: {}",
            answer.status,
            answer.text()
        );
    }

    // The documented bodies describe every field the API accepts.
    let schema_keys = |name: &str| -> BTreeSet<String> {
        document["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name} has properties"))
            .keys()
            .cloned()
            .collect()
    };
    let all_env_fields = json!({
        "listen": "127.0.0.1:0",
        "websocket": true,
        "timeouts": {"connect": "1s", "response": "2s", "websocket_idle": "3s"},
        "shutdown_grace": "4s",
        "undeploy_grace": "never",
        "access_log": {"format": "combined", "log_handshake": true},
        "policies": [{"type": "api_key"}],
        "backend_source_addresses": ["127.0.0.1"]
    });
    api.put("/environments/full", &all_env_fields)
        .await
        .expect(201, "an environment with every field but tls");
    let mut accepted: BTreeSet<String> = all_env_fields
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    accepted.extend(["name".to_owned(), "tls".to_owned()]);
    assert_eq!(
        schema_keys("Environment"),
        accepted,
        "the Environment schema lists every field an environment accepts"
    );
    let all_proxy_fields = json!({
        "path": "/full/*",
        "backend": "http://127.0.0.1:9/",
        "methods": ["GET"],
        "preserve_host": true,
        "policies": [{"type": "acl", "allow": ["admins"]}]
    });
    api.put("/proxies/full", &all_proxy_fields)
        .await
        .expect(201, "a proxy with every field but backend_tls");
    let mut accepted: BTreeSet<String> = all_proxy_fields
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    accepted.extend(["name".to_owned(), "backend_tls".to_owned()]);
    assert_eq!(
        schema_keys("Proxy"),
        accepted,
        "the Proxy schema lists every field a proxy accepts (deploy excluded)"
    );
    let all_upstream_fields = json!({
        "targets": [{"url": "http://127.0.0.1:9/", "weight": 2}],
        "balance": "consistent_hash",
        "hash_on": "client_ip",
        "health": {"passive": {}},
        "retries": 1,
        "circuit_breaker": {},
        "rebalance": "drain"
    });
    api.put("/upstreams/full", &all_upstream_fields)
        .await
        .expect(201, "an upstream with every field");
    let mut accepted: BTreeSet<String> = all_upstream_fields
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    accepted.insert("name".to_owned());
    assert_eq!(
        schema_keys("Upstream"),
        accepted,
        "the Upstream schema lists every field an upstream accepts"
    );
    let kinds: BTreeSet<&str> = document["components"]["schemas"]["ErrorKind"]["enum"]
        .as_array()
        .expect("ErrorKind is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for kind in [
        "bad_request",
        "unauthorized",
        "not_found",
        "no_route",
        "method_not_allowed",
        "read_only",
        "conflict",
        "payload_too_large",
        "invalid",
        "storage",
    ] {
        assert!(
            kinds.contains(kind),
            "ErrorKind documents {kind}: {kinds:?}"
        );
    }
}
