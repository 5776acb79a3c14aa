//! Reports shared by the agent, the HTTP front and the CLI: store health, transfers, the
//! agent's status and the one-word health verdict. Plain data plus two functions
//! ([`store_health`] asks each store of a chain; [`verdict`] judges the answers), so that the
//! agent and the front, peers under `daemon`, describe the same things the same way.
//!
//! Data flow: the agent fills a [`Status`] and publishes it (in memory to the front, and as
//! `status.json` for `symcascade status` in other processes); the front and `status` render it.
//! What both the agent and the front do goes through one [`Activity`] per process: reads in
//! flight (fed by the stores' [`ProgressSink`], who reads told by [`acting_as`]), recent
//! transfers, and when each store last changed state or failed.

use crate::cascade::Chain;
use crate::queue::{self, Backfill};
use crate::store::StoreDescription;
use crate::store::progress::{ProgressSink, TransferProgress};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Health of one store, as last checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreHealth {
    /// Location.
    pub store: String,
    /// Role in the chain: `local`, `branch`, `upstream`, `intermediate`.
    pub role: String,
    /// The store answered.
    pub reachable: bool,
    /// Writes are accepted (a hint).
    pub writable: bool,
    /// Free bytes, when known.
    pub free_bytes: Option<u64>,
    /// The error, when unreachable.
    pub error: Option<String>,
    /// Since when (seconds since the epoch) this process has seen the store in its current
    /// state (reachable or not); filled by [`Activity::observe_health`].
    #[serde(default)]
    pub since: Option<u64>,
    /// The last error this process saw from the store (it may be reachable again now).
    #[serde(default)]
    pub last_error: Option<String>,
    /// When [`StoreHealth::last_error`] was seen, seconds since the epoch.
    #[serde(default)]
    pub last_error_at: Option<u64>,
}

/// One replication, for the status' "recent transfers".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transfer {
    /// `name/index`.
    pub key: String,
    /// Where it was found.
    pub found_in: String,
    /// Stores written, in order.
    pub written: Vec<String>,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Milliseconds.
    pub ms: u64,
    /// When, seconds since the epoch.
    pub at: u64,
    /// Who did it: `agent <id>` (a queue record or a back-fill) or `front` (an HTTP client);
    /// empty when unknown (a status file written before this field existed).
    #[serde(default)]
    pub by: String,
    /// The queue record's requester (an agent id or `any`), for the agent's transfers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
}

impl Transfer {
    /// The transfer a lookup made, `None` for a miss. `at` is now; `by` and `requester` come
    /// from the task's [`Actor`] (see [`acting_as`]).
    pub fn of(lookup: &crate::cascade::Lookup) -> Option<Transfer> {
        let f = lookup.fetched.as_ref()?;
        let actor = current_actor().unwrap_or_default();
        Some(Transfer {
            by: actor.by,
            requester: actor.requester,
            key: lookup.key.to_string(),
            found_in: f.found_in.clone(),
            written: f
                .written
                .iter()
                .filter(|w| w.new)
                .map(|w| w.store.clone())
                .collect(),
            bytes_read: f.bytes_read,
            ms: lookup.elapsed_ms,
            at: queue::now_secs(),
        })
    }
}

