//! The YAML document as a tree of nodes that remember where they were written.
//!
//! Reading the whole document into this tree first (instead of straight into typed structs)
//! lets validation report every unknown key, missing key and wrong type at once, each with
//! its line and column. Only YAML syntax errors and resource limits stop the reading.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};

/// A 1-based position in the file; `None` when the parser gave none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Loc {
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl Loc {
    fn from_saphyr(l: serde_saphyr::Location) -> Loc {
        let known = |n: u64| (n > 0).then_some(n);
        Loc {
            line: known(l.line()),
            column: known(l.column()),
        }
    }
}

#[derive(Debug)]
pub(super) struct Node {
    pub value: Value,
    /// Where the value is used (for an alias `*a`, the alias itself).
    pub at: Loc,
}

#[derive(Debug)]
pub(super) enum Value {
    Null,
    Bool(bool),
    /// The number as Rust prints it (used for messages and where text is expected).
    Number(String),
    Text(String),
    List(Vec<Node>),
    /// Entries in file order; YAML parsing already rejects duplicate keys.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// Describes the value for "but it is ..." in messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "empty".to_owned(),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Number(n) => format!("the number {n}"),
            Value::Text(t) => format!("the text {t:?}"),
            Value::List(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping (key: value pairs)".to_owned(),
        }
    }
}

/// Parses YAML text. `Ok(None)` for an empty document. The parser's default budget applies
/// (64 nesting levels, 250,000 nodes, 1,000,000 events, 64 MiB of scalar text counting alias
/// replays), so alias bombs and deep nesting are refused before they can exhaust memory.
pub(super) fn parse_yaml(text: &str) -> Result<Option<Node>, (Loc, String)> {
    let options = serde_saphyr::options! {
        // Messages carry the location separately; no source snippet.
        with_snippet: false,
        // Only true/false are booleans: `no`, `on`, `y` stay text (an environment may be called `no`).
        strict_booleans: true,
    };
    serde_saphyr::from_str_with_options::<Option<Node>>(text, options).map_err(|err| {
        let at = err.location().map(Loc::from_saphyr).unwrap_or_default();
        let message = UserMessageFormatter.format_message(innermost(&err));
        // One line per problem: no control characters from the parser's text.
        let message: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        (at, format!("the file is not valid YAML: {message}"))
    })
}

/// The formatter expects the original error, without the alias and snippet wrappers.
fn innermost(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = err
    {
        err = error;
    }
    err
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            value: spanned.value,
            at: Loc::from_saphyr(spanned.referenced),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v.to_string()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary values are not used in this file"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}
