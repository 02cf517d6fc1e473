use super::*;

fn load(text: &str) -> Loaded {
    load_str(text, Path::new("mesh.yaml"))
}

#[test]
fn reads_multi_document_yaml_with_positions() {
    let loaded = load(
        "# comment\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n  namespace: prod\nspec:\n  ports: [{port: 80, name: http}]\n",
    );
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    assert_eq!(loaded.resources.len(), 2);
    assert_eq!(loaded.resources[1].display_name(), "Service prod/b");
    assert_eq!(loaded.resources[1].origin.document, 2);
    assert_eq!(loaded.resources[1].origin.line, 13);
}

#[test]
fn type_errors_name_the_field_path() {
    let loaded = load(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: 50\n    - destination: {host: reviews}\n      weight: lots\n",
    );
    let err = loaded.errors().next().expect("an error");
    assert_eq!(err.path, "spec.http[0].route[1].weight");
    assert_eq!(
        err.resource.as_deref(),
        Some("VirtualService default/reviews")
    );
    let text = err.to_string();
    assert!(text.starts_with("error: mesh.yaml: document 1 (line 1): VirtualService default/reviews: spec.http[0].route[1].weight:"), "{text}");
    assert!(loaded.resources.is_empty());
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let loaded = load(
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: r\n  subsets:\n  - name: v1\n    lables: {version: v1}\n",
    );
    let error = loaded.errors().next().expect("an error");
    assert_eq!(error.path, "spec.subsets[0].lables");
    assert!(error.to_string().contains("check its spelling"), "{error}");
    assert!(loaded.resources.is_empty());
}

#[test]
fn json_and_lists_load_as_kubectl_reads_them() {
    let loaded = load(
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"networking.istio.io/v1","kind":"Gateway","metadata":{"name":"g"},"spec":{"servers":[{"port":{"number":80,"name":"http","protocol":"HTTP"},"hosts":["*"]}]}}]}"#,
    );
    assert_eq!(loaded.resources.len(), 1);
    assert_eq!(loaded.resources[0].kind, Kind::Gateway);
}

#[test]
fn missing_spec_and_foreign_kinds() {
    let loaded = load("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: x\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec: {}\n");
    let errors: Vec<_> = loaded.errors().collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "spec");
    assert_eq!(errors[0].message, "Required value");
    assert_eq!(loaded.warnings().count(), 1);
}

#[test]
fn garbage_never_panics() {
    for text in [
        "{",
        "- a\n- b",
        ": :",
        "kind: 5",
        "apiVersion: v1\nkind: Service\nspec: 7",
        "\u{0}",
    ] {
        let _ = load(text);
    }
}

#[test]
fn flow_scalars_ending_in_a_colon_read_as_go_yaml_reads_them() {
    let loaded = load("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: v6\nspec:\n  hosts: [example.com]\n  addresses: [1.2.3.4, 2001:db8::]\n");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let crate::Spec::ServiceEntry(se) = &loaded.resources[0].spec else {
        panic!()
    };
    assert_eq!(se.addresses, ["1.2.3.4", "2001:db8::"]);
}

#[test]
fn names_and_namespaces_are_checked_as_kubernetes_checks_them() {
    let doc = |kind: &str, name: &str, namespace: &str| {
        let (api, spec) = match kind {
            "Service" => ("v1", "{ports: [{port: 80, name: http}]}"),
            _ => ("networking.istio.io/v1", "{host: reviews}"),
        };
        format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name:?}\n  namespace: {namespace:?}\nspec: {spec}\n")
    };
    for hostile in [
        "..",
        "../victim/app",
        "a/b",
        "%2fetc",
        "Reviews",
        "révieẃs",
        "a..b",
        ".a",
        "a.",
        "-a",
        "",
    ] {
        let ns = load(&doc("DestinationRule", "reviews", hostile));
        let e = ns
            .errors()
            .next()
            .unwrap_or_else(|| panic!("namespace {hostile:?} accepted"));
        assert_eq!(e.path, "metadata.namespace", "{hostile:?}: {e}");
        assert!(e.message.contains("RFC 1123 label"), "{e}");
        assert!(ns.resources.is_empty());
        if hostile.is_empty() {
            continue;
        }
        let name = load(&doc("DestinationRule", hostile, "default"));
        let e = name
            .errors()
            .next()
            .unwrap_or_else(|| panic!("name {hostile:?} accepted"));
        assert_eq!(e.path, "metadata.name", "{hostile:?}: {e}");
        assert!(name.resources.is_empty());
    }
    // Istio objects take subdomains; a Service's name is a DNS-1035 label.
    assert!(!load(&doc("DestinationRule", "reviews.v1", "prod")).has_errors());
    assert!(!load(&doc("DestinationRule", "1-reviews", "prod")).has_errors());
    assert!(!load(&doc("Service", "reviews", "prod")).has_errors());
    for bad in ["reviews.v1", "1-reviews"] {
        let e = load(&doc("Service", bad, "prod"));
        let e = e.errors().next().expect("refused");
        assert!(e.message.contains("DNS-1035"), "{e}");
    }
    let long = "a".repeat(254);
    assert!(load(&doc("DestinationRule", &long, "prod")).has_errors());
    assert!(load(&doc("DestinationRule", "reviews", &"n".repeat(64))).has_errors());
}

