//! Telemetry (telemetry.istio.io) and the MeshConfig fields behind it.

use super::common::{min_duration, percent, port, Path, Report};
use crate::types::mesh_config::{ExtensionProvider, MeshConfig};
use crate::types::telemetry::{
    IstioMetric, MetricsOverrides, ProviderRef, TagOperation, Telemetry,
};
use std::collections::BTreeSet;

pub fn validate_telemetry(r: &mut Report, t: &Telemetry) {
    let spec = Path::spec();
    super::security::targets(
        r,
        t.selector.is_some(),
        t.target_ref.as_ref(),
        &t.target_refs,
    );
    for (i, tracing) in t.tracing.iter().enumerate() {
        let path = spec.field("tracing").index(i);
        if let Some(p) = tracing.random_sampling_percentage {
            percent(r, &path.field("randomSamplingPercentage"), p);
        }
        provider_names(r, &path.field("providers"), &tracing.providers);
        custom_tags(r, &path.field("customTags"), &tracing.custom_tags);
    }
    if t.tracing.len() > 1 {
        r.warning(
            &spec.field("tracing"),
            "Weft applies the first tracing rule only",
        )
        .with_hint("merge the rules into one");
    }
    for (i, logging) in t.access_logging.iter().enumerate() {
        let path = spec.field("accessLogging").index(i);
        provider_names(r, &path.field("providers"), &logging.providers);
        if let Some(filter) = &logging.filter {
            expression(
                r,
                &path.field("filter").field("expression"),
                &filter.expression,
            );
        }
    }
    for (i, metrics) in t.metrics.iter().enumerate() {
        let path = spec.field("metrics").index(i);
        provider_names(r, &path.field("providers"), &metrics.providers);
        if let Some(interval) = metrics.reporting_interval {
            min_duration(r, &path.field("reportingInterval"), interval);
        }
        for (j, o) in metrics.overrides.iter().enumerate() {
            overrides(r, &path.field("overrides").index(j), o);
        }
    }
    if !t.target_refs.is_empty() || t.target_ref.is_some() {
        let field = if t.target_ref.is_some() {
            "targetRef"
        } else {
            "targetRefs"
        };
        r.warning(
            &spec.field(field),
            "targetRefs attach to Gateway API gateways and waypoints, which Weft does not run; \
             this Telemetry applies to no sidecar or Istio gateway",
        )
        .with_hint("use selector.matchLabels to choose workloads");
    }
}

fn overrides(r: &mut Report, path: &Path, o: &MetricsOverrides) {
    if let Some(selector) = &o.r#match {
        let at = path.field("match");
        if selector.metric.is_some() && selector.custom_metric.is_some() {
            r.error(&at, "only one of metric or customMetric can be set");
        }
        match selector.custom_metric.as_deref() {
            Some("") => {
                r.error(
                    &at.field("customMetric"),
                    "customMetric in body should be at least 1 chars long",
                );
            }
            Some(name) if IstioMetric::selected(Some(selector)).is_empty() => {
                r.warning(
                    &at.field("customMetric"),
                    format!("Weft reports no metric {name:?}; this override changes nothing"),
                )
                .with_hint(
                    "name a standard metric without its istio_ prefix, such as requests_total",
                );
            }
            _ => {}
        }
    }
    for (name, tag) in &o.tag_overrides {
        let at = path.field("tagOverrides").key(name);
        if name.is_empty() {
            r.error(&at, "name in body should be at least 1 chars long");
        } else if !is_label_name(name) {
            r.error(&at, format!("{name:?} cannot be a Prometheus label name"))
                .with_hint("use letters, digits and underscores, not starting with a digit");
        }
        match (tag.operation.unwrap_or_default(), tag.value.as_deref()) {
            (TagOperation::Remove, Some(_)) => {
                r.error(&at, "value must not be set when operation is REMOVE");
            }
            (TagOperation::Upsert, None | Some("")) if tag.operation.is_some() => {
                r.error(&at, "value must be set when operation is UPSERT");
            }
            (TagOperation::Upsert, Some(value)) => {
                expression(r, &at.field("value"), value);
            }
            _ => {}
        }
    }
}

