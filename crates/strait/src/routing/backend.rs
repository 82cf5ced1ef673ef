//! Backend URLs: `http://host:port/path` or `https://...`, no query, no fragment, no userinfo.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::normalize::{
    PathError, decode_unreserved, has_dot_segment, is_rfc_path_char, normalize_path,
};

/// The scheme a backend URL was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Why a backend URL was rejected; each message is a sentence a newcomer understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendUrlError {
    #[error(
        "the backend URL {0:?} must start with http:// or https://, as in http://localhost:8080"
    )]
    MissingScheme(String),
    #[error(
        "the backend URL {url:?} uses the scheme {scheme:?}, but only http and https are accepted; for WebSocket backends write http:// or https:// and the gateway converts to ws:// or wss:// itself"
    )]
    UnsupportedScheme { url: String, scheme: String },
    #[error(
        "the backend URL {0:?} contains a user name or password (`user@`); credentials in backend URLs are not supported"
    )]
    HasUserinfo(String),
    #[error("the backend URL {0:?} has no host; write it like http://localhost:8080")]
    MissingHost(String),
    #[error(
        "the backend URL {url:?} has the invalid host {host:?}; use a DNS name, an IPv4 address, or an IPv6 address in brackets such as [::1]"
    )]
    InvalidHost { url: String, host: String },
    #[error(
        "the backend URL {url:?} has the invalid port {port:?}; a port is a number from 1 to 65535"
    )]
    InvalidPort { url: String, port: String },
    #[error(
        "the backend URL {0:?} contains a query (`?`); each request's own query is forwarded, so the backend URL cannot have one"
    )]
    HasQuery(String),
    #[error(
        "the backend URL {0:?} contains a fragment (`#`); fragments are never sent to a server, so remove it"
    )]
    HasFragment(String),
    #[error(
        "the backend URL {url:?} has a path containing {ch:?}, which is not allowed in a URL path; percent-encode it"
    )]
    InvalidPathCharacter { url: String, ch: char },
    #[error(
        "the backend URL {0:?} has a `%` in its path that is not followed by two hexadecimal digits"
    )]
    MalformedEscape(String),
    #[error(
        "the backend URL {0:?} has a `.` or `..` segment in its path; write the path without them"
    )]
    DotSegment(String),
}

/// A parsed backend URL.
#[derive(Debug, Clone)]
pub struct BackendUrl {
    text: String,
    scheme: Scheme,
    authority: String,
    host: String,
    port: u16,
    path: String,
}

/// Equal when written alike: every other field is parsed from the text. (Compared per
/// request: the field-by-field comparison compared four strings.) Stricter than the
/// fields: `HTTP://a` and `http://a` differ, which only sends such a target through the
/// general path in `connect` (resolving the path again), never to a wrong backend.
impl PartialEq for BackendUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for BackendUrl {}

