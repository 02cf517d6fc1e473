//! Reading resources from files as kubectl reads them: multi-document YAML, JSON objects and
//! `kind: List`. Every problem is a [`Diagnostic`] that names the file, the document,
//! `Kind namespace/name` and the field path. A field Istio's schema does not have is an
//! error (kubectl's strict field validation).

use crate::resource::{Kind, Origin, Resource, Spec};
use crate::types::mesh_config::MESH_CONFIG_MAP;
use crate::types::ObjectMeta;
use crate::validate::{self, Severity};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem found while loading: an error rejects its document, a warning does not.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub origin: Origin,
    /// `Kind namespace/name`, when the document got far enough to have one.
    pub resource: Option<String>,
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.origin)?;
        if let Some(resource) = &self.resource {
            write!(f, ": {resource}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// What a load produced: the accepted resources and every diagnostic.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    fn extend(&mut self, other: Loaded) {
        self.resources.extend(other.resources);
        self.diagnostics.extend(other.diagnostics);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads every `.yaml`, `.yml` and `.json` file in a directory (not recursive, sorted by
/// name, hidden files skipped) or one file.
pub fn load_path(path: &Path) -> Result<Loaded, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        let text = std::fs::read_to_string(path).map_err(io)?;
        return Ok(load_str(&text, path));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_config_file(p))
        .collect();
    files.sort();
    let mut loaded = Loaded::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        loaded.extend(load_str(&text, &file));
    }
    Ok(loaded)
}

/// True for the files a config directory is made of.
pub fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && path.is_file() && matches!(ext, "yaml" | "yml" | "json")
}

/// A MeshConfig file, as istiod's `--meshConfig` reads it: the MeshConfig itself (the `mesh`
/// key's text), or the `istio` ConfigMap that holds it. Either way it loads as that
/// ConfigMap, with diagnostics naming the file.
pub fn load_mesh_config(text: &str, file: &Path) -> Loaded {
    let is_config_map = split_documents(text).iter().any(|(_, doc)| {
        doc.lines()
            .any(|l| l.trim_start().starts_with("kind:") && l.contains("ConfigMap"))
    });
    if is_config_map {
        return load_str(text, file);
    }
    let origin = Origin {
        file: Arc::new(file.to_path_buf()),
        document: 1,
        line: 1,
    };
    let mut loaded = Loaded::default();
    let wrapped = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": MESH_CONFIG_MAP, "namespace": crate::scope::ROOT_NAMESPACE},
        "data": {"mesh": text},
    });
    load_value(wrapped, &origin, &mut loaded);
    loaded
}

/// Loads the documents of one file's text. `file` names it in diagnostics.
pub fn load_str(text: &str, file: &Path) -> Loaded {
    let file = Arc::new(file.to_path_buf());
    let mut loaded = Loaded::default();
    for (index, (line, doc)) in split_documents(text).into_iter().enumerate() {
        let origin = Origin {
            file: file.clone(),
            document: index + 1,
            line,
        };
        if let Some(problem) = shape_problem(doc) {
            loaded.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                origin,
                resource: None,
                path: String::new(),
                message: problem,
                hint: Some(
                    "Kubernetes and Istio objects are far smaller and shallower; split the file or fix the nesting".into(),
                ),
            });
            continue;
        }
        let value = match parse_document(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                loaded.diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    origin,
                    resource: None,
                    path: String::new(),
                    message: format!("not valid YAML or JSON: {e}"),
                    hint: Some(
                        "check the indentation and quoting around the position named".into(),
                    ),
                });
                continue;
            }
        };
        load_value(value, &origin, &mut loaded);
    }
    loaded
}

/// One document (of [`split_documents`]) as kubectl reads it, without the size and depth
/// checks [`load_str`] makes first.
pub fn parse_document(doc: &str) -> Result<Value, serde_norway::Error> {
    serde_norway::from_str::<Value>(doc).or_else(|e| {
        // Only a document libyaml refuses gets the go-yaml reading; one it accepts is
        // never reinterpreted.
        go_yaml_flow_scalars(doc)
            .and_then(|d| serde_norway::from_str(&d).ok())
            .ok_or(e)
    })
}

/// How the warning for a Kubernetes kind that is not mesh config (a Deployment) ends.
pub const NOT_MESH_CONFIG: &str = " is not mesh config; ignored";

