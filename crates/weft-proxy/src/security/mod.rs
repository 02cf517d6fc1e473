//! Who may reach this workload: Istio's request authentication (JWTs) and authorization
//! policies, compiled per config version and checked on every inbound request and
//! connection.

pub mod authz;
pub mod jwt;
