//! What telemetry a workload reports, decided once per config version: MeshConfig's
//! defaults, then Istio's `Telemetry` resources from the root namespace, the workload's
//! namespace and those selecting the workload, the most specific setting winning.

use super::access_log::{self, Entry, ISTIO_JSON, ISTIO_TEXT};
use super::attributes::{self, Attributes};
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_api::expression::{self, Expression};
use weft_api::log_format::{LineFormat, LogFormat};
use weft_api::types::mesh_config::{AccessLogEncoding, MeshConfig};
use weft_api::types::telemetry::{
    CustomTag, IstioMetric, ProviderRef, TagOperation, Telemetry, WorkloadMode,
};
use weft_api::types::{labels_match, OutboundTrafficMode};
use weft_api::{scope, Resource, Spec};

use crate::workload::Workload;

/// Istio's `defaultConfig.tracing.sampling` when MeshConfig does not set it.
pub const DEFAULT_SAMPLING: f64 = 1.0;
/// Istio's `defaultConfig.tracing.zipkin.address`.
pub const DEFAULT_ZIPKIN: (&str, u16) = ("zipkin.istio-system", 9411);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryPolicy {
    /// By [`Mode`]: what the client side and the server side log.
    pub access_log: [LogPolicy; 2],
    /// `None`: the standard metrics, unchanged.
    pub metrics: Option<Arc<MetricsPolicy>>,
    /// Whether any expression reads `request`, or a log format a request header beyond the
    /// entry's fields, so that requests keep their headers.
    pub keep_request_headers: bool,
    /// Whether a log format reads a response header beyond the entry's fields.
    pub keep_response_headers: bool,
    pub tracing: Option<Arc<TracingPolicy>>,
    /// MeshConfig's `outboundTrafficPolicy.mode`, beneath a Sidecar's.
    pub outbound_policy: Option<OutboundTrafficMode>,
}

/// Telemetry's `match.mode` side: inbound is the server; outbound and gateways are the
/// client, as Istio classes a gateway's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Client = 0,
    Server = 1,
}

impl Mode {
    pub fn of(inbound: bool) -> Mode {
        if inbound {
            Mode::Server
        } else {
            Mode::Client
        }
    }

    fn selected(mode: WorkloadMode) -> &'static [Mode] {
        match mode {
            WorkloadMode::ClientAndServer => &[Mode::Client, Mode::Server],
            WorkloadMode::Client => &[Mode::Client],
            WorkloadMode::Server => &[Mode::Server],
        }
    }
}

impl TelemetryPolicy {
    pub fn log_for(&self, inbound: bool) -> &LogPolicy {
        &self.access_log[Mode::of(inbound) as usize]
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPolicy {
    /// `None`: the proxy's own `--access-log` choice.
    pub choice: Option<LogChoice>,
    /// Telemetry's `accessLogging[].filter`: only entries it holds true for are written.
    pub filter: Option<Expression>,
}

impl LogPolicy {
    pub fn admits(&self, entry: &Entry) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| Attributes { entry }.admits(f))
    }
}

/// What Telemetry's `metrics[].overrides` changed, by [`Mode`] and by the metric's
/// [`IstioMetric::slot`]; `None` where nothing changed a metric.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsPolicy {
    pub rules: [[Option<Arc<MetricRule>>; 10]; 2],
    /// `metrics[].reportingInterval`: how often live TCP connections report their bytes.
    pub reporting_interval: Option<std::time::Duration>,
}

