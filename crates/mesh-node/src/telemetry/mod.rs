//! Distributed tracing of federated rounds, exported over OTLP/HTTP
//! (protobuf) when, and only when, the operator names a collector.
//!
//! ```text
//!   [telemetry] otlp_endpoint = ""  ──► init: nothing built, no thread; the
//!                                       global tracer stays a no-op, so round
//!                                       spans cost a few branches
//!   otlp_endpoint = "http://c:4318" ──► SDK provider, sampler TraceIdRatioBased
//!       round spans (round_spans.rs) ──► BatchSpanProcessor (bounded queue, own
//!       thread; a full queue drops, warns once) ──► QuietExporter ──► POST
//!       c:4318/v1/traces (blocking reqwest, 5 s timeout)
//!   shutdown (SIGTERM) ──► Telemetry::shutdown: export what is queued, bounded
//! ```
//!
//! A round is one trace on every node without any message announcing it: its
//! trace id and the span id of its `round` span are derived from the mesh,
//! job and round number ([`round_ids`]), because a round starts with a
//! committed command that every node reads from its own copy of the state,
//! not with a message from the leader. What nodes send each other during the
//! round carries the sending span's W3C context
//! ([`mesh_round::protocol::messages::TraceContext`]), and the receiver
//! continues from it.

mod round_spans;

pub use round_spans::{RoundSpans, OPEN_SPANS_MAX};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mesh_consensus::command::JobId;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;

/// How long one export may take before it counts as failed.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the queued spans to be exported.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(8);
/// The instrumentation scope of round spans.
pub const TRACER_NAME: &str = "agent-mesh.rounds";
/// The name the SDK gives its export thread (Linux shows the first 15 bytes).
pub const EXPORT_THREAD_NAME: &str = "OpenTelemetry.Traces.BatchProcessor";

/// Why tracing could not start. The node refuses to start rather than run
/// without the traces its operator asked for.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built for the configured endpoint.
    #[error("telemetry: building the OTLP/HTTP exporter for {url}: {source}")]
    Exporter {
        /// Where spans were to go.
        url: String,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The node's tracing: holds the exporter, if any, until [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    url: Option<String>,
}

