//! `proxy-config routes`: one row per route of each virtual host.

use super::{or_dash, short_name};
use crate::table;
use serde::Serialize;
use std::net::IpAddr;
use weft_proxy::model::matcher::{HeaderKey, Matcher, RequestMatch};
use weft_proxy::model::route::Route;
use weft_proxy::model::{strip_port, Snapshot};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    name: String,
    vhost_name: String,
    domains: Vec<String>,
    #[serde(rename = "match")]
    matches: String,
    virtual_service: Option<String>,
}

pub fn route_rows(snapshot: &Snapshot) -> Vec<RouteRow> {
    let mut ports: Vec<&u16> = snapshot.http.keys().collect();
    ports.sort();
    let mut rows = Vec::new();
    for port in ports {
        for vhost in &snapshot.http[port].vhosts {
            for route in &vhost.routes {
                rows.push(RouteRow {
                    name: port.to_string(),
                    vhost_name: vhost.name.clone(),
                    domains: vhost.domains.clone(),
                    matches: describe_route_match(route),
                    virtual_service: vhost.virtual_service.as_deref().map(short_name),
                });
            }
        }
    }
    rows
}

pub fn route_table(rows: &[RouteRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.vhost_name.clone(),
                short_domains(&r.domains),
                r.matches.clone(),
                or_dash(r.virtual_service.as_deref()),
            ]
        })
        .collect();
    table::render(
        &["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"],
        &body,
    )
}

/// The two shortest names a caller would type (`reviews, reviews.default`) and how many
/// more there are, leaving out the `:port` forms and putting addresses last.
fn short_domains(domains: &[String]) -> String {
    const SHOWN: usize = 2;
    let mut names: Vec<&str> = domains
        .iter()
        .map(String::as_str)
        .filter(|d| strip_port(d) == *d)
        .collect();
    if names.is_empty() {
        names = domains.iter().map(String::as_str).collect();
    }
    names.sort_by_key(|d| (d.parse::<IpAddr>().is_ok(), d.len()));
    if names.len() <= SHOWN {
        return names.join(", ");
    }
    format!(
        "{} + {} more...",
        names[..SHOWN].join(", "),
        names.len() - SHOWN
    )
}

/// `/*` for a catch-all, `/api*` for a prefix, `headers: end-user=jason`…; the entries of a
/// `match[]` list joined with ` | ` (any one selects the route).
fn describe_route_match(route: &Route) -> String {
    if route.matches.is_empty() {
        return "/*".into();
    }
    route
        .matches
        .iter()
        .map(describe_request_match)
        .collect::<Vec<_>>()
        .join(" | ")
}

fn describe_request_match(m: &RequestMatch) -> String {
    let mut parts = Vec::new();
    if let Some(uri) = &m.uri {
        parts.push(match uri {
            Matcher::Present => "/*".into(),
            uri => describe_value(uri),
        });
    }
    let labelled = [
        ("method", &m.method),
        ("authority", &m.authority),
        ("scheme", &m.scheme),
    ];
    for (label, matcher) in labelled {
        if let Some(matcher) = matcher {
            parts.push(format!("{label}: {}", describe_value(matcher)));
        }
    }
    if !m.headers.is_empty() {
        parts.push(format!("headers: {}", describe_headers(&m.headers)));
    }
    if !m.without_headers.is_empty() {
        parts.push(format!(
            "without headers: {}",
            describe_headers(&m.without_headers)
        ));
    }
    if !m.query_params.is_empty() {
        let params: Vec<String> = m
            .query_params
            .iter()
            .map(|(name, v)| describe_condition(name, v))
            .collect();
        parts.push(format!("query: {}", params.join(",")));
    }
    if let Some(port) = m.port {
        parts.push(format!("port: {port}"));
    }
    if parts.is_empty() {
        "/*".into()
    } else {
        parts.join("; ")
    }
}

fn describe_headers(headers: &[(HeaderKey, Matcher)]) -> String {
    headers
        .iter()
        .map(|(name, v)| describe_condition(name.as_str(), v))
        .collect::<Vec<_>>()
        .join(",")
}

/// `end-user=jason`, `end-user=ja*`, `end-user~=ja.*`, or `end-user` (present).
fn describe_condition(name: &str, value: &Matcher) -> String {
    match value {
        Matcher::Present => name.to_string(),
        Matcher::Regex(..) => format!("{name}~={}", describe_value(value)),
        _ => format!("{name}={}", describe_value(value)),
    }
}

fn describe_value(value: &Matcher) -> String {
    match value {
        Matcher::Exact(v) => v.clone(),
        Matcher::Prefix(p) => format!("{p}*"),
        Matcher::Regex(re, _) => written_regex(re.as_str()).to_string(),
        Matcher::Present => "*".into(),
    }
}

/// The pattern as the VirtualService wrote it: compiling anchors it as `^(?:…)$`, with
/// `(?i)` in front when case is ignored.
fn written_regex(compiled: &str) -> &str {
    let unflagged = compiled.strip_prefix("(?i)").unwrap_or(compiled);
    unflagged
        .strip_prefix("^(?:")
        .and_then(|p| p.strip_suffix(")$"))
        .unwrap_or(compiled)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{cells, snapshot, MESH};
    use super::*;

    #[tokio::test]
    async fn routes_describe_matches_in_order() {
        let t = route_table(&route_rows(&snapshot(MESH).await));
        let vhost = "reviews.default.svc.cluster.local:9080";
        let domains = "reviews, reviews.default + 3 more...";
        let vs = "reviews.default";
        let rows = cells(&t);
        let reviews: Vec<&Vec<&str>> = rows.iter().filter(|r| r[1] == vhost).collect();
        let expected = [
            "headers: end-user=jason",
            "/api*; method: GET | /v[0-9]+/.*",
            "/*",
        ];
        assert_eq!(reviews.len(), expected.len(), "{t}");
        for (row, want) in reviews.iter().zip(expected) {
            assert_eq!(**row, ["9080", vhost, domains, want, vs]);
        }
    }

    #[tokio::test]
    async fn services_without_a_virtual_service_get_the_default_route() {
        let t = route_table(&route_rows(&snapshot(MESH).await));
        let pay = cells(&t)
            .into_iter()
            .find(|r| r[1] == "pay.example.com:443");
        assert!(pay.is_none(), "TLS ports have no HTTP routes:\n{t}");
        let only_reviews = MESH.replace("hosts: [reviews]", "hosts: [ratings]");
        let t = route_table(&route_rows(&snapshot(&only_reviews).await));
        let vhost = "reviews.default.svc.cluster.local:9080";
        let row = cells(&t).into_iter().find(|r| r[1] == vhost).unwrap();
        assert_eq!(row[3..], ["/*", "-"]);
    }

    #[test]
    fn domains_and_regexes_read_like_istioctl() {
        let d = |v: &[&str]| short_domains(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(d(&["*"]), "*");
        assert_eq!(d(&["a.example.com", "a.example.com:80"]), "a.example.com");
        assert_eq!(written_regex("(?i)^(?:/v[0-9]+)$"), "/v[0-9]+");
    }
}
