//! Compiled HTTP routes: what one `http[]` entry of a VirtualService does.

use super::matcher::{Matcher, RequestMatch, RequestView};
use crate::upstream::Cluster;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use regex::Regex;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use weft_api::types;

#[derive(Debug)]
pub struct Route {
    pub name: Option<String>,
    /// Which route this is, as Weft's route metrics label it.
    pub id: Arc<RouteId>,
    /// Empty: matches every request.
    pub matches: Vec<RequestMatch>,
    pub action: Action,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
    /// `mirror` and each of `mirrors`, each rolled on its own percentage.
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
    pub headers: HeaderOps,
    pub rewrite: Option<Rewrite>,
}

/// A route's identity in `weft_route_*` metrics: the host it serves, the VirtualService
/// and its `http[]` entry (empty names for a service's default route). Built once per config
/// version with its hash, so a request hashes one number.
#[derive(Debug)]
pub struct RouteId {
    pub host: Arc<str>,
    pub virtual_service_namespace: Arc<str>,
    pub virtual_service_name: Arc<str>,
    /// The entry's `name`, else `http[i]`; `default` for a service's default route.
    pub route: Arc<str>,
    hash: u64,
}

impl RouteId {
    pub fn new(host: &str, virtual_service: Option<(&str, &str)>, route: &str) -> RouteId {
        let (namespace, name) = virtual_service.unwrap_or(("", ""));
        let mut hasher = std::hash::DefaultHasher::new();
        (host, namespace, name, route).hash(&mut hasher);
        RouteId {
            host: host.into(),
            virtual_service_namespace: namespace.into(),
            virtual_service_name: name.into(),
            route: route.into(),
            hash: hasher.finish(),
        }
    }
}

impl PartialEq for RouteId {
    fn eq(&self, o: &RouteId) -> bool {
        std::ptr::eq(self, o)
            || (self.hash == o.hash
                && self.host == o.host
                && self.virtual_service_namespace == o.virtual_service_namespace
                && self.virtual_service_name == o.virtual_service_name
                && self.route == o.route)
    }
}

impl Eq for RouteId {}

impl Hash for RouteId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Route {
    /// The index of the first `match[]` entry the request satisfies.
    pub fn find_match(&self, req: &RequestView<'_>) -> Option<Option<usize>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches.iter().position(|m| m.matches(req)).map(Some)
    }

    /// The path prefix the request matched on (`find_match`'s answer), which a prefix
    /// rewrite replaces: `/` when the route has no `uri` condition, as Envoy's implicit
    /// prefix match; `None` for exact and regex matches, which match the whole path.
    pub fn matched_prefix(&self, matched: Option<usize>) -> Option<&str> {
        match matched {
            Some(i) => self.matches[i].matched_prefix(),
            None => Some("/"),
        }
    }
}

#[derive(Debug)]
pub enum Action {
    Forward(WeightedClusters),
    Redirect(Redirect),
    Direct { status: StatusCode, body: Bytes },
}

#[derive(Debug)]
pub struct WeightedCluster {
    pub cluster: Arc<Cluster>,
    pub weight: u32,
    pub headers: HeaderOps,
    /// The Host/`:authority` sent upstream, when config rewrites it: the route's
    /// `rewrite.authority`, else its `headers.request` authority, else this destination's.
    /// Istio gives the route precedence on every destination, weighted or not.
    pub authority: Option<HeaderValue>,
}

impl WeightedCluster {
    /// A destination without header operations.
    pub fn to(cluster: Arc<Cluster>, weight: u32) -> WeightedCluster {
        WeightedCluster {
            cluster,
            weight,
            headers: HeaderOps::default(),
            authority: None,
        }
    }
}

#[derive(Debug)]
pub struct WeightedClusters {
    pub clusters: Vec<WeightedCluster>,
    pub total: u32,
}

impl WeightedClusters {
    pub fn new(clusters: Vec<WeightedCluster>) -> Self {
        let total = clusters.iter().map(|c| c.weight).sum();
        WeightedClusters { clusters, total }
    }

    /// Weighted choice; `roll` is uniform in `0..total`.
    pub fn pick_with(&self, roll: u32) -> &WeightedCluster {
        let mut acc = 0;
        for c in &self.clusters {
            acc += c.weight;
            if roll < acc {
                return c;
            }
        }
        &self.clusters[self.clusters.len() - 1]
    }

    pub fn pick(&self) -> &WeightedCluster {
        if self.clusters.len() == 1 || self.total == 0 {
            return &self.clusters[0];
        }
        self.pick_with(fastrand::u32(0..self.total))
    }
}

/// Which failures a retry policy retries, as Envoy's `retry_on`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub refused_stream: bool,
    pub retriable_4xx: bool,
    pub status_codes: Vec<u16>,
    /// gRPC statuses by number (cancelled 1, deadline-exceeded 4, resource-exhausted 8,
    /// internal 13, unavailable 14).
    pub grpc: Vec<u32>,
}

