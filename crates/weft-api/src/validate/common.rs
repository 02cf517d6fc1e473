//! Shared pieces: field paths, the issue collector, and the number, duration, port, protocol,
//! label and exportTo rules several kinds use.

use super::names::{is_istio_label, is_label_with};
use super::{FieldIssue, Severity};
use crate::types::Duration;
use std::collections::BTreeMap;
use std::fmt;

/// Kubernetes' wording for a missing field.
pub const REQUIRED: &str = "Required value";

/// A field path, built while descending: `spec.http[0].route[1]`, map keys as `labels[app]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn spec() -> Path {
        Path("spec".into())
    }

    /// A path outside `spec`: `data.mesh` of the mesh ConfigMap.
    pub fn root(name: &str) -> Path {
        Path(name.into())
    }

    pub fn metadata() -> Path {
        Path("metadata".into())
    }

    pub fn field(&self, name: &str) -> Path {
        Path(format!("{}.{name}", self.0))
    }

    pub fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }

    pub fn key(&self, key: &str) -> Path {
        Path(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Collects the issues found in one resource.
#[derive(Debug, Default)]
pub struct Report {
    issues: Vec<FieldIssue>,
}

impl Report {
    pub fn error(&mut self, path: &Path, message: impl Into<String>) -> &mut FieldIssue {
        self.push(Severity::Error, path, message.into())
    }

    pub fn warning(&mut self, path: &Path, message: impl Into<String>) -> &mut FieldIssue {
        self.push(Severity::Warning, path, message.into())
    }

    /// `Required value` at `path`.
    pub fn required(&mut self, path: &Path) -> &mut FieldIssue {
        self.error(path, REQUIRED)
    }

    pub fn push(&mut self, severity: Severity, path: &Path, message: String) -> &mut FieldIssue {
        self.issues.push(FieldIssue {
            severity,
            path: path.0.clone(),
            message,
            hint: None,
        });
        let last = self.issues.len() - 1;
        &mut self.issues[last]
    }

    pub fn into_issues(self) -> Vec<FieldIssue> {
        self.issues
    }
}

/// Kubernetes' wording for a rejected value: `Invalid value: 150: must be …`.
pub fn invalid(value: impl fmt::Debug, detail: impl fmt::Display) -> String {
    format!("Invalid value: {value:?}: {detail}")
}

/// Kubernetes' wording for a value outside an enumeration.
pub fn unsupported(value: &str, supported: &[&str]) -> String {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "Unsupported value: {value:?}: supported values: {}",
        list.join(", ")
    )
}

/// Rejects `value` unless it is one of `supported` (Istio's enums are upper-case words).
pub fn one_of(r: &mut Report, path: &Path, value: &str, supported: &[&str]) {
    if !supported.contains(&value) {
        r.error(path, unsupported(value, supported));
    }
}

/// A protobuf `oneof` (the CRDs' `oneOf`): at most one of the named fields may be set.
/// Returns how many are.
pub fn at_most_one(r: &mut Report, path: &Path, fields: &[(&str, bool)]) -> usize {
    let count = fields.iter().filter(|(_, set)| *set).count();
    if count > 1 {
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        r.error(
            path,
            format!(
                "Invalid value: only one of {} or {last} may be set",
                rest.join(", ")
            ),
        );
    }
    count
}

pub fn port(r: &mut Report, path: &Path, number: u32) {
    if !(1..=65535).contains(&number) {
        r.error(path, invalid(number, "port must be between 1-65535"));
    }
}

/// Counters and limits Istio stores as signed integers but reads as "at least zero".
pub fn non_negative(r: &mut Report, path: &Path, value: Option<i32>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        r.error(path, invalid(v, "must be non-negative"));
    }
}

/// Whole percentages (`maxEjectionPercent`, the deprecated fault `percent`).
pub fn int_percent(r: &mut Report, path: &Path, value: Option<i64>) {
    if let Some(v) = value.filter(|v| !(0..=100).contains(v)) {
        r.error(path, invalid(v, "percentage must be in range 0..100"));
    }
}

/// Istio's `Percent { value }` and other fractional percentages.
pub fn percent(r: &mut Report, path: &Path, value: f64) {
    if !(0.0..=100.0).contains(&value) {
        r.error(path, invalid(value, "percentage must be in range 0..100"));
    }
}

/// The CRDs' rule for every duration: at least a millisecond.
pub fn min_duration(r: &mut Report, path: &Path, value: Duration) -> bool {
    if value.as_std() < std::time::Duration::from_millis(1) {
        r.error(
            path,
            invalid(
                value.to_string(),
                "must be a valid duration greater than 1ms",
            ),
        )
        .with_hint("use a duration such as \"500ms\" or \"5s\"");
        return false;
    }
    true
}

