//! Request path normalisation as Istio's default `pathNormalization: BASE` has Envoy do it
//! (`normalize_path: true`, `merge_slashes: false`, escaped slashes kept): the rules of
//! Envoy's snapshot of Chromium's path canonicaliser. Dot segments are removed (`.`/`%2e`,
//! `..` above the root stays at the root), `\` becomes `/`, percent-encoded unreserved
//! characters are decoded, other escapes are kept as written (`%2F` included), characters a
//! path may not hold are escaped, and an encoded NUL is refused.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path holds an encoded NUL (%00), which Envoy's path normalisation refuses")]
    EncodedNul,
}

/// The normalised form of `path` (the part of the target before `?`); borrowed when the
/// path is already normal, which is the common case and allocates nothing.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    canonical(path.as_bytes()).map(Cow::Owned)
}

// Character classes of the canonicaliser's table (Chromium's `kPathCharLookup`).
const PASS: u8 = 0;
/// Needs a closer look (dots, escapes, backslash).
const SPECIAL: u8 = 1;
const ESCAPE: u8 = 2 | SPECIAL;
/// Decoded when found percent-encoded: RFC 3986's unreserved characters.
const UNESCAPE: u8 = 4;
const INVALID: u8 = 8 | SPECIAL;

fn class(c: u8) -> u8 {
    match c {
        0 => INVALID,
        b'.' => SPECIAL,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => UNESCAPE,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'/' | b':' | b';'
        | b'=' | b'@' | b'[' | b']' => PASS,
        // Controls, space, `"#%<>?\^`{|}`, DEL and every byte above ASCII.
        _ => ESCAPE,
    }
}

