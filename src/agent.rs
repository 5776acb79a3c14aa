//! The replication agent: watches the branch share's miss queue and replicates each wanted key
//! down the cascade (main → branch → local), durably.
//!
//! Data flow: `daemon` resolves the configured symbol path into a cascade and builds the agent
//! ([`Agent::new`]) over the queue folders on the branch store (`000Cascade/requests|leases|misses|rejected`, see `queue`), and
//! loops: a change notification (SMB CHANGE_NOTIFY or `notify` for local folders) or the periodic
//! rescan lists the requests; each due record is processed by a task (at most `max_parallel`):
//! miss cache check → lease (so one agent of the branch pulls over the WAN) → cascade lookup →
//! back-fills for skipped tiers → record removed. Back-fills are persisted in the agent's state
//! folder and retried with backoff. The agent's [`Status`] goes to the front through a `watch`
//! channel and to `status.json` in the same folder, for `symcascade status`.
//!
//! Semantics: SymSrv's cascade (see `cascade`), SymProxy's `MissTimeout` (a key no upstream has
//! is not asked for again before it expires; shared by the whole branch through the share) and
//! `MissAgeTimeout` (a request that kept missing that long is dropped).

use crate::cascade::{Cascade, Chain, SkipOp};
use crate::config::Config;
use crate::folder::Folder;
use crate::key::Key;
use crate::layout::{self, Form};
use crate::metrics::Metrics;
use crate::queue::{self, Backfill, Lease, Miss, Record};
use crate::report::{
    Activity, Actor, QueueEntry, QueueState, Status, Transfer, acting_as, store_health,
};
use crate::setup::Setup;
use crate::store::StoreError;
use crate::sympath::Location;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent's settings derived from the config.
#[derive(Debug, Clone)]
struct Settings {
    id: String,
    rescan: Duration,
    backfill: Duration,
    miss_timeout: Duration,
    miss_age: Duration,
    lease: Duration,
    max_parallel: usize,
    poll: Option<Duration>,
    grace: Duration,
    temp_max_age: Duration,
    companions: bool,
}

struct Queue {
    requests: Folder,
    leases: Folder,
    misses: Folder,
    rejected: Folder,
}

/// Records read per scan for the status' queue table (a long queue is known after a few
/// scans; the records being worked on are read anyway).
const VIEW_READS_PER_SCAN: usize = 256;

/// What the agent knows of each record of the queue, by file name, for the status: its key,
/// requester and age (read once), and what the last try of it said.
#[derive(Default)]
struct QueueView {
    entries: HashMap<String, QueueEntry>,
}

/// The replication agent of one branch queue (see the module header). Built by the daemon,
/// run by [`Agent::run`].
pub struct Agent {
    s: Settings,
    cascade: Arc<Cascade>,
    chain: Chain,
    branch: Option<usize>,
    /// The chain's store locations, in tier order (the sweeper's local tiers).
    locations: Vec<Location>,
    queue: Queue,
    state_dir: PathBuf,
    status: Mutex<Status>,
    /// The front's view of [`Agent::status`] (in memory; `status.json` is for other processes).
    status_tx: tokio::sync::watch::Sender<Status>,
    backfills: Mutex<HashMap<Backfill, (Instant, u32)>>,
    metrics: Arc<Metrics>,
    /// Reads in flight and recent transfers, shared with the front.
    activity: Arc<Activity>,
    view: Mutex<QueueView>,
}

impl Settings {
    fn from_config(id: &str, config: &Config) -> Settings {
        let a = &config.agent;
        Settings {
            id: id.to_string(),
            rescan: a.rescan_interval,
            backfill: a.backfill_interval,
            miss_timeout: config.cascade.miss_timeout,
            miss_age: config.cascade.miss_age_timeout,
            lease: a.lease_timeout,
            max_parallel: a.max_parallel.max(1),
            poll: a.poll_interval,
            grace: a.shutdown_grace,
            temp_max_age: a.temp_max_age,
            companions: a.companions,
        }
    }
}

