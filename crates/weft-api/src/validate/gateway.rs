//! `Gateway` (servers, ports, hosts, TLS) and `Sidecar` (ingress and egress listeners).

use super::common::{
    invalid, labels, one_of, port, protocol, workload_selector, Path, Protocol, Report, PROTOCOLS,
    REQUIRED,
};
use super::names::{is_ip, is_istio_label, namespace_slash_host, unix_socket_problem, UNIX_PREFIX};
use crate::types::{Gateway, GatewayPort, Server, ServerTlsSettings, Sidecar};
use crate::validate::Severity;
use std::collections::{BTreeMap, BTreeSet};

pub fn validate_gateway(r: &mut Report, gw: &Gateway, name: &str) {
    // Routes refer to gateways as namespace/name, so the name cannot have dots.
    if !name.is_empty() && !is_istio_label(name) {
        r.error(
            &Path::metadata().field("name"),
            format!("invalid gateway name: {name:?}"),
        )
        .with_hint("Gateway names are DNS labels: letters, digits and '-'");
    }
    let spec = Path::spec();
    if gw.servers.is_empty() {
        r.error(
            &spec.field("servers"),
            "gateway must have at least one server",
        )
        .with_hint("a Gateway without servers opens no port");
    }
    let mut port_names = BTreeSet::new();
    for (i, server) in gw.servers.iter().enumerate() {
        let at = spec.field("servers").index(i);
        self::server(r, &at, server);
        if let Some(p) = &server.port {
            if !p.name.is_empty() && !port_names.insert(p.name.as_str()) {
                r.error(
                    &at.field("port").field("name"),
                    format!(
                        "port names in servers must be unique: duplicate name {}",
                        p.name
                    ),
                );
            }
            let http = Protocol::parse(&p.protocol).is_some_and(Protocol::is_http);
            if !http && server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
                r.warning(
                    &at.field("tls").field("httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
    // Istio does not check these, but a selector label that is not a valid label matches no pod.
    labels(r, &spec.field("selector"), &gw.selector, Severity::Warning);
}

fn server(r: &mut Report, path: &Path, server: &Server) {
    if server.hosts.is_empty() {
        r.error(
            &path.field("hosts"),
            format!("{REQUIRED}: server config must contain at least one host"),
        )
        .with_hint("use hosts: [\"*\"] to accept every host");
    }
    for (i, host) in server.hosts.iter().enumerate() {
        namespace_slash_host(r, &path.field("hosts").index(i), host, true);
    }
    let bind = server.bind.as_deref().unwrap_or_default();
    let Some(p) = &server.port else {
        r.error(&path.field("port"), format!("{REQUIRED}: port is required"));
        return;
    };
    let at = path.field("port");
    let proto = Protocol::parse(&p.protocol);
    if proto.is_none() {
        r.error(&at.field("protocol"), format!("invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP", p.protocol))
            .with_hint(format!("use one of {PROTOCOLS}"));
    }
    let unix = bind.starts_with(UNIX_PREFIX);
    let port_ok = (p.number == 0 && unix) || (1..=65535).contains(&p.number);
    if !port_ok {
        port(r, &at.field("number"), p.number);
    }
    if p.target_port.is_some_and(|t| t > 0) {
        r.error(
            &at.field("targetPort"),
            "targetPort has no impact on Gateways",
        );
    }
    if p.name.is_empty() {
        r.error(
            &at.field("name"),
            format!("{REQUIRED}: port name must be set"),
        );
    }
    if unix {
        if let Some(problem) = unix_socket_problem(bind) {
            r.error(&path.field("bind"), invalid(bind, problem));
        }
        if p.number != 0 {
            r.error(
                &at.field("number"),
                format!("port number must be 0 for unix domain socket: {}", p.number),
            );
        }
    } else if !bind.is_empty() && !is_ip(bind) {
        r.error(&path.field("bind"), format!("{bind} is not a valid IP"));
    }
    if let Some(tls) = &server.tls {
        tls_options(r, &path.field("tls"), tls);
    }
    let (Some(proto), true) = (proto, port_ok) else {
        return;
    };
    match &server.tls {
        None if proto.is_tls() => {
            r.error(
                &path.field("tls"),
                format!("{REQUIRED}: server must have TLS settings for HTTPS/TLS protocols"),
            )
            .with_hint("add tls: {mode: SIMPLE, credentialName: <secret>} (or PASSTHROUGH)");
        }
        Some(tls) if !proto.is_tls() => {
            let passthrough = matches!(tls_mode(tls), "PASSTHROUGH" | "AUTO_PASSTHROUGH");
            let certificates = [
                &tls.ca_certificates,
                &tls.private_key,
                &tls.server_certificate,
            ]
            .iter()
            .any(|c| c.as_deref().is_some_and(|c| !c.is_empty()));
            if !proto.is_http() {
                r.error(
                    &path.field("tls"),
                    "server cannot have TLS settings for non HTTPS/TLS ports",
                );
            } else if !passthrough || certificates {
                r.error(&path.field("tls"), "server cannot have TLS settings for plain text HTTP ports")
                    .with_hint("only tls.httpsRedirect is allowed on an HTTP server; serve TLS with protocol HTTPS");
            }
        }
        _ => {}
    }
}

/// An absent mode is the proto default, PASSTHROUGH.
fn tls_mode(tls: &ServerTlsSettings) -> &str {
    tls.mode.as_deref().unwrap_or("PASSTHROUGH")
}

fn tls_options(r: &mut Report, path: &Path, tls: &ServerTlsSettings) {
    let mode = tls_mode(tls);
    one_of(
        r,
        &path.field("mode"),
        mode,
        &[
            "PASSTHROUGH",
            "SIMPLE",
            "MUTUAL",
            "AUTO_PASSTHROUGH",
            "ISTIO_MUTUAL",
            "OPTIONAL_MUTUAL",
        ],
    );
    const VERSIONS: [&str; 5] = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];
    for (field, version) in [
        ("minProtocolVersion", &tls.min_protocol_version),
        ("maxProtocolVersion", &tls.max_protocol_version),
    ] {
        if let Some(v) = version {
            one_of(r, &path.field(field), v, &VERSIONS);
        }
    }
    if matches!(
        tls.min_protocol_version.as_deref(),
        Some("TLSV1_0" | "TLSV1_1")
    ) && tls.cipher_suites.is_empty()
    {
        r.warning(&path.field("cipherSuites"), "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.");
    }
    let set = |field: &Option<String>| field.as_deref().is_some_and(|v| !v.is_empty());
    let certs = [
        (
            "serverCertificate",
            &tls.server_certificate,
            "server certificate",
        ),
        ("privateKey", &tls.private_key, "private key"),
        ("caCertificates", &tls.ca_certificates, "CA bundle"),
        ("credentialName", &tls.credential_name, "credentialName"),
    ];
    match mode {
        "ISTIO_MUTUAL" => {
            for (field, value, what) in certs {
                if set(value) {
                    r.error(
                        &path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                    )
                    .with_hint("ISTIO_MUTUAL uses the mesh's own certificates");
                }
            }
        }
        "PASSTHROUGH" | "AUTO_PASSTHROUGH" if certs.iter().any(|(_, value, _)| set(value)) => {
            r.warning(
                path,
                format!("{mode} mode does not use certificates, they will be ignored"),
            );
        }
        "PASSTHROUGH" | "AUTO_PASSTHROUGH" => {}
        _ if set(&tls.credential_name) => {}
        "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL" => {
            let word = if mode == "SIMPLE" { "SIMPLE" } else { "MUTUAL" };
            let mut need = vec![
                (
                    "serverCertificate",
                    &tls.server_certificate,
                    "a server certificate",
                ),
                ("privateKey", &tls.private_key, "a private key"),
            ];
            if mode != "SIMPLE" {
                need.push(("caCertificates", &tls.ca_certificates, "a client CA bundle"));
            }
            for (field, value, what) in need {
                if !set(value) {
                    r.error(&path.field(field), format!("{word} TLS requires {what}"))
                        .with_hint("or set credentialName to a Secret holding the certificates");
                }
            }
        }
        _ => {}
    }
}

pub fn validate_sidecar(r: &mut Report, sc: &Sidecar, namespace: &str) {
    let spec = Path::spec();
    if let Some(selector) = &sc.workload_selector {
        workload_selector(
            r,
            &spec.field("workloadSelector").field("labels"),
            &selector.labels,
        );
    }
    if sc.egress.is_empty() && sc.ingress.is_empty() && sc.outbound_traffic_policy.is_none() {
        r.error(&spec, "sidecar: empty configuration provided")
            .with_hint("set egress, ingress or outboundTrafficPolicy");
    }
    let mut ports = BTreeSet::new();
    for (i, listener) in sc.ingress.iter().enumerate() {
        let at = spec.field("ingress").index(i);
        let Some(p) = &listener.port else {
            r.error(
                &at.field("port"),
                format!("{REQUIRED}: sidecar: port is required for ingress listeners"),
            );
            continue;
        };
        sidecar_port(r, &at.field("port"), p);
        port(r, &at.field("port").field("number"), p.number);
        ip_bind(r, &at.field("bind"), listener.bind.as_deref());
        if !ports.insert(p.number) {
            r.error(
                &at.field("port").field("number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        if let Some(endpoint) = listener
            .default_endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
        {
            default_endpoint(r, &at.field("defaultEndpoint"), endpoint);
        }
    }

    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let last = sc.egress.len().saturating_sub(1);
    let mut catch_all_seen = false;
    for (i, listener) in sc.egress.iter().enumerate() {
        let at = spec.field("egress").index(i);
        match &listener.port {
            // One listener may omit the port: it catches everything else, so it comes last.
            None if catch_all_seen => {
                r.error(
                    &at.field("port"),
                    "sidecar: egress can have only one listener with empty port",
                );
                continue;
            }
            None => {
                catch_all_seen = true;
                if i != last {
                    r.error(&at.field("port"), "sidecar: the egress listener with empty port should be the last listener in the list");
                }
            }
            Some(p) => {
                sidecar_port(r, &at.field("port"), p);
                let bind = listener.bind.as_deref().unwrap_or_default();
                if p.number == 0 {
                    match unix_socket_problem(bind) {
                        _ if !bind.starts_with(UNIX_PREFIX) => {
                            r.error(&at.field("bind"), "sidecar: ports with 0 value must have a unix domain socket bind address");
                        }
                        Some(problem) => {
                            r.error(&at.field("bind"), invalid(bind, problem));
                        }
                        None => {}
                    }
                    if !sockets.insert(bind) {
                        r.error(
                            &at.field("bind"),
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                } else {
                    port(r, &at.field("port").field("number"), p.number);
                    ip_bind(r, &at.field("bind"), Some(bind));
                    if !ports.insert(p.number) {
                        r.error(
                            &at.field("port").field("number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
        }
        egress_hosts(r, &at.field("hosts"), &listener.hosts, namespace);
    }
}

/// Sidecar ports: optional name, known protocol, no targetPort.
fn sidecar_port(r: &mut Report, path: &Path, p: &GatewayPort) {
    if !p.name.is_empty() && !is_istio_label(&p.name) {
        r.error(
            &path.field("name"),
            invalid(&p.name, "invalid port name (must be a DNS-1123 label)"),
        );
    }
    protocol(r, &path.field("protocol"), &p.protocol);
    if p.target_port.is_some_and(|t| t > 0) {
        r.error(
            &path.field("targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
}

fn ip_bind(r: &mut Report, path: &Path, bind: Option<&str>) {
    if let Some(bind) = bind.filter(|b| !b.is_empty() && !is_ip(b)) {
        r.error(path, format!("{bind} is not a valid IP"));
    }
}

/// Where an ingress listener forwards: a loopback or wildcard address with a port, or a
/// Unix socket.
fn default_endpoint(r: &mut Report, path: &Path, endpoint: &str) {
    if endpoint.starts_with(UNIX_PREFIX) {
        if let Some(problem) = unix_socket_problem(endpoint) {
            r.error(path, invalid(endpoint, problem));
        }
        return;
    }
    let split = match endpoint.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        None => endpoint
            .rsplit_once(':')
            .filter(|(host, _)| !host.contains(':')),
    };
    let hint = "use 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix:///path";
    let Some((host, port_text)) = split else {
        r.error(path, invalid(endpoint, "address must be host:port"))
            .with_hint(hint);
        return;
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        r.error(path, "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset")
            .with_hint(hint);
    }
    match port_text.parse::<u32>() {
        Ok(n) => port(r, path, n),
        Err(_) => {
            r.error(
                path,
                format!("sidecar: defaultEndpoint port ({port_text}) is not a number"),
            );
        }
    }
}

fn egress_hosts(r: &mut Report, path: &Path, hosts: &[String], namespace: &str) {
    if hosts.is_empty() {
        r.error(
            path,
            format!("{REQUIRED}: sidecar: egress listener must contain at least one host"),
        )
        .with_hint("for example hosts: [\"./*\", \"istio-system/*\"]");
        return;
    }
    let mut by_namespace: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (i, entry) in hosts.iter().enumerate() {
        let at = path.index(i);
        namespace_slash_host(r, &at, entry, false);
        let Some((ns, host)) = entry.split_once('/') else {
            continue;
        };
        let ns = if ns == "." { namespace } else { ns };
        let seen = by_namespace.entry(ns).or_default();
        let duplicate = if host == "*" {
            !seen.is_empty()
        } else {
            seen.contains(host) || seen.contains("*")
        };
        if duplicate {
            r.warning(&at, format!("duplicated egress host: {entry}"));
        }
        seen.insert(host);
    }
    if by_namespace
        .get("*")
        .is_some_and(|hosts| hosts.contains("*"))
        && by_namespace.len() != 1
    {
        r.warning(
            path,
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}

#[cfg(test)]
mod tests;
