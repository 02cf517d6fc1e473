//! `weft describe service NAME`: the routes, subsets and policies that apply to a service.

mod routing;
mod service;

use super::{decode_all, status_error, Target};
use anyhow::bail;
use routing::virtual_service_lines;
use serde::Serialize;
use service::{destination_rule_lines, endpoint_lines, service_lines};
use std::collections::BTreeMap;
use weft_api::types;
use weft_api::{host, scope, Resource, Spec};
use weft_discovery::admin::GetRequest;
use weft_proxy::model::registry::{Registry, ServiceInfo};

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// Only `service` (or `svc`) for now.
    what: String,
    name: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
}

/// Proxies register their own workload as a WorkloadEntry carrying this annotation.
const ANNOUNCED_BY: &str = "weft.dev/announced-by";

const INDENT: &str = "   ";

pub async fn run(target: &Target, args: DescribeArgs) -> anyhow::Result<()> {
    if !matches!(
        args.what.to_ascii_lowercase().as_str(),
        "service" | "services" | "svc"
    ) {
        bail!(
            "cannot describe {:?}: weft describe supports service (svc), e.g. `weft describe svc reviews -n default`",
            args.what
        );
    }
    let mut client = target.connect().await?;
    let resources = client
        .get(GetRequest::default())
        .await
        .map_err(status_error)?
        .into_inner()
        .resources;
    let resources = decode_all(&resources)?;
    println!(
        "{}",
        describe_service(&resources, &args.name, &args.namespace)?
    );
    Ok(())
}

/// The description of service `name` as callers in `namespace` see it.
pub fn describe_service(
    resources: &[Resource],
    name: &str,
    namespace: &str,
) -> anyhow::Result<String> {
    let hostname = host::fqdn(name, namespace);
    let registry = Registry::build(resources);
    let declaring = |s: &ServiceInfo| resources.iter().find(|r| r.display_name() == s.declared_by);
    // The Kubernetes Service first, then a ServiceEntry in the namespace, then one elsewhere.
    let found = registry
        .services
        .iter()
        .filter(|s| s.hostname == hostname)
        .filter_map(|s| Some((s, declaring(s)?)))
        .filter(|(_, r)| scope::exported_to(r, namespace))
        .min_by_key(|(_, r)| {
            (
                r.kind != weft_api::Kind::Service,
                r.namespace() != namespace,
            )
        });
    let Some((service, declared)) = found else {
        bail!("service {name:?} not found in namespace {namespace:?} (weft get svc -A lists services)");
    };
    // A rule with a workloadSelector is some pods' only, not the service's.
    let visible: Vec<&Resource> = resources
        .iter()
        .filter(|r| scope::exported_to(r, namespace))
        .filter(|r| !matches!(&r.spec, Spec::DestinationRule(dr) if dr.workload_selector.is_some()))
        .collect();
    let merged = weft_api::destination_rules::merge(visible);
    let rules = weft_api::destination_rules::applicable(&merged, &hostname, namespace);
    let mut lines = service_lines(service, declared);
    lines.extend(endpoint_lines(resources, service, declared));
    lines.extend(destination_rule_lines(service, &rules));
    lines.extend(virtual_service_lines(resources, service, namespace, &rules));
    lines.extend(sidecar_lines(resources, service, namespace));
    Ok(lines.join("\n"))
}

/// `app=reviews,version=v1`.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// `Service default/reviews` → `reviews.default`, as istioctl names config.
fn short_name(r: &Resource) -> String {
    format!("{}.{}", r.name(), r.namespace())
}