/// Istio's webhook rule for timeouts and intervals: at least 1ms, whole milliseconds,
/// because Envoy is configured in milliseconds.
pub fn duration(r: &mut Report, path: &Path, value: Duration) {
    let std = value.as_std();
    if min_duration(r, path, value) && std.subsec_nanos() != std.subsec_millis() * 1_000_000 {
        r.error(
            path,
            invalid(
                value.to_string(),
                "only durations to ms precision are supported",
            ),
        );
    }
}

/// The same rules for durations kept as raw JSON (fields Weft does not model yet).
pub fn json_duration(r: &mut Report, path: &Path, value: Option<&serde_json::Value>) {
    match value {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(text)) => match Duration::parse(text) {
            Ok(d) => duration(r, path, d),
            Err(e) => {
                r.error(path, invalid(text, e));
            }
        },
        Some(other) => {
            r.error(
                path,
                invalid(other, "must be a duration string such as \"5s\""),
            );
        }
    }
}

/// Port protocols as Istio names them (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Http2,
    HttpProxy,
    Grpc,
    GrpcWeb,
    Https,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    MySql,
}

impl Protocol {
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "http_proxy" => Protocol::HttpProxy,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::MySql,
            _ => return None,
        })
    }

    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

pub const PROTOCOLS: &str =
    "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, HTTP_PROXY, TCP, TLS, UDP, MONGO, REDIS, MYSQL";

/// A port's `protocol`: empty means "detect", anything else must be a protocol Istio knows.
pub fn protocol(r: &mut Report, path: &Path, name: &str) {
    if !name.is_empty() && Protocol::parse(name).is_none() {
        r.error(path, invalid(name, "unsupported protocol"))
            .with_hint(format!("use one of {PROTOCOLS} (any case)"));
    }
}

/// Label maps (subset labels, source labels, endpoint labels) with Istio's rules: keys are
/// Kubernetes qualified names with an optional DNS prefix, values qualified names or empty.
pub fn labels(r: &mut Report, path: &Path, labels: &BTreeMap<String, String>, severity: Severity) {
    for (key, value) in labels {
        let at = path.key(key);
        if !is_label_key(key) {
            r.push(severity, &at, invalid(key, "invalid label key"))
                .with_hint("a label key is [dns-prefix/]name, name up to 63 of [A-Za-z0-9_.-] starting and ending alphanumeric");
        }
        if !value.is_empty() && !is_qualified_name(value) {
            r.push(severity, &at, invalid(value, "invalid label value"))
                .with_hint(
                    "a label value is empty or [A-Za-z0-9_.-] starting and ending alphanumeric",
                );
        }
    }
}

fn is_qualified_name(s: &str) -> bool {
    is_label_with(
        s,
        |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
        usize::MAX,
    )
}

fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_istio_label));
    prefix_ok && name.len() <= 63 && is_qualified_name(name)
}

/// `workloadSelector.labels` on Sidecar, ServiceEntry and DestinationRule: no empty keys and no
/// wildcards; an empty selector selects every workload in the namespace, which is legal but
/// rarely meant.
pub fn workload_selector(r: &mut Report, path: &Path, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        if key.is_empty() {
            r.error(
                &path.key(key),
                invalid(key, "empty key is not supported in selector"),
            );
        }
        if key.contains('*') || value.contains('*') {
            r.error(
                &path.key(key),
                invalid(
                    format!("{key}={value}"),
                    "wildcard is not supported in selector",
                ),
            )
            .with_hint("selectors match labels exactly; list the label values instead");
        }
    }
    if labels.is_empty() {
        r.warning(path, "workload selector specified without labels")
            .with_hint(
                "it applies to every workload in the namespace; add labels or drop the selector",
            );
    }
}

/// What else constrains an `exportTo` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportScope {
    Plain,
    /// ServiceEntries may also be exported to no one (`~`).
    ServiceEntry,
    /// A DestinationRule with a workload selector only applies in its own namespace.
    SelectorRule,
}