/// What `status.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// Agent id.
    pub agent: String,
    /// Process id.
    pub pid: u32,
    /// Last update, seconds since the epoch.
    pub updated: u64,
    /// When the agent started, seconds since the epoch (0 in files of older versions).
    #[serde(default)]
    pub started: u64,
    /// Requests in the queue at the last scan (all requesters).
    pub queue_depth: usize,
    /// The oldest requests of the queue (at most [`QUEUE_SHOWN`], oldest first), among the
    /// records the agent has read (it reads every record it lists, a few hundred per scan).
    #[serde(default)]
    pub queue: Vec<QueueEntry>,
    /// Age in seconds of the oldest request in the queue; `None` when it is empty.
    #[serde(default)]
    pub queue_oldest_age_secs: Option<u64>,
    /// Records being processed now.
    pub in_flight: usize,
    /// Reads of symbol files under way (agent and front), oldest first.
    #[serde(default)]
    pub transfers: Vec<InFlight>,
    /// Pending back-fills.
    pub backfills: Vec<Backfill>,
    /// Store health.
    pub stores: Vec<StoreHealth>,
    /// Recent transfers of the agent and the front (see [`Transfer::by`]), newest last (at
    /// most [`RECENT`]).
    pub recent: VecDeque<Transfer>,
    /// Queue listings done (change notifications and periodic rescans): lets a script or a
    /// test wait for "N more scans" instead of sleeping.
    #[serde(default)]
    pub scans: u64,
    /// Per-tier hits and WAN bytes (shared by the agent and the front).
    #[serde(default)]
    pub traffic: Traffic,
    /// Bandwidth caps in force and current rates (`[bandwidth]`).
    #[serde(default)]
    pub bandwidth: Option<crate::bandwidth::BandwidthStatus>,
    /// Cascade lookups run (each asks every store it needs once).
    pub lookups: u64,
    /// Lookups that found the file.
    pub hits: u64,
    /// Lookups that found nothing anywhere (a miss-cache entry was written).
    pub misses: u64,
    /// Bytes read from each source store, by location.
    pub bytes_read: HashMap<String, u64>,
}

/// The role of tier `i` of an `n`-store chain whose branch store (queue holder) is `branch`:
/// `local`, `branch`, `upstream` or `intermediate`, for status and `doctor`.
pub fn tier_role(i: usize, n: usize, branch: Option<usize>) -> &'static str {
    match i {
        0 => "local",
        i if Some(i) == branch => "branch",
        i if i + 1 == n => "upstream",
        _ => "intermediate",
    }
}

/// The health of an agent or front in one word, for `symcascade status` (exit 0, 1, 2),
/// `/status` and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum Verdict {
    /// Every store answers as its role needs.
    Ok,
    /// Serving, with a store skipped (unreachable, or not writable where copies go).
    Degraded,
    /// Not serving: the agent is not running, or no store beyond the local one answers.
    Down,
}

/// The verdict and its reason from the stores' health (tier order, as [`store_health`] gives
/// it) and whether the agent runs (`None` when there is no agent to ask, e.g. front only).
/// Rules: the agent not running, or no store but the local one reachable, is DOWN; any store
/// unreachable, or a store that must take copies (all but the last; HTTP stores never do)
/// not writable, is DEGRADED, naming the first such store.
pub fn verdict(stores: &[StoreHealth], agent_running: Option<bool>) -> (Verdict, String) {
    if agent_running == Some(false) {
        return (Verdict::Down, "the agent is not running".into());
    }
    let remote = stores.get(1..).unwrap_or_default();
    if !remote.is_empty() && remote.iter().all(|s| !s.reachable) {
        return (
            Verdict::Down,
            "no store beyond the local one answers: every miss fails".into(),
        );
    }
    if let Some(s) = stores.iter().find(|s| !s.reachable) {
        let why = s.error.as_deref().unwrap_or("not readable");
        return (
            Verdict::Degraded,
            format!("{} {} unreachable: {why}", s.role, s.store),
        );
    }
    let n = stores.len();
    let must_write = |(i, s): &(usize, &StoreHealth)| {
        i + 1 < n && !s.store.starts_with("http://") && !s.store.starts_with("https://")
    };
    if let Some((_, s)) = stores
        .iter()
        .enumerate()
        .filter(must_write)
        .find(|(_, s)| !s.writable)
    {
        return (
            Verdict::Degraded,
            format!(
                "{} {} not writable: copies into it are skipped",
                s.role, s.store
            ),
        );
    }
    (Verdict::Ok, "every store answers".into())
}