impl BackendUrl {
    /// Parses `http://host[:port][/path]` or `https://...`.
    pub fn parse(s: &str) -> Result<Self, BackendUrlError> {
        let url = || s.to_owned();
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| BackendUrlError::MissingScheme(url()))?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else if scheme.is_empty() {
            return Err(BackendUrlError::MissingScheme(url()));
        } else {
            return Err(BackendUrlError::UnsupportedScheme {
                url: url(),
                scheme: scheme.to_owned(),
            });
        };

        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at_checked(authority_end).unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(BackendUrlError::HasUserinfo(url()));
        }
        match after.find(['?', '#']).and_then(|i| after.get(i..)) {
            Some(tail) if tail.starts_with('?') => return Err(BackendUrlError::HasQuery(url())),
            Some(_) => return Err(BackendUrlError::HasFragment(url())),
            None => {}
        }
        let path = after;

        let (host, port) = split_host_port(s, authority)?;
        let port = match port {
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            },
            Some(p) => parse_port(p).ok_or_else(|| BackendUrlError::InvalidPort {
                url: url(),
                port: p.to_owned(),
            })?,
        };

        if let Some(ch) = path.chars().find(|&c| c != '%' && !is_rfc_path_char(c)) {
            return Err(BackendUrlError::InvalidPathCharacter { url: url(), ch });
        }
        if !path.is_empty() {
            match normalize_path(path) {
                Err(PathError::MalformedEscape) => {
                    return Err(BackendUrlError::MalformedEscape(url()));
                }
                Err(_) => return Err(BackendUrlError::DotSegment(url())),
                Ok(_) if has_dot_segment(&decode_unreserved(path)) => {
                    return Err(BackendUrlError::DotSegment(url()));
                }
                Ok(_) => {}
            }
        }

        Ok(BackendUrl {
            text: url(),
            scheme,
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `host:port` as written (port omitted when it was omitted), e.g. `localhost:8080`; used as `Host`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The host without brackets or port, e.g. `localhost`, `::1`; used for DNS and TLS SNI.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, defaulting to 80 for http and 443 for https.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path as written, `""` when none was given (`http://h` → `""`, `http://h/` → `"/"`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The URL as the user wrote it (for logs and errors).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Splits `host[:port]` or `[v6][:port]`, validating the host; returns the host without brackets.
fn split_host_port<'a>(
    url: &str,
    authority: &'a str,
) -> Result<(&'a str, Option<&'a str>), BackendUrlError> {
    let invalid_host = |host: &str| BackendUrlError::InvalidHost {
        url: url.to_owned(),
        host: host.to_owned(),
    };
    if authority.is_empty() || authority.starts_with(':') {
        return Err(BackendUrlError::MissingHost(url.to_owned()));
    }
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid_host(authority))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(invalid_host(host));
        }
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(invalid_host(authority)),
            },
        };
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if !is_valid_name_or_ipv4(host) {
        return Err(invalid_host(host));
    }
    Ok((host, port))
}

