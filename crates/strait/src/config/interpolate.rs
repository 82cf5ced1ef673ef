//! `${NAME}` in a configuration file's text values is replaced by the environment variable
//! `NAME`, so secrets stay out of files; `$${` writes a literal `${`. It works on the parsed
//! tree, value by value, so a variable's content can never change the YAML's structure, and
//! an unset variable is a problem at the line where it is used. Admin API documents are not
//! interpolated: the gateway's environment is not theirs to read.

use super::tree::{Node, Value};
use super::validate::{Finding, Found};

/// Where variables come from: the process environment in production, a map in tests.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment (a variable that is not valid Unicode counts as unset).
pub fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Replaces every `${NAME}` in the text values under `node`. Problems (unset variables,
/// malformed references) are returned with their place; such a value is left as written.
pub(super) fn interpolate(node: &mut Node, lookup: Lookup<'_>) -> Found {
    let mut found = Vec::new();
    walk(node, "", lookup, &mut found);
    found
}

fn walk(node: &mut Node, field: &str, lookup: Lookup<'_>, found: &mut Found) {
    match &mut node.value {
        Value::Text(text) if text.contains('$') => match substitute(text, lookup) {
            Ok(done) => *text = done,
            Err(message) => found.push(Finding {
                at: node.at,
                field: (!field.is_empty()).then(|| field.to_owned()),
                message,
            }),
        },
        Value::List(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                walk(item, &format!("{field}[{index}]"), lookup, found);
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let name = match &key.value {
                    Value::Text(t) | Value::Number(t) => t.clone(),
                    _ => String::new(),
                };
                let path = if field.is_empty() {
                    name
                } else {
                    format!("{field}.{name}")
                };
                walk(value, &path, lookup, found);
            }
        }
        _ => {}
    }
}

/// One text value with its references replaced; the message says what is wrong otherwise
/// (never the variable's value).
pub(super) fn substitute(text: &str, lookup: Lookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        if let Some(after) = from.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = from.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "{from:?} opens a variable reference with ${{ but has no closing }}; write $${{ for a literal ${{"
                ));
            };
            let (name, after) = after.split_at(end);
            let valid = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "${{{name}}} is not a variable reference: a name is letters, digits and _ (not starting with a digit); write $${{ for a literal ${{"
                ));
            }
            let Some(value) = lookup(name) else {
                return Err(format!(
                    "the environment variable {name} is not set (used as ${{{name}}}); set it, or write $${{ for a literal ${{"
                ));
            };
            out.push_str(&value);
            rest = after.get(1..).unwrap_or_default();
        } else {
            out.push('$');
            rest = from.get(1..).unwrap_or_default();
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The text as the file format writes it: every `${` escaped as `$${`, so reading it back
/// gives the same text.
pub(super) fn escape(text: &str) -> String {
    text.replace("${", "$${")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("s3cret".to_owned()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("${KEY}".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn references_are_replaced() {
        let sub = |t: &str| substitute(t, &vars);
        assert_eq!(sub("${KEY}").unwrap(), "s3cret");
        assert_eq!(sub("a-${KEY}-${EMPTY}-b").unwrap(), "a-s3cret--b");
        assert_eq!(sub("$argon2id$v=19$m=1").unwrap(), "$argon2id$v=19$m=1");
        assert_eq!(sub("cost $5 and $").unwrap(), "cost $5 and $");
        assert_eq!(sub("$${KEY}").unwrap(), "${KEY}");
        assert_eq!(
            sub("$$${KEY}").unwrap(),
            "$${KEY}",
            "only $${{ is an escape"
        );
        assert_eq!(
            sub("${DOLLAR}").unwrap(),
            "${KEY}",
            "values are not re-read"
        );
    }

    #[test]
    fn problems_name_the_variable_never_a_value() {
        let sub = |t: &str| substitute(t, &vars).unwrap_err();
        assert!(sub("${MISSING}").contains("MISSING is not set"));
        assert!(sub("${KEY").contains("no closing"));
        assert!(sub("${1X}").contains("not a variable reference"));
        assert!(sub("${}").contains("not a variable reference"));
    }

    #[test]
    fn escaping_round_trips() {
        for text in ["plain", "${KEY}", "$${KEY}", "a$b${c}$${d}$"] {
            assert_eq!(substitute(&escape(text), &vars).unwrap(), text);
        }
    }
}
