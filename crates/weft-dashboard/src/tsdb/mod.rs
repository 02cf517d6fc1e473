//! The aggregator's time-series store, shaped as Prometheus's head block: series found by
//! label matchers through an inverted index (postings), each series' samples in compressed
//! chunks, everything older than the retention dropped, and a stated bound on what it holds.

pub mod chunk;

use chunk::{Chunk, Sample};
use parking_lot::RwLock;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// A series' identity: label pairs sorted by name, `__name__` among them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Box<[(Arc<str>, Arc<str>)]>);

impl Labels {
    pub fn new(mut pairs: Vec<(Arc<str>, Arc<str>)>) -> Labels {
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Labels(pairs.into_boxed_slice())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| (**n).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }
}

#[derive(Debug, Clone)]
pub enum Matcher {
    Equal(String, String),
    NotEqual(String, String),
    /// Anchored, as PromQL's `=~`.
    Regex(String, regex::Regex),
}

impl Matcher {
    pub fn equal(name: &str, value: &str) -> Matcher {
        Matcher::Equal(name.into(), value.into())
    }

    /// `=~`; the pattern is anchored at both ends, as PromQL anchors it.
    pub fn regex(name: &str, pattern: &str) -> Result<Matcher, regex::Error> {
        Ok(Matcher::Regex(
            name.into(),
            regex::Regex::new(&format!("^(?:{pattern})$"))?,
        ))
    }

    fn matches(&self, labels: &Labels) -> bool {
        // A missing label matches as the empty value, as in PromQL.
        match self {
            Matcher::Equal(n, v) => labels.get(n).unwrap_or_default() == v,
            Matcher::NotEqual(n, v) => labels.get(n).unwrap_or_default() != v,
            Matcher::Regex(n, re) => re.is_match(labels.get(n).unwrap_or_default()),
        }
    }

