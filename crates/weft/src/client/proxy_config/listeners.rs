//! `proxy-config listeners`: one row per port and filter-chain match the proxy routes.

use crate::table;
use serde::Serialize;
use weft_api::types::OutboundTrafficMode;
use weft_proxy::model::route::WeightedClusters;
use weft_proxy::model::Snapshot;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerRow {
    addresses: Vec<String>,
    port: u16,
    #[serde(rename = "match")]
    matches: String,
    destination: String,
}

/// Where the proxy sends a connection that no route claims.
fn fallback(snapshot: &Snapshot) -> &'static str {
    match snapshot.outbound_policy {
        OutboundTrafficMode::RegistryOnly => "BlackHoleCluster",
        OutboundTrafficMode::AllowAny => "PassthroughCluster",
    }
}

fn describe_clusters(weighted: &WeightedClusters) -> String {
    match weighted.clusters.as_slice() {
        [one] => format!("Cluster: {}", one.cluster.config.name),
        many => format!(
            "WeightedClusters: {}",
            many.iter()
                .map(|c| format!("{}({})", c.cluster.config.name, c.weight))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn subnets_condition<T: std::fmt::Display>(subnets: &[T]) -> Option<String> {
    (!subnets.is_empty()).then(|| {
        let list: Vec<String> = subnets.iter().map(ToString::to_string).collect();
        format!("Addr: {}", list.join(","))
    })
}

pub fn listener_rows(snapshot: &Snapshot) -> Vec<ListenerRow> {
    let any = || vec!["0.0.0.0".to_string()];
    let mut rows = Vec::new();
    for port in snapshot.http.keys() {
        rows.push(ListenerRow {
            addresses: any(),
            port: *port,
            matches: "Trans: raw_buffer; App: http/1.1,h2c".into(),
            destination: format!("Route: {port}"),
        });
    }
    // A TLS connection is routed by SNI first; what no SNI route claims falls to TCP.
    let mut tls: Vec<_> = snapshot.tls.iter().collect();
    tls.sort_by_key(|(port, _)| **port);
    for (port, routes) in tls {
        for route in routes {
            let conditions: Vec<String> =
                std::iter::once(format!("SNI: {}", route.sni_hosts.join(",")))
                    .chain(subnets_condition(&route.destination_subnets))
                    .collect();
            rows.push(ListenerRow {
                addresses: any(),
                port: *port,
                matches: conditions.join("; "),
                destination: describe_clusters(&route.clusters),
            });
        }
    }
    let mut tcp: Vec<_> = snapshot.tcp.iter().collect();
    tcp.sort_by(|a, b| a.0.cmp(b.0));
    for ((hostname, port), l4) in tcp {
        let vips: Vec<String> = snapshot
            .registry
            .by_host(hostname)
            .map(|s| {
                s.vips
                    .iter()
                    .map(|n| {
                        if n.prefix_len() == n.max_prefix_len() {
                            n.addr().to_string()
                        } else {
                            n.to_string()
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let addresses = if vips.is_empty() { any() } else { vips };
        for route in &l4.routes {
            let conditions: Vec<String> = route
                .port
                .map(|p| format!("Port: {p}"))
                .into_iter()
                .chain(subnets_condition(&route.destination_subnets))
                .collect();
            rows.push(ListenerRow {
                addresses: addresses.clone(),
                port: *port,
                matches: if conditions.is_empty() {
                    "ALL".into()
                } else {
                    conditions.join("; ")
                },
                destination: describe_clusters(&route.clusters),
            });
            // Routes after a catch-all are never reached.
            if conditions.is_empty() {
                break;
            }
        }
    }
    // The capture ports iptables redirects to: outbound traffic nothing above claims, and
    // all inbound traffic, which goes to the local workload.
    rows.push(ListenerRow {
        addresses: any(),
        port: 15001,
        matches: "ALL".into(),
        destination: fallback(snapshot).into(),
    });
    rows.push(ListenerRow {
        addresses: any(),
        port: 15006,
        matches: "ALL".into(),
        destination: "Inline Route: /*".into(),
    });
    rows.sort_by_key(|r| r.port);
    rows
}

pub fn listener_table(rows: &[ListenerRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.addresses.join(","),
                r.port.to_string(),
                r.matches.clone(),
                r.destination.clone(),
            ]
        })
        .collect();
    table::render(&["ADDRESSES", "PORT", "MATCH", "DESTINATION"], &body)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{cells, has_row, snapshot, MESH};
    use super::*;

    #[tokio::test]
    async fn listeners_cover_http_tcp_tls_and_capture_ports() {
        let t = listener_table(&listener_rows(&snapshot(MESH).await));
        let http = "Trans: raw_buffer; App: http/1.1,h2c";
        assert!(has_row(&t, &["0.0.0.0", "9080", http, "Route: 9080"]));
        let db = "Cluster: outbound|3306||mysql.default.svc.cluster.local";
        assert!(has_row(&t, &["10.96.0.30", "3306", "ALL", db]));
        let pay = "Cluster: outbound|443||pay.example.com";
        assert!(has_row(
            &t,
            &["0.0.0.0", "443", "SNI: pay.example.com", pay]
        ));
        assert!(has_row(
            &t,
            &["0.0.0.0", "15001", "ALL", "BlackHoleCluster"]
        ));
        assert!(has_row(
            &t,
            &["0.0.0.0", "15006", "ALL", "Inline Route: /*"]
        ));
        let ports: Vec<u16> = cells(&t)[1..]
            .iter()
            .map(|r| r[1].parse().unwrap())
            .collect();
        assert!(ports.is_sorted(), "{t}");
    }
}
