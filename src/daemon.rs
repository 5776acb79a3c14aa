//! The composition root: resolves a configuration once into everything a running symcascade
//! needs, then runs the replication agent and the HTTP front side by side until shutdown.
//! `symcascade run`, the Windows service and the tests all drive it the same way:
//! [`Daemon::start`] (the point where a service reports Running), then
//! [`Daemon::run`]`(listener, shutdown)` (after mini-redis's `server::run`).
//!
//! Data flow: config → `Setup::resolve` (symbol path → transports → cascade → the chain the
//! agent replicates, its branch store and queue folder, the state folder) → [`Daemon::start`]
//! (state-folder lock, metrics, the front, the agent) → [`Daemon::run`]: the agent's loop and
//! the front's accept loop share one cascade and one metrics registry; the agent publishes its
//! [`Status`] through a `watch` channel the front reads. The CLI's `request`, `prefetch`,
//! `status` and `doctor` use `Setup` alone.

use crate::agent::Agent;
use crate::config::{Config, InvalidConfig};
use crate::front::{Front, FrontError, FrontOptions};
use crate::metrics::Metrics;
use crate::report::Status;
use crate::setup::{AGENT_LOCK, Setup};
use crate::sympath::Location;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why symcascade could not start (once running, failures are logged and retried, never
/// fatal).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A config value that cannot work (names the key, the reason and what to write instead).
    #[error("config: {0}")]
    Invalid(#[from] InvalidConfig),
    /// The HTTP front cannot start (bad `[http]` settings, or the address is taken).
    #[error("HTTP front: {0}")]
    Front(#[from] FrontError),
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

/// Takes the state folder's agent lock: one agent per state folder (two would share
/// back-fills and status).
fn lock_state_dir(dir: &Path) -> Result<std::fs::File, DaemonError> {
    let state = |source| DaemonError::State {
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

/// Removes the temp files a killed agent left in its state folder (`status.json` and
/// `backfills.json` are written as temp file then rename): with `agent.lock` held, no other
/// process writes there, so every temp file in it is a dead writer's.
fn sweep_state_dir(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.ends_with(crate::layout::TEMP_SUFFIX))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A resolved symcascade: the agent and (when `[http] listen` is set) the HTTP front over one
/// cascade, holding the state folder's `agent.lock`. Built by [`Daemon::start`], consumed by
/// [`Daemon::run`].
pub struct Daemon {
    config: Config,
    setup: Setup,
    metrics: Arc<Metrics>,
    agent: Arc<Agent>,
    front: Option<Arc<Front>>,
    /// Held for the daemon's life: one agent per state folder.
    _lock: std::fs::File,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("agent", &self.setup.id)
            .field("state_dir", &self.setup.state_dir)
            .field("front", &self.front.is_some())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Resolves `config` once ([`Setup::resolve`], absolute local stores, the state folder and
    /// its lock, metrics, the front's settings and the agent) without touching the network
    /// beyond what resolving the symbol path does. A service reports Running after this.
    ///
    /// # Errors
    /// [`DaemonError`] when the config cannot work, the state folder cannot be created or is
    /// held by another agent, or the front's settings are unusable.
    pub async fn start(
        config: Config,
        default_downstream: &Location,
    ) -> Result<Daemon, DaemonError> {
        let setup = Setup::resolve(&config, default_downstream).await?;
        // `get` may use relative stores; a service's working directory means nothing.
        crate::config::check_agent_stores(&setup.locations, crate::config::Platform::current())?;
        std::fs::create_dir_all(&setup.state_dir).map_err(|source| DaemonError::State {
            path: setup.state_dir.display().to_string(),
            source,
        })?;
        let lock = lock_state_dir(&setup.state_dir)?;
        sweep_state_dir(&setup.state_dir);
        let metrics = Arc::new(Metrics::new());
        let (status_tx, status_rx) = tokio::sync::watch::channel(Status {
            agent: setup.id.clone(),
            pid: std::process::id(),
            ..Status::default()
        });
        let front = match config.http.listen {
            Some(_) => Some(Arc::new(Front::new(
                setup.cascade.clone(),
                setup.chain.clone(),
                setup.branch,
                FrontOptions::from_config(&config),
                metrics.clone(),
                setup.activity.clone(),
                config.agent.queue.then_some(status_rx),
            )?)),
            None => None,
        };
        let agent = Arc::new(Agent::new(&setup, &config, metrics.clone(), status_tx));
        Ok(Daemon {
            config,
            setup,
            metrics,
            agent,
            front,
            _lock: lock,
        })
    }

    /// What the daemon was resolved from.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The metrics registry the agent and the front share.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Binds `[http] listen` (`None` when the front is off).
    ///
    /// # Errors
    /// [`FrontError::Bind`] when the address is taken or not ours.
    pub async fn bind(&self) -> Result<Option<TcpListener>, DaemonError> {
        let Some(addr) = self.config.http.listen.filter(|_| self.front.is_some()) else {
            return Ok(None);
        };
        match TcpListener::bind(addr).await {
            Ok(l) => Ok(Some(l)),
            Err(source) => Err(FrontError::Bind { addr, source }.into()),
        }
    }

    /// Runs until `shutdown` completes: the agent's loop over the branch queue (unless
    /// `agent.queue = false`) and the front on `listener` (when `None` and `[http] listen` is
    /// set, the configured address is bound here; tests pass a listener on `127.0.0.1:0`).
    /// In-flight replications get `agent.shutdown_grace` to finish; any still running then are
    /// dropped, which discards their temp files (nothing is ever left under a final name).
    /// Queue records survive restarts.
    ///
    /// # Errors
    /// [`DaemonError::Front`] when the configured address cannot be bound, or a listener is
    /// given while `[http] listen` is not set.
    pub async fn run(
        self,
        listener: Option<TcpListener>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), DaemonError> {
        let listener = match listener {
            Some(l) => Some(l),
            None => self.bind().await?,
        };
        let stop = tokio_util::sync::CancellationToken::new();
        // `[aging]`: the tiers this agent writes stay under their caps (see `admin::age`).
        let aging = &self.config.aging;
        let _aging = crate::admin::age::spawn_for_agent(
            aging.policy(),
            (aging.interval, aging.grace),
            &self.setup.locations,
            self.metrics.clone(),
            stop.clone(),
        );
        // `[bandwidth]`: the window in force is applied and the rates measured every second.
        let ticker = {
            let (bw, metrics) = (self.setup.bandwidth.clone(), self.metrics.clone());
            let done = stop.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = every.tick() => metrics.set_bandwidth(&bw.tick()),
                    }
                }
            })
        };
        let front = match (self.front.clone(), listener) {
            (Some(front), Some(listener)) => {
                let done = stop.clone().cancelled_owned();
                Some(tokio::spawn(async move {
                    if let Err(e) = front.serve(listener, done).await {
                        tracing::error!("HTTP front stopped: {e}");
                    }
                }))
            }
            (None, Some(_)) => {
                return Err(FrontError::Config(
                    "a listener was given but `[http] listen` is not set".into(),
                )
                .into());
            }
            (_, None) => None,
        };
        let id = self.setup.id.clone();
        if self.config.agent.queue {
            tracing::info!(agent = %id, queue = %self.setup.requests().describe(),
                state = %self.setup.state_dir.display(), "agent started");
            self.agent.run(shutdown).await;
        } else {
            tracing::info!(agent = %id, "queue disabled (agent.queue = false): HTTP front only");
            shutdown.await;
        }
        stop.cancel();
        let _ = ticker.await;
        if let Some(f) = front {
            // Requests in progress finish; detached transfers end with the runtime.
            let _ = tokio::time::timeout(self.config.agent.shutdown_grace, f).await;
        }
        tracing::info!(agent = %id, "agent stopped");
        Ok(())
    }
}
