//! `weft analyze`: Istio's `istioctl analyze` over the resources Weft reads. Each analyzer
//! looks across resources (a VirtualService and the DestinationRules, Services and Gateways
//! it names) and reports [`Message`]s with Istio's codes and wording, so that
//! `Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule
//! not found: "reviews+v4"` reads the same from Weft as from istioctl. Findings Istio has no
//! code for use Weft's own (`WEFT0001`…).
//!
//! The input is read as kubectl and istioctl's file source read it: a later document with the
//! same kind, namespace and name replaces an earlier one (`WEFT0003` says so), and the pod
//! templates of Kubernetes workloads (Deployments…) stand for the pods they would run
//! ([`Input::pods`]).

mod diagnostics;
mod input;
mod mesh;
mod references;
mod security;
mod subsets;
mod virtual_services;

pub use input::{Input, Pod};

use crate::resource::{Origin, Resource};
use serde::Serialize;
use std::fmt;

/// How serious a finding is; the order is the order of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One kind of finding: its code, name and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
}

impl MessageType {
    /// Istio's page for its own codes.
    pub fn documentation_url(&self) -> Option<String> {
        self.code.starts_with("IST").then(|| {
            format!(
                "https://istio.io/latest/docs/reference/config/analysis/{}/",
                self.code.to_ascii_lowercase()
            )
        })
    }
}

const fn message_type(code: &'static str, name: &'static str, level: Level) -> MessageType {
    MessageType { code, name, level }
}

pub const REFERENCED_RESOURCE_NOT_FOUND: MessageType =
    message_type("IST0101", "ReferencedResourceNotFound", Level::Error);
pub const SCHEMA_VALIDATION_ERROR: MessageType =
    message_type("IST0106", "SchemaValidationError", Level::Error);
pub const CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS: MessageType = message_type(
    "IST0109",
    "ConflictingMeshGatewayVirtualServiceHosts",
    Level::Error,
);
pub const PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION: MessageType =
    message_type("IST0118", "PortNameIsNotUnderNamingConvention", Level::Info);
pub const NO_MATCHING_WORKLOADS_FOUND: MessageType =
    message_type("IST0127", "NoMatchingWorkloadsFound", Level::Warning);
pub const VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY: MessageType = message_type(
    "IST0132",
    "VirtualServiceHostNotFoundInGateway",
    Level::Warning,
);
pub const DESTINATION_RULE_SUBSET_NOT_SELECT_PODS: MessageType = message_type(
    "IST0173",
    "DestinationRuleSubsetNotSelectPods",
    Level::Error,
);
pub const ROUTE_WEIGHTS_NOT_100: MessageType =
    message_type("WEFT0001", "RouteWeightsNotHundred", Level::Warning);
pub const SHADOWED_ROUTE: MessageType = message_type("WEFT0002", "ShadowedRoute", Level::Warning);
pub const REDEFINED_RESOURCE: MessageType =
    message_type("WEFT0003", "RedefinedResource", Level::Warning);
pub const VALIDATION_WARNING: MessageType =
    message_type("WEFT0004", "ValidationWarning", Level::Warning);
pub const MERGED_DESTINATION_RULES: MessageType =
    message_type("WEFT0005", "MergedDestinationRules", Level::Warning);
pub const PRINCIPAL_WITHOUT_TRUST_DOMAIN: MessageType =
    message_type("WEFT0006", "PrincipalWithoutTrustDomain", Level::Warning);
pub const MTLS_DISABLED_FOR_STRICT_DESTINATION: MessageType =
    message_type("WEFT0007", "MtlsDisabledForStrictDestination", Level::Error);
pub const INVALID_GATEWAY_CREDENTIAL: MessageType =
    message_type("IST0161", "InvalidGatewayCredential", Level::Error);

/// Every message `weft analyze` can report.
pub const MESSAGE_TYPES: [MessageType; 13] = [
    REFERENCED_RESOURCE_NOT_FOUND,
    SCHEMA_VALIDATION_ERROR,
    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
    PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
    NO_MATCHING_WORKLOADS_FOUND,
    VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
    ROUTE_WEIGHTS_NOT_100,
    SHADOWED_ROUTE,
    REDEFINED_RESOURCE,
    PRINCIPAL_WITHOUT_TRUST_DOMAIN,
    MTLS_DISABLED_FOR_STRICT_DESTINATION,
    INVALID_GATEWAY_CREDENTIAL,
];

