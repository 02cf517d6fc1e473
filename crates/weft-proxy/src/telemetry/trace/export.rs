//! Sending finished spans to the collector: a bounded queue the request path never waits
//! on (a full queue drops the span and counts it), drained by one task that batches spans
//! per collector and posts each batch, Zipkin v2 JSON or OTLP/HTTP protobuf.

use super::otlp;
use super::span::{zipkin_json, Span};
use crate::http::oneshot;
use crate::telemetry::policy::{Collector, CollectorProtocol};
use bytes::Bytes;
use http_body_util::Full;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Spans waiting to be sent; beyond this a span is dropped rather than kept in memory.
pub const QUEUE: usize = 4096;
/// Spans per request to the collector.
const BATCH: usize = 512;
/// How long a span may wait for its batch (Envoy flushes every 5 s; a shorter wait shows
/// a request in the trace UI while its user is still looking).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters in Envoy's names: `tracing.zipkin.*`, `tracing.opentelemetry.*`.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub spans_sent: AtomicU64,
    pub reports_sent: AtomicU64,
    pub reports_failed: AtomicU64,
    /// Spans dropped because the queue was full (a slow or absent collector).
    pub spans_dropped: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub zipkin: ExportStats,
    pub opentelemetry: ExportStats,
}

impl Stats {
    fn of(&self, protocol: CollectorProtocol) -> &ExportStats {
        match protocol {
            CollectorProtocol::Zipkin => &self.zipkin,
            CollectorProtocol::OtlpHttp => &self.opentelemetry,
        }
    }

    /// Prometheus text, as Envoy's stats render on `/stats/prometheus`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        for (provider, stats) in [
            ("zipkin", &self.zipkin),
            ("opentelemetry", &self.opentelemetry),
        ] {
            for (name, value) in [
                ("spans_sent", &stats.spans_sent),
                ("reports_sent", &stats.reports_sent),
                ("reports_failed", &stats.reports_failed),
                ("spans_dropped", &stats.spans_dropped),
            ] {
                let _ = write!(
                    out,
                    "# TYPE envoy_tracing_{provider}_{name} counter\nenvoy_tracing_{provider}_{name} {}\n",
                    value.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// The request path's handle on the exporter.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::Sender<(Arc<Collector>, Span)>,
    stats: Arc<Stats>,
}

impl Reporter {
    /// A reporter and the task that sends what it is given; the task ends when every
    /// reporter is dropped.
    pub fn new(stats: Arc<Stats>) -> (Reporter, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = run(rx, stats.clone());
        (Reporter { tx, stats }, task)
    }

    pub fn report(&self, collector: &Arc<Collector>, span: Span) {
        if self.tx.try_send((collector.clone(), span)).is_err() {
            self.stats
                .of(collector.protocol)
                .spans_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(mut rx: mpsc::Receiver<(Arc<Collector>, Span)>, stats: Arc<Stats>) {
    let mut batches: HashMap<Arc<Collector>, Vec<Span>> = HashMap::new();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            next = rx.recv() => {
                let Some((collector, span)) = next else { break };
                let batch = batches.entry(collector.clone()).or_default();
                batch.push(span);
                if batch.len() >= BATCH {
                    let spans = std::mem::take(batch);
                    send(&collector, spans, &stats).await;
                }
            }
            _ = tick.tick() => {
                for (collector, spans) in batches.iter_mut().filter(|(_, s)| !s.is_empty()) {
                    let spans = std::mem::take(spans);
                    send(collector, spans, &stats).await;
                }
                batches.retain(|_, s| !s.is_empty());
            }
        }
    }
    for (collector, spans) in batches {
        if !spans.is_empty() {
            send(&collector, spans, &stats).await;
        }
    }
}

async fn send(collector: &Collector, spans: Vec<Span>, stats: &Stats) {
    let stats = stats.of(collector.protocol);
    let (body, content_type) = match collector.protocol {
        CollectorProtocol::Zipkin => (zipkin_json(&spans), "application/json"),
        CollectorProtocol::OtlpHttp => (otlp::encode(&spans), "application/x-protobuf"),
    };
    let request = http::Request::post(&collector.path)
        .header(
            http::header::HOST,
            format!("{}:{}", collector.host, collector.port),
        )
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)));
    let sent = match request {
        Ok(request) => {
            oneshot::send(
                &collector.host,
                collector.port,
                None,
                request,
                64 << 10,
                SEND_TIMEOUT,
            )
            .await
        }
        Err(e) => Err(e.to_string()),
    };
    match sent {
        Ok(response) if response.status().is_success() => {
            stats.reports_sent.fetch_add(1, Ordering::Relaxed);
            stats
                .spans_sent
                .fetch_add(spans.len() as u64, Ordering::Relaxed);
        }
        other => {
            stats.reports_failed.fetch_add(1, Ordering::Relaxed);
            let why = match other {
                Ok(response) => format!("the collector answered {}", response.status()),
                Err(e) => e,
            };
            tracing::debug!(provider = %collector.provider, host = %collector.host, "spans not sent: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::span::SpanKind;

    #[test]
    fn a_full_queue_drops_spans_and_counts_them() {
        let stats = Arc::new(Stats::default());
        // The sending task never runs: the collector is as slow as can be.
        let (reporter, _task) = Reporter::new(stats.clone());
        let collector = Arc::new(Collector {
            protocol: CollectorProtocol::Zipkin,
            host: "127.0.0.1".into(),
            port: 9411,
            path: "/api/v2/spans".into(),
            provider: "zipkin".into(),
        });
        let span = Span {
            trace_id: 1,
            id: 1,
            parent: None,
            kind: SpanKind::Client,
            name: "n".into(),
            timestamp_us: 0,
            duration_us: 0,
            service: "s".into(),
            local_ip: None,
            remote: None,
            tags: Default::default(),
            annotations: Vec::new(),
            debug: false,
        };
        for _ in 0..QUEUE + 5 {
            reporter.report(&collector, span.clone());
        }
        assert_eq!(stats.zipkin.spans_dropped.load(Ordering::Relaxed), 5);
        let mut text = String::new();
        stats.render(&mut text);
        assert!(
            text.contains("envoy_tracing_zipkin_spans_dropped 5\n"),
            "{text}"
        );
    }
}
