//! The few PromQL shapes the dashboard asks, as typed queries: evaluated on the built-in store
//! with Prometheus's own arithmetic (`rate`'s extrapolation, `histogram_quantile`'s
//! interpolation), or written out as PromQL for a real Prometheus.

use crate::tsdb::chunk::Sample;
use crate::tsdb::{Db, Labels, Matcher};
use std::collections::BTreeMap;

/// A label set in a query's answer: only the `by` labels.
pub type Group = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub enum Query {
    /// `sum by (by) (rate(metric{matchers}[window]))`
    RateSum {
        metric: &'static str,
        matchers: Vec<Matcher>,
        by: &'static [&'static str],
        window_s: u64,
    },
    /// `histogram_quantile(q, sum by (le, by) (rate(metric_bucket{matchers}[window])))`
    Quantile {
        q: f64,
        /// The histogram's name, without `_bucket`.
        metric: &'static str,
        matchers: Vec<Matcher>,
        by: &'static [&'static str],
        window_s: u64,
    },
}

impl Query {
    pub fn promql(&self) -> String {
        let selector = |metric: &str, matchers: &[Matcher], window: u64| {
            let m: Vec<String> = matchers.iter().map(Matcher::promql).collect();
            format!("{metric}{{{}}}[{window}s]", m.join(","))
        };
        match self {
            Query::RateSum {
                metric,
                matchers,
                by,
                window_s,
            } => format!(
                "sum by ({}) (rate({}))",
                by.join(","),
                selector(metric, matchers, *window_s)
            ),
            Query::Quantile {
                q,
                metric,
                matchers,
                by,
                window_s,
            } => {
                let mut labels = vec!["le"];
                labels.extend(by.iter());
                format!(
                    "histogram_quantile({q}, sum by ({}) (rate({})))",
                    labels.join(","),
                    selector(&format!("{metric}_bucket"), matchers, *window_s)
                )
            }
        }
    }

    fn parts(&self) -> (String, &[Matcher], u64) {
        match self {
            Query::RateSum {
                metric,
                matchers,
                window_s,
                ..
            } => (metric.to_string(), matchers, *window_s),
            Query::Quantile {
                metric,
                matchers,
                window_s,
                ..
            } => (format!("{metric}_bucket"), matchers, *window_s),
        }
    }

    /// The value of each group at `at` (ms).
    pub fn instant(&self, db: &Db, at: i64) -> Vec<(Group, f64)> {
        self.range(db, at, at, 1)
            .into_iter()
            .filter_map(|(g, v)| v.first().copied().flatten().map(|v| (g, v)))
            .collect()
    }

    /// Each group's values at `start`, `start + step`, … `end` (ms); `None` where a step had
    /// no data.
    pub fn range(
        &self,
        db: &Db,
        start: i64,
        end: i64,
        step: i64,
    ) -> Vec<(Group, Vec<Option<f64>>)> {
        let (metric, matchers, window_s) = self.parts();
        let window = window_s as i64 * 1000;
        let mut all = vec![Matcher::equal("__name__", &metric)];
        all.extend(matchers.iter().cloned());
        let series = db.select(&all, start - window, end);
        let steps: Vec<i64> = (0..)
            .map(|i| start + i * step.max(1))
            .take_while(|t| *t <= end)
            .collect();
        let mut out: BTreeMap<Group, Vec<Option<f64>>> = BTreeMap::new();
        match self {
            Query::RateSum { by, .. } => {
                for (labels, samples) in &series {
                    let values = out
                        .entry(group(labels, by))
                        .or_insert_with(|| vec![None; steps.len()]);
                    for (i, t) in steps.iter().enumerate() {
                        if let Some(r) = rate(samples, *t, window) {
                            *values[i].get_or_insert(0.0) += r;
                        }
                    }
                }
            }
            Query::Quantile { q, by, .. } => {
                // Per group and step: the summed rate of each bucket bound.
                let mut buckets: BTreeMap<Group, Vec<Vec<(f64, f64)>>> = BTreeMap::new();
                for (labels, samples) in &series {
                    let Some(le) = labels.get("le").and_then(parse_le) else {
                        continue;
                    };
                    let per_step = buckets
                        .entry(group(labels, by))
                        .or_insert_with(|| vec![Vec::new(); steps.len()]);
                    for (i, t) in steps.iter().enumerate() {
                        if let Some(r) = rate(samples, *t, window) {
                            match per_step[i].iter_mut().find(|(b, _)| *b == le) {
                                Some((_, sum)) => *sum += r,
                                None => per_step[i].push((le, r)),
                            }
                        }
                    }
                }
                for (g, per_step) in buckets {
                    let values = per_step
                        .into_iter()
                        .map(|mut b| bucket_quantile(*q, &mut b))
                        .collect();
                    out.insert(g, values);
                }
            }
        }
        out.into_iter().collect()
    }
}

fn group(labels: &Labels, by: &[&str]) -> Group {
    by.iter()
        .map(|n| (n.to_string(), labels.get(n).unwrap_or_default().to_string()))
        .collect()
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => le.parse().ok(),
    }
}

