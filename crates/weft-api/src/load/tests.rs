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
fn unknown_fields_are_warnings_with_their_path() {
    let loaded = load(
        "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: r\n  subsets:\n  - name: v1\n    lables: {version: v1}\n",
    );
    assert!(!loaded.has_errors());
    let warning = loaded.warnings().next().expect("a warning");
    assert_eq!(warning.path, "spec.subsets[0].lables");
    assert_eq!(loaded.resources.len(), 1);
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
