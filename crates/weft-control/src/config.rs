//! Changing the config: applies and deletes from the API, re-reads of the directory, and the
//! workloads proxies announce. All of them end in one [`Mesh::apply`].

use crate::mesh::{Change, Mesh};
use crate::objects::{Object, Source};
use crate::registrations::Registrations;
use crate::store::{ConfigSource, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use weft_api::analyze::{self, Input, Level};
use weft_api::types::timestamp::{rfc3339, Fraction};
use weft_api::{Kind, Origin, Resource};
use weft_discovery::credentials::Token;
use weft_discovery::wire::{self, Key};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("Operation cannot be fulfilled on {key}: {reason}; get the latest version (weft get {} {} -n {} -o yaml), reapply your change to it and try again", key.kind, key.name, key.namespace)]
    Conflict { key: Key, reason: String },
    #[error("{0} not found")]
    NotFound(Key),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A file of the config source that does not load.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokenFile {
    /// The loader's errors: file, document, `Kind ns/name`, field.
    pub errors: String,
    /// Whether the objects it defined before it broke are still served. A file broken
    /// since the start has none: its objects are missing, and the control plane is not
    /// ready until it is fixed.
    pub serving_last_good: bool,
}

/// A partition's objects as its content parsed, with that content's digest.
struct Parsed {
    content: u64,
    objects: Vec<(Key, Object)>,
}

/// What happened to one applied object, as kubectl reports it.
pub struct Applied {
    pub key: Key,
    pub action: &'static str,
    pub resource_version: String,
}

pub struct ConfigState {
    pub mesh: Mutex<Mesh>,
    pub source: Box<dyn ConfigSource>,
    /// Serialises applies, deletes and directory re-reads.
    write: tokio::sync::Mutex<()>,
    /// Files of the directory that do not load, with why.
    broken: Mutex<BTreeMap<PathBuf, BrokenFile>>,
    /// Each partition's last good parse, by a digest of its content: a re-read of content
    /// that has not changed (the watch's first report, a file beside the one edited) takes
    /// these instead of parsing it again.
    parsed: Mutex<BTreeMap<PathBuf, Parsed>>,
    pub registrations: Registrations,
    /// What a proxy's Hello must carry for its workload to be registered.
    pub join_token: Token,
}

impl ConfigState {
    pub fn new(
        mesh: Mesh,
        source: Box<dyn ConfigSource>,
        registrations: Registrations,
        join_token: Token,
    ) -> ConfigState {
        ConfigState {
            mesh: Mutex::new(mesh),
            source,
            write: tokio::sync::Mutex::new(()),
            broken: Mutex::default(),
            parsed: Mutex::default(),
            registrations,
            join_token,
        }
    }

