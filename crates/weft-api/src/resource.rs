//! A loaded resource: its kind, metadata, typed spec and where it came from.

use crate::types::*;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    Gateway,
    Sidecar,
    Service,
    Telemetry,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    /// The `istio` ConfigMap of the root namespace: its `mesh` key is the MeshConfig.
    ConfigMap,
    /// A Gateway server's `credentialName`.
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Gateway,
        Kind::Sidecar,
        Kind::Service,
        Kind::Telemetry,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::ConfigMap,
        Kind::Secret,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Gateway => "Gateway",
            Kind::Sidecar => "Sidecar",
            Kind::Service => "Service",
            Kind::Telemetry => "Telemetry",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }

    /// The API group versions this kind is accepted under.
    pub fn accepts_api_version(self, api_version: &str) -> bool {
        match self {
            Kind::Service | Kind::ConfigMap | Kind::Secret => api_version == "v1",
            Kind::Telemetry => matches!(
                api_version,
                "telemetry.istio.io/v1" | "telemetry.istio.io/v1alpha1"
            ),
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                matches!(
                    api_version,
                    "security.istio.io/v1" | "security.istio.io/v1beta1"
                )
            }
            _ => matches!(
                api_version,
                "networking.istio.io/v1"
                    | "networking.istio.io/v1beta1"
                    | "networking.istio.io/v1alpha3"
            ),
        }
    }

    pub fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// DestinationRule is the largest spec; resources are loaded once per config version, so
// boxing it would buy nothing on any hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    ServiceEntry(ServiceEntry),
    WorkloadEntry(WorkloadEntry),
    Gateway(Gateway),
    Sidecar(Sidecar),
    Service(Service),
    Telemetry(Telemetry),
    PeerAuthentication(PeerAuthentication),
    AuthorizationPolicy(AuthorizationPolicy),
    RequestAuthentication(RequestAuthentication),
    MeshConfig(MeshConfig),
    #[serde(skip)]
    Secret(Secret),
}

/// Where a document came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: Arc<PathBuf>,
    /// 1-based position of the document in its file.
    pub document: usize,
    /// 1-based line the document starts on.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} (line {})",
            self.file.display(),
            self.document,
            self.line
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub api_version: String,
    pub kind: Kind,
    pub metadata: ObjectMeta,
    pub spec: Spec,
    pub origin: Origin,
}

/// As kubectl prints it: `spec`, or for the mesh ConfigMap `data.mesh` as a YAML string, or
/// for a Secret its `type` and base64 `data`.
impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let mut out = serializer.serialize_struct("Resource", 4)?;
        out.serialize_field("apiVersion", &self.api_version)?;
        out.serialize_field("kind", &self.kind)?;
        out.serialize_field("metadata", &self.metadata)?;
        match &self.spec {
            Spec::MeshConfig(mesh) => {
                let text = serde_norway::to_string(mesh).map_err(S::Error::custom)?;
                out.serialize_field(
                    "data",
                    &[("mesh", text)]
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )?;
            }
            Spec::Secret(secret) => {
                use base64::Engine;
                out.serialize_field("type", &secret.type_)?;
                let data: std::collections::BTreeMap<&str, String> = secret
                    .data
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str(),
                            base64::engine::general_purpose::STANDARD.encode(v),
                        )
                    })
                    .collect();
                out.serialize_field("data", &data)?;
            }
            spec => out.serialize_field("spec", spec)?,
        }
        out.end()
    }
}

/// A resource as a proxy's `config_dump` or the dashboard shows it: a Secret's values are
/// `[redacted]`, as Envoy's config dump shows secrets; everything else as kubectl prints it.
pub struct Redacted<'a>(pub &'a Resource);

impl Serialize for Redacted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let Spec::Secret(secret) = &self.0.spec else {
            return self.0.serialize(serializer);
        };
        let mut out = serializer.serialize_struct("Resource", 5)?;
        out.serialize_field("apiVersion", &self.0.api_version)?;
        out.serialize_field("kind", &self.0.kind)?;
        out.serialize_field("metadata", &self.0.metadata)?;
        out.serialize_field("type", &secret.type_)?;
        let data: std::collections::BTreeMap<&str, &str> = secret
            .data
            .keys()
            .map(|k| (k.as_str(), "[redacted]"))
            .collect();
        out.serialize_field("data", &data)?;
        out.end()
    }
}

impl Resource {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    /// `Kind namespace/name`, as Istio's messages name a resource.
    pub fn display_name(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace(), self.name())
    }
}
