//! `security.istio.io` resources, field for field as Istio's reference names them.

use super::telemetry::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// PeerAuthentication: whether a workload's sidecar requires, allows or refuses mTLS from
/// its callers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// By the workload's port number, written as a string key as in Istio's YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, PeerMtls>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerMtls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// PeerAuthentication's `mtls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Plaintext only: a sidecar's mTLS is not terminated.
    Disable,
    /// mTLS and plaintext on the same port: Istio's default.
    Permissive,
    /// mTLS only: a plaintext connection is closed.
    Strict,
}

impl MtlsMode {
    pub const NAMES: [&'static str; 4] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

    /// `None` for UNSET or no mode, which inherit from the level above.
    pub fn parse(mode: Option<&str>) -> Option<MtlsMode> {
        match mode? {
            "DISABLE" => Some(MtlsMode::Disable),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "STRICT" => Some(MtlsMode::Strict),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

impl PeerMtls {
    pub fn mode(&self) -> Option<MtlsMode> {
        MtlsMode::parse(self.mode.as_deref())
    }
}

/// Istio treats a selector without labels as none: the policy is namespace-wide.
fn selecting(selector: &Option<LabelSelector>) -> Option<&BTreeMap<String, String>> {
    selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

impl PeerAuthentication {
    pub fn selector_labels(&self) -> Option<&BTreeMap<String, String>> {
        selecting(&self.selector)
    }
}

/// AuthorizationPolicy: who may call a workload, and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<super::telemetry::PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<super::telemetry::PolicyTargetReference>,
    /// No rules: the policy matches nothing (an ALLOW policy then allows nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthzRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthzRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// AuthorizationPolicy's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    Allow,
    Deny,
    Audit,
    Custom,
}

impl AuthzAction {
    pub const NAMES: [&'static str; 4] = ["ALLOW", "DENY", "AUDIT", "CUSTOM"];

    /// ALLOW when unset, as Istio's default.
    pub fn parse(action: Option<&str>) -> Option<AuthzAction> {
        match action.unwrap_or("ALLOW") {
            "ALLOW" => Some(AuthzAction::Allow),
            "DENY" => Some(AuthzAction::Deny),
            "AUDIT" => Some(AuthzAction::Audit),
            "CUSTOM" => Some(AuthzAction::Custom),
            _ => None,
        }
    }
}

impl AuthorizationPolicy {
    pub fn action(&self) -> Option<AuthzAction> {
        AuthzAction::parse(self.action.as_deref())
    }

    pub fn selector_labels(&self) -> Option<&BTreeMap<String, String>> {
        selecting(&self.selector)
    }
}

/// A `when` condition's `key`, as Istio's authorization reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[NAME]`, the name as written.
    RequestHeader(String),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    SourceTrustDomain,
    RequestAuthPrincipal,
    RequestAuthAudiences,
    RequestAuthPresenter,
    /// `request.auth.claims[a][b]`: the path into nested claims.
    RequestAuthClaims(Vec<String>),
    DestinationIp,
    DestinationPort,
    ConnectionSni,
    /// `experimental.envoy.filters.*`: Envoy's dynamic metadata, which Weft has none of.
    Experimental(String),
}

impl ConditionKey {
    pub fn parse(key: &str) -> Result<ConditionKey, String> {
        let bracketed = |rest: &str| -> Option<Vec<String>> {
            let mut parts = Vec::new();
            let mut rest = rest;
            while !rest.is_empty() {
                let inner = rest.strip_prefix('[')?;
                let (name, after) = inner.split_once(']')?;
                if name.is_empty() {
                    return None;
                }
                parts.push(name.to_string());
                rest = after;
            }
            (!parts.is_empty()).then_some(parts)
        };
        Ok(match key {
            "source.ip" => ConditionKey::SourceIp,
            "remote.ip" => ConditionKey::RemoteIp,
            "source.namespace" => ConditionKey::SourceNamespace,
            "source.principal" => ConditionKey::SourcePrincipal,
            "source.trustDomain" => ConditionKey::SourceTrustDomain,
            "request.auth.principal" => ConditionKey::RequestAuthPrincipal,
            "request.auth.audiences" => ConditionKey::RequestAuthAudiences,
            "request.auth.presenter" => ConditionKey::RequestAuthPresenter,
            "destination.ip" => ConditionKey::DestinationIp,
            "destination.port" => ConditionKey::DestinationPort,
            "connection.sni" => ConditionKey::ConnectionSni,
            _ => {
                if let Some(rest) = key.strip_prefix("request.headers") {
                    match bracketed(rest) {
                        Some(names) if names.len() == 1 => {
                            ConditionKey::RequestHeader(names[0].clone())
                        }
                        _ => {
                            return Err(format!(
                                "invalid header key {key:?}: write request.headers[NAME]"
                            ))
                        }
                    }
                } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                    ConditionKey::RequestAuthClaims(bracketed(rest).ok_or_else(|| {
                        format!("invalid claim key {key:?}: write request.auth.claims[NAME], nested as [a][b]")
                    })?)
                } else if key.starts_with("experimental.envoy.filters.") {
                    ConditionKey::Experimental(key.to_string())
                } else {
                    return Err(format!("unknown attribute ({key})"));
                }
            }
        })
    }

    /// Keys only an HTTP request has: a TCP connection never matches them.
    pub fn http_only(&self) -> bool {
        matches!(
            self,
            ConditionKey::RequestHeader(_)
                | ConditionKey::RequestAuthPrincipal
                | ConditionKey::RequestAuthAudiences
                | ConditionKey::RequestAuthPresenter
                | ConditionKey::RequestAuthClaims(_)
        )
    }
}

/// An authorization value as Istio matches it: exact, `prefix*`, `*suffix`, or `*` for any
/// value present (not empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Present,
}

impl Pattern {
    pub fn parse(value: &str) -> Pattern {
        if value == "*" {
            Pattern::Present
        } else if let Some(prefix) = value.strip_suffix('*') {
            Pattern::Prefix(prefix.to_string())
        } else if let Some(suffix) = value.strip_prefix('*') {
            Pattern::Suffix(suffix.to_string())
        } else {
            Pattern::Exact(value.to_string())
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(e) => value == e,
            Pattern::Prefix(p) => value.starts_with(p.as_str()),
            Pattern::Suffix(s) => value.ends_with(s.as_str()),
            Pattern::Present => !value.is_empty(),
        }
    }

    /// The same, ignoring ASCII case (hosts).
    pub fn matches_ignoring_case(&self, value: &str) -> bool {
        let folded = |s: &str, at: usize| {
            value
                .get(at..at + s.len())
                .is_some_and(|v| v.eq_ignore_ascii_case(s))
        };
        match self {
            Pattern::Exact(e) => value.eq_ignore_ascii_case(e),
            Pattern::Prefix(p) => folded(p, 0),
            Pattern::Suffix(s) => value.len() >= s.len() && folded(s, value.len() - s.len()),
            Pattern::Present => !value.is_empty(),
        }
    }
}

/// An Operation's path: a [`Pattern`], or with `{*}` (one segment) and `{**}` (one or
/// more) an Envoy URI template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Plain(Pattern),
    Template(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    One,
    Many,
}

impl PathPattern {
    pub fn parse(path: &str) -> Result<PathPattern, String> {
        if !path.contains("{*}") && !path.contains("{**}") {
            return Ok(PathPattern::Plain(Pattern::parse(path)));
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Err("a path template starts with /".into());
        };
        rest.split('/')
            .map(|segment| match segment {
                "{*}" => Ok(Segment::One),
                "{**}" => Ok(Segment::Many),
                s if s.contains(['{', '}', '*']) => Err(format!(
                    "segment {s:?}: a template segment is {{*}}, {{**}} or literal text"
                )),
                s => Ok(Segment::Literal(s.to_string())),
            })
            .collect::<Result<_, _>>()
            .map(PathPattern::Template)
    }

    /// Whether `path` (without its query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Plain(p) => p.matches(path),
            PathPattern::Template(segments) => path.strip_prefix('/').is_some_and(|rest| {
                let parts: Vec<&str> = rest.split('/').collect();
                template_matches(segments, &parts)
            }),
        }
    }
}

