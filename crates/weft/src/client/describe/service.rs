//! The service itself, its endpoints and its DestinationRules.

use super::{api_name, labels_text, plural, short_name, ANNOUNCED_BY, INDENT};
use crate::table;
use weft_api::destination_rules::MergedRule;
use weft_api::types::{self, TrafficPolicy};
use weft_api::{Resource, Spec};
use weft_proxy::model::protocol::Protocol;
use weft_proxy::model::registry::{Discovery, ServiceInfo};
use weft_proxy::upstream::config::{effective_policy, HashKey, LbPolicy};

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "HTTP",
        Protocol::Http2 => "HTTP2",
        Protocol::Grpc => "GRPC",
        Protocol::Tcp => "TCP",
        Protocol::Tls => "TLS",
        Protocol::Unknown => "unknown",
    }
}

pub fn service_lines(service: &ServiceInfo, declared: &Resource) -> Vec<String> {
    let title = match declared.kind {
        weft_api::Kind::Service => short_name(declared),
        _ => service.hostname.clone(),
    };
    let mut lines = vec![format!("Service: {title}")];
    let mut declared_by = service.declared_by.clone();
    let mut selector = None;
    match &declared.spec {
        Spec::Service(svc) => {
            selector = Some(if svc.selector.is_empty() {
                "none: Weft gives a Service without a selector no endpoints".into()
            } else {
                labels_text(&svc.selector)
            });
        }
        Spec::ServiceEntry(se) => {
            declared_by = format!(
                "{declared_by} ({}, resolution {})",
                api_name(&se.location.unwrap_or(types::Location::MeshExternal)),
                api_name(&se.resolution.unwrap_or(types::Resolution::None)),
            );
            selector = se
                .workload_selector
                .as_ref()
                .map(|s| labels_text(&s.labels));
        }
        _ => {}
    }
    lines.push(format!("{INDENT}Hostname: {}", service.hostname));
    lines.push(format!("{INDENT}Declared by: {declared_by}"));
    if !service.vips.is_empty() {
        let vips: Vec<String> = service
            .vips
            .iter()
            .map(|n| {
                if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                }
            })
            .collect();
        lines.push(format!("{INDENT}Addresses: {}", vips.join(", ")));
    }
    for p in &service.ports {
        let name = if p.name.is_empty() { "-" } else { &p.name };
        let mut line = format!(
            "{INDENT}Port: {name} {}/{}, targets port {}",
            p.number,
            protocol_name(p.protocol),
            p.target_port.unwrap_or(p.number)
        );
        if p.protocol == Protocol::Unknown {
            line.push_str(" (sniffed: name the port http-… or tcp-…, or set appProtocol)");
        }
        lines.push(line);
    }
    if let Some(selector) = selector {
        lines.push(format!("{INDENT}Selector: {selector}"));
    }
    lines
}

pub fn endpoint_lines(
    resources: &[Resource],
    service: &ServiceInfo,
    declared: &Resource,
) -> Vec<String> {
    if service.endpoints.is_empty() {
        let why = match (&declared.spec, service.discovery) {
            (_, Discovery::Passthrough) => {
                "resolution NONE sends each connection to the address the caller dialled".into()
            }
            (Spec::Service(svc), _) if !svc.selector.is_empty() => format!(
                "no WorkloadEntry in {} has labels {} (weft get we -n {} lists them)",
                declared.namespace(),
                labels_text(&svc.selector),
                declared.namespace()
            ),
            _ => "nothing declares any".into(),
        };
        return vec![format!("Endpoints: none: {why}")];
    }
    let source = |declared_by: &str| {
        let announcer = resources
            .iter()
            .find(|r| r.display_name() == declared_by)
            .and_then(|r| r.metadata.annotations.get(ANNOUNCED_BY));
        match announcer {
            Some(proxy) => format!("announced by proxy {proxy}"),
            None => declared_by.to_string(),
        }
    };
    let rows: Vec<Vec<String>> = service
        .endpoints
        .iter()
        .map(|e| {
            let ports: Vec<String> = service
                .ports
                .iter()
                .map(|p| e.port_for(p).to_string())
                .collect();
            let labels = labels_text(&e.labels);
            vec![
                e.address.clone(),
                ports.join(","),
                if labels.is_empty() {
                    "-".into()
                } else {
                    labels
                },
                source(&e.declared_by),
            ]
        })
        .collect();
    let table = table::render(&["ADDRESS", "PORTS", "LABELS", "SOURCE"], &rows);
    std::iter::once(format!("Endpoints: {}", service.endpoints.len()))
        .chain(table.lines().map(|l| format!("{INDENT}{l}")))
        .collect()
}