/// A DNS name (letters, digits, `-`, `_`, non-empty labels, one optional trailing dot) or,
/// when every label is numeric, a dotted IPv4 address.
fn is_valid_name_or_ipv4(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let all_numeric = name
        .split('.')
        .all(|label| label.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && (!all_numeric || host.parse::<Ipv4Addr>().is_ok())
}

fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse::<u16>().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> BackendUrl {
        match BackendUrl::parse(s) {
            Ok(b) => b,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn parts() {
        // (url, scheme, authority, host, port, path)
        let cases = [
            (
                "http://localhost:8080/service",
                Scheme::Http,
                "localhost:8080",
                "localhost",
                8080,
                "/service",
            ),
            (
                "https://api.example.com/ws",
                Scheme::Https,
                "api.example.com",
                "api.example.com",
                443,
                "/ws",
            ),
            ("http://h", Scheme::Http, "h", "h", 80, ""),
            ("http://h/", Scheme::Http, "h", "h", 80, "/"),
            (
                "HTTPS://Example.COM:8443/A/b/",
                Scheme::Https,
                "Example.COM:8443",
                "Example.COM",
                8443,
                "/A/b/",
            ),
            (
                "http://[::1]:9000/x",
                Scheme::Http,
                "[::1]:9000",
                "::1",
                9000,
                "/x",
            ),
            (
                "https://[2001:db8::1]",
                Scheme::Https,
                "[2001:db8::1]",
                "2001:db8::1",
                443,
                "",
            ),
            (
                "http://127.0.0.1:1",
                Scheme::Http,
                "127.0.0.1:1",
                "127.0.0.1",
                1,
                "",
            ),
            (
                "http://chat_service:65535/a%2Fb@c",
                Scheme::Http,
                "chat_service:65535",
                "chat_service",
                65535,
                "/a%2Fb@c",
            ),
            (
                "http://example.com./",
                Scheme::Http,
                "example.com.",
                "example.com.",
                80,
                "/",
            ),
        ];
        for (url, scheme, authority, host, port, path) in cases {
            let b = parse(url);
            assert_eq!(
                (
                    b.scheme(),
                    b.authority(),
                    b.host(),
                    b.port(),
                    b.path(),
                    b.as_str()
                ),
                (scheme, authority, host, port, path, url)
            );
        }
    }

    #[test]
    fn other_schemes_are_refused_with_a_hint_about_websocket() {
        for (url, scheme) in [
            ("ws://h", "ws"),
            ("wss://h/x", "wss"),
            ("ftp://h", "ftp"),
            ("file:///etc", "file"),
        ] {
            let err = BackendUrl::parse(url);
            assert_eq!(
                err,
                Err(BackendUrlError::UnsupportedScheme {
                    url: url.into(),
                    scheme: scheme.into()
                })
            );
            let message = err.map(|_| ()).unwrap_err().to_string();
            assert!(
                message.contains("only http and https are accepted")
                    && message.contains("converts to ws:// or wss://")
            );
        }
        for url in ["localhost:8080", "//h/x", "://h", ""] {
            assert_eq!(
                BackendUrl::parse(url),
                Err(BackendUrlError::MissingScheme(url.into())),
                "{url}"
            );
        }
    }

    #[test]
    fn rejections() {
        let u = |s: &str| s.to_owned();
        assert_eq!(
            BackendUrl::parse("http://"),
            Err(BackendUrlError::MissingHost(u("http://")))
        );
        assert_eq!(
            BackendUrl::parse("http:///x"),
            Err(BackendUrlError::MissingHost(u("http:///x")))
        );
        assert_eq!(
            BackendUrl::parse("http://:80"),
            Err(BackendUrlError::MissingHost(u("http://:80")))
        );
        assert_eq!(
            BackendUrl::parse("http://u:p@h/"),
            Err(BackendUrlError::HasUserinfo(u("http://u:p@h/")))
        );
        assert_eq!(
            BackendUrl::parse("http://h/x?a=1"),
            Err(BackendUrlError::HasQuery(u("http://h/x?a=1")))
        );
        assert_eq!(
            BackendUrl::parse("http://h?a"),
            Err(BackendUrlError::HasQuery(u("http://h?a")))
        );
        assert_eq!(
            BackendUrl::parse("http://h/x#f"),
            Err(BackendUrlError::HasFragment(u("http://h/x#f")))
        );
        assert_eq!(
            BackendUrl::parse("http://h#f"),
            Err(BackendUrlError::HasFragment(u("http://h#f")))
        );
        for port in ["0", "65536", "", "80a", "-1", "000080"] {
            let url = format!("http://h:{port}/");
            assert_eq!(
                BackendUrl::parse(&url),
                Err(BackendUrlError::InvalidPort {
                    url: url.clone(),
                    port: port.into()
                })
            );
        }
        for (url, host) in [
            ("http://h h/", "h h"),
            ("http://a..b", "a..b"),
            ("http://999.1.1.1", "999.1.1.1"),
            ("http://1.2.3", "1.2.3"),
            ("http://[::1", "[::1"),
            ("http://[nope]", "nope"),
            ("http://[::1]x", "[::1]x"),
            ("http://::1", ""),
            ("http://h%41", "h%41"),
        ] {
            let result = BackendUrl::parse(url);
            if host.is_empty() {
                assert_eq!(
                    result,
                    Err(BackendUrlError::MissingHost(url.into())),
                    "{url}"
                );
            } else {
                assert_eq!(
                    result,
                    Err(BackendUrlError::InvalidHost {
                        url: url.into(),
                        host: host.into()
                    }),
                    "{url}"
                );
            }
        }
        assert_eq!(
            BackendUrl::parse("http://h/a b"),
            Err(BackendUrlError::InvalidPathCharacter {
                url: u("http://h/a b"),
                ch: ' '
            })
        );
        assert_eq!(
            BackendUrl::parse("http://h/a%4"),
            Err(BackendUrlError::MalformedEscape(u("http://h/a%4")))
        );
        for url in [
            "http://h/..",
            "http://h/a/../b",
            "http://h/a/.",
            "http://h/%2e%2E/x",
            "http://h/a/%2e",
        ] {
            assert_eq!(
                BackendUrl::parse(url),
                Err(BackendUrlError::DotSegment(url.into())),
                "{url}"
            );
        }
    }
}