/// `Kind namespace/name`, the resource a message is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceName {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ResourceName {
    pub fn of(resource: &Resource) -> ResourceName {
        ResourceName {
            kind: resource.kind.name().to_string(),
            namespace: resource.namespace().to_string(),
            name: resource.name().to_string(),
        }
    }

    /// Reads the `Kind namespace/name` a [`crate::Diagnostic`] carries.
    pub fn parse(display: &str) -> Option<ResourceName> {
        let (kind, rest) = display.split_once(' ')?;
        let (namespace, name) = rest.split_once('/')?;
        Some(ResourceName {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub message_type: MessageType,
    pub resource: Option<ResourceName>,
    /// The document the finding is about, when known.
    pub origin: Option<Origin>,
    /// The field it is about, as validation names fields (`spec.http[0].route[0]`), when
    /// one field is.
    pub path: Option<String>,
    pub text: String,
}

impl Message {
    pub fn level(&self) -> Level {
        self.message_type.level
    }

    pub fn code(&self) -> &'static str {
        self.message_type.code
    }

    /// The namespace of the resource the message is about; `None` for a document that never
    /// got a name.
    pub fn namespace(&self) -> Option<&str> {
        self.resource.as_ref().map(|r| r.namespace.as_str())
    }

    /// `file:line`, as istioctl appends it.
    pub fn reference(&self) -> Option<String> {
        self.origin
            .as_ref()
            .map(|o| format!("{}:{}", o.file.display(), o.line))
    }

    fn sort_key(&self) -> (Level, &str, Option<String>, &str) {
        (
            self.level(),
            self.code(),
            self.resource.as_ref().map(ToString::to_string),
            &self.text,
        )
    }
}

/// istioctl's log line: `Error [IST0101] (VirtualService default/reviews) Referenced …`.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level(), self.code())?;
        if let Some(resource) = &self.resource {
            write!(f, " ({resource})")?;
        }
        write!(f, " {}", self.text)
    }
}

/// istioctl's `-o json` / `-o yaml` entry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    documentation_url: Option<String>,
    level: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Entry {
            code: self.code(),
            documentation_url: self.message_type.documentation_url(),
            level: self.level().name(),
            message: &self.text,
            origin: self.resource.as_ref().map(ToString::to_string),
            reference: self.reference(),
        }
        .serialize(s)
    }
}

/// istioctl's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Log,
    Json,
    Yaml,
}

/// The messages as `weft analyze -o FORMAT` prints them (no trailing newline for `log`).
pub fn render(messages: &[Message], format: Format) -> String {
    match format {
        Format::Log => messages
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Json => serde_json::to_string_pretty(messages).expect("messages serialize"),
        Format::Yaml => serde_norway::to_string(messages).expect("messages serialize"),
    }
}

/// What the analyzers write to.
#[derive(Default)]
pub(crate) struct Report {
    messages: Vec<Message>,
}

impl Report {
    /// A finding about `resource`.
    pub fn add(&mut self, message_type: MessageType, resource: &Resource, text: impl Into<String>) {
        self.add_field(message_type, resource, None, text.into());
    }

    /// A finding about the field at `path` of `resource`.
    pub fn add_at(
        &mut self,
        message_type: MessageType,
        resource: &Resource,
        path: String,
        text: impl Into<String>,
    ) {
        self.add_field(message_type, resource, Some(path), text.into());
    }

    fn add_field(
        &mut self,
        message_type: MessageType,
        resource: &Resource,
        path: Option<String>,
        text: String,
    ) {
        self.push(Message {
            message_type,
            resource: Some(ResourceName::of(resource)),
            origin: Some(resource.origin.clone()),
            path,
            text,
        });
    }

    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// Sorted as istioctl sorts (level, code, resource, text), without repeats.
    fn into_sorted(mut self) -> Vec<Message> {
        self.messages
            .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.messages.dedup_by(|a, b| {
            a.message_type == b.message_type && a.resource == b.resource && a.text == b.text
        });
        self.messages
    }
}

