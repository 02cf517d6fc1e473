//! Benchmarking Weft: a load generator (`weft bench load`), the upstream it drives
//! (`weft bench server`), the side-by-side comparison with Envoy and a direct connection
//! (`weft bench compare`, run by `bench/run.sh`), and simulated proxies against
//! the control plane (`weft bench control-plane`, run by `bench/control-plane.sh`), and the
//! dashboard's aggregator scraping them (`weft bench dashboard`, run there too).
#![forbid(unsafe_code)]

pub mod compare;
pub mod control_plane;
pub mod dashboard;
pub mod load;
pub mod procfs;
pub mod report;
pub mod server;
pub mod topology;
