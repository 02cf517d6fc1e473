//! RequestAuthentication for one workload, compiled once per config version: each
//! `jwtRules` entry's issuer, audiences, keys and where its token is found. A request is
//! then authenticated as Istio's `jwt_authn` filter does it: no token anywhere is let
//! through (without a request principal); a token that no rule's issuer names, or that its
//! rule cannot verify, is refused with 401 and Envoy's wording; a verified one gives the
//! request its principal (`iss/sub`) and claims, for AuthorizationPolicy.

use crate::http::oneshot;
use crate::transport::tls::{Alpn, OriginateTls, Origination};
use arc_swap::ArcSwapOption;
use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE};
use http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::time::Instant;
use weft_api::types::JwtRule;
use weft_api::{Resource, Spec};

/// Envoy's default `clock_skew_seconds`.
const CLOCK_SKEW: u64 = 60;
/// Envoy's default remote JWKS cache duration.
const JWKS_CACHE: Duration = Duration::from_secs(300);
/// Istio's default `timeout` for fetching a `jwksUri`.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS larger than this is refused.
const JWKS_LIMIT: usize = 1 << 20;

/// The RequestAuthentications in force for one workload.
#[derive(Default)]
pub struct RequestAuthn {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for RequestAuthn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| &r.issuer))
            .finish()
    }
}

struct Rule {
    issuer: String,
    audiences: Vec<String>,
    keys: Keys,
    locations: Vec<Location>,
    forward: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
    space_delimited: Arc<[String]>,
    /// `presence: REQUIRED`: a request must carry a token.
    required: bool,
}

enum Keys {
    Inline(Result<Arc<Vec<Key>>, String>),
    Remote(Arc<RemoteJwks>),
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Option<Algorithm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Header { name: HeaderName, prefix: String },
    Param(String),
    Cookie(String),
}

/// What a verified token says about the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// `iss/sub`, Istio's `request.auth.principal`.
    pub principal: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    pub claims: Value,
    /// `spaceDelimitedClaims`: claims (dotted paths) whose string value is a list of words.
    pub space_delimited: Arc<[String]>,
}

impl Verified {
    /// Whether the claim at `path` is matched word by word: Istio's `scope` and
    /// `permission`, and the rule's `spaceDelimitedClaims`.
    pub fn space_delimited(&self, path: &[String]) -> bool {
        matches!(
            path.last().map(String::as_str),
            Some("scope" | "permission")
        ) || self
            .space_delimited
            .iter()
            .any(|c| c.split('.').eq(path.iter().map(String::as_str)))
    }
}

/// A refused token: Envoy's body for it, and its response code details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub message: &'static str,
    pub hint: String,
}

impl Rejected {
    fn new(message: &'static str, hint: impl Into<String>) -> Rejected {
        Rejected {
            message,
            hint: hint.into(),
        }
    }

    /// `jwt_authn_access_denied{Jwt_is_expired}`, as Envoy writes the details.
    pub fn details(&self) -> String {
        format!(
            "jwt_authn_access_denied{{{}}}",
            self.message.replace(' ', "_")
        )
    }
}