/// Prometheus' label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn expression(r: &mut Report, path: &Path, source: &str) {
    if let Err(e) = crate::expression::parse(source) {
        r.error(path, e.to_string()).with_hint(
            "write a CEL expression over Istio's attributes, such as response.code >= 400",
        );
    }
}

pub fn custom_tags(
    r: &mut Report,
    path: &Path,
    tags: &std::collections::BTreeMap<String, crate::types::telemetry::CustomTag>,
) {
    for (name, tag) in tags {
        let at = path.key(name);
        let kinds = usize::from(tag.literal.is_some())
            + usize::from(tag.environment.is_some())
            + usize::from(tag.header.is_some())
            + usize::from(tag.formatter.is_some());
        if kinds != 1 {
            r.error(
                &at,
                "a custom tag is exactly one of literal, environment, header, formatter",
            );
        }
        let empty = tag.literal.as_ref().is_some_and(|l| l.value.is_empty())
            || tag.environment.as_ref().is_some_and(|e| e.name.is_empty())
            || tag.header.as_ref().is_some_and(|h| h.name.is_empty());
        if empty {
            r.required(&at);
        }
        if tag
            .header
            .as_ref()
            .is_some_and(|h| http_header_name(&h.name).is_none())
        {
            r.error(&at.field("header").field("name"), "not a valid header name");
        }
        if let Some(f) = &tag.formatter {
            let path = at.field("formatter").field("value");
            if f.value.is_empty() {
                r.error(&path, "value in body should be at least 1 chars long");
            } else if let Err(e) = crate::log_format::LogFormat::parse(&f.value) {
                let hint = e.hint();
                r.error(&path, e.to_string()).with_hint(hint);
            }
        }
    }
}

/// A header name as HTTP allows it (RFC 7230 token), lower-cased.
fn http_header_name(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    valid.then(|| name.to_ascii_lowercase())
}

fn provider_names(r: &mut Report, path: &Path, providers: &[ProviderRef]) {
    for (i, p) in providers.iter().enumerate() {
        if p.name.is_empty() {
            r.error(
                &path.index(i).field("name"),
                "name in body should be at least 1 chars long",
            );
        }
    }
}