    /// The PromQL text of the matcher.
    pub fn promql(&self) -> String {
        match self {
            Matcher::Equal(n, v) => format!("{n}={v:?}"),
            Matcher::NotEqual(n, v) => format!("{n}!={v:?}"),
            Matcher::Regex(n, re) => {
                let anchored = re.as_str();
                let inner = &anchored[4..anchored.len() - 2];
                format!("{n}=~{inner:?}")
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub retention: Duration,
    pub max_series: usize,
    /// Chunk bytes; labels are counted on top, by their string lengths.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// An hour, as the dashboard's longest window; a mesh of hundreds of workloads fits.
    fn default() -> Limits {
        Limits {
            retention: Duration::from_secs(3600),
            max_series: 200_000,
            max_bytes: 128 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub series: usize,
    pub samples: usize,
    pub bytes: usize,
    /// New series refused because the store was at its bound.
    pub refused_series: u64,
}

#[derive(Default)]
pub struct Db {
    inner: RwLock<Inner>,
    limits: Limits,
}

#[derive(Default)]
struct Inner {
    /// One copy of each label name and value, shared by every series that has it.
    symbols: HashSet<Arc<str>>,
    ids: HashMap<Labels, u32>,
    series: HashMap<u32, Series>,
    postings: HashMap<(Arc<str>, Arc<str>), BTreeSet<u32>>,
    next_id: u32,
    bytes: usize,
    refused_series: u64,
}

struct Series {
    labels: Labels,
    chunks: VecDeque<Chunk>,
}

impl Series {
    fn bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::bytes).sum()
    }
}

fn labels_bytes(labels: &Labels) -> usize {
    labels.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
}

impl Db {
    pub fn new(limits: Limits) -> Db {
        Db {
            inner: RwLock::default(),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Appends one scrape's samples under one lock.
    pub fn append(&self, samples: impl IntoIterator<Item = (Labels, Sample)>) {
        let mut inner = self.inner.write();
        for (labels, sample) in samples {
            inner.append(labels, sample, &self.limits);
        }
    }

    /// Drops what is older than the retention, and series left with nothing.
    pub fn compact(&self, now_ms: i64) {
        let oldest = now_ms - self.limits.retention.as_millis() as i64;
        let mut inner = self.inner.write();
        let mut emptied = Vec::new();
        let mut freed = 0;
        for (id, series) in &mut inner.series {
            while series
                .chunks
                .front()
                .is_some_and(|c| c.max_t().is_none_or(|t| t < oldest))
            {
                freed += series.chunks.pop_front().map_or(0, |c| c.bytes());
            }
            if series.chunks.is_empty() {
                emptied.push(*id);
            }
        }
        inner.bytes -= freed.min(inner.bytes);
        for id in emptied {
            inner.remove(id);
        }
    }

    /// Every series the matchers select, with its samples in `[from, to]` (milliseconds).
    pub fn select(&self, matchers: &[Matcher], from: i64, to: i64) -> Vec<(Labels, Vec<Sample>)> {
        let inner = self.inner.read();
        inner
            .candidates(matchers)
            .into_iter()
            .filter_map(|id| inner.series.get(&id))
            .filter(|s| matchers.iter().all(|m| m.matches(&s.labels)))
            .filter_map(|s| {
                let samples: Vec<Sample> = s
                    .chunks
                    .iter()
                    .filter(|c| c.min_t() <= to && c.max_t().is_some_and(|t| t >= from))
                    .flat_map(|c| c.iter())
                    .filter(|x| x.t >= from && x.t <= to)
                    .collect();
                (!samples.is_empty()).then(|| (s.labels.clone(), samples))
            })
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let inner = self.inner.read();
        Stats {
            series: inner.series.len(),
            samples: inner
                .series
                .values()
                .flat_map(|s| &s.chunks)
                .map(|c| usize::from(c.len()))
                .sum(),
            bytes: inner.bytes,
            refused_series: inner.refused_series,
        }
    }
}

impl Inner {
    fn append(&mut self, labels: Labels, sample: Sample, limits: &Limits) {
        let id = match self.ids.get(&labels) {
            Some(id) => *id,
            None => {
                let cost = labels_bytes(&labels);
                if self.series.len() >= limits.max_series || self.bytes + cost > limits.max_bytes {
                    self.refused_series += 1;
                    return;
                }
                self.insert(labels, cost)
            }
        };
        let Some(series) = self.series.get_mut(&id) else {
            return;
        };
        if series.chunks.back().is_none_or(Chunk::is_full) {
            series.chunks.push_back(Chunk::default());
        }
        let head = series.chunks.back_mut().expect("pushed");
        let before = head.bytes();
        head.push(sample);
        self.bytes += head.bytes() - before;
    }

    fn insert(&mut self, labels: Labels, cost: usize) -> u32 {
        let interned: Vec<(Arc<str>, Arc<str>)> = labels
            .0
            .iter()
            .map(|(n, v)| (self.intern(n), self.intern(v)))
            .collect();
        let labels = Labels(interned.into_boxed_slice());
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        for pair in labels.0.iter() {
            self.postings.entry(pair.clone()).or_default().insert(id);
        }
        self.ids.insert(labels.clone(), id);
        self.series.insert(
            id,
            Series {
                labels,
                chunks: VecDeque::new(),
            },
        );
        self.bytes += cost;
        id
    }

    fn intern(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.symbols.get(s) {
            Some(shared) => shared.clone(),
            None => {
                self.symbols.insert(s.clone());
                s.clone()
            }
        }
    }

    fn remove(&mut self, id: u32) {
        let Some(series) = self.series.remove(&id) else {
            return;
        };
        self.bytes -= (series.bytes() + labels_bytes(&series.labels)).min(self.bytes);
        self.ids.remove(&series.labels);
        for pair in series.labels.0.iter() {
            if let Some(ids) = self.postings.get_mut(pair) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.postings.remove(pair);
                }
            }
        }
        drop(series);
        // Symbols no series holds any more: the set's is the only reference.
        self.symbols.retain(|s| Arc::strong_count(s) > 1);
    }

    /// The ids the equality matchers allow, from the smallest posting list; every series if
    /// there are none. The caller checks all matchers.
    fn candidates(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut lists: Vec<&BTreeSet<u32>> = Vec::new();
        for m in matchers {
            if let Matcher::Equal(n, v) = m {
                if v.is_empty() {
                    continue;
                }
                match self
                    .postings
                    .get(&(Arc::from(n.as_str()), Arc::from(v.as_str())))
                {
                    Some(ids) => lists.push(ids),
                    None => return Vec::new(),
                }
            }
        }
        lists.sort_by_key(|l| l.len());
        match lists.split_first() {
            None => self.series.keys().copied().collect(),
            Some((first, rest)) => first
                .iter()
                .copied()
                .filter(|id| rest.iter().all(|l| l.contains(id)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(
            pairs
                .iter()
                .map(|(n, v)| (Arc::from(*n), Arc::from(*v)))
                .collect(),
        )
    }

    fn sample(t: i64, v: f64) -> Sample {
        Sample { t, v }
    }

    #[test]
    fn series_are_found_by_their_labels() {
        let db = Db::default();
        let a = labels(&[("__name__", "req"), ("app", "reviews"), ("version", "v1")]);
        let b = labels(&[("__name__", "req"), ("app", "reviews"), ("version", "v2")]);
        let c = labels(&[("__name__", "req"), ("app", "ratings")]);
        db.append([
            (a.clone(), sample(1, 1.0)),
            (b, sample(1, 2.0)),
            (c, sample(1, 3.0)),
        ]);
        db.append([(a.clone(), sample(2, 5.0))]);
        let got = db.select(
            &[
                Matcher::equal("__name__", "req"),
                Matcher::equal("version", "v1"),
            ],
            0,
            10,
        );
        assert_eq!(got, vec![(a, vec![sample(1, 1.0), sample(2, 5.0)])]);
        let reviews = db.select(
            &[
                Matcher::equal("app", "reviews"),
                Matcher::regex("version", "v2|v3").unwrap(),
            ],
            0,
            10,
        );
        assert_eq!(reviews.len(), 1);
        // A missing label is the empty value.
        let no_version = db.select(&[Matcher::equal("version", "")], 0, 10);
        assert_eq!(no_version.len(), 1);
    }

    #[test]
    fn the_retention_drops_whole_chunks_then_empty_series() {
        let db = Db::new(Limits {
            retention: Duration::from_secs(3600),
            ..Limits::default()
        });
        let l = labels(&[("__name__", "x")]);
        let step = 15_000;
        for i in 0..240 {
            db.append([(l.clone(), sample(i * step, i as f64))]);
        }
        assert_eq!(db.stats().samples, 240);
        // At 1 h 30 m, the first chunk (0–30 m) is older than the hour and goes.
        db.compact(90 * 60_000);
        assert_eq!(db.stats().samples, 120);
        db.compact(10 * 3_600_000);
        assert_eq!(db.stats(), Stats::default());
    }

    #[test]
    fn new_series_past_the_bound_are_refused_and_counted() {
        let db = Db::new(Limits {
            max_series: 2,
            ..Limits::default()
        });
        for i in 0..5 {
            let l = labels(&[("__name__", "x"), ("i", &i.to_string())]);
            db.append([(l, sample(1, 1.0))]);
        }
        let stats = db.stats();
        assert_eq!((stats.series, stats.refused_series), (2, 3));
    }
}
