//! `security.istio.io` kinds: PeerAuthentication, AuthorizationPolicy and
//! RequestAuthentication.

use super::common::{invalid, min_duration, one_of, port, workload_selector, Path, Report};
use super::names::{ip_or_cidr, is_dns1123_label, is_dns1123_subdomain};
use crate::types::telemetry::PolicyTargetReference;
use crate::types::{
    AuthorizationPolicy, AuthzAction, Condition, ConditionKey, JwtRule, MtlsMode, Operation,
    PathPattern, PeerAuthentication, PeerMtls, RequestAuthentication, Source,
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
    targets(
        r,
        ap.selector.is_some(),
        ap.target_ref.as_ref(),
        &ap.target_refs,
    );
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

/// `selector` or `targetRef(s)`, as the security and telemetry CRDs check them.
pub fn targets(
    r: &mut Report,
    selector: bool,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let spec = Path::spec();
    if usize::from(selector)
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty())
        > 1
    {
        r.error(&spec, "only one of targetRefs or selector can be set");
    }
    let group =
        regex::Regex::new(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .expect("constant pattern");
    let kind =
        regex::Regex::new(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$").expect("constant pattern");
    let refs = target_ref
        .map(|t| (spec.field("targetRef"), t))
        .into_iter()
        .chain(
            target_refs
                .iter()
                .enumerate()
                .map(|(i, t)| (spec.field("targetRefs").index(i), t)),
        );
    for (path, t) in refs {
        if t.name.is_empty() {
            r.required(&path.field("name"));
        }
        if !t.namespace.is_empty() {
            r.error(
                &path.field("namespace"),
                "cross namespace referencing is not currently supported",
            );
        }
        if !group.is_match(&t.group) {
            r.error(
                &path.field("group"),
                format!(
                    "{} in body should match '{}'",
                    path.field("group"),
                    group.as_str()
                ),
            );
        }
        if !kind.is_match(&t.kind) {
            r.error(
                &path.field("kind"),
                format!(
                    "{} in body should match '{}'",
                    path.field("kind"),
                    kind.as_str()
                ),
            );
        }
    }
}

pub fn validate_request_authentication(r: &mut Report, ra: &RequestAuthentication) {
    let spec = Path::spec();
    if let Some(selector) = &ra.selector {
        workload_selector(
            r,
            &spec.field("selector").field("matchLabels"),
            &selector.match_labels,
        );
    }
    targets(
        r,
        ra.selector.is_some(),
        ra.target_ref.as_ref(),
        &ra.target_refs,
    );
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let at = spec.field("jwtRules").index(i);
        let Some(rule) = rule else {
            r.error(&at, format!("{at} in body must be of type object"));
            continue;
        };
        jwt_rule(r, &at, rule);
    }
}

fn non_empty_items(r: &mut Report, path: &Path, list: &[String]) {
    for (i, item) in list.iter().enumerate() {
        if item.is_empty() {
            let at = path.index(i);
            r.error(&at, format!("{at} in body should be at least 1 chars long"));
        }
    }
}

fn jwt_rule(r: &mut Report, at: &Path, rule: &JwtRule) {
    if rule.issuer.is_empty() {
        r.error(&at.field("issuer"), "issuer must be set");
    }
    non_empty_items(r, &at.field("audiences"), &rule.audiences);
    non_empty_items(r, &at.field("fromParams"), &rule.from_params);
    non_empty_items(r, &at.field("fromCookies"), &rule.from_cookies);
    non_empty_items(
        r,
        &at.field("spaceDelimitedClaims"),
        &rule.space_delimited_claims,
    );
    if rule.jwks.is_some() && rule.jwks_uri.is_some() {
        r.error(at, "only one of jwks or jwksUri can be set");
    }
    if let Some(uri) = &rule.jwks_uri {
        let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) || uri.contains(char::is_whitespace)
        {
            r.error(
                &at.field("jwksUri"),
                invalid(uri, "url must have scheme http:// or https://"),
            );
        }
    }
    if let Some(jwks) = &rule.jwks {
        if serde_json::from_str::<serde_json::Value>(jwks).map_or(true, |v| !v["keys"].is_array()) {
            r.error(
                &at.field("jwks"),
                "must be a JSON Web Key Set: {\"keys\": [...]}",
            );
        }
    }
    for (i, h) in rule.from_headers.iter().enumerate() {
        let path = at.field("fromHeaders").index(i).field("name");
        match h.name.as_deref() {
            None => {
                r.required(&path);
            }
            Some("") => {
                r.error(
                    &path,
                    format!("{path} in body should be at least 1 chars long"),
                );
            }
            Some(_) => {}
        }
    }
    let header = regex::Regex::new(r"^[-_A-Za-z0-9]+$").expect("constant pattern");
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        let path = at.field("outputClaimToHeaders").index(i);
        let Some(c) = c else {
            r.error(&path, format!("{path} in body must be of type object"));
            continue;
        };
        if c.claim.is_empty() {
            let p = path.field("claim");
            r.error(&p, format!("{p} in body should be at least 1 chars long"));
        }
        let p = path.field("header");
        if c.header.is_empty() {
            r.error(&p, format!("{p} in body should be at least 1 chars long"));
        } else if !header.is_match(&c.header) {
            r.error(&p, format!("{p} in body should match '^[-_A-Za-z0-9]+$'"));
        }
    }
    if let Some(timeout) = &rule.timeout {
        match crate::types::Duration::parse(timeout) {
            Ok(d) => {
                min_duration(r, &at.field("timeout"), d);
            }
            Err(e) => {
                r.error(
                    &at.field("timeout"),
                    invalid(
                        timeout,
                        format!("must be a valid duration greater than 1ms ({e})"),
                    ),
                );
            }
        }
    }
    if let Some(presence) = &rule.presence {
        one_of(
            r,
            &at.field("presence"),
            presence,
            &["OPTIONAL", "REQUIRED"],
        );
    }
}
