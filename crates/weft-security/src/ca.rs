//! The mesh's certificate authority, as istiod's: a root made at first start and kept in the
//! control plane's state, or an intermediate plugged in from files (Istio's `cacerts`
//! layout). It signs workload certificates against the key in a proxy's CSR, for the identity
//! the proxy proved, whatever names the CSR asks for.

use crate::secret_file::{self, FileError};
use crate::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// Istio's workload certificate lifetime (`DEFAULT_WORKLOAD_CERT_TTL`).
pub const WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the admin identity's certificate lasts: the control plane makes a new one when
/// less than half of it is left.
pub const ADMIN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// The admin identity, `spiffe://TRUST-DOMAIN/weft/admin`: outside the `ns/NS/sa/SA` form
/// every workload identity has.
pub fn admin_uri(trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}/weft/admin")
}
/// Istio's self-signed root lives ten years.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clocks between machines drift; a certificate is valid from a minute before it was made.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{}: {what}: {source}", path.display())]
    Parse {
        path: PathBuf,
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error(
        "the certificate signing request: {0} (a PKCS#10 CSR in PEM, signed by the key it carries)"
    )]
    Csr(rcgen::Error),
    #[error("signing: {0}")]
    Sign(rcgen::Error),
    #[error("a lifetime of {0:?} is out of range")]
    Lifetime(Duration),
    #[error(
        "the request asks for {asked}, but its credential proves {proven}: a proxy gets a certificate only for the service account it was given"
    )]
    ForeignIdentity { asked: String, proven: String },
}

/// The files of a plugged-in CA, as Istio's `cacerts` secret holds them.
pub struct PluggedFiles {
    pub dir: PathBuf,
}

impl PluggedFiles {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate and the ones above it, the root last, as PEM.
    chain: Vec<String>,
    trust_domain: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("chain", &self.chain.len())
            .finish()
    }
}

fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END CERTIFICATE-----") {
            blocks.push(std::mem::take(&mut current));
        }
    }
    blocks
}

