//! The aggregator's time-series store, shaped as Prometheus's head block: series found by
//! label matchers through an inverted index (postings), each series' samples in compressed
//! chunks, everything older than the retention dropped, and a stated bound on what it holds.

pub mod chunk;

use chunk::{Chunk, Sample};
use parking_lot::{RwLock, RwLockWriteGuard};
use std::collections::{HashMap, VecDeque};
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
    /// Chunks, series and their index, and label strings, as [`Stats::bytes`] counts them.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// An hour, as the dashboard's longest window; 1,000 sidecars' standard metrics fit
    /// (bench/README.md).
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
    /// What the store holds, estimated from what it allocated: chunks, each series' symbol
    /// pairs and postings entries, and each distinct label string once.
    pub bytes: usize,
    /// New series refused because the store was at its bound.
    pub refused_series: u64,
}

/// A label name or value, by its number in the symbol table.
type Symbol = u32;
/// A series' labels as symbol pairs, in the order of its [`Labels`].
type Pairs = Arc<[(Symbol, Symbol)]>;

/// Estimated bytes beyond the pairs: the series' entries in `ids` and `series`, its chunk
/// queue and the `Arc` header.
const SERIES_BYTES: usize = 96;
/// A pair (8 bytes) and its id in a posting list (4).
const PAIR_BYTES: usize = 12;
/// Beyond a string's own bytes: its `Arc` header and its entries in the symbol table.
const SYMBOL_BYTES: usize = 56;

#[derive(Default)]
pub struct Db {
    inner: RwLock<Inner>,
    limits: Limits,
}

pub struct Appender<'a> {
    inner: RwLockWriteGuard<'a, Inner>,
    limits: &'a Limits,
}

impl Appender<'_> {
    /// One sample of the series `pairs` names: (label name, value), as [`sort_pairs`]
    /// leaves them. Strings the store already holds are not copied.
    pub fn append(&mut self, pairs: &[(&str, &str)], sample: Sample) {
        self.inner.append(pairs, sample, self.limits);
    }
}

/// Sorted by name and one per name, as a series' identity needs them (the first value by
/// sort order wins, as in [`Labels::new`]).
pub fn sort_pairs(pairs: &mut Vec<(&str, &str)>) {
    pairs.sort_unstable();
    pairs.dedup_by(|a, b| a.0 == b.0);
}

/// Every distinct label string once, numbered, with how many series' pairs use it.
#[derive(Default)]
struct Symbols {
    by_text: HashMap<Arc<str>, Symbol>,
    text: Vec<Option<Arc<str>>>,
    uses: Vec<u32>,
    free: Vec<Symbol>,
}

impl Symbols {
    fn get(&self, s: &str) -> Option<Symbol> {
        self.by_text.get(s).copied()
    }

    fn text(&self, id: Symbol) -> &Arc<str> {
        self.text[id as usize].as_ref().expect("a symbol in use")
    }

    /// One more use of `s`; returns its symbol and the bytes a new one cost.
    fn acquire(&mut self, s: &str) -> (Symbol, usize) {
        if let Some(id) = self.get(s) {
            self.uses[id as usize] += 1;
            return (id, 0);
        }
        let s: Arc<str> = Arc::from(s);
        let id = match self.free.pop() {
            Some(id) => {
                self.text[id as usize] = Some(s.clone());
                self.uses[id as usize] = 1;
                id
            }
            None => {
                self.text.push(Some(s.clone()));
                self.uses.push(1);
                (self.text.len() - 1) as Symbol
            }
        };
        let bytes = s.len() + SYMBOL_BYTES;
        self.by_text.insert(s, id);
        (id, bytes)
    }

    /// One use fewer; returns the bytes freed when it was the last.
    fn release(&mut self, id: Symbol) -> usize {
        let uses = &mut self.uses[id as usize];
        *uses -= 1;
        if *uses > 0 {
            return 0;
        }
        let text = self.text[id as usize].take().expect("a symbol in use");
        self.by_text.remove(&text);
        self.free.push(id);
        text.len() + SYMBOL_BYTES
    }
}

#[derive(Default)]
struct Inner {
    symbols: Symbols,
    ids: HashMap<Pairs, u32>,
    series: HashMap<u32, Series>,
    /// Series ids by label pair, ascending.
    postings: HashMap<(Symbol, Symbol), Vec<u32>>,
    next_id: u32,
    bytes: usize,
    refused_series: u64,
    /// The pairs of the sample being appended, reused between samples.
    scratch: Vec<(Symbol, Symbol)>,
}

struct Series {
    pairs: Pairs,
    chunks: VecDeque<Chunk>,
}

