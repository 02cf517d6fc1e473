//! `DestinationRule`: host, subsets, exportTo, and the traffic policy, whose checks run the
//! same at the top level, in each subset and in each port-level setting.

use super::common::{
    at_most_one, duration, export_to, int_percent, invalid, json_duration, labels, min_duration,
    non_negative, one_of, percent, port, workload_selector, ExportScope, Path, Report,
};
use super::names::{fqdn, is_ip, is_istio_label, wildcard_domain};
use crate::types::{
    ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};
use crate::validate::Severity;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub fn validate(r: &mut Report, dr: &DestinationRule, namespace: &str) {
    let spec = Path::spec();
    if dr.host.is_empty() {
        r.required(&spec.field("host"))
            .with_hint("name the service this rule applies to, e.g. host: reviews");
    } else if let Err(e) = wildcard_domain(&dr.host) {
        r.error(&spec.field("host"), invalid(&dr.host, e));
    }
    if let Some(policy) = &dr.traffic_policy {
        traffic_policy(r, &spec.field("trafficPolicy"), policy);
    }
    let mut names = BTreeSet::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let at = spec.field("subsets").index(i);
        if subset.name.is_empty() {
            r.required(&at.field("name"))
                .with_hint("routes select a subset by its name");
        } else if !is_istio_label(&subset.name) {
            r.error(
                &at.field("name"),
                invalid(
                    &subset.name,
                    "subset name is invalid (must be a DNS-1123 label)",
                ),
            );
        } else if !names.insert(subset.name.as_str()) {
            r.error(
                &at.field("name"),
                format!("Duplicate value: {:?}: duplicate subset names", subset.name),
            );
        }
        labels(r, &at.field("labels"), &subset.labels, Severity::Error);
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(r, &at.field("trafficPolicy"), policy);
        }
    }
    let scope = if dr.workload_selector.is_some() {
        ExportScope::SelectorRule
    } else {
        ExportScope::Plain
    };
    export_to(r, &spec.field("exportTo"), namespace, &dr.export_to, scope);
    if let Some(selector) = &dr.workload_selector {
        workload_selector(
            r,
            &spec.field("workloadSelector").field("matchLabels"),
            &selector.match_labels,
        );
    }
}

/// The checks for one traffic policy, at `path` (`spec.trafficPolicy` or
/// `spec.subsets[1].trafficPolicy`).
pub fn traffic_policy(r: &mut Report, path: &Path, tp: &TrafficPolicy) {
    let empty = tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none();
    if empty {
        r.error(path, "traffic policy must have at least one field")
            .with_hint("remove the empty trafficPolicy");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        r.error(path, "tunnel and proxyProtocol must not be set together");
    }
    policy_parts(
        r,
        path,
        &tp.load_balancer,
        &tp.connection_pool,
        &tp.outlier_detection,
        &tp.tls,
    );
    let mut ports = BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let at = path.field("portLevelSettings").index(i);
        match pl.port {
            None => {
                r.required(&at.field("port"))
                    .with_hint("portTrafficPolicy must have valid port: port: {number: 443}");
            }
            Some(p) => {
                let number_at = at.field("port").field("number");
                // Istio accepts these, but a setting for a port that cannot exist, or a second
                // setting for the same port, never applies.
                if !(1..=65535).contains(&p.number) {
                    r.warning(
                        &number_at,
                        invalid(
                            p.number,
                            "port must be between 1-65535; this setting never applies",
                        ),
                    );
                } else if !ports.insert(p.number) {
                    r.warning(&number_at, format!("Duplicate value: {}: only the first port-level setting for a port applies", p.number));
                }
            }
        }
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            r.error(&at, "port traffic policy must have at least one field");
        } else {
            policy_parts(
                r,
                &at,
                &pl.load_balancer,
                &pl.connection_pool,
                &pl.outlier_detection,
                &pl.tls,
            );
        }
    }
    if let Some(tunnel) = &tp.tunnel {
        self::tunnel(r, &path.field("tunnel"), tunnel);
    }
    if let Some(version) = tp
        .proxy_protocol
        .as_ref()
        .and_then(|p| p.get("version"))
        .and_then(Value::as_str)
    {
        one_of(
            r,
            &path.field("proxyProtocol").field("version"),
            version,
            &["V1", "V2"],
        );
    }
}