fn read_text(path: &Path) -> Result<String, CaError> {
    let bytes = secret_file::read(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn certificates(path: &Path) -> Result<Vec<String>, CaError> {
    let blocks = pem_blocks(&read_text(path)?);
    if blocks.is_empty() {
        return Err(CaError::NoCertificate(path.to_path_buf()));
    }
    Ok(blocks)
}

/// A requested subject alternative name as an error message shows it.
fn san_text(san: &SanType) -> String {
    match san {
        SanType::URI(s) | SanType::DnsName(s) | SanType::Rfc822Name(s) => s.as_str().to_string(),
        SanType::IpAddress(ip) => ip.to_string(),
        other => format!("{other:?}"),
    }
}

fn offset(d: Duration) -> Result<time::Duration, CaError> {
    time::Duration::try_from(d).map_err(|_| CaError::Lifetime(d))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A serial only needs to be unique; should the random source fail, the time serves.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    /// The root kept in `dir` (`root-cert.pem`, `root-key.pem`), made at first start: key and
    /// certificate written atomically, readable by this user only.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        let cert_file = dir.join("root-cert.pem");
        let key_file = dir.join("root-key.pem");
        if !cert_file.exists() || !key_file.exists() {
            let key = KeyPair::generate().map_err(CaError::Sign)?;
            let mut params = CertificateParams::default();
            let mut name = DistinguishedName::new();
            name.push(DnType::OrganizationName, trust_domain);
            name.push(DnType::CommonName, "Weft root CA");
            params.distinguished_name = name;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - offset(BACKDATE)?;
            params.not_after = now + offset(ROOT_TTL)?;
            params.serial_number = Some(random_serial());
            let cert = params.self_signed(&key).map_err(CaError::Sign)?;
            // The key first: a certificate without its key would be unusable.
            secret_file::write_secret(&key_file, key.serialize_pem().as_bytes())?;
            secret_file::write_secret(&cert_file, cert.pem().as_bytes())?;
            tracing::info!(root = %cert_file.display(), "made the mesh's root CA");
        }
        secret_file::restrict(&key_file)?;
        let key = KeyPair::from_pem(&read_text(&key_file)?).map_err(|source| CaError::Parse {
            path: key_file.clone(),
            what: "the root's key",
            source,
        })?;
        let chain = certificates(&cert_file)?;
        Ca::with(chain, key, &cert_file, trust_domain)
    }

    /// An intermediate given by files, as Istio's "plug in CA certificates" task makes them:
    /// `ca-cert.pem` and `ca-key.pem` sign, `cert-chain.pem` runs from `ca-cert.pem` up to
    /// `root-cert.pem`, which proxies trust.
    pub fn plugged(files: &PluggedFiles, trust_domain: &str) -> Result<Ca, CaError> {
        let key_file = files.path("ca-key.pem");
        let key = KeyPair::from_pem(&read_text(&key_file)?).map_err(|source| CaError::Parse {
            path: key_file.clone(),
            what: "the CA's key",
            source,
        })?;
        let chain_file = files.path("cert-chain.pem");
        let mut chain = if chain_file.exists() {
            certificates(&chain_file)?
        } else {
            certificates(&files.path("ca-cert.pem"))?
        };
        let root = certificates(&files.path("root-cert.pem"))?;
        if chain.last() != root.last() {
            chain.extend(root);
        }
        Ca::with(chain, key, &files.path("ca-cert.pem"), trust_domain)
    }

    fn with(
        chain: Vec<String>,
        key: KeyPair,
        cert_file: &Path,
        trust_domain: &str,
    ) -> Result<Ca, CaError> {
        let issuer = Issuer::from_ca_cert_pem(&chain[0], key).map_err(|source| CaError::Parse {
            path: cert_file.to_path_buf(),
            what: "the signing certificate",
            source,
        })?;
        Ok(Ca {
            issuer,
            chain,
            trust_domain: trust_domain.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// What proxies trust: the root, as PEM.
    pub fn root_pem(&self) -> &str {
        self.chain.last().expect("a chain has its root")
    }

    /// A certificate for `identity` on the CSR's key, valid for `ttl`: the chain from the new
    /// certificate to the root, as Istio's `CreateCertificate` answers.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::Csr)?;
        let uri =
            rcgen::string::Ia5String::try_from(identity.to_string()).map_err(CaError::Sign)?;
        let own = SanType::URI(uri);
        // Istio's CA signs the caller's identity whatever the CSR says; asking for another
        // one is refused here instead, so the attempt is seen rather than rewritten.
        if let Some(foreign) = csr.params.subject_alt_names.iter().find(|s| **s != own) {
            return Err(CaError::ForeignIdentity {
                asked: san_text(foreign),
                proven: identity.to_string(),
            });
        }
        self.issue(&csr.public_key, vec![own], ttl)
    }

    /// The admin identity's client certificate, on a key made here: the `weft` CLI's way
    /// into the control plane's admin API. Its URI ([`admin_uri`]) is no workload identity,
    /// and [`Ca::sign`] signs only workload identities, so no pod can be issued it; it
    /// serves no TLS server.
    pub fn admin_client(&self, ttl: Duration) -> Result<(Vec<String>, String), CaError> {
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let uri = rcgen::string::Ia5String::try_from(admin_uri(&self.trust_domain))
            .map_err(CaError::Sign)?;
        let chain = self.issue_for(
            &key,
            vec![SanType::URI(uri)],
            ttl,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        Ok((chain, key.serialize_pem()))
    }

    /// A serving certificate for the control plane itself, on a key made here.
    pub fn serving(
        &self,
        dns_names: &[&str],
        ttl: Duration,
    ) -> Result<(Vec<String>, String), CaError> {
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let names = dns_names
            .iter()
            .map(|n| {
                rcgen::string::Ia5String::try_from(*n)
                    .map(SanType::DnsName)
                    .map_err(CaError::Sign)
            })
            .collect::<Result<_, _>>()?;
        let chain = self.issue(&key, names, ttl)?;
        Ok((chain, key.serialize_pem()))
    }

    fn issue(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        names: Vec<SanType>,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        let usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue_for(public_key, names, ttl, usages)
    }

    fn issue_for(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        names: Vec<SanType>,
        ttl: Duration,
        extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<Vec<String>, CaError> {
        let mut params = CertificateParams::default();
        // Istio leaves the subject empty; the SAN is then critical (RFC 5280).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = names;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = extended_key_usages;
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - offset(BACKDATE)?;
        params.not_after = now + offset(ttl)?;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(CaError::Sign)?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }
}
