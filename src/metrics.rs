//! Prometheus metrics: every stage records what it did into one process-wide set; `GET /metrics` gives them in
//! OpenMetrics text (via `prometheus-client`, names and units by its conventions) to a scraper that accepts it, and
//! in the classic Prometheus text format (0.0.4) otherwise.
//!
//! | metric | labels |
//! |---|---|
//! | `luka_http_requests_total` | `kind` (rest, function, health, metrics, other), `function`, `class` (2xx...) |
//! | `luka_http_request_duration_seconds` | `kind` |
//! | `luka_http_in_flight_requests` | |
//! | `luka_http_refused_total` | `reason` (address_share, bad_head, head_too_large) |
//! | `luka_records_total`, `luka_record_bytes_total` | `cluster`, `topic`, `result` (ok or the error kind) |
//! | `luka_produce_requests_total` | `cluster`, `topic`, `result` (one per batch sent, resends of it included) |
//! | `luka_produce_batch_records` | (records per batch counted above) |
//! | `luka_lua_limit_hits_total` | `kind` (cpu, memory, timeout) |
//! | `luka_lua_vm_memory_bytes` | `vm` |
//! | `luka_kafka_cluster_reachable` | `cluster` (1 reachable, 0 down) |
//!
//! `luka_records_total` also counts the records of a call that Kafka refused while it was being placed, before
//! anything was sent, under the refusal's result (the produce core's `Producer::refused`).
//!
//! The `topic` label takes at most `[metrics] max_topic_series` values (the first topics seen); records of further
//! topics are counted under `topic="_other"`, so writers naming new topics cannot grow the scrape without bound.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub kind: &'static str,
    pub function: FunctionName,
    pub class: &'static str,
}

/// A function's name as a label value: shared with the loaded function, so counting a request allocates nothing.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct FunctionName(pub Option<Arc<str>>);

impl EncodeLabelValue for FunctionName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_deref().unwrap_or_default())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// `luka_records_total` and `luka_record_bytes_total` of one label set (see [`Metrics::record_series`]).
#[derive(Debug, Clone)]
pub struct RecordSeries {
    records: Counter,
    bytes: Counter,
}

impl RecordSeries {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.inc_by(records);
        self.bytes.inc_by(bytes);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    pub cluster: String,
    pub topic: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmLabel {
    pub vm: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    pub cluster: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric luka keeps.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<KindLabel>,
    pub in_flight: Gauge,
    pub http_refused: Family<ReasonLabel, Counter>,
    pub records: Family<RecordLabels, Counter>,
    pub record_bytes: Family<RecordLabels, Counter>,
    pub produce_requests: Family<RecordLabels, Counter>,
    pub batch_records: Histogram,
    pub lua_limit_hits: Family<KindLabel, Counter>,
    pub vm_memory: Family<VmLabel, Gauge>,
    pub cluster_reachable: Family<ClusterLabel, Gauge>,
    /// The request series of each route kind (and, for requests no function answered, each class), kept once
    /// made: a family hashes the whole label set (SipHash) on every look-up, two per request.
    durations: [OnceLock<Histogram>; RequestKind::COUNT],
    plain_requests: [[OnceLock<Counter>; CLASSES.len()]; RequestKind::COUNT],
    /// Topics that have series of their own, at most `max_topics`.
    topics: Mutex<HashSet<String>>,
    max_topics: AtomicUsize,
    /// Topics with a series of their own whatever the cap: the configured exact names, which names that callers
    /// choose (a pattern's, a handler's) cannot crowd out.
    reserved_topics: Mutex<HashSet<String>>,
}

/// The `topic` label of records of topics past `[metrics] max_topic_series`.
pub const OTHER_TOPICS: &str = "_other";

/// What answered a request: the `kind` label of the request series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Rest,
    Function,
    Health,
    Metrics,
    Other,
}

impl RequestKind {
    /// Kinds there are (`Other` stays last), so each has a slot of its own.
    const COUNT: usize = Self::Other as usize + 1;

    fn label(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Function => "function",
            Self::Health => "health",
            Self::Metrics => "metrics",
            Self::Other => "other",
        }
    }
}

