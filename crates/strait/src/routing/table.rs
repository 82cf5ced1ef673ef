//! The route table of one environment: a trie over path segments.

use super::ProxyPath;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two proxies use the path {0}")]
pub struct DuplicatePath(pub String);

/// The result of a lookup: the value stored for the longest matching proxy path, and the
/// remaining path (request path minus proxy path; `""` or starting with `/`).
#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch<'t, 'p, T> {
    pub value: &'t T,
    pub remaining: &'p str,
}

/// Immutable once built; shared between requests without locks.
#[derive(Debug)]
pub struct RouteTable<T> {
    _todo: Vec<T>, // TODO(routing helper)
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable { _todo: Vec::new() }
    }
}

impl<T> RouteTable<T> {
    pub fn insert(&mut self, _path: &ProxyPath, _value: T) -> Result<(), DuplicatePath> {
        todo!()
    }
    /// Looks up an already-normalised request path (no query).
    pub fn lookup<'t, 'p>(&'t self, _path: &'p str) -> Option<RouteMatch<'t, 'p, T>> {
        todo!()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