/// The DestinationRules for the service as a caller in its namespace meets them: the one in
/// force first, with the rules Istio merged into it and what the merge left out.
pub fn destination_rule_lines(service: &ServiceInfo, rules: &[&MergedRule<'_>]) -> Vec<String> {
    if rules.is_empty() {
        return vec![
            "DestinationRule: none (no subsets; least request, no circuit breaking, no outlier detection)".into(),
        ];
    }
    let mut lines = Vec::new();
    for m in rules {
        let names: Vec<String> = m.from.iter().map(|r| short_name(r)).collect();
        let dr = &m.rule;
        lines.push(format!(
            "DestinationRule: {} for {:?}",
            names.join(" + "),
            dr.host
        ));
        if m.from.len() > 1 {
            lines.push(format!(
                "{INDENT}Merged as Istio merges rules for one host: {} created first gives the traffic policy, the others add subsets",
                names[0]
            ));
            for ignored in &m.ignored {
                lines.push(format!(
                    "{INDENT}Ignored: {ignored} (an older rule defines it)"
                ));
            }
        }
        if let Some(selector) = &dr.workload_selector {
            lines.push(format!(
                "{INDENT}Only for workloads with {}",
                labels_text(&selector.match_labels)
            ));
        }
        lines.push(format!(
            "{INDENT}Traffic policy: {}",
            dr.traffic_policy
                .as_ref()
                .map_or("none".into(), policy_summary)
        ));
        for subset in &dr.subsets {
            let selected = service
                .endpoints
                .iter()
                .filter(|e| types::labels_match(&subset.labels, &e.labels))
                .count();
            let mut line = format!(
                "{INDENT}Subset {} ({}): ",
                subset.name,
                labels_text(&subset.labels)
            );
            line.push_str(&if selected == 0 {
                "no endpoints: requests routed to it get 503s".into()
            } else {
                plural(selected, "endpoint")
            });
            if let Some(policy) = &subset.traffic_policy {
                line.push_str(&format!("; own traffic policy: {}", policy_summary(policy)));
            }
            lines.push(line);
        }
    }
    if let [first, _, ..] = rules {
        let names: Vec<String> = first.from.iter().map(|r| short_name(r)).collect();
        lines.push(format!(
            "{INDENT}Only {} applies: Istio uses one DestinationRule per host (own namespace first, then exact host, then the longest wildcard)",
            names.join(" + ")
        ));
    }
    lines
}

pub fn lb_phrase(lb: &LbPolicy) -> String {
    match lb {
        LbPolicy::RoundRobin => "round robin".into(),
        LbPolicy::LeastRequest => "least request".into(),
        LbPolicy::Random => "random".into(),
        LbPolicy::Passthrough => "passthrough to the address the caller dialled".into(),
        LbPolicy::ConsistentHash(key) => format!(
            "consistent hash on {}",
            match key {
                HashKey::Header(h) => format!("header {h}"),
                HashKey::Cookie(c) => format!("cookie {}", c.name),
                HashKey::SourceIp => "source IP".into(),
                HashKey::QueryParameter(q) => format!("query parameter {q}"),
            }
        ),
    }
}

/// One line: load balancer, connection pool, outlier detection, TLS, port-level settings.
fn policy_summary(policy: &TrafficPolicy) -> String {
    let (lb, _, outlier) = effective_policy(Some(policy), None, 0);
    let mut parts = Vec::new();
    if policy.load_balancer.is_some() {
        parts.push(format!("load balancer {}", lb_phrase(&lb)));
    }
    if let Some(pool) = &policy.connection_pool {
        let mut limits = Vec::new();
        let mut limit = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                limits.push(format!("{name} {v}"));
            }
        };
        let tcp = pool.tcp.as_ref();
        let http = pool.http.as_ref();
        let text = |v: Option<i32>| v.map(|v| v.to_string());
        limit("maxConnections", text(tcp.and_then(|t| t.max_connections)));
        let connect = tcp.and_then(|t| t.connect_timeout);
        limit("connectTimeout", connect.map(|d| d.to_string()));
        let pending = http.and_then(|h| h.http1_max_pending_requests);
        limit("http1MaxPendingRequests", text(pending));
        limit(
            "http2MaxRequests",
            text(http.and_then(|h| h.http2_max_requests)),
        );
        let per_connection = http.and_then(|h| h.max_requests_per_connection);
        limit("maxRequestsPerConnection", text(per_connection));
        limit("maxRetries", text(http.and_then(|h| h.max_retries)));
        parts.push(format!("connection pool ({})", limits.join(", ")));
    }
    if let Some(o) = outlier {
        let errors: Vec<String> = [
            (o.consecutive_5xx, "5xx"),
            (o.consecutive_gateway, "gateway errors"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} consecutive {what}"))
        .collect();
        parts.push(format!(
            "outlier detection (eject after {} for {}s, checked every {}s, at most {}% of endpoints)",
            errors.join(" or "),
            o.base_ejection_time.as_secs_f64(),
            o.interval.as_secs_f64(),
            o.max_ejection_percent
        ));
    }
    if let Some(mode) = policy.tls.as_ref().and_then(|t| t.mode.as_ref()) {
        parts.push(format!("TLS {mode}"));
    }
    if !policy.port_level_settings.is_empty() {
        let ports: Vec<String> = policy
            .port_level_settings
            .iter()
            .filter_map(|p| p.port.map(|p| p.number.to_string()))
            .collect();
        parts.push(format!("port-level settings for {}", ports.join(", ")));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join("; ")
    }
}
