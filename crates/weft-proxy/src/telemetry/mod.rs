//! What the proxy reports about the traffic it carries: access logs, Istio's metrics, the
//! peer metadata sidecars exchange so that both ends of a call are named, and traces; and
//! the policy (MeshConfig, Telemetry) that decides which of them a workload reports.

pub mod access_log;
pub mod attributes;
pub mod metrics;
pub mod peer;
pub mod policy;
pub mod process;
pub mod trace;