/// Checks every store of the chain (reachable, writable, free space), concurrently, each
/// bounded by `timeout`.
pub async fn store_health(
    chain: &Chain,
    branch: Option<usize>,
    timeout: Duration,
) -> Vec<StoreHealth> {
    let n = chain.tiers.len();
    let checks = chain.tiers.iter().enumerate().map(|(i, t)| async move {
        let role = tier_role(i, n, branch);
        let store = t.store().describe().location;
        match tokio::time::timeout(timeout, t.store().capabilities()).await {
            Ok(Ok(c)) => StoreHealth {
                store,
                role: role.into(),
                reachable: c.readable,
                writable: c.writable,
                free_bytes: c.free_bytes,
                error: None,
                ..StoreHealth::default()
            },
            Ok(Err(e)) => StoreHealth {
                store,
                role: role.into(),
                reachable: false,
                writable: false,
                free_bytes: None,
                error: Some(e.to_string()),
                ..StoreHealth::default()
            },
            Err(_) => StoreHealth {
                store,
                role: role.into(),
                reachable: false,
                writable: false,
                free_bytes: None,
                error: Some(format!("no answer within {timeout:?}")),
                ..StoreHealth::default()
            },
        }
    });
    futures_util::future::join_all(checks).await
}

/// Queue requests a status shows (the oldest ones).
pub const QUEUE_SHOWN: usize = 100;
/// Recent transfers a status keeps (agent and front together).
pub const RECENT: usize = 50;

/// What the agent does with a queued request, as the status' queue table says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QueueState {
    /// Waiting for a free slot, or for the agent it is meant for.
    Queued,
    /// Being replicated now.
    InProgress,
    /// Tried; tried again at [`QueueEntry::next_try`] (a store could not answer, the lookup
    /// failed, or another agent of the branch holds the key's lease).
    WaitingForRetry,
    /// No store had it: not asked again before its miss-cache entry expires (SymProxy
    /// `MissTimeout`), dropped after `MissAgeTimeout`.
    MissCached,
}

impl QueueState {
    /// The words people read: `queued`, `in progress`, `waiting for retry`, `miss cached`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Queued => "queued",
            QueueState::InProgress => "in progress",
            QueueState::WaitingForRetry => "waiting for retry",
            QueueState::MissCached => "miss cached",
        }
    }

    /// The metric label: `queued`, `in_progress`, `waiting_for_retry`, `miss_cached`.
    pub fn label(self) -> &'static str {
        match self {
            QueueState::Queued => "queued",
            QueueState::InProgress => "in_progress",
            QueueState::WaitingForRetry => "waiting_for_retry",
            QueueState::MissCached => "miss_cached",
        }
    }

    /// Every state, for counts.
    pub const ALL: [QueueState; 4] = [
        QueueState::Queued,
        QueueState::InProgress,
        QueueState::WaitingForRetry,
        QueueState::MissCached,
    ];
}

/// One request of the branch queue, as the agent knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// `name/index`.
    pub key: String,
    /// Who wants it: an agent id, or `any` (the branch store).
    pub requester: String,
    /// When it was requested, seconds since the epoch.
    pub requested: u64,
    /// What the agent does with it.
    pub state: QueueState,
    /// Why the last try did not complete it (a miss, an unreachable store, a busy lease).
    pub last_error: Option<String>,
    /// When it is tried next, seconds since the epoch (waiting or miss-cached records).
    pub next_try: Option<u64>,
}

/// Hits and bytes of one tier of the agent's chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TierTraffic {
    /// Location.
    pub store: String,
    /// `local`, `branch`, `intermediate` or `upstream` (see [`tier_role`]).
    pub role: String,
    /// Beyond the WAN (see [`is_wan_tier`]): what is read from it crosses the slow link.
    pub wan: bool,
    /// Lookups (and the front's warm hits) this tier answered.
    pub hits: u64,
    /// `hits` / (all tiers' hits + misses): the share of answers that came from this tier;
    /// `None` before the first answer.
    pub hit_ratio: Option<f64>,
    /// Bytes read from it (hits, and corrupt copies refused on the way).
    pub bytes_read: u64,
}