    pub fn mesh(&self) -> MutexGuard<'_, Mesh> {
        self.mesh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates documents, analyzes them together with everything already applied, stores
    /// them and pushes them. Parsing and analysis run on the blocking pool, off the threads
    /// that serve the discovery streams.
    pub async fn apply(
        self: &Arc<Self>,
        source: &str,
        documents: &str,
    ) -> Result<(Vec<Applied>, Vec<String>), ConfigError> {
        let (source, documents) = (source.to_string(), documents.to_string());
        let loaded = off_the_streams(move || {
            let loaded = weft_api::load_str(&documents, Path::new(&source));
            (loaded, source)
        })
        .await;
        let (loaded, source) = loaded;
        if loaded.has_errors() {
            let errors: Vec<String> = loaded.errors().map(ToString::to_string).collect();
            return Err(ConfigError::Invalid(format!(
                "{}\nfix the documents above and apply again; nothing was applied",
                errors.join("\n")
            )));
        }
        if loaded.resources.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{source}: no Weft resources to apply (kinds: {})",
                Kind::ALL.map(Kind::name).join(", ")
            )));
        }
        // Warnings go back with the result: an Istio kind Weft ignores must not pass silently.
        let warnings: Vec<String> = loaded.warnings().map(ToString::to_string).collect();
        let _write = self.write.lock().await;
        let mut incoming: BTreeMap<Key, Resource> = BTreeMap::new();
        for r in loaded.resources {
            incoming.insert(Key::of(&r), r);
        }
        let mut outcome = Vec::new();
        let mut upserts = Vec::new();
        let mut previous = BTreeMap::new();
        let created_at = rfc3339(std::time::SystemTime::now(), Fraction::Micros);
        let others = {
            let mesh = self.mesh();
            for (key, r) in incoming.iter_mut() {
                let current = mesh
                    .objects()
                    .get(key)
                    .filter(|o| o.source == Source::Config);
                if let Some(wanted) = &r.metadata.resource_version {
                    match current {
                        Some(c) if c.resource_version() != wanted => {
                            return Err(ConfigError::Conflict {
                                key: key.clone(),
                                reason: format!("the object has been modified (resourceVersion {wanted} is now {})", c.resource_version()),
                            })
                        }
                        None => {
                            return Err(ConfigError::Conflict {
                                key: key.clone(),
                                reason: format!("resourceVersion {wanted} was given but the object no longer exists"),
                            })
                        }
                        _ => {}
                    }
                }
                // Set by the server when created, kept after, as Kubernetes does: it orders
                // the merge of DestinationRules for one host (the analysis below included).
                r.metadata.creation_timestamp = current
                    .and_then(|c| c.resource.metadata.creation_timestamp.clone())
                    .or_else(|| Some(created_at.clone()));
                let mut stored = r.clone();
                stored.origin = Origin {
                    file: Arc::new(self.source.partition_for(key)),
                    document: 1,
                    line: 1,
                };
                let object = Object::new(stored, Source::Config);
                let action = match current {
                    None => "created",
                    Some(c) if c.digest == object.digest => "unchanged",
                    Some(_) => "configured",
                };
                outcome.push(Applied {
                    key: key.clone(),
                    action,
                    resource_version: object.resource_version().to_string(),
                });
                if action != "unchanged" {
                    previous.insert(key.clone(), current.map(|c| c.resource.clone()));
                    upserts.push((key.clone(), object));
                }
            }
            analysis_input(&mesh, &incoming)
        };
        let (errors, analysis) = off_the_streams(move || analysis_of(others, &incoming)).await;
        let messages: Vec<String> = warnings.into_iter().chain(analysis).collect();
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "{}\nnothing was applied: fix the errors above (`weft analyze -f FILE` shows them before applying)",
                errors.join("\n")
            )));
        }
        let state = self.clone();
        let stored = off_the_streams(move || {
            for (key, object) in &upserts {
                let before = previous.get(key).and_then(|p| p.as_deref());
                state.source.put(key, &object.resource, before)?;
            }
            state.source.sync()?;
            Ok::<_, StoreError>(upserts)
        })
        .await;
        self.mesh().apply(Change {
            upserts: stored?,
            removals: Vec::new(),
        });
        Ok((outcome, messages))
    }

    /// Deletes objects; all must exist.
    pub async fn delete(&self, keys: Vec<Key>) -> Result<Vec<Key>, ConfigError> {
        let _write = self.write.lock().await;
        let current: Vec<(Key, Arc<Resource>)> = {
            let mesh = self.mesh();
            keys.into_iter()
                .map(|k| {
                    match mesh
                        .objects()
                        .get(&k)
                        .filter(|o| o.source == Source::Config)
                    {
                        Some(o) => Ok((k, o.resource.clone())),
                        None => Err(ConfigError::NotFound(k)),
                    }
                })
                .collect::<Result<_, _>>()?
        };
        for (key, r) in &current {
            self.source.delete(key, r)?;
        }
        self.source.sync()?;
        let removals: Vec<Key> = current.into_iter().map(|(k, _)| k).collect();
        self.mesh().apply(Change {
            upserts: Vec::new(),
            removals: removals.clone(),
        });
        Ok(removals)
    }

    /// Re-reads partitions of the source (all of them for `None`) and pushes what changed.
    /// A partition that does not read is logged and changes nothing; the others still apply.
    pub async fn reload(
        self: &Arc<Self>,
        changed: Option<&BTreeSet<PathBuf>>,
    ) -> Result<usize, ConfigError> {
        let _write = self.write.lock().await;
        let partitions: Vec<PathBuf> = match changed {
            Some(changed) => changed
                .iter()
                .filter(|p| self.source.owns(p))
                .cloned()
                .collect(),
            None => self.source.partitions()?,
        };
        let state = self.clone();
        let everything_listed = changed.is_none();
        let (partitions, found, read) = off_the_streams(move || {
            if everything_listed {
                // A partition gone unreported keeps no parse.
                let listed: BTreeSet<&PathBuf> = partitions.iter().collect();
                state.parsed().retain(|p, _| listed.contains(p));
            }
            // Objects are made (encoded and digested) here rather than under the mesh's
            // lock: the watch's first report re-reads everything while proxies connect.
            let mut found: BTreeMap<Key, Object> = BTreeMap::new();
            let mut read: BTreeSet<PathBuf> = BTreeSet::new();
            for partition in &partitions {
                let loaded = state.objects_of(partition);
                let mut broken = state.broken.lock().unwrap_or_else(|p| p.into_inner());
                match loaded {
                    Ok(objects) => {
                        broken.remove(partition);
                        read.insert(partition.clone());
                        found.extend(objects);
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        let serving_last_good = false; // settled below, against the mesh
                        let errors = e.to_string();
                        broken.insert(
                            partition.clone(),
                            BrokenFile {
                                errors,
                                serving_last_good,
                            },
                        );
                    }
                }
            }
            (partitions, found, read)
        })
        .await;
        // After a full read, anything not found is gone, wherever it came from.
        let everything = changed.is_none() && read.len() == partitions.len();
        let mut mesh = self.mesh();
        let removals: Vec<Key> = mesh
            .config_objects()
            .filter(|(k, o)| {
                !found.contains_key(k)
                    && (everything || read.contains(o.resource.origin.file.as_path()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let upserts = found
            .into_iter()
            .filter(|(k, o)| mesh.objects().get(k).is_none_or(|c| c.digest != o.digest))
            .collect();
        let changed = mesh.apply(Change { upserts, removals });
        let mut broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        for (file, b) in broken.iter_mut() {
            b.serving_last_good = mesh
                .config_objects()
                .any(|(_, o)| o.resource.origin.file.as_path() == file);
        }
        mesh.metrics.broken_files(broken.len());
        Ok(changed)
    }

    /// The objects a partition defines now, parsed only if its content changed since its
    /// last good parse.
    fn objects_of(&self, partition: &Path) -> Result<Vec<(Key, Object)>, StoreError> {
        let Some(content) = self.source.content(partition)? else {
            self.parsed().remove(partition);
            return Ok(Vec::new());
        };
        let digest = wire::content_hash(content.as_bytes());
        if let Some(last) = self.parsed().get(partition).filter(|p| p.content == digest) {
            return Ok(last.objects.clone());
        }
        let objects: Vec<(Key, Object)> = self
            .source
            .parse(partition, &content)?
            .into_iter()
            .map(|r| (Key::of(&r), Object::new(r, Source::Config)))
            .collect();
        self.parsed().insert(
            partition.to_path_buf(),
            Parsed {
                content: digest,
                objects: objects.clone(),
            },
        );
        Ok(objects)
    }

    fn parsed(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Parsed>> {
        self.parsed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files of the source that do not load.
    pub fn broken_files(&self) -> BTreeMap<PathBuf, BrokenFile> {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The problems with the config as people should hear of them (`/ready`, `weft
    /// analyze`, `weft proxy-status`), and whether the control plane can be called ready:
    /// not while a file's objects are missing altogether.
    pub fn problems(&self) -> (bool, Vec<String>) {
        let broken = self.broken_files();
        let ready =
            !self.source.missing_blocks_readiness() || broken.values().all(|b| b.serving_last_good);
        let problems = broken
            .iter()
            .map(|(file, b)| {
                let served = if b.serving_last_good {
                    "its last good objects are still served"
                } else {
                    "none of its objects are served"
                };
                format!(
                    "{} does not load ({served}; fix it, `weft validate -f FILE` shows the same):\n{}",
                    file.display(),
                    b.errors
                )
            })
            .collect();
        (ready, problems)
    }
}

/// The namespaces whose Services and WorkloadEntries can change a finding about `incoming`:
/// their own, and those their hosts name (`reviews.shop.svc.cluster.local`, a destination's
/// host included). Services and WorkloadEntries elsewhere — the bulk of a big mesh — are
/// left out of the analysis; the other kinds are few and always in.
fn related_namespaces<'a>(incoming: impl Iterator<Item = &'a Resource>) -> BTreeSet<String> {
    fn hosts(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("host", serde_json::Value::String(h)) => out.push(h.clone()),
                        ("hosts", serde_json::Value::Array(list)) => {
                            out.extend(list.iter().filter_map(|h| h.as_str()).map(str::to_string))
                        }
                        _ => hosts(v, out),
                    }
                }
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| hosts(v, out)),
            _ => {}
        }
    }
    let mut related = BTreeSet::from([weft_api::scope::ROOT_NAMESPACE.to_string()]);
    for r in incoming {
        related.insert(r.namespace().to_string());
        let mut named = Vec::new();
        hosts(
            &serde_json::to_value(&r.spec).unwrap_or_default(),
            &mut named,
        );
        for h in named {
            // `ns/host` (Gateway and Sidecar hosts) or a host whose FQDN names a namespace.
            let host = h.rsplit('/').next().unwrap_or_default();
            let fqdn = weft_api::host::fqdn(host, r.namespace());
            if let Some(ns) = fqdn
                .strip_suffix(".svc.cluster.local")
                .and_then(|p| p.rsplit_once('.'))
                .map(|(_, ns)| ns)
            {
                related.insert(ns.to_string());
            }
        }
    }
    related
}

/// Runs CPU- or disk-bound work on the blocking pool, so that a large or hostile apply
/// never holds up the threads that serve the discovery streams.
async fn off_the_streams<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// What the analysis of `incoming` reads of the mesh, taken under its lock (shared
/// pointers: cheap); Services and WorkloadEntries only of related namespaces.
fn analysis_input(mesh: &Mesh, incoming: &BTreeMap<Key, Resource>) -> Vec<Arc<Resource>> {
    let related = related_namespaces(incoming.values());
    mesh.objects()
        .iter()
        .filter(|(k, _)| !incoming.contains_key(k))
        .filter(|(k, _)| {
            !matches!(k.kind, Kind::Service | Kind::WorkloadEntry) || related.contains(&k.namespace)
        })
        .map(|(_, o)| o.resource.clone())
        .collect()
}

/// Analyzer messages about `incoming`, judged together with everything else: those that
/// block the apply, and the rest. Findings that depend on what exists yet never block:
/// IST0173 (a subset selects no workloads: which proxies happen to be connected), IST0161
/// (a Gateway's Secret, which may come after it) and an AuthorizationPolicy's IST0101 (a
/// namespace nothing lives in yet).
fn analysis_of(
    others: Vec<Arc<Resource>>,
    incoming: &BTreeMap<Key, Resource>,
) -> (Vec<String>, Vec<String>) {
    let mut resources: Vec<Resource> = others.iter().map(|r| r.as_ref().clone()).collect();
    resources.extend(incoming.values().cloned());
    let input = Input {
        resources,
        ..Default::default()
    };
    let (blocking, other): (Vec<_>, Vec<_>) = analyze::analyze(&input)
        .into_iter()
        .filter(|m| {
            m.resource.as_ref().is_some_and(|r| {
                incoming.keys().any(|k| {
                    k.kind.name() == r.kind && k.namespace == r.namespace && k.name == r.name
                })
            })
        })
        .partition(|m| {
            let policy = m
                .resource
                .as_ref()
                .is_some_and(|r| r.kind == Kind::AuthorizationPolicy.name());
            m.level() == Level::Error
                && !matches!(m.code(), "IST0173" | "IST0161")
                && !(m.code() == "IST0101" && policy)
        });
    let text = |ms: Vec<analyze::Message>| ms.iter().map(ToString::to_string).collect();
    (text(blocking), text(other))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::ConfigDir;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The config directory, counting how many times it parses a file.
    struct Counting {
        dir: ConfigDir,
        parses: Arc<AtomicUsize>,
    }

    impl ConfigSource for Counting {
        fn partitions(&self) -> Result<Vec<PathBuf>, StoreError> {
            self.dir.partitions()
        }
        fn owns(&self, partition: &Path) -> bool {
            self.dir.owns(partition)
        }
        fn content(&self, partition: &Path) -> Result<Option<String>, StoreError> {
            self.dir.content(partition)
        }
        fn parse(&self, partition: &Path, content: &str) -> Result<Vec<Resource>, StoreError> {
            self.parses.fetch_add(1, Ordering::Relaxed);
            self.dir.parse(partition, content)
        }
        fn partition_for(&self, key: &Key) -> PathBuf {
            self.dir.partition_for(key)
        }
        fn put(
            &self,
            key: &Key,
            r: &Resource,
            previous: Option<&Resource>,
        ) -> Result<(), StoreError> {
            self.dir.put(key, r, previous)
        }
        fn delete(&self, key: &Key, current: &Resource) -> Result<(), StoreError> {
            self.dir.delete(key, current)
        }
        fn sync(&self) -> Result<(), StoreError> {
            self.dir.sync()
        }
        fn watch(
            &self,
            changed: tokio::sync::mpsc::UnboundedSender<Option<BTreeSet<PathBuf>>>,
        ) -> tokio::task::JoinHandle<()> {
            self.dir.watch(changed)
        }
    }

    fn service(name: &str, label: &str) -> String {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, labels: {{from: {label}}}}}\nspec: {{ports: [{{port: 80, name: http}}]}}\n")
    }

    fn label_of(state: &ConfigState, name: &str) -> Option<String> {
        let key = Key {
            kind: Kind::Service,
            namespace: "default".into(),
            name: name.into(),
        };
        let mesh = state.mesh();
        let labels = &mesh.objects().get(&key)?.resource.metadata.labels;
        labels.get("from").cloned()
    }

    #[tokio::test]
    async fn content_read_before_is_not_parsed_again_and_means_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.yaml"), tmp.path().join("b.yaml"));
        // `shared` is defined in both files; the later file wins.
        std::fs::write(
            &a,
            format!("{}---\n{}", service("one", "a"), service("shared", "a")),
        )
        .unwrap();
        std::fs::write(
            &b,
            format!("{}---\n{}", service("two", "b"), service("shared", "b")),
        )
        .unwrap();
        let parses = Arc::new(AtomicUsize::new(0));
        let source = Counting {
            dir: ConfigDir::open(tmp.path()).unwrap(),
            parses: parses.clone(),
        };
        let state = Arc::new(ConfigState::new(
            Mesh::new(Arc::new(Metrics::default())),
            Box::new(source),
            Registrations::new(None, Duration::from_secs(30)),
            Token::generate().unwrap(),
        ));
        let parsed = || parses.load(Ordering::Relaxed);

        state.reload(None).await.unwrap();
        assert_eq!(
            (parsed(), label_of(&state, "shared").as_deref()),
            (2, Some("b"))
        );

        // The watch's first report: everything again, nothing parsed, nothing changed.
        assert_eq!(state.reload(None).await.unwrap(), 0);
        assert_eq!(parsed(), 2);
        assert_eq!(state.mesh().config_objects().count(), 3);

        // An edit is parsed; the file beside it, re-read in full, is not, and still defines
        // what it did: `shared` falls back to a's definition.
        std::fs::write(&b, service("two", "b2")).unwrap();
        state.reload(None).await.unwrap();
        assert_eq!(parsed(), 3);
        assert_eq!(label_of(&state, "two").as_deref(), Some("b2"));
        assert_eq!(label_of(&state, "shared").as_deref(), Some("a"));

        // A broken edit keeps the last good objects; putting the last good content back
        // serves it again without a parse.
        std::fs::write(&b, "kind: [").unwrap();
        state
            .reload(Some(&BTreeSet::from([b.clone()])))
            .await
            .unwrap();
        assert_eq!(parsed(), 4);
        assert!(state.broken_files().contains_key(&b));
        std::fs::write(&b, service("two", "b2")).unwrap();
        state
            .reload(Some(&BTreeSet::from([b.clone()])))
            .await
            .unwrap();
        assert_eq!(parsed(), 4);
        assert!(state.broken_files().is_empty());

        // A file removed behind the watch's back leaves no parse after a full re-read.
        let c = tmp.path().join("c.yaml");
        std::fs::write(&c, service("three", "c")).unwrap();
        state.reload(None).await.unwrap();
        std::fs::remove_file(&c).unwrap();
        state.reload(None).await.unwrap();
        assert!(!state.parsed().contains_key(&c));
        assert_eq!(label_of(&state, "three"), None);
        let parses_so_far = parsed();

        // A removed file's objects go, and so does its parse.
        std::fs::remove_file(&a).unwrap();
        state
            .reload(Some(&BTreeSet::from([a.clone()])))
            .await
            .unwrap();
        assert_eq!(label_of(&state, "one"), None);
        assert_eq!(label_of(&state, "shared"), None);
        std::fs::write(&a, service("one", "a")).unwrap();
        state.reload(Some(&BTreeSet::from([a]))).await.unwrap();
        assert_eq!(
            (parsed(), label_of(&state, "one").as_deref()),
            (parses_so_far + 1, Some("a"))
        );
    }
}
