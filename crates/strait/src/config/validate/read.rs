//! The typed readers every object uses: mappings and their known keys, lists, names,
//! text, flags, numbers, durations and files, each reporting a wrong type where it was
//! written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::parse_duration;
use crate::config::tree::{Loc, Node, Value};

use super::{Check, Fields};

impl Check<'_> {
    pub(super) fn duration(
        &mut self,
        node: &Node,
        ctx: &str,
        label: &str,
        field: &str,
    ) -> Option<Duration> {
        let text = self.scalar_text(node, ctx, label, "a duration such as 5s", field)?;
        parse_duration(&text)
            .map_err(|why| self.report(node.at, field, format!("{ctx}: {label}: {why}")))
            .ok()
    }

    /// Reports each name used a second time among `items` (their `kind`: "proxy", ...);
    /// returns, item by item, whether its name is not such a repeat.
    pub(super) fn unique_names<'d>(
        &mut self,
        kind: &str,
        items: impl IntoIterator<Item = (&'d Option<(String, Loc)>, &'d str)>,
    ) -> Vec<bool> {
        let mut names: HashMap<&str, Loc> = HashMap::new();
        let mut firsts = Vec::new();
        for (name, field) in items {
            let Some((name, at)) = name else {
                firsts.push(true);
                continue;
            };
            if let Some(first) = names.get(name.as_str()) {
                let message = format!(
                    "{kind} {name:?} is defined twice{}; {kind} names must be unique",
                    first_at(*first)
                );
                self.report(*at, field, message);
                firsts.push(false);
            } else {
                names.insert(name, *at);
                firsts.push(true);
            }
        }
        firsts
    }

    /// Reads the required `name`. Returns the label that names the object in later messages:
    /// `proxy "users"`, or the numbered label (`proxy #2`) when the name is unusable.
    pub(super) fn name(
        &mut self,
        fields: &Fields,
        kind: &str,
        numbered: String,
        example: &str,
    ) -> (String, Option<(String, Loc)>) {
        let node = self.required(fields, &numbered, "name", example);
        let field = fields.field("name");
        let name = node.and_then(|n| {
            let text = self.text(n, &numbered, "name", &field)?;
            Some((text.to_owned(), n.at))
        });
        let label = match &name {
            Some((name, _)) => format!("{kind} {name:?}"),
            None => numbered,
        };
        (label, name)
    }

    /// A whole number from `min` to `max` under `key`; `default` when absent.
    pub(super) fn whole(
        &mut self,
        fields: &Fields,
        ctx: &str,
        key: &str,
        min: u32,
        max: u32,
        default: u32,
    ) -> Option<u32> {
        let Some(node) = fields.optional(key) else {
            return Some(default);
        };
        let label = fields.label(key);
        let field = fields.field(key);
        let expected = format!("a whole number from {min} to {max}");
        let text = self.scalar_text(node, ctx, &label, &expected, &field)?;
        match text.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let message = format!("{ctx}: {label} must be {expected}, but it is {text}");
                self.report(node.at, &field, message);
                None
            }
        }
    }

    /// A duration above zero under `key`; `default` when absent.
    pub(super) fn positive(
        &mut self,
        fields: &Fields,
        ctx: &str,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(node) = fields.optional(key) else {
            return Some(default);
        };
        let label = fields.label(key);
        let field = fields.field(key);
        let d = self.duration(node, ctx, &label, &field)?;
        if d.is_zero() {
            self.report(
                node.at,
                &field,
                format!("{ctx}: {label}: must be more than 0s"),
            );
            return None;
        }
        Some(d)
    }

    /// A list of distinct non-empty names (`groups`).
    pub(super) fn names(
        &mut self,
        node: &Node,
        ctx: &str,
        key: &str,
        field: &str,
    ) -> Option<Vec<String>> {
        let expected = "a list of names, such as [admins, beta]";
        let items = self.list(node, &format!("{ctx}: {key}"), expected, field)?;
        let mut names: Vec<String> = Vec::new();
        let mut complete = true;
        for (index, item) in items.iter().enumerate() {
            let item_field = format!("{field}[{index}]");
            match self.text(item, ctx, &format!("each entry of {key}"), &item_field) {
                Some(name) if names.iter().any(|n| n == name) => {
                    let message = format!("{ctx}: {key} lists {name:?} twice");
                    self.report(item.at, &item_field, message);
                    complete = false;
                }
                Some(name) => names.push(name.to_owned()),
                None => complete = false,
            }
        }
        complete.then_some(names)
    }

    /// `node` (at `field`) as a mapping, or a problem naming `subject`.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        subject: &str,
        expected: &str,
        field: &str,
    ) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields {
                at: node.at,
                entries,
                prefix: String::new(),
                path: field.to_owned(),
            }),
            _ => self.wrong_kind(node, field, subject, expected),
        }
    }

    /// A nested mapping such as `tls`, with its keys checked.
    pub(super) fn section<'n>(
        &mut self,
        node: &'n Node,
        ctx: &str,
        name: &str,
        allowed: &[&str],
        expected: &str,
        field: &str,
    ) -> Option<Fields<'n>> {
        let mut fields = self.mapping(node, &format!("{ctx}: {name}"), expected, field)?;
        self.known_keys(&fields, Some(ctx), Some(name), allowed);
        fields.prefix = format!("{name}.");
        Some(fields)
    }

    pub(super) fn known_keys(
        &mut self,
        fields: &Fields,
        ctx: Option<&str>,
        section: Option<&str>,
        allowed: &[&str],
    ) {
        for (key, _) in fields.entries {
            if matches!(&key.value, Value::Text(t) if allowed.contains(&t.as_str())) {
                continue;
            }
            let key_name = match &key.value {
                Value::Text(t) => format!("{t:?}"),
                other => format!("({})", other.describe()),
            };
            let prefix = ctx.map(|c| format!("{c}: ")).unwrap_or_default();
            let place = match (ctx, section) {
                (_, Some(section)) => format!(" in {section}"),
                (None, None) => " at the top level".to_owned(),
                (Some(_), None) => String::new(),
            };
            let message = format!(
                "{prefix}unknown key {key_name}{place}; the keys allowed there are {}",
                allowed.join(", ")
            );
            let field = match &key.value {
                Value::Text(t) => fields.field(t),
                _ => fields.path.clone(),
            };
            self.report(key.at, &field, message);
        }
    }

    pub(super) fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        ctx: &str,
        key: &str,
        example: &str,
    ) -> Option<&'n Node> {
        let label = fields.label(key);
        let field = fields.field(key);
        match fields.entry(key) {
            None => {
                let message = format!(
                    "{ctx}: the required key {label} is missing (for example {key}: {example})"
                );
                self.report(fields.at, &field, message);
                None
            }
            Some((key_node, value)) if matches!(value.value, Value::Null) => {
                self.report(
                    key_node.at,
                    &field,
                    format!("{ctx}: {label} is empty (for example {key}: {example})"),
                );
                None
            }
            Some((_, value)) => Some(value),
        }
    }

    /// A relative path is resolved against the config file's folder.
    pub(super) fn file(
        &mut self,
        fields: &Fields,
        ctx: &str,
        key: &str,
        example: &str,
    ) -> Option<PathBuf> {
        let node = self.required(fields, ctx, key, example)?;
        let text = self.text(node, ctx, &fields.label(key), &fields.field(key))?;
        Some(self.base.join(text))
    }

    pub(super) fn flag(&mut self, fields: &Fields, ctx: &str, key: &str) -> Option<bool> {
        let Some(node) = fields.optional(key) else {
            return Some(false);
        };
        match node.value {
            Value::Bool(b) => Some(b),
            _ => self.wrong_kind(
                node,
                &fields.field(key),
                &format!("{ctx}: {key}"),
                "true or false",
            ),
        }
    }

    /// Non-empty text. A number is refused (`name: 2024`): YAML may have changed its spelling.
    pub(super) fn text<'n>(
        &mut self,
        node: &'n Node,
        ctx: &str,
        label: &str,
        field: &str,
    ) -> Option<&'n str> {
        match &node.value {
            Value::Text(t) if t.is_empty() => {
                self.report(node.at, field, format!("{ctx}: {label} is empty"));
                None
            }
            Value::Text(t) => Some(t),
            Value::Number(n) => {
                self.report(node.at, field, format!("{ctx}: {label} must be text, but it is the number {n}; write it in quotes: \"{n}\""));
                None
            }
            _ => self.wrong_kind(node, field, &format!("{ctx}: {label}"), "text"),
        }
    }

    /// Non-empty text holding a secret: problems never repeat the value.
    pub(super) fn secret<'n>(
        &mut self,
        node: &'n Node,
        ctx: &str,
        label: &str,
        field: &str,
    ) -> Option<&'n str> {
        let message = match &node.value {
            Value::Text(t) if !t.is_empty() => return Some(t),
            Value::Text(_) => format!("{ctx}: {label} is empty"),
            Value::Number(_) => format!("{ctx}: {label} must be text; write it in quotes"),
            other => format!(
                "{ctx}: {label} must be text, but it is {}",
                match other {
                    Value::Bool(_) => "a boolean".to_owned(),
                    other => other.describe(),
                }
            ),
        };
        self.report(node.at, field, message);
        None
    }

    /// Text or a number as text, for values whose own parser explains a bad spelling best
    /// (`connect: 5` → "5" has no unit).
    pub(super) fn scalar_text(
        &mut self,
        node: &Node,
        ctx: &str,
        label: &str,
        expected: &str,
        field: &str,
    ) -> Option<String> {
        match &node.value {
            Value::Text(t) | Value::Number(t) => Some(t.clone()),
            _ => self.wrong_kind(node, field, &format!("{ctx}: {label}"), expected),
        }
    }

    /// The optional top-level list `key` (empty when absent or not a list, the latter reported).
    pub(super) fn top_list<'n>(
        &mut self,
        fields: &Fields<'n>,
        whole: &str,
        key: &str,
    ) -> &'n [Node] {
        match fields.optional(key) {
            None => &[],
            Some(node) => self
                .list(
                    node,
                    &format!("{whole}: {key}"),
                    &format!("a list of {key}"),
                    key,
                )
                .unwrap_or_default(),
        }
    }

    pub(super) fn list<'n>(
        &mut self,
        node: &'n Node,
        subject: &str,
        expected: &str,
        field: &str,
    ) -> Option<&'n [Node]> {
        match &node.value {
            Value::List(items) => Some(items),
            _ => self.wrong_kind(node, field, subject, expected),
        }
    }

    /// The word under `key`: the value `choices` pairs it with, or `default` when absent. Any
    /// other word is reported with the list ("must be keep or drain, but it is \"move\"").
    pub(super) fn choice<T: Clone>(
        &mut self,
        fields: &Fields,
        ctx: &str,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> Option<T> {
        let Some(node) = fields.optional(key) else {
            return Some(default);
        };
        let label = fields.label(key);
        let field = fields.field(key);
        let word = self.text(node, ctx, &label, &field)?;
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == word) {
            return Some(value.clone());
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let listed = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        };
        let message = format!("{ctx}: {label} must be {listed}, but it is {word:?}");
        self.report(node.at, &field, message);
        None
    }

    /// Reports that `node` is not the kind of value `field` needs ("`subject` must be
    /// `expected`, but it is a list"); `None` for the caller to return.
    fn wrong_kind<T>(
        &mut self,
        node: &Node,
        field: &str,
        subject: &str,
        expected: &str,
    ) -> Option<T> {
        let message = format!(
            "{subject} must be {expected}, but it is {}",
            node.value.describe()
        );
        self.report(node.at, field, message);
        None
    }
}

/// `" (first at line N)"` when the line is known.
fn first_at(at: Loc) -> String {
    at.line
        .map(|line| format!(" (first at line {line})"))
        .unwrap_or_default()
}