/// One function's request series, one per status class, kept once made (as the `Metrics`' own kept series are): the
/// function's name is the label, and looking the series up by it hashed the whole label set per request. Made with
/// the function when it is compiled; its series are those of the process's metrics, which it counts in.
#[derive(Debug)]
pub struct FunctionRequests {
    name: Arc<str>,
    requests: [OnceLock<Counter>; CLASSES.len()],
}

impl FunctionRequests {
    pub fn new(name: Arc<str>) -> Self {
        Self {
            name,
            requests: Default::default(),
        }
    }

    /// The function's name, its path inside the functions folder.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// The `class` label's values, by the status's hundreds; anything else counts as 5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn latency_histogram() -> Histogram {
    // 100 µs to ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("luka");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", http_requests.clone());
        let http_duration = HistogramFamily::<KindLabel>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to response",
            Unit::Seconds,
            http_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "http_in_flight_requests",
            "HTTP requests being served",
            in_flight.clone(),
        );
        let http_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "http_refused",
            "Answered before routing: a connection over its address's share (503), a request head that could not \
             be read (400) or was over 64 KiB (431)",
            http_refused.clone(),
        );
        let records = Family::<RecordLabels, Counter>::default();
        registry.register("records", "Records produced, by outcome", records.clone());
        let record_bytes = Family::<RecordLabels, Counter>::default();
        registry.register_with_unit(
            "record",
            "Key, value and header bytes of records produced, by outcome",
            Unit::Bytes,
            record_bytes.clone(),
        );
        let produce_requests = Family::<RecordLabels, Counter>::default();
        registry.register(
            "produce_requests",
            "Kafka produce requests sent, by outcome",
            produce_requests.clone(),
        );
        let batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        registry.register(
            "produce_batch_records",
            "Records per Kafka produce request",
            batch_records.clone(),
        );
        let lua_limit_hits = Family::<KindLabel, Counter>::default();
        registry.register(
            "lua_limit_hits",
            "Lua handlers stopped by a limit",
            lua_limit_hits.clone(),
        );
        let vm_memory = Family::<VmLabel, Gauge>::default();
        registry.register_with_unit(
            "lua_vm_memory",
            "Memory held by each Lua VM",
            Unit::Bytes,
            vm_memory.clone(),
        );
        let cluster_reachable = Family::<ClusterLabel, Gauge>::default();
        registry.register(
            "kafka_cluster_reachable",
            "1 while a bootstrap broker of the cluster accepts connections, 0 during an outage",
            cluster_reachable.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            in_flight,
            http_refused,
            records,
            record_bytes,
            produce_requests,
            batch_records,
            lua_limit_hits,
            vm_memory,
            cluster_reachable,
            durations: std::array::from_fn(|_| OnceLock::new()),
            plain_requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            topics: Mutex::default(),
            max_topics: AtomicUsize::new(crate::config::defaults::MAX_TOPIC_SERIES),
            reserved_topics: Mutex::default(),
        }
    }

    /// Every metric in OpenMetrics text (1.0.0).
    pub fn render_openmetrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    /// Every metric in the classic Prometheus text format (0.0.4).
    pub fn render_classic(&self) -> String {
        classic_text(&self.render_openmetrics())
    }

    pub fn observe_request(
        &self,
        kind: RequestKind,
        function: Option<&FunctionRequests>,
        status: u16,
        elapsed: Duration,
    ) {
        let class_index = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        let series = match function {
            None => &self.plain_requests[kind as usize][class_index],
            Some(function) => &function.requests[class_index],
        };
        series
            .get_or_init(|| {
                let labels = HttpLabels {
                    kind: kind.label(),
                    function: FunctionName(function.map(|f| Arc::clone(&f.name))),
                    class: CLASSES[class_index],
                };
                self.http_requests.get_or_create(&labels).clone()
            })
            .inc();
        self.durations[kind as usize]
            .get_or_init(|| {
                self.http_duration
                    .get_or_create(&KindLabel { kind: kind.label() })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Topics past the first `limit` get no series of their own (see the module's notes).
    pub fn limit_topic_series(&self, limit: usize) {
        self.max_topics.store(limit, Ordering::Relaxed);
    }

    /// `topics` get a series of their own whatever the cap.
    pub fn reserve_topic_series(&self, topics: impl IntoIterator<Item = String>) {
        self.reserved_topics
            .lock()
            .expect("topic series lock poisoned")
            .extend(topics);
    }

    /// `topic` as a label value: itself while reserved or within the cap, else [`OTHER_TOPICS`].
    fn topic_label(&self, topic: &str) -> String {
        if self
            .reserved_topics
            .lock()
            .expect("topic series lock poisoned")
            .contains(topic)
        {
            return topic.to_owned();
        }
        let mut topics = self.topics.lock().expect("topic series lock poisoned");
        if topics.contains(topic) {
            return topic.to_owned();
        }
        if topics.len() < self.max_topics.load(Ordering::Relaxed) {
            topics.insert(topic.to_owned());
            return topic.to_owned();
        }
        OTHER_TOPICS.to_owned()
    }

    pub fn record_outcome(&self, cluster: &str, topic: &str, result: &'static str, records: u64, bytes: u64) {
        self.record_series(cluster, topic, result).add(records, bytes);
    }

    /// The two record series of one outcome for `cluster` and `topic`, for a holder that counts it often (a
    /// partition's writer, its records written): looked up by label set once, not per produce.
    pub fn record_series(&self, cluster: &str, topic: &str, result: &'static str) -> RecordSeries {
        let labels = RecordLabels {
            cluster: cluster.to_owned(),
            topic: self.topic_label(topic),
            result,
        };
        RecordSeries {
            records: self.records.get_or_create(&labels).clone(),
            bytes: self.record_bytes.get_or_create(&labels).clone(),
        }
    }

    pub fn produce_request(&self, cluster: &str, topic: &str, result: &'static str, records: usize) {
        let labels = RecordLabels {
            cluster: cluster.to_owned(),
            topic: self.topic_label(topic),
            result,
        };
        self.produce_requests.get_or_create(&labels).inc();
        self.batch_records.observe(records as f64);
    }

    /// A connection or request answered before routing (see `luka_http_refused_total`).
    pub fn http_refused(&self, reason: &'static str) {
        self.http_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn lua_limit_hit(&self, kind: &'static str) {
        self.lua_limit_hits.get_or_create(&KindLabel { kind }).inc();
    }

    /// VM `vm`'s memory gauge, for its holder to keep and set after every request (the label is looked up once).
    pub fn vm_memory(&self, vm: usize) -> Gauge {
        self.vm_memory.get_or_create(&VmLabel { vm: vm.to_string() }).clone()
    }

    pub fn set_reachable(&self, cluster: &str, reachable: bool) {
        self.cluster_reachable
            .get_or_create(&ClusterLabel {
                cluster: cluster.to_owned(),
            })
            .set(i64::from(reachable));
    }
}

/// OpenMetrics text as the classic Prometheus text format: a counter family is named by its samples (`x_total`, where
/// OpenMetrics names the family `x`), and `# UNIT` and `# EOF` lines, which the classic format lacks, are left out.
/// luka's metrics use no OpenMetrics-only types or exemplars.
fn classic_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(renamed) => text.push_str(renamed.trim_end()),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests counted through the kept series land in the registered families, beside those looked up by label.
    #[test]
    fn kept_series_are_the_scraped_ones() {
        let metrics = Metrics::new();
        let function = FunctionRequests::new("hooks/github.lua".into());
        // A second compilation of the same file counts in the same series.
        let recompiled = FunctionRequests::new("hooks/github.lua".into());
        for _ in 0..3 {
            metrics.observe_request(RequestKind::Health, None, 200, Duration::from_millis(1));
        }
        metrics.observe_request(RequestKind::Health, None, 503, Duration::from_millis(1));
        metrics.observe_request(RequestKind::Function, Some(&function), 200, Duration::from_millis(1));
        metrics.observe_request(RequestKind::Function, Some(&recompiled), 200, Duration::from_millis(1));
        metrics.observe_request(RequestKind::Function, Some(&function), 404, Duration::from_millis(1));
        let text = metrics.render_openmetrics();
        for line in [
            r#"luka_http_requests_total{kind="health",function="",class="2xx"} 3"#,
            r#"luka_http_requests_total{kind="health",function="",class="5xx"} 1"#,
            r#"luka_http_requests_total{kind="function",function="hooks/github.lua",class="2xx"} 2"#,
            r#"luka_http_request_duration_seconds_count{kind="health"} 4"#,
            r#"luka_http_requests_total{kind="function",function="hooks/github.lua",class="4xx"} 1"#,
            r#"luka_http_request_duration_seconds_count{kind="function"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
    }
}
