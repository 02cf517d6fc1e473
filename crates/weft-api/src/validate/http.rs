//! HTTP building blocks: `StringMatch`, regexes, header names and values, header operations.

use super::common::{at_most_one, invalid, Path, Report};
use crate::types::{HeaderOperations, Headers, StringMatch};

/// Istio's (and Envoy's) limit; RE2 program size grows with length.
const MAX_REGEX_LEN: usize = 1024;

/// What an empty `StringMatch` (`{}`) means where it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyMatch {
    /// Header and query parameter conditions: `{}` tests presence.
    Presence,
    /// `uri`, `scheme`, `method`, `authority`: `{}` matches every request.
    MatchesAll,
}

/// One of `exact`, `prefix` or `regex` (the CRD's oneOf), with Istio's extra rules: a prefix
/// may only be empty for `uri` (Envoy's path prefix allows it, its string matcher does not),
/// and a regex must be non-empty, at most 1024 characters and compile (RE2 syntax).
pub fn string_match(r: &mut Report, path: &Path, m: &StringMatch, empty: EmptyMatch, is_uri: bool) {
    let fields = [
        ("exact", m.exact.is_some()),
        ("prefix", m.prefix.is_some()),
        ("regex", m.regex.is_some()),
    ];
    let set = at_most_one(r, path, &fields);
    if set > 1 {
        return;
    }
    if set == 0 && empty == EmptyMatch::MatchesAll {
        r.warning(
            path,
            "empty match (no exact, prefix or regex) matches every request",
        )
        .with_hint("set exact, prefix or regex, or remove the condition");
    }
    if m.prefix.as_deref() == Some("") && !is_uri {
        r.error(
            &path.field("prefix"),
            "prefix string match should not be empty",
        )
        .with_hint("use exact or regex, or remove the condition to match everything");
    }
    if let Some(re) = &m.regex {
        regex(r, &path.field("regex"), re);
    }
}

/// A regex as Envoy will run it: non-empty, not too long, valid RE2 syntax. Rust's `regex`
/// crate implements the RE2 syntax and guarantees.
pub fn regex(r: &mut Report, path: &Path, re: &str) {
    if re.is_empty() {
        r.error(path, "regex string match should not be empty");
        return;
    }
    if re.len() > MAX_REGEX_LEN {
        r.error(
            path,
            invalid(
                format!("{}…", re.chars().take(40).collect::<String>()),
                "regex is too large, max length allowed is 1024",
            ),
        );
        return;
    }
    if let Err(e) = regex::Regex::new(re) {
        let text = e.to_string();
        let reason = text
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(&text)
            .to_string();
        r.error(path, invalid(re, reason))
            .with_hint("Istio uses RE2 syntax (https://github.com/google/re2/wiki/Syntax); the regex must match the whole value");
    }
}

/// `@request.auth.claims.sub` / `@request.auth.claims[sub]`: routing on a JWT claim, which
/// only gateways can do.
pub fn is_jwt_claim_route(name: &str) -> bool {
    name.strip_prefix("@request.auth.claims")
        .is_some_and(|rest| rest.len() > 1 && (rest.starts_with('.') || rest.starts_with('[')))
}

/// An RFC 7230 token (`tchar`s), as Istio's header name rule.
pub fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// The pseudo-headers a match condition may test (RFC 9113 §8.3).
const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

/// A header name in a match condition: an RFC 7230 token or a pseudo-header. Istio also
/// accepts upper case; header names are case-insensitive, so that is only worth a note.
pub fn header_name(r: &mut Report, path: &Path, name: &str, allow_jwt_claim: bool) {
    if allow_jwt_claim && is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) {
        return;
    }
    if name.is_empty() {
        r.error(path, "header name cannot be empty");
    } else if !is_header_token(name) {
        r.error(path, invalid(name, "not a valid header name"))
            .with_hint("header names are letters, digits and !#$%&'*+-.^_`|~, or one of :method, :scheme, :authority, :path, :status");
    } else if name.chars().any(|c| c.is_ascii_uppercase()) {
        r.warning(path, invalid(name, "header names should be lowercase"))
            .with_hint(format!(
                "HTTP header names are case-insensitive and Istio documents them in lowercase; this matches {:?}",
                name.to_ascii_lowercase()
            ));
    }
}

