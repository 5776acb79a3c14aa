//! The replication agent: watches the branch share's miss queue and replicates each wanted key
//! down the cascade (main → branch → local), durably.
//!
//! Data flow: [`run`] resolves the configured symbol path into a cascade, opens the queue
//! folders on the branch store (`000Cascade/requests|leases|misses|rejected`, see `queue`), and
//! loops: a change notification (SMB CHANGE_NOTIFY or `notify` for local folders) or the periodic
//! rescan lists the requests; each due record is processed by a task (at most `max_parallel`):
//! miss cache check → lease (so one agent of the branch pulls over the WAN) → cascade lookup →
//! back-fills for skipped tiers → record removed. Back-fills are persisted in the agent's state
//! folder and retried with backoff. `status.json` in the same folder feeds `symcascade status`.
//!
//! Semantics: SymSrv's cascade (see `cascade`), SymProxy's `MissTimeout` (a key no upstream has
//! is not asked for again before it expires; shared by the whole branch through the share) and
//! `MissAgeTimeout` (a request that kept missing that long is dropped).

use crate::cascade::{Cascade, Chain, SkipOp};
use crate::config::Config;
use crate::folder::Folder;
use crate::key::Key;
use crate::layout::{self, Form};
use crate::queue::{self, Backfill, Lease, Miss, Record};
use crate::smb::{Credentials, SmbClient, SmbStore};
use crate::store::{StoreError, Transports};
use crate::sympath::{Location, SymbolPath};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the agent could not start (once running, failures are logged and retried, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable for an agent.
    #[error("config: {0}")]
    Config(String),
    /// A config value that cannot work for an agent (names the key).
    #[error("config: {0}")]
    Invalid(#[from] crate::config::InvalidConfig),
    /// The HTTP front cannot start (bad `[http]` settings, or the address is taken).
    #[error("HTTP front: {0}")]
    Front(#[from] crate::front::FrontError),
    /// The state folder cannot be used.
    #[error("state folder {path}: {source}")]
    State {
        /// The folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Health of one store, as last checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

impl Transfer {
    /// The transfer a lookup made, `None` for a miss. `at` is now.
    pub fn of(lookup: &crate::cascade::Lookup) -> Option<Transfer> {
        let f = lookup.fetched.as_ref()?;
        Some(Transfer {
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
    /// Requests in the queue at the last scan (all requesters).
    pub queue_depth: usize,
    /// Records being processed now.
    pub in_flight: usize,
    /// Pending back-fills.
    pub backfills: Vec<Backfill>,
    /// Store health.
    pub stores: Vec<StoreHealth>,
    /// Recent transfers, newest last (at most 20).
    pub recent: VecDeque<Transfer>,
    /// Cascade lookups run (each asks every store it needs once).
    pub lookups: u64,
    /// Lookups that found the file.
    pub hits: u64,
    /// Lookups that found nothing anywhere (a miss-cache entry was written).
    pub misses: u64,
    /// Bytes read from each source store, by location.
    pub bytes_read: HashMap<String, u64>,
}

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
}

struct Queue {
    requests: Folder,
    leases: Folder,
    misses: Folder,
    rejected: Folder,
}

struct Agent {
    s: Settings,
    cascade: Arc<Cascade>,
    chain: Chain,
    branch: Option<usize>,
    /// The chain's store locations, in tier order (the sweeper's local tiers).
    locations: Vec<Location>,
    queue: Queue,
    state_dir: PathBuf,
    status: Mutex<Status>,
    backfills: Mutex<HashMap<Backfill, (Instant, u32)>>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Everything `run` and the CLI's `request`/`prefetch`/`status` need from a config: the
/// cascade, the chain, the branch queue and the agent's state folder.
pub struct Setup {
    /// The agent id.
    pub id: String,
    /// The resolved cascade.
    pub cascade: Arc<Cascade>,
    /// The chain the agent replicates (the first `srv*` element).
    pub chain: Chain,
    /// Index of the branch store (the queue holder) in `chain.tiers`; `None` when the queue is
    /// off and the chain has no store between local and upstream.
    pub branch: Option<usize>,
    /// `<branch>/000Cascade`.
    pub admin: Folder,
    /// The agent's state folder (back-fills, status).
    pub state_dir: PathBuf,
    /// The chain's store locations, in tier order.
    pub locations: Vec<Location>,
    /// The SMB client shared by the cascade's stores.
    pub client: Arc<SmbClient>,
}

/// A sane default agent id: the host name, reduced to `[A-Za-z0-9_-]`.
pub fn default_agent_id() -> String {
    let raw = std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "agent".to_string());
    let id: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() { "agent".into() } else { id }
}

/// Resolves a config into the pieces the agent needs.
///
/// # Errors
/// [`AgentError::Config`] when there is no symbol path, no `srv*` chain with a local
/// downstream store and a branch store, or the branch cannot hold a queue.
pub async fn setup(config: &Config, default_downstream: &Location) -> Result<Setup, AgentError> {
    let cfg = |m: String| AgentError::Config(m);
    let text = config
        .sympath
        .clone()
        .or_else(|| SymbolPath::from_env().ok().flatten().map(|p| p.to_string()))
        .ok_or_else(|| cfg("no symbol path (key `sympath` or _NT_SYMBOL_PATH)".into()))?;
    let path: SymbolPath = text
        .parse()
        .map_err(|e| cfg(format!("key `sympath`: {e}")))?;
    // Windows: a chain of shares only gets `C:\Symbols` as its local store (see `platform`).
    let path =
        crate::platform::with_default_local_store(path, crate::platform::default_local_store());
    let env = Credentials::from_env_with(|k| std::env::var(k).ok());
    let client = SmbClient::new(config.smb_config(env));
    let opener = Arc::new(Transports {
        smb: client.clone(),
        http: crate::store::http::transport_from_env(&config.http_config()),
        blackout: config.blackout(),
    });
    // Long transfers log their progress; `[log] noisy` logs every probe.
    let every = crate::store::progress::LogEvery {
        every: config.log.progress_interval,
    };
    let opener = crate::store::progress::ProgressOpener::wrap(opener, Arc::new(every));
    let sink = crate::store::noisy::ProbeSink {
        noisy: config.log.noisy,
        record: None,
    };
    let opener = crate::store::noisy::NoisyOpener::wrap(opener, sink);
    let cascade = Arc::new(
        Cascade::resolve(&path, opener, default_downstream, config.cascade_options()).await,
    );
    let (ci, chain) = cascade
        .chains()
        .iter()
        .enumerate()
        .find(|(_, c)| c.tiers.len() >= 2)
        .map(|(i, c)| (i, c.clone()))
        .ok_or_else(|| {
            cfg("key `sympath`: the agent needs a chain with a local store and a branch store, e.g. srv*C:\\Symbols*\\\\BranchOfficeA\\Symbols*\\\\MainOffice\\Symbols".into())
        })?;
    let locations = chain_locations(&path, ci, default_downstream);
    let branch = match &config.agent.branch {
        Some(b) => Some(
            locations
                .iter()
                .position(|l| l.to_string().eq_ignore_ascii_case(b))
                .ok_or_else(|| {
                    cfg(format!(
                        "key `agent.branch`: {b:?} is not a store of the chain"
                    ))
                })?,
        ),
        None => default_branch(locations.len(), config.agent.queue).map_err(cfg)?,
    };
    let local = match &locations[0] {
        Location::Local { path } => PathBuf::from(path),
        other => {
            return Err(cfg(format!(
                "key `sympath`: the chain's downstream store must be a local folder, not {other}"
            )));
        }
    };
    let admin = match branch.and_then(|b| admin_folder(&locations[b], &client)) {
        Some(a) => a,
        // A SymProxy-style server (`queue = false`) may have only HTTP upstreams; its queue
        // folder is never watched, so the local store's admin folder stands in.
        None if !config.agent.queue => Folder::Local(local.join(queue::ADMIN_DIR)),
        None => {
            return Err(cfg(
                "key `agent.branch`: an HTTP store cannot hold the queue (set `agent.queue = false` to run only the HTTP front)".into(),
            ));
        }
    };
    let state_dir = config
        .agent
        .state_dir
        .clone()
        .unwrap_or_else(|| local.join(queue::ADMIN_DIR).join("agent"));
    let id = config.agent.id.clone().unwrap_or_else(default_agent_id);
    if !queue::valid_agent_id(&id) {
        return Err(cfg(format!(
            "key `agent.id`: {id:?} must be 1-64 of [A-Za-z0-9_-]"
        )));
    }
    Ok(Setup {
        id,
        cascade,
        chain,
        branch,
        admin,
        state_dir,
        locations,
        client,
    })
}

/// The branch store (the one holding the queue) of an `n`-store chain when `[agent] branch` is
/// not set: the second store, but never the chain's last store — that is the upstream (the
/// main office), which the agent must not write its queue into. With `queue` off no branch is
/// needed (`Ok(None)`).
///
/// # Errors
/// What to add to the config, when the chain has no store between local and upstream.
fn default_branch(n: usize, queue: bool) -> Result<Option<usize>, String> {
    match n {
        3.. => Ok(Some(1)),
        _ if !queue => Ok(None),
        _ => Err(format!(
            "key `sympath`: the chain has {n} stores, so its second store is the upstream (main office) store, and the agent will not put its queue there; add a branch store between the local and the upstream store (srv*C:\\Symbols*\\\\BranchOfficeA\\Symbols*\\\\MainOffice\\Symbols), or name the store that holds the queue with `[agent] branch = \"…\"`, or set `[agent] queue = false` to run only the HTTP front"
        )),
    }
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

/// The locations of chain `ci`'s stores in tier order (HTTP stores last, as the cascade
/// orders them).
fn chain_locations(path: &SymbolPath, ci: usize, dd: &Location) -> Vec<Location> {
    use crate::sympath::{Element, StoreSpec};
    let to_loc = |s: &StoreSpec| match s {
        StoreSpec::DefaultDownstream => dd.clone(),
        StoreSpec::At(l) => l.clone(),
    };
    match &path.elements[ci] {
        Element::Server { stores, .. } => {
            let (mut v, http): (Vec<_>, Vec<_>) =
                stores.iter().map(to_loc).partition(|l| !l.is_http());
            v.extend(http);
            v
        }
        Element::Cache { store } => vec![to_loc(store)],
        Element::Plain { location } => vec![location.clone()],
    }
}

impl Setup {
    /// The queue's request folder.
    pub fn requests(&self) -> Folder {
        self.admin.join(queue::REQUESTS)
    }

    /// Reads the agent's last `status.json`, if any.
    pub fn read_status(&self) -> Option<Status> {
        let bytes = std::fs::read(self.state_dir.join("status.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether an agent runs on this state folder now: it holds an OS lock on
    /// `agent.lock` for its whole life (released however it ends, `kill -9` included), so a
    /// fresh `status.json` of a dead agent does not pass for a live one.
    pub fn agent_running(&self) -> bool {
        match std::fs::File::open(self.state_dir.join(AGENT_LOCK)) {
            Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }
}

/// The file in the state folder a running agent keeps locked.
const AGENT_LOCK: &str = "agent.lock";

/// Takes the state folder's agent lock: one agent per state folder (two would share
/// back-fills and status).
fn lock_state_dir(dir: &Path) -> Result<std::fs::File, AgentError> {
    let state = |source| AgentError::State {
        path: dir.display().to_string(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(AGENT_LOCK))
        .map_err(state)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(state(std::io::Error::other(
            "another agent runs on this state folder (agent.lock is held); set [agent] state_dir for a second one",
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(state(e)),
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
            },
            Ok(Err(e)) => StoreHealth {
                store,
                role: role.into(),
                reachable: false,
                writable: false,
                free_bytes: None,
                error: Some(e.to_string()),
            },
            Err(_) => StoreHealth {
                store,
                role: role.into(),
                reachable: false,
                writable: false,
                free_bytes: None,
                error: Some(format!("no answer within {timeout:?}")),
            },
        }
    });
    futures_util::future::join_all(checks).await
}

/// Runs the agent until `shutdown` completes: the one entry point shared by `symcascade run`,
/// the Windows service and tests. It watches the branch queue (unless `agent.queue = false`)
/// and, when `[http] listen` is set, serves the SymProxy-compatible HTTP front (see `front`)
/// over the same cascade. In-flight replications get `agent.shutdown_grace` to finish;
/// any still running then are dropped, which discards their temp files (nothing is ever left
/// under a final name). Queue records survive restarts.
///
/// # Errors
/// [`AgentError`] only when the agent cannot start (config, state folder, HTTP address);
/// once running it logs and retries.
pub async fn run(
    config: Config,
    default_downstream: Location,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let setup = setup(&config, &default_downstream).await?;
    // `get` may use relative stores; a service's working directory means nothing.
    crate::config::check_agent_stores(&setup.locations, crate::config::Platform::current())?;
    let a = &config.agent;
    let s = Settings {
        id: setup.id.clone(),
        rescan: a.rescan_interval,
        backfill: a.backfill_interval,
        miss_timeout: config.cascade.miss_timeout,
        miss_age: config.cascade.miss_age_timeout,
        lease: a.lease_timeout,
        max_parallel: a.max_parallel.max(1),
        poll: a.poll_interval,
        grace: a.shutdown_grace,
        temp_max_age: a.temp_max_age,
    };
    std::fs::create_dir_all(&setup.state_dir).map_err(|source| AgentError::State {
        path: setup.state_dir.display().to_string(),
        source,
    })?;
    let _agent_lock = lock_state_dir(&setup.state_dir)?;
    let backfills = load_backfills(&setup.state_dir);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let front = match config.http.listen {
        Some(addr) => {
            let front = Arc::new(crate::front::Front::new(
                setup.cascade.clone(),
                setup.chain.clone(),
                setup.branch,
                crate::front::FrontOptions::from_config(&config),
                metrics.clone(),
                config
                    .agent
                    .queue
                    .then(|| setup.state_dir.join("status.json")),
            )?);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| {
                    AgentError::Front(crate::front::FrontError::Bind { addr, source })
                })?;
            let done = stop.clone().cancelled_owned();
            Some(tokio::spawn(async move {
                if let Err(e) = front.serve(listener, done).await {
                    tracing::error!("HTTP front stopped: {e}");
                }
            }))
        }
        None => None,
    };
    let agent = Arc::new(Agent {
        metrics,
        queue: Queue {
            requests: setup.admin.join(queue::REQUESTS),
            leases: setup.admin.join(queue::LEASES),
            misses: setup.admin.join(queue::MISSES),
            rejected: setup.admin.join(queue::REJECTED),
        },
        status: Mutex::new(Status {
            agent: s.id.clone(),
            pid: std::process::id(),
            ..Status::default()
        }),
        backfills: Mutex::new(
            backfills
                .into_iter()
                .map(|b| (b, (Instant::now(), 0)))
                .collect(),
        ),
        s,
        cascade: setup.cascade,
        chain: setup.chain,
        branch: setup.branch,
        locations: setup.locations,
        state_dir: setup.state_dir,
    });
    if config.agent.queue {
        tracing::info!(agent = %agent.s.id, queue = %agent.queue.requests.describe(),
            state = %agent.state_dir.display(), "agent started");
        agent.main_loop(shutdown).await;
    } else {
        tracing::info!(agent = %agent.s.id, "queue disabled (agent.queue = false): HTTP front only");
        shutdown.await;
    }
    stop.cancel();
    if let Some(f) = front {
        // Requests in progress finish; detached transfers end with the runtime.
        let _ = tokio::time::timeout(agent.s.grace, f).await;
    }
    tracing::info!(agent = %agent.s.id, "agent stopped");
    Ok(())
}

impl Agent {
    async fn main_loop(self: &Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
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
        let mut scan_now = true;
        loop {
            if watch.is_none() {
                match self.queue.requests.watch(self.s.poll).await {
                    Ok(rx) => watch = Some(rx),
                    Err(e) => tracing::debug!("queue watch unavailable, rescanning only: {e}"),
                }
            }
            if scan_now {
                scan_now = false;
                self.scan(&mut tasks, &mut in_flight, &mut due).await;
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
                    let h = store_health(&self.chain, self.branch, Duration::from_secs(10)).await;
                    self.metrics.set_store_health(&h);
                    self.status.lock().expect("status").stores = h;
                }
                _ = publish.tick() => self.publish_status(in_flight.len()),
                _ = sweep.tick() => self.sweep_local_tiers(),
                Some(done) = tasks.join_next_with_id() => {
                    let (id, outcome) = match done {
                        Ok((id, o)) => (id, Some(o)),
                        Err(e) => (e.id(), None),
                    };
                    if let Some(name) = in_flight.remove(&id) {
                        match outcome {
                            // Not at once again even if still listed: a share that takes a
                            // delete without doing it (Samba over a read-only mount) would
                            // otherwise re-run the record in a tight loop. A record that is
                            // gone is forgotten at the next scan.
                            Some(Outcome::Done) => {
                                due.insert(name, (Instant::now() + self.s.rescan, 0));
                            }
                            Some(Outcome::Retry(after)) => {
                                let tries = due.get(&name).map(|d| d.1 + 1).unwrap_or(1);
                                due.insert(name, (Instant::now() + after, tries));
                            }
                            None => { due.insert(name, (Instant::now() + self.s.rescan, 1)); }
                        }
                    }
                    // Work may be waiting for a free slot.
                    scan_now = true;
                }
            }
        }
        // Graceful stop: no new work; let in-flight replications finish within the grace.
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
        self.publish_status(0);
    }

    async fn scan(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<Outcome>,
        in_flight: &mut HashMap<tokio::task::Id, String>,
        due: &mut HashMap<String, (Instant, u32)>,
    ) {
        let names = match self.queue.requests.list().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("cannot list the queue: {e}");
                return;
            }
        };
        self.status.lock().expect("status").queue_depth = names.len();
        // Forget records that are gone, so the map stays as small as the queue.
        due.retain(|n, _| names.binary_search(n).is_ok());
        let now = Instant::now();
        for name in names {
            if tasks.len() >= self.s.max_parallel {
                break;
            }
            if !name.ends_with(".req") || in_flight.values().any(|n| *n == name) {
                continue;
            }
            if due.get(&name).is_some_and(|(t, _)| *t > now) {
                continue;
            }
            // Cheap filter by name; the record's content is authoritative.
            if !may_be_for(&name, &self.s.id) {
                continue;
            }
            let tries = due.get(&name).map(|d| d.1).unwrap_or(0);
            let me = self.clone();
            let n = name.clone();
            let h = tasks.spawn(async move { me.process(&n, tries).await });
            in_flight.insert(h.id(), name);
        }
    }

    /// Processes one record; says when to look at it again if it stays.
    async fn process(&self, name: &str, tries: u32) -> Outcome {
        let q = &self.queue;
        let bytes = match q.requests.read(name).await {
            Ok(Some(b)) => b,
            Ok(None) => return Outcome::Done,
            Err(e) => {
                tracing::debug!("reading record {name}: {e}");
                return Outcome::Retry(self.s.rescan);
            }
        };
        if bytes.is_empty() && tries < 5 {
            // An SMB writer creates the file, then writes it: give it a moment.
            return Outcome::Retry(Duration::from_secs(1));
        }
        let (record, key) = match Record::parse(&bytes) {
            Ok(r) => r,
            Err(e) => {
                self.reject(name, &bytes, &e.to_string()).await;
                return Outcome::Done;
            }
        };
        if !record.requester.eq_ignore_ascii_case(&self.s.id) && record.requester != queue::ANY {
            return Outcome::Retry(self.s.rescan * 10);
        }
        // Miss cache (SymProxy MissTimeout), shared by the branch.
        let miss_file = queue::key_file(&key, "miss");
        let known_miss = match q.misses.read(&miss_file).await {
            Ok(Some(b)) => serde_json::from_slice::<Miss>(&b).ok(),
            _ => None,
        };
        let now = queue::now_secs();
        if let Some(m) = &known_miss {
            if now.saturating_sub(m.first) >= self.s.miss_age.as_secs() {
                tracing::info!(key = %key, "no store had it for MissAgeTimeout: dropping the request");
                let _ = q.requests.remove(name).await;
                return Outcome::Done;
            }
            if m.expires > now {
                return Outcome::Retry(Duration::from_secs(m.expires - now));
            }
        }
        // Lease: one agent of the branch pulls a key over the WAN at a time.
        let lease_file = queue::key_file(&key, "lease");
        match self.take_lease(&lease_file, tries).await {
            LeaseState::Held => {}
            LeaseState::Busy(left) => return Outcome::Retry(left.min(Duration::from_secs(1))),
            LeaseState::Unavailable => {}
        }
        let lookup = self.cascade.lookup(&key).await;
        let _ = q.leases.remove(&lease_file).await;
        let lookup = match lookup {
            Ok(l) => {
                self.metrics.record_lookup(&l);
                l
            }
            Err(e) => {
                tracing::warn!(key = %key, "lookup failed: {e}");
                return Outcome::Retry(self.s.rescan);
            }
        };
        {
            let mut st = self.status.lock().expect("status");
            st.lookups += 1;
            // Corrupt files refused on the way were downloaded too.
            for sk in lookup.skipped.iter().filter(|s| s.bytes_read > 0) {
                *st.bytes_read.entry(sk.store.clone()).or_default() += sk.bytes_read;
            }
            if let Some(f) = &lookup.fetched {
                st.hits += 1;
                *st.bytes_read.entry(f.found_in.clone()).or_default() += f.bytes_read;
                st.recent.extend(Transfer::of(&lookup));
                while st.recent.len() > 20 {
                    st.recent.pop_front();
                }
            }
        }
        match &lookup.fetched {
            Some(_) => {
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
                match q.requests.remove(name).await {
                    Ok(()) => Outcome::Done,
                    Err(e) => {
                        tracing::debug!("removing record {name}: {e}");
                        Outcome::Retry(self.s.rescan)
                    }
                }
            }
            None if !lookup.is_definitive_miss() => {
                // Some store could not answer: not a definitive miss. Keep the record. (A
                // corrupt file is an answer: it is cached as a miss below, with its reason.)
                tracing::info!(key = %key, "not found while some stores were unreachable; will retry");
                Outcome::Retry(self.s.rescan)
            }
            None => {
                self.status.lock().expect("status").misses += 1;
                let first = known_miss.map(|m| m.first).unwrap_or(now);
                let reason = lookup.miss_reason();
                if let Some(r) = &reason {
                    tracing::warn!(key = %key, "only corrupt copies found; cached as a miss: {r}");
                }
                let entry = Miss {
                    expires: queue::expires_in(self.s.miss_timeout),
                    first,
                    reason,
                };
                let _ = q.misses.remove(&miss_file).await;
                let bytes = serde_json::to_vec(&entry).expect("miss serialises");
                if let Err(e) = q.misses.create_new(&miss_file, &bytes).await {
                    tracing::debug!("writing miss entry: {e}");
                }
                Outcome::Retry(self.s.miss_timeout)
            }
        }
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
            let done = match self.backfill_one(&b).await {
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
        let spool = crate::cascade::new_spool_file(&dir).map_err(|e| e.to_string())?;
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

    fn publish_status(&self, in_flight: usize) {
        let mut st = self.status.lock().expect("status").clone();
        st.updated = queue::now_secs();
        st.in_flight = in_flight;
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

/// Writes a request record for `key` into the branch queue of `setup`, wanted by `requester`
/// (an agent id or [`queue::ANY`]). `Ok(false)` when the same request is already queued.
///
/// # Errors
/// A [`StoreError`] when the queue cannot be written; an invalid requester is reported as
/// `Corrupt`.
pub async fn request(setup: &Setup, key: &Key, requester: &str) -> Result<bool, StoreError> {
    let record = Record::new(key, requester).map_err(|e| {
        StoreError::new(
            setup.requests().describe(),
            "request",
            "",
            crate::store::StoreErrorKind::Corrupt,
            e.to_string(),
        )
    })?;
    setup
        .requests()
        .create_new(&record.file_name(), &record.to_bytes())
        .await
}

/// A folder for control files in a store's root (`000Cascade/<sub>`), for local and SMB
/// stores; `None` for HTTP.
pub fn admin_folder(location: &Location, client: &Arc<SmbClient>) -> Option<Folder> {
    match location {
        Location::Local { path } => Some(Folder::Local(PathBuf::from(path).join(queue::ADMIN_DIR))),
        Location::Smb {
            host,
            port,
            share,
            dirs,
            ..
        } => Some(Folder::Smb {
            store: SmbStore::new(
                client.clone(),
                host,
                *port,
                share,
                dirs,
                &location.to_string(),
            ),
            dir: vec![queue::ADMIN_DIR.to_string()],
        }),
        Location::Http { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{StoreHealth, Verdict, default_branch, may_be_for, tier_role, verdict};

    #[test]
    fn health_verdicts() {
        let st = |store: &str, role: &str, reachable: bool, writable: bool| StoreHealth {
            store: store.into(),
            role: role.into(),
            reachable,
            writable,
            free_bytes: None,
            error: (!reachable).then(|| "host down".into()),
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
    fn the_queue_never_defaults_to_the_upstream_store() {
        assert_eq!(default_branch(3, true), Ok(Some(1)));
        assert_eq!(default_branch(4, false), Ok(Some(1)));
        assert_eq!(default_branch(2, false), Ok(None));
        let e = default_branch(2, true).unwrap_err();
        assert!(
            e.contains("agent] branch") && e.contains("queue = false"),
            "{e}"
        );
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
