//! Prometheus metrics of the cascade, shared by the replication agent and the HTTP front.
//!
//! Data flow: every finished cascade lookup (agent record or HTTP request) is fed to
//! [`Metrics::record_lookup`]; the HTTP front counts its answers with [`Metrics::request`];
//! `GET /metrics` renders the registry as OpenMetrics text (see [`Metrics::CONTENT_TYPE`]). One
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
struct ClassLabel {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// The chain the status reports on: its stores in tier order, and where the WAN begins.
#[derive(Debug, Default, Clone)]
struct ChainView {
    stores: Vec<String>,
    branch: Option<usize>,
}

impl ChainView {
    /// Whether `store` lies beyond the WAN: a tier after the branch (see
    /// [`crate::report::is_wan_tier`]), or a store of another chain of the symbol path.
    fn is_wan(&self, store: &str) -> bool {
        match self.stores.iter().position(|s| s == store) {
            Some(i) => crate::report::is_wan_tier(i, self.branch),
            None => true,
        }
    }
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
    aged_keys: Family<StoreLabel, Counter>,
    aged_bytes: Family<StoreLabel, Counter>,
    served_bytes: Counter,
    latency: Histogram,
    skips: Family<SkipLabel, Counter>,
    miss_cache_entries: Gauge,
    in_flight: Gauge,
    queue_depth: Gauge,
    backfills: Gauge,
    store_up: Family<StoreLabel, Gauge>,
    store_free: Family<StoreLabel, Gauge>,
    queue_oldest: Gauge,
    queue_states: Family<StateLabel, Gauge>,
    reads_in_flight: Gauge,
    wan_read: Counter,
    wan_saved: Counter,
    bandwidth_cap: Family<ClassLabel, Gauge>,
    bandwidth_rate: Family<ClassLabel, Gauge>,
    companions_fetched: Counter,
    companions_asked: Counter,
    resumed: Counter,
    bandwidth: std::sync::Mutex<Option<crate::bandwidth::BandwidthStatus>>,
    chain: std::sync::RwLock<ChainView>,
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
            aged_keys: Family::default(),
            aged_bytes: Family::default(),
            served_bytes: Counter::default(),
            // 5 ms .. ~80 s: a warm LAN copy to a large PDB over a slow WAN link.
            latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.005, 2.0, 15,
            )),
            skips: Family::default(),
            miss_cache_entries: Gauge::default(),
            in_flight: Gauge::default(),
            queue_depth: Gauge::default(),
            backfills: Gauge::default(),
            store_up: Family::default(),
            store_free: Family::default(),
            queue_oldest: Gauge::default(),
            queue_states: Family::default(),
            reads_in_flight: Gauge::default(),
            wan_read: Counter::default(),
            wan_saved: Counter::default(),
            bandwidth_cap: Family::default(),
            bandwidth_rate: Family::default(),
            companions_fetched: Counter::default(),
            companions_asked: Counter::default(),
            resumed: Counter::default(),
            bandwidth: std::sync::Mutex::new(None),
            chain: Default::default(),
            registry: Registry::default(),
        };
        m.register_health(&mut registry);
        m.register_traffic(&mut registry);
        m.register_wan(&mut registry);
        Metrics { registry, ..m }
    }

    /// Registers the health gauges: build, queue, back-fills, stores, WAN.
    fn register_health(&self, registry: &mut Registry) {
        let build: Family<VersionLabel, Gauge> = Family::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("build_info", "The running version (value 1)", build);
        registry.register(
            "queue_depth",
            "Requests in the branch queue at the agent's last scan",
            self.queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_request_age_seconds",
            "Age of the oldest request in the branch queue (0 when it is empty)",
            self.queue_oldest.clone(),
        );
        registry.register(
            "queue_requests",
            "Requests in the branch queue by state (queued, in_progress, waiting_for_retry, miss_cached)",
            self.queue_states.clone(),
        );
        registry.register(
            "wan_read_bytes",
            "Bytes read from stores beyond the WAN (the tiers after the branch store)",
            self.wan_read.clone(),
        );
        registry.register(
            "wan_saved_bytes",
            "Bytes delivered without crossing the WAN: served from the front's store, copied down from this side of the WAN, or copies after the first of a file read over it",
            self.wan_saved.clone(),
        );
        registry.register(
            "reads_in_flight",
            "Symbol files being read out of stores now (agent and front)",
            self.reads_in_flight.clone(),
        );
        registry.register(
            "backfills_pending",
            "Copies into skipped tiers waiting to be retried",
            self.backfills.clone(),
        );
        registry.register(
            "store_up",
            "1 when the store answered the last health check, else 0",
            self.store_up.clone(),
        );
        registry.register(
            "store_free_bytes",
            "Free space of the store at the last health check, where it can tell",
            self.store_free.clone(),
        );
    }

    /// Registers the traffic metrics: answers, hits, bytes, latency, skips, the miss cache.
    fn register_traffic(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "Symbol-file requests answered by the HTTP front, by outcome",
            self.requests.clone(),
        );
        registry.register(
            "hits",
            "Cascade hits by the store (and its tier index in the chain) that had the file",
            self.hits.clone(),
        );
        registry.register(
            "misses",
            "Cascade lookups that found the file nowhere",
            self.misses.clone(),
        );
        registry.register(
            "lookups",
            "Cascade lookups run (each asks every store it needs once)",
            self.lookups.clone(),
        );
        registry.register(
            "store_read_bytes",
            "Bytes read from a source store (each byte once per lookup)",
            self.read_bytes.clone(),
        );
        registry.register(
            "store_written_bytes",
            "Bytes written into a downstream store",
            self.written_bytes.clone(),
        );
        registry.register(
            "aged_keys",
            "Key folders removed by aging ([aging] max_size / unused_for), by store",
            self.aged_keys.clone(),
        );
        registry.register(
            "aged_bytes",
            "Bytes removed by aging, by store",
            self.aged_bytes.clone(),
        );
        registry.register(
            "http_served_bytes",
            "Bytes sent to HTTP clients from stores",
            self.served_bytes.clone(),
        );
        registry.register(
            "transfer_duration_seconds",
            "Time of lookups that found a file (probe, copy down the cascade)",
            self.latency.clone(),
        );
        registry.register(
            "skips",
            "Stores skipped during lookups, by store, operation and reason",
            self.skips.clone(),
        );
        registry.register(
            "miss_cache_entries",
            "Keys in the HTTP front's miss cache",
            self.miss_cache_entries.clone(),
        );
        registry.register(
            "transfers_in_flight",
            "Lookups running in the background for the HTTP front",
            self.in_flight.clone(),
        );
    }

    /// Counts one finished lookup: hit (store, tier, bytes, latency) or miss (nothing found,
    /// or only corrupt files: [`Lookup::is_definitive_miss`]), and its skips with the bytes
    /// read from skipped stores.
    pub fn record_lookup(&self, lookup: &Lookup) {
        self.lookups.inc();
        let chain = self.chain.read().expect("chain").clone();
        match &lookup.fetched {
            Some(f) => {
                self.hit(&f.found_in, f.tier);
                let new: Vec<u64> = f
                    .written
                    .iter()
                    .filter(|w| w.new)
                    .map(|w| w.bytes)
                    .collect();
                if chain.is_wan(&f.found_in) {
                    // It crossed the WAN once: the first copy needed it, the others did not.
                    self.wan_read.inc_by(f.bytes_read);
                    self.resumed.inc_by(f.resumed_bytes);
                    self.wan_saved.inc_by(new.iter().skip(1).sum());
                } else {
                    self.wan_saved.inc_by(new.iter().sum());
                }
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
                if chain.is_wan(&s.store) {
                    self.wan_read.inc_by(s.bytes_read);
                }
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

    /// Counts key folders (`keys`) and `bytes` that aging removed from `store`.
    pub fn aged(&self, store: &str, keys: u64, bytes: u64) {
        let l = StoreLabel {
            store: store.to_string(),
        };
        self.aged_keys.get_or_create(&l).inc_by(keys);
        self.aged_bytes.get_or_create(&l).inc_by(bytes);
    }

    /// Counts bytes streamed to a client out of a store.
    pub fn served(&self, bytes: u64) {
        self.served_bytes.inc_by(bytes);
    }

    /// Counts bytes sent to a client out of the front's own store (a warm hit): served, and
    /// saved from crossing the WAN.
    pub fn served_local(&self, bytes: u64) {
        self.served_bytes.inc_by(bytes);
        self.wan_saved.inc_by(bytes);
    }

    /// Counts a copy of `bytes` from `source` into another store outside a lookup (an agent's
    /// back-fill): bytes read from the source, over the WAN or saved from crossing it.
    pub fn copied(&self, source: &str, bytes: u64) {
        self.read_bytes
            .get_or_create(&StoreLabel { store: lv(source) })
            .inc_by(bytes);
        if self.chain.read().expect("chain").is_wan(source) {
            self.wan_read.inc_by(bytes);
        } else {
            self.wan_saved.inc_by(bytes);
        }
    }

    /// Names the chain the status reports on (its store locations in tier order) and its
    /// branch store: the tiers after the branch (after the local store without one) and
    /// stores of other chains are beyond the WAN. Set by the agent and the front.
    pub fn set_chain(&self, stores: Vec<String>, branch: Option<usize>) {
        *self.chain.write().expect("chain") = ChainView { stores, branch };
    }

    /// Sets the queue's age and state gauges: the oldest request's age in seconds (0 when
    /// the queue is empty) and the requests per state.
    pub fn set_queue(&self, oldest_age_secs: u64, states: &[(crate::report::QueueState, usize)]) {
        self.queue_oldest
            .set(oldest_age_secs.min(i64::MAX as u64) as i64);
        for (state, n) in states {
            self.queue_states
                .get_or_create(&StateLabel {
                    state: state.label().into(),
                })
                .set(*n as i64);
        }
    }

    /// `[bandwidth]` and companion prefetch (issue #17).
    fn register_wan(&self, registry: &mut Registry) {
        registry.register(
            "bandwidth_cap_bits_per_second",
            "Cap in force per class (background, interactive); -1 = unlimited",
            self.bandwidth_cap.clone(),
        );
        registry.register(
            "bandwidth_rate_bits_per_second",
            "Rate of remote reads per class over the last second",
            self.bandwidth_rate.clone(),
        );
        registry.register(
            "companions_fetched",
            "PDBs fetched because their image was (companion prefetch)",
            self.companions_fetched.clone(),
        );
        registry.register(
            "companions_asked",
            "Companion PDBs a client asked for afterwards",
            self.companions_asked.clone(),
        );
        registry.register(
            "wan_resumed_bytes",
            "Bytes of interrupted WAN transfers not read again: the transfer resumed",
            self.resumed.clone(),
        );
    }

    /// Records the caps in force and the rates just measured (`Bandwidth::tick`), for
    /// `/metrics` and the status.
    pub fn set_bandwidth(&self, s: &crate::bandwidth::BandwidthStatus) {
        let class = |c: &str| ClassLabel { class: c.into() };
        let cap = |c: Option<u64>| c.map(|v| v as i64).unwrap_or(-1);
        self.bandwidth_cap
            .get_or_create(&class("background"))
            .set(cap(s.background_cap_bps));
        self.bandwidth_cap
            .get_or_create(&class("interactive"))
            .set(cap(s.interactive_cap_bps));
        self.bandwidth_rate
            .get_or_create(&class("background"))
            .set(s.background_bps as i64);
        self.bandwidth_rate
            .get_or_create(&class("interactive"))
            .set(s.interactive_bps as i64);
        *self.bandwidth.lock().expect("bandwidth") = Some(s.clone());
    }

    /// What [`Metrics::set_bandwidth`] recorded last (`None` before the first tick).
    pub fn bandwidth(&self) -> Option<crate::bandwidth::BandwidthStatus> {
        self.bandwidth.lock().expect("bandwidth").clone()
    }

    /// Counts a companion PDB fetched.
    pub fn companion_fetched(&self) {
        self.companions_fetched.inc();
    }

    /// Counts a companion PDB a client asked for after it was fetched.
    pub fn companion_asked(&self) {
        self.companions_asked.inc();
    }

    /// Companion PDBs (fetched, asked for afterwards).
    pub fn companions(&self) -> (u64, u64) {
        (self.companions_fetched.get(), self.companions_asked.get())
    }

    /// Sets the number of symbol files being read out of stores now.
    pub fn set_reads_in_flight(&self, n: usize) {
        self.reads_in_flight.set(n as i64);
    }

    /// Per-tier hits, hit ratios and bytes read of the chain named by [`Metrics::set_chain`],
    /// and the WAN counters.
    pub fn traffic(&self) -> crate::report::Traffic {
        let chain = self.chain.read().expect("chain").clone();
        let mut tiers: Vec<crate::report::TierTraffic> = chain
            .stores
            .iter()
            .enumerate()
            .map(|(i, store)| crate::report::TierTraffic {
                store: store.clone(),
                role: crate::report::tier_role(i, chain.stores.len(), chain.branch).into(),
                wan: crate::report::is_wan_tier(i, chain.branch),
                hits: self.hit_counter(store, i).get(),
                hit_ratio: None,
                bytes_read: self
                    .read_bytes
                    .get_or_create(&StoreLabel { store: lv(store) })
                    .get(),
            })
            .collect();
        let misses = self.misses.get();
        let answers = tiers.iter().map(|t| t.hits).sum::<u64>() + misses;
        for t in &mut tiers {
            t.hit_ratio = (answers > 0).then(|| t.hits as f64 / answers as f64);
        }
        crate::report::Traffic {
            tiers,
            misses,
            wan_bytes_read: self.wan_read.get(),
            wan_bytes_saved: self.wan_saved.get(),
            wan_bytes_resumed: self.resumed.get(),
            bytes_served: self.served_bytes.get(),
        }
    }

    /// Sets the gauges sampled at render time.
    pub fn set_gauges(&self, miss_cache_entries: usize, in_flight: usize) {
        self.miss_cache_entries.set(miss_cache_entries as i64);
        self.in_flight.set(in_flight as i64);
    }

    /// Sets the agent's queue gauges.
    pub fn set_agent(&self, queue_depth: usize, backfills: usize) {
        self.queue_depth.set(queue_depth as i64);
        self.backfills.set(backfills as i64);
    }

    /// Sets the per-store gauges from a health check.
    pub fn set_store_health(&self, stores: &[crate::report::StoreHealth]) {
        for s in stores {
            let l = StoreLabel {
                store: lv(&s.store),
            };
            self.store_up.get_or_create(&l).set(i64::from(s.reachable));
            if let Some(b) = s.free_bytes {
                self.store_free
                    .get_or_create(&l)
                    .set(b.min(i64::MAX as u64) as i64);
            }
        }
    }

    /// Content type of [`Metrics::render`]'s text: `prometheus-client` writes the OpenMetrics
    /// text format (`# EOF`, `_total` counters), which Prometheus parses with its types only
    /// when announced as such.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The registry as OpenMetrics text (see [`Metrics::CONTENT_TYPE`]).
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
        m.set_agent(3, 1);
        m.set_store_health(&[crate::report::StoreHealth {
            store: "\\\\MainOffice\\Symbols".into(),
            role: "upstream".into(),
            reachable: false,
            writable: false,
            free_bytes: Some(7),
            ..Default::default()
        }]);
        let text = m.render();
        for want in [
            "# TYPE symcascade_build_info gauge",
            &format!(
                "symcascade_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "symcascade_queue_depth 3",
            "symcascade_backfills_pending 1",
            r#"symcascade_store_up{store="\\\\MainOffice\\Symbols"} 0"#,
            r#"symcascade_store_free_bytes{store="\\\\MainOffice\\Symbols"} 7"#,
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
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
    #[test]
    fn traffic_counts_wan_reads_and_savings_per_tier() {
        use crate::cascade::{Fetched, Lookup, Written};
        let m = Metrics::new();
        // local ← branch ← main: main is beyond the WAN.
        m.set_chain(vec!["/l".into(), "/b".into(), "/m".into()], Some(1));
        let w = |store: &str, bytes| Written {
            store: store.into(),
            path: String::new(),
            form: crate::layout::Form::Plain,
            bytes,
            new: true,
        };
        let hit = |found_in: &str, tier, read, written: Vec<Written>| Lookup {
            key: crate::key::Key::new("a.pdb", "AB12").unwrap(),
            fetched: Some(Fetched {
                found_in: found_in.into(),
                chain: 0,
                tier,
                form: crate::layout::Form::Plain,
                via_file_ptr: None,
                written,
                local_path: None,
                location: String::new(),
                bytes_read: read,
                resumed_bytes: 0,
                bytes_written: 0,
            }),
            skipped: vec![],
            elapsed_ms: 1,
        };
        // Over the WAN once, into the branch and the local store: the local copy is saved.
        m.record_lookup(&hit("/m", 2, 100, vec![w("/b", 100), w("/l", 100)]));
        // From the branch into the local store: all saved.
        m.record_lookup(&hit("/b", 1, 40, vec![w("/l", 40)]));
        m.served_local(7);
        m.hit("/l", 0);
        m.copied("/m", 5);
        let t = m.traffic();
        assert_eq!(t.wan_bytes_read, 105);
        assert_eq!(t.wan_bytes_saved, 100 + 40 + 7);
        assert_eq!(t.bytes_served, 7);
        let hits: Vec<u64> = t.tiers.iter().map(|x| x.hits).collect();
        assert_eq!(hits, [1, 1, 1]);
        assert_eq!(t.tiers[2].hit_ratio, Some(1.0 / 3.0));
        assert!(t.tiers[2].wan && !t.tiers[1].wan && !t.tiers[0].wan);
        assert_eq!(t.tiers[2].bytes_read, 105);
        m.set_queue(42, &[(crate::report::QueueState::MissCached, 2)]);
        let text = m.render();
        for want in [
            "# TYPE symcascade_queue_oldest_request_age_seconds gauge",
            "symcascade_queue_oldest_request_age_seconds 42",
            "symcascade_queue_requests{state=\"miss_cached\"} 2",
            "# TYPE symcascade_wan_saved_bytes counter",
            "symcascade_wan_saved_bytes_total 147",
            "symcascade_wan_read_bytes_total 105",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }
}