pub fn export_to(
    r: &mut Report,
    path: &Path,
    namespace: &str,
    entries: &[String],
    scope: ExportScope,
) {
    // Entry by namespace it names: `.` is the current namespace, so `.` and that
    // namespace's name are duplicates.
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = path.index(i);
        let key = if entry == "." {
            namespace
        } else {
            entry.as_str()
        };
        if let Some(first) = seen.get(key) {
            if *first != entry {
                r.error(
                    &at,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                r.error(&at, format!("Duplicate value: {entry:?}"));
            }
            continue;
        }
        if entry == "~" && scope != ExportScope::ServiceEntry {
            r.error(
                &at,
                "exportTo ~ (none) is not allowed for Istio configuration objects",
            );
            continue;
        }
        if !matches!(key, "*" | "~") && !is_istio_label(key) {
            r.error(
                &at,
                invalid(
                    entry,
                    "only .,*, or a valid DNS 1123 label is allowed as exportTo entry",
                ),
            );
            continue;
        }
        seen.insert(key, entry);
    }
    if scope == ExportScope::SelectorRule && !seen.is_empty() {
        if !seen.contains_key(namespace) {
            r.error(path, "destination rule with workload selector cannot have exportTo beyond current namespace");
        } else if seen.len() > 1 {
            r.error(
                path,
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        }
    }
    if seen.contains_key("*") && entries.len() > 1 {
        r.error(
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        )
        .with_hint("\"*\" already exports to every namespace; remove the other entries");
    }
    if seen.contains_key("~") && entries.len() > 1 {
        r.error(
            path,
            "cannot export service entry to no one (~) and someone",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(check: impl FnOnce(&mut Report)) -> Vec<FieldIssue> {
        let mut r = Report::default();
        check(&mut r);
        r.into_issues()
    }

    #[test]
    fn paths_read_like_kubectl_field_paths() {
        let p = Path::spec()
            .field("http")
            .index(0)
            .field("match")
            .index(1)
            .field("headers")
            .key("x-user");
        assert_eq!(p.to_string(), "spec.http[0].match[1].headers[x-user]");
    }

    #[test]
    fn durations_need_a_millisecond_and_whole_milliseconds() {
        let at = Path::spec().field("timeout");
        let d = |t| Duration::parse(t).unwrap();
        assert!(issues(|r| duration(r, &at, d("1ms"))).is_empty());
        assert!(issues(|r| duration(r, &at, d("0.3s"))).is_empty());
        let zero = issues(|r| duration(r, &at, d("0s")));
        assert!(zero[0].message.contains("greater than 1ms"), "{zero:?}");
        let fine = issues(|r| duration(r, &at, d("1500us")));
        assert!(fine[0].message.contains("ms precision"), "{fine:?}");
        assert!(issues(|r| {
            min_duration(r, &at, d("1500us"));
        })
        .is_empty());
    }

    #[test]
    fn protocols_parse_in_any_case() {
        assert_eq!(Protocol::parse("grpc-web"), Some(Protocol::GrpcWeb));
        assert_eq!(Protocol::parse("Http2"), Some(Protocol::Http2));
        assert_eq!(Protocol::parse("h2c"), None);
        assert!(issues(|r| protocol(r, &Path::spec(), "")).is_empty());
    }

    #[test]
    fn label_keys_and_values() {
        let check = |k: &str, v: &str| {
            let map = BTreeMap::from([(k.to_string(), v.to_string())]);
            issues(|r| labels(r, &Path::spec(), &map, Severity::Error)).len()
        };
        assert_eq!(check("app", "reviews"), 0);
        assert_eq!(check("app.kubernetes.io/name", "v1.2_x"), 0);
        assert_eq!(check("version", ""), 0);
        assert_eq!(check("-app", "x"), 1);
        assert_eq!(check("app", "a b"), 1);
        assert_eq!(check(&"a".repeat(64), "x"), 1);
        assert_eq!(check("bad_prefix/app", "x"), 1);
    }

    #[test]
    fn export_to_rules() {
        let run = |entries: &[&str], scope| {
            let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
            issues(|r| export_to(r, &Path::spec().field("exportTo"), "prod", &entries, scope))
        };
        assert!(run(&[".", "foo"], ExportScope::Plain).is_empty());
        assert!(run(&["*"], ExportScope::Plain).is_empty());
        assert!(run(&["~"], ExportScope::ServiceEntry).is_empty());
        assert!(run(&["~"], ExportScope::Plain)[0]
            .message
            .contains("not allowed"));
        assert!(run(&[".", "prod"], ExportScope::Plain)[0]
            .message
            .contains("current namespace prod"));
        assert!(run(&["a", "a"], ExportScope::Plain)[0]
            .message
            .contains("Duplicate value"));
        assert!(run(&["*", "a"], ExportScope::Plain)[0]
            .message
            .contains("public (*)"));
        assert!(run(&["Not_A_Label"], ExportScope::Plain)[0]
            .message
            .contains("DNS 1123"));
        assert!(run(&["other"], ExportScope::SelectorRule)[0]
            .message
            .contains("beyond current namespace"));
        assert!(run(&["."], ExportScope::SelectorRule).is_empty());
    }
}
