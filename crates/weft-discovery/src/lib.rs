//! How config reaches Weft proxies: the gRPC contracts in `proto/` (read them for the
//! stream's rules), the resource encoding and versions both ends share, and the watched
//! config directory that both `weft control` and a stand-alone `weft proxy` read.
#![forbid(unsafe_code)]

pub mod credentials;
pub mod listen;
pub mod watch;
pub mod wire;

/// Generated code, in modules that mirror the proto packages (cross-package references
/// are relative paths).
mod generated {
    pub mod weft {
        pub mod discovery {
            pub mod v1 {
                #![allow(clippy::all)]
                tonic::include_proto!("weft.discovery.v1");
            }
        }
        pub mod control {
            pub mod v1 {
                #![allow(clippy::all)]
                tonic::include_proto!("weft.control.v1");
            }
        }
    }
    pub mod istio {
        pub mod v1 {
            pub mod auth {
                #![allow(clippy::all)]
                tonic::include_proto!("istio.v1.auth");
            }
        }
    }
}

/// `proto/istio/v1/auth/ca.proto`: istiod's certificate service.
pub use generated::istio::v1::auth as ca;

/// `proto/weft/control/v1/admin.proto`.
pub use generated::weft::control::v1 as admin;

impl admin::ProxyStatus {
    /// istioctl's sync states, shared by `weft proxy-status` and the dashboard.
    pub fn sync_state(&self) -> &'static str {
        if self.sent_version.is_empty() {
            "NOT SENT"
        } else if self.acked_version == self.sent_version {
            "SYNCED"
        } else {
            "STALE"
        }
    }
}
/// `proto/weft/discovery/v1/discovery.proto`.
pub use generated::weft::discovery::v1 as discovery;

/// The control plane's TLS port (certificates, discovery and admin), as istiod's.
pub const SECURE_CONTROL_PORT: u16 = 15012;
/// The name the control plane's serving certificate carries and proxies check, wherever they
/// reach it, as istiod's `istiod.istio-system.svc`.
pub const CONTROL_PLANE_SAN: &str = "istiod.istio-system.svc";
/// The control plane's metrics port, as istiod's.
pub const MONITORING_PORT: u16 = 15014;
