//! Parsing and validation with file:line:column for every problem.

use std::path::{Path, PathBuf};

use super::Config;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; `None` when the parser gives no location.
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

/// Every problem found, or a file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

fn display_problems(_problems: &[Problem]) -> String {
    todo!() // one line per problem: `file:line:column: message`
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse_str(&text, path)
}

/// Validates configuration text; `origin` names the file in problems and its folder anchors
/// relative paths.
pub fn parse_str(_text: &str, _origin: &Path) -> Result<Config, ConfigError> {
    todo!()
}