/// A header value Envoy will accept: no control characters but tab, and `%` only as `%%` or
/// around a `%VARIABLE%` / `%VARIABLE(args)%` expression.
pub fn header_value(r: &mut Report, path: &Path, value: &str) {
    if value
        .chars()
        .any(|c| c != '\t' && (c < ' ' || c == '\u{7f}'))
    {
        r.error(
            path,
            invalid(value, "header value contains control characters"),
        );
        return;
    }
    if let Err(problem) = percent_expressions(value) {
        r.error(
            path,
            invalid(value, format!("invalid header configuration: {problem}")),
        )
        .with_hint("write a literal % as %%; %NAME% inserts an Envoy variable");
    }
}

fn percent_expressions(value: &str) -> Result<(), &'static str> {
    enum State {
        Literal,
        Name,
        Args { quoted: bool },
        End,
    }
    let mut state = State::Literal;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        state = match state {
            State::Literal if c == '%' => match chars.peek() {
                None => return Err("un-escaped %"),
                Some('%') => {
                    chars.next();
                    State::Literal
                }
                Some(_) => State::Name,
            },
            State::Literal => State::Literal,
            State::Name if c == '%' => State::Literal,
            State::Name if c == '(' => State::Args { quoted: false },
            State::Name => State::Name,
            State::Args { quoted: true } if c == '\\' => {
                chars
                    .next()
                    .ok_or("un-terminated backslash in JSON string")?;
                State::Args { quoted: true }
            }
            State::Args { quoted } if c == '"' => State::Args { quoted: !quoted },
            State::Args { quoted: false } if c == ')' => State::End,
            State::Args { quoted } => State::Args { quoted },
            State::End if c == '%' => State::Literal,
            State::End if c == ' ' => State::End,
            State::End => return Err("expecting '%' after ')'"),
        };
    }
    match state {
        State::Literal => Ok(()),
        _ => Err("un-terminated variable expression"),
    }
}

fn is_pseudo_or_host(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// `headers.request` / `headers.response` operations. Requests may set or add the authority
/// (`:authority` or `Host`), once; nothing may touch other pseudo-headers, and `Host` may not
/// be removed or appear in responses.
pub fn header_operations(
    r: &mut Report,
    path: &Path,
    headers: &Headers,
    rewrite_authority: Option<&str>,
) {
    if let Some(ops) = &headers.request {
        operations(r, &path.field("request"), ops, true);
        // The authority can be rewritten in one place only.
        let mut current = rewrite_authority
            .filter(|a| !a.is_empty())
            .map(str::to_string);
        for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map.iter().filter(|(n, _)| is_authority(n)) {
                if let Some(have) = &current {
                    r.error(
                        &path.field("request").field(field).key(name),
                        format!("authority header cannot be set multiple times: have {have:?}, attempting to set {value:?}"),
                    );
                }
                current = Some(value.clone());
            }
        }
    }
    if let Some(ops) = &headers.response {
        operations(r, &path.field("response"), ops, false);
    }
}

fn operations(r: &mut Report, path: &Path, ops: &HeaderOperations, request: bool) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            let at = path.field(field).key(name);
            let may_write = request && is_authority(name);
            operation_name(r, &at, name, may_write);
            header_value(r, &at, value);
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        operation_name(r, &path.field("remove").index(i), name, false);
    }
}