/// True when `canonical` would return `path` unchanged, decided without allocating.
fn is_normal(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut segment_start = 0;
    let mut i = 0;
    while i < path.len() {
        let c = path[i];
        match c {
            b'/' => {
                if is_dot_segment(&path[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            b'%' => match decode(path, i) {
                // An escape that stays as written; an invalid `%` only changes when an
                // escape decoded next to it, and decoding is itself a change.
                Some(v) if class(v) & UNESCAPE == 0 && v != b'.' && v != 0 => i += 2,
                Some(_) => return false,
                None => {}
            },
            _ if class(c) & SPECIAL != 0 && c != b'.' => return false,
            _ => {}
        }
        i += 1;
    }
    !is_dot_segment(&path[segment_start..])
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// The value of the escape `%XY` at `at`, when it is one.
fn decode(s: &[u8], at: usize) -> Option<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let hi = hex(*s.get(at + 1)?)?;
    let lo = hex(*s.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

/// The length of a dot at `at`: 1 for `.`, 3 for `%2e`/`%2E`, 0 otherwise.
fn dot_len(s: &[u8], at: usize) -> usize {
    match s.get(at) {
        Some(b'.') => 1,
        Some(b'%') if decode(s, at) == Some(b'.') => 3,
        _ => 0,
    }
}

fn is_slash(c: u8) -> bool {
    c == b'/' || c == b'\\'
}

enum AfterDot {
    /// Part of a name such as `.well-known`.
    Name,
    /// `.`: drop it (and the slash after it, whose length this is).
    Current(usize),
    /// `..`: drop the last segment; the length of what follows the first dot.
    Up(usize),
}

fn after_dot(s: &[u8], at: usize) -> AfterDot {
    if at == s.len() {
        return AfterDot::Current(0);
    }
    if is_slash(s[at]) {
        return AfterDot::Current(1);
    }
    let second = dot_len(s, at);
    if second > 0 {
        let end = at + second;
        if end == s.len() {
            return AfterDot::Up(second);
        }
        if is_slash(s[end]) {
            return AfterDot::Up(second + 1);
        }
    }
    AfterDot::Name
}

/// Drops the last segment of `out`, which ends with `/`; never above the root.
fn up(out: &mut Vec<u8>) {
    let last = out.len() - 1;
    if last == 0 {
        return;
    }
    let previous = out[..last].iter().rposition(|&c| c == b'/').unwrap_or(0);
    out.truncate(previous + 1);
}

fn push_escaped(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
}

/// After decoding a character within two of an earlier `%` that began no escape: if that
/// `%` now begins one (`%%30` → `%0` + ...), write it as `%25`, so normalising again does
/// not decode something the caller never encoded.
fn guard_nested_escape(input: &[u8], next: usize, percent: usize, out: &mut Vec<u8>) {
    let len = out.len();
    let decoded = out[len - 1];
    let borrow_next = percent == len - 2;
    if borrow_next {
        match input.get(next) {
            Some(&c) if c < 0x80 => out.push(c),
            _ => return,
        }
    }
    if decode(out, percent).is_some() {
        if !borrow_next {
            out.push(out[percent + 1]);
        }
        out[percent + 1] = b'2';
        out[percent + 2] = b'5';
        out.push(decoded);
    } else if borrow_next {
        out.truncate(len);
    }
}

fn canonical(path: &[u8]) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(path.len() + 1);
    if path.first().is_none_or(|&c| !is_slash(c)) {
        out.push(b'/');
    }
    let mut nul = false;
    // Where in `out` the last `%` that began no escape was written.
    let mut loose_percent: Option<usize> = None;
    let mut i = 0;
    while i < path.len() {
        let c = path[i];
        let flags = class(c);
        if flags & SPECIAL == 0 {
            out.push(c);
            i += 1;
            continue;
        }
        let dot = dot_len(path, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match after_dot(path, i + dot) {
                    AfterDot::Name => out.push(b'.'),
                    AfterDot::Current(n) => i += n,
                    AfterDot::Up(n) => {
                        up(&mut out);
                        // A `%` the segment took with it cannot begin an escape any more.
                        // (Envoy's canonicaliser keeps the stale position, and a later
                        // escape can then be garbled into a non-idempotent path.)
                        loose_percent = loose_percent.filter(|&p| p < out.len());
                        i += n;
                    }
                }
            } else {
                out.push(b'.');
            }
            i += dot;
            continue;
        }
        match c {
            b'\\' => out.push(b'/'),
            b'%' => match decode(path, i) {
                Some(v) if class(v) & UNESCAPE != 0 => {
                    out.push(v);
                    i += 2;
                    if let Some(p) = loose_percent.filter(|&p| p + 3 >= out.len()) {
                        guard_nested_escape(path, i + 1, p, &mut out);
                    }
                }
                Some(v) => {
                    out.extend_from_slice(&path[i..i + 3]);
                    nul |= v == 0;
                    i += 2;
                }
                None => {
                    loose_percent = Some(out.len());
                    out.push(b'%');
                }
            },
            _ => {
                nul |= flags == INVALID;
                push_escaped(&mut out, c);
            }
        }
        i += 1;
    }
    if nul {
        return Err(PathError::EncodedNul);
    }
    // Every byte above ASCII was escaped, so each byte is one char.
    Ok(out.into_iter().map(char::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p).unwrap().into_owned()
    }

    #[test]
    fn dot_segments_are_removed_and_clamped_at_the_root() {
        assert_eq!(n("/a/../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/a/./b/../c"), "/a/c");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/a/%2e%2E/b"), "/b");
        assert_eq!(n("/a/.%2e/b"), "/b");
        assert_eq!(n("/a\\..\\b"), "/b");
    }

    #[test]
    fn names_with_dots_and_repeated_slashes_stay() {
        for p in [
            "/",
            "/.well-known/x",
            "/a..b/c.",
            "/a//b",
            "//x",
            "/a/...",
            "/v1.2/x",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn escapes_follow_envoy() {
        assert_eq!(n("/%61%2Fb"), "/a%2Fb");
        assert_eq!(n("/a%2f..%2fb"), "/a%2f..%2fb");
        assert_eq!(n("/%7e%41%2D"), "/~A-");
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/a b\"<>^`{|}"), "/a%20b%22%3C%3E%5E%60%7B%7C%7D");
        assert_eq!(n("/%zz/%"), "/%zz/%");
        assert_eq!(n("/é"), "/%C3%A9");
        assert_eq!(n("x"), "/x");
        assert_eq!(normalize("/a%00b"), Err(PathError::EncodedNul));
    }

    #[test]
    fn nested_escapes_cannot_appear_by_decoding() {
        // `%%30%30` would read `%00` once the inner escapes are decoded.
        assert_eq!(n("/%%30%30"), "/%2500");
        assert_eq!(n("/%3%30"), "/%2530");
        let once = n("/%%30%30");
        assert_eq!(n(&once), once);
    }

    #[test]
    fn a_percent_removed_with_its_segment_guards_nothing() {
        // Found by the request_head fuzz target: the `%` of `a%` went with `..`, and its
        // stale position turned `^%35` into `%525E5`, which decodes again to `R5E5`.
        let once = n("/T%7T G/../%36\u{7f}blia%/../%35\u{7f}bli^%351b\u{7f})b");
        assert_eq!(once, "/5%7Fbli%5E51b%7F)b");
        assert_eq!(n(&once), once);
    }

    #[test]
    fn the_fast_path_agrees_with_the_canonicaliser() {
        for p in [
            "/", "/a", "/a/", "/.", "/..", "/a/.b", "/%", "/%2", "/%25", "/%2e", "/%41", "/%%41",
            "/a%2F", "/a\\b", "/~", "/a?b", "/%00",
        ] {
            let fast = is_normal(p.as_bytes());
            let full = canonical(p.as_bytes());
            assert_eq!(fast, full.as_deref() == Ok(p), "{p}");
        }
    }
}
