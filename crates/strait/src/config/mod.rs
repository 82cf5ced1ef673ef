//! Configuration: the YAML file format, its parsing and its validation.
//!
//! Owns turning text into a validated [`Config`]: the YAML is read into a tree of located
//! nodes (`tree`), then checked object by object (`validate`), so every problem is reported
//! at once with file:line:column (only broken YAML, such as a syntax error or a duplicate key,
//! is reported alone). Knows nothing of sockets or running state; the proxy compiles a
//! `Config` into its own runtime snapshot.

mod duration;
mod model;
mod parse;
mod tree;
mod validate;

#[cfg(test)]
mod tests;

pub use duration::{format_duration, parse_duration};
pub use model::{BackendTls, Config, Environment, Proxy, Timeouts, TlsFiles};
pub use parse::{ConfigError, Problem, load, parse_str};
