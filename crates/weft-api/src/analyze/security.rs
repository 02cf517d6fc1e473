//! The security kinds: an AuthorizationPolicy's namespaces that nothing lives in (IST0101),
//! its selector matching no workload (IST0127), principals written without their trust
//! domain (WEFT0006); and a DestinationRule that turns TLS off towards workloads whose
//! PeerAuthentication is STRICT (WEFT0007), whose requests would then be reset; a Gateway
//! server whose `credentialName` names no usable Secret where its gateway runs (IST0161).
//!
//! As in `subsets.rs`, when the input declares no workload at all, nothing is said about
//! which workloads or namespaces exist.

use super::mesh::Mesh;
use super::{
    Report, INVALID_GATEWAY_CREDENTIAL, MTLS_DISABLED_FOR_STRICT_DESTINATION,
    NO_MATCHING_WORKLOADS_FOUND, PRINCIPAL_WITHOUT_TRUST_DOMAIN, REFERENCED_RESOURCE_NOT_FOUND,
};
use crate::peer_authentication;
use crate::resource::Spec;
use crate::types::{labels_match, MtlsMode};
use crate::{host, Resource};
use std::collections::BTreeSet;

pub(crate) fn authorization_policies(mesh: &Mesh<'_>, report: &mut Report) {
    let known = !mesh.workloads.is_empty();
    let namespaces: BTreeSet<&str> = mesh
        .workloads
        .iter()
        .map(|w| w.namespace)
        .chain(mesh.resources.iter().map(|r| r.namespace()))
        .collect();
    for r in &mesh.resources {
        let Spec::AuthorizationPolicy(ap) = &r.spec else {
            continue;
        };
        if let Some(selector) = ap.selector_labels() {
            let selects = mesh.workloads.iter().any(|w| {
                (w.namespace == r.namespace() || r.namespace() == crate::scope::ROOT_NAMESPACE)
                    && labels_match(selector, w.labels)
            });
            if known && !selects {
                let labels: Vec<String> =
                    selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                report.add_at(
                    NO_MATCHING_WORKLOADS_FOUND,
                    r,
                    "spec.selector".into(),
                    format!(
                        "No matching workloads for this resource with the following labels: {}",
                        labels.join(",")
                    ),
                );
            }
        }
        for (i, rule) in ap.rules.iter().enumerate() {
            for (j, source) in rule
                .from
                .iter()
                .filter_map(|f| f.source.as_ref())
                .enumerate()
            {
                let at = |field: &str, k: usize| {
                    format!("spec.rules[{i}].from[{j}].source.{field}[{k}]")
                };
                for (field, list) in [
                    ("namespaces", &source.namespaces),
                    ("notNamespaces", &source.not_namespaces),
                ] {
                    for (k, ns) in list.iter().enumerate() {
                        if known && !ns.contains('*') && !namespaces.contains(ns.as_str()) {
                            report.add_at(
                                REFERENCED_RESOURCE_NOT_FOUND,
                                r,
                                at(field, k),
                                format!("Referenced namespace not found: {ns:?}"),
                            );
                        }
                    }
                }
                for (field, list) in [
                    ("principals", &source.principals),
                    ("notPrincipals", &source.not_principals),
                ] {
                    for (k, p) in list.iter().enumerate() {
                        if p.starts_with("ns/") {
                            report.add_at(
                                PRINCIPAL_WITHOUT_TRUST_DOMAIN,
                                r,
                                at(field, k),
                                format!(
                                    "principal {p:?} has no trust domain, so it matches no caller: principals are TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT; write \"cluster.local/{p}\", or \"*/{p}\" for any trust domain"
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A Gateway server that terminates TLS with `credentialName`: a gateway workload it selects
/// must find a Secret of that name in its own namespace (as Istio's SDS reads it) holding
/// a certificate and key in PEM.
pub(crate) fn gateway_credentials(mesh: &Mesh<'_>, report: &mut Report) {
    for r in &mesh.resources {
        let Spec::Gateway(gw) = &r.spec else {
            continue;
        };
        let namespaces: BTreeSet<&str> = mesh
            .workloads
            .iter()
            .filter(|w| labels_match(&gw.selector, w.labels))
            .map(|w| w.namespace)
            .collect();
        for (i, server) in gw.servers.iter().enumerate() {
            let Some(tls) = &server.tls else { continue };
            let mode = tls.mode.as_deref().unwrap_or("PASSTHROUGH");
            let Some(name) = tls
                .credential_name
                .as_deref()
                .filter(|n| !n.is_empty() && !matches!(mode, "PASSTHROUGH" | "ISTIO_MUTUAL"))
            else {
                continue;
            };
            let name = name.strip_prefix("kubernetes://").unwrap_or(name);
            for ns in &namespaces {
                let secret = mesh.resources.iter().find_map(|s| match &s.spec {
                    Spec::Secret(secret) if s.name() == name && s.namespace() == *ns => {
                        Some(secret)
                    }
                    _ => None,
                });
                let problem = match secret.map(|s| s.tls_credential()) {
                    None => format!("no Secret {ns}/{name} (weft create secret tls {name} -n {ns} --cert FILE --key FILE)"),
                    Some(c) if !pem(c.certificate, "CERTIFICATE") => {
                        format!("Secret {ns}/{name} holds no PEM certificate in tls.crt (or cert)")
                    }
                    Some(c) if !pem(c.key, "PRIVATE KEY") => {
                        format!("Secret {ns}/{name} holds no PEM private key in tls.key (or key)")
                    }
                    Some(_) => continue,
                };
                report.add_at(
                    INVALID_GATEWAY_CREDENTIAL,
                    r,
                    format!("spec.servers[{i}].tls.credentialName"),
                    format!(
                        "The credential referenced by the Gateway {} in namespace {} is invalid: {problem}",
                        r.name(),
                        r.namespace()
                    ),
                );
            }
        }
    }
}

/// Whether `bytes` hold a PEM block whose label ends with `label`.
fn pem(bytes: Option<&[u8]>, label: &str) -> bool {
    let Some(text) = bytes.and_then(|b| std::str::from_utf8(b).ok()) else {
        return false;
    };
    text.lines().any(|l| {
        l.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    })
}

/// A DestinationRule whose `tls` is DISABLE (for the whole host or one port) towards a
/// service whose workloads take mTLS only.
pub(crate) fn mtls_conflicts(mesh: &Mesh<'_>, report: &mut Report) {
    let policies: Vec<&Resource> = mesh
        .resources
        .iter()
        .copied()
        .filter(|r| matches!(r.spec, Spec::PeerAuthentication(_)))
        .collect();
    if policies.is_empty() {
        return;
    }
    for (r, dr) in mesh.destination_rules() {
        let Some(policy) = &dr.traffic_policy else {
            continue;
        };
        let fqdn = host::fqdn(&dr.host, r.namespace());
        let Some((service, namespace)) = mesh.services().find_map(|(s, svc)| {
            (host::fqdn(s.name(), s.namespace()) == fqdn).then_some((svc, s.namespace()))
        }) else {
            continue;
        };
        let disabled = |tls: &Option<crate::types::ClientTlsSettings>| {
            tls.as_ref()
                .is_some_and(|t| t.mode.as_deref().unwrap_or("DISABLE") == "DISABLE")
        };
        let mut ports: Vec<(Option<u32>, String)> = Vec::new();
        if disabled(&policy.tls) {
            ports.push((None, "spec.trafficPolicy.tls".into()));
        }
        for (i, p) in policy.port_level_settings.iter().enumerate() {
            if disabled(&p.tls) {
                ports.push((
                    p.port.map(|s| s.number),
                    format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
                ));
            }
        }
        // The service's workloads, or the labels its selector gives them all.
        let mut workloads: Vec<&std::collections::BTreeMap<String, String>> = mesh
            .workloads
            .iter()
            .filter(|w| w.namespace == namespace && labels_match(&service.selector, w.labels))
            .map(|w| w.labels)
            .collect();
        if workloads.is_empty() {
            workloads.push(&service.selector);
        }
        for (port, path) in ports {
            let target = |number: u32| {
                service
                    .ports
                    .iter()
                    .find(|p| p.port == number)
                    .and_then(|p| match &p.target_port {
                        Some(crate::types::TargetPort::Number(t)) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(number)
            };
            let strict = workloads.iter().find_map(|labels| {
                let mtls =
                    peer_authentication::effective(policies.iter().copied(), namespace, labels);
                let decided = match port {
                    Some(p) => mtls.for_port(u16::try_from(target(p)).unwrap_or(0)).clone(),
                    None => mtls.workload.clone(),
                };
                (decided.mode == MtlsMode::Strict).then_some(decided)
            });
            if let Some(decided) = strict {
                report.add_at(
                    MTLS_DISABLED_FOR_STRICT_DESTINATION,
                    r,
                    path,
                    format!(
                        "tls mode DISABLE sends plaintext to {fqdn}, whose workloads take mTLS only ({} is STRICT): its sidecars reset those connections; drop the tls setting (auto mTLS) or use ISTIO_MUTUAL",
                        decided.by.as_deref().unwrap_or("the mesh default")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn policy(name: &str, spec: &str) -> String {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}")
    }

    #[test]
    fn authorization_policies_name_what_exists() {
        let yaml = docs(&[
            REVIEWS_SERVICE,
            &reviews_deployment("v1"),
            &policy(
                "reviews",
                "  selector:\n    matchLabels: {app: reviews}\n  rules:\n  - from:\n    - source:\n        namespaces: [default, prod*, bogus]\n        principals: [ns/default/sa/productpage, cluster.local/ns/default/sa/productpage]\n",
            ),
            &policy("nobody", "  selector:\n    matchLabels: {app: ratings}\n"),
        ]);
        assert_eq!(
            lines_with(&yaml, "IST0101"),
            ["Error [IST0101] (AuthorizationPolicy default/reviews) Referenced namespace not found: \"bogus\""]
        );
        assert_eq!(
            lines_with(&yaml, "IST0127"),
            ["Warning [IST0127] (AuthorizationPolicy default/nobody) No matching workloads for this resource with the following labels: app=ratings"]
        );
        let weft6 = lines_with(&yaml, "WEFT0006");
        assert_eq!(weft6.len(), 1, "{weft6:?}");
        assert!(
            weft6[0].contains("\"cluster.local/ns/default/sa/productpage\""),
            "{weft6:?}"
        );
    }

    #[test]
    fn tls_off_towards_strict_workloads_is_an_error() {
        let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls: {mode: STRICT}\n";
        let disable = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  trafficPolicy:\n    tls: {mode: DISABLE}\n";
        let yaml = docs(&[REVIEWS_SERVICE, strict, disable]);
        assert_eq!(
            lines_with(&yaml, "WEFT0007"),
            ["Error [WEFT0007] (DestinationRule default/reviews) tls mode DISABLE sends plaintext to reviews.default.svc.cluster.local, whose workloads take mTLS only (PeerAuthentication istio-system/default is STRICT): its sidecars reset those connections; drop the tls setting (auto mTLS) or use ISTIO_MUTUAL"]
        );
        let permissive_port = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: reviews\nspec:\n  selector:\n    matchLabels: {app: reviews}\n  portLevelMtls:\n    \"9080\": {mode: PERMISSIVE}\n";
        let yaml = docs(&[
            REVIEWS_SERVICE,
            strict,
            permissive_port,
            &disable.replace(
                "    tls: {mode: DISABLE}\n",
                "    portLevelSettings:\n    - port: {number: 9080}\n      tls: {mode: DISABLE}\n",
            ),
        ]);
        assert_eq!(lines_with(&yaml, "WEFT0007"), Vec::<String>::new());
    }

    #[test]
    fn a_gateway_credential_must_be_a_secret_where_the_gateway_runs() {
        let ingress = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: istio-ingressgateway\n  namespace: istio-system\nspec:\n  template:\n    metadata:\n      labels: {istio: ingressgateway}\n    spec:\n      containers: [{name: istio-proxy, image: proxy}]\n";
        let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: mygateway\n  namespace: istio-system\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [httpbin.example.com]\n    tls: {mode: SIMPLE, credentialName: httpbin-credential}\n";
        let secret = |crt: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: httpbin-credential\n  namespace: istio-system\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: \"{crt}\"\n  tls.key: \"-----BEGIN PRIVATE KEY-----\\nMC4=\\n-----END PRIVATE KEY-----\"\n")
        };
        assert_eq!(
            lines_with(&docs(&[ingress, gateway]), "IST0161"),
            ["Error [IST0161] (Gateway istio-system/mygateway) The credential referenced by the Gateway mygateway in namespace istio-system is invalid: no Secret istio-system/httpbin-credential (weft create secret tls httpbin-credential -n istio-system --cert FILE --key FILE)"]
        );
        assert_eq!(
            lines_with(&docs(&[ingress, gateway, &secret("not pem")]), "IST0161"),
            ["Error [IST0161] (Gateway istio-system/mygateway) The credential referenced by the Gateway mygateway in namespace istio-system is invalid: Secret istio-system/httpbin-credential holds no PEM certificate in tls.crt (or cert)"]
        );
        let good = secret("-----BEGIN CERTIFICATE-----\\nMC4=\\n-----END CERTIFICATE-----");
        assert_eq!(
            lines_with(&docs(&[ingress, gateway, &good]), "IST0161"),
            Vec::<String>::new()
        );
        // Nothing is said when no gateway workload is known.
        assert_eq!(
            lines_with(&docs(&[gateway]), "IST0161"),
            Vec::<String>::new()
        );
    }
}
