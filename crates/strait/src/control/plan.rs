//! `strait apply`: the steps that take a gateway's current state to a desired one, in an
//! order that never references something missing — environments and proxies are written
//! before deployments are added, deployments are removed before what they reference.
//! Consumers are written first (a proxy that starts asking for credentials finds them) and
//! deleted last; named upstreams are written before the proxies that use them and deleted
//! after the proxies that stop using them.

use std::fmt;

use serde_json::Value;

use crate::store::State;

/// One admin API call of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    PutConsumer {
        name: String,
        body: Value,
        create: bool,
    },
    PutEnvironment {
        name: String,
        body: Value,
        create: bool,
    },
    PutUpstream {
        name: String,
        body: Value,
        create: bool,
    },
    PutProxy {
        name: String,
        body: Value,
        create: bool,
    },
    Deploy {
        proxy: String,
        environment: String,
    },
    Undeploy {
        proxy: String,
        environment: String,
    },
    DeleteProxy {
        name: String,
    },
    DeleteUpstream {
        name: String,
    },
    DeleteEnvironment {
        name: String,
    },
    DeleteConsumer {
        name: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::PutConsumer { name, create, .. } => {
                write!(
                    f,
                    "{} consumer {name}",
                    if *create { "create" } else { "update" }
                )
            }
            Step::PutEnvironment { name, create, .. } => {
                write!(
                    f,
                    "{} environment {name}",
                    if *create { "create" } else { "update" }
                )
            }
            Step::PutUpstream { name, create, .. } => {
                write!(
                    f,
                    "{} upstream {name}",
                    if *create { "create" } else { "update" }
                )
            }
            Step::PutProxy { name, create, .. } => {
                write!(
                    f,
                    "{} proxy {name}",
                    if *create { "create" } else { "update" }
                )
            }
            Step::Deploy { proxy, environment } => write!(f, "deploy {proxy} to {environment}"),
            Step::Undeploy { proxy, environment } => {
                write!(f, "undeploy {proxy} from {environment}")
            }
            Step::DeleteProxy { name } => write!(f, "delete proxy {name}"),
            Step::DeleteUpstream { name } => write!(f, "delete upstream {name}"),
            Step::DeleteEnvironment { name } => write!(f, "delete environment {name}"),
            Step::DeleteConsumer { name } => write!(f, "delete consumer {name}"),
        }
    }
}

