//! `ServiceEntry` and `WorkloadEntry`. A WorkloadEntry's checks also apply to each inline
//! `ServiceEntry.endpoints[]`, with what the entry's resolution adds.

use super::common::{
    export_to, invalid, labels, port, protocol, workload_selector, ExportScope, Path, Protocol,
    Report,
};
use super::names::{
    fqdn, ip_or_cidr, is_ip, is_istio_label, is_partial_wildcard, unix_socket_problem,
    wildcard_domain, UNIX_PREFIX,
};
use crate::types::{Resolution, ServiceEntry, WorkloadEntry};
use crate::validate::Severity;
use std::collections::BTreeSet;

/// Which addresses an endpoint may have, by the resolution of its ServiceEntry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addresses {
    /// STATIC: IPs (and Unix sockets), used as they are.
    IpOrUnix,
    /// DNS and DNS_ROUND_ROBIN: IPs or names to resolve.
    IpOrName,
    /// A WorkloadEntry (or an endpoint Istio ignores): anything well-formed.
    Any,
}

pub fn validate_workload_entry(r: &mut Report, we: &WorkloadEntry) {
    workload_entry(r, &Path::spec(), we, Addresses::Any, None);
}

pub fn validate_service_entry(r: &mut Report, se: &ServiceEntry, namespace: &str) {
    let spec = Path::spec();
    if let Some(selector) = &se.workload_selector {
        workload_selector(
            r,
            &spec.field("workloadSelector").field("labels"),
            &selector.labels,
        );
        if !se.endpoints.is_empty() {
            r.error(&spec.field("endpoints"), "only one of WorkloadSelector or Endpoints can be set")
                .with_hint("list endpoints inline, or select WorkloadEntries/pods with workloadSelector, not both");
        }
    }
    hosts(r, &spec, se);

    let mut cidr_at = None;
    for (i, address) in se.addresses.iter().enumerate() {
        let at = spec.field("addresses").index(i);
        if let Err(e) = ip_or_cidr(address) {
            r.error(&at, invalid(address, e));
        } else if address.contains('/') && cidr_at.is_none() {
            cidr_at = Some(at);
        }
    }
    let resolution = se.resolution.unwrap_or(Resolution::None);
    if let Some(at) =
        cidr_at.filter(|_| !matches!(resolution, Resolution::None | Resolution::Static))
    {
        r.error(
            &at,
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        )
        .with_hint(
            "a DNS-resolved entry has one address per host; use single IPs or resolution: STATIC",
        );
    }

    let port_names = ports(r, &spec, se, resolution);
    let endpoints = spec.field("endpoints");
    let kind = match resolution {
        Resolution::None => {
            if !se.endpoints.is_empty() {
                r.error(&endpoints, "NONE mode cannot set endpoints")
                    .with_hint(
                        "set resolution: STATIC for IP endpoints or DNS for hostname endpoints",
                    );
            }
            None
        }
        Resolution::Static => Some(Addresses::IpOrUnix),
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => {
            if se.endpoints.is_empty() {
                for (i, host) in se.hosts.iter().enumerate() {
                    if fqdn(host).is_err() {
                        r.error(&spec.field("hosts").index(i), format!("hosts must be FQDN if no endpoints are provided for resolution mode {}", resolution_name(resolution)))
                            .with_hint("DNS resolution looks the host up; wildcard hosts need endpoints");
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                r.error(
                    &endpoints,
                    "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
                )
                .with_hint("use resolution: DNS to load-balance across several endpoints");
            }
            Some(Addresses::IpOrName)
        }
    };
    if se.workload_selector.is_some() && resolution != Resolution::Static {
        r.warning(
            &spec.field("workloadSelector"),
            format!(
                "workloadSelector should not be set when resolution mode is {}",
                resolution_name(resolution)
            ),
        );
    }
    for (i, endpoint) in se.endpoints.iter().enumerate() {
        // Under NONE Istio ignores endpoints; only the CRD's own checks apply.
        let (addresses, ports) = match kind {
            Some(k) => (k, Some(&port_names)),
            None => (Addresses::Any, None),
        };
        workload_entry(r, &endpoints.index(i), endpoint, addresses, ports);
        if kind == Some(Addresses::IpOrUnix)
            && endpoint.address.starts_with(UNIX_PREFIX)
            && se.ports.len() != 1
        {
            r.error(
                &endpoints.index(i).field("address"),
                "exactly 1 service port required for unix endpoints",
            );
        }
    }
    export_to(
        r,
        &spec.field("exportTo"),
        namespace,
        &se.export_to,
        ExportScope::ServiceEntry,
    );
}

fn resolution_name(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        Resolution::DynamicDns => "DYNAMIC_DNS",
    }
}

fn hosts(r: &mut Report, spec: &Path, se: &ServiceEntry) {
    if se.hosts.is_empty() {
        r.required(&spec.field("hosts"))
            .with_hint("a ServiceEntry needs at least one host, e.g. hosts: [api.example.com]");
    }
    for (i, host) in se.hosts.iter().enumerate() {
        let at = spec.field("hosts").index(i);
        if host == "*" {
            r.error(&at, invalid(host, "hostname cannot be wildcard"))
                .with_hint("use a wildcard domain such as \"*.example.com\"");
        } else if let Err(e) = wildcard_domain(host) {
            r.error(&at, invalid(host, e));
        } else if is_partial_wildcard(host) {
            r.warning(&at, format!("partial wildcard {host:?} not allowed"))
                .with_hint("a wildcard must be the whole first label, as in \"*.example.com\"");
        }
    }
}

/// The service ports; returns their names for the endpoints' port maps.
fn ports<'a>(
    r: &mut Report,
    spec: &Path,
    se: &'a ServiceEntry,
    resolution: Resolution,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let at = spec.field("ports").index(i);
        if p.name.is_empty() {
            r.required(&at.field("name"))
                .with_hint("ports are named, e.g. name: http");
        } else if !is_istio_label(&p.name) {
            r.error(
                &at.field("name"),
                invalid(&p.name, "invalid port name (must be a DNS-1123 label)"),
            );
        } else if !names.insert(p.name.as_str()) {
            r.error(&at.field("name"), format!("Duplicate value: {:?}", p.name));
        }
        port(r, &at.field("number"), p.number);
        if p.number != 0 && !numbers.insert(p.number) {
            r.error(
                &at.field("number"),
                invalid(p.number, "port number cannot be duplicated"),
            );
        }
        if let Some(target) = p.target_port {
            port(r, &at.field("targetPort"), target);
            if resolution == Resolution::None {
                r.warning(
                    &at.field("targetPort"),
                    "targetPort has no effect when resolution mode is NONE",
                );
            }
        }
        protocol(
            r,
            &at.field("protocol"),
            p.protocol.as_deref().unwrap_or_default(),
        );
    }
    // Plain TCP carries no host name, so one address cannot serve several hosts.
    if resolution != Resolution::None && se.hosts.len() > 1 {
        let l4 = se.ports.iter().position(|p| {
            let proto = p.protocol.as_deref().and_then(Protocol::parse);
            !proto.is_some_and(|p| p.is_http() || p.is_tls())
        });
        if let Some(i) = l4 {
            r.error(&spec.field("ports").index(i), "multiple hosts provided with non-HTTP, non-TLS ports")
                .with_hint("give the port an HTTP or TLS protocol, split the hosts into separate ServiceEntries, or use resolution: NONE");
        }
    }
    names
}

