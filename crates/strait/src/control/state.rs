//! Conversions between the stored state (objects by name plus deployment pairs) and the
//! configuration document (`{environments, proxies, consumers}` as in the YAML file), and
//! the checks that answer 409 rather than 422.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{ControlError, FieldProblem};
use crate::config::Problem;
use crate::store::State;

/// The state as a configuration document; each proxy gets its `deploy` list.
pub fn document(state: &State) -> Value {
    let proxies: Vec<Value> = state
        .proxies
        .iter()
        .map(|(name, body)| {
            let mut body = body.clone();
            if let Value::Object(map) = &mut body {
                let deploy: Vec<Value> = state
                    .deployments
                    .iter()
                    .filter(|(proxy, _)| proxy == name)
                    .map(|(_, env)| Value::String(env.clone()))
                    .collect();
                map.insert("deploy".into(), Value::Array(deploy));
            }
            body
        })
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "environments".into(),
        Value::Array(state.environments.values().cloned().collect()),
    );
    doc.insert("proxies".into(), Value::Array(proxies));
    // Left out when empty, as consumers.
    if !state.upstreams.is_empty() {
        doc.insert(
            "upstreams".into(),
            Value::Array(state.upstreams.values().cloned().collect()),
        );
    }
    // Left out when empty, so a state without consumers exports as it always did.
    if !state.consumers.is_empty() {
        doc.insert(
            "consumers".into(),
            Value::Array(state.consumers.values().cloned().collect()),
        );
    }
    Value::Object(doc)
}