impl Agent {
    /// An agent over `setup`'s chain and queue with `config`'s `[agent]` and `[cascade]`
    /// timings; back-fills left by the last run are loaded from the state folder. `status`
    /// receives every status the agent publishes (every 2 s while it runs).
    pub fn new(
        setup: &Setup,
        config: &Config,
        metrics: Arc<Metrics>,
        status: tokio::sync::watch::Sender<Status>,
    ) -> Agent {
        let s = Settings::from_config(&setup.id, config);
        let backfills = load_backfills(&setup.state_dir)
            .into_iter()
            .map(|b| (b, (Instant::now(), 0)))
            .collect();
        let stores = (setup.chain.tiers.iter())
            .map(|t| t.store().describe().location)
            .collect();
        metrics.set_chain(stores, setup.branch);
        let mut first = status.borrow().clone();
        first.started = queue::now_secs();
        Agent {
            metrics,
            activity: setup.activity.clone(),
            view: Mutex::new(QueueView::default()),
            queue: Queue {
                requests: setup.admin.join(queue::REQUESTS),
                leases: setup.admin.join(queue::LEASES),
                misses: setup.admin.join(queue::MISSES),
                rejected: setup.admin.join(queue::REJECTED),
            },
            status: Mutex::new(first),
            status_tx: status.clone(),
            backfills: Mutex::new(backfills),
            s,
            cascade: setup.cascade.clone(),
            chain: setup.chain.clone(),
            branch: setup.branch,
            locations: setup.locations.clone(),
            state_dir: setup.state_dir.clone(),
        }
    }
}

impl Agent {
    /// Watches and works the queue until `shutdown` completes, then lets in-flight
    /// replications finish within `agent.shutdown_grace` (dropping the rest, whose temp files
    /// are discarded) and publishes a last status.
    pub async fn run(self: &Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut watch = None;
        let mut rescan = tokio::time::interval(self.s.rescan);
        let mut backfill = tokio::time::interval(self.s.backfill.min(self.s.rescan));
        let mut health = tokio::time::interval(Duration::from_secs(30));
        // First tick at once: leftovers of a crash are removed at start.
        let mut sweep = tokio::time::interval(Duration::from_secs(3600));
        let mut publish = tokio::time::interval(Duration::from_secs(2));
        let mut tasks = tokio::task::JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut due: HashMap<String, (Instant, u32)> = HashMap::new();
        // The last listing of the queue: a freed slot is filled from it, without listing the
        // share again (with 1,000 records queued, a listing per finished record made the
        // agent spend ~140 ms per record listing; CI finding).
        let mut listed: Vec<String> = Vec::new();
        let (mut scan_now, mut fill_now) = (true, false);
        loop {
            if watch.is_none() {
                match self.queue.requests.watch(self.s.poll).await {
                    Ok(rx) => watch = Some(rx),
                    Err(e) => tracing::debug!("queue watch unavailable, rescanning only: {e}"),
                }
            }
            if scan_now {
                scan_now = false;
                if let Some(names) = self.list_queue(&mut due).await {
                    listed = names;
                }
                fill_now = true;
            }
            if fill_now {
                fill_now = false;
                self.start_due(&listed, &mut tasks, &mut in_flight, &due);
            }
            let watched = async {
                match watch.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                w = watched => {
                    if w.is_none() {
                        watch = None;
                    }
                    // Coalesce a burst of notifications into one listing.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    scan_now = true;
                }
                _ = rescan.tick() => scan_now = true,
                _ = backfill.tick() => self.run_backfills().await,
                _ = health.tick() => {
                    let mut h = store_health(&self.chain, self.branch, Duration::from_secs(10)).await;
                    self.activity.observe_health(&mut h);
                    self.metrics.set_store_health(&h);
                    self.status.lock().expect("status").stores = h;
                }
                _ = publish.tick() => self.publish_status(&in_flight),
                _ = sweep.tick() => self.sweep_local_tiers(),
                Some(done) = tasks.join_next_with_id() => {
                    self.finished(done, &mut in_flight, &mut due);
                    // Work of the last listing may be waiting for a free slot.
                    fill_now = true;
                }
            }
        }
        self.drain(tasks).await;
        self.publish_status(&HashMap::new());
    }

    /// Schedules a finished record's next turn in `due`.
    fn finished(
        &self,
        done: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
        in_flight: &mut HashMap<tokio::task::Id, String>,
        due: &mut HashMap<String, (Instant, u32)>,
    ) {
        let (id, outcome) = match done {
            Ok((id, o)) => (id, Some(o)),
            Err(e) => (e.id(), None),
        };
        let Some(name) = in_flight.remove(&id) else {
            return;
        };
        let next = match outcome {
            // Not at once again even if still listed: a share that takes a delete without
            // doing it (Samba over a read-only mount) would otherwise re-run the record in a
            // tight loop. A record that is gone is forgotten at the next scan.
            Some(Outcome::Done) => (Instant::now() + self.s.rescan, 0),
            Some(Outcome::Retry(after)) => {
                let tries = due.get(&name).map(|d| d.1 + 1).unwrap_or(1);
                (Instant::now() + after, tries)
            }
            None => (Instant::now() + self.s.rescan, 1),
        };
        due.insert(name, next);
    }

