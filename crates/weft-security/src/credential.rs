//! Pod credentials: what a pod presents to prove which workload it is, as a Kubernetes pod
//! presents its service-account token. The control plane signs `{namespace, service account,
//! pod}` with a key only it holds (HMAC-SHA256), so it verifies a credential without keeping
//! a list, and a pod can never claim a service account it was not given.

use crate::secret_file::{self, FileError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use std::path::Path;

const PREFIX: &str = "weft1.";
const KEY_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodClaims {
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "sa")]
    pub service_account: String,
    pub pod: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{} does not hold a Weft signing key ({KEY_LEN} bytes); remove it and restart weft control to make a new one (every pod credential then needs reissuing)", .0.display())]
    MalformedKey(std::path::PathBuf),
    #[error("the system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("not a Weft pod credential (weft1.…): was it issued by this control plane?")]
    Malformed,
    #[error("the pod credential's signature does not verify: it was issued by another control plane, or altered")]
    Forged,
    #[error("the pod credential names {0}")]
    Identity(#[from] crate::IdentityError),
}

/// The control plane's signing key for pod credentials.
pub struct Issuer {
    key: hmac::Key,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issuer(…)")
    }
}

impl Issuer {
    /// The key kept in `path`, made (readable by its user only) if there is none yet, so that
    /// a restart keeps the credentials pods already hold.
    pub fn load_or_create(path: &Path) -> Result<Issuer, CredentialError> {
        let bytes = if path.exists() {
            secret_file::restrict(path)?;
            let bytes = secret_file::read(path)?;
            if bytes.len() != KEY_LEN {
                return Err(CredentialError::MalformedKey(path.to_path_buf()));
            }
            bytes
        } else {
            let mut bytes = vec![0u8; KEY_LEN];
            getrandom::fill(&mut bytes).map_err(CredentialError::Random)?;
            secret_file::write_secret(path, &bytes)?;
            bytes
        };
        Ok(Issuer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// A credential for `claims`, whose names must be valid Kubernetes names.
    pub fn issue(&self, claims: &PodClaims) -> Result<String, CredentialError> {
        crate::Identity::new(
            crate::DEFAULT_TRUST_DOMAIN,
            &claims.namespace,
            &claims.service_account,
        )?;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("plain struct"));
        let tag = hmac::sign(&self.key, payload.as_bytes());
        Ok(format!(
            "{PREFIX}{payload}.{}",
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }

    /// The claims of a credential this issuer made; the signature is checked in constant time
    /// before anything in it is read.
    pub fn verify(&self, credential: &str) -> Result<PodClaims, CredentialError> {
        let rest = credential
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(CredentialError::Malformed)?;
        let (payload, tag) = rest.split_once('.').ok_or(CredentialError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CredentialError::Malformed)?;
        hmac::verify(&self.key, payload.as_bytes(), &tag).map_err(|_| CredentialError::Forged)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CredentialError::Malformed)?;
        let claims: PodClaims =
            serde_json::from_slice(&json).map_err(|_| CredentialError::Malformed)?;
        crate::Identity::new(
            crate::DEFAULT_TRUST_DOMAIN,
            &claims.namespace,
            &claims.service_account,
        )?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> PodClaims {
        PodClaims {
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            pod: "reviews-v1-0".into(),
        }
    }

    #[test]
    fn a_credential_verifies_only_with_its_issuers_key_and_unaltered() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load_or_create(&dir.path().join("pod-credential.key")).unwrap();
        let credential = issuer.issue(&claims()).unwrap();
        assert_eq!(issuer.verify(&credential).unwrap(), claims());
        // The same key after a restart.
        let again = Issuer::load_or_create(&dir.path().join("pod-credential.key")).unwrap();
        assert_eq!(again.verify(&credential).unwrap(), claims());

        let other = Issuer::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(matches!(
            other.verify(&credential),
            Err(CredentialError::Forged)
        ));
        // Another service account in the payload, the old signature.
        let (_, tag) = credential.rsplit_once('.').unwrap();
        let forged_claims = PodClaims {
            service_account: "admin".into(),
            ..claims()
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        let forged = format!("{PREFIX}{payload}.{tag}");
        assert!(matches!(
            issuer.verify(&forged),
            Err(CredentialError::Forged)
        ));
        for junk in ["", "weft1.", "weft1.a.b", "Bearer x", "weft1.\u{0}.\u{0}"] {
            assert!(issuer.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn names_that_are_not_kubernetes_names_get_no_credential() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::load_or_create(&dir.path().join("k")).unwrap();
        let bad = PodClaims {
            service_account: "../etc".into(),
            ..claims()
        };
        assert!(matches!(
            issuer.issue(&bad),
            Err(CredentialError::Identity(_))
        ));
    }
}
