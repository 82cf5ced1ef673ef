//! Property tests for the routing invariants: nothing panics on any input, normalising is
//! idempotent and keeps a path that needs nothing, the trie agrees with a linear scan, and a
//! target never escapes its backend path.

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;

/// Path segments chosen to hit the interesting cases: dot segments, encoded dots and
/// slashes, empty segments, malformed escapes, non-ASCII.
const SEGMENTS: &[&str] = &[
    "a", "b", "api", "v1", "chat", "*", "", ".", "..", "%2e", "%2E%2e", ".%2e", "%2f", "%2F",
    "x%41", "%7e", "%zz", "%", "%4", "a b", "\u{e9}", "..%2f..",
];

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(SEGMENTS)
}

/// `/`-joined segments: a path that is often, but not always, valid.
fn pathish() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..6).prop_map(|segments| format!("/{}", segments.join("/")))
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![pathish(), "/[a-z./%0-9A-Fa-f~*?# ]{0,24}", any::<String>()]
}

const BACKENDS: &[&str] = &[
    "http://h",
    "http://h/",
    "https://h:8443/svc",
    "http://h/svc/",
    "http://[::1]:9/a/b",
    "https://h/%2e%2e%2Fx",
];

fn backend() -> impl Strategy<Value = BackendUrl> {
    prop::sample::select(BACKENDS)
        .prop_map(|s| BackendUrl::parse(s).unwrap_or_else(|e| panic!("{e}")))
}

/// The spec, by brute force: an exact path equal to the request wins, else the longest
/// wildcard prefix that is the request or a `/`-bounded start of it.
fn linear_lookup<'p>(proxies: &[ProxyPath], request: &'p str) -> Option<(usize, &'p str)> {
    if let Some(i) = proxies
        .iter()
        .position(|p| !p.is_wildcard() && p.as_str() == request)
    {
        return Some((i, ""));
    }
    proxies
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_wildcard())
        .filter_map(|(i, p)| {
            let rest = request.strip_prefix(p.prefix())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((i, p.prefix().len(), rest))
        })
        .max_by_key(|&(_, len, _)| len)
        .map(|(i, _, rest)| (i, rest))
}

fn build(paths: &[String]) -> (Vec<ProxyPath>, RouteTable<usize>) {
    let mut proxies = Vec::new();
    let mut table = RouteTable::default();
    for p in paths {
        if let Ok(path) = ProxyPath::parse(p)
            && table.insert(&path, proxies.len()).is_ok()
        {
            proxies.push(path);
        }
    }
    (proxies, table)
}

fn proxy_paths() -> impl Strategy<Value = Vec<String>> {
    // A small alphabet so that proxies overlap (same prefix, exact beside wildcard) often.
    let simple = prop::collection::vec(prop::sample::select(&["a", "b", "%2F"][..]), 0..3);
    let proxy = (simple, any::<bool>()).prop_map(|(segments, wildcard)| {
        let mut path = format!("/{}", segments.join("/"));
        if wildcard {
            path.push_str(if path == "/" { "*" } else { "/*" });
        }
        path
    });
    prop::collection::vec(proxy, 0..10)
}

fn request() -> impl Strategy<Value = String> {
    let simple = prop::collection::vec(
        prop::sample::select(&["a", "b", "%2f", "", "..", "%2e", "x"][..]),
        0..5,
    );
    prop_oneof![simple.prop_map(|s| format!("/{}", s.join("/"))), pathish()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn nothing_panics_on_any_input(s in any_path(), q in any::<Option<String>>(), ws in any::<bool>(), b in backend()) {
        let _ = normalize_path(&s);
        let _ = ProxyPath::parse(&s);
        let _ = BackendUrl::parse(&s);
        let _ = BackendUrl::parse(&format!("http://{s}"));
        let _ = target_uri(&b, &s, q.as_deref(), ws);
        let (_, table) = build(&["/*".into(), "/a/*".into(), "/a".into(), "/".into()]);
        let _ = table.lookup(&s);
    }

    #[test]
    fn normalising_is_idempotent(s in any_path()) {
        if let Ok(once) = normalize_path(&s) {
            let twice = normalize_path(&once);
            prop_assert!(matches!(&twice, Ok(Cow::Borrowed(t)) if *t == once.as_ref()), "{s:?} -> {once:?} -> {twice:?}");
        }
    }

    #[test]
    fn a_path_is_kept_as_is_exactly_when_nothing_in_it_changes(s in any_path()) {
        if let Ok(normal) = normalize_path(&s) {
            let unchanged = normalize::decode_unreserved(&s) == s.as_str()
                && !normalize::has_dot_segment(&s);
            prop_assert_eq!(matches!(normal, Cow::Borrowed(_)), unchanged, "{:?}", s);
        }
    }

    #[test]
    fn trie_agrees_with_a_linear_scan(paths in proxy_paths(), req in request()) {
        let (proxies, table) = build(&paths);
        prop_assert_eq!(table.len(), proxies.len());
        let got = table.lookup(&req).map(|m| (*m.value, m.remaining));
        prop_assert_eq!(got, linear_lookup(&proxies, &req));
        if let Some((i, remaining)) = got {
            prop_assert!(remaining.is_empty() || remaining.starts_with('/'));
            if proxies[i].is_wildcard() {
                prop_assert_eq!(format!("{}{remaining}", proxies[i].prefix()), req);
            }
        }
    }

    #[test]
    fn a_target_never_escapes_its_backend_path(
        paths in proxy_paths(),
        req in request(),
        b in backend(),
        q in prop::option::of("[a-z=&%0-9]{0,8}"),
        ws in any::<bool>(),
    ) {
        let (_, table) = build(&paths);
        let Ok(normal) = normalize_path(&req) else { return Ok(()) };
        let Some(m) = table.lookup(&normal) else { return Ok(()) };
        let target = target_uri(&b, m.remaining, q.as_deref(), ws);
        let scheme = match (b.scheme(), ws) {
            (Scheme::Http, false) => "http",
            (Scheme::Https, false) => "https",
            (Scheme::Http, true) => "ws",
            (Scheme::Https, true) => "wss",
        };
        let path = target_path(&b, m.remaining, q.as_deref());
        prop_assert_eq!(&target, &format!("{scheme}://{}{path}", b.authority()));
        let uri: http::Uri = target.parse().map_err(|e| TestCaseError::fail(format!("{target}: {e}")))?;
        prop_assert!(uri.path().starts_with(b.path()), "{target} escapes {}", b.as_str());
        prop_assert_eq!(uri.query(), q.as_deref());
        // No dot segment, plain or encoded, anywhere in the path sent to the backend.
        for segment in uri.path().split('/') {
            let decoded = segment.replace("%2e", ".").replace("%2E", ".");
            prop_assert!(decoded != "." && decoded != "..", "{target} has a dot segment");
        }
    }
}
