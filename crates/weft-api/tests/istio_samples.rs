//! Istio's own validation cases and the Bookinfo configs, read from `../shared/istio-samples`
//! beside the checkout (never copied into this repository). Missing files fail the tests.

use serde_json::Value;
use std::path::{Path, PathBuf};
use weft_api::{load_path, load_str, Diagnostic, Severity};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio-samples");

fn sample_path(relative: &str) -> PathBuf {
    Path::new(SAMPLES).join(relative)
}

fn read_sample(relative: &str) -> String {
    let path = sample_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read Istio sample {}: {e}\nthese tests need istio-samples checked out at ../shared beside the repository",
            path.display()
        )
    })
}

/// One document of a test file: what Istio expects (`_err`), and the document without it.
struct Case {
    index: usize,
    expected_error: Option<String>,
    yaml: String,
}

/// Splits on `---` lines; `_err` belongs to Istio's test harness, not to the resource, so its
/// line is taken out and the rest of the document goes to the loader as written.
fn cases(relative: &str) -> Vec<Case> {
    let text = read_sample(relative);
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("at least one document");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    let mut out = Vec::new();
    for (index, doc) in docs.iter().enumerate() {
        let mut expected_error = None;
        let mut yaml = String::new();
        for line in doc.lines() {
            if line.starts_with("_err:") {
                let value: Value = serde_norway::from_str(line).unwrap_or_else(|e| {
                    panic!("{relative}: document {}: bad _err line: {e}", index + 1)
                });
                expected_error = value["_err"].as_str().map(str::to_string);
            } else {
                yaml.push_str(line);
                yaml.push('\n');
            }
        }
        if yaml
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        out.push(Case {
            index: index + 1,
            expected_error,
            yaml,
        });
    }
    assert!(!out.is_empty(), "{relative} has no documents");
    out
}

fn describe(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("\n  {d}")).collect()
}