/// The deepest nesting of collections a document may have.
pub const MAX_DEPTH: usize = 100;
/// The largest document read (the announced workloads of a big mesh are one `List`).
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;
/// A document the nesting pre-check cannot read goes to libyaml only up to this size:
/// libyaml's cost grows with the square of the flow nesting depth.
const UNCHECKED_BYTES: usize = 64 << 10;

/// Why a document is too big or too deep to parse, found in time linear in its size
/// before libyaml parses it (whose time grows with the square of the nesting depth).
fn shape_problem(doc: &str) -> Option<String> {
    use saphyr_parser::{Event, Parser};
    if doc.len() > MAX_DOCUMENT_BYTES {
        return Some(format!(
            "document of {} bytes is larger than the {} MiB Weft reads",
            doc.len(),
            MAX_DOCUMENT_BYTES >> 20
        ));
    }
    let too_deep = |line: usize| format!("nested deeper than {MAX_DEPTH} levels (line {line})");
    let mut depth = 0usize;
    for event in Parser::new_from_str(doc) {
        match event {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), span)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(too_deep(span.start.line()));
                }
            }
            // saphyr's own bound on flow nesting (255), met while scanning ahead.
            Err(e) if e.info().contains("recursion limit") => {
                return Some(too_deep(e.marker().line()))
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            // Not YAML 1.2 as saphyr reads it: libyaml may still read it (YAML 1.1, the
            // go-yaml reading below), where that is cheap enough.
            Err(e) if doc.len() > UNCHECKED_BYTES => {
                return Some(format!("not valid YAML or JSON: {e}"))
            }
            Err(_) => return None,
        }
    }
    None
}

/// kubectl and the API server parse YAML with go-yaml, which reads a plain scalar ending in
/// `:` inside a flow collection (`addresses: [1.2.3.4, 001:db8::]`) as a string, where
/// libyaml stops at that `:`. Quotes such scalars so both read them alike; `None` when the
/// document has none.
fn go_yaml_flow_scalars(doc: &str) -> Option<String> {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        regex::Regex::new(r##"([\[,]\s*)([^\s\[\]{},'"#][^\s\[\]{},]*:)([,\]}])"##)
            .expect("static regex")
    });
    let quoted = pattern.replace_all(doc, "$1'$2'$3");
    (quoted != doc).then(|| quoted.into_owned())
}