/// An API enum as Istio spells it (`MESH_EXTERNAL`).
fn api_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn sidecar_lines(resources: &[Resource], service: &ServiceInfo, namespace: &str) -> Vec<String> {
    let sidecars: Vec<(&Resource, &types::Sidecar)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Sidecar(sc) => Some((r, sc)),
            _ => None,
        })
        .filter(|(r, _)| r.namespace() == namespace || r.namespace() == scope::ROOT_NAMESPACE)
        .collect();
    if sidecars.is_empty() {
        return vec![format!(
            "Sidecars: none in {namespace} or {}",
            scope::ROOT_NAMESPACE
        )];
    }
    let mut lines = vec!["Sidecars that may limit who sees it:".to_string()];
    for (r, sc) in sidecars {
        let root = r.namespace() == scope::ROOT_NAMESPACE;
        let applies_to = match &sc.workload_selector {
            Some(s) => format!("workloads with {}", labels_text(&s.labels)),
            None if root => "mesh-wide default".into(),
            None => "namespace default".into(),
        };
        // The root default's `.` means each caller's own namespace: judge it for callers
        // in the namespace asked about.
        let callers = if root { namespace } else { r.namespace() };
        let hosts = [service.hostname.clone()];
        let verdict = if scope::egress_admits(sc, callers, &service.namespace, &hosts) {
            "admits it"
        } else {
            "hides it"
        };
        let egress: Vec<&str> = sc
            .egress
            .iter()
            .flat_map(|e| e.hosts.iter().map(String::as_str))
            .collect();
        let egress = if egress.is_empty() {
            "no egress hosts".to_string()
        } else {
            format!("egress {}", egress.join(", "))
        };
        lines.push(format!(
            "{INDENT}{} ({applies_to}): {egress}: {verdict} for callers in {callers}",
            r.display_name()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BOOKINFO: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: web, port: 9080, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [pay.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.0.11, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v2-127-0-0-12
  namespace: default
  annotations: {weft.dev/announced-by: reviews-v2.default}
spec: {address: 127.0.0.12, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 100}, http: {http1MaxPendingRequests: 10}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 30s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hidden, namespace: other}
spec:
  host: reviews.default.svc.cluster.local
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}
    fault: {abort: {httpStatus: 500, percentage: {value: 10}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec: {egress: [{hosts: ["./*", "istio-system/*"]}]}
"#;

    fn describe(name: &str, namespace: &str) -> anyhow::Result<String> {
        let loaded = weft_api::load_str(BOOKINFO, Path::new("t.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        describe_service(&loaded.resources, name, namespace)
    }

    fn assert_lines(text: &str, expected: &[&str]) {
        for line in expected {
            assert!(
                text.lines().any(|l| l == *line),
                "no line {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn a_routed_service_shows_subsets_routes_and_sidecars() {
        let text = describe("reviews", "default").unwrap();
        assert_lines(
            &text,
            &[
                "Service: reviews.default",
                "   Addresses: 10.96.0.20",
                "   Hostname: reviews.default.svc.cluster.local",
                "   Port: http 9080/HTTP, targets port 9080",
                "   Selector: app=reviews",
                "Endpoints: 2",
                "   ADDRESS      PORTS   LABELS                   SOURCE",
                "   127.0.0.11   9080    app=reviews,version=v1   WorkloadEntry default/reviews-v1",
                "   127.0.0.12   9080    app=reviews,version=v2   announced by proxy reviews-v2.default",
                "DestinationRule: reviews.default for \"reviews\"",
                "   Subset v1 (version=v1): 1 endpoint",
                "   Subset v3 (version=v3): no endpoints: requests routed to it get 503s",
                "VirtualService: reviews.default",
                "   HTTP route 1 \"jason\": headers end-user=jason → reviews subset v2 100%",
                "   HTTP route 2: all requests → reviews subset v1 80%, reviews subset v2 20%",
                "      timeout 10s; retries 3 x 2s on 5xx; fault: abort 500 for 10%",
                "Sidecars that may limit who sees it:",
                "   Sidecar default/default (namespace default): egress ./*, istio-system/*: admits it for callers in default",
            ],
        );
        let policy = text.lines().find(|l| l.contains("Traffic policy")).unwrap();
        assert!(policy.contains("load balancer round robin"), "{policy}");
        assert!(policy.contains("maxConnections 100, http1MaxPendingRequests 10"));
        assert!(policy.contains("eject after 3 consecutive 5xx"), "{policy}");
        assert!(
            !text.contains("hidden.other"),
            "exportTo: . keeps it in other"
        );
        assert!(!text.contains("No VirtualService"));
    }

    #[test]
    fn an_unrouted_service_says_how_traffic_is_balanced() {
        let text = describe("ratings", "default").unwrap();
        assert_lines(
            &text,
            &[
                "   Port: web 9080/unknown, targets port 8080 (sniffed: name the port http-… or tcp-…, or set appProtocol)",
                "Endpoints: none: no WorkloadEntry in default has labels app=ratings (weft get we -n default lists them)",
                "DestinationRule: none (no subsets; least request, no circuit breaking, no outlier detection)",
                "No VirtualService: requests would be balanced by least request (Istio's default), but with no endpoints callers get 503s",
            ],
        );
    }

    #[test]
    fn service_entries_are_found_by_host() {
        let text = describe("pay.example.com", "default").unwrap();
        assert_lines(
            &text,
            &[
                "Service: pay.example.com",
                "   Declared by: ServiceEntry shop/payments (MESH_EXTERNAL, resolution DNS)",
                "   Port: tls 443/TLS, targets port 443",
                "   pay.example.com   443     -        ServiceEntry shop/payments",
                "No VirtualService: traffic is balanced across all 1 endpoint by least request (Istio's default), with Istio's default retries (2 attempts) and no timeout",
                "   Sidecar default/default (namespace default): egress ./*, istio-system/*: hides it for callers in default",
            ],
        );
    }

    #[test]
    fn unknown_services_say_how_to_list_them() {
        let e = describe("details", "default").unwrap_err();
        assert_eq!(
            e.to_string(),
            "service \"details\" not found in namespace \"default\" (weft get svc -A lists services)"
        );
    }

    #[tokio::test]
    async fn only_services_can_be_described() {
        let target = Target {
            control_plane: "http://127.0.0.1:1".into(),
            token: None,
            token_file: None,
            admin_cert: None,
        };
        let args = DescribeArgs {
            what: "pod".into(),
            name: "reviews".into(),
            namespace: "default".into(),
        };
        let e = run(&target, args).await.unwrap_err().to_string();
        assert!(
            e.starts_with("cannot describe \"pod\": weft describe supports service (svc)"),
            "{e}"
        );
    }
}
