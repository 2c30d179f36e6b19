//! `GET /metrics` in the Prometheus (OpenMetrics) text format, under the names vLLM uses,
//! so Grafana dashboards made for vLLM and the Kubernetes Gateway API Inference Extension's
//! endpoint picker read a pagedattn replica unchanged:
//! `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`
//! (the endpoint picker's two inputs), `vllm:prefix_cache_queries` / `_hits`,
//! `vllm:num_preemptions`, `vllm:prompt_tokens`, `vllm:generation_tokens` (counters, shown
//! with the `_total` suffix), and the histograms `vllm:time_to_first_token_seconds`,
//! `vllm:inter_token_latency_seconds`, `vllm:e2e_request_latency_seconds`. What only a paged
//! cache has goes under `pagedattn:` names (block counts, utilization, fragmentation).
//!
//! Engine figures are read from the snapshot the engine thread publishes after each step,
//! so a scrape costs no engine time; latency histograms are fed by the request handlers.

use pagedattn_engine::core::{EngineHandle, EngineStats};
use pagedattn_engine::SeqMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set: the served model's name, as vLLM labels its metrics.
type Labels = Vec<(String, String)>;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    labels: Labels,
    ttft: Family<Labels, Histogram>,
    itl: Family<Labels, Histogram>,
    e2e: Family<Labels, Histogram>,
    finished: Family<Vec<(String, String)>, Counter>,
    rejected: Family<Vec<(String, String)>, Counter>,
}

/// Latency buckets in seconds, from vLLM's.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

impl Metrics {
    /// Metrics for `model`, reading engine figures through `engine`.
    pub fn new(model: &str, engine: EngineHandle) -> Self {
        let mut registry = Registry::default();
        let labels: Labels = vec![("model_name".to_string(), model.to_string())];
        let ttft = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(TTFT_BUCKETS.iter().copied())) as fn() -> Histogram,
        );
        let itl = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(ITL_BUCKETS.iter().copied())) as fn() -> Histogram,
        );
        let e2e = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(E2E_BUCKETS.iter().copied())) as fn() -> Histogram,
        );
        registry.register(
            "vllm:time_to_first_token_seconds",
            "Time from arrival to the first token",
            ttft.clone(),
        );
        registry.register(
            "vllm:inter_token_latency_seconds",
            "Time between consecutive tokens of a sequence",
            itl.clone(),
        );
        registry.register(
            "vllm:e2e_request_latency_seconds",
            "Time from arrival to the last token",
            e2e.clone(),
        );
        let finished = Family::default();
        registry.register(
            "vllm:request_success",
            "Sequences finished, by reason",
            finished.clone(),
        );
        let rejected = Family::default();
        registry.register(
            "pagedattn:requests_rejected",
            "Requests refused before queueing, by HTTP status",
            rejected.clone(),
        );
        registry.register_collector(Box::new(EngineCollector {
            engine,
            labels: labels.clone(),
        }));
        Self {
            registry,
            labels,
            ttft,
            itl,
            e2e,
            finished,
            rejected,
        }
    }

    /// Records a finished sequence's latencies.
    pub fn observe(&self, m: &SeqMetrics) {
        if let Some(t) = m.ttft() {
            self.ttft.get_or_create(&self.labels).observe(t);
        }
        let itl = self.itl.get_or_create(&self.labels);
        for gap in m.itl() {
            itl.observe(gap);
        }
        if let Some(t) = m.e2e() {
            self.e2e.get_or_create(&self.labels).observe(t);
        }
        let reason = m
            .finish_reason
            .map_or("unknown", pagedattn_engine::FinishReason::as_str);
        let mut l = self.labels.clone();
        l.push(("finished_reason".into(), reason.into()));
        self.finished.get_or_create(&l).inc();
    }

    /// Counts a request refused with HTTP `status`.
    pub fn reject(&self, status: u16) {
        let mut l = self.labels.clone();
        l.push(("status".into(), status.to_string()));
        self.rejected.get_or_create(&l).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Engine figures, read from the published snapshot at scrape time.
#[derive(Debug)]
struct EngineCollector {
    engine: EngineHandle,
    labels: Labels,
}

impl EngineCollector {
    fn gauge(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        v: f64,
    ) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(v);
        let mut m = enc.encode_descriptor(name, help, None, g.metric_type())?;
        g.encode(m.encode_family(&self.labels)?)
    }

    fn counter(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        v: u64,
    ) -> Result<(), std::fmt::Error> {
        let c = ConstCounter::new(v);
        let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
        c.encode(m.encode_family(&self.labels)?)
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s: EngineStats = self.engine.stats();
        let e = &mut enc;
        let cap = s.kv.capacity_slots.max(1) as f64;
        self.gauge(
            e,
            "vllm:num_requests_running",
            "Sequences running",
            s.running as f64,
        )?;
        self.gauge(
            e,
            "vllm:num_requests_waiting",
            "Sequences waiting for admission",
            s.waiting as f64,
        )?;
        self.gauge(
            e,
            "vllm:kv_cache_usage_perc",
            "KV cache usage, 1 = full",
            s.kv.held_fraction(),
        )?;
        let (queries, hits) = s
            .blocks
            .as_ref()
            .map_or((0, 0), |b| (b.prefix_queries, b.prefix_hits));
        self.counter(
            e,
            "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache",
            queries,
        )?;
        self.counter(
            e,
            "vllm:prefix_cache_hits",
            "Prompt tokens found in the prefix cache",
            hits,
        )?;
        self.counter(
            e,
            "vllm:num_preemptions",
            "Preemptions",
            s.totals.preemptions,
        )?;
        self.counter(
            e,
            "vllm:prompt_tokens",
            "Prompt tokens received",
            s.totals.prompt_tokens,
        )?;
        self.counter(
            e,
            "vllm:generation_tokens",
            "Tokens generated",
            s.totals.output_tokens,
        )?;
        self.gauge(
            e,
            "pagedattn:kv_block_utilization",
            "Tokens stored / slots of the blocks in use",
            s.kv.utilization(),
        )?;
        self.gauge(
            e,
            "pagedattn:kv_internal_fragmentation_perc",
            "Held but empty KV slots / all slots",
            s.kv.internal_fragmentation_slots as f64 / cap,
        )?;
        if let Some(b) = &s.blocks {
            self.gauge(
                e,
                "pagedattn:kv_blocks_total",
                "Blocks in the pool",
                b.total_blocks as f64,
            )?;
            self.gauge(
                e,
                "pagedattn:kv_blocks_used",
                "Blocks held by sequences",
                b.used_blocks as f64,
            )?;
            self.gauge(
                e,
                "pagedattn:kv_blocks_cached_free",
                "Free blocks still holding a prefix-cache entry",
                b.cached_free_blocks as f64,
            )?;
            self.counter(
                e,
                "pagedattn:kv_cow_copies",
                "Copy-on-write block copies",
                b.cow_copies,
            )?;
        }
        self.counter(
            e,
            "pagedattn:engine_steps",
            "Engine steps run",
            s.totals.steps,
        )?;
        Ok(())
    }
}