/// Per-tier hits and what crossed the WAN, from the metrics (agent and front together).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// The chain's tiers, in order.
    pub tiers: Vec<TierTraffic>,
    /// Lookups that found the file nowhere.
    pub misses: u64,
    /// Bytes read from stores beyond the WAN (the upstream side of the chain).
    pub wan_bytes_read: u64,
    /// Bytes delivered without crossing the WAN: served to HTTP clients from the front's own
    /// store, copied down from a store on this side of the WAN (branch → local), and every
    /// copy after the first of a file read over the WAN (it crossed once for all of them).
    pub wan_bytes_saved: u64,
    /// Bytes of interrupted WAN transfers that were not read again: the transfer resumed
    /// from its partial (issue #17). Not part of `wan_bytes_saved`.
    #[serde(default)]
    pub wan_bytes_resumed: u64,
    /// Bytes sent to HTTP clients.
    pub bytes_served: u64,
}

/// Whether tier `i` of a chain whose branch store is `branch` lies beyond the WAN: every tier
/// after the branch store (after the local store when there is no branch).
pub fn is_wan_tier(i: usize, branch: Option<usize>) -> bool {
    i > branch.unwrap_or(0)
}

/// Who is moving files in the current task: the agent (for a queue record or a back-fill) or
/// the HTTP front (for a client). Set with [`acting_as`]; read by [`Transfer::of`] and by the
/// in-flight registry of [`Activity`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// `agent <id>`, `agent <id> (back-fill)` or `front`.
    pub by: String,
    /// The queue record's requester, for the agent.
    pub requester: Option<String>,
}

tokio::task_local! {
    static ACTOR: Actor;
}

/// Runs `f` as `actor`: reads and transfers it makes are attributed to it.
pub async fn acting_as<F: std::future::Future>(actor: Actor, f: F) -> F::Output {
    ACTOR.scope(actor, f).await
}

/// The current task's [`Actor`], if [`acting_as`] set one.
pub fn current_actor() -> Option<Actor> {
    ACTOR.try_with(Clone::clone).ok()
}

/// A read of a symbol file under way, for the status' in-flight table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// `name/index` (from the file's path in the store).
    pub key: String,
    /// The store read from.
    pub store: String,
    /// Who reads it (see [`Actor::by`]); empty when unknown.
    pub by: String,
    /// The queue record's requester, for the agent.
    pub requester: Option<String>,
    /// Bytes read so far.
    pub bytes_done: u64,
    /// The file's size, when the store said.
    pub bytes_total: Option<u64>,
    /// Average rate since the read started, bytes per second.
    pub bytes_per_sec: u64,
    /// When it started, seconds since the epoch.
    pub started: u64,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
}

#[derive(Debug)]
struct Live {
    key: String,
    store: String,
    actor: Actor,
    len: Option<u64>,
    done: Arc<AtomicU64>,
    started: Instant,
    started_at: u64,
}

#[derive(Debug)]
struct HealthMemo {
    reachable: bool,
    since: u64,
    last_error: Option<(String, u64)>,
}

/// What the agent and the front of one process are doing, shared by both: reads in flight
/// (fed by [`Activity::sink`], installed on the cascade's stores), the last [`RECENT`]
/// transfers, and each store's health history (since when in its state, last error).
#[derive(Debug, Default)]
pub struct Activity {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, Live>>,
    recent: Mutex<VecDeque<Transfer>>,
    health: Mutex<HashMap<String, HealthMemo>>,
    /// Keys being looked up, by side (`agent`, `front`) and case-folded `name/INDEX`, with how
    /// many lookups of each run.
    lookups: Mutex<HashMap<LookupId, (usize, crate::bandwidth::Promotion)>>,
}

