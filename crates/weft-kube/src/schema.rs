//! The structural OpenAPI v3 schemas of Istio's specs, for the CRDs `weft manifest generate`
//! writes: weft-api's types as schemars reads their serde attributes (names, defaults),
//! rewritten to Kubernetes' structural rules: every type inlined, every node typed, no
//! nulls, no defaults (the API server would write them into objects), free-form fields
//! (`serde_json::Value`) kept whole with `x-kubernetes-preserve-unknown-fields`.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
use weft_api::types;

/// The formats the API server knows; schemars's unsigned ones are bounds instead.
const KUBERNETES_FORMATS: [&str; 6] = ["int32", "int64", "float", "double", "byte", "date-time"];

/// The structural schema of an Istio kind's `spec`, `None` for a kind Weft has no type for.
pub fn spec(kind: &str) -> Option<Value> {
    Some(match kind {
        "VirtualService" => of::<types::VirtualService>(),
        "DestinationRule" => of::<types::DestinationRule>(),
        "Gateway" => of::<types::Gateway>(),
        "ServiceEntry" => of::<types::ServiceEntry>(),
        "Sidecar" => of::<types::Sidecar>(),
        "WorkloadEntry" => of::<types::WorkloadEntry>(),
        "AuthorizationPolicy" => of::<types::AuthorizationPolicy>(),
        "PeerAuthentication" => of::<types::PeerAuthentication>(),
        "RequestAuthentication" => of::<types::RequestAuthentication>(),
        "Telemetry" => of::<types::Telemetry>(),
        _ => return None,
    })
}

fn of<T: JsonSchema>() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    structural(
        settings
            .into_generator()
            .into_root_schema_for::<T>()
            .to_value(),
    )
}

fn is_null(schema: &Value) -> bool {
    schema["type"] == "null"
        || schema["enum"] == json!([null])
        || schema.get("const") == Some(&Value::Null)
}

