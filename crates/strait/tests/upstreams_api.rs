//! Named upstreams through the admin API (`/upstreams`), against a stateful gateway with two
//! echo backends: a proxy using one, replacing it, and the refusals (unknown name, delete
//! while used, declarative mode).

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use strait::echo::{self, EchoHandle};
use support::{Stack, declarative, json_of, with_prod};

/// Two echo backends and their authorities (`127.0.0.1:PORT`).
async fn echoes() -> ([EchoHandle; 2], [String; 2]) {
    let spawn = || echo::spawn("127.0.0.1:0".parse().expect("addr"));
    let echoes = [
        spawn().await.expect("echo binds"),
        spawn().await.expect("echo binds"),
    ];
    let authorities = echoes.each_ref().map(|e| e.local_addr().to_string());
    (echoes, authorities)
}

/// The `Host` each of `n` requests to `/pool/x` reached (the gateway sends the chosen
/// target's authority).
async fn hosts(api: &Stack, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let (status, body) = api.through("prod", "/pool/x").await;
        assert_eq!(status, 200, "through the upstream: {body:?}");
        let echoed = json_of(&body);
        assert_eq!(echoed["path"], "/svc/x", "{echoed}");
        let host = echoed["headers"]["host"]
            .as_str()
            .unwrap_or_else(|| panic!("the echo saw a Host: {echoed}"));
        seen.insert(host.to_owned());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_is_created_used_replaced_and_deleted() {
    let (_echoes, [a, b]) = echoes().await;
    let api = with_prod().await;
    let listed = api.get("/upstreams").await.expect(200, "list").json();
    assert_eq!(listed, json!({"upstreams": []}));

    // A proxy naming an upstream that does not exist is refused with a sentence naming it.
    let proxy = json!({"path": "/pool/*", "backend": {"upstream": "pool"}});
    let body = api.put("/proxies/users", &proxy).await.expect_error(
        422,
        "invalid",
        "proxy before its upstream",
    );
    assert!(
        body["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"pool\"") && m.contains("does not exist")),
        "{body}"
    );

    let two = json!({"targets": [format!("http://{a}/svc"), format!("http://{b}/svc")]});
    let created = api
        .put("/upstreams/pool", &two)
        .await
        .expect(201, "create the upstream")
        .json();
    assert_eq!(created["name"], "pool", "{created}");
    api.put("/upstreams/pool", &two)
        .await
        .expect(200, "the same again is unchanged");
    api.put("/proxies/users", &proxy)
        .await
        .expect(201, "a proxy using the upstream");
    api.deploy("users", "prod").await;
    assert_eq!(
        hosts(&api, 6).await,
        BTreeSet::from([a.clone(), b.clone()]),
        "round robin reaches both targets"
    );
    let targets = api
        .get("/proxies/users/targets")
        .await
        .expect(200, "targets")
        .json();
    assert_eq!(targets["upstream"], "pool", "{targets}");

    // Replacing the upstream applies to the proxy at once.
    let one = json!({"name": "pool", "targets": [format!("http://{b}/svc")]});
    api.put("/upstreams/pool", &one)
        .await
        .expect(200, "replace the upstream");
    assert_eq!(hosts(&api, 4).await, BTreeSet::from([b.clone()]));
    assert_eq!(
        api.get("/upstreams/pool").await.expect(200, "get").json(),
        one
    );
    let listed = api.get("/upstreams").await.expect(200, "list").json();
    assert_eq!(listed["upstreams"], json!([one]));
    let config = api.get("/config").await.expect(200, "config").text();
    assert!(
        config.contains("upstreams:") && config.contains("upstream: pool"),
        "{config}"
    );

    // Deleting it while the proxy uses it is a conflict naming the proxy.
    let body =
        api.delete("/upstreams/pool")
            .await
            .expect_error(409, "conflict", "delete while used");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("users")),
        "{body}"
    );
    assert_eq!(hosts(&api, 1).await, BTreeSet::from([b.clone()]));

    api.delete("/proxies/users")
        .await
        .expect(204, "delete the proxy");
    api.delete("/upstreams/pool")
        .await
        .expect(204, "delete the upstream");
    api.get("/upstreams/pool")
        .await
        .expect_error(404, "not_found", "gone");
    api.delete("/upstreams/pool")
        .await
        .expect_error(404, "not_found", "deleted twice");

    let history = api.get("/history").await.expect(200, "history").json();
    let actions: Vec<&str> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.ends_with("_upstream"))
        .collect();
    assert_eq!(
        actions,
        ["delete_upstream", "put_upstream", "put_upstream"],
        "{history}"
    );
}

#[tokio::test]
async fn an_invalid_upstream_names_its_field() {
    let api = with_prod().await;
    let body = api
        .put("/upstreams/pool", &json!({"targets": []}))
        .await
        .expect_error(422, "invalid", "no targets");
    let field = body["problems"][0]["field"].as_str().unwrap_or_default();
    assert!(field.starts_with("upstreams/pool"), "{body}");
    let body = api
        .put(
            "/upstreams/pool",
            &json!({"name": "other", "targets": ["http://127.0.0.1:1"]}),
        )
        .await
        .expect_error(422, "invalid", "the body names another upstream");
    assert_eq!(body["problems"][0]["field"], "name", "{body}");
    api.get("/upstreams/pool")
        .await
        .expect_error(404, "not_found", "nothing was stored");
}

#[tokio::test]
async fn upstreams_are_read_only_in_declarative_mode() {
    let yaml = "environments:\n  - name: prod\n    listen: 127.0.0.1:0\n\
                upstreams:\n  - name: pool\n    targets: [http://127.0.0.1:1/svc]\n\
                proxies:\n  - name: users\n    path: /u/*\n    backend: { upstream: pool }\n    deploy: [prod]\n";
    let (api, _file) = declarative(yaml).await;
    let listed: Value = api.get("/upstreams").await.expect(200, "list").json();
    assert_eq!(listed["upstreams"][0]["name"], "pool", "{listed}");
    api.put(
        "/upstreams/pool",
        &json!({"targets": ["http://127.0.0.1:2"]}),
    )
    .await
    .expect_error(405, "read_only", "declarative");
    api.delete("/upstreams/pool")
        .await
        .expect_error(405, "read_only", "declarative");
}
