//! The VirtualServices that route to a service, or what happens without one.

use super::service::lb_phrase;
use super::{labels_text, plural, short_name, INDENT};
use std::collections::BTreeMap;
use weft_api::destination_rules::MergedRule;
use weft_api::types::{self, StringMatch, VirtualService};
use weft_api::{host, scope, Resource, Spec};
use weft_proxy::model::registry::{Discovery, ServiceInfo};
use weft_proxy::upstream::config::effective_policy;

fn applies_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

pub fn virtual_service_lines(
    resources: &[Resource],
    service: &ServiceInfo,
    namespace: &str,
    rules: &[&MergedRule<'_>],
) -> Vec<String> {
    let bound: Vec<(&Resource, &VirtualService)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(vs) => Some((r, vs)),
            _ => None,
        })
        .filter(|(r, vs)| {
            scope::exported_to(r, namespace)
                && vs.hosts.iter().any(|h| {
                    host::wildcard_matches(&host::fqdn(h, r.namespace()), &service.hostname)
                })
        })
        .collect();
    let mut lines = Vec::new();
    for (r, vs) in &bound {
        lines.push(format!("VirtualService: {}", short_name(r)));
        if !applies_to_mesh(vs) {
            lines.push(format!(
                "{INDENT}Gateways {} only: sidecars do not use it (add \"mesh\" to gateways)",
                vs.gateways.join(", ")
            ));
        }
        lines.extend(vs_route_lines(vs));
    }
    let mesh: Vec<&Resource> = bound
        .iter()
        .filter(|(_, vs)| applies_to_mesh(vs))
        .map(|(r, _)| *r)
        .collect();
    match mesh.as_slice() {
        [] => lines.push(format!("No VirtualService: {}", default_routing(service, rules))),
        [_] => {}
        [first, ..] => lines.push(format!(
            "Only VirtualService {} routes sidecar traffic: for one host the first wins (istioctl analyze: IST0109)",
            short_name(first)
        )),
    }
    lines
}

/// Where traffic goes without a VirtualService: Istio's default route to every endpoint.
fn default_routing(service: &ServiceInfo, rules: &[&MergedRule<'_>]) -> String {
    if service.discovery == Discovery::Passthrough {
        return "connections go to the address the caller dialled".into();
    }
    let port = service.ports.first().map_or(0, |p| p.number);
    let policy = rules.first().and_then(|m| m.rule.traffic_policy.as_ref());
    let (lb, _, _) = effective_policy(policy, None, port);
    let whose = if policy.is_some_and(|p| p.load_balancer.is_some()) {
        "set by its DestinationRule"
    } else {
        "Istio's default"
    };
    let balancing = format!("{} ({whose})", lb_phrase(&lb));
    match service.endpoints.len() {
        0 => format!("requests would be balanced by {balancing}, but with no endpoints callers get 503s"),
        n => format!(
            "traffic is balanced across all {} by {balancing}, with Istio's default retries (2 attempts) and no timeout",
            plural(n, "endpoint")
        ),
    }
}

fn vs_route_lines(vs: &VirtualService) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, h) in vs.http.iter().enumerate() {
        let name = h.name.as_ref().map_or(String::new(), |n| format!(" {n:?}"));
        let matches = if h.matches.is_empty() {
            "all requests".to_string()
        } else {
            let each: Vec<String> = h.matches.iter().map(describe_http_match).collect();
            each.join(" or ")
        };
        let action = if let Some(r) = &h.redirect {
            let target = format!(
                "{}{}",
                r.authority.as_deref().unwrap_or(""),
                r.uri.as_deref().unwrap_or("")
            );
            format!("redirect to {target}")
        } else if let Some(d) = &h.direct_response {
            format!("respond {}", d.status)
        } else if let Some(d) = &h.delegate {
            let target = match &d.namespace {
                Some(ns) => format!("{}.{ns}", d.name),
                None => d.name.clone(),
            };
            format!("delegate to VirtualService {target}")
        } else {
            let weighted: Vec<(Option<&types::Destination>, Option<i32>)> = h
                .route
                .iter()
                .map(|d| (d.destination.as_ref(), d.weight))
                .collect();
            describe_destinations(&weighted)
        };
        lines.push(format!(
            "{INDENT}HTTP route {}{name}: {matches} → {action}",
            i + 1
        ));
        let policies = http_policies(h);
        if !policies.is_empty() {
            lines.push(format!("{INDENT}{INDENT}{}", policies.join("; ")));
        }
    }
    for (i, t) in vs.tcp.iter().enumerate() {
        let weighted: Vec<_> = t
            .route
            .iter()
            .map(|d| (d.destination.as_ref(), d.weight))
            .collect();
        let ports: Vec<String> = t
            .matches
            .iter()
            .filter_map(|m| m.port.map(|p| format!("port {p}")))
            .collect();
        let matches = if ports.is_empty() {
            "all connections".into()
        } else {
            ports.join(" or ")
        };
        lines.push(format!(
            "{INDENT}TCP route {}: {matches} → {}",
            i + 1,
            describe_destinations(&weighted)
        ));
    }
    for (i, t) in vs.tls.iter().enumerate() {
        let weighted: Vec<_> = t
            .route
            .iter()
            .map(|d| (d.destination.as_ref(), d.weight))
            .collect();
        let sni: Vec<&str> = t
            .matches
            .iter()
            .flat_map(|m| m.sni_hosts.iter().map(String::as_str))
            .collect();
        lines.push(format!(
            "{INDENT}TLS route {}: SNI {} → {}",
            i + 1,
            sni.join(","),
            describe_destinations(&weighted)
        ));
    }
    lines
}

