//! RFC 3986 path normalisation (§6.2.2): decode unreserved escapes, uppercase the others,
//! remove dot segments. A path that climbs above the root is refused, not clamped.
//!
//! Accepted characters are exactly those the `http` crate accepts in a request path (so
//! every path hyper hands us is judged on its escapes and dot segments only, and every
//! result can be parsed back into a URI): no space, control character, `?`, `#`, `<`, `>`
//! or backquote. Raw non-ASCII is passed through unchanged.

use std::borrow::Cow;

/// Why a request path was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path contains a `%` that is not followed by two hexadecimal digits")]
    MalformedEscape,
    #[error(
        "the path contains a character that is not allowed in a URL path (a space, a control character, `?`, `#`, `<`, `>` or a backquote)"
    )]
    InvalidCharacter,
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
}

/// Normalises a request path (no query): decodes percent-encoded unreserved characters,
/// removes dot segments; `%2F` stays encoded; a path that climbs above the root is an error.
///
/// Returns [`Cow::Borrowed`] when the path is already normal (the common case), so it does
/// not allocate. `//` is kept as is. Idempotent: normalising a result returns it unchanged.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if !scan(path)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path);
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// Checks every byte; returns whether normalising would change the path: an escape to
/// decode or uppercase, or a `.` or `..` segment (as written). One pass, no allocation.
fn scan(path: &str) -> Result<bool, PathError> {
    let bytes = path.as_bytes();
    let mut changes = false;
    // The current segment so far: its length, and whether it is all (literal) dots.
    let (mut segment_len, mut all_dots) = (0usize, true);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'/' {
            changes |= all_dots && (1..=2).contains(&segment_len);
            (segment_len, all_dots) = (0, true);
            i += 1;
        } else if b == b'%' {
            let (hi, lo) = (bytes.get(i + 1).copied(), bytes.get(i + 2).copied());
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::MalformedEscape);
            };
            let value = escape_value(hi, lo).ok_or(PathError::MalformedEscape)?;
            changes |= is_unreserved(value) || hi.is_ascii_lowercase() || lo.is_ascii_lowercase();
            (segment_len, all_dots) = (segment_len + 3, false);
            i += 3;
        } else if accepted_in_request_path(b) {
            segment_len += 1;
            all_dots &= b == b'.';
            i += 1;
        } else {
            return Err(PathError::InvalidCharacter);
        }
    }
    Ok(changes || all_dots && (1..=2).contains(&segment_len))
}

/// Step 1 of §6.2.2: decodes escapes of unreserved characters and uppercases the hex digits
/// of the others. A malformed escape is copied as is (callers validate first).
pub(super) fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some((before, after)) = rest.split_once('%') {
        out.push_str(before);
        let digits = after.as_bytes();
        let value = match (digits.first(), digits.get(1)) {
            (Some(&hi), Some(&lo)) => escape_value(hi, lo),
            _ => None,
        };
        match (value, after.get(2..)) {
            (Some(v), Some(tail)) => {
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(hex_upper(v >> 4)));
                    out.push(char::from(hex_upper(v & 0x0F)));
                }
                rest = tail;
            }
            _ => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether any `/`-separated segment is `.` or `..` (as written, not decoded).
pub(super) fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// RFC 3986 §5.2.4 on an absolute path, except that `..` at the root is an error.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let body = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments: Vec<&str> = Vec::new();
    // A trailing `.` or `..` leaves the path ending in `/` (`/a/b/..` → `/a/`).
    let mut ends_in_dot = false;
    for segment in body.split('/') {
        ends_in_dot = true;
        match segment {
            "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            other => {
                segments.push(other);
                ends_in_dot = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if ends_in_dot || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn escape_value(hi: u8, lo: u8) -> Option<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    u8::try_from(hex(hi)? * 16 + hex(lo)?).ok()
}

fn hex_upper(nibble: u8) -> u8 {
    b"0123456789ABCDEF"
        .get(usize::from(nibble & 0x0F))
        .copied()
        .unwrap_or(b'0')
}

/// RFC 3986 `unreserved`: ALPHA / DIGIT / `-` / `.` / `_` / `~`.
pub const fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`: `!` `$` `&` `'` `(` `)` `*` `+` `,` `;` `=`.
pub const fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// The characters RFC 3986 allows in a path besides `%` escapes: `pchar` and `/`.
/// Used for paths written in configuration, which are held to the standard strictly.
pub(super) fn is_rfc_path_char(c: char) -> bool {
    u8::try_from(c)
        .is_ok_and(|b| is_unreserved(b) || is_sub_delim(b) || matches!(b, b'/' | b':' | b'@'))
}

/// The bytes the `http` crate accepts in a path (besides `%`, which is checked as an escape).
fn accepted_in_request_path(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0x80..=0xFF) && !matches!(b, b'?' | b'#' | b'<' | b'>' | b'`')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "//x",
            "/a%2Fb",
            "/a/.b/..c/...",
            "/caf\u{e9}",
            "/{\"j\":1}",
        ] {
            assert!(
                matches!(normalize_path(p), Ok(Cow::Borrowed(s)) if s == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(norm("/public/../admin"), Ok("/admin".into()));
        assert_eq!(norm("/a/./b"), Ok("/a/b".into()));
        assert_eq!(norm("/a/b/.."), Ok("/a/".into()));
        assert_eq!(norm("/a/."), Ok("/a/".into()));
        assert_eq!(norm("/a/.."), Ok("/".into()));
        assert_eq!(norm("/."), Ok("/".into()));
        assert_eq!(norm("/./"), Ok("/".into()));
        assert_eq!(norm("/a//../b"), Ok("/a/b".into()));
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for p in [
            "/..",
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/.%2E/x",
            "/a/%2e%2E/%2E%2e",
        ] {
            assert_eq!(norm(p), Err(PathError::AboveRoot), "{p}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(norm("/%41%7e%2D%5f%2E"), Ok("/A~-_.".into()));
        assert_eq!(norm("/a/%2e%2e/b"), Ok("/b".into()));
        assert_eq!(norm("/a/%2e/b"), Ok("/a/b".into()));
    }

    #[test]
    fn other_escapes_are_kept_and_uppercased() {
        assert_eq!(norm("/a%2Fb"), Ok("/a%2Fb".into()));
        assert_eq!(norm("/a%2fb"), Ok("/a%2Fb".into()));
        assert_eq!(norm("/%c3%a9"), Ok("/%C3%A9".into()));
        assert_eq!(norm("/%2e%2e%2fx"), Ok("/..%2Fx".into()));
        assert_eq!(norm("/%25"), Ok("/%25".into()));
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for p in ["/%", "/%4", "/%zz", "/a%g1", "/%%41", "/%4\u{e9}"] {
            assert_eq!(norm(p), Err(PathError::MalformedEscape), "{p}");
        }
    }

    #[test]
    fn relative_and_invalid_paths_are_refused() {
        assert_eq!(norm(""), Err(PathError::NotAbsolute));
        assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
        for p in [
            "/a b", "/a\0", "/a\n", "/a?b", "/a#b", "/<x>", "/`", "/\u{7f}",
        ] {
            assert_eq!(norm(p), Err(PathError::InvalidCharacter), "{p:?}");
        }
    }
}