fn workload_entry(
    r: &mut Report,
    path: &Path,
    we: &WorkloadEntry,
    addresses: Addresses,
    service_ports: Option<&BTreeSet<&str>>,
) {
    let address = we.address.as_str();
    let at = path.field("address");
    if address.is_empty() {
        match we.network.as_deref().filter(|n| !n.is_empty()) {
            None => {
                r.error(&at, "Address is required")
                    .with_hint("set an IP, a host name or unix:///path; or network for a workload reached through that network's gateway");
            }
            Some(network) => {
                r.warning(&at, format!("address is unset with network {network:?}"));
            }
        }
    } else if address.starts_with(UNIX_PREFIX) {
        if let Some(problem) = unix_socket_problem(address) {
            r.error(&at, invalid(address, problem))
                .with_hint("use unix:///absolute/path or unix://@abstract-name");
        }
        if !we.ports.is_empty() {
            r.error(&path.field("ports"), "UDS may not include ports");
        }
        if addresses == Addresses::IpOrName {
            r.error(
                &at,
                format!("endpoint address {address:?} is not a valid FQDN or an IP address"),
            );
        }
    } else if !is_ip(address) {
        if addresses == Addresses::IpOrUnix {
            r.error(
                &at,
                format!("endpoint address {address:?} is not a valid IP address"),
            )
            .with_hint(
                "STATIC resolution uses addresses as they are; use resolution: DNS for host names",
            );
        } else if fqdn(address).is_err() {
            r.error(
                &at,
                format!("endpoint address {address:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    for (name, number) in &we.ports {
        // The CRD's rule for the keys of the ports map.
        if !(name.len() < 63 && is_istio_label(name)) {
            r.error(
                &path.field("ports"),
                invalid(name, "port name must be valid"),
            )
            .with_hint("port names are letters, digits and '-', starting and ending alphanumeric");
        } else if service_ports.is_some_and(|names| !names.contains(name.as_str())) {
            r.error(
                &path.field("ports").key(name),
                format!("endpoint port {number} is not defined by the service entry"),
            )
            .with_hint("endpoint ports are keyed by the name of a port in spec.ports");
        }
        port(r, &path.field("ports").key(name), *number);
    }
    labels(r, &path.field("labels"), &we.labels, Severity::Error);
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::*;

    const SE: &str =
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n";

    fn se(body: &str) -> String {
        format!("{SE}{body}")
    }

    #[test]
    fn static_endpoints_must_be_ips_and_use_declared_ports() {
        let yaml = se("  hosts: [db.internal]\n  resolution: STATIC\n  ports: [{name: tcp, number: 5432, protocol: TCP}]\n  addresses: [10.0.0.9]\n  endpoints:\n  - address: db.example.com\n    ports: {pg: 5432}\n");
        assert_error(&yaml, "spec.endpoints[0].address", "not a valid IP address");
        assert_error(
            &yaml,
            "spec.endpoints[0].ports[pg]",
            "not defined by the service entry",
        );
    }

    #[test]
    fn dns_entries_need_fqdn_hosts_without_endpoints() {
        assert_error(
            &se("  hosts: ['*.example.com']\n  resolution: DNS\n"),
            "spec.hosts[0]",
            "hosts must be FQDN",
        );
        assert_accepted(&se("  hosts: ['*.example.com']\n  resolution: DNS\n  endpoints: [{address: proxy.example.com}]\n"));
    }

    #[test]
    fn several_hosts_need_http_or_tls_ports() {
        let yaml = se("  hosts: [a.example.com, b.example.com]\n  resolution: DNS\n  ports: [{name: tcp, number: 9000}]\n");
        assert_error(
            &yaml,
            "spec.ports[0]",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
        assert_accepted(&se("  hosts: [a.example.com, b.example.com]\n  resolution: DNS\n  ports: [{name: https, number: 443, protocol: tls}]\n"));
    }

    #[test]
    fn port_protocols_are_istios() {
        let yaml =
            se("  hosts: [a.example.com]\n  ports: [{name: web, number: 80, protocol: HTTP3}]\n");
        assert_error(&yaml, "spec.ports[0].protocol", "unsupported protocol");
        assert_accepted(&se(
            "  hosts: [a.example.com]\n  ports: [{name: web, number: 80, protocol: grpc-web}]\n",
        ));
    }

    #[test]
    fn addresses_and_labels() {
        let yaml = se("  hosts: [a.example.com]\n  addresses: [300.1.1.1]\n  resolution: STATIC\n  endpoints: [{address: 1.1.1.1, labels: {'bad key': x}}]\n");
        assert_error(&yaml, "spec.addresses[0]", "not a valid IP");
        assert_error(
            &yaml,
            "spec.endpoints[0].labels[bad key]",
            "invalid label key",
        );
    }

    #[test]
    fn workload_entry_labels_and_addresses() {
        let we = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: vm\nspec:\n";
        assert_clean(&format!("{we}  address: 10.1.1.1\n  labels: {{app: ratings, version: v1}}\n  ports: {{http: 8080}}\n"));
        assert_error(
            &format!("{we}  address: not_a_host\n"),
            "spec.address",
            "not a valid FQDN or an IP address",
        );
        assert_error(
            &format!("{we}  address: 10.1.1.1\n  labels: {{app: 'a b'}}\n"),
            "spec.labels[app]",
            "invalid label value",
        );
    }
}
