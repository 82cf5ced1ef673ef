//! Consumers: names, groups and credentials (API keys, basic auth, JWT subject), each
//! credential unique across consumers.

use std::collections::HashMap;

use crate::config::tree::{Loc, Node};
use crate::config::{Consumer, KeyDigest, Login, Password};
use crate::policy;

use super::{BASIC_AUTH_KEYS, CONSUMER_KEYS, CREDENTIAL_KEYS, Check};

pub(super) struct ConsumerDraft {
    /// `consumers[i]`.
    field: String,
    name: Option<(String, Loc)>,
    /// The basic-auth username, where it was written and its field.
    username: Option<(String, Loc, String)>,
    /// Every API key's digest, where it was written and its field.
    keys: Vec<(KeyDigest, Loc, String)>,
    subject: Option<(String, Loc, String)>,
    pub(super) consumer: Option<Consumer>,
}

#[derive(Default)]
struct Credentials {
    api_keys: Vec<KeyDigest>,
    basic_auth: Option<Login>,
    jwt_subject: Option<String>,
}

impl Check<'_> {
    pub(super) fn consumer(&mut self, index: usize, node: &Node) -> ConsumerDraft {
        let numbered = format!("consumer #{}", index + 1);
        let field = format!("consumers[{index}]");
        let mut draft = ConsumerDraft {
            field: field.clone(),
            name: None,
            username: None,
            keys: Vec::new(),
            subject: None,
            consumer: None,
        };
        let expected = "a mapping with name, groups and credentials";
        let Some(fields) = self.mapping(node, &numbered, expected, &field) else {
            return draft;
        };
        let (ctx, name) = self.name(&fields, "consumer", numbered, "alice");
        draft.name = name.clone();
        self.known_keys(&fields, Some(&ctx), None, CONSUMER_KEYS);
        let groups = match fields.optional("groups") {
            None => Some(Vec::new()),
            Some(node) => self.names(node, &ctx, "groups", &fields.field("groups")),
        };
        let credentials = match fields.optional("credentials") {
            None => Some(Credentials::default()),
            Some(node) => self.credentials(node, &ctx, &fields.field("credentials"), &mut draft),
        };
        draft.consumer = (|| {
            let credentials = credentials?;
            Some(Consumer {
                name: name?.0,
                groups: groups?,
                api_keys: credentials.api_keys,
                basic_auth: credentials.basic_auth,
                jwt_subject: credentials.jwt_subject,
            })
        })();
        draft
    }

    fn credentials(
        &mut self,
        node: &Node,
        ctx: &str,
        field: &str,
        draft: &mut ConsumerDraft,
    ) -> Option<Credentials> {
        let expected = "a mapping such as { api_keys: [\"${ALICE_KEY}\"] }";
        let fields = self.section(node, ctx, "credentials", CREDENTIAL_KEYS, expected, field)?;
        let mut complete = true;
        let mut api_keys = Vec::new();
        if let Some(node) = fields.optional("api_keys") {
            let field = fields.field("api_keys");
            let label = fields.label("api_keys");
            let expected = "a list of keys, such as [\"${ALICE_KEY}\"]";
            match self.list(node, &format!("{ctx}: {label}"), expected, &field) {
                Some(items) => {
                    for (index, item) in items.iter().enumerate() {
                        let item_field = format!("{field}[{index}]");
                        match self.secret(item, ctx, &format!("{label}[{index}]"), &item_field) {
                            Some(key) => {
                                let digest = KeyDigest::of(key.as_bytes());
                                draft.keys.push((digest, item.at, item_field));
                                api_keys.push(digest);
                            }
                            None => complete = false,
                        }
                    }
                }
                None => complete = false,
            }
        }
        if let Some(node) = fields.optional("api_key_digests") {
            let field = fields.field("api_key_digests");
            let label = fields.label("api_key_digests");
            let expected = "a list of digests, such as [\"sha256:<64 hex digits>\"]";
            match self.list(node, &format!("{ctx}: {label}"), expected, &field) {
                Some(items) => {
                    for (index, item) in items.iter().enumerate() {
                        let item_field = format!("{field}[{index}]");
                        let item_label = format!("{label}[{index}]");
                        let Some(text) = self.text(item, ctx, &item_label, &item_field) else {
                            complete = false;
                            continue;
                        };
                        match KeyDigest::parse(text) {
                            Ok(digest) => {
                                draft.keys.push((digest, item.at, item_field));
                                api_keys.push(digest);
                            }
                            Err(why) => {
                                let message = format!("{ctx}: {item_label}: {why}");
                                self.report(item.at, &item_field, message);
                                complete = false;
                            }
                        }
                    }
                }
                None => complete = false,
            }
        }
        api_keys.sort_by_key(ToString::to_string);
        api_keys.dedup();
        let basic_auth = match fields.optional("basic_auth") {
            None => Some(None),
            Some(node) => self
                .login(node, ctx, &fields.field("basic_auth"), draft)
                .map(Some),
        };
        let jwt_subject = match fields.optional("jwt_subject") {
            None => Some(None),
            Some(node) => {
                let field = fields.field("jwt_subject");
                let subject = self.text(node, ctx, &fields.label("jwt_subject"), &field);
                if let Some(subject) = subject {
                    draft.subject = Some((subject.to_owned(), node.at, field));
                }
                subject.map(|s| Some(s.to_owned()))
            }
        };
        Some(Credentials {
            api_keys: complete.then_some(api_keys)?,
            basic_auth: basic_auth?,
            jwt_subject: jwt_subject?,
        })
    }

    /// `basic_auth: {username, password | password_hash}`.
    fn login(
        &mut self,
        node: &Node,
        ctx: &str,
        field: &str,
        draft: &mut ConsumerDraft,
    ) -> Option<Login> {
        let expected = "a mapping such as { username: alice, password: \"${ALICE_PW}\" }";
        let name = "credentials.basic_auth";
        let fields = self.section(node, ctx, name, BASIC_AUTH_KEYS, expected, field)?;
        let username = self
            .required(&fields, ctx, "username", "alice")
            .and_then(|node| {
                let field = fields.field("username");
                let username = self.text(node, ctx, &fields.label("username"), &field)?;
                if username.contains(':') {
                    let message = format!(
                        "{ctx}: {}: a basic-auth username cannot contain a colon",
                        fields.label("username")
                    );
                    self.report(node.at, &field, message);
                    return None;
                }
                draft.username = Some((username.to_owned(), node.at, field));
                Some(username.to_owned())
            });
        let password = match (
            fields.optional("password"),
            fields.optional("password_hash"),
        ) {
            (Some(node), None) => {
                let label = fields.label("password");
                self.secret(node, ctx, &label, &fields.field("password"))
                    .map(|p| Password::Digest(KeyDigest::of(p.as_bytes())))
            }
            (None, Some(node)) => {
                let field = fields.field("password_hash");
                let label = fields.label("password_hash");
                let text = self.text(node, ctx, &label, &field)?;
                match policy::consumers::check_password_hash(text) {
                    Ok(()) => Some(Password::Argon2(text.to_owned())),
                    Err(why) => {
                        self.report(node.at, &field, format!("{ctx}: {why}"));
                        None
                    }
                }
            }
            (Some(_), Some(node)) => {
                let message = format!(
                    "{ctx}: {}: give password or password_hash, not both",
                    fields.label("password_hash")
                );
                self.report(node.at, &fields.field("password_hash"), message);
                None
            }
            (None, None) => {
                let message = format!(
                    "{ctx}: {name} needs password (for example password: \"${{ALICE_PW}}\") or password_hash (an argon2id PHC string)"
                );
                self.report(fields.at, &fields.field("password"), message);
                None
            }
        };
        Some(Login {
            username: username?,
            password: password?,
        })
    }

    /// Names, usernames, API keys and JWT subjects each belong to one consumer. Messages
    /// never show a key, only who holds it.
    pub(super) fn check_consumers(&mut self, consumers: &[ConsumerDraft]) {
        let firsts = self.unique_names(
            "consumer",
            consumers.iter().map(|c| (&c.name, c.field.as_str())),
        );
        let mut usernames: HashMap<&str, &str> = HashMap::new();
        let mut keys: HashMap<KeyDigest, &str> = HashMap::new();
        let mut subjects: HashMap<&str, &str> = HashMap::new();
        for (consumer, first) in consumers.iter().zip(firsts) {
            let (Some((name, _)), true) = (&consumer.name, first) else {
                continue;
            };
            if let Some((username, at, field)) = &consumer.username {
                match usernames.get(username.as_str()) {
                    Some(other) => {
                        let message = format!(
                            "consumer {name:?}: the basic-auth username {username:?} already belongs to consumer {other:?}"
                        );
                        self.report(*at, field, message);
                    }
                    None => {
                        usernames.insert(username, name);
                    }
                }
            }
            for (digest, at, field) in &consumer.keys {
                match keys.get(digest) {
                    Some(other) if other != name => {
                        let message = format!(
                            "consumer {name:?}: an API key here is also consumer {other:?}'s; each key identifies one consumer"
                        );
                        self.report(*at, field, message);
                    }
                    _ => {
                        keys.insert(*digest, name);
                    }
                }
            }
            if let Some((subject, at, field)) = &consumer.subject {
                match subjects.get(subject.as_str()) {
                    Some(other) => {
                        let message = format!(
                            "consumer {name:?}: the JWT subject {subject:?} already belongs to consumer {other:?}"
                        );
                        self.report(*at, field, message);
                    }
                    None => {
                        subjects.insert(subject, name);
                    }
                }
            }
        }
    }
}