/// The steps from `current` to `desired`; empty when they are equal.
pub fn plan(current: &State, desired: &State) -> Vec<Step> {
    let mut steps = Vec::new();
    for (name, body) in &desired.consumers {
        let before = current.consumers.get(name);
        if before != Some(body) {
            steps.push(Step::PutConsumer {
                name: name.clone(),
                body: body.clone(),
                create: before.is_none(),
            });
        }
    }
    for (name, body) in &desired.environments {
        let before = current.environments.get(name);
        if before != Some(body) {
            steps.push(Step::PutEnvironment {
                name: name.clone(),
                body: body.clone(),
                create: before.is_none(),
            });
        }
    }
    for (name, body) in &desired.upstreams {
        let before = current.upstreams.get(name);
        if before != Some(body) {
            steps.push(Step::PutUpstream {
                name: name.clone(),
                body: body.clone(),
                create: before.is_none(),
            });
        }
    }
    for (name, body) in &desired.proxies {
        let before = current.proxies.get(name);
        if before != Some(body) {
            steps.push(Step::PutProxy {
                name: name.clone(),
                body: body.clone(),
                create: before.is_none(),
            });
        }
    }
    let gone_proxy = |proxy: &String| !desired.proxies.contains_key(proxy);
    for (proxy, environment) in current.deployments.difference(&desired.deployments) {
        // Deleting the proxy undeploys it anyway.
        if !gone_proxy(proxy) {
            steps.push(Step::Undeploy {
                proxy: proxy.clone(),
                environment: environment.clone(),
            });
        }
    }
    for (proxy, environment) in desired.deployments.difference(&current.deployments) {
        steps.push(Step::Deploy {
            proxy: proxy.clone(),
            environment: environment.clone(),
        });
    }
    for name in current.proxies.keys().filter(|p| gone_proxy(p)) {
        steps.push(Step::DeleteProxy { name: name.clone() });
    }
    for name in current
        .upstreams
        .keys()
        .filter(|u| !desired.upstreams.contains_key(*u))
    {
        steps.push(Step::DeleteUpstream { name: name.clone() });
    }
    for name in current
        .environments
        .keys()
        .filter(|e| !desired.environments.contains_key(*e))
    {
        steps.push(Step::DeleteEnvironment { name: name.clone() });
    }
    for name in current
        .consumers
        .keys()
        .filter(|c| !desired.consumers.contains_key(*c))
    {
        steps.push(Step::DeleteConsumer { name: name.clone() });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(envs: &[&str], proxies: &[(&str, &str)], deployments: &[(&str, &str)]) -> State {
        let mut state = State::default();
        for env in envs {
            state
                .environments
                .insert((*env).into(), json!({"name": env, "listen": "127.0.0.1:0"}));
        }
        for (name, path) in proxies {
            state.proxies.insert(
                (*name).into(),
                json!({"name": name, "path": path, "backend": "http://b"}),
            );
        }
        for (proxy, env) in deployments {
            state.deployments.insert(((*proxy).into(), (*env).into()));
        }
        state
    }

    #[test]
    fn equal_states_need_no_step() {
        let s = state(&["a"], &[("p", "/p")], &[("p", "a")]);
        assert!(plan(&s, &s).is_empty());
    }

    #[test]
    fn creation_orders_objects_before_deployments() {
        let desired = state(&["a"], &[("p", "/p")], &[("p", "a")]);
        let steps: Vec<String> = plan(&State::default(), &desired)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            steps,
            ["create environment a", "create proxy p", "deploy p to a"]
        );
    }

    #[test]
    fn consumers_are_written_first_and_deleted_last() {
        let mut current = state(&["a"], &[], &[]);
        current
            .consumers
            .insert("old".into(), json!({"name": "old"}));
        current
            .consumers
            .insert("same".into(), json!({"name": "same"}));
        let mut desired = state(&["b"], &[], &[]);
        desired
            .consumers
            .insert("new".into(), json!({"name": "new"}));
        desired
            .consumers
            .insert("same".into(), json!({"name": "same"}));
        let steps: Vec<String> = plan(&current, &desired)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            steps,
            [
                "create consumer new",
                "create environment b",
                "delete environment a",
                "delete consumer old"
            ]
        );
    }

    #[test]
    fn removal_undeploys_before_deleting_and_skips_deleted_proxies() {
        let current = state(
            &["a", "b"],
            &[("p", "/p"), ("q", "/q")],
            &[("p", "a"), ("q", "b")],
        );
        let desired = state(&["a"], &[("q", "/q2")], &[]);
        let steps: Vec<String> = plan(&current, &desired)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            steps,
            [
                "update proxy q",
                "undeploy q from b",
                "delete proxy p",
                "delete environment b"
            ]
        );
    }

    #[test]
    fn upstreams_are_written_before_their_proxies_and_deleted_after() {
        let mut current = state(&["a"], &[], &[]);
        current.upstreams.insert(
            "old".into(),
            json!({"name": "old", "targets": ["http://o"]}),
        );
        current.proxies.insert(
            "p".into(),
            json!({"name": "p", "path": "/p", "backend": {"upstream": "old"}}),
        );
        let mut desired = state(&["a"], &[], &[]);
        desired.upstreams.insert(
            "new".into(),
            json!({"name": "new", "targets": ["http://n"]}),
        );
        desired.proxies.insert(
            "p".into(),
            json!({"name": "p", "path": "/p", "backend": {"upstream": "new"}}),
        );
        let steps: Vec<String> = plan(&current, &desired)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            steps,
            [
                "create upstream new",
                "update proxy p",
                "delete upstream old"
            ]
        );
        assert!(plan(&desired, &desired).is_empty());
    }
}
