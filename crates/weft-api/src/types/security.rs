//! `security.istio.io` resources, field for field as Istio's reference names them.

use super::telemetry::LabelSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// PeerAuthentication: whether a workload's sidecar requires, allows or refuses mTLS from
/// its callers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// By the workload's port number, written as a string key as in Istio's YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, PeerMtls>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerMtls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// PeerAuthentication's `mtls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Plaintext only: a sidecar's mTLS is not terminated.
    Disable,
    /// mTLS and plaintext on the same port: Istio's default.
    Permissive,
    /// mTLS only: a plaintext connection is closed.
    Strict,
}

impl MtlsMode {
    pub const NAMES: [&'static str; 4] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];

    /// `None` for UNSET or no mode, which inherit from the level above.
    pub fn parse(mode: Option<&str>) -> Option<MtlsMode> {
        match mode? {
            "DISABLE" => Some(MtlsMode::Disable),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "STRICT" => Some(MtlsMode::Strict),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

impl PeerMtls {
    pub fn mode(&self) -> Option<MtlsMode> {
        MtlsMode::parse(self.mode.as_deref())
    }
}

impl PeerAuthentication {
    /// Istio treats a selector without labels as none: the policy is namespace-wide.
    pub fn selector_labels(&self) -> Option<&BTreeMap<String, String>> {
        self.selector
            .as_ref()
            .map(|s| &s.match_labels)
            .filter(|l| !l.is_empty())
    }
}