#[test]
fn deep_or_huge_documents_are_refused_before_they_are_parsed() {
    // `status` is outside the schema (kubectl dumps carry it), so only its shape counts.
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, name: http}]}\n";
    for (open, close) in [("[", "]"), ("{a: ", "}")] {
        // 100,000 levels in about 400 KB: libyaml alone takes tens of seconds, and says
        // "recursion limit exceeded"; the check before it answers at once.
        let doc = format!(
            "{service}status: {}{}\n",
            open.repeat(100_000),
            close.repeat(100_000)
        );
        let e = load(&doc).errors().next().cloned().expect("refused");
        assert!(e.message.contains("nested deeper than 100 levels"), "{e}");
    }
    let block = format!("{service}status:\n  {}x\n", "- ".repeat(100_000));
    let e = load(&block).errors().next().cloned().expect("refused");
    assert!(e.message.contains("nested deeper"), "{e}");
    // As deep as real objects get, and deeper, is fine.
    let fine = format!("{service}status: {}1{}\n", "[".repeat(90), "]".repeat(90));
    assert!(!load(&fine).has_errors(), "{:?}", load(&fine).diagnostics);
    let huge = format!("{service}status: \"{}\"\n", "x".repeat(MAX_DOCUMENT_BYTES));
    let e = load(&huge).errors().next().cloned().expect("refused");
    assert!(e.message.contains("larger than the 16 MiB"), "{e}");
}

const MESH: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    enableTracing: true
    defaultConfig:
      discoveryAddress: istiod.istio-system.svc:15012
      tracing: {sampling: 100}
      holdApplicationUntilProxyStarts: true
    defaultProviders: {tracing: [zipkin]}
    extensionProviders:
    - name: zipkin
      zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
    - name: otel
      opentelemetry: {service: otel-collector.observability, port: 4318, http: {path: /v1/traces}}
  meshNetworks: 'networks: {}'
"#;

