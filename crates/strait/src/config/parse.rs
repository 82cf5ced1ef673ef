//! Parsing and validation with file:line:column for every problem.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Config;
use super::interpolate;
use super::tree::{Loc, parse_yaml};
use super::validate::{Found, validate};

/// One problem in a configuration file or document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, or a label such as `admin API` for a document that is not a file.
    pub file: PathBuf,
    /// 1-based; `None` when the parser gives no location (and always for JSON documents).
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The dotted path of the offending value, as specific as known: `proxies[2].path`,
    /// `environments[0].timeouts.connect`, `proxies[1]` for a problem with a whole object.
    /// `None` for a problem with the document as a whole (or broken YAML).
    pub field: Option<String>,
    pub message: String,
}

/// `file:line:column: message`, leaving out what is unknown.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, or a file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

fn display_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, path)
}

/// Validates configuration text; `origin` names the file in problems and its folder anchors
/// relative paths. `${NAME}` in text values is replaced by the environment variable `NAME`.
///
/// Reports every problem at once, in file order. The exception is broken YAML (a syntax
/// error, a duplicate key, a document over the parser's resource limits): that one problem
/// is reported alone, since nothing after it can be read reliably.
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    parse_str_with(text, origin, &interpolate::environment)
}

/// [`parse_str`] with variables from `lookup` instead of the process environment.
pub fn parse_str_with(
    text: &str,
    origin: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let base = origin.parent().unwrap_or(Path::new(""));
    let mut problems = match parse_yaml(text) {
        Ok(mut root) => {
            let unresolved = root
                .as_mut()
                .map(|node| interpolate::interpolate(node, lookup))
                .unwrap_or_default();
            match validate(root.as_ref(), base, "the file") {
                Ok(config) if unresolved.is_empty() => return Ok(config),
                Ok(_) => problems(unresolved, origin),
                Err(mut found) => {
                    // A value left unresolved is reported once, for its variable.
                    found.retain(|f| !unresolved.iter().any(|u| u.field == f.field));
                    found.extend(unresolved);
                    problems(found, origin)
                }
            }
        }
        Err(problem) => vec![yaml_problem(problem, origin)],
    };
    problems.sort_by_key(|p| (p.line.unwrap_or(u64::MAX), p.column.unwrap_or(0)));
    Err(ConfigError::Invalid(problems))
}

/// The checker's findings as problems in `file`, in the order found.
pub(super) fn problems(found: Found, file: &Path) -> Vec<Problem> {
    found
        .into_iter()
        .map(|finding| Problem {
            file: file.to_path_buf(),
            line: finding.at.line,
            column: finding.at.column,
            field: finding.field,
            message: finding.message,
        })
        .collect()
}

/// Broken YAML, which stops the reading.
pub(super) fn yaml_problem((at, message): (Loc, String), file: &Path) -> Problem {
    Problem {
        file: file.to_path_buf(),
        line: at.line,
        column: at.column,
        field: None,
        message,
    }
}
