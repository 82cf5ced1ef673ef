//! Steps 4 and 5 of resolution: scheme conversion and joining.

use super::{BackendUrl, Scheme};

/// backend URL + remaining path + `?` + query (byte for byte), with `ws://`/`wss://` for WebSocket.
/// Never produces a double slash at the join (`http://h/` + `/x` → `http://h/x`).
///
/// The scheme is written in lowercase and the authority as written. When the backend path
/// and `remaining` are both empty the path is `/`, so the result always has a path
/// (`http://h` + `""` → `http://h/`). A `remaining` that is neither empty nor starts with
/// `/` (not something a lookup returns) is joined with a `/`.
pub fn target_uri(
    backend: &BackendUrl,
    remaining: &str,
    query: Option<&str>,
    websocket: bool,
) -> String {
    let scheme = match (backend.scheme(), websocket) {
        (Scheme::Http, false) => "http",
        (Scheme::Https, false) => "https",
        (Scheme::Http, true) => "ws",
        (Scheme::Https, true) => "wss",
    };
    let mut uri = String::with_capacity(
        scheme.len() + 3 + backend.authority().len() + path_len(backend, remaining, query),
    );
    uri.push_str(scheme);
    uri.push_str("://");
    uri.push_str(backend.authority());
    push_path(&mut uri, backend.path(), remaining, query);
    uri
}

/// The path and query of [`target_uri`], for a caller that has the scheme and authority.
pub fn target_path(backend: &BackendUrl, remaining: &str, query: Option<&str>) -> String {
    let mut path = String::with_capacity(path_len(backend, remaining, query));
    push_path(&mut path, backend.path(), remaining, query);
    path
}

fn path_len(backend: &BackendUrl, remaining: &str, query: Option<&str>) -> usize {
    backend.path().len() + remaining.len() + 1 + query.map_or(0, |q| q.len() + 1)
}

fn push_path(uri: &mut String, base: &str, remaining: &str, query: Option<&str>) {
    uri.push_str(base);
    match remaining.strip_prefix('/') {
        Some(without_slash) if base.ends_with('/') => uri.push_str(without_slash),
        Some(_) => uri.push_str(remaining),
        None if remaining.is_empty() => {
            if base.is_empty() {
                uri.push('/');
            }
        }
        None => {
            if !base.ends_with('/') {
                uri.push('/');
            }
            uri.push_str(remaining);
        }
    }
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(s: &str) -> BackendUrl {
        match BackendUrl::parse(s) {
            Ok(b) => b,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn http_and_websocket_targets() {
        let b = backend("http://localhost:8080/service");
        assert_eq!(
            target_uri(&b, "/users", None, false),
            "http://localhost:8080/service/users"
        );
        assert_eq!(
            target_uri(&b, "/chat", None, true),
            "ws://localhost:8080/service/chat"
        );
        let b = backend("https://api.example.com/ws");
        assert_eq!(
            target_uri(&b, "/data", None, true),
            "wss://api.example.com/ws/data"
        );
        assert_eq!(
            target_uri(&b, "/data", None, false),
            "https://api.example.com/ws/data"
        );
        let b = backend("http://chat-service:9090/websocket");
        assert_eq!(
            target_uri(&b, "/room/123", Some("token=a%20b&x"), true),
            "ws://chat-service:9090/websocket/room/123?token=a%20b&x"
        );
        assert_eq!(
            target_uri(&b, "", None, false),
            "http://chat-service:9090/websocket"
        );
    }

    #[test]
    fn joining_never_doubles_the_slash() {
        assert_eq!(
            target_uri(&backend("http://h/"), "/x", None, false),
            "http://h/x"
        );
        assert_eq!(
            target_uri(&backend("http://h/"), "/", None, false),
            "http://h/"
        );
        assert_eq!(
            target_uri(&backend("http://h/a/"), "/b/", None, false),
            "http://h/a/b/"
        );
        assert_eq!(
            target_uri(&backend("http://h/a"), "/", None, false),
            "http://h/a/"
        );
        assert_eq!(
            target_uri(&backend("http://h"), "/x", None, false),
            "http://h/x"
        );
        // `//` inside the remaining path is kept; only the join is deduplicated.
        assert_eq!(
            target_uri(&backend("http://h/a/"), "//x", None, false),
            "http://h/a//x"
        );
    }

    #[test]
    fn an_empty_path_becomes_slash() {
        assert_eq!(
            target_uri(&backend("http://h"), "", None, false),
            "http://h/"
        );
        assert_eq!(
            target_uri(&backend("http://h:81"), "", Some("q"), true),
            "ws://h:81/?q"
        );
        assert_eq!(
            target_uri(&backend("http://h/"), "", None, false),
            "http://h/"
        );
    }

    #[test]
    fn query_is_copied_byte_for_byte() {
        let b = backend("http://h/p");
        assert_eq!(target_uri(&b, "/x", Some(""), false), "http://h/p/x?");
        assert_eq!(
            target_uri(&b, "/x", Some("a=%2f&&b=?"), false),
            "http://h/p/x?a=%2f&&b=?"
        );
        assert_eq!(target_uri(&b, "", Some("a"), false), "http://h/p?a");
    }

    #[test]
    fn scheme_is_lowercase_and_authority_as_written() {
        assert_eq!(
            target_uri(&backend("HTTPS://Api.Example.com:8443"), "/x", None, true),
            "wss://Api.Example.com:8443/x"
        );
        assert_eq!(
            target_uri(&backend("http://[::1]:9/b"), "/x", None, false),
            "http://[::1]:9/b/x"
        );
    }

    #[test]
    fn a_remaining_without_leading_slash_is_joined_with_one() {
        assert_eq!(
            target_uri(&backend("http://h/a"), "x", None, false),
            "http://h/a/x"
        );
        assert_eq!(
            target_uri(&backend("http://h/a/"), "x", None, false),
            "http://h/a/x"
        );
        assert_eq!(
            target_uri(&backend("http://h"), "x", None, false),
            "http://h/x"
        );
    }
}