impl RetryOn {
    /// Istio's default `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`.
    /// Since Istio 1.24 it names no retriable status code, so a 503 is not retried.
    pub fn istio_default() -> RetryOn {
        RetryOn::parse(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        )
    }

    pub fn parse(text: &str) -> RetryOn {
        let mut on = RetryOn::default();
        for item in text.split(',').map(str::trim) {
            match item {
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "reset" | "reset-before-request" => on.reset = true,
                "connect-failure" => on.connect_failure = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-4xx" => on.retriable_4xx = true,
                // Only the codes listed beside it are retriable (Envoy's retriable_status_codes).
                "retriable-status-codes" => {}
                "cancelled" => on.grpc.push(1),
                "deadline-exceeded" => on.grpc.push(4),
                "resource-exhausted" => on.grpc.push(8),
                "internal" => on.grpc.push(13),
                "unavailable" => on.grpc.push(14),
                code => {
                    if let Ok(code) = code.parse::<u16>() {
                        on.status_codes.push(code);
                    }
                }
            }
        }
        on
    }

    pub fn status(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        (self.five_xx && status.is_server_error())
            || (self.gateway_error && matches!(code, 502..=504))
            || (self.retriable_4xx && code == 409)
            || self.status_codes.contains(&code)
    }

    pub fn grpc_status(&self, headers: &HeaderMap) -> bool {
        headers
            .get(crate::http::headers::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|s| self.grpc.contains(&s))
    }

    /// A connection that failed or reset, or a per-try timeout.
    pub fn reset_or_timeout(&self) -> bool {
        self.five_xx || self.gateway_error || self.reset
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try (Istio's `attempts`).
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    /// `retryIgnorePreviousHosts`: retry on an endpoint not tried yet. Unset, Istio does so
    /// unless the request is consistently hashed, which keeps its endpoint.
    pub retry_other_hosts: Option<bool>,
    pub backoff_base: Duration,
}

impl RetryPolicy {
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: RetryOn::istio_default(),
            retry_other_hosts: None,
            backoff_base: Duration::from_millis(25),
        }
    }

