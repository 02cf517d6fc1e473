//! The local platform behind `weft up`: what Kubernetes and istio-init do for a pod, on one
//! Linux machine. A mesh file declares Kubernetes `Service`s, Istio config and Weft
//! `Workload`s; the platform plans pods and service addresses from it.
#![forbid(unsafe_code)]

pub mod mesh;
pub mod plan;