/// A registered lookup: the side (`agent`, `front`) and the case-folded `name/INDEX`.
type LookupId = (&'static str, String);

/// A lookup registered with [`Activity::looking_up`]; dropping it ends the registration.
#[derive(Debug)]
pub struct LookupGuard {
    activity: Arc<Activity>,
    key: LookupId,
    promotion: crate::bandwidth::Promotion,
}

impl LookupGuard {
    /// The lookup's promotion switch: run the lookup inside [`crate::bandwidth::promotable`]
    /// with it, and [`Activity::promote`] moves its background reads to the interactive class.
    pub fn promotion(&self) -> crate::bandwidth::Promotion {
        self.promotion.clone()
    }
}

impl Drop for LookupGuard {
    fn drop(&mut self) {
        let mut l = self.activity.lookups.lock().expect("lookups");
        if let Some((n, _)) = l.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                l.remove(&self.key);
            }
        }
    }
}

fn folded(key: &crate::key::Key) -> String {
    format!(
        "{}/{}",
        key.name().to_ascii_lowercase(),
        key.index().to_ascii_uppercase()
    )
}

impl Activity {
    /// An empty registry.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    /// Registers a lookup of `key` by `side` (`"agent"`, `"front"`) until the guard drops, so
    /// that the other side of the process can tell it is under way
    /// ([`Activity::is_looking_up`]) and wait for it rather than fetch the same file over the
    /// WAN a second time.
    pub fn looking_up(self: &Arc<Self>, side: &'static str, key: &crate::key::Key) -> LookupGuard {
        let key = (side, folded(key));
        let mut l = self.lookups.lock().expect("lookups");
        let e = l.entry(key.clone()).or_default();
        e.0 += 1;
        let promotion = e.1.clone();
        drop(l);
        LookupGuard {
            activity: self.clone(),
            key,
            promotion,
        }
    }