    /// Graceful stop: no new work; in-flight replications finish within the grace, the rest
    /// are abandoned (their temp files are discarded).
    async fn drain(&self, mut tasks: tokio::task::JoinSet<Outcome>) {
        tracing::info!(in_flight = tasks.len(), "stopping");
        let grace = tokio::time::sleep(self.s.grace);
        tokio::pin!(grace);
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = &mut grace => {
                    tracing::warn!(left = tasks.len(), "grace period over: abandoning in-flight copies (their temp files are discarded)");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                }
            }
        }
    }

    /// Lists the queue (sorted names), counts the scan, forgets records that are gone and
    /// reads new ones into the queue view. `None` when the folder cannot be listed.
    async fn list_queue(&self, due: &mut HashMap<String, (Instant, u32)>) -> Option<Vec<String>> {
        let names = match self.queue.requests.list().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("cannot list the queue: {e}");
                return None;
            }
        };
        self.status.lock().expect("status").scans += 1;
        self.status.lock().expect("status").queue_depth = names.len();
        // Forget records that are gone, so the map stays as small as the queue.
        due.retain(|n, _| names.binary_search(n).is_ok());
        self.refresh_view(&names).await;
        Some(names)
    }

    /// Starts tasks for the due records of `names` while slots are free (`max_parallel`).
    fn start_due(
        self: &Arc<Self>,
        names: &[String],
        tasks: &mut tokio::task::JoinSet<Outcome>,
        in_flight: &mut HashMap<tokio::task::Id, String>,
        due: &HashMap<String, (Instant, u32)>,
    ) {
        let now = Instant::now();
        for name in names {
            if tasks.len() >= self.s.max_parallel {
                break;
            }
            if !name.ends_with(".req") || in_flight.values().any(|n| n == name) {
                continue;
            }
            if due.get(name).is_some_and(|(t, _)| *t > now) {
                continue;
            }
            // Cheap filter by name; the record's content is authoritative.
            if !may_be_for(name, &self.s.id) {
                continue;
            }
            let tries = due.get(name).map(|d| d.1).unwrap_or(0);
            let me = self.clone();
            let n = name.clone();
            let h = tasks.spawn(async move { me.process(&n, tries).await });
            in_flight.insert(h.id(), name.clone());
        }
    }

    /// Processes one record; says when to look at it again if it stays.
    async fn process(&self, name: &str, tries: u32) -> Outcome {
        let (requester, key, known_miss) = match self.admit(name, tries).await {
            Ok(k) => k,
            Err(outcome) => return outcome,
        };
        let actor = Actor {
            by: format!("agent {}", self.s.id),
            requester: Some(requester.clone()),
        };
        // Queue work is background: its remote reads are capped by `[bandwidth] background`.
        let work = acting_as(actor, self.replicate(name, &key, known_miss, tries));
        let outcome = crate::bandwidth::in_background(work).await;
        if matches!(outcome, Outcome::Done) && self.s.companions {
            self.companion(&requester, &key).await;
        }
        outcome
    }

    /// Companion prefetch for the queue (issue #17 item 3): when the image `image` arrived in
    /// the local store, its CodeView record names the PDB the debugger asks for next. The PDB
    /// is queued for the same requester (a record like any: it survives a crash, other agents
    /// see it, misses are cached) and replicated at once by this task at interactive priority:
    /// someone is waiting at a debugger. A PDB already local is left alone.
    async fn companion(&self, requester: &str, image: &Key) {
        let lower = image.name().to_ascii_lowercase();
        if ![".dll", ".exe", ".sys"].iter().any(|e| lower.ends_with(e)) {
            return;
        }
        let local = &self.chain.tiers[0];
        let Ok(tiering) = local.tiering().await else {
            return;
        };
        let at = |k: &Key| layout::path_for(k, tiering, Form::Plain);
        let Ok(Some(meta)) = local.store().stat(&at(image)).await else {
            return;
        };
        let Some(p) = meta.local_path else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || Key::from_file(&p, crate::key::PeKey::Pdb));
        let Ok(Ok(pdb)) = read.await else {
            return;
        };
        // Already local, or being fetched by the front of this process: nothing to do.
        if self.activity.is_looking_up("front", &pdb)
            || matches!(local.store().stat(&at(&pdb)).await, Ok(Some(_)))
        {
            return;
        }
        let Ok(record) = Record::new(&pdb, requester) else {
            return;
        };
        let name = record.file_name();
        if let Err(e) = self
            .queue
            .requests
            .create_new(&name, &record.to_bytes())
            .await
        {
            tracing::debug!(key = %pdb, "companion not queued: {e}");
            return;
        }
        tracing::info!(key = %pdb, image = %image, "companion PDB queued");
        let actor = Actor {
            by: format!("agent {}", self.s.id),
            requester: Some(requester.to_string()),
        };
        let done = acting_as(actor, self.replicate(&name, &pdb, None, 0)).await;
        if matches!(done, Outcome::Done) {
            self.metrics.companion_fetched();
        }
    }

    /// Replicates an admitted record's key: lease, cascade lookup, back-fills or miss entry.
    async fn replicate(
        &self,
        name: &str,
        key: &Key,
        known_miss: Option<Miss>,
        tries: u32,
    ) -> Outcome {
        // Lease: one agent of the branch pulls a key over the WAN at a time.
        let lease_file = queue::key_file(key, "lease");
        match self.take_lease(&lease_file, tries).await {
            LeaseState::Held => {}
            LeaseState::Busy(left) => {
                let after = left.min(Duration::from_secs(1));
                let why = "another agent of the branch holds the key's lease".to_string();
                return self.retry(name, QueueState::WaitingForRetry, why, after);
            }
            LeaseState::Unavailable => {}
        }
        let registered = self.activity.looking_up("agent", key);
        // A client that comes to wait for this key promotes the reads to interactive.
        let promotion = registered.promotion();
        let lookup = crate::bandwidth::promotable(promotion, self.cascade.lookup(key)).await;
        drop(registered);
        let _ = self.queue.leases.remove(&lease_file).await;
        let lookup = match lookup {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(key = %key, "lookup failed: {e}");
                let why = format!("lookup failed: {e}");
                return self.retry(name, QueueState::WaitingForRetry, why, self.s.rescan);
            }
        };
        self.metrics.record_lookup(&lookup);
        self.count(&lookup);
        match &lookup.fetched {
            Some(_) => self.finish_hit(name, key, &lookup).await,
            None if !lookup.is_definitive_miss() => {
                // Some store could not answer: not a definitive miss. Keep the record. (A
                // corrupt file is an answer: it is cached as a miss below, with its reason.)
                tracing::info!(key = %key, "not found while some stores were unreachable; will retry");
                let why = lookup
                    .skipped
                    .iter()
                    .filter(|s| s.op == SkipOp::Read)
                    .map(|s| format!("{}: {}", s.store, s.detail))
                    .collect::<Vec<_>>()
                    .join("; ");
                let why = format!("not found while some stores could not answer: {why}");
                self.retry(name, QueueState::WaitingForRetry, why, self.s.rescan)
            }
            None => {
                let outcome = self.finish_miss(key, known_miss, &lookup).await;
                let why = lookup
                    .miss_reason()
                    .unwrap_or_else(|| "no store has it".into());
                self.retry(name, QueueState::MissCached, why, self.s.miss_timeout);
                outcome
            }
        }
    }

    /// Notes in the queue view why record `name` waits and when it is tried again; the
    /// outcome that makes it wait `after`.
    fn retry(&self, name: &str, state: QueueState, why: String, after: Duration) -> Outcome {
        if let Some(e) = self.view.lock().expect("view").entries.get_mut(name) {
            e.state = state;
            e.last_error = Some(why);
            e.next_try = Some(queue::now_secs() + after.as_secs());
        }
        Outcome::Retry(after)
    }

    /// Reads the records of `names` the queue view does not know yet (at most
    /// [`VIEW_READS_PER_SCAN`], 16 at a time) and forgets those that are gone. Unreadable or
    /// malformed records are left out (the agent rejects malformed ones when it gets to them).
    async fn refresh_view(&self, names: &[String]) {
        use futures_util::StreamExt;
        let unknown: Vec<String> = {
            let mut v = self.view.lock().expect("view");
            v.entries.retain(|n, _| names.binary_search(n).is_ok());
            names
                .iter()
                .filter(|n| n.ends_with(".req") && !v.entries.contains_key(*n))
                .take(VIEW_READS_PER_SCAN)
                .cloned()
                .collect()
        };
        let read = futures_util::stream::iter(unknown)
            .map(|n| async move {
                let bytes = self.queue.requests.read(&n).await.ok().flatten()?;
                Record::parse(&bytes).ok().map(|(r, k)| (n, r, k))
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        for (n, r, k) in read.into_iter().flatten() {
            self.remember(&n, &r, &k);
        }
    }

    /// Adds record `name` to the queue view (kept as is when known).
    fn remember(&self, name: &str, record: &Record, key: &Key) {
        let mut v = self.view.lock().expect("view");
        v.entries.entry(name.to_string()).or_insert(QueueEntry {
            key: key.to_string(),
            requester: record.requester.clone(),
            requested: record.requested,
            state: QueueState::Queued,
            last_error: None,
            next_try: None,
        });
    }

    /// The queue view for a status: the [`crate::report::QUEUE_SHOWN`] oldest requests
    /// (records being worked on are `in progress`; a wait that is over is `queued` again),
    /// the oldest request's age, and the count per state.
    fn queue_snapshot(
        &self,
        in_flight: &HashMap<tokio::task::Id, String>,
    ) -> (Vec<QueueEntry>, Option<u64>, Vec<(QueueState, usize)>) {
        let now = queue::now_secs();
        let busy: std::collections::HashSet<&String> = in_flight.values().collect();
        let mut all: Vec<QueueEntry> = self
            .view
            .lock()
            .expect("view")
            .entries
            .iter()
            .map(|(n, e)| {
                let mut e = e.clone();
                if busy.contains(n) {
                    e.state = QueueState::InProgress;
                } else if e.next_try.is_none_or(|t| t <= now) {
                    e.state = QueueState::Queued;
                }
                e
            })
            .collect();
        all.sort_by(|a, b| (a.requested, &a.key).cmp(&(b.requested, &b.key)));
        let oldest = all.first().map(|e| now.saturating_sub(e.requested));
        let counts = QueueState::ALL
            .iter()
            .map(|s| (*s, all.iter().filter(|e| e.state == *s).count()))
            .collect();
        all.truncate(crate::report::QUEUE_SHOWN);
        (all, oldest, counts)
    }

    /// Reads record `name` and decides whether to work on it now: `Ok` with its key and the
    /// branch's miss entry for it (SymProxy `MissTimeout`, shared through the share), or the
    /// outcome when not (gone, not ours, malformed: rejected, a miss not yet expired, or one
    /// older than `MissAgeTimeout`: dropped).
    async fn admit(&self, name: &str, tries: u32) -> Result<(String, Key, Option<Miss>), Outcome> {
        let q = &self.queue;
        let bytes = match q.requests.read(name).await {
            Ok(Some(b)) => b,
            Ok(None) => return Err(Outcome::Done),
            Err(e) => {
                tracing::debug!("reading record {name}: {e}");
                return Err(Outcome::Retry(self.s.rescan));
            }
        };
        if bytes.is_empty() && tries < 5 {
            // An SMB writer creates the file, then writes it: give it a moment.
            return Err(Outcome::Retry(Duration::from_secs(1)));
        }
        let (record, key) = match Record::parse(&bytes) {
            Ok(r) => r,
            Err(e) => {
                self.reject(name, &bytes, &e.to_string()).await;
                return Err(Outcome::Done);
            }
        };
        self.remember(name, &record, &key);
        if !record.requester.eq_ignore_ascii_case(&self.s.id) && record.requester != queue::ANY {
            return Err(Outcome::Retry(self.s.rescan * 10));
        }
        let known_miss = match q.misses.read(&queue::key_file(&key, "miss")).await {
            Ok(Some(b)) => serde_json::from_slice::<Miss>(&b).ok(),
            _ => None,
        };
        let now = queue::now_secs();
        if let Some(m) = &known_miss {
            if now.saturating_sub(m.first) >= self.s.miss_age.as_secs() {
                tracing::info!(key = %key, "no store had it for MissAgeTimeout: dropping the request");
                let _ = q.requests.remove(name).await;
                return Err(Outcome::Done);
            }
            if m.expires > now {
                let why = m.reason.clone().unwrap_or_else(|| "no store has it".into());
                let after = Duration::from_secs(m.expires - now);
                return Err(self.retry(name, QueueState::MissCached, why, after));
            }
        }
        Ok((record.requester, key, known_miss))
    }

    /// Counts a lookup in the status: lookups, hits, bytes read per store (corrupt files
    /// refused on the way were downloaded too); its transfer goes to the recent ones.
    fn count(&self, lookup: &crate::cascade::Lookup) {
        let mut st = self.status.lock().expect("status");
        st.lookups += 1;
        for sk in lookup.skipped.iter().filter(|s| s.bytes_read > 0) {
            *st.bytes_read.entry(sk.store.clone()).or_default() += sk.bytes_read;
        }
        if let Some(f) = &lookup.fetched {
            st.hits += 1;
            *st.bytes_read.entry(f.found_in.clone()).or_default() += f.bytes_read;
            if let Some(t) = Transfer::of(lookup) {
                self.activity.record(t);
            }
        }
    }

    /// A hit: every store of the chain a copy could not be written into gets a back-fill
    /// (retried with backoff, persisted), and the record is removed.
    async fn finish_hit(&self, name: &str, key: &Key, lookup: &crate::cascade::Lookup) -> Outcome {
        let chain_stores: Vec<String> = self
            .chain
            .tiers
            .iter()
            .map(|t| t.store().describe().location)
            .collect();
        let mut added = false;
        for sk in lookup.skipped.iter().filter(|s| s.op == SkipOp::Write) {
            if chain_stores.contains(&sk.store) {
                let b = Backfill {
                    name: key.name().to_string(),
                    index: key.index().to_string(),
                    store: sk.store.clone(),
                };
                tracing::info!(key = %key, store = %sk.store, reason = %sk.kind, "back-fill pending");
                self.backfills
                    .lock()
                    .expect("backfills")
                    .insert(b, (Instant::now() + self.s.backfill, 0));
                added = true;
            }
        }
        if added {
            self.save_backfills();
        }
        match self.queue.requests.remove(name).await {
            Ok(()) => Outcome::Done,
            Err(e) => {
                tracing::debug!("removing record {name}: {e}");
                Outcome::Retry(self.s.rescan)
            }
        }
    }

    /// A definitive miss: written to the branch's miss cache (SymProxy `MissTimeout`), with
    /// the reason when only corrupt copies were found; the record stays and is retried when
    /// the entry expires (until `MissAgeTimeout`).
    async fn finish_miss(
        &self,
        key: &Key,
        known_miss: Option<Miss>,
        lookup: &crate::cascade::Lookup,
    ) -> Outcome {
        self.status.lock().expect("status").misses += 1;
        let first = known_miss.map(|m| m.first).unwrap_or(queue::now_secs());
        let reason = lookup.miss_reason();
        if let Some(r) = &reason {
            tracing::warn!(key = %key, "only corrupt copies found; cached as a miss: {r}");
        }
        let entry = Miss {
            expires: queue::expires_in(self.s.miss_timeout),
            first,
            reason,
        };
        let miss_file = queue::key_file(key, "miss");
        let _ = self.queue.misses.remove(&miss_file).await;
        let bytes = serde_json::to_vec(&entry).expect("miss serialises");
        if let Err(e) = self.queue.misses.create_new(&miss_file, &bytes).await {
            tracing::debug!("writing miss entry: {e}");
        }
        Outcome::Retry(self.s.miss_timeout)
    }

    /// Removes temp files older than `agent.temp_max_age` from every local tier, in the
    /// background (it walks the whole store). SMB temp files need no sweep: they are
    /// delete-pending until renamed, so the server removes those of a dead writer.
    fn sweep_local_tiers(&self) {
        for loc in &self.locations {
            let Location::Local { path } = loc else {
                continue;
            };
            let (store, age) = (crate::store::LocalStore::new(path), self.s.temp_max_age);
            tokio::task::spawn_blocking(move || match store.sweep_stale_temps(age) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(store = %store.root().display(), files = n, "removed temp files left by dead writers")
                }
                Err(e) => tracing::debug!(store = %store.root().display(), "temp sweep: {e}"),
            });
        }
    }

    async fn take_lease(&self, file: &str, tries: u32) -> LeaseState {
        let leases = &self.queue.leases;
        for _ in 0..2 {
            let lease = Lease {
                holder: self.s.id.clone(),
                expires: queue::expires_in(self.s.lease),
            };
            let bytes = serde_json::to_vec(&lease).expect("lease serialises");
            match leases.create_new(file, &bytes).await {
                Ok(true) => return LeaseState::Held,
                Ok(false) => {}
                Err(e) => {
                    // A branch that cannot hold leases must not stop replication.
                    tracing::debug!("lease unavailable: {e}");
                    return LeaseState::Unavailable;
                }
            }
            let raw = leases.read(file).await.ok().flatten();
            let current = raw
                .as_ref()
                .and_then(|b| serde_json::from_slice::<Lease>(b).ok());
            let now = queue::now_secs();
            match current {
                Some(l) if l.holder != self.s.id && l.expires > now => {
                    return LeaseState::Busy(Duration::from_secs(l.expires - now));
                }
                // On SMB a lease is created, then written: an empty one is being written now.
                // Only a lease that stays unreadable over several tries is taken over.
                None if raw.is_some() && tries < 5 => {
                    return LeaseState::Busy(Duration::from_secs(1));
                }
                // Expired, ours from before a restart, or unreadable: take it over.
                _ => {
                    let _ = leases.remove(file).await;
                }
            }
        }
        LeaseState::Busy(Duration::from_secs(1))
    }

    async fn reject(&self, name: &str, bytes: &[u8], reason: &str) {
        tracing::warn!(record = %name, %reason, "malformed request record moved aside");
        let q = &self.queue;
        let _ = q.rejected.create_new(name, bytes).await;
        let _ = q
            .rejected
            .create_new(&format!("{name}.reason"), reason.as_bytes())
            .await;
        if let Err(e) = q.requests.remove(name).await {
            tracing::warn!("cannot remove rejected record {name}: {e}");
        }
    }

    /// Retries due back-fills: copies the file from a tier that has it into the store that
    /// was skipped.
    async fn run_backfills(&self) {
        let due: Vec<(Backfill, u32)> = {
            let now = Instant::now();
            self.backfills
                .lock()
                .expect("backfills")
                .iter()
                .filter(|(_, (t, _))| *t <= now)
                .map(|(b, (_, n))| (b.clone(), *n))
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let mut changed = false;
        for (b, attempts) in due {
            let actor = Actor {
                by: format!("agent {} (back-fill)", self.s.id),
                requester: None,
            };
            let work = acting_as(actor, self.backfill_one(&b));
            let done = match crate::bandwidth::in_background(work).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(store = %b.store, key = %format!("{}/{}", b.name, b.index), "back-fill not yet possible: {e}");
                    false
                }
            };
            let mut map = self.backfills.lock().expect("backfills");
            if done {
                tracing::info!(store = %b.store, key = %format!("{}/{}", b.name, b.index), "back-fill done");
                map.remove(&b);
                changed = true;
            } else {
                let wait = (self.s.backfill * 2u32.saturating_pow(attempts.min(5)))
                    .min(Duration::from_secs(600));
                map.insert(b, (Instant::now() + wait, attempts + 1));
            }
        }
        if changed {
            self.save_backfills();
        }
    }

    async fn backfill_one(&self, b: &Backfill) -> Result<(), StoreError> {
        let key = Key::new(&b.name, &b.index).map_err(|e| {
            StoreError::new(
                &b.store,
                "backfill",
                "",
                crate::store::StoreErrorKind::Corrupt,
                e.to_string(),
            )
        })?;
        let Some(target) = self
            .chain
            .tiers
            .iter()
            .find(|t| t.store().describe().location == b.store)
        else {
            return Ok(()); // no longer in the chain: nothing to do
        };
        for source in self.chain.tiers.iter().filter(|t| !Arc::ptr_eq(t, target)) {
            for form in [Form::Plain, Form::Compressed] {
                let Ok(st) = source.tiering().await else {
                    break;
                };
                let p = layout::path_for(&key, st, form);
                let Ok(Some(o)) = source.store().open(&p).await else {
                    continue;
                };
                // Nothing unverified goes into a store (issue #10): a bad copy in one tier (an
                // older tool's, a crashed writer's) must not spread; the next tier may be good.
                let spool = match self.spool_verified(o, &key, form).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(store = %source.store().describe().location, key = %key, "back-fill source refused: {e}");
                        continue;
                    }
                };
                let tt = target.tiering().await?;
                let dest = layout::path_for(&key, tt, form);
                let len = spool.as_file().metadata().map(|m| m.len()).ok();
                let mut f = tokio::fs::File::open(spool.path()).await.map_err(|e| {
                    StoreError::from_io("spool", "open", spool.path().display(), &e)
                })?;
                target.store().put(&dest, &mut f, len).await?;
                let source = source.store().describe().location;
                self.metrics.copied(&source, len.unwrap_or(0));
                return Ok(());
            }
        }
        Err(StoreError::new(
            &b.store,
            "backfill",
            "",
            crate::store::StoreErrorKind::Unreachable,
            "no tier holds the file any more",
        ))
    }

    /// Reads `o` (the key's file in `form`) into a spool file and verifies it as the cascade
    /// verifies a hit (`verify`): PE/PDB content with the key's key, a whole one-member CAB.
    async fn spool_verified(
        &self,
        mut o: crate::store::Opened,
        key: &Key,
        form: Form,
    ) -> Result<tempfile::NamedTempFile, String> {
        let opts = self.cascade.options();
        let dir = opts.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let spool = crate::spool::new_spool_file(&dir).map_err(|e| e.to_string())?;
        let mut out =
            tokio::fs::File::from_std(spool.as_file().try_clone().map_err(|e| e.to_string())?);
        let n = tokio::io::copy(&mut o.reader, &mut out)
            .await
            .map_err(|e| e.to_string())?;
        tokio::io::AsyncWriteExt::flush(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        if o.len.is_some_and(|want| want != n) {
            return Err(format!("expected {:?} bytes, read {n}", o.len));
        }
        let (p, k, cap) = (spool.path().to_path_buf(), key.clone(), opts.max_expanded);
        tokio::task::spawn_blocking(move || match form {
            Form::Compressed => crate::verify::verify_cab(&p, &k, cap, &dir, false).map(|_| ()),
            _ => crate::verify::verify_plain(&p, &k),
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(spool)
    }

    fn save_backfills(&self) {
        let list: Vec<Backfill> = self
            .backfills
            .lock()
            .expect("backfills")
            .keys()
            .cloned()
            .collect();
        if let Err(e) = write_atomic(
            &self.state_dir.join("backfills.json"),
            &serde_json::to_vec_pretty(&list).expect("json"),
        ) {
            tracing::warn!("cannot save back-fills: {e}");
        }
    }

    fn publish_status(&self, in_flight: &HashMap<tokio::task::Id, String>) {
        let (entries, oldest, counts) = self.queue_snapshot(in_flight);
        self.metrics.set_queue(oldest.unwrap_or(0), &counts);
        let mut st = self.status.lock().expect("status").clone();
        st.updated = queue::now_secs();
        st.in_flight = in_flight.len();
        st.queue = entries;
        st.queue_oldest_age_secs = oldest;
        st.transfers = self.activity.in_flight();
        self.metrics.set_reads_in_flight(st.transfers.len());
        st.recent = self.activity.recent();
        st.traffic = self.metrics.traffic();
        st.bandwidth = self.metrics.bandwidth();
        st.backfills = self
            .backfills
            .lock()
            .expect("backfills")
            .keys()
            .cloned()
            .collect();
        self.metrics.set_agent(st.queue_depth, st.backfills.len());
        if let Err(e) = write_atomic(
            &self.state_dir.join("status.json"),
            &serde_json::to_vec_pretty(&st).expect("json"),
        ) {
            tracing::debug!("cannot write status: {e}");
        }
        self.status_tx.send_replace(st);
    }
}

/// Whether record file `<index>-<requester>-<name>.req` may be for agent `id` (or for
/// [`queue::ANY`]): a cheap filter on the exact prefix, so a scan reads only records that may
/// be ours. Both ids and names may contain `-` (`DESKTOP-4F2K9Q1`,
/// `api-ms-win-core-file-l1-1-0.dll`), so the file name alone cannot say whose a record is;
/// a record that passes is decided by its content (`Record::requester`). Indexes hold no `-`.
fn may_be_for(file: &str, id: &str) -> bool {
    let Some((_index, rest)) = file.split_once('-') else {
        return false;
    };
    // Host names are case-insensitive on Windows: `desktop-4f2k9q1` is the same machine.
    [id, queue::ANY].iter().any(|r| {
        rest.get(..r.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(r))
            && rest[r.len()..].starts_with('-')
    })
}

enum Outcome {
    Done,
    Retry(Duration),
}

enum LeaseState {
    Held,
    Busy(Duration),
    Unavailable,
}

fn load_backfills(dir: &Path) -> Vec<Backfill> {
    std::fs::read(dir.join("backfills.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // Readable by other accounts: `symcascade status` run by a user reads the service's file.
    let mut tmp = crate::store::local::shared_tempfile(dir, ".status.", ".symcascade-tmp")?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::may_be_for;

    #[test]
    fn record_names_match_hyphenated_and_underscore_ids_exactly() {
        let i = "1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21";
        let cases: &[(&str, &str, bool)] = &[
            // Windows' default host names and the README's ids hold `-`.
            ("DESKTOP-4F2K9Q1", "-DESKTOP-4F2K9Q1-ntdll.pdb.req", true),
            ("DESK-0042", "-DESK-0042-ntdll.pdb.req", true),
            (
                "BRANCH-A-SRV",
                "-BRANCH-A-SRV-api-ms-win-core-l1-1-0.dll.req",
                true,
            ),
            ("desk_1", "-desk_1-ntdll.pdb.req", true),
            ("desktop-4f2k9q1", "-DESKTOP-4F2K9Q1-ntdll.pdb.req", true),
            // Branch-wide requests are for every agent.
            ("DESK-0042", "-any-ntdll.pdb.req", true),
            // Another agent's record.
            ("DESK-0042", "-DESK-0043-ntdll.pdb.req", false),
            ("DESK-0042", "-desk_1-ntdll.pdb.req", false),
            // A prefix of another id passes the filter; the record's content decides.
            ("DESK", "-DESK-0042-ntdll.pdb.req", true),
            ("DESK-00", "-DESK-0042-ntdll.pdb.req", false),
            ("DESK", "", false),
        ];
        for (id, tail, want) in cases {
            let file = if tail.is_empty() {
                "garbage".to_string()
            } else {
                format!("{i}{tail}")
            };
            assert_eq!(may_be_for(&file, id), *want, "{id} / {file}");
        }
    }
}