type Analyzer = fn(&mesh::Mesh<'_>, &mut Report);

/// Every analyzer. The order does not matter: the report is sorted.
const ANALYZERS: [(&str, Analyzer); 14] = [
    (
        "authorization policies (IST0101, IST0127, WEFT0006)",
        security::authorization_policies,
    ),
    (
        "TLS off towards STRICT workloads (WEFT0007)",
        security::mtls_conflicts,
    ),
    (
        "gateway credentials (IST0161)",
        security::gateway_credentials,
    ),
    ("merged destination rules (WEFT0005)", subsets::merged),
    ("schema validation (IST0106)", diagnostics::schema_errors),
    ("port names (IST0118)", diagnostics::port_names),
    (
        "validation warnings (WEFT0004)",
        diagnostics::other_warnings,
    ),
    ("redefined resources (WEFT0003)", mesh::redefined),
    (
        "destination hosts and subsets (IST0101)",
        references::destinations,
    ),
    ("gateways (IST0101, IST0132)", references::gateways),
    ("subsets that select no pod (IST0173)", subsets::unselected),
    (
        "mesh host conflicts (IST0109)",
        virtual_services::conflicting_hosts,
    ),
    ("route weights (WEFT0001)", virtual_services::weights),
    (
        "shadowed routes (WEFT0002)",
        virtual_services::shadowed_routes,
    ),
];

/// Runs every analyzer over the input: all namespaces, sorted as istioctl sorts.
pub fn analyze(input: &Input) -> Vec<Message> {
    let mesh = mesh::Mesh::new(input);
    let mut report = Report::default();
    for (_, analyzer) in ANALYZERS {
        analyzer(&mesh, &mut report);
    }
    report.into_sorted()
}

/// Analyzes YAML fixtures in tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::path::Path;

    /// Every message for the fixture, as istioctl's log lines.
    pub fn lines(yaml: &str) -> Vec<String> {
        analyze(&Input::from_yaml(yaml, Path::new("test.yaml")))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Only the lines with `code`. The fixture must load without errors (unless the code
    /// asked for is IST0106), so that no test passes because its resources were rejected.
    pub fn lines_with(yaml: &str, code: &str) -> Vec<String> {
        let all = lines(yaml);
        if code != SCHEMA_VALIDATION_ERROR.code {
            let rejected: Vec<&String> = all.iter().filter(|l| l.contains("[IST0106]")).collect();
            assert!(
                rejected.is_empty(),
                "the fixture does not load: {rejected:#?}"
            );
        }
        all.into_iter()
            .filter(|l| l.contains(&format!("[{code}]")))
            .collect()
    }

    /// Joins documents into one multi-document YAML text.
    pub fn docs(documents: &[&str]) -> String {
        documents.join("---\n")
    }

    pub const REVIEWS_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n";
    pub const REVIEWS_RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";

    /// A Deployment whose pods carry `app: reviews, version: <version>`.
    pub fn reviews_deployment(version: &str) -> String {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: reviews-{version}\nspec:\n  selector:\n    matchLabels: {{app: reviews, version: {version}}}\n  template:\n    metadata:\n      labels: {{app: reviews, version: {version}}}\n    spec:\n      containers: [{{name: reviews, image: reviews}}]\n")
    }

    /// A VirtualService for `reviews` with the given `http:` routes (indented list items).
    pub fn reviews_vs(name: &str, http: &str) -> String {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [reviews]\n  http:\n{http}")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use std::path::Path;

    #[test]
    fn a_consistent_mesh_has_nothing_to_report() {
        let yaml = docs(&[
            REVIEWS_SERVICE,
            REVIEWS_RULE,
            &reviews_deployment("v1"),
            &reviews_deployment("v2"),
            &reviews_vs(
                "reviews",
                "  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n    - destination: {host: reviews, subset: v2}\n      weight: 10\n",
            ),
        ]);
        assert_eq!(lines(&yaml), Vec::<String>::new());
    }

    #[test]
    fn messages_print_as_istioctl_prints_them() {
        let yaml = docs(&[
            REVIEWS_SERVICE,
            &reviews_vs(
                "reviews",
                "  - route:\n    - destination: {host: reviews, subset: v4}\n",
            ),
        ]);
        assert_eq!(
            lines(&yaml),
            ["Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: \"reviews+v4\""]
        );
    }

    #[test]
    fn messages_sort_by_level_then_code_then_resource() {
        // A shadowed route (Warning), a port name (Info), two missing hosts (Error).
        let yaml = docs(&[
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{name: web, port: 80}]\n",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: b\nspec:\n  hosts: [b]\n  http:\n  - route: [{destination: {host: nowhere-b}}]\n  - route: [{destination: {host: web}}]\n",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts: [a]\n  http:\n  - route: [{destination: {host: nowhere-a}}]\n",
        ]);
        let codes: Vec<String> = lines(&yaml)
            .iter()
            .map(|l| l.split(") ").next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            codes,
            [
                "Error [IST0101] (VirtualService default/a",
                "Error [IST0101] (VirtualService default/b",
                "Warning [WEFT0002] (VirtualService default/b",
                "Info [IST0118] (Service default/web",
            ]
        );
    }

    #[test]
    fn json_and_yaml_carry_istioctls_fields() {
        let input = Input::from_yaml(
            &reviews_vs(
                "reviews",
                "  - route:\n    - destination: {host: reviews, subset: v4}\n",
            ),
            Path::new("vs.yaml"),
        );
        let messages = analyze(&input);
        let json: serde_json::Value =
            serde_json::from_str(&render(&messages, Format::Json)).expect("json");
        assert_eq!(json[0]["code"], "IST0101");
        assert_eq!(json[0]["level"], "Error");
        assert_eq!(json[0]["origin"], "VirtualService default/reviews");
        assert_eq!(json[0]["reference"], "vs.yaml:1");
        assert_eq!(
            json[0]["documentationUrl"],
            "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
        );
        assert_eq!(json[0]["message"], "Referenced host not found: \"reviews\"");
        let yaml: serde_json::Value =
            serde_norway::from_str(&render(&messages, Format::Yaml)).expect("yaml");
        assert_eq!(yaml, json);
        assert_eq!(render(&[], Format::Json), "[]");
    }

    #[test]
    fn every_code_is_listed_once() {
        let mut codes: Vec<&str> = MESSAGE_TYPES.iter().map(|t| t.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), MESSAGE_TYPES.len());
        assert_eq!(SHADOWED_ROUTE.documentation_url(), None);
    }
}
