//! `security.istio.io` kinds: PeerAuthentication and AuthorizationPolicy.

use super::common::{invalid, one_of, port, workload_selector, Path, Report};
use super::names::{ip_or_cidr, is_dns1123_label, is_dns1123_subdomain};
use crate::types::{
    AuthorizationPolicy, AuthzAction, Condition, ConditionKey, MtlsMode, Operation, PathPattern,
    PeerAuthentication, PeerMtls, Source,
};

pub fn validate_peer_authentication(r: &mut Report, pa: &PeerAuthentication) {
    let spec = Path::spec();
    if let Some(selector) = &pa.selector {
        workload_selector(
            r,
            &spec.field("selector").field("matchLabels"),
            &selector.match_labels,
        );
    }
    if let Some(mtls) = &pa.mtls {
        mode(r, &spec.field("mtls"), mtls);
    }
    let Some(ports) = &pa.port_level_mtls else {
        return;
    };
    let at = spec.field("portLevelMtls");
    if ports.is_empty() {
        r.error(
            &at,
            "spec.portLevelMtls in body should have at least 1 properties",
        );
    }
    if pa.selector_labels().is_none() {
        r.error(&at, "portLevelMtls requires selector")
            .with_hint("port-level settings apply to a workload's ports: select the workload with selector.matchLabels");
    }
    for (key, mtls) in ports {
        let path = at.key(key);
        match key.parse::<u32>() {
            Ok(number) => port(r, &path, number),
            Err(_) => {
                r.error(
                    &path,
                    format!("type conversion error from {key:?} to a port number"),
                );
            }
        }
        mode(r, &path, mtls);
    }
}

fn mode(r: &mut Report, path: &Path, mtls: &PeerMtls) {
    if let Some(mode) = &mtls.mode {
        one_of(r, &path.field("mode"), mode, &MtlsMode::NAMES);
    }
}

pub fn validate_authorization_policy(r: &mut Report, ap: &AuthorizationPolicy, namespace: &str) {
    let spec = Path::spec();
    if let Some(selector) = &ap.selector {
        workload_selector(
            r,
            &spec.field("selector").field("matchLabels"),
            &selector.match_labels,
        );
    }
    let targets = usize::from(ap.selector.is_some())
        + usize::from(ap.target_ref.is_some())
        + usize::from(!ap.target_refs.is_empty());
    if targets > 1 {
        r.error(&spec, "only one of targetRefs or selector can be set");
    }
    if ap.target_ref.is_some() || !ap.target_refs.is_empty() {
        r.warning(
            &spec.field(if ap.target_ref.is_some() {
                "targetRef"
            } else {
                "targetRefs"
            }),
            "targetRefs attach to Gateway API gateways and waypoints, which Weft does not run; \
             this policy applies to no sidecar or Istio gateway",
        )
        .with_hint("use selector.matchLabels to choose workloads");
    }
    let action = match &ap.action {
        Some(action) => {
            one_of(r, &spec.field("action"), action, &AuthzAction::NAMES);
            AuthzAction::parse(Some(action))
        }
        None => Some(AuthzAction::Allow),
    };
    match (action, &ap.provider) {
        (Some(AuthzAction::Custom), None) => {
            r.error(
                &spec.field("provider"),
                "must specify provider when using CUSTOM action",
            )
            .with_hint("name a MeshConfig extensionProviders entry: provider: {name: ...}");
        }
        (Some(AuthzAction::Custom), Some(p)) if p.name.is_empty() => {
            r.error(&spec.field("provider").field("name"), "must not be empty");
        }
        (Some(AuthzAction::Custom), Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            r.error(
                &spec.field("provider"),
                "provider can only be used with CUSTOM action",
            );
        }
    }
    if action == Some(AuthzAction::Deny) && ap.rules.is_empty() {
        r.warning(
            &spec.field("rules"),
            "a DENY policy without rules matches nothing, so it denies nothing",
        )
        .with_hint(
            "to deny everything, write rules: [{}]; an ALLOW policy without rules allows nothing",
        );
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let at = spec.field("rules").index(i);
        for (j, from) in rule.from.iter().enumerate() {
            let path = at.field("from").index(j).field("source");
            match &from.source {
                None => {
                    r.error(&path, "`from.source` must not be nil");
                }
                Some(source) => self::source(r, &path, source, namespace),
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let path = at.field("to").index(j).field("operation");
            match &to.operation {
                None => {
                    r.error(&path, "`to.operation` must not be nil");
                }
                Some(op) => operation(r, &path, op),
            }
        }
        for (j, condition) in rule.when.iter().enumerate() {
            self::condition(r, &at.field("when").index(j), condition);
        }
    }
}

fn source(r: &mut Report, path: &Path, s: &Source, namespace: &str) {
    let lists: [(&str, &[String]); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        r.error(path, "`from.source` must not be empty");
    }
    let accounts = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    if accounts
        && (!s.principals.is_empty()
            || !s.not_principals.is_empty()
            || !s.namespaces.is_empty()
            || !s.not_namespaces.is_empty())
    {
        r.error(
            path,
            "Cannot set serviceAccounts with namespaces or principals",
        );
    }
    for (field, list) in [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        if list.len() > 16 {
            r.error(&path.field(field), "must have at most 16 items");
        }
        for (i, sa) in list.iter().enumerate() {
            let (ns, name) = sa.split_once('/').unwrap_or((namespace, sa));
            if sa.len() > 320 || !is_dns1123_label(ns) || !is_dns1123_subdomain(name) {
                r.error(
                    &path.field(field).index(i),
                    invalid(sa, "a service account is NAME or NAMESPACE/NAME"),
                );
            }
        }
    }
    for (field, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        ips(r, &path.field(field), list);
    }
    for (field, list) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
    ] {
        for (i, p) in list.iter().enumerate() {
            if p.starts_with("spiffe://") {
                r.warning(
                    &path.field(field).index(i),
                    format!("{p:?} starts with spiffe://, which principals are written without"),
                )
                .with_hint(format!(
                    "write {:?}: Istio matches the SPIFFE ID without its scheme",
                    p.trim_start_matches("spiffe://")
                ));
            }
        }
    }
}

