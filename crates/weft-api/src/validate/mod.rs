//! Istio's validation rules, per kind. Each issue names the field path below the resource.

use crate::resource::Resource;
use serde::Serialize;

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

/// Checks one resource with Istio's rules.
pub fn validate(_resource: &Resource) -> Vec<FieldIssue> {
    Vec::new()
}