fn errors(diags: &[Diagnostic]) -> Vec<&Diagnostic> {
    diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

fn check_valid(relative: &str) {
    for case in cases(relative) {
        assert!(
            case.expected_error.is_none(),
            "{relative}: document {} has _err in a valid file",
            case.index
        );
        let loaded = load_str(&case.yaml, Path::new(relative));
        assert!(
            !loaded.has_errors(),
            "{relative}: document {} must be accepted, got:{}",
            case.index,
            describe(&loaded.diagnostics)
        );
        assert_eq!(
            loaded.resources.len(),
            1,
            "{relative}: document {}",
            case.index
        );
    }
}

fn check_invalid(relative: &str) {
    for case in cases(relative) {
        let expected = case
            .expected_error
            .unwrap_or_else(|| panic!("{relative}: document {} has no _err", case.index));
        let loaded = load_str(&case.yaml, Path::new(relative));
        let found = errors(&loaded.diagnostics)
            .iter()
            .any(|d| format!("{}: {}", d.path, d.message).contains(&expected));
        assert!(
            found,
            "{relative}: document {} must be rejected with {expected:?}, got:{}",
            case.index,
            describe(&loaded.diagnostics)
        );
        assert!(
            loaded.resources.is_empty(),
            "{relative}: document {} was loaded anyway",
            case.index
        );
    }
}

#[test]
fn istio_accepts_these_service_entries() {
    check_valid("validation/serviceentry-valid.yaml");
}

#[test]
fn istio_rejects_these_service_entries() {
    check_invalid("validation/serviceentry-invalid.yaml");
}

#[test]
fn istio_accepts_these_workload_entries() {
    check_valid("validation/workloadentry-valid.yaml");
}

#[test]
fn istio_rejects_these_workload_entries() {
    check_invalid("validation/workloadentry-invalid.yaml");
}

#[test]
fn istio_accepts_these_telemetries() {
    check_valid("validation/telemetry-valid.yaml");
}

#[test]
fn istio_accepts_these_peer_authentications() {
    check_valid("validation/peerauth-valid.yaml");
}

#[test]
fn istio_rejects_these_peer_authentications() {
    check_invalid("validation/peerauth-invalid.yaml");
}

#[test]
fn istio_accepts_these_request_authentications() {
    check_valid("validation/reqauth-valid.yaml");
}

#[test]
fn istio_rejects_these_request_authentications() {
    check_invalid("validation/reqauth-invalid.yaml");
}

#[test]
fn istio_accepts_these_authorization_policies() {
    check_valid("validation/authz-valid.yaml");
}

#[test]
fn istio_rejects_these_authorization_policies() {
    check_invalid("validation/authz-invalid.yaml");
}

#[test]
fn istio_rejects_these_telemetries() {
    check_invalid("validation/telemetry-invalid.yaml");
}

#[test]
fn istio_accepts_these_destination_rules() {
    check_valid("validation/destinationrule-valid.yaml");
}

#[test]
fn istio_rejects_these_destination_rules() {
    check_invalid("validation/destinationrule-invalid.yaml");
}

#[test]
fn bookinfo_networking_configs_load_without_errors() {
    let dir = sample_path("bookinfo/networking");
    let loaded = load_path(&dir).unwrap_or_else(|e| {
        panic!("{e}\nthese tests need istio-samples checked out at ../shared beside the repository")
    });
    assert!(
        !loaded.has_errors(),
        "Bookinfo's configs must load, got:{}",
        describe(&loaded.diagnostics)
    );
    assert!(
        loaded.resources.len() >= 20,
        "only {} resources loaded from {}",
        loaded.resources.len(),
        dir.display()
    );
}

#[test]
fn a_rejected_virtual_service_names_file_document_resource_path_and_message() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: prod\nspec:\n  ports: [{name: http, port: 9080}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: prod\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: -10\n    - destination: {host: reviews, subset: v2}\n      weight: 110\n";
    let loaded = load_str(text, Path::new("routes/reviews.yaml"));
    let errors = errors(&loaded.diagnostics);
    assert_eq!(errors.len(), 1, "{}", describe(&loaded.diagnostics));
    let shown = errors[0].to_string();
    let first_line = shown.lines().next().unwrap_or_default();
    assert_eq!(
        first_line,
        "error: routes/reviews.yaml: document 2 (line 9): VirtualService prod/reviews: spec.http[0].route[0].weight: Invalid value: -10: weight must not be negative"
    );
    assert_eq!(
        loaded.resources.len(),
        1,
        "the Service still loads; the VirtualService does not"
    );
}

/// A value Istio's schema accepts at a leaf: the first enum value, else one of its type.
fn schema_leaf(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return Value::from(1);
    }
    match schema["type"].as_str() {
        Some("integer" | "number") => Value::from(1),
        Some("boolean") => Value::Bool(true),
        Some("array") => Value::Array(vec![schema_leaf(&schema["items"])]),
        Some("object") => Value::Object(Default::default()),
        _ => Value::from("x"),
    }
}

/// Every field of a schema, each as the smallest spec that sets just that field.
fn schema_fields(
    schema: &Value,
    path: &str,
    wrap: &dyn Fn(Value) -> Value,
    out: &mut Vec<(String, Value)>,
) {
    if let Some(props) = schema["properties"].as_object() {
        for (name, field) in props {
            let here = format!("{path}.{name}");
            let wrap_here = |v: Value| wrap(serde_json::json!({ name.as_str(): v }));
            out.push((here.clone(), wrap_here(schema_leaf(field))));
            schema_fields(field, &here, &wrap_here, out);
        }
    }
    if schema["type"] == "array" {
        schema_fields(
            &schema["items"],
            &format!("{path}[0]"),
            &|v| wrap(Value::Array(vec![v])),
            out,
        );
    }
    if schema["additionalProperties"].is_object() {
        let inner = &schema["additionalProperties"];
        schema_fields(
            inner,
            &format!("{path}.k"),
            &|v| wrap(serde_json::json!({ "k": v })),
            out,
        );
    }
}

