//! RFC 3986 path normalisation.

use std::borrow::Cow;

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    // TODO(routing helper)
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// Normalises a request path (no query): decodes percent-encoded unreserved characters,
/// removes dot segments; `%2F` stays encoded; a path that climbs above the root is an error.
pub fn normalize_path(_path: &str) -> Result<Cow<'_, str>, PathError> {
    todo!()
}
