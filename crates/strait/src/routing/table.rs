//! The route table of one environment: a trie over path segments.
//!
//! Matching rules: an exact proxy path matches only a request path equal to it; a wildcard
//! `/p/*` matches `/p` and anything under `/p/` (whole segments only, never `/pq`); `/*`
//! matches every path. Among the matches, an exact path wins, else the longest prefix.
//! Lookup walks one trie node per request segment, whatever the number of proxies.

use foldhash::HashMap;

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
    /// The node for the empty prefix: its wildcard is `/*`; its children are first segments.
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    children: HashMap<Box<str>, Node<T>>,
    /// The exact proxy path ending at this node.
    exact: Option<T>,
    /// The wildcard proxy path whose prefix ends at this node.
    wildcard: Option<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: HashMap::default(),
            exact: None,
            wildcard: None,
        }
    }
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> RouteTable<T> {
    pub fn insert(&mut self, path: &ProxyPath, value: T) -> Result<(), DuplicatePath> {
        let mut node = &mut self.root;
        for segment in segments(path.prefix()) {
            node = node.children.entry(Box::from(segment)).or_default();
        }
        let slot = if path.is_wildcard() {
            &mut node.wildcard
        } else {
            &mut node.exact
        };
        if slot.is_some() {
            return Err(DuplicatePath(path.as_str().to_owned()));
        }
        *slot = Some(value);
        self.len += 1;
        Ok(())
    }

    /// Looks up an already-normalised request path (no query).
    pub fn lookup<'t, 'p>(&'t self, path: &'p str) -> Option<RouteMatch<'t, 'p, T>> {
        // `/*` (empty prefix) matches "" and every path starting with `/`.
        let mut best = match &self.root.wildcard {
            Some(value) if path.is_empty() || path.starts_with('/') => Some(RouteMatch {
                value,
                remaining: path,
            }),
            _ => None,
        };
        let mut node = &self.root;
        let mut rest = path;
        // `rest` is the part of `path` after the current node: `""` or starting with `/`.
        while let Some(body) = rest.strip_prefix('/') {
            let end = body.find('/').unwrap_or(body.len());
            let (segment, tail) = body.split_at_checked(end).unwrap_or((body, ""));
            let Some(child) = node.children.get(segment) else {
                break;
            };
            node = child;
            if tail.is_empty() {
                // The whole path is consumed: an exact path wins over a wildcard here.
                if let Some(value) = node.exact.as_ref().or(node.wildcard.as_ref()) {
                    return Some(RouteMatch {
                        value,
                        remaining: "",
                    });
                }
                break;
            }
            if let Some(value) = &node.wildcard {
                best = Some(RouteMatch {
                    value,
                    remaining: tail,
                });
            }
            rest = tail;
        }
        best
    }

    /// The number of proxies in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The segments of a proxy prefix: `""` → none, `/` → `[""]`, `/a/b` → `["a", "b"]`.
fn segments(prefix: &str) -> impl Iterator<Item = &str> {
    prefix
        .strip_prefix('/')
        .into_iter()
        .flat_map(|body| body.split('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(paths: &[&str]) -> RouteTable<String> {
        let mut t = RouteTable::default();
        for p in paths {
            let path = ProxyPath::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            t.insert(&path, p.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        t
    }

    /// (proxy path that matched, remaining)
    fn find<'p>(t: &RouteTable<String>, path: &'p str) -> Option<(String, &'p str)> {
        t.lookup(path).map(|m| (m.value.clone(), m.remaining))
    }

    fn hit<'p>(proxy: &str, remaining: &'p str) -> Option<(String, &'p str)> {
        Some((proxy.to_owned(), remaining))
    }

    #[test]
    fn wildcard_matches_whole_segments_only() {
        let t = table(&["/chat/*"]);
        assert_eq!(find(&t, "/chat"), hit("/chat/*", ""));
        assert_eq!(find(&t, "/chat/"), hit("/chat/*", "/"));
        assert_eq!(find(&t, "/chat/room/1"), hit("/chat/*", "/room/1"));
        assert_eq!(find(&t, "/chat//x"), hit("/chat/*", "//x"));
        assert_eq!(find(&t, "/chatroom"), None);
        assert_eq!(find(&t, "/cha"), None);
        assert_eq!(find(&t, "/"), None);
        assert_eq!(find(&t, ""), None);
        assert_eq!(find(&t, "chat"), None);
    }

    #[test]
    fn exact_matches_only_exactly() {
        let t = table(&["/chat", "/", "/a/"]);
        assert_eq!(find(&t, "/chat"), hit("/chat", ""));
        assert_eq!(find(&t, "/chat/"), None);
        assert_eq!(find(&t, "/chat/x"), None);
        assert_eq!(find(&t, "/"), hit("/", ""));
        assert_eq!(find(&t, "/a/"), hit("/a/", ""));
        assert_eq!(find(&t, "/a"), None);
        assert_eq!(find(&t, "//"), None);
    }

    #[test]
    fn root_wildcard_matches_everything() {
        let t = table(&["/*"]);
        assert_eq!(find(&t, "/x"), hit("/*", "/x"));
        assert_eq!(find(&t, "/"), hit("/*", "/"));
        assert_eq!(find(&t, "/a/b/c"), hit("/*", "/a/b/c"));
        assert_eq!(find(&t, ""), hit("/*", ""));
        assert_eq!(find(&t, "x"), None);
    }

    #[test]
    fn exact_wins_then_longest_prefix() {
        let t = table(&["/*", "/a/*", "/a", "/a/b/*", "/a/b/c", "/a/b/c/d/*"]);
        assert_eq!(find(&t, "/a"), hit("/a", ""));
        assert_eq!(find(&t, "/a/"), hit("/a/*", "/"));
        assert_eq!(find(&t, "/a/x"), hit("/a/*", "/x"));
        assert_eq!(find(&t, "/a/b"), hit("/a/b/*", ""));
        assert_eq!(find(&t, "/a/b/c"), hit("/a/b/c", ""));
        assert_eq!(find(&t, "/a/b/c/"), hit("/a/b/*", "/c/"));
        assert_eq!(find(&t, "/a/b/c/d"), hit("/a/b/c/d/*", ""));
        assert_eq!(find(&t, "/a/b/c/e"), hit("/a/b/*", "/c/e"));
        assert_eq!(find(&t, "/ab"), hit("/*", "/ab"));
        assert_eq!(find(&t, "/"), hit("/*", "/"));
    }

    #[test]
    fn duplicates_are_refused_and_len_counts_proxies() {
        let mut t = table(&["/a", "/a/*", "/*", "/"]);
        assert_eq!(t.len(), 4);
        assert!(!t.is_empty());
        for p in ["/a", "/a/*", "/*", "/"] {
            let path = ProxyPath::parse(p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                t.insert(&path, String::new()),
                Err(DuplicatePath(p.to_owned()))
            );
        }
        assert_eq!(t.len(), 4);
        assert_eq!(find(&t, "/a"), hit("/a", ""));
        assert!(RouteTable::<String>::default().is_empty());
        assert_eq!(find(&RouteTable::default(), "/x"), None);
    }

    #[test]
    fn remaining_is_a_subslice_of_the_request_path() {
        let t = table(&["/api/*"]);
        let request = String::from("/api/users/7");
        let m = t.lookup(&request).unwrap_or_else(|| panic!("no match"));
        assert!(std::ptr::eq(
            m.remaining.as_ptr(),
            request.as_bytes()[4..].as_ptr()
        ));
    }

    #[test]
    fn ten_thousand_proxies_each_found() {
        const N: usize = 10_000;
        let mut t = RouteTable::default();
        let mut add = |p: String| {
            let path = ProxyPath::parse(&p).unwrap_or_else(|e| panic!("{e}"));
            t.insert(&path, p).unwrap_or_else(|e| panic!("{e}"));
        };
        for i in 0..N {
            add(format!("/svc{i}/*"));
            if i % 10 == 0 {
                add(format!("/svc{i}/health"));
            }
            if i % 7 == 0 {
                add(format!("/svc{i}/v2/*"));
                add(format!("/svc{i}/v2/admin/*"));
            }
        }
        add("/static".to_owned());
        let expected_len = N + N.div_ceil(10) + 2 * N.div_ceil(7) + 1;
        assert_eq!(t.len(), expected_len);

        let check = |request: &str, proxy: String, remaining: &str| {
            let m = t
                .lookup(request)
                .unwrap_or_else(|| panic!("{request} matched nothing"));
            assert_eq!((m.value, m.remaining), (&proxy, remaining), "{request}");
        };
        for i in 0..N {
            check(&format!("/svc{i}"), format!("/svc{i}/*"), "");
            check(
                &format!("/svc{i}/users/{i}"),
                format!("/svc{i}/*"),
                &format!("/users/{i}"),
            );
            check(
                &format!("/svc{i}/health/x"),
                format!("/svc{i}/*"),
                "/health/x",
            );
            if i % 10 == 0 {
                check(&format!("/svc{i}/health"), format!("/svc{i}/health"), "");
            } else {
                check(&format!("/svc{i}/health"), format!("/svc{i}/*"), "/health");
            }
            if i % 7 == 0 {
                check(
                    &format!("/svc{i}/v2/items"),
                    format!("/svc{i}/v2/*"),
                    "/items",
                );
                check(
                    &format!("/svc{i}/v2/admin"),
                    format!("/svc{i}/v2/admin/*"),
                    "",
                );
                check(
                    &format!("/svc{i}/v2/admin/x/y"),
                    format!("/svc{i}/v2/admin/*"),
                    "/x/y",
                );
            } else {
                check(
                    &format!("/svc{i}/v2/items"),
                    format!("/svc{i}/*"),
                    "/v2/items",
                );
            }
            assert!(t.lookup(&format!("/svc{i}x/a")).is_none());
        }
        check("/static", "/static".to_owned(), "");
        assert!(t.lookup("/static/x").is_none());
        assert!(t.lookup(&format!("/svc{N}")).is_none());
    }
}
