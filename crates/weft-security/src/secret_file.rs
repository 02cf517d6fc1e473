//! Files that hold secrets (keys, tokens): written atomically, readable by their user only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn failed<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file only its user can read or write, atomically (temporary file, fsync,
/// rename), creating its directory (mode 0700) if needed.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed("create", dir))?;
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(failed("create", &temp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(failed("write", &temp))?;
    drop(f);
    fs::rename(&temp, path).map_err(failed("rename", &temp))
}

/// Makes an existing secret readable by its user only, as it was written.
pub fn restrict(path: &Path) -> Result<(), FileError> {
    let mode = fs::metadata(path)
        .map_err(failed("inspect", path))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(failed("restrict the permissions of", path))
}

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(failed("read", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_written_for_their_user_only_and_loose_ones_restricted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("key.pem");
        write_secret(&path, b"secret").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        restrict(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}
