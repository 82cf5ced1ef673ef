//! Proxy path patterns: `/exact/path` or `/prefix/*`.
//!
//! A proxy path must already be in normal form (see [`normalize_path`]): one that is not,
//! such as `/a/../b` or `/a%2fb`, is refused with a message saying what to write instead,
//! so the path matched is always the path the user wrote.

use super::normalize::{PathError, is_rfc_path_char, normalize_path};

/// Why a proxy path was rejected; each message is a sentence a newcomer understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the proxy path is empty; write a path such as `/api/*` or `/health`")]
    Empty,
    #[error("the proxy path {0:?} must start with `/`, as in `/api/*`")]
    NotAbsolute(String),
    #[error(
        "the proxy path {0:?} contains `?` or `#`; a proxy path matches the request path only, never the query or fragment"
    )]
    QueryOrFragment(String),
    #[error(
        "the proxy path {path:?} contains {ch:?}, which is not allowed in a URL path; percent-encode it"
    )]
    InvalidCharacter { path: String, ch: char },
    #[error(
        "the proxy path {0:?} uses `*` in the wrong place; `*` is only allowed as the whole last segment, as in `/api/*`"
    )]
    MisplacedWildcard(String),
    #[error("the proxy path {0:?} contains an empty segment (`//`); remove the extra `/`")]
    EmptySegment(String),
    #[error("the proxy path {path:?} is not valid: {source}")]
    Path { path: String, source: PathError },
    #[error(
        "the proxy path {path:?} is not in normal form (dot segments removed, `%XX` escapes only where needed, in uppercase); write {normalized:?} instead"
    )]
    NotNormal { path: String, normalized: String },
}

/// A validated proxy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    text: String,
    wildcard: bool,
}

impl ProxyPath {
    pub fn parse(s: &str) -> Result<Self, PatternError> {
        let owned = || s.to_owned();
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if !s.starts_with('/') {
            return Err(PatternError::NotAbsolute(owned()));
        }
        if s.contains(['?', '#']) {
            return Err(PatternError::QueryOrFragment(owned()));
        }
        if let Some(ch) = s.chars().find(|&c| c != '%' && !is_rfc_path_char(c)) {
            return Err(PatternError::InvalidCharacter { path: owned(), ch });
        }
        // `*` is allowed only as the whole last segment.
        let wildcard = s.ends_with("/*");
        let before_star = if wildcard {
            s.strip_suffix('*').unwrap_or(s)
        } else {
            s
        };
        if before_star.contains('*') {
            return Err(PatternError::MisplacedWildcard(owned()));
        }
        if s.contains("//") {
            return Err(PatternError::EmptySegment(owned()));
        }
        match normalize_path(s) {
            Ok(normalized) if normalized == s => Ok(ProxyPath {
                text: owned(),
                wildcard,
            }),
            Ok(normalized) => Err(PatternError::NotNormal {
                path: owned(),
                normalized: normalized.into_owned(),
            }),
            Err(source) => Err(PatternError::Path {
                path: owned(),
                source,
            }),
        }
    }

    /// The path without the `*` (step 2 of resolution): `/api/v1/*` → `/api/v1`, `/*` → `""`.
    /// For an exact path, the whole path.
    pub fn prefix(&self) -> &str {
        if self.wildcard {
            self.text.strip_suffix("/*").unwrap_or(&self.text)
        } else {
            &self.text
        }
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// As the user wrote it (which is also its normal form).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ProxyPath {
        match ProxyPath::parse(s) {
            Ok(p) => p,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn prefix_and_wildcard() {
        let cases = [
            ("/api/v1/*", "/api/v1", true),
            ("/*", "", true),
            ("/", "/", false),
            ("/health", "/health", false),
            ("/a/", "/a/", false),
            ("/a%2Fb/*", "/a%2Fb", true),
            ("/x:@!$&'()+,;=~/*", "/x:@!$&'()+,;=~", true),
        ];
        for (text, prefix, wildcard) in cases {
            let p = parse(text);
            assert_eq!(
                (p.as_str(), p.prefix(), p.is_wildcard()),
                (text, prefix, wildcard)
            );
        }
    }

    #[test]
    fn rejections() {
        let owned = |s: &str| s.to_owned();
        assert_eq!(ProxyPath::parse(""), Err(PatternError::Empty));
        assert_eq!(
            ProxyPath::parse("api/*"),
            Err(PatternError::NotAbsolute(owned("api/*")))
        );
        assert_eq!(
            ProxyPath::parse("*"),
            Err(PatternError::NotAbsolute(owned("*")))
        );
        for p in ["/a*", "/a/*/b", "/*x", "/**", "/*/", "/a/*/*"] {
            assert_eq!(
                ProxyPath::parse(p),
                Err(PatternError::MisplacedWildcard(owned(p))),
                "{p}"
            );
        }
        for p in ["/a?b", "/a#b", "/a/*?x"] {
            assert_eq!(
                ProxyPath::parse(p),
                Err(PatternError::QueryOrFragment(owned(p))),
                "{p}"
            );
        }
        for (p, ch) in [
            ("/a b", ' '),
            ("/a\"", '"'),
            ("/{x}", '{'),
            ("/caf\u{e9}", '\u{e9}'),
            ("/a\\b", '\\'),
        ] {
            assert_eq!(
                ProxyPath::parse(p),
                Err(PatternError::InvalidCharacter { path: owned(p), ch }),
                "{p}"
            );
        }
        assert_eq!(
            ProxyPath::parse("/a//b"),
            Err(PatternError::EmptySegment(owned("/a//b")))
        );
        assert_eq!(
            ProxyPath::parse("//*"),
            Err(PatternError::EmptySegment(owned("//*")))
        );
        assert_eq!(
            ProxyPath::parse("/a%zz"),
            Err(PatternError::Path {
                path: owned("/a%zz"),
                source: PathError::MalformedEscape
            })
        );
        assert_eq!(
            ProxyPath::parse("/../*"),
            Err(PatternError::Path {
                path: owned("/../*"),
                source: PathError::AboveRoot
            })
        );
    }

    #[test]
    fn paths_not_in_normal_form_are_refused_with_the_normal_form() {
        let cases = [
            ("/public/../admin", "/admin"),
            ("/a/./*", "/a/*"),
            ("/a/b/../*", "/a/*"),
            ("/a%2fb", "/a%2Fb"),
            ("/%41pi/*", "/Api/*"),
            ("/a/.", "/a/"),
        ];
        for (path, normalized) in cases {
            assert_eq!(
                ProxyPath::parse(path),
                Err(PatternError::NotNormal {
                    path: path.to_owned(),
                    normalized: normalized.to_owned()
                })
            );
            assert!(ProxyPath::parse(normalized).is_ok(), "{normalized}");
        }
    }

    #[test]
    fn messages_are_sentences() {
        let e = ProxyPath::parse("/a/*/b")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("only allowed as the whole last segment"), "{e}");
        let e = ProxyPath::parse("/a/../b")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("write \"/b\" instead"), "{e}");
    }
}
