//! Upstream clusters: endpoints, load balancing, circuit breaking and outlier detection.

pub mod client;
pub mod cluster;
pub mod config;
pub mod endpoint;
pub mod lb;
pub mod stats;

pub use cluster::Cluster;
pub use config::ClusterConfig;
pub use endpoint::Endpoint;