/// The settings a whole policy and a port-level policy share.
fn policy_parts(
    r: &mut Report,
    path: &Path,
    lb: &Option<LoadBalancerSettings>,
    pool: &Option<ConnectionPoolSettings>,
    outlier: &Option<OutlierDetection>,
    tls: &Option<ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        load_balancer(r, &path.field("loadBalancer"), lb, outlier.is_some());
    }
    if let Some(pool) = pool {
        connection_pool(r, &path.field("connectionPool"), pool);
    }
    if let Some(od) = outlier {
        outlier_detection(r, &path.field("outlierDetection"), od);
    }
    if let Some(tls) = tls {
        client_tls(r, &path.field("tls"), tls);
    }
}

fn load_balancer(r: &mut Report, path: &Path, lb: &LoadBalancerSettings, has_outlier: bool) {
    let kinds = [
        ("simple", lb.simple.is_some()),
        ("consistentHash", lb.consistent_hash.is_some()),
    ];
    at_most_one(r, path, &kinds);
    if let Some(ch) = &lb.consistent_hash {
        consistent_hash(r, &path.field("consistentHash"), ch);
    }
    if let Some(locality) = &lb.locality_lb_setting {
        locality_lb(r, &path.field("localityLbSetting"), locality, has_outlier);
    }
    if let Some(d) = lb.warmup_duration_secs {
        duration(r, &path.field("warmupDurationSecs"), d);
    }
    if let Some(warmup) = &lb.warmup {
        let at = path.field("warmup");
        match warmup.duration {
            None => {
                r.required(&at.field("duration"))
                    .with_hint("warmup needs a duration, e.g. duration: 60s");
            }
            Some(d) => {
                min_duration(r, &at.field("duration"), d);
            }
        }
        if let Some(p) = warmup.minimum_percent {
            percent(r, &at.field("minimumPercent"), p);
        }
        // The CRD's bound: aggression 1 is linear, below 1 front-loads traffic, 0 is the floor.
        if let Some(a) = warmup.aggression.filter(|a| *a < 0.0 || a.is_nan()) {
            r.error(
                &at.field("aggression"),
                invalid(a, "should be greater than or equal to 0"),
            )
            .with_hint("1.0 ramps traffic linearly; larger values hold new endpoints back longer");
        }
    }
}