impl Telemetry {
    /// Starts exporting round spans as `config` says, for the node whose
    /// peer id is `instance_id` (the `service.instance.id` of its spans).
    /// With no endpoint it builds nothing and starts no thread.
    pub fn init(config: &TelemetryConfig, instance_id: &str) -> Result<Self, TelemetryError> {
        let Some(url) = config.traces_url() else {
            return Ok(Self {
                provider: None,
                url: None,
            });
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|source| TelemetryError::Exporter {
                url: url.clone(),
                source,
            })?;
        // The batch settings come from OTEL_BSP_* where set (queue 2,048
        // spans, a batch every 5 s otherwise).
        let processor = BatchSpanProcessor::builder(QuietExporter::new(exporter, url.clone()))
            .with_batch_config(BatchConfigBuilder::default().build())
            .build();
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes([
                KeyValue::new("service.instance.id", instance_id.to_owned()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::TraceIdRatioBased(config.sample_ratio))
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        round_spans::set_enabled(true);
        tracing::info!(%url, sample_ratio = config.sample_ratio, "tracing rounds over OTLP/HTTP");
        Ok(Self {
            provider: Some(provider),
            url: Some(url),
        })
    }

    /// True when spans are exported (an endpoint is configured).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is queued (waiting at most [`SHUTDOWN_TIMEOUT`]) and
    /// stops the export thread. Call it outside the async runtime.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let url = self.url.take().unwrap_or_default();
        round_spans::set_enabled(false);
        match provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            Ok(()) => tracing::info!(%url, "trace export flushed"),
            Err(err) => tracing::warn!(%url, %err, "trace export not flushed; queued spans lost"),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The trace id of round `round` of `job` in mesh `mesh`, and the span id of
/// that round's `round` span: the same on every node, so each continues the
/// round's trace from the committed state alone. Attempts of a round share
/// them (an aborted attempt is an event of the same trace).
pub fn round_ids(mesh: &str, job: &JobId, round: u32) -> (TraceId, SpanId) {
    let mut hasher = blake3::Hasher::new_derive_key("agent-mesh 2026 round trace ids v1");
    for part in [mesh.as_bytes(), job.0.as_bytes()] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(&round.to_le_bytes());
    let digest = hasher.finalize();
    let bytes = digest.as_bytes();
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    trace.copy_from_slice(&bytes[..16]);
    span.copy_from_slice(&bytes[16..24]);
    // All zeros is W3C's invalid id; a digest lands there with odds 2^-64.
    trace[15] |= u8::from(trace == [0; 16]);
    span[7] |= u8::from(span == [0; 8]);
    (TraceId::from_bytes(trace), SpanId::from_bytes(span))
}

/// The `round` span of round `round` of `job` as a remote parent: what every
/// node's spans of that round hang from.
pub fn round_root(mesh: &str, job: &JobId, round: u32) -> SpanContext {
    let (trace, span) = round_ids(mesh, job, round);
    SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

/// The exporter the batch processor calls: the OTLP exporter, with failures
/// logged once per outage (and the recovery with the count lost) instead of
/// once per batch. The spans of a failed batch are dropped; nothing retries,
/// so a collector that is down costs memory bounded by the processor's queue.
#[derive(Debug)]
struct QuietExporter<E> {
    inner: E,
    url: String,
    failing: AtomicBool,
    spans_lost: AtomicU64,
}

impl<E> QuietExporter<E> {
    fn new(inner: E, url: String) -> Self {
        Self {
            inner,
            url,
            failing: AtomicBool::new(false),
            spans_lost: AtomicU64::new(0),
        }
    }

    /// Counts the outcome of one export; true when it is worth a log line.
    fn record(&self, ok: bool, spans: usize) -> bool {
        if ok {
            return self.failing.swap(false, Ordering::Relaxed);
        }
        self.spans_lost.fetch_add(spans as u64, Ordering::Relaxed);
        !self.failing.swap(true, Ordering::Relaxed)
    }
}

impl<E: SpanExporter> SpanExporter for QuietExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        let news = self.record(result.is_ok(), spans);
        match result {
            Ok(()) if news => tracing::info!(
                url = %self.url,
                spans_lost_total = self.spans_lost.load(Ordering::Relaxed),
                "trace export works again"
            ),
            Err(err) if news => tracing::warn!(
                url = %self.url,
                %err,
                "trace export failed; spans are dropped until the collector answers \
                 (logged once per outage)"
            ),
            _ => {}
        }
        // The failure is reported above; the processor would log every batch.
        Ok(())
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        let lost = self.spans_lost.load(Ordering::Relaxed);
        if lost > 0 {
            tracing::warn!(url = %self.url, spans_lost_total = lost, "spans the collector never got");
        }
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Threads of this process whose name starts like the SDK's export thread.
    fn export_threads() -> usize {
        let prefix = &EXPORT_THREAD_NAME[..15];
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim_end().starts_with(prefix))
            .count()
    }

    /// One test, so no other test of this binary starts or stops the
    /// export thread while it counts threads.
    /// Waits (bounded) until [`export_threads`] is `want`: a new thread
    /// names itself once it runs, a moment after it was spawned.
    fn export_threads_become(want: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = export_threads();
            if now == want || std::time::Instant::now() >= deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn an_export_thread_runs_only_with_an_endpoint_and_stops_at_shutdown() {
        let before = export_threads();
        let telemetry = Telemetry::init(&TelemetryConfig::default(), "node-a").unwrap();
        assert!(!telemetry.is_exporting());
        assert_eq!(export_threads(), before, "no endpoint: no thread");
        // Without an exporter round spans are not even built, and no message
        // is stamped with a context.
        let mut spans = RoundSpans::new("mesh");
        let key = mesh_round::protocol::RoundKey {
            job: JobId("j".into()),
            round: 0,
            attempt: 0,
        };
        spans.train_started(&key);
        assert_eq!(spans.open_count(), 0);
        assert_eq!(spans.context_for_train(&key), None);
        telemetry.shutdown();

        // Port 9 (discard) on loopback: nothing listens, exports fail fast.
        let config = TelemetryConfig {
            otlp_endpoint: "http://127.0.0.1:9".into(),
            ..TelemetryConfig::default()
        };
        let telemetry = Telemetry::init(&config, "node-a").unwrap();
        assert!(telemetry.is_exporting());
        assert_eq!(export_threads_become(before + 1), before + 1);
        let mut spans = RoundSpans::new("mesh");
        spans.train_started(&key);
        assert_eq!(spans.open_count(), 1);
        let context = spans.context_for_train(&key).expect("a recorded span");
        let (trace, _) = round_ids("mesh", &key.job, 0);
        assert_eq!(context.trace_id, trace.to_bytes(), "the round's trace");
        spans.train_done(&key, None);
        let started = std::time::Instant::now();
        telemetry.shutdown();
        assert!(started.elapsed() < SHUTDOWN_TIMEOUT + Duration::from_secs(5));
        assert_eq!(export_threads(), before, "shutdown stops the thread");

        // A collector that takes connections and never answers: each export
        // hangs until its timeout, yet ending spans never waits, far past the
        // queue's bound (the surplus is dropped), and shutdown returns.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = TelemetryConfig {
            otlp_endpoint: format!("http://{}", silent.local_addr().unwrap()),
            ..TelemetryConfig::default()
        };
        let telemetry = Telemetry::init(&config, "node-a").unwrap();
        let mut spans = RoundSpans::new("mesh");
        for round in 0..5_000 {
            let key = mesh_round::protocol::RoundKey {
                round,
                ..key.clone()
            };
            spans.train_started(&key);
            spans.train_done(&key, None);
        }
        assert_eq!(spans.open_count(), 0);
        telemetry.shutdown();
    }

    #[test]
    fn every_node_derives_the_same_round_ids_and_rounds_differ() {
        let job = JobId("job-7".into());
        let (trace, span) = round_ids("mesh-a", &job, 3);
        assert_eq!(round_ids("mesh-a", &job, 3), (trace, span));
        assert_ne!(round_ids("mesh-a", &job, 4).0, trace);
        assert_ne!(round_ids("mesh-b", &job, 3).0, trace);
        assert_ne!(round_ids("mesh-a", &JobId("job-70".into()), 3).0, trace);
        assert!(round_root("mesh-a", &job, 3).is_valid());
    }

    #[test]
    fn an_outage_is_worth_one_line_and_so_is_the_recovery() {
        let quiet = QuietExporter::new((), "http://x".into());
        assert!(quiet.record(false, 10), "first failure is news");
        assert!(!quiet.record(false, 5), "the rest of the outage is not");
        assert!(quiet.record(true, 3), "recovery is news");
        assert!(!quiet.record(true, 3));
        assert_eq!(quiet.spans_lost.load(Ordering::Relaxed), 15);
    }
}
