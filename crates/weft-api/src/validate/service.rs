//! Kubernetes `v1 Service`: the API server's rules for ports, type and cluster IP, plus
//! Istio's port naming convention (analyzer IST0118) as a warning.

use super::common::{invalid, one_of, port, Path, Protocol, Report, REQUIRED};
use super::names::{fqdn, is_dns1123_label, is_ip};
use crate::types::{KubePort, Service, TargetPort};
use std::collections::BTreeSet;

/// Namespaces Istio's analyzers leave alone.
const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "istio-system"];

pub fn validate(r: &mut Report, svc: &Service, namespace: &str) {
    let spec = Path::spec();
    let kind = svc
        .type_
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP");
    one_of(
        r,
        &spec.field("type"),
        kind,
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
    );
    let headless = svc.cluster_ip.as_deref() == Some("None");
    if kind == "ExternalName" {
        match svc.external_name.as_deref().filter(|n| !n.is_empty()) {
            None => {
                r.required(&spec.field("externalName"));
            }
            Some(name) if fqdn(name).is_err() || name.chars().any(|c| c.is_ascii_uppercase()) => {
                r.error(
                    &spec.field("externalName"),
                    invalid(name, "must be a lowercase DNS name"),
                );
            }
            Some(_) => {}
        }
    } else if svc.ports.is_empty() && !headless {
        r.required(&spec.field("ports"))
            .with_hint("list the ports the Service exposes, e.g. ports: [{name: http, port: 80, targetPort: 8080}]");
    }

    let mut names = BTreeSet::new();
    for (i, p) in svc.ports.iter().enumerate() {
        let at = spec.field("ports").index(i);
        match p.name.as_deref().filter(|n| !n.is_empty()) {
            None if svc.ports.len() > 1 => {
                r.error(
                    &at.field("name"),
                    format!("{REQUIRED}: ports must be named when a Service has more than one"),
                )
                .with_hint("name ports <protocol>[-suffix], e.g. http, grpc-api, tcp-db");
            }
            None => {}
            Some(name) if !is_dns1123_label(name) => {
                r.error(&at.field("name"), invalid(name, "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"));
            }
            Some(name) if !names.insert(name) => {
                r.error(&at.field("name"), format!("Duplicate value: {name:?}"));
            }
            Some(_) => {}
        }
        port(r, &at.field("port"), p.port);
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        one_of(r, &at.field("protocol"), proto, &["TCP", "UDP", "SCTP"]);
        match &p.target_port {
            Some(TargetPort::Number(n)) if *n != 0 => port(r, &at.field("targetPort"), *n),
            Some(TargetPort::Name(name)) if !name.is_empty() && !is_port_name(name) => {
                r.error(&at.field("targetPort"), invalid(name, "must be a port number or a container port name (at most 15 lowercase letters, digits and '-', with at least one letter)"));
            }
            _ => {}
        }
        if let Some(node_port) = p.node_port.filter(|n| *n != 0) {
            if kind == "ClusterIP" || kind == "ExternalName" {
                r.error(
                    &at.field("nodePort"),
                    format!("may not be used when `type` is '{kind}'"),
                );
            } else {
                port(r, &at.field("nodePort"), node_port);
            }
        }
        if proto != "UDP" && !SYSTEM_NAMESPACES.contains(&namespace) {
            naming_convention(r, &at, p);
        }
    }

    if let Some(ip) = &svc.cluster_ip {
        cluster_ip(r, &spec.field("clusterIP"), ip);
    }
    for (i, ip) in svc.cluster_ips.iter().enumerate() {
        cluster_ip(r, &spec.field("clusterIPs").index(i), ip);
    }
}

fn cluster_ip(r: &mut Report, path: &Path, ip: &str) {
    if !ip.is_empty() && ip != "None" && !is_ip(ip) {
        r.error(
            path,
            invalid(ip, "must be a valid IP address, \"None\" or empty"),
        );
    }
}

