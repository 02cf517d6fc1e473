//! AuthorizationPolicy for one workload, compiled once per config version: the policies
//! that apply to it (its namespace's, selecting it or not, and the root namespace's), each
//! rule's values parsed into patterns and CIDRs. A request or TCP connection is then
//! decided as Istio's RBAC filters decide it: a matching DENY policy denies; with any ALLOW
//! policy, one must match; AUDIT decides nothing but notes, before DENY, whether one
//! matched (Envoy's `access_log_hint`, for access logs). CUSTOM comes first: a request a CUSTOM
//! policy matches is asked of its provider (`ext_authz.rs`); a TCP connection one matches,
//! or a request whose provider cannot be called, is denied rather than let through.

use crate::security::ext_authz::Provider;
use crate::security::jwt::Verified;
use crate::transport::conn::ConnInfo;
use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use weft_api::types::{
    AuthorizationPolicy, AuthzAction, AuthzRule, ConditionKey, PathPattern, Pattern,
};
use weft_api::{Resource, Spec};

/// The policies in force for one workload.
#[derive(Debug, Default)]
pub struct Authz {
    custom: Vec<Policy>,
    audit: Vec<Policy>,
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    /// What the CUSTOM policies' `provider.name`s resolved to.
    providers: std::collections::BTreeMap<String, Provider>,
}

#[derive(Debug)]
struct Policy {
    /// Envoy's policy name, `ns[default]-policy[deny-all]`, for the response details.
    name: String,
    /// `AuthorizationPolicy default/deny-all`, for the hint.
    resource: String,
    /// CUSTOM's `provider.name`.
    provider: Option<String>,
    rules: Vec<Rule>,
}

/// What a request or connection is, as the rules read it.
pub struct Subject<'a> {
    /// The caller's SPIFFE ID without `spiffe://` (`cluster.local/ns/default/sa/x`), when it
    /// came over mTLS.
    pub principal: Option<&'a str>,
    pub source: IpAddr,
    /// This workload's address and port as the caller addressed it.
    pub destination: SocketAddr,
    pub sni: Option<&'a str>,
    /// `None` for a TCP connection.
    pub http: Option<HttpSubject<'a>>,
}

pub struct HttpSubject<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// What a RequestAuthentication verified of the request's token.
    pub auth: Option<&'a Verified>,
}

impl<'a> Subject<'a> {
    /// A connection to `destination`, by what its transport proved: the mTLS peer and the
    /// server name its ClientHello asked for (the mesh's, a gateway's or the app's own TLS).
    pub fn connection(conn: &'a ConnInfo, destination: SocketAddr) -> Subject<'a> {
        let mtls = conn.mtls.as_ref();
        Subject {
            principal: mtls
                .and_then(|m| m.principal.as_deref())
                .map(|p| p.strip_prefix("spiffe://").unwrap_or(p)),
            source: conn.remote.ip(),
            destination,
            sni: conn
                .requested_server_name
                .as_deref()
                .or_else(|| mtls.and_then(|m| m.sni.as_deref())),
            http: None,
        }
    }
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Envoy's `%RESPONSE_CODE_DETAILS%`: `rbac_access_denied_matched_policy[ns[default]-policy[deny-all]-rule[0]]`,
    /// or `[none]` when no ALLOW policy matched.
    pub details: String,
    /// For `x-weft-error`: which policy, or that none allowed it.
    pub hint: String,
}

impl Authz {
    /// The AuthorizationPolicies among `resources` that apply to a workload in `namespace`
    /// with `labels`: its namespace's without a selector or selecting it, and the root
    /// namespace's likewise for every namespace.
    pub fn compile(
        resources: &[Resource],
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Authz {
        let mut authz = Authz::default();
        for r in resources {
            let Spec::AuthorizationPolicy(ap) = &r.spec else {
                continue;
            };
            let target_refs = ap.target_ref.is_some() || !ap.target_refs.is_empty();
            if !super::applies(r, ap.selector_labels(), target_refs, namespace, labels) {
                continue;
            }
            let Some(action) = ap.action() else {
                continue;
            };
            let list = match action {
                AuthzAction::Allow => &mut authz.allow,
                AuthzAction::Deny => &mut authz.deny,
                AuthzAction::Custom => &mut authz.custom,
                AuthzAction::Audit => &mut authz.audit,
            };
            list.push(Policy::compile(r, ap, action));
        }
        authz
    }

    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.audit.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
    }

