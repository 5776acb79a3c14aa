//! Prometheus metrics of the cascade, shared by the replication agent and the HTTP front.
//!
//! Data flow: every finished cascade lookup (agent record or HTTP request) is fed to
//! [`Metrics::record_lookup`]; the HTTP front counts its answers with [`Metrics::request`];
//! `GET /metrics` renders the registry as Prometheus text (exposition format 0.0.4). One
//! registry per instance (`prometheus-client`), not a process-global recorder, so several
//! agents in one test process never mix their numbers.

use crate::cascade::{Lookup, SkipOp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label value in Prometheus text syntax: `prometheus-client` 0.24 writes values verbatim,
/// and store locations are full of backslashes (`\\MainOffice\Symbols`).
fn lv(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabel {
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HitLabel {
    store: String,
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabel {
    store: String,
    op: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// How the HTTP front answered a request (the `outcome` label of
/// `symcascade_http_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the front's own store without asking anyone (warm hit).
    LocalHit,
    /// Fetched down the cascade (or joined a transfer in flight), then served.
    Fetched,
    /// Streamed from an upstream store without storing it (SymProxy `NoCache`).
    Streamed,
    /// No store had it (a lookup ran).
    Miss,
    /// Answered from the miss cache (no lookup; SymProxy `MissTimeout`).
    MissCached,
    /// The name is on the exclusion list.
    Excluded,
    /// Not a valid key path: 400, nothing touched.
    BadRequest,
    /// The client's time limit passed; the transfer goes on in the background (503).
    StillWorking,
    /// The client's address is not on the allow-list (403).
    Forbidden,
    /// The lookup failed on our side (500).
    Error,
    /// Refused for load: the connection cap or the cold-lookup queue was full (503).
    Busy,
}

impl Outcome {
    /// Every outcome, for reports.
    pub const ALL: [Outcome; 11] = [
        Outcome::LocalHit,
        Outcome::Fetched,
        Outcome::Streamed,
        Outcome::Miss,
        Outcome::MissCached,
        Outcome::Excluded,
        Outcome::BadRequest,
        Outcome::StillWorking,
        Outcome::Forbidden,
        Outcome::Error,
        Outcome::Busy,
    ];

    /// The label value, e.g. `local_hit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::LocalHit => "local_hit",
            Outcome::Fetched => "fetched",
            Outcome::Streamed => "streamed",
            Outcome::Miss => "miss",
            Outcome::MissCached => "miss_cached",
            Outcome::Excluded => "excluded",
            Outcome::BadRequest => "bad_request",
            Outcome::StillWorking => "still_working",
            Outcome::Forbidden => "forbidden",
            Outcome::Error => "error",
            Outcome::Busy => "busy",
        }
    }
}

/// The metrics of one agent/front instance.
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabel, Counter>,
    hits: Family<HitLabel, Counter>,
    misses: Counter,
    lookups: Counter,
    read_bytes: Family<StoreLabel, Counter>,
    written_bytes: Family<StoreLabel, Counter>,
    served_bytes: Counter,
    latency: Histogram,
    skips: Family<SkipLabel, Counter>,
    miss_cache_entries: Gauge,
    in_flight: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (names prefixed `symcascade_`).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("symcascade");
        let m = Metrics {
            requests: Family::default(),
            hits: Family::default(),
            misses: Counter::default(),
            lookups: Counter::default(),
            read_bytes: Family::default(),
            written_bytes: Family::default(),
            served_bytes: Counter::default(),
            // 5 ms .. ~80 s: a warm LAN copy to a large PDB over a slow WAN link.
            latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.005, 2.0, 15,
            )),
            skips: Family::default(),
            miss_cache_entries: Gauge::default(),
            in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "Symbol-file requests answered by the HTTP front, by outcome",
            m.requests.clone(),
        );
        registry.register(
            "hits",
            "Cascade hits by the store (and its tier index in the chain) that had the file",
            m.hits.clone(),
        );
        registry.register(
            "misses",
            "Cascade lookups that found the file nowhere",
            m.misses.clone(),
        );
        registry.register(
            "lookups",
            "Cascade lookups run (each asks every store it needs once)",
            m.lookups.clone(),
        );
        registry.register(
            "store_read_bytes",
            "Bytes read from a source store (each byte once per lookup)",
            m.read_bytes.clone(),
        );
        registry.register(
            "store_written_bytes",
            "Bytes written into a downstream store",
            m.written_bytes.clone(),
        );
        registry.register(
            "http_served_bytes",
            "Bytes sent to HTTP clients from stores (not counting Range-limited local files)",
            m.served_bytes.clone(),
        );
        registry.register(
            "transfer_duration_seconds",
            "Time of lookups that found a file (probe, copy down the cascade)",
            m.latency.clone(),
        );
        registry.register(
            "skips",
            "Stores skipped during lookups, by store, operation and reason",
            m.skips.clone(),
        );
        registry.register(
            "miss_cache_entries",
            "Keys in the HTTP front's miss cache",
            m.miss_cache_entries.clone(),
        );
        registry.register(
            "transfers_in_flight",
            "Lookups running in the background for the HTTP front",
            m.in_flight.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one finished lookup: hit (store, tier, bytes, latency) or miss (nothing found,
    /// or only corrupt files: [`Lookup::is_definitive_miss`]), and its skips with the bytes
    /// read from skipped stores.
    pub fn record_lookup(&self, lookup: &Lookup) {
        self.lookups.inc();
        match &lookup.fetched {
            Some(f) => {
                self.hit(&f.found_in, f.tier);
                self.read_bytes
                    .get_or_create(&StoreLabel {
                        store: lv(&f.found_in),
                    })
                    .inc_by(f.bytes_read);
                for w in f.written.iter().filter(|w| w.new) {
                    self.written_bytes
                        .get_or_create(&StoreLabel {
                            store: lv(&w.store),
                        })
                        .inc_by(w.bytes);
                }
                self.latency.observe(lookup.elapsed_ms as f64 / 1000.0);
            }
            None if lookup.is_definitive_miss() => {
                self.misses.inc();
            }
            None => {}
        }
        for s in &lookup.skipped {
            // Bytes of a refused (corrupt) file crossed the link too.
            if s.bytes_read > 0 {
                self.read_bytes
                    .get_or_create(&StoreLabel {
                        store: lv(&s.store),
                    })
                    .inc_by(s.bytes_read);
            }
            let op = match s.op {
                SkipOp::Read => "read",
                SkipOp::Write => "write",
            };
            self.skips
                .get_or_create(&SkipLabel {
                    store: lv(&s.store),
                    op: op.into(),
                    reason: lv(&s.kind.to_string()),
                })
                .inc();
        }
    }

    /// Counts a hit answered without a lookup (the front's own store).
    pub fn hit(&self, store: &str, tier: usize) {
        self.hits
            .get_or_create(&HitLabel {
                store: lv(store),
                tier: tier.to_string(),
            })
            .inc();
    }

    /// The hit counter of `store` at `tier`, for a hot path that counts without a label lookup.
    pub fn hit_counter(&self, store: &str, tier: usize) -> Counter {
        self.hits
            .get_or_create(&HitLabel {
                store: lv(store),
                tier: tier.to_string(),
            })
            .clone()
    }

    /// The request counter of `outcome`, for a hot path.
    pub fn request_counter(&self, outcome: Outcome) -> Counter {
        self.requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            })
            .clone()
    }

    /// Counts one HTTP answer.
    pub fn request(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            })
            .inc();
    }

    /// How many requests had `outcome` so far.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().into(),
            })
            .get()
    }

    /// Counts bytes streamed to a client out of a store.
    pub fn served(&self, bytes: u64) {
        self.served_bytes.inc_by(bytes);
    }

    /// Sets the gauges sampled at render time.
    pub fn set_gauges(&self, miss_cache_entries: usize, in_flight: usize) {
        self.miss_cache_entries.set(miss_cache_entries as i64);
        self.in_flight.set(in_flight as i64);
    }

    /// The registry as Prometheus text (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.request(Outcome::LocalHit);
        m.request(Outcome::LocalHit);
        m.hit("C:\\Symbols", 0);
        m.served(42);
        let text = m.render();
        assert!(
            text.contains("symcascade_http_requests_total{outcome=\"local_hit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(r#"symcascade_hits_total{store="C:\\Symbols",tier="0"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("symcascade_http_served_bytes_total 42"),
            "{text}"
        );
        assert!(text.contains("# TYPE symcascade_transfer_duration_seconds histogram"));
        assert_eq!(m.requests(Outcome::LocalHit), 2);
        assert_eq!(m.requests(Outcome::Miss), 0);
    }
}