    /// Promotes `side`'s lookup of `key` to the interactive class (a client now waits for
    /// it); `false` when there is none.
    pub fn promote(&self, side: &'static str, key: &crate::key::Key) -> bool {
        let l = self.lookups.lock().expect("lookups");
        match l.get(&(side, folded(key))) {
            Some((_, p)) => {
                p.store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Whether `side` runs a lookup of `key` (in any case) in this process.
    pub fn is_looking_up(&self, side: &'static str, key: &crate::key::Key) -> bool {
        self.lookups
            .lock()
            .expect("lookups")
            .contains_key(&(side, folded(key)))
    }

    /// A progress sink that registers every file a store opens while it is read (for
    /// `store::progress::ProgressOpener`); it holds the registry weakly.
    pub fn sink(self: &Arc<Self>) -> Arc<dyn ProgressSink> {
        Arc::new(ActivitySink(Arc::downgrade(self)))
    }

    /// The reads under way, oldest first.
    pub fn in_flight(&self) -> Vec<InFlight> {
        let live = self.live.lock().expect("live");
        live.values()
            .map(|l| {
                let done = l.done.load(Ordering::Relaxed);
                let elapsed = l.started.elapsed();
                let secs = elapsed.as_secs_f64();
                InFlight {
                    key: l.key.clone(),
                    store: l.store.clone(),
                    by: l.actor.by.clone(),
                    requester: l.actor.requester.clone(),
                    bytes_done: done,
                    bytes_total: l.len,
                    bytes_per_sec: if secs > 0.0 {
                        (done as f64 / secs) as u64
                    } else {
                        0
                    },
                    started: l.started_at,
                    elapsed_ms: elapsed.as_millis() as u64,
                }
            })
            .collect()
    }

    /// Remembers a finished transfer (the last [`RECENT`] are kept).
    pub fn record(&self, t: Transfer) {
        let mut r = self.recent.lock().expect("recent");
        r.push_back(t);
        while r.len() > RECENT {
            r.pop_front();
        }
    }

    /// The recent transfers, newest last.
    pub fn recent(&self) -> VecDeque<Transfer> {
        self.recent.lock().expect("recent").clone()
    }

    /// Fills `since`, `last_error` and `last_error_at` of a fresh health check from what this
    /// process saw before, and remembers this check.
    pub fn observe_health(&self, stores: &mut [StoreHealth]) {
        let now = queue::now_secs();
        let mut memo = self.health.lock().expect("health");
        for s in stores {
            let m = memo.entry(s.store.clone()).or_insert(HealthMemo {
                reachable: s.reachable,
                since: now,
                last_error: None,
            });
            if m.reachable != s.reachable {
                m.reachable = s.reachable;
                m.since = now;
            }
            if let Some(e) = &s.error {
                m.last_error = Some((e.clone(), now));
            }
            s.since = Some(m.since);
            s.last_error = m.last_error.as_ref().map(|(e, _)| e.clone());
            s.last_error_at = m.last_error.as_ref().map(|(_, t)| *t);
        }
    }
}

#[derive(Debug)]
struct ActivitySink(Weak<Activity>);

struct LiveRead {
    id: u64,
    done: Arc<AtomicU64>,
    activity: Weak<Activity>,
}

impl ProgressSink for ActivitySink {
    fn start(
        &self,
        store: &StoreDescription,
        path: &crate::layout::RelPath,
        len: Option<u64>,
    ) -> Option<Box<dyn TransferProgress>> {
        let a = self.0.upgrade()?;
        let c = path.components();
        // `name/index/file` (or `na/name/index/file`): the key is the two before the file.
        let key = match c.len() {
            n if n >= 3 => format!("{}/{}", c[n - 3], c[n - 2]),
            _ => c.join("/"),
        };
        let id = a.next.fetch_add(1, Ordering::Relaxed);
        let done = Arc::new(AtomicU64::new(0));
        let live = Live {
            key,
            store: store.location.clone(),
            actor: current_actor().unwrap_or_default(),
            len,
            done: done.clone(),
            started: Instant::now(),
            started_at: queue::now_secs(),
        };
        a.live.lock().expect("live").insert(id, live);
        Some(Box::new(LiveRead {
            id,
            done,
            activity: self.0.clone(),
        }))
    }
}

impl TransferProgress for LiveRead {
    fn advance(&mut self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }
    fn finish(&mut self, _done: u64) {
        if let Some(a) = self.activity.upgrade() {
            a.live.lock().expect("live").remove(&self.id);
        }
    }
}

/// A span of time for people, two units at most: `0 s`, `45 s`, `3 min 20 s`, `2 h 5 min`,
/// `3 d 4 h`.
pub fn human_span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) if s == 0 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

/// When `at` was, relative to `now` (both seconds since the epoch): `just now`, `3 min ago`,
/// or `in 25 s` for a time to come.
pub fn human_ago(at: u64, now: u64) -> String {
    match at.cmp(&now) {
        std::cmp::Ordering::Equal => "just now".into(),
        std::cmp::Ordering::Less => format!("{} ago", human_span(now - at)),
        std::cmp::Ordering::Greater => format!("in {}", human_span(at - now)),
    }
}

/// The agent's queue, reads in flight and recent transfers as text for `symcascade status`
/// (times relative to `now`, seconds since the epoch; sizes in KiB/MiB/GiB).
pub fn details_text(a: &Status, now: u64) -> String {
    use std::fmt::Write;
    let b = crate::units::bytes;
    let mut o = String::new();
    if a.started > 0 {
        let _ = writeln!(o, "agent up {}", human_span(now.saturating_sub(a.started)));
    }
    if let Some(age) = a.queue_oldest_age_secs {
        let _ = writeln!(o, "queue, oldest first (oldest waits {}):", human_span(age));
    }
    for e in &a.queue {
        let next = e
            .next_try
            .filter(|t| *t > now)
            .map(|t| format!(" (next try {})", human_ago(t, now)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  {:<50} {:<16} {:>10}  {:<17} {}{next}",
            e.key,
            e.requester,
            human_span(now.saturating_sub(e.requested)),
            e.state.as_str(),
            e.last_error.as_deref().unwrap_or(""),
        );
    }
    if !a.transfers.is_empty() {
        o.push_str("in flight:\n");
    }
    for t in &a.transfers {
        let total = t
            .bytes_total
            .map(|n| format!(" of {}", b(n)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  {} by {} from {}: {}{total}, {}/s",
            t.key,
            t.by,
            t.store,
            b(t.bytes_done),
            b(t.bytes_per_sec)
        );
    }
    o.push_str("recent transfers, newest first:\n");
    for t in a.recent.iter().rev().take(10) {
        let _ = writeln!(
            o,
            "  {:<12} {} by {} from {} -> {} ({}, {} ms)",
            human_ago(t.at, now),
            t.key,
            if t.by.is_empty() { "?" } else { &t.by },
            t.found_in,
            t.written.join(", "),
            b(t.bytes_read),
            t.ms
        );
    }
    traffic_text(&mut o, &a.traffic);
    o
}

fn traffic_text(o: &mut String, t: &Traffic) {
    use std::fmt::Write;
    let b = crate::units::bytes;
    o.push_str("tiers:\n");
    for (i, x) in t.tiers.iter().enumerate() {
        let ratio = x
            .hit_ratio
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "-".into());
        let side = if x.wan { "beyond the WAN" } else { "this side" };
        let _ = writeln!(
            o,
            "  {i} {:<12} {:<40} hits {} ({ratio}), read {}, {side}",
            x.role,
            x.store,
            x.hits,
            b(x.bytes_read)
        );
    }
    let _ = writeln!(
        o,
        "WAN bytes read: {}; WAN bytes saved: {} (and {} not read again by resumed transfers); served to debuggers: {}; misses: {}",
        b(t.wan_bytes_read),
        b(t.wan_bytes_saved),
        b(t.wan_bytes_resumed),
        b(t.bytes_served),
        t.misses
    );
}

#[cfg(test)]
mod tests {
    use super::{StoreHealth, Verdict, tier_role, verdict};

    #[test]
    fn health_verdicts() {
        let st = |store: &str, role: &str, reachable: bool, writable: bool| StoreHealth {
            store: store.into(),
            role: role.into(),
            reachable,
            writable,
            free_bytes: None,
            error: (!reachable).then(|| "host down".into()),
            ..StoreHealth::default()
        };
        let local = st("/sym", "local", true, true);
        let branch = st("\\\\B\\S", "branch", true, true);
        let main_ro = st("\\\\M\\S", "upstream", true, false);
        let v = |s: &[StoreHealth], a| verdict(s, a).0;
        let ok = [local.clone(), branch.clone(), main_ro.clone()];
        assert_eq!(
            v(&ok, Some(true)),
            Verdict::Ok,
            "a read-only upstream is normal"
        );
        assert_eq!(v(&ok, None), Verdict::Ok);
        assert_eq!(v(&ok, Some(false)), Verdict::Down);
        let main_down = st("\\\\M\\S", "upstream", false, false);
        let (d, why) = verdict(&[local.clone(), branch.clone(), main_down.clone()], None);
        assert_eq!(d, Verdict::Degraded);
        assert!(
            why.contains("upstream") && why.contains("host down"),
            "{why}"
        );
        let branch_down = st("\\\\B\\S", "branch", false, false);
        assert_eq!(
            v(&[local.clone(), branch_down, main_down], None),
            Verdict::Down
        );
        let branch_ro = st("\\\\B\\S", "branch", true, false);
        let (d, why) = verdict(&[local.clone(), branch_ro, main_ro.clone()], None);
        assert_eq!(d, Verdict::Degraded);
        assert!(why.contains("not writable"), "{why}");
        let http = st(
            "https://msdl.microsoft.com/download/symbols",
            "intermediate",
            true,
            false,
        );
        let v2 = verdict(&[local, http.clone(), http], None).0;
        assert_eq!(v2, Verdict::Ok, "HTTP stores are never written");
    }

    #[test]
    fn tier_roles() {
        let roles = |n, b| (0..n).map(|i| tier_role(i, n, b)).collect::<Vec<_>>();
        assert_eq!(roles(3, Some(1)), ["local", "branch", "upstream"]);
        assert_eq!(roles(2, None), ["local", "upstream"]);
        assert_eq!(roles(2, Some(1)), ["local", "branch"]);
        assert_eq!(
            roles(4, Some(2)),
            ["local", "intermediate", "branch", "upstream"]
        );
    }
    #[test]
    fn human_spans_and_ages() {
        use super::{human_ago, human_span};
        assert_eq!(human_span(0), "0 s");
        assert_eq!(human_span(45), "45 s");
        assert_eq!(human_span(180), "3 min");
        assert_eq!(human_span(200), "3 min 20 s");
        assert_eq!(human_span(7500), "2 h 5 min");
        assert_eq!(human_span(7200), "2 h");
        assert_eq!(human_span(3 * 86_400 + 4 * 3600 + 59), "3 d 4 h");
        assert_eq!(human_ago(100, 100), "just now");
        assert_eq!(human_ago(100, 280), "3 min ago");
        assert_eq!(human_ago(125, 100), "in 25 s");
    }

    #[tokio::test]
    async fn reads_are_in_flight_with_their_actor_until_they_end() {
        use super::{Activity, Actor, acting_as};
        use crate::store::progress::Progress;
        use crate::store::{LocalStore, Store};
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let rel = crate::layout::RelPath::from_safe(["a.pdb", "AB12", "a.pdb"]);
        std::fs::create_dir_all(dir.path().join("a.pdb/AB12")).unwrap();
        std::fs::write(dir.path().join("a.pdb/AB12/a.pdb"), vec![1u8; 600_000]).unwrap();
        let activity = Activity::new();
        let store = Progress::new(
            std::sync::Arc::new(LocalStore::new(dir.path())),
            activity.sink(),
        );
        let actor = Actor {
            by: "agent DESK-1".into(),
            requester: Some("any".into()),
        };
        let mut o = acting_as(actor, store.open(&rel)).await.unwrap().unwrap();
        let mut buf = vec![0u8; 100_000];
        o.reader.read_exact(&mut buf).await.unwrap();
        let live = activity.in_flight();
        assert_eq!(live.len(), 1, "{live:?}");
        let t = &live[0];
        assert_eq!(
            (t.key.as_str(), t.by.as_str(), t.requester.as_deref()),
            ("a.pdb/AB12", "agent DESK-1", Some("any"))
        );
        assert_eq!(t.bytes_total, Some(600_000));
        assert!(t.bytes_done >= 100_000 && t.bytes_done < 600_000, "{t:?}");
        drop(o);
        assert!(activity.in_flight().is_empty(), "a dropped read is over");
        // Without an actor (not the agent's nor the front's), `by` is empty.
        let mut o = store.open(&rel).await.unwrap().unwrap();
        let mut all = Vec::new();
        o.reader.read_to_end(&mut all).await.unwrap();
        assert!(activity.in_flight().is_empty(), "a read to the end is over");
    }

    #[test]
    fn health_history_says_since_when_and_the_last_error() {
        use super::Activity;
        let a = Activity::new();
        let check = |reachable: bool| {
            let mut h = vec![StoreHealth {
                store: "m".into(),
                reachable,
                error: (!reachable).then(|| "host down".into()),
                ..StoreHealth::default()
            }];
            a.observe_health(&mut h);
            h.remove(0)
        };
        let first = check(true);
        assert!(first.since.is_some() && first.last_error.is_none());
        let down = check(false);
        assert!(down.since >= first.since);
        assert_eq!(down.last_error.as_deref(), Some("host down"));
        let up = check(true);
        assert_eq!(
            up.last_error.as_deref(),
            Some("host down"),
            "kept once back"
        );
        assert!(up.last_error_at.is_some() && up.error.is_none());
    }
}
