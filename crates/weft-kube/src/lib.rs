//! Weft on Kubernetes. So far the sidecar injector: one [`inject::inject`] for the mutating
//! webhook ([`webhook`], istiod's 15017 `/inject`) and for `weft kube-inject`, which gives a
//! pod template Istio's injected shape with Weft's programs (`weft iptables` as istio-init,
//! `weft proxy` as istio-proxy).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod inject;
pub mod install;
pub mod manifest;
#[cfg(test)]
mod mock;
pub mod port_forward;
mod schema;
pub mod webhook;
