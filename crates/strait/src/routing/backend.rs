//! Backend URLs: `http://host:port/path` or `https://...`, no query, no fragment, no userinfo.

/// The scheme a backend URL was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Why a backend URL was rejected; each message is a sentence a newcomer understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendUrlError {
    // TODO(routing helper): variants such as UnsupportedScheme, MissingHost, HasQuery...
    #[error("backend URL {0:?} is not valid")]
    Invalid(String),
}

/// A parsed backend URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    // TODO(routing helper)
}

impl BackendUrl {
    /// Parses `http://host[:port][/path]` or `https://...`.
    pub fn parse(_s: &str) -> Result<Self, BackendUrlError> {
        todo!()
    }
    pub fn scheme(&self) -> Scheme {
        todo!()
    }
    /// `host:port` as written (port omitted when it was omitted), e.g. `localhost:8080`; used as `Host`.
    pub fn authority(&self) -> &str {
        todo!()
    }
    /// The host without brackets or port, e.g. `localhost`, `::1`; used for DNS and TLS SNI.
    pub fn host(&self) -> &str {
        todo!()
    }
    /// The port, defaulting to 80 for http and 443 for https.
    pub fn port(&self) -> u16 {
        todo!()
    }
    /// The path as written, `""` when none was given (`http://h` → `""`, `http://h/` → `"/"`).
    pub fn path(&self) -> &str {
        todo!()
    }
    /// The URL as the user wrote it (for logs and errors).
    pub fn as_str(&self) -> &str {
        todo!()
    }
}
