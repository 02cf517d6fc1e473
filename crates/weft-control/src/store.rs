//! Where the control plane's config comes from and is kept: the [`ConfigSource`] trait,
//! and [`ConfigDir`], the config directory as a persistent store. Applied objects are
//! written one file each (`<namespace>.<kind>.<name>.yaml`) atomically: written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced once per
//! apply, so a crash at any point leaves every file either old or new. Files people put there are read too;
//! an object applied or deleted through the API that lives in such a file is cut out of it
//! the same way.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use weft_api::{split_documents, Resource};
use weft_discovery::wire::Key;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} has errors; its objects stay as they were until it is fixed:\n{errors}", file.display())]
    Invalid { file: PathBuf, errors: String },
    #[error("{key} cannot be stored: its namespace and name must be DNS-1123 names, which keep its file inside the config directory")]
    UnsafeName { key: Key },
    /// The source is another system's (a Kubernetes cluster): change it there.
    #[error("{key} cannot be stored here: {hint}")]
    ReadOnly { key: Key, hint: &'static str },
}

/// A place config is read from, watched in, and written to. It is divided into partitions
/// (the files of a directory; a Kubernetes source would use one per kind), each read
/// whole: an object missing from a partition that was read is deleted, and a partition that
/// does not read changes nothing. Objects carry their partition as `origin.file`.
pub trait ConfigSource: Send + Sync + 'static {
    /// Every partition, in the order they are read (a later definition wins).
    fn partitions(&self) -> Result<Vec<PathBuf>, StoreError>;
    /// Whether a changed path reported by the watch is a partition of this source.
    fn owns(&self, partition: &Path) -> bool;
    /// What one partition holds now, as text; `None` once it no longer exists.
    fn content(&self, partition: &Path) -> Result<Option<String>, StoreError>;
    /// The objects a partition's `content` defines; content with any error defines none.
    /// Apart from the two, so that content read before is not parsed again.
    fn parse(&self, partition: &Path, content: &str) -> Result<Vec<Resource>, StoreError>;
    /// The partition an applied object is stored in.
    fn partition_for(&self, key: &Key) -> PathBuf;
    /// Stores an object durably; `previous` is its current definition, if any.
    fn put(
        &self,
        key: &Key,
        resource: &Resource,
        previous: Option<&Resource>,
    ) -> Result<(), StoreError>;
    /// Removes an object durably.
    fn delete(&self, key: &Key, current: &Resource) -> Result<(), StoreError>;
    /// Makes the puts and deletes so far durable; called once per apply, before it is
    /// acknowledged.
    fn sync(&self) -> Result<(), StoreError>;
    /// Whether a partition that never loaded keeps the control plane from being ready. A
    /// config directory's file is the operator's own; a cluster's object is any user's,
    /// and one bad VirtualService must not keep istiod (and so the injection webhook) down.
    fn missing_blocks_readiness(&self) -> bool {
        true
    }
    /// Reports changed partitions (`None`: re-read everything) until the task is dropped.
    fn watch(
        &self,
        changed: tokio::sync::mpsc::UnboundedSender<Option<BTreeSet<PathBuf>>>,
    ) -> tokio::task::JoinHandle<()>;
}

