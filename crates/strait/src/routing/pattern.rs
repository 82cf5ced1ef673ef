//! Proxy path patterns: `/exact/path` or `/prefix/*`.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    // TODO(routing helper)
    #[error("invalid proxy path")]
    Invalid,
}

/// A validated proxy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    // TODO(routing helper)
}

impl ProxyPath {
    pub fn parse(_s: &str) -> Result<Self, PatternError> {
        todo!()
    }
    /// The path without the `*` (step 2 of resolution): `/api/v1/*` → `/api/v1`, `/*` → `""`.
    pub fn prefix(&self) -> &str {
        todo!()
    }
    pub fn is_wildcard(&self) -> bool {
        todo!()
    }
    /// As the user wrote it.
    pub fn as_str(&self) -> &str {
        todo!()
    }
}