/// Kubernetes' IANA_SVC_NAME: what a container port name may be.
fn is_port_name(name: &str) -> bool {
    name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Istio takes a port's protocol from `appProtocol` or from a `<protocol>[-suffix]` name;
/// otherwise it sniffs, which works but costs a detection timeout on server-first protocols.
fn naming_convention(r: &mut Report, path: &Path, p: &KubePort) {
    if let Some(app) = p.app_protocol.as_deref().filter(|a| !a.is_empty()) {
        if app.starts_with("kubernetes.io/") || Protocol::parse(app).is_some() {
            return;
        }
    }
    let name = p.name.as_deref().unwrap_or_default();
    let prefix = name.split('-').next().unwrap_or_default();
    if Protocol::parse(prefix).is_some() {
        return;
    }
    let target = match &p.target_port {
        Some(TargetPort::Number(n)) => n.to_string(),
        Some(TargetPort::Name(n)) => n.clone(),
        None => p.port.to_string(),
    };
    r.warning(
        &path.field("name"),
        format!("Port name {name} (port: {}, targetPort: {target}) doesn't follow the naming convention of Istio port.", p.port),
    )
    .with_hint("name it <protocol>[-suffix] (http, http2, grpc, tcp, tls, https, mongo, mysql, redis) or set appProtocol; otherwise the protocol is detected by sniffing");
}

#[cfg(test)]
mod tests {
    use super::is_port_name;
    use crate::validate::test_support::*;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  selector: {app: reviews}\n";

    fn svc(body: &str) -> String {
        format!("{SVC}{body}")
    }

    #[test]
    fn a_named_service_is_clean() {
        assert_clean(&svc("  ports:\n  - {name: http, port: 9080, targetPort: 9080}\n  - {name: grpc-api, port: 9090, targetPort: grpc}\n"));
        assert_clean(&svc(
            "  ports: [{name: db, port: 3306, appProtocol: mysql}]\n",
        ));
    }

    #[test]
    fn ports_are_required_unless_headless_or_external() {
        assert_error(&svc(""), "spec.ports", "Required value");
        assert_accepted(&svc("  clusterIP: None\n"));
        assert_accepted(&svc(
            "  type: ExternalName\n  externalName: db.example.com\n",
        ));
        assert_error(
            &svc("  type: ExternalName\n"),
            "spec.externalName",
            "Required value",
        );
    }

    #[test]
    fn port_fields() {
        let yaml = svc("  ports:\n  - {name: http, port: 0}\n  - {port: 81, protocol: HTTP}\n  - {name: http, port: 82, targetPort: Not_A_Name}\n  - {name: Web, port: 83, targetPort: 70000}\n");
        assert_error(&yaml, "spec.ports[0].port", "port must be between 1-65535");
        assert_error(&yaml, "spec.ports[1].name", "Required value");
        assert_error(
            &yaml,
            "spec.ports[1].protocol",
            "Unsupported value: \"HTTP\"",
        );
        assert_error(&yaml, "spec.ports[2].name", "Duplicate value");
        assert_error(&yaml, "spec.ports[2].targetPort", "container port name");
        assert_error(&yaml, "spec.ports[3].name", "lowercase RFC 1123 label");
        assert_error(
            &yaml,
            "spec.ports[3].targetPort",
            "port must be between 1-65535",
        );
    }

    #[test]
    fn cluster_ip_and_node_port() {
        assert_error(
            &svc("  clusterIP: ten\n  ports: [{name: http, port: 80}]\n"),
            "spec.clusterIP",
            "valid IP",
        );
        assert_accepted(&svc(
            "  clusterIP: 10.96.0.10\n  ports: [{name: http, port: 80}]\n",
        ));
        assert_error(
            &svc("  ports: [{name: http, port: 80, nodePort: 30080}]\n"),
            "spec.ports[0].nodePort",
            "ClusterIP",
        );
    }

    #[test]
    fn istio_port_naming_is_only_a_warning() {
        assert_warning(
            &svc("  ports: [{name: web, port: 80}]\n"),
            "spec.ports[0].name",
            "naming convention of Istio port",
        );
        assert_warning(
            &svc("  ports: [{port: 80}]\n"),
            "spec.ports[0].name",
            "naming convention",
        );
        assert_accepted(&svc("  ports: [{name: dns, port: 53, protocol: UDP}]\n"));
        let system = "apiVersion: v1\nkind: Service\nmetadata:\n  name: kube-dns\n  namespace: kube-system\nspec:\n  ports: [{name: dns-tcp, port: 53}]\n";
        assert_clean(system);
    }

    #[test]
    fn iana_port_names() {
        assert!(is_port_name("http") && is_port_name("grpc-web") && is_port_name("h2c"));
        assert!(
            !is_port_name("8080")
                && !is_port_name("a-very-long-port-name")
                && !is_port_name("a--b")
        );
    }
}