#[test]
fn every_field_of_istios_schemas_is_known_so_a_typo_is_an_error() {
    let crds = read_sample("crds/crd-all.gen.yaml");
    let mut checked = 0;
    let mut unknown = Vec::new();
    for (_, doc) in weft_api::split_documents(&crds) {
        let crd: Value = serde_norway::from_str(doc).expect("Istio's CRDs parse");
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        if weft_api::Kind::from_name(kind).is_none() || !group.ends_with(".istio.io") {
            continue;
        }
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
            let mut fields = Vec::new();
            schema_fields(spec, "spec", &|v| v, &mut fields);
            for (path, spec) in fields {
                let doc = serde_json::json!({
                    "apiVersion": format!("{group}/{}", version["name"].as_str().unwrap()),
                    "kind": kind,
                    "metadata": {"name": "a"},
                    "spec": spec,
                });
                let loaded = load_str(&doc.to_string(), Path::new("schema.json"));
                checked += 1;
                unknown.extend(
                    loaded
                        .diagnostics
                        .iter()
                        .filter(|d| d.message.contains("unknown field"))
                        .map(|d| format!("{kind} {path}: {d}")),
                );
            }
        }
    }
    assert!(
        checked > 1500,
        "only {checked} fields found in Istio's CRDs"
    );
    assert!(
        unknown.is_empty(),
        "{} of Istio's fields unknown to Weft:\n{}",
        unknown.len(),
        unknown.join("\n")
    );
}

#[test]
fn a_field_istio_does_not_know_is_an_error_that_names_it() {
    let loaded = load_str(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - mach:\n    - headers: {end-user: {exact: jason}}\n    route:\n    - destination: {host: reviews, subset: v2}\n",
        Path::new("typo.yaml"),
    );
    let e = loaded.errors().next().expect("a typo is an error");
    assert_eq!(e.path, "spec.http[0].mach");
    assert!(e.message.contains("unknown field"), "{e}");
    assert!(loaded.resources.is_empty());
}

#[test]
fn a_telemetry_expression_that_is_not_cel_is_refused_with_its_field() {
    let yaml = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: istio-system}
spec:
  accessLogging:
  - filter: {expression: 'response.code >='}
  metrics:
  - overrides:
    - tagOverrides:
        request_host: {value: 'request.host +'}
        '0bad': {operation: REMOVE}
";
    let loaded = load_str(yaml, Path::new("telemetry.yaml"));
    let errs: Vec<String> = errors(&loaded.diagnostics)
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    for want in [
        "spec.accessLogging[0].filter.expression: not a CEL expression",
        "spec.metrics[0].overrides[0].tagOverrides[request_host].value: not a CEL expression",
        "spec.metrics[0].overrides[0].tagOverrides[0bad]: \"0bad\" cannot be a Prometheus label name",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(want)), "{want}: {errs:#?}");
    }
    assert!(loaded.resources.is_empty());
}

#[test]
fn a_log_format_with_an_unknown_operator_is_refused_with_its_field_and_a_hint() {
    let yaml = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    accessLogFile: /dev/stdout
    accessLogFormat: "%REQ(:PATH)% %RESPONSE_CODEZ%"
    extensionProviders:
    - name: json-log
      envoyFileAccessLog: {path: /dev/stdout, logFormat: {labels: {path: "%REQ(:PATH", code: "%RESPONSE_CODE%"}}}
    defaultConfig:
      tracing:
        customTags:
          outcome: {formatter: {value: "%START_TIME(%s)%"}}
"#;
    let loaded = load_str(yaml, Path::new("mesh.yaml"));
    let errs = errors(&loaded.diagnostics);
    let shown: Vec<String> = errs
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    for want in [
        "data.mesh.accessLogFormat: %RESPONSE_CODEZ% is not a command operator Weft supports",
        "data.mesh.extensionProviders[0].envoyFileAccessLog.logFormat.labels: path: %REQ(:PATH has no closing %",
        "data.mesh.defaultConfig.tracing.customTags[outcome].formatter.value: %START_TIME(%s)%: Weft writes START_TIME as RFC 3339 only",
    ] {
        assert!(shown.iter().any(|e| e.starts_with(want)), "{want}: {shown:#?}");
    }
    assert!(errs.iter().all(|d| d
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("REQ(HEADER?ALTERNATIVE)"))));
    assert!(loaded.resources.is_empty());
}
