//! Benchmarking Weft: a load generator (`weft bench load`), the upstream it drives
//! (`weft bench server`), and the side-by-side comparison with Envoy and a direct
//! connection (`weft bench compare`, run by `bench/run.sh`).
#![forbid(unsafe_code)]

pub mod compare;
pub mod load;
pub mod procfs;
pub mod report;
pub mod server;
pub mod topology;
