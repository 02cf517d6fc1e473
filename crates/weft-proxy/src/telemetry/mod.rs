//! What the proxy reports about the traffic it carries: access logs, Istio's metrics, and
//! the peer metadata sidecars exchange so that both ends of a call are named.

pub mod access_log;
pub mod metrics;
pub mod peer;