pub fn validate_mesh_config(r: &mut Report, mesh: &MeshConfig) {
    let root = Path::root("data.mesh");
    if let Some(tracing) = mesh
        .default_config
        .as_ref()
        .and_then(|c| c.tracing.as_ref())
    {
        custom_tags(
            r,
            &root
                .field("defaultConfig")
                .field("tracing")
                .field("customTags"),
            &tracing.custom_tags,
        );
    }
    if let Some(sampling) = mesh
        .default_config
        .as_ref()
        .and_then(|c| c.tracing.as_ref())
        .and_then(|t| t.sampling)
    {
        percent(
            r,
            &root
                .field("defaultConfig")
                .field("tracing")
                .field("sampling"),
            sampling,
        );
    }
    let server = mesh
        .default_config
        .as_ref()
        .and_then(|c| c.proxy_headers.as_ref())
        .and_then(|h| h.server.as_ref())
        .and_then(|s| s.value.as_deref());
    if let Some(value) =
        server.filter(|v| !v.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t'))
    {
        r.error(
            &root
                .field("defaultConfig")
                .field("proxyHeaders")
                .field("server")
                .field("value"),
            format!("{value:?} cannot be a header value"),
        )
        .with_hint("use visible ASCII characters");
    }
    if let Some(file) = mesh.access_log_file.as_deref() {
        if !matches!(file, "" | "/dev/stdout") {
            r.warning(
                &root.field("accessLogFile"),
                format!("Weft writes access logs to /dev/stdout only, not {file:?}"),
            );
        }
    }
    if let Err(e) = crate::log_format::LineFormat::mesh(mesh) {
        let hint = e.hint();
        r.error(&root.field("accessLogFormat"), e.to_string())
            .with_hint(hint);
    }
    let mut names = BTreeSet::new();
    for (i, provider) in mesh.extension_providers.iter().enumerate() {
        let path = root.field("extensionProviders").index(i);
        if provider.name.is_empty() {
            r.required(&path.field("name"));
        } else if !names.insert(provider.name.as_str()) {
            r.error(
                &path.field("name"),
                format!("duplicate provider name {:?}", provider.name),
            );
        }
        extension_provider(r, &path, provider);
    }
    let Some(defaults) = &mesh.default_providers else {
        return;
    };
    let path = root.field("defaultProviders");
    for (field, list) in [
        ("tracing", &defaults.tracing),
        ("accessLogging", &defaults.access_logging),
        ("metrics", &defaults.metrics),
    ] {
        for (i, name) in list.iter().enumerate() {
            // `prometheus` and `envoy` are the providers Istio itself defines.
            if !names.contains(name.as_str()) && !matches!(name.as_str(), "prometheus" | "envoy") {
                r.error(
                    &path.field(field).index(i),
                    format!("no extensionProvider is named {name:?}"),
                )
                .with_hint("name one of extensionProviders[].name");
            }
        }
    }
}

fn extension_provider(r: &mut Report, path: &Path, p: &ExtensionProvider) {
    let kinds = usize::from(p.zipkin.is_some())
        + usize::from(p.opentelemetry.is_some())
        + usize::from(p.envoy_file_access_log.is_some())
        + usize::from(p.prometheus.is_some())
        + usize::from(p.envoy_ext_authz_http.is_some())
        + usize::from(p.envoy_ext_authz_grpc.is_some());
    if kinds != 1 {
        r.error(
            path,
            "a provider needs exactly one of zipkin, opentelemetry, envoyFileAccessLog, prometheus, envoyExtAuthzHttp, envoyExtAuthzGrpc",
        );
    }
    if let Some(http) = &p.envoy_ext_authz_http {
        let path = path.field("envoyExtAuthzHttp");
        if http.service.is_empty() {
            r.required(&path.field("service"));
        }
        if http.port.number().is_none() {
            r.error(
                &path.field("port"),
                format!("port must be 1-65535, not {:?}", http.port),
            )
            .with_hint("the authorizer's service port, e.g. port: 8000");
        }
        if let Some(status) = &http.status_on_error {
            if !status.parse::<u16>().is_ok_and(|s| (200..600).contains(&s)) {
                r.error(
                    &path.field("statusOnError"),
                    format!("{status:?} is not an HTTP status"),
                );
            }
        }
        if http.include_request_body_in_check.is_some() {
            r.warning(
                &path.field("includeRequestBodyInCheck"),
                "Weft sends the check without the request body",
            );
        }
    }
    let service = |r: &mut Report, path: &Path, service: &str, number: u16| {
        if service.is_empty() {
            r.required(&path.field("service"));
        }
        port(r, &path.field("port"), number.into());
    };
    if let Some(file) = &p.envoy_file_access_log {
        let path = path.field("envoyFileAccessLog");
        if !matches!(file.path.as_str(), "" | "/dev/stdout") {
            r.warning(
                &path.field("path"),
                format!(
                    "Weft writes access logs to /dev/stdout only, not {:?}",
                    file.path
                ),
            );
        }
        if let Some(f) = &file.log_format {
            if f.text.is_some() && f.labels.is_some() {
                r.error(&path.field("logFormat"), "set text or labels, not both");
            }
            let field = if f.text.is_some() { "text" } else { "labels" };
            if let Err(e) = crate::log_format::LineFormat::provider(Some(f)) {
                let hint = e.hint();
                r.error(&path.field("logFormat").field(field), e.to_string())
                    .with_hint(hint);
            }
        }
    }
    if let Some(z) = &p.zipkin {
        service(r, &path.field("zipkin"), &z.service, z.port);
    }
    if let Some(o) = &p.opentelemetry {
        let path = path.field("opentelemetry");
        service(r, &path, &o.service, o.port);
        if o.http.is_none() {
            r.error(&path.field("http"), "Weft exports OTLP over HTTP only")
                .with_hint(
                    "add `http: {path: /v1/traces}`, with the collector's OTLP/HTTP port (4318)",
                );
        }
    }
}
