//! What the simulated proxies report, gathered while the measurement runs: who has its first
//! update, which change reached which proxy when, and anything no change explains.

use super::proxies::{Event, What};
use super::{ms, ChangeSample, Changes, Options, Percentiles, Snapshot, Unexpected, BARRIER};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_discovery::discovery::Resource;

/// A change being followed: which proxies should get it and when each did.
pub struct ChangeState {
    pub namespace: String,
    pub name: String,
    pub affected: Vec<usize>,
    pub started: Instant,
    pub apply: Duration,
    /// Every proxy that acknowledged it, affected or not.
    pub reached: HashMap<usize, Instant>,
}

/// The part of a WorkloadEntry that tells which change it carries.
#[derive(Deserialize)]
struct Endpoint {
    spec: EndpointSpec,
}

#[derive(Deserialize)]
struct EndpointSpec {
    #[serde(default)]
    address: String,
}

/// What the simulated proxies reported, gathered from their events.
pub struct Tally {
    events: mpsc::UnboundedReceiver<Event>,
    first: Vec<Option<Instant>>,
    held: Vec<usize>,
    pub bytes: u64,
    retries: usize,
    pub failed: Vec<Option<String>>,
    pub changes: Vec<ChangeState>,
    /// Each change moves an endpoint to an address of its own.
    pub by_address: HashMap<String, usize>,
    pub barrier: HashMap<usize, Instant>,
    /// What no change explains, each with how many proxies were sent it, in order of first
    /// sighting.
    pub unexpected: Vec<Unexpected>,
    unexpected_index: HashMap<String, usize>,
}

impl Tally {
    pub fn new(proxies: usize, events: mpsc::UnboundedReceiver<Event>) -> Tally {
        Tally {
            events,
            first: vec![None; proxies],
            held: vec![0; proxies],
            bytes: 0,
            retries: 0,
            failed: vec![None; proxies],
            changes: Vec::new(),
            by_address: HashMap::new(),
            barrier: HashMap::new(),
            unexpected: Vec::new(),
            unexpected_index: HashMap::new(),
        }
    }

    /// Takes in events until `done` holds; false if the deadline came first or every proxy
    /// is gone.
    pub async fn until(&mut self, deadline: Instant, done: impl Fn(&Tally) -> bool) -> bool {
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.take(event),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }

    /// Runs `f` while taking in events, so none wait to be counted.
    pub async fn during<F: Future>(&mut self, f: F) -> F::Output {
        tokio::pin!(f);
        loop {
            tokio::select! {
                out = &mut f => return out,
                Some(event) = self.events.recv() => self.take(event),
            }
        }
    }

    fn take(&mut self, event: Event) {
        let (p, at) = (event.proxy, event.at);
        match event.what {
            What::Failed(reason) => self.failed[p] = Some(reason),
            What::Retried => self.retries += 1,
            What::Update {
                full,
                bytes,
                held,
                resources,
                removed,
            } => {
                self.bytes += bytes as u64;
                self.held[p] = held;
                match (full, self.first[p]) {
                    (true, None) => self.first[p] = Some(at),
                    (true, Some(_)) => self.note("a full update after the first (a resync)".into()),
                    (false, _) => {}
                }
                for r in &resources {
                    self.classify(p, at, r);
                }
                for k in removed {
                    self.note(format!("{} {}/{} removed", k.kind, k.namespace, k.name));
                }
            }
        }
    }

    /// Credits a resource of an incremental update to the change it carries.
    fn classify(&mut self, p: usize, at: Instant, r: &Resource) {
        let Some(key) = &r.key else {
            return self.note("a resource without a key".into());
        };
        let what = format!("{} {}/{}", key.kind, key.namespace, key.name);
        if key.kind == "Service" && key.namespace == "istio-system" && key.name == BARRIER {
            if self.barrier.insert(p, at).is_some() {
                self.note(format!("{what} a second time"));
            }
            return;
        }
        if key.kind != "WorkloadEntry" {
            return self.note(format!("{what}, which no change touched"));
        }
        let address = serde_json::from_slice::<Endpoint>(&r.json)
            .map(|e| e.spec.address)
            .unwrap_or_default();
        let change = self.by_address.get(&address).map(|&c| &mut self.changes[c]);
        match change {
            Some(c) if c.namespace == key.namespace && c.name == key.name => {
                if c.reached.insert(p, at).is_some() {
                    self.note(format!("{what} at {address} a second time"));
                }
            }
            _ => self.note(format!("{what} at {address}, an address no change set")),
        }
    }