    /// One try only: passthrough, inbound and upgrades.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            attempts: 0,
            ..RetryPolicy::istio_default()
        }
    }

    pub fn from_api(r: Option<&types::HttpRetry>) -> RetryPolicy {
        let default = RetryPolicy::istio_default();
        let Some(r) = r else { return default };
        RetryPolicy {
            attempts: r.attempts.max(0) as u32,
            per_try_timeout: r.per_try_timeout.map(|d| d.as_std()),
            on: r
                .retry_on
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(RetryOn::parse)
                .unwrap_or(default.on),
            retry_other_hosts: r.retry_ignore_previous_hosts,
            backoff_base: r
                .backoff
                .map(|d| d.as_std())
                .unwrap_or(default.backoff_base),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(FaultAbort, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultAbort {
    Http(StatusCode),
    Grpc(u32),
}

impl Fault {
    /// A missing `percentage` (and deprecated `percent`) is 0 %: Istio passes Envoy's fault
    /// filter an unset fraction, which injects into no request.
    pub fn from_api(f: &types::HttpFaultInjection) -> Option<Fault> {
        let delay = f.delay.as_ref().and_then(|d| {
            let pct = d
                .percentage
                .map(|p| p.value)
                .or(d.percent.map(f64::from))
                .unwrap_or(0.0);
            d.fixed_delay.map(|fd| (fd.as_std(), pct))
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let pct = a.percentage.map(|p| p.value).unwrap_or(0.0);
            let kind = if let Some(code) = a.http_status {
                FaultAbort::Http(StatusCode::from_u16(code as u16).ok()?)
            } else {
                FaultAbort::Grpc(types::grpc_status_code(a.grpc_status.as_deref()?)?)
            };
            Some((kind, pct))
        });
        (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
    }
}

/// `true` with probability `percent`/100.
pub fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && fastrand::f64() * 100.0 < percent)
}

#[derive(Debug)]
pub struct Mirror {
    pub cluster: Arc<Cluster>,
    pub percent: f64,
}

#[derive(Debug, Clone)]
pub struct Cors {
    pub allow_origins: Vec<Matcher>,
    pub allow_methods: Option<HeaderValue>,
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
}

impl Cors {
    pub fn from_api(c: &types::CorsPolicy) -> Cors {
        let join = |v: &[String]| {
            (!v.is_empty())
                .then(|| HeaderValue::from_str(&v.join(",")).ok())
                .flatten()
        };
        let mut allow_origins: Vec<Matcher> = c
            .allow_origins
            .iter()
            .filter_map(|m| Matcher::compile(m, false).ok())
            .collect();
        allow_origins.extend(c.allow_origin.iter().map(|o| {
            if o == "*" {
                Matcher::Present
            } else {
                Matcher::Exact(o.clone())
            }
        }));
        Cors {
            allow_origins,
            allow_methods: join(&c.allow_methods),
            allow_headers: join(&c.allow_headers),
            expose_headers: join(&c.expose_headers),
            max_age: c.max_age.map(|d| HeaderValue::from(d.as_std().as_secs())),
            allow_credentials: c.allow_credentials.unwrap_or(false),
        }
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| m.matches(origin))
    }
}

/// `set`, `add` and `remove` for one direction. Pseudo-headers and `Host` are never
/// operated on (Istio drops them); an authority set or added is a host rewrite instead.
#[derive(Debug, Clone, Default)]
pub struct HeaderOp {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

impl HeaderOp {
    fn from_api(ops: Option<&types::HeaderOperations>) -> HeaderOp {
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .filter(|(k, _)| !is_internal(k))
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect()
        };
        let Some(ops) = ops else {
            return HeaderOp::default();
        };
        HeaderOp {
            set: pairs(&ops.set),
            add: pairs(&ops.add),
            remove: ops
                .remove
                .iter()
                .filter(|k| !is_internal(k))
                .filter_map(|k| HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub request: HeaderOp,
    pub response: HeaderOp,
}

impl HeaderOps {
    pub fn from_api(h: Option<&types::Headers>) -> HeaderOps {
        HeaderOps {
            request: HeaderOp::from_api(h.and_then(|h| h.request.as_ref())),
            response: HeaderOp::from_api(h.and_then(|h| h.response.as_ref())),
        }
    }

    /// The authority `headers.request` rewrites to: `:authority` or `Host` in `set`, else in
    /// `add` (validation allows only one).
    pub fn authority(h: Option<&types::Headers>) -> Option<HeaderValue> {
        let req = h?.request.as_ref()?;
        [&req.set, &req.add]
            .into_iter()
            .find_map(|m| m.iter().find(|(k, _)| is_authority(k)))
            .and_then(|(_, v)| HeaderValue::from_str(v).ok())
    }
}

/// `rewrite.uri` and `rewrite.uriRegexRewrite`; `rewrite.authority` is compiled into each
/// destination's [`WeightedCluster::authority`].
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub uri: Option<String>,
    /// Regex and its replacement, with RE2's `\1` turned into `${1}`.
    pub uri_regex: Option<(Regex, String)>,
}

impl Rewrite {
    pub fn from_api(r: &types::HttpRewrite) -> Result<Rewrite, String> {
        let uri_regex = r
            .uri_regex_rewrite
            .as_ref()
            .map(|rr| {
                let re = Regex::new(&rr.match_)
                    .map_err(|e| format!("invalid uriRegexRewrite.match: {e}"))?;
                let backref = Regex::new(r"\\(\d)").expect("static regex");
                Ok::<_, String>((re, backref.replace_all(&rr.rewrite, "$${$1}").into_owned()))
            })
            .transpose()?;
        Ok(Rewrite {
            uri: r.uri.clone().filter(|u| !u.is_empty()),
            uri_regex,
        })
    }

    /// The new path (without the query) for `path`, given the prefix the route matched on.
    pub fn path(&self, path: &str, matched_prefix: Option<&str>) -> Option<String> {
        if let Some((re, with)) = &self.uri_regex {
            return Some(re.replace_all(path, with.as_str()).into_owned());
        }
        Some(replace_prefix(self.uri.as_ref()?, path, matched_prefix))
    }
}

/// Envoy's `prefix_rewrite`: the matched prefix gives way to `with`; an exact or regex
/// match (`None`) matched the whole path, which is replaced.
fn replace_prefix(with: &str, path: &str, matched_prefix: Option<&str>) -> String {
    match matched_prefix {
        Some(prefix) if path.len() >= prefix.len() => format!("{with}{}", &path[prefix.len()..]),
        _ => with.to_string(),
    }
}

/// Where a redirect's path comes from.
#[derive(Debug, Clone)]
pub enum RedirectPath {
    /// The request's path and query.
    Keep,
    /// `uri`: the whole path; the request's query is kept unless `uri` has one.
    Replace(String),
    /// `prefixRewrite`: the matched prefix gives way to this value, the rest and the query
    /// are kept.
    Prefix(String),
}

/// `redirect`, as Istio hands it to Envoy: the port is decided when the route table for a
/// listener port is compiled, the rest by Envoy's rules for a `Location` per request.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub path: RedirectPath,
    pub authority: Option<String>,
    /// The port the `Location` names; `None` keeps the request's Host as it is.
    pub port: Option<u16>,
    pub scheme: Option<String>,
    pub status: StatusCode,
}

impl Redirect {
    /// `listener_port` is the port of the route table: `FROM_REQUEST_PORT` names it, as
    /// Istio builds every route for one listener port.
    pub fn from_api(r: &types::HttpRedirect, listener_port: u16) -> Redirect {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let path = match (nonempty(&r.prefix_rewrite), nonempty(&r.uri)) {
            (Some(prefix), _) => RedirectPath::Prefix(prefix),
            (None, Some(uri)) => RedirectPath::Replace(uri),
            (None, None) => RedirectPath::Keep,
        };
        let scheme = nonempty(&r.scheme);
        let port = match (r.port, r.derive_port.as_deref()) {
            (Some(p), _) => u16::try_from(p).ok(),
            (None, Some("FROM_REQUEST_PORT")) => Some(listener_port),
            // FROM_PROTOCOL_DEFAULT is Envoy's default: no port rewrite.
            _ => None,
        }
        .filter(|&p| p != 0);
        // Istio leaves out a port that is the default for the redirect's scheme (the
        // listeners Weft serves redirects on are plain HTTP).
        let default_port = if scheme.as_deref() == Some("https") {
            443
        } else {
            80
        };
        Redirect {
            path,
            authority: nonempty(&r.authority),
            port: port.filter(|&p| p != default_port),
            scheme,
            status: r
                .redirect_code
                .filter(|c| *c != 0)
                .and_then(|c| StatusCode::from_u16(c as u16).ok())
                .unwrap_or(StatusCode::MOVED_PERMANENTLY),
        }
    }

    /// The `Location` for a request with `scheme`, `host` (its Host header), `path`,
    /// `query`, and the prefix its route matched on, as Envoy builds it.
    pub fn location(
        &self,
        scheme: &str,
        host: &str,
        path: &str,
        query: Option<&str>,
        matched_prefix: Option<&str>,
    ) -> String {
        use std::fmt::Write;
        let new_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let mut out = format!("{new_scheme}://");
        match &self.authority {
            Some(authority) => out.push_str(authority),
            None => out.push_str(request_host(host, scheme, new_scheme, self.port.is_some())),
        }
        if let Some(p) = self.port {
            let _ = write!(out, ":{p}");
        }
        let (path, query) = match &self.path {
            RedirectPath::Keep => (path.to_string(), query),
            RedirectPath::Replace(uri) => match uri.split_once('?') {
                // A query in `uri` replaces the request's.
                Some((p, q)) => (p.to_string(), Some(q)),
                None => (uri.clone(), query),
            },
            RedirectPath::Prefix(with) => (replace_prefix(with, path, matched_prefix), query),
        };
        if !path.starts_with('/') {
            out.push('/');
        }
        out.push_str(&path);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// Envoy's `processRequestHost`: the request's Host, less its port when the redirect names
/// a port, or when the scheme changes and the port was the old scheme's default.
fn request_host<'h>(host: &'h str, scheme: &str, new_scheme: &str, new_port: bool) -> &'h str {
    let port_at = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    let Some(at) = port_at else { return host };
    let port = &host[at..];
    let default_dropped = scheme != new_scheme
        && ((scheme == "https" && port == ":443") || (scheme == "http" && port == ":80"));
    if new_port || default_dropped {
        &host[..at]
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_follows_cumulative_weights() {
        // Weights are checked statistically end to end; here the boundaries.
        let on = RetryOn::parse("5xx,503,unavailable");
        assert!(on.five_xx && on.status_codes == vec![503] && on.grpc == vec![14]);
    }

    #[test]
    fn rewrites_replace_the_matched_prefix() {
        let r = Rewrite::from_api(&types::HttpRewrite {
            uri: Some("/v2/".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            r.path("/api/items?x=1", Some("/api/")).unwrap(),
            "/v2/items?x=1"
        );
        assert_eq!(r.path("/exact", None).unwrap(), "/v2/");
        let rr = Rewrite::from_api(&types::HttpRewrite {
            uri_regex_rewrite: Some(types::RegexRewrite {
                match_: "^/service/([^/]+)(/.*)$".into(),
                rewrite: "\\2/instance/\\1".into(),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            rr.path("/service/foo/v1/api", None).unwrap(),
            "/v1/api/instance/foo"
        );
    }

    #[test]
    fn redirects_build_locations() {
        let r = Redirect::from_api(
            &types::HttpRedirect {
                uri: Some("/new".into()),
                authority: Some("b.example".into()),
                ..Default::default()
            },
            8080,
        );
        assert_eq!(
            r.location("http", "a.example:8080", "/old", Some("q=1"), None),
            "http://b.example/new?q=1"
        );
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(request_host("[::1]:80", "http", "https", false), "[::1]");
        assert_eq!(request_host("a:8080", "http", "https", false), "a:8080");
    }
}
