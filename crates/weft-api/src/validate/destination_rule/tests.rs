//! DestinationRule rules, on small fixtures.

use crate::validate::test_support::*;

fn dr(body: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: prod\nspec:\n{body}")
}

/// A rule for `reviews` whose top-level trafficPolicy is `policy` (flow YAML).
fn policy(policy: &str) -> String {
    dr(&format!("  host: reviews\n  trafficPolicy: {policy}\n"))
}

#[test]
fn a_typical_rule_is_clean() {
    assert_clean(&dr("  host: reviews.prod.svc.cluster.local\n  trafficPolicy:\n    loadBalancer: {simple: LEAST_REQUEST}\n    connectionPool:\n      tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}\n      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, idleTimeout: 1h}\n    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 50}\n    tls: {mode: ISTIO_MUTUAL}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}}\n"));
}

#[test]
fn host_and_subsets() {
    assert_error(
        &dr("  subsets: [{name: v1}]\n"),
        "spec.host",
        "Required value",
    );
    assert_error(&dr("  host: 'a b'\n"), "spec.host", "invalid");
    assert_error(
        &dr("  host: r\n  subsets: [{labels: {version: v1}}]\n"),
        "spec.subsets[0].name",
        "Required value",
    );
    assert_error(
        &dr("  host: r\n  subsets: [{name: v1.0}]\n"),
        "spec.subsets[0].name",
        "subset name is invalid",
    );
    assert_error(
        &dr("  host: r\n  subsets: [{name: v1}, {name: v1}]\n"),
        "spec.subsets[1].name",
        "Duplicate value: \"v1\"",
    );
    assert_error(
        &dr("  host: r\n  subsets: [{name: v1, labels: {version: 'v 1'}}]\n"),
        "spec.subsets[0].labels[version]",
        "invalid label value",
    );
}

#[test]
fn the_same_policy_checks_run_in_subsets_and_port_level_settings() {
    let bad = "{outlierDetection: {maxEjectionPercent: 101}}";
    assert_error(
        &policy(bad),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "0..100",
    );
    assert_error(
        &dr(&format!(
            "  host: r\n  subsets: [{{name: v1, trafficPolicy: {bad}}}]\n"
        )),
        "spec.subsets[0].trafficPolicy.outlierDetection.maxEjectionPercent",
        "0..100",
    );
    assert_error(
        &policy("{portLevelSettings: [{port: {number: 80}, outlierDetection: {maxEjectionPercent: 101}}]}"),
        "spec.trafficPolicy.portLevelSettings[0].outlierDetection.maxEjectionPercent",
        "0..100",
    );
    assert_error(
        &dr("  host: r\n  subsets:\n  - name: v1\n    trafficPolicy:\n      portLevelSettings: [{port: {number: 80}, connectionPool: {tcp: {connectTimeout: 0s}}}]\n"),
        "spec.subsets[0].trafficPolicy.portLevelSettings[0].connectionPool.tcp.connectTimeout",
        "greater than 1ms",
    );
}

#[test]
fn port_level_settings() {
    assert_error(
        &policy("{portLevelSettings: [{tls: {mode: SIMPLE}}]}"),
        "spec.trafficPolicy.portLevelSettings[0].port",
        "Required value",
    );
    assert_error(
        &policy("{portLevelSettings: [{port: {number: 80}}]}"),
        "spec.trafficPolicy.portLevelSettings[0]",
        "must have at least one field",
    );
    assert_warning(
        &policy("{portLevelSettings: [{port: {number: 80}, tls: {mode: SIMPLE}}, {port: {number: 80}, tls: {mode: DISABLE}}]}"),
        "spec.trafficPolicy.portLevelSettings[1].port.number",
        "Duplicate value: 80",
    );
    assert_warning(
        &policy("{portLevelSettings: [{port: {number: 70000}, tls: {mode: SIMPLE}}]}"),
        "spec.trafficPolicy.portLevelSettings[0].port.number",
        "port must be between 1-65535",
    );
}

