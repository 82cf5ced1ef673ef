//! Configuration: the YAML file format, its parsing and its validation.
//!
//! Owns turning text into a validated [`Config`]: the YAML is read into a tree of located
//! nodes (`tree`), then checked object by object (`validate`), so every problem is reported
//! at once with file:line:column (only broken YAML, such as a syntax error or a duplicate key,
//! is reported alone). The control plane's JSON documents (`document`) go through the same
//! checker, so a file and the admin API obey one set of rules. In a file, `${NAME}` in a text
//! value is the environment variable `NAME` (`interpolate`), replaced on the tree so a value
//! can never change the YAML's structure. Knows nothing of sockets or running state; the
//! proxy compiles a `Config` into its own runtime snapshot.

mod document;
mod duration;
mod interpolate;
mod model;
mod parse;
mod tree;
mod validate;

#[cfg(test)]
mod backend_tests;
#[cfg(test)]
mod document_tests;
#[cfg(test)]
mod tests;

pub use document::{
    DOCUMENT_ORIGIN, document_from_yaml, document_from_yaml_with, document_to_yaml,
    validate_document,
};
pub use duration::{format_duration, parse_duration};
pub use model::{
    AccessLogFormat, AccessLogSettings, ActiveCheck, AdminConfig, BackendSpec, BackendTls, Balance,
    BreakerSpec, Config, Consumer, Environment, HashOn, HealthSpec, KeyDigest, Login,
    NamedUpstream, PassiveCheck, Password, PolicyEntry, Proxy, Rebalance, TargetSpec, Targets,
    Timeouts, TlsFiles,
};
pub use parse::{ConfigError, Problem, load, parse_str, parse_str_with};