/// Splits on `---` separator lines, keeping each document's first line number. JSON text
/// has no separators and comes back whole.
pub fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let is_separator = bare == "---" || bare.starts_with("--- ") || bare == "...";
        if is_separator {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = number + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

fn load_value(value: Value, origin: &Origin, loaded: &mut Loaded) {
    let error =
        |resource: Option<String>, path: &str, message: String, hint: Option<String>| Diagnostic {
            severity: Severity::Error,
            origin: origin.clone(),
            resource,
            path: path.to_string(),
            message,
            hint,
        };
    let Value::Object(mut object) = value else {
        loaded.diagnostics.push(error(
            None,
            "",
            "a document must be a mapping with apiVersion, kind, metadata and spec".into(),
            None,
        ));
        return;
    };
    let kind_name = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind_name == "List" {
        if let Some(Value::Array(items)) = object.remove("items") {
            for item in items {
                load_value(item, origin, loaded);
            }
        }
        return;
    }
    let metadata: ObjectMeta = match object.remove("metadata") {
        None => ObjectMeta::default(),
        Some(meta) => match serde_json::from_value(meta) {
            Ok(m) => m,
            Err(e) => {
                loaded
                    .diagnostics
                    .push(error(None, "metadata", e.to_string(), None));
                return;
            }
        },
    };
    let display = format!(
        "{} {}/{}",
        if kind_name.is_empty() {
            "<no kind>"
        } else {
            &kind_name
        },
        metadata.namespace(),
        metadata.name
    );
    let Some(kind) = Kind::from_name(&kind_name) else {
        // Other Kubernetes objects (Deployments, ServiceAccounts…) and Istio kinds Weft does
        // not implement share files with mesh config: kubectl would apply them, Weft skips
        // them with a warning. A document with no kind at all is an error.
        loaded.diagnostics.push(Diagnostic {
            severity: if kind_name.is_empty() {
                Severity::Error
            } else {
                Severity::Warning
            },
            origin: origin.clone(),
            resource: Some(display),
            path: "kind".into(),
            message: if kind_name.is_empty() {
                "missing kind".into()
            } else if api_version.contains(".istio.io/") {
                // Istio would act on it: the user must hear that Weft does not.
                format!("kind {kind_name:?} ({api_version}) is an Istio resource Weft does not implement yet; ignored")
            } else {
                format!("kind {kind_name:?} ({api_version}){NOT_MESH_CONFIG}")
            },
            hint: Some(format!(
                "Weft reads {}",
                Kind::ALL.map(Kind::name).join(", ")
            )),
        });
        return;
    };
    if !kind.accepts_api_version(&api_version) {
        loaded.diagnostics.push(error(
            Some(display),
            "apiVersion",
            format!("{kind} is not served at apiVersion {api_version:?}"),
            Some(
                if matches!(kind, Kind::Service | Kind::ConfigMap | Kind::Secret) {
                    "use apiVersion: v1".into()
                } else if kind == Kind::Telemetry {
                    "use telemetry.istio.io/v1 or v1alpha1".into()
                } else if matches!(
                    kind,
                    Kind::PeerAuthentication
                        | Kind::AuthorizationPolicy
                        | Kind::RequestAuthentication
                ) {
                    "use security.istio.io/v1 or v1beta1".into()
                } else {
                    "use networking.istio.io/v1, v1beta1 or v1alpha3".into()
                },
            ),
        ));
        return;
    }
    if metadata.name.is_empty() {
        loaded.diagnostics.push(error(
            Some(display.clone()),
            "metadata.name",
            "Required value".into(),
            Some("every resource needs metadata.name".into()),
        ));
    }
    if kind == Kind::ConfigMap {
        return load_mesh_config_map(object, metadata, api_version, display, origin, loaded);
    }
    if kind == Kind::Secret {
        return load_secret(object, metadata, api_version, display, origin, loaded);
    }
    // Fields outside apiVersion/kind/metadata/spec (status, Istio's test-only `_err`) are
    // warnings so a kubectl dump loads.
    for key in object.keys() {
        if !matches!(key.as_str(), "apiVersion" | "kind" | "spec" | "status") {
            loaded.diagnostics.push(Diagnostic {
                severity: Severity::Warning,
                origin: origin.clone(),
                resource: Some(display.clone()),
                path: key.clone(),
                message: "unknown field; ignored".into(),
                hint: None,
            });
        }
    }
    let Some(mut spec_value) = object.remove("spec").filter(|v| !v.is_null()) else {
        loaded.diagnostics.push(error(
            Some(display),
            "spec",
            "Required value".into(),
            Some(format!("a {kind} needs a spec")),
        ));
        return;
    };
    prune_nulls(&mut spec_value);
    let parsed = match kind {
        Kind::VirtualService => typed(spec_value, Spec::VirtualService),
        Kind::DestinationRule => typed(spec_value, Spec::DestinationRule),
        Kind::ServiceEntry => typed(spec_value, Spec::ServiceEntry),
        Kind::WorkloadEntry => typed(spec_value, Spec::WorkloadEntry),
        Kind::Gateway => typed(spec_value, Spec::Gateway),
        Kind::Sidecar => typed(spec_value, Spec::Sidecar),
        Kind::Service => typed(spec_value, Spec::Service),
        Kind::Telemetry => typed(spec_value, Spec::Telemetry),
        Kind::PeerAuthentication => typed(spec_value, Spec::PeerAuthentication),
        Kind::AuthorizationPolicy => typed(spec_value, Spec::AuthorizationPolicy),
        Kind::RequestAuthentication => typed(spec_value, Spec::RequestAuthentication),
        Kind::ConfigMap | Kind::Secret => unreachable!("loaded by their own functions above"),
    };
    let (spec, unknown) = match parsed {
        Ok(ok) => ok,
        Err((path, message)) => {
            loaded
                .diagnostics
                .push(error(Some(display), &path, message, None));
            return;
        }
    };
    // Strict, as kubectl's field validation: a field Istio does not know is most likely a
    // typo (`mach:` for `match:`), and ignoring it would change what the config does.
    if !unknown.is_empty() {
        for path in unknown {
            loaded.diagnostics.push(error(
                Some(display.clone()),
                &path,
                "unknown field".into(),
                Some(format!(
                    "Istio's {kind} has no such field: check its spelling against Istio's {kind} reference"
                )),
            ));
        }
        return;
    }
    let resource = Resource {
        api_version,
        kind,
        metadata,
        spec,
        origin: origin.clone(),
    };
    let diagnostics = validation_diagnostics(&resource);
    let rejected = diagnostics.iter().any(|d| d.severity == Severity::Error);
    loaded.diagnostics.extend(diagnostics);
    if !rejected {
        loaded.resources.push(resource);
    }
}

/// What validation finds in `resource`, as diagnostics about its document: what loading
/// reports, and what the dashboard shows for a resource in force.
pub fn validation_diagnostics(resource: &Resource) -> Vec<Diagnostic> {
    validate::validate(resource)
        .into_iter()
        .map(|issue| Diagnostic {
            severity: issue.severity,
            origin: resource.origin.clone(),
            resource: Some(resource.display_name()),
            path: issue.path,
            message: issue.message,
            hint: issue.hint,
        })
        .collect()
}

/// A Secret as the API server takes it: `data` in base64, `stringData` as text and merged
/// over it, `type` defaulting to `Opaque`; a field Secrets lack is an error.
fn load_secret(
    mut object: serde_json::Map<String, Value>,
    metadata: ObjectMeta,
    api_version: String,
    display: String,
    origin: &Origin,
    loaded: &mut Loaded,
) {
    use base64::Engine;
    let mut errors = Vec::new();
    let mut error = |path: String, message: String, hint: Option<&str>| {
        errors.push(Diagnostic {
            severity: Severity::Error,
            origin: origin.clone(),
            resource: Some(display.clone()),
            path,
            message,
            hint: hint.map(str::to_string),
        })
    };
    let mut secret = crate::types::Secret {
        type_: "Opaque".into(),
        data: Default::default(),
    };
    for (key, value) in std::mem::take(&mut object) {
        match (key.as_str(), value) {
            ("apiVersion" | "kind" | "immutable" | "status", _) | (_, Value::Null) => {}
            ("type", Value::String(t)) => secret.type_ = t,
            (field @ ("data" | "stringData"), Value::Object(entries)) => {
                for (name, v) in entries {
                    let path = format!("{field}.{name}");
                    let bytes = match (field, v) {
                        ("data", Value::String(b64)) => {
                            match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                                Ok(bytes) => bytes,
                                Err(e) => {
                                    error(
                                        path,
                                        format!("not base64: {e}"),
                                        Some("data values are base64; put text under stringData"),
                                    );
                                    continue;
                                }
                            }
                        }
                        (_, Value::String(text)) => text.into_bytes(),
                        _ => {
                            error(path, "must be a string".into(), None);
                            continue;
                        }
                    };
                    if field == "data" && secret.data.contains_key(&name) {
                        continue;
                    }
                    secret.data.insert(name, bytes);
                }
            }
            (field, _) => error(
                field.to_string(),
                "unknown field, or not of its type".into(),
                Some("a Secret has type, data (base64) and stringData (text)"),
            ),
        }
    }
    if secret.type_ == crate::types::secret::TLS_TYPE {
        for key in ["tls.crt", "tls.key"] {
            if !secret.data.contains_key(key) {
                error(
                    format!("data[{key}]"),
                    "Required value".into(),
                    Some("a kubernetes.io/tls Secret holds tls.crt and tls.key (kubectl create secret tls NAME --cert=FILE --key=FILE)"),
                );
            }
        }
    }
    let resource = Resource {
        api_version,
        kind: Kind::Secret,
        metadata,
        spec: Spec::Secret(secret),
        origin: origin.clone(),
    };
    errors.extend(validation_diagnostics(&resource));
    let rejected = errors.iter().any(|d| d.severity == Severity::Error);
    loaded.diagnostics.extend(errors);
    if !rejected {
        loaded.resources.push(resource);
    }
}

