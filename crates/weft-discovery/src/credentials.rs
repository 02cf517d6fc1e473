//! Credentials: the admin token that lets the CLI change the mesh, and the join token that
//! lets a proxy register its workload. Each is a random token in a file only its user can
//! read. A control plane's admin token is also published under `$WEFT_HOME/credentials/`
//! (default `~/.weft`), one file per address, so that a CLI on the same machine finds it
//! without flags, as kubectl finds its kubeconfig.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where a control plane keeps its admin token: in its state, beside its config.
pub fn admin_token_file(config_dir: &Path) -> PathBuf {
    config_dir.join(".weft").join("admin.token")
}

/// Where a control plane keeps the admin identity's credential: its certificate chain
/// (ending in the mesh root) and its key, one PEM file.
pub fn admin_credential_file(config_dir: &Path) -> PathBuf {
    config_dir.join(".weft").join("admin.pem")
}

/// Where a control plane keeps the mesh's join token.
pub fn join_token_file(config_dir: &Path) -> PathBuf {
    config_dir.join(".weft").join("join.token")
}

/// The gRPC metadata key the admin token travels in (`authorization: Bearer …`).
pub const AUTHORIZATION: &str = "authorization";
const BEARER: &str = "Bearer ";
/// 32 random bytes, hex-encoded.
const TOKEN_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{} does not hold a Weft token (64 hex digits); remove it and restart weft control to make a new one", path.display())]
    Malformed { path: PathBuf },
    #[error("{} is not an admin credential (certificates and a private key, PEM); it is the control plane's .weft/admin.pem", path.display())]
    NotAdminCredential { path: PathBuf },
    #[error("the system's random source failed: {0}")]
    Random(getrandom::Error),
}

/// A secret token. Compared in constant time; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    pub fn generate() -> Result<Token, CredentialError> {
        let mut bytes = [0u8; TOKEN_LEN / 2];
        getrandom::fill(&mut bytes).map_err(CredentialError::Random)?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// A token as text (from a flag or the environment), surrounding whitespace ignored.
    pub fn parse(text: &str) -> Option<Token> {
        let t = text.trim();
        (!t.is_empty() && t.len() <= 4096 && t.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| Token(t.to_string()))
    }

    /// Reads a token file.
    pub fn read(path: &Path) -> Result<Token, CredentialError> {
        let text = fs::read_to_string(path).map_err(|source| CredentialError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        Token::parse(&text).ok_or_else(|| CredentialError::Malformed {
            path: path.to_path_buf(),
        })
    }

    /// The token kept in `path`, made (readable by its user only) if there is none yet, so
    /// that a restart keeps the credentials people and pods already hold.
    pub fn load_or_create(path: &Path) -> Result<Token, CredentialError> {
        if path.exists() {
            let token = Token::read(path)?;
            if token.0.len() != TOKEN_LEN || !token.0.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CredentialError::Malformed {
                    path: path.to_path_buf(),
                });
            }
            restrict(path)?;
            return Ok(token);
        }
        let token = Token::generate()?;
        write_secret(path, token.0.as_bytes())?;
        Ok(token)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The `authorization` header value that carries this token.
    pub fn bearer(&self) -> String {
        format!("{BEARER}{}", self.0)
    }

    /// Whether an `authorization` header value carries this token.
    pub fn authorizes(&self, header: &str) -> bool {
        bearer_of(header).is_some_and(|presented| self.matches(presented))
    }
}

/// What an `authorization: Bearer …` header value presents.
pub fn bearer_of(header: &str) -> Option<&str> {
    header.strip_prefix(BEARER)
}

/// Adds the admin token to every call of a gRPC client.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    /// `None` sends calls without a token (the control plane then says where it is).
    pub fn new(token: Option<&Token>) -> Bearer {
        Bearer(token.and_then(|t| t.bearer().parse().ok()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
        Ok(req)
    }
}

pub use weft_security::secret_file::FileError;

/// Writes a file only its user can read or write, atomically.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), CredentialError> {
    Ok(weft_security::secret_file::write_secret(path, bytes)?)
}

fn restrict(path: &Path) -> Result<(), CredentialError> {
    Ok(weft_security::secret_file::restrict(path)?)
}

/// Where the CLI keeps what it knows of control planes: `$WEFT_HOME`, else `~/.weft`.
pub fn home() -> Option<PathBuf> {
    match std::env::var_os("WEFT_HOME") {
        Some(h) if !h.is_empty() => Some(PathBuf::from(h)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".weft")),
    }
}

/// The published admin token of the control plane a CLI reaches at `addr` (`HOST:PORT`,
/// with or without `http://`); `localhost` and `127.0.0.1` are the same place.
pub fn published_path(addr: &str) -> Option<PathBuf> {
    let addr = addr
        .split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .trim_end_matches('/');
    let addr = match addr.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.to_string(),
    };
    let file: String = addr
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(home()?.join("credentials").join(file))
}

/// The admin token published for the control plane at `addr`, if any.
pub fn published_token(addr: &str) -> Option<Token> {
    Token::read(&published_path(addr)?).ok()
}

/// The admin identity's credential: a PEM file of its certificate chain, which ends in the
/// mesh root the control plane's own certificate chains to, and its key.
#[derive(Clone)]
pub struct AdminCredential(String);

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminCredential(…)")
    }
}

