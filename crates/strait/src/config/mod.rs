//! Configuration: the YAML file format, its parsing and its validation.
//!
//! Owns turning text into a validated [`Config`] and reporting **every** problem with
//! file:line:column. Knows nothing of sockets or running state; the proxy compiles a
//! `Config` into its own runtime snapshot.

mod duration;
mod model;
mod parse;

pub use duration::{format_duration, parse_duration};
pub use model::{BackendTls, Config, Environment, Proxy, TlsFiles, Timeouts};
pub use parse::{ConfigError, Problem, load, parse_str};
