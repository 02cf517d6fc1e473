//! Who may reach this workload: Istio's authorization policies, compiled per config
//! version and checked on every inbound request and connection.

pub mod authz;
