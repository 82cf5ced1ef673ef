//! Routing: from a request path to a proxy and a backend target.
//!
//! Owns path normalisation (RFC 3986), proxy path patterns (`/api/v1/*`), backend URLs,
//! the per-environment route table (a segment trie: lookup cost does not grow with the
//! number of proxies) and the five-step target resolution. Pure: no I/O, no async, no
//! knowledge of connections or configuration files.

mod backend;
mod normalize;
mod pattern;
mod table;
mod target;

pub use backend::{BackendUrl, BackendUrlError, Scheme};
pub use normalize::{PathError, is_sub_delim, is_unreserved, normalize_path};
pub use pattern::{PatternError, ProxyPath};
pub use table::{DuplicatePath, RouteMatch, RouteTable};
pub use target::{target_path, target_uri};

#[cfg(test)]
mod proptests;