#[test]
fn load_balancer() {
    assert_error(
        &policy("{}"),
        "spec.trafficPolicy",
        "must have at least one field",
    );
    assert_error(
        &policy("{loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}"),
        "spec.trafficPolicy.loadBalancer",
        "only one of simple or consistentHash",
    );
    assert_error(
        &policy("{loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x-user}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "only one of httpHeaderName",
    );
    assert_warning(
        &policy("{loadBalancer: {consistentHash: {}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "without a hash key",
    );
    assert_error(
        &policy("{loadBalancer: {consistentHash: {httpCookie: {ttl: 10s}}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "Required value",
    );
    assert_error(
        &policy("{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "prime",
    );
    assert_clean(&policy(
        "{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}}",
    ));
    assert_error(&policy("{loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {}, maglev: {tableSize: 7}}}}"), "spec.trafficPolicy.loadBalancer.consistentHash", "only one of ringHash or maglev");
    assert_warning(
        &policy("{loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 1024}}}"),
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        "deprecated",
    );
}

#[test]
fn warmup() {
    let w = |warmup: &str| {
        policy(&format!(
            "{{loadBalancer: {{simple: ROUND_ROBIN, warmup: {warmup}}}}}"
        ))
    };
    assert_clean(&w("{duration: 60s, minimumPercent: 10, aggression: 0.5}"));
    assert_error(
        &w("{minimumPercent: 10}"),
        "spec.trafficPolicy.loadBalancer.warmup.duration",
        "Required value",
    );
    assert_error(
        &w("{duration: 60s, minimumPercent: 100.5}"),
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        "Invalid value",
    );
    assert_error(
        &w("{duration: 60s, aggression: -1}"),
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
        "Invalid value",
    );
    assert_error(
        &w("{duration: 0s}"),
        "spec.trafficPolicy.loadBalancer.warmup.duration",
        "greater than 1ms",
    );
}

#[test]
fn locality_load_balancing() {
    let l = |setting: &str, outlier: &str| {
        policy(&format!(
            "{{loadBalancer: {{simple: ROUND_ROBIN, localityLbSetting: {setting}}}{outlier}}}"
        ))
    };
    let od = ", outlierDetection: {consecutive5xxErrors: 5}";
    assert_clean(&l("{enabled: true, distribute: [{from: us-west/zone1/*, to: {us-west/zone1/*: 80, us-west/zone2/*: 20}}]}", ""));
    assert_error(
        &l("{distribute: [{from: a/*, to: {a/*: 60, b/*: 30}}]}", ""),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "total locality weight 90 != 100",
    );
    assert_error(
        &l("{failover: [{from: us-east, to: us-east}]}", od),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        "different regions",
    );
    assert_error(
        &l(
            "{distribute: [{from: a/*, to: {a/*: 100}}], failover: [{from: a, to: b}]}",
            od,
        ),
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "can not simultaneously specify",
    );
    assert_warning(
        &l("{failover: [{from: us-east, to: us-west}]}", ""),
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "outlier detection policy must be provided",
    );
}

#[test]
fn connection_pool_and_outlier_detection() {
    assert_error(
        &policy("{connectionPool: {}}"),
        "spec.trafficPolicy.connectionPool",
        "at least one field",
    );
    assert_error(
        &policy("{connectionPool: {tcp: {maxConnections: -1}}}"),
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "non-negative",
    );
    for field in [
        "http1MaxPendingRequests",
        "http2MaxRequests",
        "maxRequestsPerConnection",
        "maxRetries",
    ] {
        assert_error(
            &policy(&format!("{{connectionPool: {{http: {{{field}: -1}}}}}}")),
            &format!("spec.trafficPolicy.connectionPool.http.{field}"),
            "non-negative",
        );
    }
    assert_error(
        &policy("{connectionPool: {http: {idleTimeout: 0s}}}"),
        "spec.trafficPolicy.connectionPool.http.idleTimeout",
        "greater than 1ms",
    );
    assert_error(
        &policy("{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}"),
        "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        "must not be true",
    );
    assert_error(
        &policy("{connectionPool: {http: {http2KeepAlive: {interval: 0s}}}}"),
        "spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval",
        "greater than 1ms",
    );
    assert_error(
        &policy("{outlierDetection: {interval: 0s}}"),
        "spec.trafficPolicy.outlierDetection.interval",
        "greater than 1ms",
    );
    assert_error(
        &policy("{outlierDetection: {baseEjectionTime: 0.5ms}}"),
        "spec.trafficPolicy.outlierDetection.baseEjectionTime",
        "greater than 1ms",
    );
    assert_error(
        &policy("{outlierDetection: {minHealthPercent: -1}}"),
        "spec.trafficPolicy.outlierDetection.minHealthPercent",
        "0..100",
    );
    assert_error(
        &policy("{outlierDetection: {consecutiveLocalOriginFailures: 3}}"),
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        "split external local origin errors",
    );
    assert_warning(
        &policy("{outlierDetection: {consecutiveErrors: 3}}"),
        "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        "deprecated",
    );
}

#[test]
fn client_tls() {
    assert_error(
        &policy("{tls: {mode: STRICT}}"),
        "spec.trafficPolicy.tls.mode",
        "Unsupported value: \"STRICT\"",
    );
    assert_error(
        &policy("{tls: {mode: MUTUAL}}"),
        "spec.trafficPolicy.tls.clientCertificate",
        "client certificate required",
    );
    assert_clean(&policy(
        "{tls: {mode: MUTUAL, credentialName: client-cert}}",
    ));
    assert_error(
        &policy("{tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}}"),
        "spec.trafficPolicy.tls",
        "If credentialName is set",
    );
    assert_error(
        &policy("{tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}}"),
        "spec.trafficPolicy.tls",
        "InsecureSkipVerify",
    );
}

#[test]
fn tunnel_and_proxy_protocol() {
    assert_clean(&policy(
        "{tunnel: {protocol: CONNECT, targetHost: proxy.example.com, targetPort: 3128}}",
    ));
    assert_error(
        &policy("{tunnel: {protocol: GET, targetHost: 10.0.0.1, targetPort: 0}}"),
        "spec.trafficPolicy.tunnel.protocol",
        "CONNECT",
    );
    assert_error(
        &policy("{tunnel: {targetHost: 10.0.0.1, targetPort: 0}}"),
        "spec.trafficPolicy.tunnel.targetPort",
        "port must be between 1-65535",
    );
    assert_error(
        &policy("{tunnel: {targetHost: x, targetPort: 1}, proxyProtocol: {version: V1}}"),
        "spec.trafficPolicy",
        "tunnel and proxyProtocol must not be set together",
    );
}

#[test]
fn export_to_with_a_workload_selector() {
    let with = |list: &str| {
        dr(&format!(
            "  host: r\n  workloadSelector: {{matchLabels: {{app: a}}}}\n  exportTo: {list}\n"
        ))
    };
    assert_clean(&with("['.']"));
    assert_error(
        &with("['*']"),
        "spec.exportTo",
        "cannot have exportTo beyond current namespace",
    );
    assert_error(
        &with("[prod, other]"),
        "spec.exportTo",
        "cannot have multiple entries",
    );
    assert_error(
        &dr("  host: r\n  workloadSelector: {matchLabels: {app: '*'}}\n"),
        "spec.workloadSelector.matchLabels[app]",
        "wildcard is not supported in selector",
    );
}