/// A file's objects, or all its errors when it has any; warnings are logged.
pub fn checked(loaded: weft_api::Loaded, file: &Path) -> Result<Vec<Resource>, StoreError> {
    if loaded.has_errors() {
        return Err(StoreError::Invalid {
            file: file.to_path_buf(),
            errors: loaded
                .errors()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    for w in loaded.warnings() {
        tracing::warn!("{w}");
    }
    Ok(loaded.resources)
}

pub struct ConfigDir {
    dir: PathBuf,
}

const TEMP_SUFFIX: &str = ".tmp";

impl ConfigDir {
    /// Creates the directory if needed and clears temporary files a crash left behind.
    pub fn open(dir: &Path) -> Result<ConfigDir, StoreError> {
        let io = |action, source| StoreError::Io {
            action,
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        // The watcher reports absolute paths; a relative directory would own none of them.
        let dir = &fs::canonicalize(dir).map_err(|e| io("resolve", e))?;
        for entry in fs::read_dir(dir).map_err(|e| io("read", e))?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(ConfigDir {
            dir: dir.to_path_buf(),
        })
    }
}

impl ConfigSource for ConfigDir {
    /// The config files in the directory, in the order they are read.
    fn partitions(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(|source| StoreError::Io {
                action: "read",
                path: self.dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| weft_api::load::is_config_file(p))
            .collect();
        files.sort();
        Ok(files)
    }

    fn owns(&self, file: &Path) -> bool {
        file.parent() == Some(self.dir.as_path())
            && (weft_api::load::is_config_file(file) || !file.exists())
    }

    fn content(&self, file: &Path) -> Result<Option<String>, StoreError> {
        match fs::read_to_string(file) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                action: "read",
                path: file.to_path_buf(),
                source,
            }),
        }
    }

    /// The objects one file defines; a file with any error defines none.
    fn parse(&self, file: &Path, text: &str) -> Result<Vec<Resource>, StoreError> {
        checked(weft_api::load_str(text, file), file)
    }

    /// Where the API keeps an object.
    fn partition_for(&self, key: &Key) -> PathBuf {
        self.dir.join(format!(
            "{}.{}.{}.yaml",
            key.namespace,
            key.kind.name().to_ascii_lowercase(),
            key.name
        ))
    }

    /// Stores an object in its own file, cutting it out of another file of the directory
    /// that defined it before.
    fn put(
        &self,
        key: &Key,
        resource: &Resource,
        previous: Option<&Resource>,
    ) -> Result<(), StoreError> {
        let mut stored = resource.clone();
        // Derived from the content on every read, never stored.
        stored.metadata.resource_version = None;
        let yaml = serde_norway::to_string(&stored).expect("resources serialize to YAML");
        let file = self.own_file(key)?;
        replace_file(&file, yaml.as_bytes())?;
        if let Some(previous) = previous {
            self.cut_out(previous, &file)?;
        }
        Ok(())
    }

    /// Removes an object: its own file, or its document in a file that holds others.
    fn delete(&self, key: &Key, current: &Resource) -> Result<(), StoreError> {
        let file = self.own_file(key)?;
        if file.exists() {
            fs::remove_file(&file).map_err(|source| StoreError::Io {
                action: "remove",
                path: file.clone(),
                source,
            })?;
        }
        self.cut_out(current, &file)
    }

    fn sync(&self) -> Result<(), StoreError> {
        sync_dir(&self.dir)
    }

    fn watch(
        &self,
        changed: tokio::sync::mpsc::UnboundedSender<Option<BTreeSet<PathBuf>>>,
    ) -> tokio::task::JoinHandle<()> {
        let dir = self.dir.clone();
        tokio::spawn(async move {
            let watching = weft_discovery::watch::watch_dir(&dir, |files| {
                let _ = changed.send(files);
                std::future::ready(())
            })
            .await;
            if let Err(e) = watching {
                tracing::error!(
                    "cannot watch {}: {e}; changes made there are not seen",
                    dir.display()
                );
            }
        })
    }
}

impl ConfigDir {
    /// The file an object is kept in, refused unless it lies directly in the directory.
    /// Validation already allows only DNS-1123 names; this holds even if it did not.
    fn own_file(&self, key: &Key) -> Result<PathBuf, StoreError> {
        let safe = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && !s.contains("..")
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        let file = self.partition_for(key);
        if safe(&key.namespace) && safe(&key.name) && file.parent() == Some(self.dir.as_path()) {
            Ok(file)
        } else {
            Err(StoreError::UnsafeName { key: key.clone() })
        }
    }

    /// Rewrites the file `r` was read from without `r`'s document, unless that file is
    /// `except` or lies outside the directory.
    fn cut_out(&self, r: &Resource, except: &Path) -> Result<(), StoreError> {
        let file = r.origin.file.as_path();
        if file == except || file.parent() != Some(self.dir.as_path()) || !file.exists() {
            return Ok(());
        }
        let text = fs::read_to_string(file).map_err(|source| StoreError::Io {
            action: "read",
            path: file.to_path_buf(),
            source,
        })?;
        // By identity, not by position: earlier cuts renumber the documents after them.
        let key = Key::of(r);
        let kept: Vec<&str> = split_documents(&text)
            .into_iter()
            .filter(|(_, d)| document_key(d).as_ref() != Some(&key))
            .map(|(_, d)| d.trim_end())
            .collect();
        if kept.is_empty() {
            fs::remove_file(file).map_err(|source| StoreError::Io {
                action: "remove",
                path: file.to_path_buf(),
                source,
            })?;
            return Ok(());
        }
        replace_file(file, format!("{}\n", kept.join("\n---\n")).as_bytes())
    }
}

/// The kind, namespace and name a document defines, read without the rest of it.
fn document_key(document: &str) -> Option<Key> {
    #[derive(serde::Deserialize)]
    struct Head {
        kind: String,
        metadata: Meta,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        name: String,
        namespace: Option<String>,
    }
    let head: Head = serde_norway::from_str(document).ok()?;
    Some(Key {
        kind: weft_api::Kind::from_name(&head.kind)?,
        namespace: head.metadata.namespace.unwrap_or_else(|| "default".into()),
        name: head.metadata.name,
    })
}

/// Replaces `file` so that a crash leaves either the old or the new content: a temporary
/// file beside it is written and fsynced, renamed over it, and the directory fsynced.
pub fn write_atomic(file: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace_file(file, bytes)?;
    sync_dir(file.parent().expect("a file in a directory"))
}

/// [`write_atomic`] without the directory's fsync, for batches that sync once at the end.
fn replace_file(file: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = file.parent().expect("a file in a directory");
    let name = file.file_name().expect("a file").to_string_lossy();
    let temp = dir.join(format!(".{name}{TEMP_SUFFIX}"));
    let io = |action, source| StoreError::Io {
        action,
        path: temp.clone(),
        source,
    };
    // Owner-only: an applied Secret holds a gateway's private key.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| io("create", e))?;
    f.write_all(bytes).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("fsync", e))?;
    drop(f);
    fs::rename(&temp, file).map_err(|e| io("rename", e))
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            action: "fsync",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_all(dir: &ConfigDir) -> Vec<Resource> {
        let files = dir.partitions().unwrap();
        let read = |f: &PathBuf| match dir.content(f).unwrap() {
            Some(text) => dir.parse(f, &text).unwrap(),
            None => Vec::new(),
        };
        files.iter().flat_map(read).collect()
    }

    const TWO: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80, name: http}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: 80, name: http}]}\n";

    #[test]
    fn a_relative_directory_owns_the_absolute_paths_the_watcher_reports() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(tmp.path(), &cwd);
        let dir = ConfigDir::open(&relative).unwrap();
        assert!(dir.owns(&tmp.path().canonicalize().unwrap().join("team.yaml")));
    }

    /// `to` as seen from `from`, through `..` as needed.
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let ups = from.components().count() - 1;
        let mut p = PathBuf::new();
        for _ in 0..ups {
            p.push("..");
        }
        p.join(to.strip_prefix("/").unwrap())
    }

    #[test]
    fn objects_are_cut_out_by_name_however_the_file_was_renumbered() {
        let tmp = tempfile::tempdir().unwrap();
        let three = format!(
            "{TWO}---\n{}",
            TWO.split("---\n")
                .next()
                .unwrap()
                .replace("name: a", "name: c")
        );
        fs::write(tmp.path().join("mine.yaml"), three).unwrap();
        let dir = ConfigDir::open(tmp.path()).unwrap();
        // As loaded once: a is document 1, b document 2, c document 3.
        let first = load_all(&dir);
        for name in ["a", "c"] {
            let r = first.iter().find(|r| r.name() == name).unwrap();
            dir.put(&Key::of(r), r, Some(r)).unwrap();
        }
        let mine = fs::read_to_string(tmp.path().join("mine.yaml")).unwrap();
        assert!(
            mine.contains("name: b") && !mine.contains("name: a") && !mine.contains("name: c"),
            "{mine}"
        );
        assert_eq!(load_all(&dir).len(), 3);
    }

    #[test]
    fn nothing_is_written_or_removed_outside_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("app.yaml"), "precious").unwrap();
        let dir = ConfigDir::open(&tmp.path().join("config")).unwrap();
        let r = weft_api::load_str(TWO, Path::new("x.yaml"))
            .resources
            .remove(0);
        for (namespace, name) in [
            ("../victim/app", "a"),
            ("default", "../../victim/app"),
            ("a/b", "c"),
            ("Default", "a"),
            ("default", ".hidden"),
        ] {
            let key = Key {
                kind: weft_api::Kind::Service,
                namespace: namespace.into(),
                name: name.into(),
            };
            assert!(
                matches!(dir.put(&key, &r, None), Err(StoreError::UnsafeName { .. })),
                "{key}"
            );
            assert!(
                matches!(dir.delete(&key, &r), Err(StoreError::UnsafeName { .. })),
                "{key}"
            );
        }
        assert_eq!(
            fs::read_to_string(victim.join("app.yaml")).unwrap(),
            "precious"
        );
        assert_eq!(fs::read_dir(tmp.path().join("config")).unwrap().count(), 0);
    }

    #[test]
    fn applying_an_object_moves_it_out_of_a_shared_file() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("mine.yaml"), TWO).unwrap();
        fs::write(tmp.path().join(".x.yaml.tmp"), "half a wri").unwrap();
        let dir = ConfigDir::open(tmp.path()).unwrap();
        assert!(!tmp.path().join(".x.yaml.tmp").exists());
        let all = load_all(&dir);
        let b = &all[1];
        let mut changed = b.clone();
        changed.metadata.labels.insert("team".into(), "x".into());
        dir.put(&Key::of(b), &changed, Some(b)).unwrap();
        let mine = fs::read_to_string(tmp.path().join("mine.yaml")).unwrap();
        assert!(
            mine.contains("name: a") && !mine.contains("name: b"),
            "{mine}"
        );
        let again = load_all(&dir);
        assert_eq!(again.len(), 2);
        let b2 = again.iter().find(|r| r.name() == "b").unwrap();
        assert_eq!(b2.metadata.labels["team"], "x");
        assert!(b2.origin.file.ends_with("default.service.b.yaml"));
        dir.delete(&Key::of(b2), b2).unwrap();
        let a = again.iter().find(|r| r.name() == "a").unwrap();
        dir.delete(&Key::of(a), a).unwrap();
        assert!(load_all(&dir).is_empty());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