fn consistent_hash(r: &mut Report, path: &Path, ch: &ConsistentHashLb) {
    let keys = [
        ("httpHeaderName", ch.http_header_name.is_some()),
        ("httpCookie", ch.http_cookie.is_some()),
        ("useSourceIp", ch.use_source_ip.is_some()),
        (
            "httpQueryParameterName",
            ch.http_query_parameter_name.is_some(),
        ),
    ];
    if at_most_one(r, path, &keys) == 0 {
        r.warning(path, "consistentHash without a hash key")
            .with_hint(
                "set one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            );
    }
    if let Some(cookie) = &ch.http_cookie {
        if cookie.name.is_empty() {
            r.required(&path.field("httpCookie").field("name"))
                .with_hint("name required for HttpCookie");
        }
    }
    let algorithms = [
        ("ringHash", ch.ring_hash.is_some()),
        ("maglev", ch.maglev.is_some()),
    ];
    at_most_one(r, path, &algorithms);
    if ch.minimum_ring_size.is_some_and(|n| n != 0) {
        let at = path.field("minimumRingSize");
        r.warning(&at, "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead");
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            r.error(
                &at,
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
    }
    if let Some(maglev) = &ch.maglev {
        let at = path.field("maglev").field("tableSize");
        let size = maglev.get("tableSize").and_then(Value::as_u64).unwrap_or(0);
        if size == 0 {
            r.error(&at, "tableSize must be set for maglev");
        } else if size >= 5_000_011 {
            r.error(
                &at,
                invalid(size, "tableSize must be less than 5000011 for maglev"),
            );
        } else if !is_prime(size) {
            r.error(
                &at,
                invalid(size, "tableSize must be a prime number for maglev"),
            )
            .with_hint("Envoy's default is 65537");
        }
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|f| f * f <= n)
            .all(|f| !n.is_multiple_of(f))
}

/// Locality load balancing, kept as JSON by the types: distribute weights add up to 100,
/// failover names regions only, and failover needs outlier detection to notice failures.
fn locality_lb(r: &mut Report, path: &Path, setting: &Value, has_outlier: bool) {
    let list = |field: &str| {
        setting
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let (distribute, failover, priority) = (
        list("distribute"),
        list("failover"),
        list("failoverPriority"),
    );
    if !distribute.is_empty() && !failover.is_empty() {
        r.error(
            path,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    const TOPOLOGY: [&str; 3] = [
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.istio.io/subzone",
    ];
    if !failover.is_empty() {
        if let Some(label) = priority
            .iter()
            .filter_map(Value::as_str)
            .find(|l| TOPOLOGY.contains(l))
        {
            r.error(&path.field("failoverPriority"), format!("can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"));
        }
    }
    for (i, entry) in distribute.iter().enumerate() {
        let at = path.field("distribute").index(i).field("to");
        let weights: BTreeMap<String, u64> = entry
            .get("to")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        if let Some((locality, w)) = weights.iter().find(|(_, w)| !(1..=100).contains(*w)) {
            r.error(
                &at.key(locality),
                invalid(w, "locality weight must be in range [1, 100]"),
            );
        } else if weights.values().sum::<u64>() != 100 {
            r.error(
                &at,
                format!(
                    "total locality weight {} != 100",
                    weights.values().sum::<u64>()
                ),
            );
        }
    }
    if (!failover.is_empty() || !priority.is_empty()) && !has_outlier {
        r.warning(path, "outlier detection policy must be provided for failover")
            .with_hint("without outlierDetection no endpoint is ever marked unhealthy, so failover never happens");
    }
    for (i, entry) in failover.iter().enumerate() {
        let at = path.field("failover").index(i);
        let from = entry
            .get("from")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let to = entry.get("to").and_then(Value::as_str).unwrap_or_default();
        if from == to {
            r.error(
                &at,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            r.error(&at, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            r.error(
                &at,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

fn connection_pool(r: &mut Report, path: &Path, pool: &ConnectionPoolSettings) {
    if pool.http.is_none() && pool.tcp.is_none() {
        r.error(path, "connection pool must have at least one field");
    }
    if let Some(http) = &pool.http {
        let at = path.field("http");
        non_negative(
            r,
            &at.field("http1MaxPendingRequests"),
            http.http1_max_pending_requests,
        );
        non_negative(r, &at.field("http2MaxRequests"), http.http2_max_requests);
        non_negative(
            r,
            &at.field("maxRequestsPerConnection"),
            http.max_requests_per_connection,
        );
        non_negative(r, &at.field("maxRetries"), http.max_retries);
        non_negative(
            r,
            &at.field("maxConcurrentStreams"),
            http.max_concurrent_streams,
        );
        if let Some(d) = http.idle_timeout {
            duration(r, &at.field("idleTimeout"), d);
        }
        if let Some(policy) = &http.h2_upgrade_policy {
            one_of(
                r,
                &at.field("h2UpgradePolicy"),
                policy,
                &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
            );
            if policy == "UPGRADE" && http.use_client_protocol == Some(true) {
                r.error(
                    &at.field("useClientProtocol"),
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                );
            }
        }
        if let Some(ka) = &http.http2_keep_alive {
            for field in ["interval", "timeout"] {
                json_duration(r, &at.field("http2KeepAlive").field(field), ka.get(field));
            }
        }
    }
    if let Some(tcp) = &pool.tcp {
        let at = path.field("tcp");
        non_negative(r, &at.field("maxConnections"), tcp.max_connections);
        for (field, d) in [
            ("connectTimeout", tcp.connect_timeout),
            ("maxConnectionDuration", tcp.max_connection_duration),
            ("idleTimeout", tcp.idle_timeout),
        ] {
            if let Some(d) = d {
                duration(r, &at.field(field), d);
            }
        }
        if let Some(ka) = &tcp.tcp_keepalive {
            for field in ["time", "interval"] {
                json_duration(r, &at.field("tcpKeepalive").field(field), ka.get(field));
            }
        }
    }
}

fn outlier_detection(r: &mut Report, path: &Path, od: &OutlierDetection) {
    for (field, d) in [
        ("baseEjectionTime", od.base_ejection_time),
        ("interval", od.interval),
    ] {
        if let Some(d) = d {
            duration(r, &path.field(field), d);
        }
    }
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        r.warning(&path.field("consecutiveErrors"), "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead");
    }
    if od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
        && od.split_external_local_origin_errors != Some(true)
    {
        r.error(&path.field("consecutiveLocalOriginFailures"), "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false")
            .with_hint("set splitExternalLocalOriginErrors: true");
    }
    int_percent(
        r,
        &path.field("maxEjectionPercent"),
        od.max_ejection_percent.map(i64::from),
    );
    int_percent(
        r,
        &path.field("minHealthPercent"),
        od.min_health_percent.map(i64::from),
    );
}

fn client_tls(r: &mut Report, path: &Path, tls: &ClientTlsSettings) {
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    one_of(
        r,
        &path.field("mode"),
        mode,
        &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"],
    );
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let sans = !tls.subject_alt_names.is_empty();
    if tls.insecure_skip_verify == Some(true) {
        if mode == "SIMPLE" && (set(&tls.ca_certificates) || set(&tls.credential_name) || sans) {
            r.error(path, "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true");
        }
        if mode == "MUTUAL" && (set(&tls.ca_certificates) || sans) {
            r.error(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true");
        }
    }
    if matches!(mode, "SIMPLE" | "MUTUAL") && set(&tls.credential_name) {
        if set(&tls.client_certificate) || set(&tls.ca_certificates) || set(&tls.private_key) {
            r.error(path, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set")
                .with_hint("the credential (a Secret) already holds the certificates");
        }
        return;
    }
    if mode == "MUTUAL" {
        if !set(&tls.client_certificate) {
            r.error(
                &path.field("clientCertificate"),
                "client certificate required for mutual tls",
            )
            .with_hint("set clientCertificate and privateKey, or credentialName");
        }
        if !set(&tls.private_key) {
            r.error(
                &path.field("privateKey"),
                "private key required for mutual tls",
            );
        }
    }
}

fn tunnel(r: &mut Report, path: &Path, tunnel: &Value) {
    if let Some(protocol) = tunnel
        .get("protocol")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    {
        if protocol != "CONNECT" && protocol != "POST" {
            r.error(
                &path.field("protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
    }
    let host = tunnel
        .get("targetHost")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if host.is_empty() {
        r.required(&path.field("targetHost"));
    } else if fqdn(host).is_err() && !is_ip(host) {
        r.error(
            &path.field("targetHost"),
            invalid(host, "tunnel target host must be valid FQDN or IP address"),
        );
    }
    match tunnel.get("targetPort").and_then(Value::as_u64) {
        None => {
            r.required(&path.field("targetPort"));
        }
        Some(p) => port(
            r,
            &path.field("targetPort"),
            u32::try_from(p).unwrap_or(u32::MAX),
        ),
    }
}

#[cfg(test)]
mod tests;