/// `reviews subset v1 80%, reviews subset v2 20%`; a lone destination without a weight
/// takes everything.
fn describe_destinations(route: &[(Option<&types::Destination>, Option<i32>)]) -> String {
    let lone = route.len() == 1;
    let each: Vec<String> = route
        .iter()
        .filter_map(|(d, weight)| {
            let d = (*d)?;
            let mut text = d.host.clone();
            if let Some(port) = d.port {
                text.push_str(&format!(":{}", port.number));
            }
            if let Some(subset) = &d.subset {
                text.push_str(&format!(" subset {subset}"));
            }
            let weight = weight.unwrap_or(if lone { 100 } else { 0 });
            Some(format!("{text} {weight}%"))
        })
        .collect();
    if each.is_empty() {
        "no destination".into()
    } else {
        each.join(", ")
    }
}

fn describe_string_match(m: &StringMatch) -> String {
    if let Some(e) = &m.exact {
        e.clone()
    } else if let Some(p) = &m.prefix {
        format!("{p}*")
    } else if let Some(r) = &m.regex {
        format!("~{r}")
    } else {
        "present".into()
    }
}

/// `uri /api*, headers end-user=jason, method GET`.
fn describe_http_match(m: &types::HttpMatchRequest) -> String {
    let conditions = |map: &BTreeMap<String, StringMatch>| {
        let each: Vec<String> = map
            .iter()
            .map(|(k, v)| format!("{k}={}", describe_string_match(v)))
            .collect();
        each.join(",")
    };
    let mut parts = Vec::new();
    let single = [
        ("uri", &m.uri),
        ("method", &m.method),
        ("authority", &m.authority),
        ("scheme", &m.scheme),
    ];
    for (label, value) in single {
        if let Some(v) = value {
            parts.push(format!("{label} {}", describe_string_match(v)));
        }
    }
    for (label, map) in [
        ("headers", &m.headers),
        ("without headers", &m.without_headers),
        ("query", &m.query_params),
    ] {
        if !map.is_empty() {
            parts.push(format!("{label} {}", conditions(map)));
        }
    }
    if let Some(port) = m.port {
        parts.push(format!("port {port}"));
    }
    if !m.source_labels.is_empty() {
        parts.push(format!("from {}", labels_text(&m.source_labels)));
    }
    if let Some(ns) = &m.source_namespace {
        parts.push(format!("from namespace {ns}"));
    }
    if parts.is_empty() {
        "all requests".into()
    } else {
        parts.join(", ")
    }
}

/// Timeout, retries, fault, mirror and rewrite of one http route.
fn http_policies(h: &types::HttpRoute) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = h.timeout {
        out.push(format!("timeout {t}"));
    }
    if let Some(r) = &h.retries {
        let mut text = if r.attempts == 0 {
            "retries off".to_string()
        } else {
            format!("retries {}", r.attempts)
        };
        if let Some(per_try) = r.per_try_timeout {
            text.push_str(&format!(" x {per_try}"));
        }
        if let Some(on) = &r.retry_on {
            text.push_str(&format!(" on {on}"));
        }
        out.push(text);
    }
    if let Some(f) = &h.fault {
        if let Some(d) = &f.delay {
            let delay = d.fixed_delay.map_or("?".into(), |t| t.to_string());
            let percent = d.percentage.map(|p| p.value).or(d.percent.map(f64::from));
            out.push(format!(
                "fault: delay {delay} for {}%",
                percent.unwrap_or(100.0)
            ));
        }
        if let Some(a) = &f.abort {
            let status = a
                .http_status
                .map(|s| s.to_string())
                .or(a.grpc_status.clone())
                .unwrap_or_default();
            let percent = a.percentage.map_or(100.0, |p| p.value);
            out.push(format!("fault: abort {status} for {percent}%"));
        }
    }
    if let Some(m) = &h.mirror {
        out.push(format!("mirror to {}", m.host));
    }
    if let Some(uri) = h.rewrite.as_ref().and_then(|r| r.uri.as_ref()) {
        out.push(format!("rewrite uri to {uri}"));
    }
    out
}
