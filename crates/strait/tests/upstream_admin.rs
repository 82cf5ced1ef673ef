//! A proxy's backend targets through the admin API (`GET /proxies/{name}/targets`) and the
//! per-target metrics, against a stateful gateway with two echo backends.

mod support;

use std::collections::HashMap;

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::{Value, json};
use strait::echo::{self, EchoHandle};
use support::{Stack, round_trip, with_prod, within, ws_connect};

/// A stateful stack with environment `prod` (WebSocket on) and proxy `chat` on `/chat/*`
/// balanced round robin over two echo backends; returns the targets' URLs in order.
async fn stack() -> (Stack, [EchoHandle; 2], [String; 2]) {
    let spawn = || echo::spawn("127.0.0.1:0".parse().expect("addr"));
    let echoes = [
        spawn().await.expect("echo binds"),
        spawn().await.expect("echo binds"),
    ];
    let urls = echoes
        .each_ref()
        .map(|e| format!("http://{}/svc", e.local_addr()));
    let api = with_prod().await;
    let proxy = json!({"path": "/chat/*", "backend": {"targets": urls.clone()}});
    api.put("/proxies/chat", &proxy).await.expect(201, "proxy");
    api.deploy("chat", "prod").await;
    (api, echoes, urls)
}

async fn targets(api: &Stack, proxy: &str) -> Value {
    api.get(&format!("/proxies/{proxy}/targets"))
        .await
        .expect(200, "list targets")
        .json()
}

fn actives(answer: &Value) -> Vec<u64> {
    answer["targets"]
        .as_array()
        .expect("targets is a list")
        .iter()
        .map(|t| t["active"].as_u64().expect("active is a number"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_listed_with_the_open_session_counted_on_one() {
    let (api, _echoes, urls) = stack().await;
    let answer = targets(&api, "chat").await;
    let target = |url: &str| {
        json!({"url": url, "weight": 1, "health": "up", "breaker": null,
               "active": 0, "requests": 0, "failures": 0,
               "http_connections": 0, "http_connects": 0})
    };
    assert_eq!(
        answer,
        json!({
            "proxy": "chat",
            "upstream": null,
            "balance": "round_robin",
            "targets": [target(&urls[0]), target(&urls[1])],
        })
    );

    let mut ws = ws_connect(&format!("ws://{}/chat/room", api.gw("prod"))).await;
    round_trip(&mut ws, "hello").await;
    let answer = targets(&api, "chat").await;
    let mut counts = actives(&answer);
    counts.sort_unstable();
    assert_eq!(counts, [0, 1], "{answer:#}");
    let requests: u64 = answer["targets"]
        .as_array()
        .expect("targets is a list")
        .iter()
        .map(|t| t["requests"].as_u64().expect("requests is a number"))
        .sum();
    assert_eq!(requests, 1, "{answer:#}");

    // Closed: the lease is released once the relay ends.
    drop(ws);
    within("the session's lease to be released", async {
        while actives(&targets(&api, "chat").await) != [0, 0] {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_proxies_are_404_and_undeployed_ones_are_listed() {
    let (api, _echoes, urls) = stack().await;
    let error =
        api.get("/proxies/nope/targets")
            .await
            .expect_error(404, "not_found", "unknown proxy");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope")),
        "{error}"
    );
    let proxy = json!({"path": "/idle/*", "backend": {
        "targets": [{"url": urls[1], "weight": 3}],
        "balance": "least_connections",
        "circuit_breaker": {},
    }});
    api.put("/proxies/idle", &proxy).await.expect(201, "proxy");
    let answer = targets(&api, "idle").await;
    assert_eq!(answer["balance"], "least_connections");
    assert_eq!(answer["targets"][0]["weight"], 3);
    assert_eq!(answer["targets"][0]["breaker"], "closed");
    api.delete("/proxies/idle").await.expect(204, "delete");
    api.get("/proxies/idle/targets")
        .await
        .expect_error(404, "not_found", "deleted proxy");
}

/// `strait_upstream_target_*` samples by (name, target) for proxy `chat`.
async fn target_samples(api: &Stack) -> HashMap<(String, String), f64> {
    let text = api.get("/metrics").await.expect(200, "metrics").text();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    parsed
        .samples
        .into_iter()
        .filter(|s| s.metric.starts_with("strait_upstream_target_"))
        .filter(|s| s.labels.get("proxy") == Some("chat"))
        .filter_map(|s| {
            let value = match s.value {
                Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
                _ => return None,
            };
            let target = s.labels.get("target")?.to_owned();
            Some(((s.metric, target), value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_metrics_count_every_request() {
    let (api, _echoes, urls) = stack().await;
    const N: u32 = 7;
    for _ in 0..N {
        let (status, _) = api.through("prod", "/chat/x").await;
        assert_eq!(status, 200);
    }
    let samples = target_samples(&api).await;
    let get = |name: &str, url: &str| {
        samples
            .get(&(name.to_owned(), url.to_owned()))
            .copied()
            .unwrap_or_else(|| panic!("{name} for {url} is not among {samples:#?}"))
    };
    let total: f64 = urls
        .iter()
        .map(|u| get("strait_upstream_target_requests_total", u))
        .sum();
    assert_eq!(total, f64::from(N), "{samples:#?}");
    for url in &urls {
        // Round robin over two: 4 and 3.
        assert!(get("strait_upstream_target_requests_total", url) >= 3.0);
        assert_eq!(get("strait_upstream_target_failures_total", url), 0.0);
        assert_eq!(get("strait_upstream_target_up", url), 1.0);
    }
}
