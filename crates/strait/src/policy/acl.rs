//! `acl`: which consumer groups may use the proxy — `allow` (a consumer in none of them gets
//! 403) or `deny` (a consumer in any of them gets 403), one of the two. It judges the
//! consumer an authentication policy found; with none, the request is 401, as Kong's acl
//! plugin answers.

use std::sync::Arc;

use super::{Field, Fields, Head, Kind, Phase, Policy, Reported, Shape, Verdict};
use crate::error::{ErrorKind, GatewayError};

pub const KIND: Kind = Kind {
    name: "acl",
    phase: Phase::Authorization,
    doc: "Allows or denies consumers by group (403); needs an authentication policy before it (401 otherwise).",
    fields: &[
        Field {
            name: "allow",
            shape: Shape::Texts,
            doc: "Only consumers in one of these groups may pass (not with `deny`).",
        },
        Field {
            name: "deny",
            shape: Shape::Texts,
            doc: "Consumers in any of these groups are refused (not with `allow`).",
        },
    ],
    parse,
};

#[derive(Debug)]
struct Acl {
    /// `true`: `groups` is an allow-list; `false`: a deny-list.
    allow: bool,
    groups: Vec<String>,
}

fn parse(fields: &mut dyn Fields) -> Result<Arc<dyn Policy>, Reported> {
    let allow = fields.texts("allow");
    let deny = fields.texts("deny");
    let (allow, groups) = match (allow?, deny?) {
        (Some(groups), None) => (true, groups),
        (None, Some(groups)) => (false, groups),
        (Some(_), Some(_)) => {
            return Err(fields.problem("deny", "give either allow or deny, not both".to_owned()));
        }
        (None, None) => {
            return Err(fields.problem(
                "allow",
                "needs allow (the groups that may pass) or deny (the groups refused), such as allow: [admins]".to_owned(),
            ));
        }
    };
    if groups.is_empty() {
        let key = if allow { "allow" } else { "deny" };
        return Err(fields.problem(
            key,
            format!("{key} is an empty list; name at least one group"),
        ));
    }
    Ok(Arc::new(Acl { allow, groups }))
}

impl Policy for Acl {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn apply(&self, head: &mut Head<'_>) -> Verdict {
        let Some(consumer) = &head.consumer else {
            return Verdict::Unauthenticated;
        };
        let listed = consumer
            .groups
            .iter()
            .any(|group| self.groups.iter().any(|g| **g == **group));
        if listed == self.allow {
            return Verdict::Pass;
        }
        Verdict::Refuse(GatewayError::new(
            ErrorKind::Forbidden,
            format!(
                "consumer \"{}\" may not use this API proxy: its groups are not allowed here",
                consumer.name
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Chain;
    use super::super::tests::{Given, directory, policy, run};
    use super::*;
    use serde_json::json;

    #[test]
    fn exactly_one_non_empty_list() {
        for values in [
            vec![],
            vec![("allow", json!(["a"])), ("deny", json!(["b"]))],
            vec![("allow", json!([]))],
        ] {
            let mut given = Given::new(&values);
            assert!((KIND.parse)(&mut given).is_err(), "{values:?}");
            assert_eq!(given.problems.len(), 1, "{:?}", given.problems);
        }
    }

    #[tokio::test]
    async fn groups_decide() {
        let key = policy("api_key", &[]);
        let allow = Chain::new(
            [&key, &policy("acl", &[("allow", json!(["beta"]))])],
            directory(),
        );
        let deny = Chain::new(
            [&key, &policy("acl", &[("deny", json!(["beta"]))])],
            directory(),
        );
        let alice = [("x-api-key", "alice-key")];
        let bob = [("x-api-key", "bob-key")];
        assert!(run(&allow, &alice, "http://b/").await.0.is_ok());
        let refused = run(&allow, &bob, "http://b/").await.0.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Forbidden);
        assert!(refused.message.contains("\"bob\""), "{}", refused.message);
        assert_eq!(
            run(&deny, &alice, "http://b/").await.0.unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert!(run(&deny, &bob, "http://b/").await.0.is_ok());
    }
}