fn ips(r: &mut Report, path: &Path, list: &[String]) {
    for (i, ip) in list.iter().enumerate() {
        if let Err(e) = ip_or_cidr(ip) {
            r.error(&path.index(i), e);
        }
    }
}

fn ports(r: &mut Report, path: &Path, list: &[String]) {
    for (i, p) in list.iter().enumerate() {
        match p.parse::<u32>() {
            Ok(n) => port(r, &path.index(i), n),
            Err(_) => {
                r.error(&path.index(i), invalid(p, "a port is a number"));
            }
        }
    }
}

fn operation(r: &mut Report, path: &Path, op: &Operation) {
    let lists: [&[String]; 8] = [
        &op.hosts,
        &op.not_hosts,
        &op.ports,
        &op.not_ports,
        &op.methods,
        &op.not_methods,
        &op.paths,
        &op.not_paths,
    ];
    if lists.iter().all(|l| l.is_empty()) {
        r.error(path, "`to.operation` must not be empty");
    }
    ports(r, &path.field("ports"), &op.ports);
    ports(r, &path.field("notPorts"), &op.not_ports);
    for (field, list) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
        for (i, p) in list.iter().enumerate() {
            if let Err(e) = PathPattern::parse(p) {
                r.error(&path.field(field).index(i), invalid(p, e));
            }
        }
    }
}

fn condition(r: &mut Report, path: &Path, c: &Condition) {
    if c.key.is_empty() {
        r.error(&path.field("key"), "`key` must not be empty");
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        r.error(
            path,
            format!(
                "at least one of `values` or `notValues` must be set for key {}",
                c.key
            ),
        );
    }
    let key = match ConditionKey::parse(&c.key) {
        Ok(key) => key,
        Err(e) => {
            r.error(&path.field("key"), e);
            return;
        }
    };
    for (field, list) in [("values", &c.values), ("notValues", &c.not_values)] {
        match key {
            ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                ips(r, &path.field(field), list)
            }
            ConditionKey::DestinationPort => ports(r, &path.field(field), list),
            _ => {}
        }
    }
    if let ConditionKey::Experimental(_) = key {
        r.warning(
            &path.field("key"),
            "experimental.envoy.filters keys read Envoy's dynamic metadata, which Weft has none of: the condition never holds",
        );
    }
}
