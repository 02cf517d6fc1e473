//! `weft proxy-config routes|clusters|endpoints|listeners PROXY`: what one proxy was sent,
//! compiled here exactly as the proxy compiles it, in istioctl's columns; `secret`: the
//! certificate the proxy says it holds.

mod clusters;
mod listeners;
mod routes;
mod secrets;

use super::{decode_all, status_error, Target};
use crate::table::{self, Output};
use anyhow::Context;
use clusters::{cluster_rows, cluster_table, endpoint_rows, endpoint_table};
use listeners::{listener_rows, listener_table};
use routes::{route_rows, route_table};
use std::collections::BTreeMap;
use weft_api::types::OutboundTrafficMode;
use weft_discovery::admin::ProxyConfigRequest;
use weft_discovery::discovery::Hello;
use weft_proxy::model::Snapshot;
use weft_proxy::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Routes,
    Clusters,
    Endpoints,
    Listeners,
    Secret,
}

#[derive(clap::Args)]
pub struct ProxyConfigArgs {
    #[arg(value_enum)]
    section: Section,
    /// `name` or `name.namespace`, as `weft proxy-status` lists it.
    proxy: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

pub async fn run(target: &Target, args: ProxyConfigArgs) -> anyhow::Result<()> {
    let mut client = target.connect().await?;
    let response = client
        .proxy_config(ProxyConfigRequest {
            proxy: args.proxy.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let resources = decode_all(&response.resources)
        .with_context(|| format!("the config sent to {} cannot be read", args.proxy))?;
    if args.section == Section::Secret {
        let sent: Vec<(&str, &weft_api::types::Secret)> = resources
            .iter()
            .filter_map(|r| match &r.spec {
                weft_api::Spec::Secret(s) => Some((r.name(), s)),
                _ => None,
            })
            .collect();
        let rows = secrets::secret_rows(
            &response.certificate_chain,
            &response.root_cert,
            &sent,
            std::time::SystemTime::now(),
        )
        .with_context(|| format!("the certificate {} holds cannot be read", args.proxy))?;
        if response.certificate_chain.is_empty() {
            eprintln!(
                "warning: {} holds no workload certificate (it follows the plaintext port, or has not reported one yet)",
                args.proxy
            );
        }
        return table::print(args.output, &rows, || secrets::secret_table(&rows));
    }
    let snapshot = compile_for(&args.proxy, response.identity, resources)?;
    match args.section {
        Section::Clusters => {
            let rows = cluster_rows(&snapshot);
            table::print(args.output, &rows, || cluster_table(&rows))?;
        }
        Section::Endpoints => {
            let rows = endpoint_rows(&snapshot);
            table::print(args.output, &rows, || endpoint_table(&rows))?;
        }
        Section::Listeners => {
            let rows = listener_rows(&snapshot);
            table::print(args.output, &rows, || listener_table(&rows))?;
        }
        Section::Routes => {
            let rows = route_rows(&snapshot);
            table::print(args.output, &rows, || route_table(&rows))?;
        }
        Section::Secret => unreachable!("answered above"),
    }
    // After the table, so that the data on stdout stays parseable.
    for problem in unusable_clusters(&snapshot) {
        eprintln!("warning: {problem}");
    }
    Ok(())
}

/// Compiles what the control plane sent `proxy` as the proxy itself does.
pub fn compile_for(
    proxy: &str,
    identity: Option<Hello>,
    resources: Vec<weft_api::Resource>,
) -> anyhow::Result<Snapshot> {
    let identity = identity.unwrap_or_default();
    let workload = Workload {
        name: if identity.workload_name.is_empty() {
            identity.name.clone()
        } else {
            identity.workload_name
        },
        pod: identity.name,
        namespace: identity.namespace,
        labels: identity.labels.into_iter().collect(),
        service_account: identity.service_account,
        instance_ip: identity.address,
    };
    weft_proxy::model::compile(
        resources,
        &workload,
        OutboundTrafficMode::RegistryOnly,
        1,
        &BTreeMap::new(),
    )
    .map_err(|e| anyhow::anyhow!("the config sent to {proxy} does not compile: {e}"))
}

/// Clusters that answer every request with a 503, with the reason.
pub fn unusable_clusters(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .clusters
        .values()
        .filter_map(|c| {
            let reason = c.config.unusable.as_ref()?;
            Some(format!("{} cannot serve: {reason}", c.config.name))
        })
        .collect()
}

/// `DestinationRule default/reviews` → `reviews.default`, as istioctl names config.
fn short_name(display_name: &str) -> String {
    let path = display_name
        .split_once(' ')
        .map_or(display_name, |(_, p)| p);
    match path.split_once('/') {
        Some((namespace, name)) => format!("{name}.{namespace}"),
        None => path.to_string(),
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// The mesh the table tests compile, as the `productpage` proxy in `default` sees it.
#[cfg(test)]
mod fixture {
    use super::*;
    use std::path::Path;

    pub const MESH: &str = r#"
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
metadata: {name: mysql, namespace: default}
spec:
  selector: {app: mysql}
  clusterIP: 10.96.0.30
  ports: [{name: tcp-db, port: 3306}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: default}
spec:
  hosts: [pay.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.0.11, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 127.0.0.12, labels: {app: reviews, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: mysql, namespace: default}
spec: {address: 127.0.0.21, labels: {app: mysql}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /api}, method: {exact: GET}}, {uri: {regex: "/v[0-9]+/.*"}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"#;

    pub async fn snapshot(yaml: &str) -> Snapshot {
        let loaded = weft_api::load_str(yaml, Path::new("t.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let identity = Hello {
            name: "productpage".into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "productpage".to_string())].into(),
            ..Default::default()
        };
        compile_for("productpage.default", Some(identity), loaded.resources).unwrap()
    }

    /// A table's cells by row; cells are separated by at least three spaces.
    pub fn cells(table: &str) -> Vec<Vec<&str>> {
        table
            .lines()
            .map(|l| {
                l.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect()
    }

    pub fn has_row(table: &str, row: &[&str]) -> bool {
        cells(table).iter().any(|r| r == row)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{snapshot, MESH};
    use super::*;

    #[tokio::test]
    async fn undefined_subsets_are_reported() {
        let broken = MESH.replace("subset: v1}, weight: 80", "subset: v3}, weight: 80");
        let problems = unusable_clusters(&snapshot(&broken).await);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("outbound|9080|v3|reviews.default.svc.cluster.local"));
        assert!(problems[0].contains("subset \"v3\""));
    }

    #[test]
    fn proxy_names_read_like_istioctl() {
        assert_eq!(
            short_name("VirtualService default/reviews"),
            "reviews.default"
        );
        assert_eq!(short_name("BlackHoleCluster"), "BlackHoleCluster");
    }
}