impl MetricsPolicy {
    pub fn rule(&self, inbound: bool, metric: IstioMetric) -> Option<&MetricRule> {
        let slot = metric.slot()?;
        self.rules[Mode::of(inbound) as usize][slot].as_deref()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricRule {
    pub disabled: bool,
    /// By label name, in name order.
    pub tags: Vec<(String, TagRule)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TagRule {
    Remove,
    Upsert(Expression),
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogChoice {
    Off,
    Stdout(Arc<LineFormat>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TracingPolicy {
    /// Percent of requests without a sampling decision that start a sampled trace.
    pub sampling: f64,
    /// Where spans go; `None` with `disableSpanReporting`: context is still propagated.
    pub collector: Option<Arc<Collector>>,
    pub propagate: bool,
    /// Which sides of a call make spans (Telemetry `match.mode`).
    pub mode: WorkloadMode,
    pub max_tag_length: usize,
    /// Tags added to every span (`customTags`), by name.
    pub custom_tags: Vec<(String, TagValue)>,
}

/// Where a custom tag's value comes from; the proxy's environment is read at compile.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Literal(String),
    Header(http::HeaderName, Option<String>),
    /// An access-log format, rendered from the finished request.
    Format(LogFormat),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Collector {
    pub protocol: CollectorProtocol,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// The provider's name, for metrics and errors.
    pub provider: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CollectorProtocol {
    /// Zipkin v2 JSON, `POST /api/v2/spans`.
    Zipkin,
    /// OTLP over HTTP, protobuf, `POST /v1/traces`.
    OtlpHttp,
}

impl TracingPolicy {
    pub fn spans_for(&self, server: bool) -> bool {
        match self.mode {
            WorkloadMode::ClientAndServer => true,
            WorkloadMode::Client => !server,
            WorkloadMode::Server => server,
        }
    }
}

/// The policy in force for `workload` among `resources` (already scoped to it).
pub fn resolve(resources: &[Resource], workload: &Workload) -> Result<TelemetryPolicy, String> {
    let mesh = scope::mesh_config(resources);
    let default_mesh = MeshConfig::default();
    let mesh = mesh.unwrap_or(&default_mesh);
    // Least specific first: the root namespace's, the namespace's, then selecting ones.
    let mut telemetries: Vec<(u8, &Resource, &Telemetry)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Telemetry(t) => {
                let selects = t
                    .selector
                    .as_ref()
                    .map(|s| labels_match(&s.match_labels, &workload.labels));
                let rank = match (r.namespace(), selects) {
                    (ns, None) if ns == scope::ROOT_NAMESPACE => 0,
                    (ns, None) if ns == workload.namespace => 1,
                    (ns, Some(true)) if ns == workload.namespace => 2,
                    _ => return None,
                };
                Some((rank, r, t))
            }
            _ => None,
        })
        .collect();
    telemetries.sort_by(|a, b| {
        (a.0, &a.1.metadata.creation_timestamp, a.1.name()).cmp(&(
            b.0,
            &b.1.metadata.creation_timestamp,
            b.1.name(),
        ))
    });
    let access_log = access_log(mesh, &telemetries)?;
    let metrics = metrics(mesh, &telemetries)?;
    let tracing = tracing(mesh, &telemetries)?;
    let formats: Vec<&LogFormat> = access_log
        .iter()
        .filter_map(|l| match &l.choice {
            Some(LogChoice::Stdout(f)) => Some(f.formats()),
            _ => None,
        })
        .flatten()
        .chain(tracing.iter().flat_map(|t| {
            t.custom_tags.iter().filter_map(|(_, v)| match v {
                TagValue::Format(f) => Some(f),
                _ => None,
            })
        }))
        .collect();
    let (format_request, keep_response_headers) = formats.iter().fold((false, false), |acc, f| {
        let (req, resp) = access_log::reads_headers(f);
        (acc.0 || req, acc.1 || resp)
    });
    let keep_request_headers = format_request
        || access_log
            .iter()
            .filter_map(|l| l.filter.as_ref())
            .chain(metrics.iter().flat_map(|m| {
                m.rules.iter().flatten().flatten().flat_map(|r| {
                    r.tags.iter().filter_map(|(_, t)| match t {
                        TagRule::Upsert(e) => Some(e),
                        TagRule::Remove => None,
                    })
                })
            }))
            .any(attributes::reads_request);
    Ok(TelemetryPolicy {
        access_log,
        metrics: metrics.map(Arc::new),
        keep_request_headers,
        keep_response_headers,
        tracing: tracing.map(Arc::new),
        outbound_policy: mesh.outbound_traffic_policy.as_ref().map(|p| p.mode),
    })
}

fn access_log(
    mesh: &MeshConfig,
    telemetries: &[(u8, &Resource, &Telemetry)],
) -> Result<[LogPolicy; 2], String> {
    let mesh_format = match (
        mesh.access_log_format.as_deref().filter(|f| !f.is_empty()),
        mesh.access_log_encoding,
    ) {
        (None, Some(AccessLogEncoding::Json)) => ISTIO_JSON.clone(),
        (None, _) => ISTIO_TEXT.clone(),
        (Some(_), _) => Arc::new(
            LineFormat::mesh(mesh)
                .map_err(|e| format!("MeshConfig accessLogFormat: {e}"))?
                .resolve_environment(env),
        ),
    };
    let mut choice = mesh.access_log_file.as_deref().map(|file| match file {
        "" => LogChoice::Off,
        _ => LogChoice::Stdout(mesh_format.clone()),
    });
    // The built-in `envoy` provider logs to stdout in MeshConfig's format; envoyFileAccessLog
    // providers in their own `logFormat` (Weft writes only stdout).
    let by_providers =
        |names: &mut dyn Iterator<Item = &str>| -> Result<Option<LogChoice>, String> {
            let mut any = false;
            for name in names {
                any = true;
                if name == "envoy" {
                    return Ok(Some(LogChoice::Stdout(mesh_format.clone())));
                }
                if let Some(file) = mesh
                    .provider(name)
                    .and_then(|p| p.envoy_file_access_log.as_ref())
                {
                    let format = match &file.log_format {
                        None => ISTIO_TEXT.clone(),
                        Some(f) => Arc::new(
                            LineFormat::provider(Some(f))
                                .map_err(|e| {
                                    format!("MeshConfig extensionProviders {name}: logFormat: {e}")
                                })?
                                .resolve_environment(env),
                        ),
                    };
                    return Ok(Some(LogChoice::Stdout(format)));
                }
            }
            Ok(any.then_some(LogChoice::Off))
        };
    if let Some(defaults) = &mesh.default_providers {
        if let Some(c) = by_providers(&mut defaults.access_logging.iter().map(String::as_str))? {
            choice = Some(c);
        }
    }
    let mut sides = [
        LogPolicy {
            choice: choice.clone(),
            filter: None,
        },
        LogPolicy {
            choice,
            filter: None,
        },
    ];
    for (_, r, t) in telemetries {
        for (i, rule) in t.access_logging.iter().enumerate() {
            let filter = rule
                .filter
                .as_ref()
                .map(|f| {
                    expression::parse(&f.expression).map_err(|e| {
                        format!(
                            "Telemetry {}/{}: spec.accessLogging[{i}].filter.expression: {e}",
                            r.namespace(),
                            r.name()
                        )
                    })
                })
                .transpose()?;
            let mode = rule.r#match.as_ref().map(|m| m.mode).unwrap_or_default();
            for side in Mode::selected(mode) {
                let log = &mut sides[*side as usize];
                if rule.disabled == Some(true) {
                    log.choice = Some(LogChoice::Off);
                } else if let Some(c) =
                    by_providers(&mut rule.providers.iter().map(|p| p.name.as_str()))?
                {
                    log.choice = Some(c);
                    log.filter = filter.clone();
                } else {
                    if rule.disabled == Some(false) && log.choice == Some(LogChoice::Off) {
                        log.choice = Some(LogChoice::Stdout(mesh_format.clone()));
                    }
                    if filter.is_some() {
                        log.filter = filter.clone();
                    }
                }
            }
        }
    }
    Ok(sides)
}

/// Whether a metrics rule's providers reach Prometheus, the one metrics provider Weft has;
/// no providers means the defaults.
fn to_prometheus(mesh: &MeshConfig, providers: &[ProviderRef]) -> bool {
    providers.iter().any(|p| {
        p.name == "prometheus"
            || mesh
                .provider(&p.name)
                .is_some_and(|e| e.prometheus.is_some())
    })
}

/// Istio's merge of `metrics[]`: the most specific providers list decides whether
/// Prometheus reports at all; overrides apply from the least specific resource to the
/// most, each changing only what it names.
fn metrics(
    mesh: &MeshConfig,
    telemetries: &[(u8, &Resource, &Telemetry)],
) -> Result<Option<MetricsPolicy>, String> {
    let default_providers: Vec<ProviderRef> = match &mesh.default_providers {
        Some(d) if !d.metrics.is_empty() => d
            .metrics
            .iter()
            .map(|name| ProviderRef { name: name.clone() })
            .collect(),
        _ => vec![ProviderRef {
            name: "prometheus".into(),
        }],
    };
    let mut enabled = to_prometheus(mesh, &default_providers);
    #[derive(Default)]
    struct Draft<'a> {
        disabled: Option<bool>,
        tags: BTreeMap<&'a str, TagRule>,
    }
    let mut drafts: [[Option<Draft>; 10]; 2] = Default::default();
    let mut touched = false;
    let mut reporting_interval = None;
    for (_, r, t) in telemetries {
        for (i, rule) in t.metrics.iter().enumerate() {
            if let Some(every) = rule.reporting_interval {
                reporting_interval = Some(every.as_std());
                touched = true;
            }
            if !rule.providers.is_empty() {
                enabled = to_prometheus(mesh, &rule.providers);
                touched |= !enabled;
                if !enabled {
                    continue;
                }
            }
            for (j, o) in rule.overrides.iter().enumerate() {
                let selector = o.r#match.as_ref();
                let mode = selector.map(|m| m.mode).unwrap_or_default();
                let mut tags = Vec::new();
                for (name, tag) in &o.tag_overrides {
                    let rule = match (tag.operation.unwrap_or_default(), tag.value.as_deref()) {
                        (TagOperation::Remove, _) => TagRule::Remove,
                        (TagOperation::Upsert, Some(v)) if !v.is_empty() => {
                            TagRule::Upsert(expression::parse(v).map_err(|e| {
                                format!(
                                    "Telemetry {}/{}: spec.metrics[{i}].overrides[{j}].tagOverrides[{name}].value: {e}",
                                    r.namespace(),
                                    r.name()
                                )
                            })?)
                        }
                        (TagOperation::Upsert, _) => continue,
                    };
                    tags.push((name.as_str(), rule));
                }
                for side in Mode::selected(mode) {
                    for metric in IstioMetric::selected(selector) {
                        let Some(slot) = metric.slot() else { continue };
                        let draft = drafts[*side as usize][slot].get_or_insert_with(Draft::default);
                        touched = true;
                        if o.disabled.is_some() {
                            draft.disabled = o.disabled;
                        }
                        for (name, rule) in &tags {
                            draft.tags.insert(name, rule.clone());
                        }
                    }
                }
            }
        }
    }
    if !touched {
        return Ok(None);
    }
    let mut policy = MetricsPolicy {
        reporting_interval,
        ..MetricsPolicy::default()
    };
    for (side, drafts) in drafts.into_iter().enumerate() {
        for (slot, draft) in drafts.into_iter().enumerate() {
            let rule = match draft {
                None if enabled => continue,
                None => MetricRule {
                    disabled: true,
                    tags: Vec::new(),
                },
                Some(d) => MetricRule {
                    disabled: !enabled || d.disabled == Some(true),
                    tags: d
                        .tags
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                },
            };
            policy.rules[side][slot] = Some(Arc::new(rule));
        }
    }
    Ok(Some(policy))
}

fn tracing(
    mesh: &MeshConfig,
    telemetries: &[(u8, &Resource, &Telemetry)],
) -> Result<Option<TracingPolicy>, String> {
    let legacy = mesh
        .default_config
        .as_ref()
        .and_then(|c| c.tracing.as_ref());
    let mut sampling = legacy.and_then(|t| t.sampling).unwrap_or(DEFAULT_SAMPLING);
    let mut provider: Option<&str> = mesh
        .default_providers
        .as_ref()
        .and_then(|d| d.tracing.first())
        .map(String::as_str);
    let mut reporting = true;
    let mut propagate = true;
    let mut mode = WorkloadMode::ClientAndServer;
    let mut configured = provider.is_some();
    let mut tags: std::collections::BTreeMap<&str, &CustomTag> = legacy
        .map(|t| t.custom_tags.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default();
    for (_, _, t) in telemetries {
        // Weft applies the first rule of each resource (validation warns about more).
        let Some(rule) = t.tracing.first() else {
            continue;
        };
        configured = true;
        if let Some(p) = rule.random_sampling_percentage {
            sampling = p;
        }
        if let Some(p) = rule.providers.first() {
            provider = Some(&p.name);
        }
        if let Some(d) = rule.disable_span_reporting {
            reporting = !d;
        }
        if let Some(d) = rule.disable_context_propagation {
            propagate = !d;
        }
        if let Some(m) = &rule.r#match {
            mode = m.mode;
        }
        tags.extend(rule.custom_tags.iter().map(|(k, v)| (k.as_str(), v)));
    }
    let mut custom_tags = Vec::with_capacity(tags.len());
    for (name, tag) in tags {
        if let Some(value) = tag_value(tag).map_err(|e| format!("customTags[{name}]: {e}"))? {
            custom_tags.push((name.to_string(), value));
        }
    }
    let collector = match provider {
        Some(name) => {
            let p = mesh.provider(name).ok_or_else(|| {
                format!("Telemetry names tracing provider {name:?}, which MeshConfig's extensionProviders lacks")
            })?;
            if let Some(z) = &p.zipkin {
                Some(Collector {
                    protocol: CollectorProtocol::Zipkin,
                    host: z.service.clone(),
                    port: z.port,
                    path: z.path.clone().unwrap_or_else(|| "/api/v2/spans".into()),
                    provider: name.into(),
                })
            } else if let Some(o) = &p.opentelemetry {
                let path = o
                    .http
                    .as_ref()
                    .map(|h| h.path.as_str())
                    .filter(|p| !p.is_empty());
                Some(Collector {
                    protocol: CollectorProtocol::OtlpHttp,
                    host: o.service.clone(),
                    port: o.port,
                    path: path.unwrap_or("/v1/traces").to_string(),
                    provider: name.into(),
                })
            } else {
                return Err(format!(
                    "tracing provider {name:?} is neither zipkin nor opentelemetry"
                ));
            }
        }
        // Without the Telemetry API, Istio's legacy setting: Zipkin at
        // defaultConfig.tracing.zipkin.address when enableTracing (default true).
        None if !configured && mesh.enable_tracing == Some(false) => return Ok(None),
        None => {
            let address = legacy
                .and_then(|t| t.zipkin.as_ref())
                .map(|z| z.address.as_str())
                .filter(|a| !a.is_empty());
            let (host, port) = match address {
                Some(a) => split_address(a)?,
                None => (DEFAULT_ZIPKIN.0.to_string(), DEFAULT_ZIPKIN.1),
            };
            Some(Collector {
                protocol: CollectorProtocol::Zipkin,
                host,
                port,
                path: "/api/v2/spans".into(),
                provider: "zipkin".into(),
            })
        }
    };
    let max_tag_length = legacy
        .and_then(|t| t.max_path_tag_length)
        .map_or(256, |n| n as usize);
    Ok(Some(TracingPolicy {
        sampling,
        collector: collector.filter(|_| reporting).map(Arc::new),
        propagate,
        mode,
        max_tag_length,
        custom_tags,
    }))
}

fn tag_value(tag: &CustomTag) -> Result<Option<TagValue>, String> {
    if let Some(l) = &tag.literal {
        return Ok(Some(TagValue::Literal(l.value.clone())));
    }
    if let Some(e) = &tag.environment {
        return Ok(env(&e.name)
            .or_else(|| e.default_value.clone())
            .map(TagValue::Literal));
    }
    if let Some(f) = &tag.formatter {
        let format = LogFormat::parse(&f.value).map_err(|e| format!("formatter.value: {e}"))?;
        return Ok(Some(TagValue::Format(format.resolve_environment(env))));
    }
    let Some(h) = &tag.header else {
        return Ok(None);
    };
    let name = http::HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("header.name {:?} is not a header name", h.name))?;
    Ok(Some(TagValue::Header(name, h.default_value.clone())))
}

/// The proxy's environment, which `ENVIRONMENT(...)` and environment tags read once per
/// config version.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn split_address(address: &str) -> Result<(String, u16), String> {
    address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
        .ok_or_else(|| format!("defaultConfig.tracing.zipkin.address {address:?} is not host:port"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::parse_labels;

    fn policy(yaml: &str) -> TelemetryPolicy {
        let loaded = weft_api::load_str(yaml, std::path::Path::new("t.yaml"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let workload = Workload {
            name: "reviews-v1".into(),
            namespace: "default".into(),
            labels: parse_labels("app=reviews,version=v1").unwrap(),
            ..Default::default()
        };
        resolve(&loaded.resources, &workload).unwrap()
    }

    fn telemetry(namespace: &str, selector: &str, spec: &str) -> String {
        format!("---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: t-{namespace}{}, namespace: {namespace}}}\nspec:\n{selector}{spec}\n", selector.len())
    }

    #[test]
    fn without_mesh_config_istio_defaults_hold() {
        let p = policy("");
        let tracing = p.tracing.unwrap();
        assert_eq!(tracing.sampling, 1.0);
        let c = tracing.collector.as_ref().unwrap();
        assert_eq!((c.host.as_str(), c.port), DEFAULT_ZIPKIN);
        assert_eq!(p.access_log, <[LogPolicy; 2]>::default());
        assert_eq!(p.metrics, None);
        let off = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: 'enableTracing: false'\n";
        assert!(policy(off).tracing.is_none());
    }

    #[test]
    fn the_most_specific_telemetry_wins() {
        let mesh = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    accessLogFile: /dev/stdout\n    accessLogEncoding: JSON\n    defaultConfig: {tracing: {sampling: 5}}\n    extensionProviders: [{name: otel, opentelemetry: {service: otel.observability, port: 4318, http: {path: /v1/traces}}}]\n";
        let root = telemetry(
            "istio-system",
            "",
            "  tracing: [{randomSamplingPercentage: 10}]",
        );
        let namespace = telemetry(
            "default",
            "",
            "  tracing: [{randomSamplingPercentage: 20, providers: [{name: otel}]}]",
        );
        let selecting = telemetry(
            "default",
            "  selector: {matchLabels: {app: reviews}}\n",
            "  tracing: [{randomSamplingPercentage: 30}]\n  accessLogging: [{disabled: true}]",
        );
        let other = telemetry(
            "default",
            "  selector: {matchLabels: {app: ratings}}\n",
            "  tracing: [{randomSamplingPercentage: 40}]",
        );
        let sampling = |yaml: String| policy(&yaml).tracing.unwrap().sampling;
        assert_eq!(sampling(mesh.to_string()), 5.0);
        assert_eq!(sampling(format!("{mesh}{root}")), 10.0);
        assert_eq!(sampling(format!("{mesh}{namespace}{root}")), 20.0);
        assert_eq!(
            sampling(format!("{mesh}{other}{selecting}{namespace}{root}")),
            30.0
        );
        let p = policy(&format!("{mesh}{namespace}"));
        let collector = p.tracing.as_ref().unwrap().collector.clone().unwrap();
        assert_eq!(collector.protocol, CollectorProtocol::OtlpHttp);
        assert_eq!(
            p.log_for(true).choice,
            Some(LogChoice::Stdout(ISTIO_JSON.clone()))
        );
        assert_eq!(
            policy(&format!("{mesh}{selecting}")).log_for(false).choice,
            Some(LogChoice::Off)
        );
    }

    #[test]
    fn metric_overrides_merge_from_the_root_namespace_to_the_workload_by_mode() {
        let root = telemetry(
            "istio-system",
            "",
            "  metrics:\n  - reportingInterval: 15s\n    overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides: {request_host: {value: request.host}}",
        );
        let namespace = telemetry(
            "default",
            "",
            "  metrics:\n  - overrides:\n    - match: {mode: CLIENT}\n      tagOverrides: {request_host: {operation: REMOVE}}\n    - match: {customMetric: request_bytes, mode: SERVER}\n      disabled: true\n  accessLogging:\n  - match: {mode: SERVER}\n    disabled: true",
        );
        let p = policy(&format!("{root}{namespace}"));
        let m = p.metrics.as_ref().unwrap();
        let count_client = m.rule(false, IstioMetric::RequestCount).unwrap();
        assert_eq!(
            count_client.tags,
            vec![("request_host".into(), TagRule::Remove)]
        );
        let count_server = m.rule(true, IstioMetric::RequestCount).unwrap();
        assert!(
            matches!(&count_server.tags[..], [(_, TagRule::Upsert(e))] if &*e.source == "request.host")
        );
        assert!(m.rule(true, IstioMetric::RequestSize).unwrap().disabled);
        assert!(!m.rule(false, IstioMetric::RequestSize).unwrap().disabled);
        assert!(m.rule(true, IstioMetric::TcpSentBytes).is_none());
        assert_eq!(
            m.reporting_interval,
            Some(std::time::Duration::from_secs(15))
        );
        assert!(p.keep_request_headers);
        assert_eq!(p.log_for(true).choice, Some(LogChoice::Off));
        assert_eq!(p.log_for(false).choice, None);

        // A workload whose metrics go to a provider other than Prometheus reports none.
        let elsewhere = telemetry(
            "default",
            "  selector: {matchLabels: {app: reviews}}\n",
            "  metrics: [{providers: [{name: stackdriver}]}]",
        );
        let p = policy(&format!("{root}{elsewhere}"));
        let m = p.metrics.unwrap();
        for metric in IstioMetric::EACH {
            assert!(m.rule(false, metric).unwrap().disabled, "{metric:?}");
        }
    }
}