/// The `istio` ConfigMap of the root namespace, whose `mesh` key is the MeshConfig as YAML;
/// any other ConfigMap is an app's and is skipped. A MeshConfig field Weft does not act on is
/// a warning, not an error: Istio installs set many of them.
fn load_mesh_config_map(
    mut object: serde_json::Map<String, Value>,
    metadata: ObjectMeta,
    api_version: String,
    display: String,
    origin: &Origin,
    loaded: &mut Loaded,
) {
    let diagnostic = |severity, path: &str, message: String, hint: Option<String>| Diagnostic {
        severity,
        origin: origin.clone(),
        resource: Some(display.clone()),
        path: path.into(),
        message,
        hint,
    };
    if metadata.name != MESH_CONFIG_MAP || metadata.namespace() != crate::scope::ROOT_NAMESPACE {
        loaded.diagnostics.push(diagnostic(
            Severity::Warning,
            "metadata.name",
            format!("ConfigMap {display}{NOT_MESH_CONFIG}"),
            Some(format!(
                "Weft reads MeshConfig from the mesh key of ConfigMap {}/{MESH_CONFIG_MAP}",
                crate::scope::ROOT_NAMESPACE
            )),
        ));
        return;
    }
    let text = object
        .remove("data")
        .and_then(|mut d| d.get_mut("mesh").map(Value::take));
    let text = match text {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text,
        Some(_) => {
            loaded.diagnostics.push(diagnostic(
                Severity::Error,
                "data.mesh",
                "must be a string".into(),
                Some("write the MeshConfig as a YAML block: `mesh: |`".into()),
            ));
            return;
        }
    };
    let value = match serde_norway::from_str::<Value>(&text) {
        Ok(Value::Null) => Value::Object(Default::default()),
        Ok(v) => v,
        Err(e) => {
            loaded.diagnostics.push(diagnostic(
                Severity::Error,
                "data.mesh",
                format!("not valid YAML: {e}"),
                None,
            ));
            return;
        }
    };
    let mesh_path = |p: &str| p.replacen("spec", "data.mesh", 1);
    let (spec, unknown) = match typed(value, Spec::MeshConfig) {
        Ok(ok) => ok,
        Err((path, message)) => {
            loaded.diagnostics.push(diagnostic(
                Severity::Error,
                &mesh_path(&path),
                message,
                None,
            ));
            return;
        }
    };
    for path in unknown {
        loaded.diagnostics.push(diagnostic(
            Severity::Warning,
            &mesh_path(&path),
            "a MeshConfig field Weft does not act on; ignored".into(),
            None,
        ));
    }
    let resource = Resource {
        api_version,
        kind: Kind::ConfigMap,
        metadata,
        spec,
        origin: origin.clone(),
    };
    let issues = validate::validate(&resource);
    let rejected = issues.iter().any(|i| i.severity == Severity::Error);
    loaded.diagnostics.extend(
        issues
            .into_iter()
            .map(|i| diagnostic(i.severity, &i.path, i.message, i.hint)),
    );
    if !rejected {
        loaded.resources.push(resource);
    }
}

