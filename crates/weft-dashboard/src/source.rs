//! Where the dashboard's numbers come from: the built-in store, or a real Prometheus
//! (`--prometheus URL`) asked the same queries as PromQL over its HTTP API.

use crate::http_client::{self, GetError};
use crate::query::{Group, Query};
use crate::tsdb::Db;
use serde::Deserialize;
use std::sync::Arc;

/// Where the trace pages' spans come from.
#[derive(Debug, Clone, Default)]
pub enum TracingSource {
    /// The control plane's own collector.
    #[default]
    Builtin,
    /// A Zipkin (or anything serving Zipkin's v2 query API), passed through.
    Zipkin(http::Uri),
    /// A Jaeger's query API, translated into Zipkin's.
    Jaeger(http::Uri),
}

impl TracingSource {
    /// What the status endpoint names: `builtin` or the URL.
    pub fn name(&self) -> String {
        match self {
            TracingSource::Builtin => "builtin".into(),
            TracingSource::Zipkin(url) | TracingSource::Jaeger(url) => url.to_string(),
        }
    }

    pub fn provider(&self) -> &'static str {
        match self {
            TracingSource::Builtin => "builtin",
            TracingSource::Zipkin(_) => "zipkin",
            TracingSource::Jaeger(_) => "jaeger",
        }
    }
}

pub enum MetricsSource {
    Builtin(Arc<Db>),
    Prometheus(http::Uri),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("asking Prometheus at {url}: {source}")]
    Prometheus { url: String, source: GetError },
    #[error("Prometheus at {url} answered what is not a query result: {detail}")]
    Answer { url: String, detail: String },
}

impl MetricsSource {
    /// What the status endpoint names: `builtin` or the Prometheus URL.
    pub fn name(&self) -> String {
        match self {
            MetricsSource::Builtin(_) => "builtin".into(),
            MetricsSource::Prometheus(url) => url.to_string(),
        }
    }

    pub async fn instant(&self, q: &Query, at: i64) -> Result<Vec<(Group, f64)>, SourceError> {
        match self {
            MetricsSource::Builtin(db) => Ok(q.instant(db, at)),
            MetricsSource::Prometheus(base) => {
                let path = format!(
                    "/api/v1/query?query={}&time={}",
                    encode(&q.promql()),
                    at as f64 / 1000.0
                );
                let answer: Answer = ask(base, &path).await?;
                Ok(answer
                    .data
                    .result
                    .into_iter()
                    .filter_map(|r| {
                        let v = r.value?.1.parse::<f64>().ok()?;
                        (!v.is_nan()).then_some((r.metric, v))
                    })
                    .collect())
            }
        }
    }

    /// Values at `start`, `start + step` … `end` (all ms).
    pub async fn range(
        &self,
        q: &Query,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<(Group, Vec<Option<f64>>)>, SourceError> {
        match self {
            MetricsSource::Builtin(db) => Ok(q.range(db, start, end, step)),
            MetricsSource::Prometheus(base) => {
                let path = format!(
                    "/api/v1/query_range?query={}&start={}&end={}&step={}",
                    encode(&q.promql()),
                    start as f64 / 1000.0,
                    end as f64 / 1000.0,
                    step as f64 / 1000.0
                );
                let answer: Answer = ask(base, &path).await?;
                let steps = ((end - start) / step.max(1) + 1).max(0) as usize;
                Ok(answer
                    .data
                    .result
                    .into_iter()
                    .map(|r| {
                        let mut values = vec![None; steps];
                        for (t, v) in r.values {
                            let i = ((t * 1000.0) as i64 - start) / step.max(1);
                            if let (Ok(i), Ok(v)) = (usize::try_from(i), v.parse::<f64>()) {
                                if i < steps && !v.is_nan() {
                                    values[i] = Some(v);
                                }
                            }
                        }
                        (r.metric, values)
                    })
                    .collect())
            }
        }
    }
}

/// RFC 3986's unreserved characters stay as they are.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded for a path segment or a query value.
pub(crate) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

#[derive(Deserialize)]
struct Answer {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: Group,
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

async fn ask(base: &http::Uri, path: &str) -> Result<Answer, SourceError> {
    let url = base.to_string();
    let body = http_client::get(base, path)
        .await
        .map_err(|source| SourceError::Prometheus {
            url: url.clone(),
            source,
        })?;
    serde_json::from_slice(&body).map_err(|e| SourceError::Answer {
        url,
        detail: e.to_string(),
    })
}
