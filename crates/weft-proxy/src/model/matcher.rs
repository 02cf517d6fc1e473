//! Compiled `StringMatch`es and request matches, evaluated on the request path without
//! allocating.

use http::{HeaderMap, HeaderName, Method};
use regex::{Regex, RegexBuilder};

/// The `regex` crate's own default.
pub const DEFAULT_REGEX_SIZE_LIMIT: usize = 10 << 20;
use weft_api::types::{HttpMatchRequest, StringMatch};

#[derive(Debug, Clone)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    /// Anchored, as RE2's FullMatch in Envoy, with the pattern's literal prefix checked
    /// first: most routes of a long table fail there without running the regex.
    Regex(Regex, String),
    /// `{}` in a header condition: the header is present.
    Present,
}

impl Matcher {
    pub fn compile(m: &StringMatch, ignore_case: bool) -> Result<Matcher, regex::Error> {
        Matcher::compile_within(m, ignore_case, DEFAULT_REGEX_SIZE_LIMIT)
    }

    /// Compiles, refusing a regex whose compiled program exceeds `regex_size_limit` bytes
    /// (Envoy's `re2.max_program_size` serves the same purpose). `ignore_case` folds exact
    /// and prefix matches only: Envoy's `case_sensitive` does not apply to regexes.
    pub fn compile_within(
        m: &StringMatch,
        ignore_case: bool,
        regex_size_limit: usize,
    ) -> Result<Matcher, regex::Error> {
        let fold = |s: &String| {
            if ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        Ok(if let Some(e) = &m.exact {
            Matcher::Exact(fold(e))
        } else if let Some(p) = &m.prefix {
            Matcher::Prefix(fold(p))
        } else if let Some(r) = &m.regex {
            let re = RegexBuilder::new(&format!("^(?:{r})$"))
                .size_limit(regex_size_limit)
                .build()?;
            Matcher::Regex(re, literal_prefix(r))
        } else {
            Matcher::Present
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(e) => e == value,
            Matcher::Prefix(p) => value.starts_with(p.as_str()),
            Matcher::Regex(r, prefix) => value.starts_with(prefix.as_str()) && r.is_match(value),
            Matcher::Present => true,
        }
    }

    fn matches_folded(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(e) => e.eq_ignore_ascii_case(value),
            Matcher::Prefix(p) => {
                value.len() >= p.len()
                    && value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            Matcher::Regex(..) | Matcher::Present => self.matches(value),
        }
    }
}

/// The literal text every match of `pattern` starts with: the leading run of plain
/// characters, less a last one that a quantifier makes optional. Empty when the pattern
/// has alternation anywhere, since a top-level `|` would make any prefix wrong.
fn literal_prefix(pattern: &str) -> String {
    if pattern.contains('|') {
        return String::new();
    }
    let mut prefix = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' => match chars.peek() {
                Some(&n) if "./-_:".contains(n) => {
                    chars.next();
                    n
                }
                _ => break,
            },
            c if c.is_ascii_alphanumeric() || "/-_:,=&%@~!#;'\"<>` ".contains(c) => c,
            _ => {
                break;
            }
        };
        if matches!(chars.peek(), Some('?' | '*' | '{')) {
            break;
        }
        prefix.push(literal);
    }
    prefix
}

/// What a request looks like to the matcher.
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Path and query, as `:path`.
    pub path_and_query: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub headers: &'a HeaderMap,
    /// The port the caller addressed.
    pub port: u16,
}

impl<'a> RequestView<'a> {
    pub fn new(
        method: &'a Method,
        path_and_query: &'a str,
        scheme: &'a str,
        authority: &'a str,
        headers: &'a HeaderMap,
        port: u16,
    ) -> RequestView<'a> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        RequestView {
            method,
            path_and_query,
            path,
            query,
            scheme,
            authority,
            headers,
            port,
        }
    }

    /// The value of a header condition's header, pseudo-headers included.
    fn header(&self, key: &HeaderKey) -> Option<&'a str> {
        match key {
            HeaderKey::Name(name) => self.headers.get(name).and_then(|v| v.to_str().ok()),
            HeaderKey::Method => Some(self.method.as_str()),
            HeaderKey::Authority => Some(self.authority),
            HeaderKey::Path => Some(self.path_and_query),
            HeaderKey::Scheme => Some(self.scheme),
            // A request has no status.
            HeaderKey::Status => None,
        }
    }
}

/// The header a `headers` or `withoutHeaders` condition tests: any RFC 7230 token, or one
/// of the pseudo-headers Istio accepts there, which Envoy matches like headers.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderKey {
    Name(HeaderName),
    Method,
    Authority,
    Path,
    Scheme,
    Status,
}

impl HeaderKey {
    pub fn as_str(&self) -> &str {
        match self {
            HeaderKey::Name(name) => name.as_str(),
            HeaderKey::Method => ":method",
            HeaderKey::Authority => ":authority",
            HeaderKey::Path => ":path",
            HeaderKey::Scheme => ":scheme",
            HeaderKey::Status => ":status",
        }
    }

    fn parse(name: &str) -> Option<HeaderKey> {
        Some(match name {
            ":method" => HeaderKey::Method,
            ":authority" => HeaderKey::Authority,
            ":path" => HeaderKey::Path,
            ":scheme" => HeaderKey::Scheme,
            ":status" => HeaderKey::Status,
            _ => {
                HeaderKey::Name(HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?)
            }
        })
    }
}