/// Deserializes a spec, collecting the paths of unknown fields and, on failure, the path of
/// the field that failed (`spec.http[0].route[1].weight`).
fn typed<T: DeserializeOwned>(
    value: Value,
    wrap: fn(T) -> Spec,
) -> Result<(Spec, Vec<String>), (String, String)> {
    let mut unknown = Vec::new();
    let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(spec_path(&path.to_string()));
    let ignored = serde_ignored::Deserializer::new(value, &mut on_unknown);
    match serde_path_to_error::deserialize::<_, T>(ignored) {
        Ok(spec) => Ok((wrap(spec), unknown)),
        Err(e) => {
            let path = spec_path(&e.path().to_string());
            Err((path, e.into_inner().to_string()))
        }
    }
}

/// kubectl treats `field:` with no value (YAML null) as absent; so does Weft.
fn prune_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(prune_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

/// Turns the crates' `http.0.route` paths into `spec.http[0].route`.
fn spec_path(raw: &str) -> String {
    let mut out = String::from("spec");
    if raw == "." || raw.is_empty() {
        return out;
    }
    // serde_ignored marks a step through an Option with `?`; the field path has no such step.
    for segment in raw.split('.').filter(|s| *s != "?") {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else if let Some(idx) = segment.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            out.push('[');
            out.push_str(idx);
            out.push(']');
        } else {
            out.push('.');
            out.push_str(segment);
        }
    }
    out
}

#[cfg(test)]
mod tests;