/// Prometheus's `rate`: the increase over `(at - window, at]`, counter resets corrected,
/// extrapolated towards the window's edges (by at most half an interval where the series
/// does not reach them, never below zero), per second.
pub fn rate(samples: &[Sample], at: i64, window: i64) -> Option<f64> {
    let from = at - window;
    let lo = samples.partition_point(|s| s.t <= from);
    let hi = samples.partition_point(|s| s.t <= at);
    let points = samples.get(lo..hi)?;
    let (first, last) = (points.first()?, points.last()?);
    if points.len() < 2 {
        return None;
    }
    let mut increase = last.v - first.v;
    for pair in points.windows(2) {
        if pair[1].v < pair[0].v {
            increase += pair[0].v;
        }
    }
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let average = sampled / (points.len() - 1) as f64;
    let mut to_start = (first.t - from) as f64 / 1000.0;
    let to_end = (at - last.t) as f64 / 1000.0;
    if increase > 0.0 && first.v >= 0.0 {
        to_start = to_start.min(sampled * (first.v / increase));
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    Some(increase * (interval / sampled) / (window as f64 / 1000.0))
}

/// Prometheus's `histogram_quantile` over (upper bound, rate) pairs: linear interpolation
/// within the bucket that holds the rank; the highest finite bound if the rank falls in
/// `+Inf`; none without a `+Inf` bucket or observations.
pub fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> Option<f64> {
    if q.is_nan() || buckets.is_empty() {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last()?.0 != f64::INFINITY || buckets.len() < 2 {
        return None;
    }
    // Rates of cumulative buckets can be slightly non-monotonic (scrapes between
    // increments); Prometheus evens them out the same way.
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let rank = q * total;
    let b = buckets.partition_point(|(_, count)| *count < rank);
    if b == buckets.len() - 1 {
        return Some(buckets[buckets.len() - 2].0);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return Some(buckets[0].0);
    }
    let (start, below) = if b == 0 {
        (0.0, 0.0)
    } else {
        (buckets[b - 1].0, buckets[b - 1].1)
    };
    let (end, count) = buckets[b];
    Some(start + (end - start) * (rank - below) / (count - below))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn series(values: &[(i64, f64)]) -> Vec<Sample> {
        values.iter().map(|&(t, v)| Sample { t, v }).collect()
    }

    #[test]
    fn rate_extrapolates_as_prometheus_does() {
        // A counter rising 15 a scrape every 15 s: 1/s, whatever the window's alignment.
        let s = series(
            &(0..20)
                .map(|i| (i * 15_000, i as f64 * 15.0))
                .collect::<Vec<_>>(),
        );
        for at in [150_000, 157_000, 164_999] {
            let r = rate(&s, at, 60_000).unwrap();
            assert!((r - 1.0).abs() < 1e-9, "{r} at {at}");
        }
        // One sample in the window: no rate.
        assert_eq!(rate(&s, 10_000, 10_000), None);
    }

    #[test]
    fn rate_corrects_counter_resets() {
        // 0, 30, 60 then a restart: 10, 40. Increase 60 + 40 = 100 over 60 s sampled; a
        // counter that starts at 0 is not extrapolated back past its start.
        let s = series(&[
            (0, 0.0),
            (15_000, 30.0),
            (30_000, 60.0),
            (45_000, 10.0),
            (60_000, 40.0),
        ]);
        let r = rate(&s, 60_000, 75_000).unwrap();
        assert!((r - 100.0 / 75.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let mut b = vec![
            (10.0, 50.0),
            (25.0, 90.0),
            (f64::INFINITY, 100.0),
            (5.0, 10.0),
        ];
        // p50: rank 50, in (5, 10]: 5 + 5 * (50 - 10) / (50 - 10) = 10.
        assert_eq!(bucket_quantile(0.5, &mut b), Some(10.0));
        // p95: rank 95, in +Inf: the highest finite bound.
        assert_eq!(bucket_quantile(0.95, &mut b), Some(25.0));
        // p30: rank 30 in (5, 10]: 5 + 5 * 20 / 40 = 7.5.
        assert_eq!(bucket_quantile(0.3, &mut b), Some(7.5));
        assert_eq!(
            bucket_quantile(0.5, &mut [(10.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(bucket_quantile(0.5, &mut [(10.0, 4.0)]), None);
    }

    #[test]
    fn queries_sum_by_their_labels_and_read_as_promql() {
        let db = Db::default();
        let l = |pod: &str, code: &str| {
            Labels::new(
                [
                    ("__name__", "istio_requests_total"),
                    ("pod", pod),
                    ("response_code", code),
                ]
                .iter()
                .map(|(n, v)| (Arc::from(*n), Arc::from(*v)))
                .collect(),
            )
        };
        for i in 0..10 {
            let t = i * 15_000;
            db.append([
                (
                    l("a", "200"),
                    Sample {
                        t,
                        v: i as f64 * 15.0,
                    },
                ),
                (
                    l("b", "200"),
                    Sample {
                        t,
                        v: i as f64 * 30.0,
                    },
                ),
                (
                    l("b", "503"),
                    Sample {
                        t,
                        v: i as f64 * 1.5,
                    },
                ),
            ]);
        }
        let q = Query::RateSum {
            metric: "istio_requests_total",
            matchers: vec![Matcher::regex("response_code", "2..").unwrap()],
            by: &["response_code"],
            window_s: 60,
        };
        assert_eq!(
            q.promql(),
            "sum by (response_code) (rate(istio_requests_total{response_code=~\"2..\"}[60s]))"
        );
        let got = q.instant(&db, 135_000);
        assert_eq!(got.len(), 1);
        assert!((got[0].1 - 3.0).abs() < 1e-9, "{got:?}");
        let range = q.range(&db, 0, 135_000, 15_000);
        assert_eq!(range[0].1.len(), 10);
        assert_eq!(range[0].1[0], None);
        assert!(range[0].1[9].is_some());
    }
}