impl RequestAuthn {
    /// The RequestAuthentications among `resources` that apply to a workload in `namespace`
    /// with `labels`, as AuthorizationPolicies apply: its namespace's and the root's.
    pub fn compile(
        resources: &[Resource],
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> RequestAuthn {
        let mut rules = Vec::new();
        for r in resources {
            let Spec::RequestAuthentication(ra) = &r.spec else {
                continue;
            };
            let target_refs = ra.target_ref.is_some() || !ra.target_refs.is_empty();
            if super::applies(r, ra.selector_labels(), target_refs, namespace, labels) {
                rules.extend(ra.rules().map(Rule::compile));
            }
        }
        RequestAuthn { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Authenticates the request's token, if it has one, and applies the rule's header
    /// operations to `parts`.
    pub async fn authenticate(&self, parts: &mut Parts) -> Result<Option<Verified>, Rejected> {
        let found: Vec<(&Rule, Location, String)> = self
            .rules
            .iter()
            .filter_map(|rule| rule.find(parts).map(|(at, token)| (rule, at, token)))
            .collect();
        let Some((_, _, first)) = found.first() else {
            // Envoy's `requires_any` keeps `allow_missing` only while no rule is REQUIRED.
            return match self.rules.iter().find(|r| r.required) {
                Some(rule) => Err(Rejected::new(
                    "Jwt is missing",
                    format!(
                        "the jwtRules entry for {:?} has presence REQUIRED and the request carries no token",
                        rule.issuer
                    ),
                )),
                None => Ok(None),
            };
        };
        let issuer = unverified_issuer(first).ok_or_else(|| {
            Rejected::new(
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
                "the token is not a JWT",
            )
        })?;
        let Some((rule, at, token)) = found.iter().find(|(rule, _, token)| {
            rule.issuer == issuer && unverified_issuer(token).as_deref() == Some(issuer.as_str())
        }) else {
            return Err(Rejected::new(
                "Jwt issuer is not configured",
                format!("no RequestAuthentication jwtRules entry has issuer {issuer:?}"),
            ));
        };
        let verified = rule.verify(token).await?;
        rule.after(parts, at, token, &verified);
        Ok(Some(verified))
    }
}

/// The `iss` of a token's payload, before anything is verified: which rule to try.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["iss"].as_str().map(str::to_string)
}

impl Rule {
    fn compile(rule: &JwtRule) -> Rule {
        let mut locations: Vec<Location> = rule
            .from_headers
            .iter()
            .filter_map(|h| {
                Some(Location::Header {
                    name: HeaderName::from_bytes(
                        h.name.as_deref()?.to_ascii_lowercase().as_bytes(),
                    )
                    .ok()?,
                    prefix: h.prefix.clone().unwrap_or_default(),
                })
            })
            .collect();
        locations.extend(rule.from_params.iter().cloned().map(Location::Param));
        locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
        if locations.is_empty() {
            // Istio's defaults: `Authorization: Bearer …` and `?access_token=…`.
            locations = vec![
                Location::Header {
                    name: AUTHORIZATION,
                    prefix: "Bearer ".into(),
                },
                Location::Param("access_token".into()),
            ];
        }
        let keys = match (&rule.jwks, &rule.jwks_uri) {
            (Some(inline), _) => Keys::Inline(parse_jwks(inline.as_bytes()).map(Arc::new)),
            (None, Some(uri)) => Keys::Remote(RemoteJwks::for_uri(
                uri,
                rule.timeout
                    .as_deref()
                    .and_then(|t| weft_api::types::Duration::parse(t).ok())
                    .map_or(JWKS_TIMEOUT, |d| d.as_std()),
            )),
            (None, None) => Keys::Inline(Err("the rule has neither jwks nor jwksUri".into())),
        };
        Rule {
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            keys,
            locations,
            forward: rule.forward_original_token == Some(true),
            payload_header: rule
                .output_payload_to_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()),
            claim_headers: rule
                .output_claim_to_headers
                .iter()
                .flatten()
                .filter_map(|c| {
                    Some((
                        HeaderName::from_bytes(c.header.to_ascii_lowercase().as_bytes()).ok()?,
                        c.claim.clone(),
                    ))
                })
                .collect(),
            space_delimited: rule.space_delimited_claims.clone().into(),
            required: rule.presence.as_deref() == Some("REQUIRED"),
        }
    }

    /// The first of the rule's locations that holds a token.
    fn find(&self, parts: &Parts) -> Option<(Location, String)> {
        self.locations.iter().find_map(|at| {
            let token = match at {
                Location::Header { name, prefix } => parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        if prefix.is_empty() {
                            Some(v)
                        } else if v.len() >= prefix.len()
                            && v[..prefix.len()].eq_ignore_ascii_case(prefix)
                        {
                            Some(&v[prefix.len()..])
                        } else {
                            None
                        }
                    })
                    .map(|t| t.trim().to_string()),
                Location::Param(name) => parts.uri.query().and_then(|q| {
                    q.split('&').find_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        (k == name).then(|| v.to_string())
                    })
                }),
                Location::Cookie(name) => parts
                    .headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .find_map(|c| {
                        let (k, v) = c.trim().split_once('=')?;
                        (k == name).then(|| v.to_string())
                    }),
            }?;
            (!token.is_empty()).then(|| (at.clone(), token))
        })
    }

    async fn verify(&self, token: &str) -> Result<Verified, Rejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            Rejected::new(
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
                e.to_string(),
            )
        })?;
        let keys = match &self.keys {
            Keys::Inline(keys) => keys.clone().map_err(|e| {
                Rejected::new("Jwks doesn't have key to match kid or alg from Jwt", e)
            })?,
            Keys::Remote(remote) => remote.keys().await?,
        };
        let candidates = keys.iter().filter(|k| {
            header
                .kid
                .as_ref()
                .is_none_or(|kid| k.kid.as_ref() == Some(kid))
                && k.algorithm.is_none_or(|a| a == header.alg)
        });
        let mut validation = Validation::new(header.alg);
        validation.leeway = CLOCK_SKEW;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return self.admit(data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(match last.as_ref().map(|e| e.kind()) {
            None => Rejected::new(
                "Jwks doesn't have key to match kid or alg from Jwt",
                format!("no key for kid {:?} and alg {:?}", header.kid, header.alg),
            ),
            Some(jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Rejected::new("Jwt is expired", "the token's exp has passed")
            }
            Some(jsonwebtoken::errors::ErrorKind::ImmatureSignature) => {
                Rejected::new("Jwt not yet valid", "the token's nbf is still ahead")
            }
            Some(_) => Rejected::new(
                "Jwt verification fails",
                last.map(|e| e.to_string()).unwrap_or_default(),
            ),
        })
    }

    fn admit(&self, claims: Value) -> Result<Verified, Rejected> {
        let audiences: Vec<String> = match &claims["aud"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(list) => list
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        if !self.audiences.is_empty() && !audiences.iter().any(|a| self.audiences.contains(a)) {
            return Err(Rejected::new(
                "Audiences in Jwt are not allowed",
                format!(
                    "the token's audiences {audiences:?} are none of {:?}",
                    self.audiences
                ),
            ));
        }
        Ok(Verified {
            principal: format!(
                "{}/{}",
                claims["iss"].as_str().unwrap_or_default(),
                claims["sub"].as_str().unwrap_or_default()
            ),
            audiences,
            presenter: claims["azp"].as_str().map(str::to_string),
            claims,
            space_delimited: self.space_delimited.clone(),
        })
    }

    /// Envoy's header operations once the token is verified: the token's header taken off
    /// unless `forwardOriginalToken`, the payload and claims copied into headers.
    fn after(&self, parts: &mut Parts, at: &Location, token: &str, verified: &Verified) {
        if let (false, Location::Header { name, .. }) = (self.forward, at) {
            parts.headers.remove(name);
        }
        if let Some(name) = &self.payload_header {
            if let Some(payload) = token.split('.').nth(1) {
                if let Ok(v) = HeaderValue::from_str(payload) {
                    parts.headers.insert(name.clone(), v);
                }
            }
        }
        for (name, claim) in &self.claim_headers {
            let value = match &verified.claims[claim.as_str()] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                parts.headers.insert(name.clone(), v);
            }
        }
    }
}

