//! The local platform's stand-in for the internet's CAs. A Workload outside the mesh with
//! `publicCertificate: true` serves its `hostnames` with a certificate from this CA, and every
//! pod trusts it beside the system's bundle (`SSL_CERT_FILE`, and the bundle's own path in
//! the pod's mount namespace), as every machine trusts the public CAs: so Istio's egress tasks (TLS origination with `SIMPLE`, which verifies against
//! the system's bundle) work unchanged against hosts such as `edition.cnn.com` without the
//! internet.

use crate::state::StateDir;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_security::ca::{Ca, CaError};
use weft_security::secret_file::{self, FileError};

/// What the root's subject names it as.
const NAME: &str = "weft-public";
/// A public server certificate's lifetime: it is issued again at every start.
const SERVING_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Debian's system bundle, which each pod sees replaced by the bundle with the public CA.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Where distributions keep the system's bundle (openssl-probe's list, Debian's first).
const SYSTEM_BUNDLES: [&str; 4] = [
    SYSTEM_BUNDLE,
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum PublicCaError {
    #[error("the platform's public CA: {0}")]
    Ca(#[from] CaError),
    #[error("the platform's public CA: {0}")]
    File(#[from] FileError),
    #[error("the platform's public CA: writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct PublicCa {
    ca: Ca,
    dir: PathBuf,
}

/// The bundle every pod's processes (and `weft exec`) get as `SSL_CERT_FILE`.
pub fn bundle_file(state: &StateDir) -> PathBuf {
    dir(state).join("bundle.pem")
}

fn dir(state: &StateDir) -> PathBuf {
    state.root.join("public-ca")
}

impl PublicCa {
    /// The CA kept in the state directory (made at first start), and the bundle of the
    /// system's roots (or those `SSL_CERT_FILE` already names) with its root.
    pub fn prepare(state: &StateDir) -> Result<PublicCa, PublicCaError> {
        let dir = dir(state);
        let ca = Ca::load_or_create(&dir, NAME)?;
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let mut bundle = system;
        if !bundle.is_empty() && !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(ca.root_pem());
        let path = bundle_file(state);
        crate::state::write_atomic(&path, bundle.as_bytes())
            .map_err(|source| PublicCaError::Io { path, source })?;
        Ok(PublicCa { ca, dir })
    }

    /// A certificate for a pod's hostnames: its chain and key files (the key owner-only).
    pub fn issue(
        &self,
        namespace: &str,
        pod: &str,
        hostnames: &[String],
    ) -> Result<(PathBuf, PathBuf), PublicCaError> {
        let names: Vec<&str> = hostnames.iter().map(String::as_str).collect();
        let (chain, key) = self.ca.serving(&names, SERVING_TTL)?;
        let (cert_file, key_file) = (
            self.file(namespace, pod, "crt"),
            self.file(namespace, pod, "key"),
        );
        secret_file::write_secret(&key_file, key.as_bytes())?;
        crate::state::write_atomic(&cert_file, chain.concat().as_bytes()).map_err(|source| {
            PublicCaError::Io {
                path: cert_file.clone(),
                source,
            }
        })?;
        Ok((cert_file, key_file))
    }

    fn file(&self, namespace: &str, pod: &str, ext: &str) -> PathBuf {
        Path::new(&self.dir).join(format!("{namespace}.{pod}.{ext}"))
    }
}