    /// Whether an AUDIT policy matches, as Envoy's RBAC filter in LOG mode sets
    /// `access_log_hint`; `None` when no AUDIT policy applies to the workload.
    pub fn audited(&self, subject: &Subject<'_>) -> Option<bool> {
        (!self.audit.is_empty()).then(|| {
            self.audit
                .iter()
                .any(|p| p.matching_rule(subject).is_some())
        })
    }

    /// The provider names the CUSTOM policies give, for [`Authz::resolve`].
    pub fn provider_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .custom
            .iter()
            .filter_map(|p| p.provider.clone())
            .collect();
        names.dedup();
        names
    }

    pub fn resolve(&mut self, name: String, provider: Provider) {
        self.providers.insert(name, provider);
    }

    /// The provider of the first CUSTOM policy that matches a request, or why it cannot
    /// be asked.
    pub fn custom_provider(&self, subject: &Subject<'_>) -> Option<Result<&Provider, Denied>> {
        let policy = self
            .custom
            .iter()
            .find(|p| p.matching_rule(subject).is_some())?;
        let name = policy.provider.as_deref().unwrap_or_default();
        Some(self.providers.get(name).ok_or_else(|| Denied {
            details: "ext_authz_error".into(),
            hint: format!("{} names no provider", policy.resource),
        }))
    }

    /// A TCP connection: CUSTOM providers check HTTP only, so one a CUSTOM policy matches
    /// is denied; then DENY and ALLOW as for requests.
    pub fn check(&self, subject: &Subject<'_>) -> Result<(), Denied> {
        if let Some(provider) = self.custom_provider(subject) {
            let name = match provider {
                Ok(Provider::Http(p)) => p.name.as_str(),
                _ => "",
            };
            return Err(Denied {
                details: "ext_authz_error".into(),
                hint: format!(
                    "a CUSTOM policy asks the HTTP authorizer {name:?} about a TCP connection, which it cannot check; denied rather than let through"
                ),
            });
        }
        self.check_rbac(subject)
    }