fn parse_jwks(json: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_slice(json).map_err(|e| format!("the JWKS is not valid: {e}"))?;
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter_map(|jwk| {
            Some(Key {
                kid: jwk.common.key_id.clone(),
                key: DecodingKey::from_jwk(jwk).ok()?,
                algorithm: jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok()),
            })
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWKS has no key Weft can use".into());
    }
    Ok(keys)
}

/// A `jwksUri`'s keys, fetched when first needed and again once they are older than Envoy's
/// cache duration; shared by every config version (so a new version does not refetch).
struct RemoteJwks {
    uri: String,
    timeout: Duration,
    cached: ArcSwapOption<(Instant, Arc<Vec<Key>>)>,
    /// One fetch at a time; requests meanwhile use the keys held, or wait for the fetch.
    fetching: tokio::sync::Mutex<()>,
}

/// Every `jwksUri` (with its timeout) any config version named, fetched or not.
type RemoteCache = HashMap<(String, Duration), Arc<RemoteJwks>>;
static REMOTE: LazyLock<parking_lot::Mutex<RemoteCache>> = LazyLock::new(Default::default);

impl RemoteJwks {
    fn for_uri(uri: &str, timeout: Duration) -> Arc<RemoteJwks> {
        REMOTE
            .lock()
            .entry((uri.to_string(), timeout))
            .or_insert_with(|| {
                Arc::new(RemoteJwks {
                    uri: uri.to_string(),
                    timeout,
                    cached: ArcSwapOption::empty(),
                    fetching: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    async fn keys(&self) -> Result<Arc<Vec<Key>>, Rejected> {
        let fresh = |c: &(Instant, Arc<Vec<Key>>)| c.0.elapsed() < JWKS_CACHE;
        if let Some(c) = self.cached.load_full().filter(|c| fresh(c)) {
            return Ok(c.1.clone());
        }
        let _one = self.fetching.lock().await;
        if let Some(c) = self.cached.load_full().filter(|c| fresh(c)) {
            return Ok(c.1.clone());
        }
        match self.fetch().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                self.cached
                    .store(Some(Arc::new((Instant::now(), keys.clone()))));
                Ok(keys)
            }
            Err(e) => match self.cached.load_full() {
                // Stale keys beat none while the server is away.
                Some(c) => {
                    tracing::warn!(uri = %self.uri, "cannot refresh the JWKS ({e}); using the keys fetched before");
                    Ok(c.1.clone())
                }
                None => Err(Rejected::new(
                    "Jwks remote fetch is failed",
                    format!("jwksUri {}: {e}", self.uri),
                )),
            },
        }
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let uri: http::Uri = self.uri.parse().map_err(|e| format!("{e}"))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("no host")?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let settings = OriginateTls {
                sni: host.clone(),
                subject_alt_names: Vec::new(),
                ca_certificates: None,
                client_certificate: None,
                credential: None,
                insecure_skip_verify: false,
            };
            Some(Origination::external(&settings, Alpn::Http1).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                http::header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .body(http_body_util::Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response =
            oneshot::send(&host, port, tls.as_ref(), request, JWKS_LIMIT, self.timeout).await?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        parse_jwks(response.body())
    }
}
