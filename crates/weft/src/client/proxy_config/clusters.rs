//! `proxy-config clusters` and `proxy-config endpoints`.

use super::{or_dash, short_name};
use crate::table;
use serde::Serialize;
use weft_proxy::model::registry::Discovery;
use weft_proxy::model::Snapshot;
use weft_proxy::upstream::config::LbPolicy;
use weft_proxy::upstream::ClusterConfig;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRow {
    service_fqdn: String,
    port: Option<u16>,
    subset: Option<String>,
    direction: Option<&'static str>,
    #[serde(rename = "type")]
    discovery_type: &'static str,
    destination_rule: Option<String>,
}

/// Envoy's cluster discovery type for a compiled cluster, as Istio would configure it.
fn discovery_type(config: &ClusterConfig) -> &'static str {
    if config.lb == LbPolicy::Passthrough {
        return "ORIGINAL_DST";
    }
    match config.discovery {
        Discovery::Static => "EDS",
        Discovery::Dns => "STRICT_DNS",
        Discovery::Passthrough => "ORIGINAL_DST",
    }
}

pub fn cluster_rows(snapshot: &Snapshot) -> Vec<ClusterRow> {
    let mut rows: Vec<ClusterRow> = snapshot
        .clusters
        .values()
        .map(|c| ClusterRow {
            service_fqdn: c.config.service.clone(),
            port: Some(c.config.port),
            subset: c.config.subset.clone(),
            direction: Some("outbound"),
            discovery_type: discovery_type(&c.config),
            // Several when Istio's merge of rules for one host made the cluster.
            destination_rule: (!c.config.destination_rules.is_empty()).then(|| {
                let names: Vec<String> = c
                    .config
                    .destination_rules
                    .iter()
                    .map(|n| short_name(n))
                    .collect();
                names.join("+")
            }),
        })
        .collect();
    // Where requests to unknown destinations end up under each outbound traffic policy.
    for (name, discovery_type) in [
        ("BlackHoleCluster", "STATIC"),
        ("PassthroughCluster", "ORIGINAL_DST"),
    ] {
        rows.push(ClusterRow {
            service_fqdn: name.into(),
            port: None,
            subset: None,
            direction: None,
            discovery_type,
            destination_rule: None,
        });
    }
    rows
}

pub fn cluster_table(rows: &[ClusterRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.service_fqdn.clone(),
                r.port.map_or("-".into(), |p| p.to_string()),
                or_dash(r.subset.as_deref()),
                or_dash(r.direction),
                r.discovery_type.to_string(),
                or_dash(r.destination_rule.as_deref()),
            ]
        })
        .collect();
    table::render(
        &[
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION RULE",
        ],
        &body,
    )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRow {
    endpoint: String,
    status: &'static str,
    outlier_check: &'static str,
    cluster: String,
}

pub fn endpoint_rows(snapshot: &Snapshot) -> Vec<EndpointRow> {
    snapshot
        .clusters
        .values()
        .flat_map(|c| {
            c.endpoints.iter().map(|e| EndpointRow {
                endpoint: e.authority.clone(),
                status: e.status(),
                outlier_check: if e.is_ejected() { "FAILED" } else { "OK" },
                cluster: c.config.name.clone(),
            })
        })
        .collect()
}

pub fn endpoint_table(rows: &[EndpointRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.endpoint.clone(),
                r.status.to_string(),
                r.outlier_check.to_string(),
                r.cluster.clone(),
            ]
        })
        .collect();
    table::render(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], &body)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{cells, has_row, snapshot, MESH};
    use super::*;

    #[tokio::test]
    async fn clusters_show_subsets_types_and_rules() {
        let t = cluster_table(&cluster_rows(&snapshot(MESH).await));
        assert!(t.starts_with("SERVICE FQDN"));
        let reviews = "reviews.default.svc.cluster.local";
        for subset in ["v1", "v2"] {
            let row = [
                reviews,
                "9080",
                subset,
                "outbound",
                "EDS",
                "reviews.default",
            ];
            assert!(has_row(&t, &row), "{subset}:\n{t}");
        }
        let mysql = "mysql.default.svc.cluster.local";
        assert!(has_row(&t, &[mysql, "3306", "-", "outbound", "EDS", "-"]));
        let pay = ["pay.example.com", "443", "-", "outbound", "STRICT_DNS", "-"];
        assert!(has_row(&t, &pay));
        assert!(has_row(
            &t,
            &["BlackHoleCluster", "-", "-", "-", "STATIC", "-"]
        ));
    }

    #[tokio::test]
    async fn endpoints_are_listed_per_cluster() {
        let t = endpoint_table(&endpoint_rows(&snapshot(MESH).await));
        let v1 = "outbound|9080|v1|reviews.default.svc.cluster.local";
        assert!(has_row(&t, &["127.0.0.11:9080", "HEALTHY", "OK", v1]));
        let in_v1: Vec<&str> = cells(&t)
            .into_iter()
            .filter(|r| r[3] == v1)
            .map(|r| r[0])
            .collect();
        assert_eq!(
            in_v1,
            ["127.0.0.11:9080"],
            "the subset selects by label:\n{t}"
        );
        let db = "outbound|3306||mysql.default.svc.cluster.local";
        assert!(has_row(&t, &["127.0.0.21:3306", "HEALTHY", "OK", db]));
    }

    #[tokio::test]
    async fn json_rows_use_istioctl_field_names() {
        let rows = cluster_rows(&snapshot(MESH).await);
        let json = serde_json::to_value(&rows).unwrap();
        let v1 = json
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["subset"] == "v1")
            .unwrap();
        assert_eq!(v1["serviceFqdn"], "reviews.default.svc.cluster.local");
        assert_eq!(v1["type"], "EDS");
        assert_eq!(v1["destinationRule"], "reviews.default");
    }
}