    /// Istio's order after CUSTOM: a matching DENY policy denies; then, if there is any
    /// ALLOW policy, one of them must match.
    pub fn check_rbac(&self, subject: &Subject<'_>) -> Result<(), Denied> {
        for policy in &self.deny {
            if let Some(rule) = policy.matching_rule(subject) {
                return Err(Denied {
                    details: format!(
                        "rbac_access_denied_matched_policy[{}-rule[{rule}]]",
                        policy.name
                    ),
                    hint: format!("denied by {} (rule {rule})", policy.resource),
                });
            }
        }
        if self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|p| p.matching_rule(subject).is_some())
        {
            return Ok(());
        }
        Err(Denied {
            details: "rbac_access_denied_matched_policy[none]".into(),
            hint: format!(
                "no ALLOW policy matches; this workload has {}",
                self.allow
                    .iter()
                    .map(|p| p.resource.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

impl Policy {
    fn compile(r: &Resource, ap: &AuthorizationPolicy, action: AuthzAction) -> Policy {
        Policy {
            name: format!("ns[{}]-policy[{}]", r.namespace(), r.name()),
            resource: r.display_name(),
            provider: ap.provider.as_ref().map(|p| p.name.clone()),
            rules: ap
                .rules
                .iter()
                .map(|rule| Rule::compile(rule, r.namespace(), action))
                .collect(),
        }
    }

    fn matching_rule(&self, subject: &Subject<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(subject))
    }
}

/// One rule: any `from`, any `to`, every `when`.
#[derive(Debug)]
struct Rule {
    from: Vec<Vec<Check>>,
    to: Vec<Vec<Check>>,
    when: Vec<Check>,
    /// For TCP: what an HTTP-only field says. An ALLOW rule with one never matches a
    /// connection; a DENY rule matches on its other fields, which denies more.
    tcp_http_only: bool,
}

impl Rule {
    fn compile(rule: &AuthzRule, namespace: &str, action: AuthzAction) -> Rule {
        let from = rule
            .from
            .iter()
            .filter_map(|f| f.source.as_ref())
            .map(|s| {
                let accounts = |list: &[String]| -> Vec<String> {
                    list.iter()
                        .map(|sa| {
                            let (ns, name) = sa.split_once('/').unwrap_or((namespace, sa));
                            format!("*/ns/{ns}/sa/{name}")
                        })
                        .collect()
                };
                checks([
                    (Attr::Principal, &s.principals[..], false),
                    (Attr::Principal, &s.not_principals, true),
                    (Attr::RequestPrincipal, &s.request_principals, false),
                    (Attr::RequestPrincipal, &s.not_request_principals, true),
                    (Attr::Namespace, &s.namespaces, false),
                    (Attr::Namespace, &s.not_namespaces, true),
                    (Attr::TrustDomain, &s.trust_domains, false),
                    (Attr::TrustDomain, &s.not_trust_domains, true),
                    (Attr::Principal, &accounts(&s.service_accounts), false),
                    (Attr::Principal, &accounts(&s.not_service_accounts), true),
                    (Attr::SourceIp, &s.ip_blocks, false),
                    (Attr::SourceIp, &s.not_ip_blocks, true),
                    (Attr::RemoteIp, &s.remote_ip_blocks, false),
                    (Attr::RemoteIp, &s.not_remote_ip_blocks, true),
                ])
            })
            .collect();
        let to = rule
            .to
            .iter()
            .filter_map(|t| t.operation.as_ref())
            .map(|o| {
                checks([
                    (Attr::Host, &o.hosts[..], false),
                    (Attr::Host, &o.not_hosts, true),
                    (Attr::DestinationPort, &o.ports, false),
                    (Attr::DestinationPort, &o.not_ports, true),
                    (Attr::Method, &o.methods, false),
                    (Attr::Method, &o.not_methods, true),
                    (Attr::Path, &o.paths, false),
                    (Attr::Path, &o.not_paths, true),
                ])
            })
            .collect();
        let mut when = Vec::new();
        for c in &rule.when {
            // Validation refused unknown keys; a key this build cannot read never holds.
            let attr = ConditionKey::parse(&c.key).map_or(Attr::Never, Attr::Condition);
            if !c.values.is_empty() {
                when.push(Check::new(attr.clone(), &c.values, false));
            }
            if !c.not_values.is_empty() {
                when.push(Check::new(attr, &c.not_values, true));
            }
        }
        Rule {
            from,
            to,
            when,
            tcp_http_only: action != AuthzAction::Allow,
        }
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        let all = |checks: &[Check]| checks.iter().all(|c| c.holds(s, self.tcp_http_only));
        (self.from.is_empty() || self.from.iter().any(|f| all(f)))
            && (self.to.is_empty() || self.to.iter().any(|t| all(t)))
            && all(&self.when)
    }
}

/// The checks for the fields a source or operation sets: (what, values, negated).
fn checks<const N: usize>(fields: [(Attr, &[String], bool); N]) -> Vec<Check> {
    fields
        .into_iter()
        .filter(|(_, values, _)| !values.is_empty())
        .map(|(attr, values, negated)| Check::new(attr, values, negated))
        .collect()
}

/// What a check reads.
#[derive(Debug, Clone)]
enum Attr {
    Principal,
    RequestPrincipal,
    Namespace,
    TrustDomain,
    SourceIp,
    RemoteIp,
    Host,
    DestinationPort,
    Method,
    Path,
    Condition(ConditionKey),
    Never,
}

/// One field of a rule: the attribute matches one of the values (or, negated, none).
#[derive(Debug)]
struct Check {
    attr: Attr,
    values: Values,
    negated: bool,
}

#[derive(Debug)]
enum Values {
    Patterns(Vec<Pattern>),
    Paths(Vec<PathPattern>),
    Cidrs(Vec<IpNet>),
    Ports(Vec<u16>),
}

impl Check {
    fn new(attr: Attr, values: &[String], negated: bool) -> Check {
        let cidrs = || {
            Values::Cidrs(
                values
                    .iter()
                    .filter_map(|v| {
                        v.parse::<IpNet>()
                            .ok()
                            .or_else(|| v.parse::<IpAddr>().ok().map(IpNet::from))
                    })
                    .collect(),
            )
        };
        let ports = || Values::Ports(values.iter().filter_map(|v| v.parse().ok()).collect());
        let values = match &attr {
            Attr::SourceIp | Attr::RemoteIp => cidrs(),
            Attr::Condition(
                ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp,
            ) => cidrs(),
            Attr::DestinationPort | Attr::Condition(ConditionKey::DestinationPort) => ports(),
            // Validation refused a path that is no template; one that fails here matches nothing.
            Attr::Path => Values::Paths(
                values
                    .iter()
                    .filter_map(|p| PathPattern::parse(p).ok())
                    .collect(),
            ),
            _ => Values::Patterns(values.iter().map(|v| Pattern::parse(v)).collect()),
        };
        Check {
            attr,
            values,
            negated,
        }
    }

    fn http_only(&self) -> bool {
        match &self.attr {
            Attr::RequestPrincipal | Attr::Host | Attr::Method | Attr::Path => true,
            Attr::Condition(key) => key.http_only(),
            _ => false,
        }
    }

    /// Whether the field holds for `s`; `tcp_http_only` is what an HTTP-only field says of
    /// a TCP connection.
    fn holds(&self, s: &Subject<'_>, tcp_http_only: bool) -> bool {
        if s.http.is_none() && self.http_only() {
            return tcp_http_only;
        }
        self.matches(s) != self.negated
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        let text = |value: Option<&str>| match (&self.values, value) {
            (Values::Patterns(patterns), Some(v)) => patterns.iter().any(|p| p.matches(v)),
            _ => false,
        };
        let ip = |value: IpAddr| match &self.values {
            Values::Cidrs(cidrs) => cidrs.iter().any(|c| c.contains(&value)),
            _ => false,
        };
        let port = |value: u16| match &self.values {
            Values::Ports(ports) => ports.contains(&value),
            _ => false,
        };
        let http = s.http.as_ref();
        let auth = http.and_then(|h| h.auth);
        match &self.attr {
            Attr::Principal | Attr::Condition(ConditionKey::SourcePrincipal) => text(s.principal),
            Attr::Namespace | Attr::Condition(ConditionKey::SourceNamespace) => {
                text(s.principal.and_then(principal_namespace))
            }
            Attr::TrustDomain | Attr::Condition(ConditionKey::SourceTrustDomain) => {
                text(s.principal.and_then(|p| p.split('/').next()))
            }
            // Without a verified token there is no request principal.
            Attr::RequestPrincipal | Attr::Condition(ConditionKey::RequestAuthPrincipal) => {
                text(auth.map(|a| a.principal.as_str()))
            }
            Attr::Condition(ConditionKey::RequestAuthAudiences) => {
                auth.is_some_and(|a| a.audiences.iter().any(|aud| text(Some(aud.as_str()))))
            }
            Attr::Condition(ConditionKey::RequestAuthPresenter) => {
                text(auth.and_then(|a| a.presenter.as_deref()))
            }
            Attr::Condition(ConditionKey::RequestAuthClaims(path)) => auth.is_some_and(|a| {
                let claim = path.iter().fold(&a.claims, |v, key| &v[key.as_str()]);
                claim_values(claim, a.space_delimited(path))
                    .iter()
                    .any(|v| text(Some(v.as_ref())))
            }),
            // Sidecars trust no forwarding header: the remote address is the peer's.
            Attr::SourceIp
            | Attr::RemoteIp
            | Attr::Condition(ConditionKey::SourceIp | ConditionKey::RemoteIp) => ip(s.source),
            Attr::Condition(ConditionKey::DestinationIp) => ip(s.destination.ip()),
            Attr::DestinationPort | Attr::Condition(ConditionKey::DestinationPort) => {
                port(s.destination.port())
            }
            Attr::Condition(ConditionKey::ConnectionSni) => text(s.sni),
            Attr::Host => match (&self.values, http) {
                // With and without the port, as Istio matches hosts.
                (Values::Patterns(patterns), Some(h)) => patterns.iter().any(|p| {
                    p.matches_ignoring_case(h.host)
                        || p.matches_ignoring_case(crate::model::strip_port(h.host))
                }),
                _ => false,
            },
            Attr::Method => text(http.map(|h| h.method)),
            Attr::Path => match (&self.values, http) {
                (Values::Paths(paths), Some(h)) => paths.iter().any(|p| p.matches(h.path)),
                _ => false,
            },
            Attr::Condition(ConditionKey::RequestHeader(name)) => match (&self.values, http) {
                (Values::Patterns(patterns), Some(h)) => h
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| patterns.iter().any(|p| p.matches(v))),
                _ => false,
            },
            Attr::Condition(ConditionKey::Experimental(_)) | Attr::Never => false,
        }
    }
}

/// A claim's values as Istio matches them: a string (each word of `scope` and `permission`,
/// which OAuth writes space-delimited), each string of a list, a number or boolean as text.
fn claim_values(
    claim: &serde_json::Value,
    space_delimited: bool,
) -> Vec<std::borrow::Cow<'_, str>> {
    use serde_json::Value;
    match claim {
        Value::String(s) if space_delimited => {
            s.split(' ').map(std::borrow::Cow::Borrowed).collect()
        }
        Value::String(s) => vec![std::borrow::Cow::Borrowed(s.as_str())],
        Value::Array(list) => list
            .iter()
            .filter_map(|v| v.as_str().map(std::borrow::Cow::Borrowed))
            .collect(),
        Value::Number(n) => vec![std::borrow::Cow::Owned(n.to_string())],
        Value::Bool(b) => vec![std::borrow::Cow::Owned(b.to_string())],
        _ => Vec::new(),
    }
}

/// `cluster.local/ns/default/sa/x` → `default`.
fn principal_namespace(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    parts.next()?;
    (parts.next()? == "ns").then_some(())?;
    parts.next()
}

#[cfg(test)]
mod tests {
    //! Every field of a rule and every `when` key, with its `not` form, against requests
    //! and connections that differ in that one attribute.
    use super::*;
    use std::sync::Arc;

    /// reviews' policies in `default`: one ALLOW policy whose single rule is `rule`.
    fn allowing(rule: &str) -> Authz {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: default}}\nspec:\n  rules:\n  - {rule}\n"
        );
        let loaded = weft_api::load_str(&yaml, std::path::Path::new("t.yaml"));
        assert!(!loaded.has_errors(), "{rule}: {:?}", loaded.diagnostics);
        let labels = [("app".to_string(), "reviews".to_string())].into();
        Authz::compile(&loaded.resources, "default", &labels)
    }

    /// A request from productpage's sidecar over mTLS, SNI and a verified token, to
    /// reviews on 10.0.0.2:9080; `change` alters one attribute.
    struct Request {
        principal: Option<&'static str>,
        source: IpAddr,
        destination: SocketAddr,
        sni: Option<&'static str>,
        method: &'static str,
        host: &'static str,
        path: &'static str,
        headers: HeaderMap,
        auth: Option<Verified>,
        tcp: bool,
    }

    fn request() -> Request {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        Request {
            principal: Some("cluster.local/ns/default/sa/bookinfo-productpage"),
            source: "10.0.0.1".parse().unwrap(),
            destination: "10.0.0.2:9080".parse().unwrap(),
            sni: Some("outbound_.9080_._.reviews.default.svc.cluster.local"),
            method: "GET",
            host: "reviews:9080",
            path: "/reviews/1",
            headers,
            auth: Some(Verified {
                principal: "https://issuer.example/alice".into(),
                audiences: vec!["bookinfo".into()],
                presenter: Some("web".into()),
                claims: serde_json::json!({"groups": ["dev"], "scope": "read write", "n": {"level": 3}}),
                space_delimited: Arc::from(Vec::new()),
            }),
            tcp: false,
        }
    }

    fn allowed(authz: &Authz, r: &Request) -> bool {
        let subject = Subject {
            principal: r.principal,
            source: r.source,
            destination: r.destination,
            sni: r.sni,
            http: (!r.tcp).then_some(HttpSubject {
                method: r.method,
                host: r.host,
                path: r.path,
                headers: &r.headers,
                auth: r.auth.as_ref(),
            }),
        };
        authz.check(&subject).is_ok()
    }

    /// `rule` allows the plain request and refuses it once `change` is made; its `not`
    /// form (`negated`) does the opposite.
    fn decides(rule: &str, negated: &str, change: impl Fn(&mut Request)) {
        let mut changed = request();
        change(&mut changed);
        let authz = allowing(rule);
        assert!(allowed(&authz, &request()), "{rule} refused the request");
        assert!(!allowed(&authz, &changed), "{rule} allowed the changed one");
        let authz = allowing(negated);
        assert!(
            !allowed(&authz, &request()),
            "{negated} allowed the request"
        );
        assert!(
            allowed(&authz, &changed),
            "{negated} refused the changed one"
        );
    }

    fn source(field: &str, values: &str) -> String {
        format!("from: [{{source: {{{field}: {values}}}}}]")
    }

    fn operation(field: &str, values: &str) -> String {
        format!("to: [{{operation: {{{field}: {values}}}}}]")
    }

    fn when(key: &str, values: &str) -> (String, String) {
        (
            format!("when: [{{key: \"{key}\", values: {values}}}]"),
            format!("when: [{{key: \"{key}\", notValues: {values}}}]"),
        )
    }

    fn other_caller(r: &mut Request) {
        r.principal = Some("cluster.local/ns/prod/sa/curl");
    }

    fn other_address(r: &mut Request) {
        r.source = "192.168.1.9".parse().unwrap();
    }

    fn other_token(r: &mut Request) {
        r.auth = Some(Verified {
            principal: "https://other.example/bob".into(),
            audiences: vec!["elsewhere".into()],
            presenter: None,
            claims: serde_json::json!({"groups": ["ops"], "scope": "admin"}),
            space_delimited: Arc::from(Vec::new()),
        });
    }

    #[test]
    fn every_source_field_and_its_not_form() {
        let pp = "[cluster.local/ns/default/sa/bookinfo-productpage]";
        for (field, not, values, change) in [
            (
                "principals",
                "notPrincipals",
                pp,
                other_caller as fn(&mut Request),
            ),
            (
                "principals",
                "notPrincipals",
                "[\"*/sa/bookinfo-productpage\"]",
                other_caller,
            ),
            ("namespaces", "notNamespaces", "[default]", other_caller),
            (
                "serviceAccounts",
                "notServiceAccounts",
                "[bookinfo-productpage]",
                other_caller,
            ),
            ("ipBlocks", "notIpBlocks", "[10.0.0.0/24]", other_address),
            (
                "remoteIpBlocks",
                "notRemoteIpBlocks",
                "[10.0.0.1]",
                other_address,
            ),
            (
                "requestPrincipals",
                "notRequestPrincipals",
                "[\"https://issuer.example/*\"]",
                other_token,
            ),
        ] {
            decides(&source(field, values), &source(not, values), change);
        }
        // A request without a verified token has no request principal.
        let authz = allowing(&source("requestPrincipals", "[\"*\"]"));
        let mut anonymous = request();
        anonymous.auth = None;
        assert!(!allowed(&authz, &anonymous));
    }

    #[test]
    fn every_operation_field_and_its_not_form() {
        for (field, not, values, change) in [
            (
                "hosts",
                "notHosts",
                "[reviews]",
                (|r| r.host = "ratings:9080") as fn(&mut Request),
            ),
            ("ports", "notPorts", "[\"9080\"]", |r| {
                r.destination.set_port(9090)
            }),
            ("methods", "notMethods", "[GET, HEAD]", |r| {
                r.method = "DELETE"
            }),
            ("paths", "notPaths", "[/reviews/*]", |r| {
                r.path = "/ratings/1"
            }),
            ("paths", "notPaths", "[\"*/1\"]", |r| r.path = "/reviews/2"),
            ("paths", "notPaths", "[\"/reviews*\"]", |r| {
                r.path = "/ratings"
            }),
        ] {
            decides(&operation(field, values), &operation(not, values), change);
        }
    }

    #[test]
    fn every_when_key_and_its_not_values() {
        for (key, values, change) in [
            (
                "request.headers[x-user]",
                "[ali*]",
                (|r| {
                    r.headers.insert("x-user", "bob".parse().unwrap());
                }) as fn(&mut Request),
            ),
            ("source.ip", "[10.0.0.0/8]", other_address),
            ("remote.ip", "[10.0.0.1]", other_address),
            ("source.namespace", "[default]", other_caller),
            (
                "source.principal",
                "[cluster.local/ns/default/sa/bookinfo-productpage]",
                other_caller,
            ),
            (
                "request.auth.principal",
                "[https://issuer.example/alice]",
                other_token,
            ),
            ("request.auth.audiences", "[bookinfo]", other_token),
            ("request.auth.presenter", "[web]", other_token),
            ("request.auth.claims[groups]", "[dev]", other_token),
            ("request.auth.claims[scope]", "[write]", other_token),
            ("request.auth.claims[n][level]", "[\"3\"]", other_token),
            ("destination.ip", "[10.0.0.2]", |r| {
                r.destination.set_ip("10.0.0.3".parse().unwrap())
            }),
            ("destination.port", "[\"9080\"]", |r| {
                r.destination.set_port(9090)
            }),
            (
                "connection.sni",
                "[\"*.reviews.default.svc.cluster.local\"]",
                |r| r.sni = Some("outbound_.9080_._.ratings.default.svc.cluster.local"),
            ),
        ] {
            let (rule, negated) = when(key, values);
            decides(&rule, &negated, change);
        }
    }

    #[test]
    fn a_tcp_connection_meets_an_http_only_field_as_its_action_says() {
        let mut tcp = request();
        tcp.tcp = true;
        // ALLOW: a rule that needs HTTP never matches a TCP connection.
        assert!(!allowed(&allowing(&operation("methods", "[GET]")), &tcp));
        assert!(allowed(&allowing(&operation("ports", "[\"9080\"]")), &tcp));
        assert!(allowed(
            &allowing(
                &when(
                    "connection.sni",
                    "[\"*.reviews.default.svc.cluster.local\"]"
                )
                .0
            ),
            &tcp
        ));
    }

    #[test]
    fn target_refs_attach_to_no_sidecar() {
        let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-gw, namespace: default}\nspec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: bookinfo-gateway}]\n  action: DENY\n  rules: [{}]\n";
        let loaded = weft_api::load_str(yaml, std::path::Path::new("t.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let warning = loaded.warnings().next().expect("a warning").to_string();
        assert!(
            warning.contains("applies to no sidecar or Istio gateway"),
            "{warning}"
        );
        let labels = [("app".to_string(), "reviews".to_string())].into();
        let authz = Authz::compile(&loaded.resources, "default", &labels);
        assert!(authz.is_empty());
        assert!(allowed(&authz, &request()));
    }
}
