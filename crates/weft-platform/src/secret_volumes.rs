//! Secret volumes: a Workload's `secretVolumes` are Secrets of its namespace whose keys the
//! platform writes as files, `$(SECRETS_DIR)/NAME/KEY`, once the Secret exists and again
//! whenever it changes, as the kubelet keeps an optional secret volume current. Files are
//! written atomically and readable by the pods' user only.

use crate::pod::PodSpec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weft_api::{Kind, Spec};
use weft_control::ControlPlane;
use weft_discovery::wire::Key;

/// Where a pod's secret volumes live: one directory a Secret, under the pods' state.
pub fn secrets_dir(pods: &Path, namespace: &str, pod: &str) -> PathBuf {
    pods.join(format!("{namespace}.{pod}.secrets"))
}

/// What has been written: the resourceVersion of each (pod, Secret) last put on disk.
#[derive(Default)]
pub struct SecretVolumes {
    written: BTreeMap<(PathBuf, String), String>,
}

impl SecretVolumes {
    /// Writes every pod's Secrets that appeared or changed since the last call.
    pub fn follow<'a>(&mut self, control: &ControlPlane, pods: impl Iterator<Item = &'a PodSpec>) {
        for pod in pods {
            for name in &pod.secret_volumes {
                let key = Key {
                    kind: Kind::Secret,
                    namespace: pod.namespace.clone(),
                    name: name.clone(),
                };
                let at = (pod.secrets_dir.clone(), name.clone());
                // The lock is held only to copy the Secret out.
                let found = {
                    let mesh = control.state.mesh();
                    mesh.objects()
                        .get(&key)
                        .and_then(|o| match &o.resource.spec {
                            Spec::Secret(s)
                                if self.written.get(&at).map(String::as_str)
                                    != Some(o.resource_version()) =>
                            {
                                Some((o.resource_version().to_string(), s.data.clone()))
                            }
                            _ => None,
                        })
                };
                let Some((version, data)) = found else {
                    continue;
                };
                match write_volume(&pod.secrets_dir.join(name), &data) {
                    Ok(()) => {
                        tracing::info!(pod = %pod.name, namespace = %pod.namespace, secret = %name, "wrote the Secret's keys into the pod's secret volume");
                        self.written.insert(at, version);
                    }
                    Err(e) => {
                        tracing::warn!(pod = %pod.name, namespace = %pod.namespace, secret = %name, "cannot write the pod's secret volume: {e}");
                    }
                }
            }
        }
    }
}

/// Whether a data key can be a file name, as Kubernetes validates a Secret's keys.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn write_volume(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<(), weft_security::secret_file::FileError> {
    for (key, bytes) in data {
        if !valid_key(key) {
            tracing::warn!(dir = %dir.display(), "a Secret key {key:?} is no file name: left out");
            continue;
        }
        weft_security::secret_file::write_secret(&dir.join(key), bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_file_names_only() {
        for ok in ["tls.crt", "example.com.crt", "ca_bundle-1"] {
            assert!(valid_key(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../etc/passwd", "a/b", "a b"] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn a_volume_holds_each_valid_key_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("v");
        let data = BTreeMap::from([
            ("tls.crt".to_string(), b"chain".to_vec()),
            ("../escape".to_string(), b"no".to_vec()),
        ]);
        write_volume(&volume, &data).unwrap();
        assert_eq!(std::fs::read(volume.join("tls.crt")).unwrap(), b"chain");
        assert!(!dir.path().join("escape").exists());
        assert_eq!(std::fs::read_dir(&volume).unwrap().count(), 1);
    }
}
