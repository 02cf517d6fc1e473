//! Demo workloads for Weft's examples and tests: Istio's Bookinfo application.
#![forbid(unsafe_code)]

pub mod bookinfo;
