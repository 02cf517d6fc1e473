//! Istio's validation rules, per kind. Each issue names the full field path in the resource.
//!
//! The rules are the union of what Istio's admission webhook (`pkg/config/validation`) and
//! its CRD schemas (OpenAPI and CEL rules) reject, so a document Istio accepts loads and one
//! it refuses does not. The exception, commented where it is made:
//!
//! an [`Severity::Error`] also where Istio passes a setting on that Envoy would refuse with the
//! whole route table (a fault delay without `fixedDelay`, an HTTP status of 600).
//!
//! Where Istio accepts something that cannot do what its author meant (a second catch-all
//! route, a selector without labels), Weft says so with a warning. Messages use Istio's and
//! Kubernetes' wording (`Required value`, `Invalid value: …`).

mod common;
mod destination_rule;
mod gateway;
mod http;
mod http_policy;
mod http_route;
mod names;
mod security;
mod service;
mod service_entry;
mod telemetry;
mod virtual_service;

use crate::resource::{Resource, Spec};
pub use names::{is_dns1123_label, is_dns1123_subdomain};
use serde::Serialize;
pub use virtual_service::UNUSED_RULE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldIssue {
    pub severity: Severity,
    /// `spec.http[0].route[1].weight`
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl FieldIssue {
    /// Adds advice on how to fix the problem.
    pub fn with_hint(&mut self, hint: impl Into<String>) -> &mut Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Checks one resource with Istio's rules.
pub fn validate(resource: &Resource) -> Vec<FieldIssue> {
    let mut report = common::Report::default();
    let namespace = resource.namespace();
    names::validate_metadata(&mut report, resource.kind, &resource.metadata);
    match &resource.spec {
        Spec::VirtualService(vs) => virtual_service::validate(&mut report, vs, namespace),
        Spec::DestinationRule(dr) => destination_rule::validate(&mut report, dr, namespace),
        Spec::ServiceEntry(se) => service_entry::validate_service_entry(&mut report, se, namespace),
        Spec::WorkloadEntry(we) => service_entry::validate_workload_entry(&mut report, we),
        Spec::Gateway(gw) => gateway::validate_gateway(&mut report, gw, resource.name()),
        Spec::Sidecar(sc) => gateway::validate_sidecar(&mut report, sc, namespace),
        Spec::Service(svc) => service::validate(&mut report, svc, namespace),
        Spec::Telemetry(t) => telemetry::validate_telemetry(&mut report, t),
        Spec::PeerAuthentication(pa) => security::validate_peer_authentication(&mut report, pa),
        Spec::RequestAuthentication(ra) => {
            security::validate_request_authentication(&mut report, ra)
        }
        Spec::AuthorizationPolicy(ap) => {
            security::validate_authorization_policy(&mut report, ap, namespace)
        }
        Spec::MeshConfig(m) => telemetry::validate_mesh_config(&mut report, m),
        // Its keys are checked as it loads, as the API server checks them.
        Spec::Secret(_) => {}
    }
    report.into_issues()
}

/// Loads YAML fixtures and looks at what validation said about them.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::load::{load_str, Diagnostic};
    use crate::validate::Severity;
    use std::path::Path;

    pub fn diagnostics(yaml: &str) -> Vec<Diagnostic> {
        load_str(yaml, Path::new("test.yaml")).diagnostics
    }

    fn describe(diags: &[Diagnostic]) -> String {
        diags
            .iter()
            .map(|d| format!("  {:?} {}: {}", d.severity, d.path, d.message))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The document loads with no error and no warning.
    pub fn assert_clean(yaml: &str) {
        let diags = diagnostics(yaml);
        assert!(
            diags.is_empty(),
            "expected no issues, got:\n{}",
            describe(&diags)
        );
    }

    /// The document loads with no error (warnings allowed).
    pub fn assert_accepted(yaml: &str) {
        let diags = diagnostics(yaml);
        assert!(
            diags.iter().all(|d| d.severity != Severity::Error),
            "expected no errors, got:\n{}",
            describe(&diags)
        );
    }

    fn assert_issue(yaml: &str, severity: Severity, path: &str, message: &str) {
        let diags = diagnostics(yaml);
        assert!(
            diags
                .iter()
                .any(|d| d.severity == severity && d.path == path && d.message.contains(message)),
            "expected {severity:?} at {path} containing {message:?}, got:\n{}",
            describe(&diags)
        );
    }

    /// Some error sits at `path` and its message contains `message`.
    pub fn assert_error(yaml: &str, path: &str, message: &str) {
        assert_issue(yaml, Severity::Error, path, message);
    }

    /// Some warning sits at `path` and its message contains `message`.
    pub fn assert_warning(yaml: &str, path: &str, message: &str) {
        assert_issue(yaml, Severity::Warning, path, message);
        assert_accepted(yaml);
    }
}