impl Series {
    fn bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::bytes).sum()
    }
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

    /// Appends samples under one lock.
    pub fn append(&self, samples: impl IntoIterator<Item = (Labels, Sample)>) {
        let mut appender = self.appender();
        for (labels, sample) in samples {
            let pairs: Vec<(&str, &str)> = labels.iter().collect();
            appender.append(&pairs, sample);
        }
    }

    /// Holds the store's write lock for a batch of appends (one scrape's).
    pub fn appender(&self) -> Appender<'_> {
        Appender {
            inner: self.inner.write(),
            limits: &self.limits,
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
            .filter(|s| matchers.iter().all(|m| inner.matches(m, &s.pairs)))
            .filter_map(|s| {
                let samples: Vec<Sample> = s
                    .chunks
                    .iter()
                    .filter(|c| c.min_t() <= to && c.max_t().is_some_and(|t| t >= from))
                    .flat_map(|c| c.iter())
                    .filter(|x| x.t >= from && x.t <= to)
                    .collect();
                (!samples.is_empty()).then(|| (inner.labels(&s.pairs), samples))
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
    fn append(&mut self, pairs: &[(&str, &str)], sample: Sample, limits: &Limits) {
        let id = match self.find(pairs) {
            Some(id) => id,
            None => {
                let cost = SERIES_BYTES + PAIR_BYTES * pairs.len();
                if self.series.len() >= limits.max_series || self.bytes + cost > limits.max_bytes {
                    self.refused_series += 1;
                    return;
                }
                self.insert(pairs, cost)
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

    /// The series with exactly these labels, if there is one.
    fn find(&mut self, pairs: &[(&str, &str)]) -> Option<u32> {
        self.scratch.clear();
        for (n, v) in pairs {
            let pair = (self.symbols.get(n)?, self.symbols.get(v)?);
            self.scratch.push(pair);
        }
        self.ids.get(self.scratch.as_slice()).copied()
    }

    fn insert(&mut self, pairs: &[(&str, &str)], cost: usize) -> u32 {
        let mut strings = 0;
        let pairs: Pairs = pairs
            .iter()
            .map(|(n, v)| {
                let (n, a) = self.symbols.acquire(n);
                let (v, b) = self.symbols.acquire(v);
                strings += a + b;
                (n, v)
            })
            .collect();
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        for pair in pairs.iter() {
            let ids = self.postings.entry(*pair).or_default();
            if let Err(at) = ids.binary_search(&id) {
                ids.insert(at, id);
            }
        }
        self.ids.insert(pairs.clone(), id);
        self.series.insert(
            id,
            Series {
                pairs,
                chunks: VecDeque::new(),
            },
        );
        self.bytes += cost + strings;
        id
    }

    fn remove(&mut self, id: u32) {
        let Some(series) = self.series.remove(&id) else {
            return;
        };
        let mut freed = series.bytes() + SERIES_BYTES + PAIR_BYTES * series.pairs.len();
        self.ids.remove(&series.pairs);
        for pair in series.pairs.iter() {
            if let Some(ids) = self.postings.get_mut(pair) {
                if let Ok(at) = ids.binary_search(&id) {
                    ids.remove(at);
                }
                if ids.is_empty() {
                    self.postings.remove(pair);
                }
            }
            freed += self.symbols.release(pair.0) + self.symbols.release(pair.1);
        }
        self.bytes -= freed.min(self.bytes);
    }

    fn labels(&self, pairs: &[(Symbol, Symbol)]) -> Labels {
        let text = |s| self.symbols.text(s).clone();
        Labels(pairs.iter().map(|&(n, v)| (text(n), text(v))).collect())
    }

    /// The value of label `name` in `pairs`; a missing label is the empty value, as in
    /// PromQL.
    fn value<'a>(&'a self, pairs: &[(Symbol, Symbol)], name: &str) -> &'a str {
        let Some(name) = self.symbols.get(name) else {
            return "";
        };
        pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |&(_, v)| self.symbols.text(v))
    }

    fn matches(&self, m: &Matcher, pairs: &[(Symbol, Symbol)]) -> bool {
        match m {
            Matcher::Equal(n, v) => self.value(pairs, n) == v,
            Matcher::NotEqual(n, v) => self.value(pairs, n) != v,
            Matcher::Regex(n, re) => re.is_match(self.value(pairs, n)),
        }
    }

    /// The ids the equality matchers allow, from the smallest posting list; every series if
    /// there are none. The caller checks all matchers.
    fn candidates(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut lists: Vec<&Vec<u32>> = Vec::new();
        for m in matchers {
            if let Matcher::Equal(n, v) = m {
                if v.is_empty() {
                    continue;
                }
                let pair = self.symbols.get(n).zip(self.symbols.get(v));
                match pair.and_then(|p| self.postings.get(&p)) {
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
                .filter(|id| rest.iter().all(|l| l.binary_search(id).is_ok()))
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
    fn label_strings_are_held_once_and_freed_with_their_last_series() {
        let db = Db::default();
        let long = "productpage-v1.default.svc.cluster.local".repeat(4);
        let series = |pod: &str| {
            labels(&[
                ("__name__", "req"),
                ("destination_service", &long),
                ("pod", pod),
            ])
        };
        db.append([(series("a"), sample(1, 1.0))]);
        let one = db.stats().bytes;
        db.append([(series("b"), sample(1, 1.0))]);
        let two = db.stats().bytes;
        // The second adds its pairs, its chunk and the string "b", not the long value again.
        assert!(two - one < one - long.len(), "{one} then {two}");
        let found = db.select(&[Matcher::equal("pod", "b")], 0, 10);
        assert_eq!(found, vec![(series("b"), vec![sample(1, 1.0)])]);
        db.compact(10 * 3_600_000);
        assert_eq!(db.stats(), Stats::default());
        // Freed symbols are reused, and what they name is right.
        db.append([(labels(&[("__name__", "other")]), sample(1, 2.0))]);
        let other = db.select(&[Matcher::equal("__name__", "other")], 0, 10);
        assert_eq!(other[0].0.get("__name__"), Some("other"));
        assert!(db.select(&[Matcher::equal("pod", "a")], 0, 10).is_empty());
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