fn template_matches(segments: &[Segment], parts: &[&str]) -> bool {
    match segments.split_first() {
        None => parts.is_empty(),
        Some((Segment::Literal(l), rest)) => {
            parts.first() == Some(&l.as_str()) && template_matches(rest, &parts[1..])
        }
        Some((Segment::One, rest)) => {
            parts.first().is_some_and(|p| !p.is_empty()) && template_matches(rest, &parts[1..])
        }
        Some((Segment::Many, rest)) => (1..=parts.len()).any(|n| {
            parts[..n].iter().all(|p| !p.is_empty()) && template_matches(rest, &parts[n..])
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_istio_does() {
        assert!(Pattern::parse("/exact").matches("/exact"));
        assert!(!Pattern::parse("/exact").matches("/exact/more"));
        assert!(Pattern::parse("/prefix/*").matches("/prefix/a/b"));
        assert!(Pattern::parse("*/suffix").matches("/a/suffix"));
        assert!(Pattern::parse("*").matches("x"));
        assert!(!Pattern::parse("*").matches(""));
        assert!(Pattern::parse("*.Example.com").matches_ignoring_case("api.example.COM"));
        assert!(Pattern::parse("Bookinfo*").matches_ignoring_case("bookinfo.com:80"));
    }

    #[test]
    fn path_templates_match_segments() {
        let one = PathPattern::parse("/path/template/{*}").unwrap();
        assert!(one.matches("/path/template/a"));
        assert!(!one.matches("/path/template/a/b"));
        assert!(!one.matches("/path/template/"));
        let many = PathPattern::parse("/{**}/path/template").unwrap();
        assert!(many.matches("/a/path/template"));
        assert!(many.matches("/a/b/path/template"));
        assert!(!many.matches("/path/template"));
        assert!(PathPattern::parse("/a{*}/b").is_err());
    }

    #[test]
    fn condition_keys_parse() {
        assert_eq!(
            ConditionKey::parse("request.headers[X-header]"),
            Ok(ConditionKey::RequestHeader("X-header".into()))
        );
        assert_eq!(
            ConditionKey::parse("request.auth.claims[nested1][nested2]"),
            Ok(ConditionKey::RequestAuthClaims(vec![
                "nested1".into(),
                "nested2".into()
            ]))
        );
        assert!(ConditionKey::parse("request.headers[]").is_err());
        assert!(ConditionKey::parse("source.user").is_err());
    }
}

/// RequestAuthentication: the JWTs a workload accepts, and what it learns from them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<super::telemetry::PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<super::telemetry::PolicyTargetReference>,
    /// `None` items are YAML nulls, which validation refuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<Option<JwtRule>>,
}

fn jwks_uri_alias(schema: &mut schemars::Schema) {
    super::with_alias(schema, "jwksUri", "jwks_uri");
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = jwks_uri_alias)]
pub struct JwtRule {
    #[serde(default)]
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Istio's CRD also takes the proto's own name, `jwks_uri`.
    #[serde(default, alias = "jwks_uri", skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<Option<ClaimToHeader>>,
    /// Kept as written: validation reads it as a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

impl RequestAuthentication {
    pub fn rules(&self) -> impl Iterator<Item = &JwtRule> {
        self.jwt_rules.iter().flatten()
    }

    pub fn selector_labels(&self) -> Option<&BTreeMap<String, String>> {
        selecting(&self.selector)
    }
}