#[test]
fn the_istio_config_map_is_the_mesh_config() {
    let loaded = load(MESH);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let Spec::MeshConfig(mesh) = &loaded.resources[0].spec else {
        panic!("{:?}", loaded.resources)
    };
    assert_eq!(mesh.access_log_file.as_deref(), Some("/dev/stdout"));
    assert_eq!(
        mesh.provider("otel")
            .unwrap()
            .opentelemetry
            .as_ref()
            .unwrap()
            .port,
        4318
    );
    // A field Istio has and Weft does not act on is a warning naming it.
    let warning = &loaded.diagnostics[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(
        warning.path,
        "data.mesh.defaultConfig.holdApplicationUntilProxyStarts"
    );
    // It goes over the wire as kubectl prints a ConfigMap, and comes back the same.
    let json = serde_json::to_string(&loaded.resources[0]).unwrap();
    assert!(json.contains(r#""data":{"mesh":"#), "{json}");
    let back = load(&json);
    assert_eq!(back.resources[0].spec, loaded.resources[0].spec);
}

#[test]
fn mesh_config_mistakes_name_their_field() {
    let bad = MESH.replace("sampling: 100", "sampling: 101");
    let e = load(&bad).errors().next().cloned().expect("refused");
    assert_eq!(e.path, "data.mesh.defaultConfig.tracing.sampling");
    let bad = MESH.replace("tracing: [zipkin]", "tracing: [jaeger]");
    let e = load(&bad).errors().next().cloned().expect("refused");
    assert_eq!(e.path, "data.mesh.defaultProviders.tracing[0]");
    assert!(
        e.message
            .contains("no extensionProvider is named \"jaeger\""),
        "{e}"
    );
    let bad = MESH.replace("sampling: 100", "sampling: lots");
    let e = load(&bad).errors().next().cloned().expect("refused");
    assert_eq!(e.path, "data.mesh.defaultConfig.tracing.sampling");
    // An app's ConfigMap shares files with mesh config and is skipped.
    let app = MESH.replace("name: istio,", "name: app-settings,");
    let loaded = load(&app);
    assert!(loaded.resources.is_empty() && !loaded.has_errors());
    assert!(loaded.diagnostics[0].message.contains("is not mesh config"));
}

#[test]
fn telemetry_loads_with_istio_rules() {
    let doc = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 10.5
  accessLogging:
  - providers: [{name: envoy}]
"#;
    let loaded = load(doc);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let bad = doc.replace("10.5", "150");
    let e = load(&bad).errors().next().cloned().expect("refused");
    assert_eq!(e.path, "spec.tracing[0].randomSamplingPercentage");
    let both = doc.replace(
        "  tracing:",
        "  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Service, name: a}]\n  tracing:",
    );
    assert!(load(&both).has_errors());
    let typo = doc.replace("randomSamplingPercentage", "randomSamplingPercent");
    assert!(load(&typo).has_errors());
}

#[test]
fn a_mesh_config_file_is_the_mesh_key_or_the_config_map() {
    let bare = "defaultConfig:\n  tracing: {sampling: 50}\n";
    let loaded = load_mesh_config(bare, Path::new("/etc/istio/config/mesh"));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    assert_eq!(
        loaded.resources[0].display_name(),
        "ConfigMap istio-system/istio"
    );
    let loaded = load_mesh_config(MESH, Path::new("istio.yaml"));
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let e = load_mesh_config(
        "defaultConfig: {tracing: {sampling: 500}}",
        Path::new("mesh"),
    );
    let e = e.errors().next().cloned().expect("refused");
    assert_eq!(e.path, "data.mesh.defaultConfig.tracing.sampling");
    assert!(e.to_string().starts_with("error: mesh: "), "{e}");
}

#[test]
fn secrets_load_as_the_api_server_takes_them_and_never_print_their_bytes() {
    // `kubectl create secret tls` writes base64 data; stringData is text and wins.
    let yaml = r#"
apiVersion: v1
kind: Secret
metadata: {name: httpbin-credential, namespace: istio-system}
type: kubernetes.io/tls
data:
  tls.crt: Q0VSVA==
  tls.key: S0VZ
stringData:
  ca.crt: ROOT
"#;
    let loaded = load(yaml);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let Spec::Secret(secret) = &loaded.resources[0].spec else {
        panic!("{:?}", loaded.resources)
    };
    let credential = secret.tls_credential();
    assert_eq!(credential.certificate, Some(&b"CERT"[..]));
    assert_eq!(credential.key, Some(&b"KEY"[..]));
    assert_eq!(credential.ca, Some(&b"ROOT"[..]));
    let debug = format!("{:?}", loaded.resources[0]);
    assert!(
        !debug.contains("KEY\"") && debug.contains("<3 bytes>"),
        "{debug}"
    );
    // Over the wire as kubectl prints it, and back the same.
    let json = serde_json::to_string(&loaded.resources[0]).unwrap();
    assert!(json.contains(r#""data":{"ca.crt":"Uk9PVA==""#), "{json}");
    assert_eq!(load(&json).resources[0].spec, loaded.resources[0].spec);

    // Mistakes name their field.
    let e = load(&yaml.replace("S0VZ", "not base64!"))
        .errors()
        .next()
        .cloned()
        .expect("refused");
    assert_eq!(e.path, "data.tls.key");
    assert!(e.message.contains("not base64"), "{e}");
    let e = load(&yaml.replace("  tls.key: S0VZ\n", ""))
        .errors()
        .next()
        .cloned()
        .expect("refused");
    assert_eq!(e.path, "data[tls.key]");
    let e = load(&yaml.replace("type:", "kind2:"))
        .errors()
        .next()
        .cloned()
        .expect("refused");
    assert_eq!(e.path, "kind2");
    let e = load(&yaml.replace("name: httpbin-credential, ", ""))
        .errors()
        .next()
        .cloned()
        .expect("refused");
    assert_eq!(e.path, "metadata.name");
}

#[test]
fn ext_authz_providers_load_as_istios_task_writes_them() {
    let mesh = |provider: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: sample-ext-authz-http\n      envoyExtAuthzHttp:\n{provider}")
    };
    let task = mesh("        service: ext-authz.foo.svc.cluster.local\n        port: \"8000\"\n        includeRequestHeadersInCheck: [x-ext-authz]\n");
    let loaded = load(&task);
    assert!(
        !loaded.has_errors() && loaded.diagnostics.is_empty(),
        "{:?}",
        loaded.diagnostics
    );
    let Spec::MeshConfig(m) = &loaded.resources[0].spec else {
        panic!()
    };
    let http = m
        .provider("sample-ext-authz-http")
        .unwrap()
        .envoy_ext_authz_http
        .as_ref()
        .unwrap();
    assert_eq!(http.port.number(), Some(8000));
    let e = load(&mesh(
        "        service: ext-authz.foo.svc.cluster.local\n        port: \"http\"\n",
    ))
    .errors()
    .next()
    .cloned()
    .expect("refused");
    assert_eq!(
        e.path,
        "data.mesh.extensionProviders[0].envoyExtAuthzHttp.port"
    );
    let e = load(&mesh("        port: 8000\n"))
        .errors()
        .next()
        .cloned()
        .expect("refused");
    assert_eq!(
        e.path,
        "data.mesh.extensionProviders[0].envoyExtAuthzHttp.service"
    );
}