const CERT_END: &str = "-----END CERTIFICATE-----";
const CERT_BEGIN: &str = "-----BEGIN CERTIFICATE-----";

impl AdminCredential {
    pub fn new(chain: &[String], key_pem: &str) -> AdminCredential {
        let mut pem = chain.concat();
        pem.push_str(key_pem);
        AdminCredential(pem)
    }

    pub fn read(path: &Path) -> Result<AdminCredential, CredentialError> {
        let text = fs::read_to_string(path).map_err(|source| CredentialError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let credential = AdminCredential(text);
        match (
            credential.root_pem(),
            credential.0.contains("PRIVATE KEY-----"),
        ) {
            (Some(_), true) => Ok(credential),
            _ => Err(CredentialError::NotAdminCredential {
                path: path.to_path_buf(),
            }),
        }
    }

    /// The certificate chain and key, PEM.
    pub fn pem(&self) -> &str {
        &self.0
    }

    /// The chain's last certificate: the root to trust the control plane by.
    pub fn root_pem(&self) -> Option<&str> {
        let end = self.0.rfind(CERT_END)? + CERT_END.len();
        let begin = self.0[..end].rfind(CERT_BEGIN)?;
        Some(&self.0[begin..end])
    }

    pub fn write(&self, path: &Path) -> Result<(), CredentialError> {
        write_secret(path, self.0.as_bytes())
    }
}

/// Where the admin credential of the control plane a CLI reaches at `addr` over TLS is
/// published.
pub fn published_admin_path(addr: &str) -> Option<PathBuf> {
    let token = published_path(addr)?;
    let mut name = token.file_name()?.to_os_string();
    name.push(".pem");
    Some(token.with_file_name(name))
}

/// Publishes the admin credential for CLIs of this user reaching the control plane's TLS
/// port at `addr`.
pub fn publish_admin(
    addr: SocketAddr,
    credential: &AdminCredential,
) -> Result<PathBuf, CredentialError> {
    let path = published_admin_path(&addr.to_string()).ok_or_else(no_home)?;
    credential.write(&path)?;
    Ok(path)
}

/// Withdraws a published admin credential, unless another control plane has replaced it.
pub fn unpublish_admin(addr: SocketAddr, credential: &AdminCredential) {
    if let Some(path) = published_admin_path(&addr.to_string()) {
        if AdminCredential::read(&path).is_ok_and(|c| c.0 == credential.0) {
            let _ = fs::remove_file(path);
        }
    }
}

fn no_home() -> CredentialError {
    CredentialError::Io {
        action: "find a home directory for",
        path: PathBuf::from("$WEFT_HOME"),
        source: std::io::Error::other("neither WEFT_HOME nor HOME is set"),
    }
}

/// The address a CLI on this machine uses for a control plane bound to `bound`: the
/// loopback address when it listens on every address.
pub fn local_address(bound: SocketAddr) -> SocketAddr {
    match bound {
        SocketAddr::V4(a) if a.ip().is_unspecified() => ([127, 0, 0, 1], a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, a.port()).into()
        }
        a => a,
    }
}

/// Publishes the admin token of the control plane reached at `addr` for CLIs of this user.
pub fn publish(addr: SocketAddr, token: &Token) -> Result<PathBuf, CredentialError> {
    let path = published_path(&addr.to_string()).ok_or_else(no_home)?;
    write_secret(&path, token.as_str().as_bytes())?;
    Ok(path)
}

/// Withdraws a published token, unless a newer control plane at the same address has
/// replaced it since.
pub fn unpublish(addr: SocketAddr, token: &Token) {
    if let Some(path) = published_path(&addr.to_string()) {
        if Token::read(&path).is_ok_and(|t| t == *token) {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_is_kept_private_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state").join("admin.token");
        let first = Token::load_or_create(&file).unwrap();
        assert_eq!(first.as_str().len(), TOKEN_LEN);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let dir_mode = fs::metadata(file.parent().unwrap()).unwrap().permissions();
        assert_eq!(dir_mode.mode() & 0o777, 0o700);
        // Loosened by someone: tightened again, same token.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Token::load_or_create(&file).unwrap(), first);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_ne!(Token::generate().unwrap(), first);
        fs::write(&file, "not a token\n").unwrap();
        let err = Token::load_or_create(&file).unwrap_err().to_string();
        assert!(err.contains("does not hold a Weft token"), "{err}");
    }

    #[test]
    fn only_the_same_token_authorizes() {
        let t = Token::generate().unwrap();
        assert!(t.authorizes(&t.bearer()));
        assert!(!t.authorizes(t.as_str()));
        assert!(!t.authorizes(&format!("Bearer {}x", t.as_str())));
        assert!(!t.authorizes(&Token::generate().unwrap().bearer()));
        assert!(!t.authorizes("Bearer "));
    }

    #[test]
    fn addresses_name_one_file_each_and_localhost_is_loopback() {
        let a = published_path("http://127.0.0.1:15010").unwrap();
        assert_eq!(published_path("localhost:15010").unwrap(), a);
        assert_eq!(a.file_name().unwrap(), "127.0.0.1_15010");
        let v6 = published_path("http://[::1]:15010/").unwrap();
        assert_eq!(v6.file_name().unwrap(), "___1__15010");
        assert_eq!(
            local_address("0.0.0.0:15010".parse().unwrap()),
            "127.0.0.1:15010".parse::<SocketAddr>().unwrap()
        );
    }
}