fn operation_name(r: &mut Report, path: &Path, name: &str, authority_allowed: bool) {
    if name.is_empty() {
        r.error(path, "header name cannot be empty");
    } else if authority_allowed {
        // `:authority` and `Host` in request set/add rewrite the authority.
    } else if name.eq_ignore_ascii_case("host") {
        r.error(
            path,
            format!("invalid header {name:?}: cannot set Host header"),
        )
        .with_hint("rewrite.authority (or headers.request.set[\":authority\"]) changes the host");
    } else if is_pseudo_or_host(name) {
        r.error(
            path,
            format!("invalid header {name:?}: header cannot have \":\" prefix"),
        )
        .with_hint("pseudo-headers are managed by the proxy");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(check: impl FnOnce(&mut Report)) -> Vec<crate::validate::FieldIssue> {
        let mut r = Report::default();
        check(&mut r);
        r.into_issues()
    }

    #[test]
    fn string_matches() {
        let at = Path::spec();
        let check = |m: StringMatch, empty, uri| run(|r| string_match(r, &at, &m, empty, uri));
        assert!(check(StringMatch::exact("a"), EmptyMatch::MatchesAll, false).is_empty());
        assert!(check(StringMatch::default(), EmptyMatch::Presence, false).is_empty());
        assert!(check(StringMatch::prefix(""), EmptyMatch::MatchesAll, true).is_empty());
        assert!(check(
            StringMatch {
                prefix: Some("b".into()),
                ..StringMatch::exact("a")
            },
            EmptyMatch::MatchesAll,
            true
        )[0]
        .message
        .contains("only one"));
        assert!(
            check(StringMatch::prefix(""), EmptyMatch::Presence, false)[0]
                .message
                .contains("prefix")
        );
        let empty = check(StringMatch::default(), EmptyMatch::MatchesAll, false);
        assert_eq!(empty[0].severity, crate::validate::Severity::Warning);
        let bad = check(StringMatch::regex("("), EmptyMatch::MatchesAll, false);
        assert_eq!(bad[0].path, "spec.regex");
        assert!(bad[0].message.contains("unclosed group"), "{bad:?}");
        assert!(check(
            StringMatch::regex("/v[0-9]+/.*"),
            EmptyMatch::MatchesAll,
            true
        )
        .is_empty());
        assert!(check(
            StringMatch::regex(&"a".repeat(1025)),
            EmptyMatch::MatchesAll,
            true
        )[0]
        .message
        .contains("too large"));
    }

    #[test]
    fn header_names() {
        let at = Path::spec();
        assert!(run(|r| header_name(r, &at, "x-user_id", false)).is_empty());
        assert!(run(|r| header_name(r, &at, "@request.auth.claims.sub", true)).is_empty());
        assert!(!run(|r| header_name(r, &at, "@request.auth.claims.sub", false)).is_empty());
        assert!(run(|r| header_name(r, &at, "a!#$%&'*+-.^_`|~z", false)).is_empty());
        assert!(run(|r| header_name(r, &at, ":method", false)).is_empty());
        assert!(!run(|r| header_name(r, &at, "::", false)).is_empty());
        assert!(!run(|r| header_name(r, &at, "illegal\"char", false)).is_empty());
        assert!(run(|r| header_name(r, &at, "x user", false))[0]
            .message
            .contains("not a valid header name"));
        let upper = run(|r| header_name(r, &at, "X-User", false));
        assert_eq!(upper[0].severity, crate::validate::Severity::Warning);
    }

    #[test]
    fn header_values_follow_envoys_percent_rules() {
        for ok in [
            "foo",
            "%HOSTNAME%",
            "100%%",
            "a %START_TIME(%s)% b",
            "%REQ(x-a)%",
            "",
        ] {
            assert!(percent_expressions(ok).is_ok(), "{ok}");
        }
        for bad in ["abc%123", "%START_TIME%%", "50%", "%REQ(x"] {
            assert!(percent_expressions(bad).is_err(), "{bad}");
        }
        assert!(!run(|r| header_value(r, &Path::spec(), "a\nb")).is_empty());
    }

    #[test]
    fn header_operations_protect_pseudo_headers_and_host() {
        let headers = |req: HeaderOperations, resp: HeaderOperations| Headers {
            request: Some(req),
            response: Some(resp),
        };
        let ops = |set: &[(&str, &str)], remove: &[&str]| HeaderOperations {
            set: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            add: Default::default(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        };
        let at = Path::spec().field("headers");
        let ok = headers(
            ops(&[("x-a", "1"), (":authority", "b")], &["x-b"]),
            ops(&[("x-c", "2")], &[]),
        );
        assert!(run(|r| header_operations(r, &at, &ok, None)).is_empty());
        let bad = headers(
            ops(&[(":path", "/")], &["Host"]),
            ops(&[("host", "x")], &[]),
        );
        let issues = run(|r| header_operations(r, &at, &bad, None));
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.headers.request.set[:path]",
                "spec.headers.request.remove[0]",
                "spec.headers.response.set[host]"
            ]
        );
        let twice = headers(ops(&[("host", "a")], &[]), ops(&[], &[]));
        let issues = run(|r| header_operations(r, &at, &twice, Some("b")));
        assert!(issues[0].message.contains("multiple times"));
    }
}