/// One `match[]` entry: every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    pub uri: Option<Matcher>,
    pub ignore_uri_case: bool,
    pub scheme: Option<Matcher>,
    pub method: Option<Matcher>,
    pub authority: Option<Matcher>,
    pub headers: Vec<(HeaderKey, Matcher)>,
    pub without_headers: Vec<(HeaderKey, Matcher)>,
    pub query_params: Vec<(String, Matcher)>,
    pub port: Option<u16>,
}

impl RequestMatch {
    pub fn compile(m: &HttpMatchRequest, regex_size_limit: usize) -> Result<RequestMatch, String> {
        let compile = |s: &StringMatch, fold: bool| {
            Matcher::compile_within(s, fold, regex_size_limit).map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => format!(
                    "regex {:?} compiles to more than this proxy's limit of {limit} bytes (weft proxy --max-regex-size): simplify it or raise the limit",
                    s.regex.as_deref().unwrap_or_default()
                ),
                e => format!("invalid regex: {e}"),
            })
        };
        // `regex: "*"` is Istio's spelling of presence in header and query conditions.
        let presence = |s: &StringMatch| {
            if s.regex.as_deref() == Some("*") {
                Ok(Matcher::Present)
            } else {
                compile(s, false)
            }
        };
        let headers = |map: &std::collections::BTreeMap<String, StringMatch>| {
            map.iter()
                .map(|(k, v)| {
                    let key =
                        HeaderKey::parse(k).ok_or_else(|| format!("invalid header name {k:?}"))?;
                    Ok((key, presence(v)?))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(RequestMatch {
            uri: m
                .uri
                .as_ref()
                .map(|u| compile(u, m.ignore_uri_case))
                .transpose()?,
            ignore_uri_case: m.ignore_uri_case,
            scheme: m.scheme.as_ref().map(|s| compile(s, false)).transpose()?,
            method: m.method.as_ref().map(|s| compile(s, false)).transpose()?,
            authority: m
                .authority
                .as_ref()
                .map(|s| compile(s, false))
                .transpose()?,
            headers: headers(&m.headers)?,
            without_headers: headers(&m.without_headers)?,
            query_params: m
                .query_params
                .iter()
                .map(|(k, v)| Ok((k.clone(), presence(v)?)))
                .collect::<Result<_, String>>()?,
            port: m.port.and_then(|p| u16::try_from(p).ok()),
        })
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if self.port.is_some_and(|p| p != req.port) {
            return false;
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method.as_str()) {
                return false;
            }
        }
        if let Some(m) = &self.uri {
            let ok = if self.ignore_uri_case {
                m.matches_folded(req.path)
            } else {
                m.matches(req.path)
            };
            if !ok {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !m.matches(req.scheme) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(req.authority) {
                return false;
            }
        }
        if !self
            .headers
            .iter()
            .all(|(key, m)| req.header(key).is_some_and(|v| m.matches(v)))
        {
            return false;
        }
        // Envoy's invert_match; Istio adds treat_missing_header_as_empty unless the
        // condition is presence, so an absent header is tested as "".
        let without = |(key, m): &(HeaderKey, Matcher)| match (m, req.header(key)) {
            (Matcher::Present, value) => value.is_some(),
            (m, value) => m.matches(value.unwrap_or("")),
        };
        if self.without_headers.iter().any(without) {
            return false;
        }
        self.query_params.iter().all(|(name, m)| {
            query_value(req.query.unwrap_or(""), name).is_some_and(|v| m.matches(v))
        })
    }

    /// The prefix a `rewrite.uri` replaces when this match chose the route: without a
    /// `uri` condition Envoy matches the prefix `/`.
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.uri {
            Some(Matcher::Prefix(p)) => Some(p),
            None | Some(Matcher::Present) => Some("/"),
            Some(Matcher::Exact(_) | Matcher::Regex(..)) => None,
        }
    }
}

/// The first value of `name` in a query string (not percent-decoded, as Envoy compares).
pub fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_match_the_whole_value() {
        let m = Matcher::compile(&StringMatch::regex("v[0-9]"), false).unwrap();
        assert!(m.matches("v1"));
        assert!(!m.matches("xv1"));
        assert!(!m.matches("v12"));
    }

    #[test]
    fn literal_prefixes_are_safe() {
        assert_eq!(literal_prefix("/regex/12/[a-z]+"), "/regex/12/");
        assert_eq!(literal_prefix("/ab?c"), "/a");
        assert_eq!(literal_prefix("/a\\.b.*"), "/a.b");
        assert_eq!(literal_prefix("/a|/b"), "");
        assert_eq!(literal_prefix("(/a)"), "");
        assert_eq!(literal_prefix(".*@some-company-name.com.*"), "");
        let m = Matcher::compile(&StringMatch::regex("/v[0-9]+/x"), false).unwrap();
        assert!(m.matches("/v12/x") && !m.matches("/w12/x"));
    }

    #[test]
    fn ignore_uri_case_folds_both_sides() {
        let m = Matcher::compile(&StringMatch::prefix("/API"), true).unwrap();
        assert!(m.matches_folded("/api/v1"));
        assert!(m.matches_folded("/Api/v1"));
    }

    #[test]
    fn query_values() {
        assert_eq!(query_value("a=1&b=2", "b"), Some("2"));
        assert_eq!(query_value("a", "a"), Some(""));
        assert_eq!(query_value("a=1", "c"), None);
    }
}
