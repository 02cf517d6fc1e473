//! Findings the loader and validation already made, as analysis messages: every error is
//! IST0106 SchemaValidationError; the port-naming warning of `validate::service` is Istio's
//! IST0118 text already, and becomes IST0118. Other warnings stay with `weft validate`.

use super::mesh::Mesh;
use super::{
    Message, MessageType, Report, ResourceName, PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
    SCHEMA_VALIDATION_ERROR, VALIDATION_WARNING,
};
use crate::load::Diagnostic;
use crate::validate::Severity;

/// The tail of the message `validate::service` gives a port that is not
/// `<protocol>[-suffix]` and has no `appProtocol`.
const PORT_NAMING: &str = "doesn't follow the naming convention of Istio port.";

/// IST0106: each load or validation error, with the text after the resource name.
pub(crate) fn schema_errors(mesh: &Mesh<'_>, report: &mut Report) {
    for d in &mesh.input.diagnostics {
        if d.severity == Severity::Error {
            let text = match (&d.resource, d.path.is_empty()) {
                (Some(_), true) => d.message.clone(),
                (Some(_), false) => format!("{}: {}", d.path, d.message),
                // Nothing names the document: say where it is.
                (None, _) => format!("{}: {}", d.origin, d.message),
            };
            report.push(message(
                SCHEMA_VALIDATION_ERROR,
                d,
                format!("Schema validation error: {text}"),
            ));
        }
    }
}

/// IST0118: Service ports whose name has no protocol prefix and that set no `appProtocol`.
pub(crate) fn port_names(mesh: &Mesh<'_>, report: &mut Report) {
    for d in &mesh.input.diagnostics {
        let service = d
            .resource
            .as_deref()
            .is_some_and(|r| r.starts_with("Service "));
        if d.severity == Severity::Warning && service && d.message.ends_with(PORT_NAMING) {
            report.push(message(
                PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
                d,
                d.message.clone(),
            ));
        }
    }
}

/// WEFT0004: every other warning about a resource, but Kubernetes kinds that are not mesh
/// config (Deployments and the like share files with it and are skipped quietly).
pub(crate) fn other_warnings(mesh: &Mesh<'_>, report: &mut Report) {
    for d in &mesh.input.diagnostics {
        let port_naming = d.message.ends_with(PORT_NAMING);
        let not_mesh_config = d.message.ends_with(crate::load::NOT_MESH_CONFIG);
        // WEFT0002 reports routes shadowed by a catch-all, with more to say.
        let shadowed = d.message.ends_with(crate::validate::UNUSED_RULE);
        if d.severity == Severity::Warning
            && d.resource.is_some()
            && !port_naming
            && !not_mesh_config
            && !shadowed
        {
            let text = if d.path.is_empty() {
                d.message.clone()
            } else {
                format!("{}: {}", d.path, d.message)
            };
            report.push(message(VALIDATION_WARNING, d, text));
        }
    }
}

fn message(message_type: MessageType, d: &Diagnostic, text: String) -> Message {
    Message {
        message_type,
        resource: d.resource.as_deref().and_then(ResourceName::parse),
        origin: Some(d.origin.clone()),
        path: Some(d.path.clone()).filter(|p| !p.is_empty()),
        text,
    }
}

#[cfg(test)]
mod tests {
    use crate::analyze::test_support::*;

    #[test]
    fn every_error_is_a_schema_validation_error() {
        let yaml = docs(&[
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: lots\n",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  selector: {istio: ingressgateway}\n",
            "kind: [not, a, kind\n",
        ]);
        let lines = lines_with(&yaml, "IST0106");
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].starts_with("Error [IST0106] Schema validation error: test.yaml: document 3 (line 20): not valid YAML"), "{}", lines[0]);
        assert_eq!(
            lines[1],
            "Error [IST0106] (Gateway default/gw) Schema validation error: spec.servers: gateway must have at least one server"
        );
        assert!(
            lines[2].starts_with("Error [IST0106] (VirtualService shop/reviews) Schema validation error: spec.http[0].route[0].weight: "),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn unconventional_port_names_are_ist0118() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - {name: foo, port: 80, targetPort: 8080}\n  - {name: http-api, port: 81}\n  - {name: db, port: 3306, appProtocol: mysql}\n  - {name: admin, port: 82}\n";
        assert_eq!(
            lines(yaml),
            [
                "Info [IST0118] (Service default/web) Port name admin (port: 82, targetPort: 82) doesn't follow the naming convention of Istio port.",
                "Info [IST0118] (Service default/web) Port name foo (port: 80, targetPort: 8080) doesn't follow the naming convention of Istio port.",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_schema_errors_and_foreign_kinds_no_message() {
        // A skipped Kubernetes kind is a warning of the loader, not an analysis message.
        let yaml = docs(&[
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: r.example.com\n  lables: {}\n",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
        ]);
        assert_eq!(
            lines(&yaml),
            ["Error [IST0106] (DestinationRule default/r) Schema validation error: spec.lables: unknown field"]
        );
    }
}