    /// Counts one proxy sent `what`.
    fn note(&mut self, what: String) {
        match self.unexpected_index.get(&what) {
            Some(&i) => self.unexpected[i].proxies += 1,
            None => {
                self.unexpected_index
                    .insert(what.clone(), self.unexpected.len());
                self.unexpected.push(Unexpected { what, proxies: 1 });
            }
        }
    }

    fn gone(&self, p: usize) -> bool {
        self.failed[p].is_some()
    }

    /// Proxies with neither a first update nor a failure yet.
    pub fn waiting(&self) -> usize {
        (0..self.first.len())
            .filter(|&p| self.first[p].is_none() && !self.gone(p))
            .count()
    }

    pub fn synced(&self) -> bool {
        self.waiting() == 0
    }

    pub fn settled(&self, c: usize) -> bool {
        let change = &self.changes[c];
        change
            .affected
            .iter()
            .all(|&p| change.reached.contains_key(&p) || self.gone(p))
    }

    /// Whether a proxy holds its first update and its stream is still open.
    pub fn connected(&self, p: usize) -> bool {
        self.first[p].is_some() && !self.gone(p)
    }

    pub fn barrier_settled(&self, expected: &[usize]) -> bool {
        expected
            .iter()
            .all(|&p| self.barrier.contains_key(&p) || self.gone(p))
    }

    pub fn snapshot(&self, opts: &Options, started: Instant) -> Snapshot {
        let firsts: Vec<Instant> = self.first.iter().flatten().copied().collect();
        let synced: Vec<usize> = (0..opts.proxies)
            .filter(|&p| self.first[p].is_some())
            .collect();
        let held = || synced.iter().map(|&p| self.held[p]);
        let wrong = synced
            .iter()
            .filter(|&&p| self.held[p] != opts.mesh.resources_per_proxy(opts.namespace_of_proxy(p)))
            .count();
        Snapshot {
            seconds: firsts
                .iter()
                .max()
                .map_or(0.0, |at| (*at - started).as_secs_f64()),
            per_proxy_ms: Percentiles::of(firsts.iter().map(|at| ms(*at - started)).collect()),
            synced: firsts.len(),
            bytes: self.bytes,
            retries: self.retries,
            resources_min: held().min().unwrap_or(0),
            resources_max: held().max().unwrap_or(0),
            wrong_resource_count: wrong,
        }
    }

    pub fn changes(&self, bytes: u64) -> Changes {
        let samples: Vec<ChangeSample> = self
            .changes
            .iter()
            .map(|c| {
                let affected: HashSet<usize> = c.affected.iter().copied().collect();
                let last = c
                    .affected
                    .iter()
                    .map(|p| c.reached.get(p))
                    .collect::<Option<Vec<_>>>();
                ChangeSample {
                    workload_entry: format!("{}/{}", c.namespace, c.name),
                    affected: affected.len(),
                    updated: c.reached.keys().filter(|p| affected.contains(p)).count(),
                    outside: c.reached.keys().filter(|p| !affected.contains(p)).count(),
                    apply_ms: ms(c.apply),
                    converged_ms: last
                        .and_then(|ats| ats.into_iter().max().map(|at| ms(*at - c.started))),
                }
            })
            .collect();
        Changes {
            converged: samples.iter().filter(|s| s.converged_ms.is_some()).count(),
            convergence_ms: Percentiles::of(
                samples.iter().filter_map(|s| s.converged_ms).collect(),
            ),
            apply_ms: Percentiles::of(samples.iter().map(|s| s.apply_ms).collect()),
            bytes,
            samples,
        }
    }
}