/// A (validated) configuration document as state: proxies lose `deploy`, which becomes pairs.
pub fn state_from_document(doc: &Value) -> State {
    let mut state = State::default();
    let list = |key: &str| {
        doc.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for env in list("environments") {
        if let Some(name) = env.get("name").and_then(Value::as_str) {
            state.environments.insert(name.to_owned(), env.clone());
        }
    }
    for mut proxy in list("proxies") {
        let Some(name) = proxy.get("name").and_then(Value::as_str).map(str::to_owned) else {
            continue;
        };
        if let Value::Object(map) = &mut proxy
            && let Some(Value::Array(envs)) = map.remove("deploy")
        {
            for env in envs.iter().filter_map(Value::as_str) {
                state.deployments.insert((name.clone(), env.to_owned()));
            }
        }
        state.proxies.insert(name, proxy);
    }
    for upstream in list("upstreams") {
        if let Some(name) = upstream.get("name").and_then(Value::as_str) {
            state.upstreams.insert(name.to_owned(), upstream.clone());
        }
    }
    for consumer in list("consumers") {
        if let Some(name) = consumer.get("name").and_then(Value::as_str) {
            state.consumers.insert(name.to_owned(), consumer.clone());
        }
    }
    state
}

/// Problems as the admin API reports them: `field` relative to the object when the problem
/// is inside one object (`proxies[2].path` → `proxies/users: path`).
pub fn object_problems(state: &State, problems: &[Problem]) -> Vec<FieldProblem> {
    let names = |key: &str| -> Vec<&String> {
        match key {
            "environments" => state.environments.keys().collect(),
            "consumers" => state.consumers.keys().collect(),
            "upstreams" => state.upstreams.keys().collect(),
            _ => state.proxies.keys().collect(),
        }
    };
    problems
        .iter()
        .map(|problem| {
            let field = problem.field.clone().unwrap_or_default();
            let field = ["environments", "proxies", "upstreams", "consumers"]
                .iter()
                .find_map(|key| {
                    let rest = field.strip_prefix(key)?.strip_prefix('[')?;
                    let (index, rest) = rest.split_once(']')?;
                    let name = names(key).get(index.parse::<usize>().ok()?).copied()?;
                    let rest = rest.strip_prefix('.').unwrap_or(rest);
                    Some(if rest.is_empty() {
                        format!("{key}/{name}")
                    } else {
                        format!("{key}/{name}: {rest}")
                    })
                })
                .unwrap_or(field);
            FieldProblem {
                field,
                message: problem.message.clone(),
            }
        })
        .collect()
}

/// Conflicts with other objects answer 409: two proxies on one path in one environment,
/// two environments on one listen address.
pub fn precheck_conflicts(state: &State) -> Result<(), ControlError> {
    let mut paths: HashMap<(&str, &str), &str> = HashMap::new();
    for (proxy, env) in &state.deployments {
        let Some(path) = state
            .proxies
            .get(proxy)
            .and_then(|p| p.get("path"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        if let Some(other) = paths.insert((env.as_str(), path), proxy.as_str()) {
            return Err(ControlError::Conflict(format!(
                "proxies {other:?} and {proxy:?} would both serve path {path} in environment {env:?}"
            )));
        }
    }
    let mut listens: HashMap<&str, &str> = HashMap::new();
    for (name, env) in &state.environments {
        let Some(listen) = env.get("listen").and_then(Value::as_str) else {
            continue;
        };
        if listen.ends_with(":0") {
            continue;
        }
        if let Some(other) = listens.insert(listen, name.as_str()) {
            return Err(ControlError::Conflict(format!(
                "environments {other:?} and {name:?} would both listen on {listen}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> State {
        let mut state = State::default();
        state.environments.insert(
            "prod".into(),
            json!({"name": "prod", "listen": "127.0.0.1:8080"}),
        );
        state.proxies.insert(
            "users".into(),
            json!({"name": "users", "path": "/u/*", "backend": "http://b"}),
        );
        state.deployments.insert(("users".into(), "prod".into()));
        state.consumers.insert(
            "alice".into(),
            json!({"name": "alice", "groups": ["admins"]}),
        );
        state
    }

    #[test]
    fn document_and_state_round_trip() {
        let state = sample();
        let doc = document(&state);
        assert_eq!(doc["proxies"][0]["deploy"], json!(["prod"]));
        assert_eq!(doc["consumers"][0]["name"], "alice");
        assert_eq!(state_from_document(&doc), state);
        let mut without = state.clone();
        without.consumers.clear();
        assert!(document(&without).get("consumers").is_none());
    }

    #[test]
    fn upstreams_round_trip_and_name_their_problems() {
        let mut state = sample();
        state.upstreams.insert(
            "pool".into(),
            json!({"name": "pool", "targets": ["http://a", {"url": "http://b", "weight": 2}]}),
        );
        state.proxies.insert(
            "pooled".into(),
            json!({"name": "pooled", "path": "/p/*", "backend": {"upstream": "pool"}}),
        );
        let doc = document(&state);
        assert_eq!(doc["upstreams"][0]["name"], "pool");
        assert_eq!(state_from_document(&doc), state);
        assert!(document(&sample()).get("upstreams").is_none());
        let problem = Problem {
            file: "admin API".into(),
            line: None,
            column: None,
            field: Some("upstreams[0].targets[1].weight".into()),
            message: "bad".into(),
        };
        let found = object_problems(&state, &[problem]);
        assert_eq!(found[0].field, "upstreams/pool: targets[1].weight");
    }

    #[test]
    fn problems_name_the_object() {
        let state = sample();
        let problem = Problem {
            file: "admin API".into(),
            line: None,
            column: None,
            field: Some("proxies[0].path".into()),
            message: "bad".into(),
        };
        let found = object_problems(&state, std::slice::from_ref(&problem));
        assert_eq!(found[0].field, "proxies/users: path");
        let problem = Problem {
            field: Some("consumers[0].credentials.api_keys[1]".into()),
            ..problem
        };
        let found = object_problems(&state, &[problem]);
        assert_eq!(found[0].field, "consumers/alice: credentials.api_keys[1]");
    }

    #[test]
    fn a_second_proxy_on_the_same_path_is_a_conflict() {
        let mut state = sample();
        state.proxies.insert(
            "again".into(),
            json!({"name": "again", "path": "/u/*", "backend": "http://c"}),
        );
        assert!(
            precheck_conflicts(&state).is_ok(),
            "not deployed: no conflict"
        );
        state.deployments.insert(("again".into(), "prod".into()));
        assert!(matches!(
            precheck_conflicts(&state),
            Err(ControlError::Conflict(_))
        ));
    }
}