fn structural(schema: Value) -> Value {
    let Value::Object(mut node) = schema else {
        // `true`: any value, as a `serde_json::Value` field takes.
        return json!({"x-kubernetes-preserve-unknown-fields": true});
    };
    // An Option's null branch goes: the API server prunes nulls from fields not nullable,
    // as it does for Istio's CRDs.
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = node.get(key) else {
            continue;
        };
        let mut rest: Vec<Value> = branches.iter().filter(|b| !is_null(b)).cloned().collect();
        if rest.len() == 1 && rest.len() < branches.len() {
            node.remove(key);
            if let Value::Object(branch) = rest.remove(0) {
                node.extend(branch);
            }
        }
    }
    if let Some(Value::Array(types)) = node.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            node.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(values)) = node.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    for key in ["$schema", "title", "description", "default", "examples"] {
        node.remove(key);
    }
    match node.get("format").and_then(Value::as_str) {
        Some("uint32") => {
            node.remove("format");
            node.insert("maximum".into(), json!(u32::MAX));
        }
        Some(format) if !KUBERNETES_FORMATS.contains(&format) => {
            node.remove("format");
        }
        _ => {}
    }
    if node.is_empty() {
        return json!({"x-kubernetes-preserve-unknown-fields": true});
    }
    if let Some(Value::Object(properties)) = node.remove("properties") {
        let properties: Map<String, Value> = properties
            .into_iter()
            .map(|(name, field)| (name, structural(field)))
            .collect();
        node.insert("properties".into(), Value::Object(properties));
    }
    for key in ["items", "additionalProperties"] {
        if let Some(inner) = node.remove(key) {
            node.insert(key.into(), structural(inner));
        }
    }
    Value::Object(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::index::ISTIO_KINDS;

    /// The keys a structural node may have here: Kubernetes' typed subset of OpenAPI v3.
    const KEYS: [&str; 9] = [
        "type",
        "properties",
        "items",
        "additionalProperties",
        "enum",
        "format",
        "minimum",
        "maximum",
        "required",
    ];

    /// Kubernetes' structural rules, as the API server checks a CRD's schema: every node
    /// typed (or explicitly free-form), no references, no combinators, no defaults.
    fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
        let Some(object) = node.as_object() else {
            problems.push(format!("{path}: not a schema object"));
            return;
        };
        if node["x-kubernetes-preserve-unknown-fields"] == true {
            if object.len() != 1 {
                problems.push(format!("{path}: a free-form node with more: {node}"));
            }
            return;
        }
        for key in object.keys() {
            if !KEYS.contains(&key.as_str()) {
                problems.push(format!("{path}: {key} is not allowed here"));
            }
        }
        match node["type"].as_str() {
            Some("object") => {
                if object.contains_key("properties") && object.contains_key("additionalProperties")
                {
                    problems.push(format!("{path}: properties and additionalProperties"));
                }
                for (name, field) in node["properties"].as_object().into_iter().flatten() {
                    check_structural(field, &format!("{path}.{name}"), problems);
                }
                if let Some(values) = object.get("additionalProperties") {
                    check_structural(values, &format!("{path}.*"), problems);
                }
            }
            Some("array") => check_structural(&node["items"], &format!("{path}[]"), problems),
            Some("string" | "integer" | "number" | "boolean") => {}
            _ => problems.push(format!("{path}: no type: {node}")),
        }
        if let Some(format) = node["format"].as_str() {
            if !KUBERNETES_FORMATS.contains(&format) {
                problems.push(format!("{path}: format {format}"));
            }
        }
    }

    /// Where `ours` would refuse what `istio` takes: a field it lacks, another type, fewer
    /// enum values, tighter bounds, more required fields.
    fn stricter(istio: &Value, ours: &Value, path: &str, problems: &mut Vec<String>) {
        if ours["x-kubernetes-preserve-unknown-fields"] == true {
            return;
        }
        let (theirs, mine) = (&istio["type"], &ours["type"]);
        if theirs != mine && !(theirs == "integer" && mine == "number") {
            problems.push(format!("{path}: {mine} where Istio has {theirs}"));
            return;
        }
        if let Some(values) = ours["enum"].as_array() {
            let theirs = istio["enum"].as_array().into_iter().flatten();
            let missing: Vec<&Value> = theirs.filter(|v| !values.contains(v)).collect();
            if !missing.is_empty() || istio.get("enum").is_none() {
                problems.push(format!("{path}: enum {values:?} lacks {missing:?}"));
            }
        }
        let bound = |schema: &Value, key| schema[key].as_f64();
        if let Some(min) = bound(ours, "minimum") {
            if bound(istio, "minimum").is_none_or(|theirs| theirs < min) {
                problems.push(format!(
                    "{path}: minimum {min}, Istio's {}",
                    istio["minimum"]
                ));
            }
        }
        if let Some(max) = bound(ours, "maximum") {
            if bound(istio, "maximum").is_none_or(|theirs| theirs > max) {
                problems.push(format!(
                    "{path}: maximum {max}, Istio's {}",
                    istio["maximum"]
                ));
            }
        }
        for required in ours["required"].as_array().into_iter().flatten() {
            let theirs = istio["required"].as_array();
            if !theirs.is_some_and(|r| r.contains(required)) {
                problems.push(format!("{path}: {required} required"));
            }
        }
        for (name, field) in istio["properties"].as_object().into_iter().flatten() {
            match ours["properties"].get(name) {
                Some(mine) => stricter(field, mine, &format!("{path}.{name}"), problems),
                None => problems.push(format!("{path}.{name}: missing")),
            }
        }
        if let Some(items) = istio.get("items") {
            stricter(items, &ours["items"], &format!("{path}[]"), problems);
        }
        if let Some(values) = istio.get("additionalProperties") {
            stricter(
                values,
                &ours["additionalProperties"],
                &format!("{path}.*"),
                problems,
            );
        }
    }

    /// Istio's own CRDs, beside the checkout (never copied into this repository).
    const ISTIO_CRDS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/istio-samples/crds/crd-all.gen.yaml"
    );

    #[test]
    fn no_spec_schema_refuses_what_istios_takes() {
        let crds = std::fs::read_to_string(ISTIO_CRDS)
            .unwrap_or_else(|e| panic!("{ISTIO_CRDS}: {e} (istio-samples belongs at ../shared)"));
        let mut compared = 0;
        let mut problems = Vec::new();
        for (_, doc) in weft_api::split_documents(&crds) {
            let crd: Value = serde_norway::from_str(doc).expect("Istio's CRDs parse");
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
            if !ISTIO_KINDS
                .iter()
                .any(|k| k.kind == kind && crd["spec"]["group"] == k.group)
            {
                continue;
            }
            let ours = spec(kind).unwrap();
            for version in crd["spec"]["versions"].as_array().unwrap() {
                let theirs = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
                let at = format!("{kind} {}: spec", version["name"].as_str().unwrap());
                stricter(theirs, &ours, &at, &mut problems);
                compared += 1;
            }
        }
        assert_eq!(
            compared,
            26,
            "every version of the {} kinds",
            ISTIO_KINDS.len()
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn every_kinds_spec_schema_is_structural() {
        for kind in ISTIO_KINDS {
            let schema = spec(kind.kind).unwrap_or_else(|| panic!("no schema for {}", kind.kind));
            assert_eq!(schema["type"], "object", "{}", kind.kind);
            assert!(!schema["properties"].as_object().unwrap().is_empty());
            let mut problems = Vec::new();
            check_structural(&schema, "spec", &mut problems);
            assert!(
                problems.is_empty(),
                "{}:\n{}",
                kind.kind,
                problems.join("\n")
            );
        }
    }
}
