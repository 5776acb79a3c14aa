//! Resolving a configuration into the pieces symcascade works with: the symbol path, the
//! transports, the cascade, the chain the agent replicates, its branch store (the queue holder),
//! the queue folder and the agent's state folder. Used by the daemon and by the CLI commands that
//! work with the queue without running it (`request`, `prefetch`, `status`, `doctor`).
//!
//! Data flow: config → [`Setup::resolve`] → symbol path (key `sympath`, else `_NT_SYMBOL_PATH`)
//! → `store::open::Transports` → `Cascade::resolve` → the first chain of two stores or more →
//! branch and queue folder. Errors are [`InvalidConfig::Chain`] values naming the key, the reason
//! and what to write instead.

use crate::cascade::{Cascade, Chain};
use crate::config::{Config, InvalidConfig};
use crate::folder::Folder;
use crate::key::Key;
use crate::queue::{self, Record};
use crate::report::Status;
use crate::store::StoreError;
use crate::store::open::Transports;
use crate::store::smb::{Credentials, SmbClient, SmbStore};
use crate::sympath::{Location, SymbolPath};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn chain_error(
    key: &'static str,
    reason: impl Into<String>,
    hint: impl Into<String>,
) -> InvalidConfig {
    InvalidConfig::Chain {
        key,
        reason: reason.into(),
        hint: hint.into(),
    }
}

/// The file in the state folder a running agent keeps locked (see [`Setup::agent_running`]).
pub const AGENT_LOCK: &str = "agent.lock";

/// The folder in the state folder where interrupted transfers wait to be resumed
/// ([`crate::resume`]): in the state folder, not the temp folder, so they survive a reboot.
pub const PARTIAL_DIR: &str = "partial";

/// The example chain the errors suggest.
const EXAMPLE_CHAIN: &str = "srv*C:\\Symbols*\\\\BranchOfficeA\\Symbols*\\\\MainOffice\\Symbols";

/// Everything the daemon and the CLI's `request`/`prefetch`/`status`/`doctor` need from a
/// config: the cascade, the chain, the branch queue and the agent's state folder.
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
    /// What the agent and the front are doing (reads in flight, recent transfers, store
    /// health history); the cascade's stores report their reads to it.
    pub activity: Arc<crate::report::Activity>,
    /// The bandwidth caps every remote store of the cascade reads under (`[bandwidth]`).
    pub bandwidth: Arc<crate::bandwidth::Bandwidth>,
    /// The object store settings the cascade's S3 and Azure stores use (for `doctor`).
    pub objects: crate::store::object::ObjectConfig,
}

impl Setup {
    /// Resolves a config: the symbol path (key `sympath`, else `_NT_SYMBOL_PATH`; on Windows a
    /// chain of shares gets `C:\\Symbols` as its local store), the transports, the cascade,
    /// the chain the agent replicates (the first with two stores or more), its branch store
    /// (`[agent] branch`, else the second store but never the upstream: see
    /// [`default_branch`]), the queue folder and the state folder.
    ///
    /// # Errors
    /// [`InvalidConfig::Chain`] (or `SymbolPath`) when there is no symbol path, no chain with a local downstream
    /// store, the branch cannot hold a queue, or the agent id is malformed.
    pub async fn resolve(
        config: &Config,
        default_downstream: &Location,
    ) -> Result<Setup, InvalidConfig> {
        let path = symbol_path(config)?;
        let env = Credentials::from_env_with(|k| std::env::var(k).ok());
        let client = SmbClient::new(config.smb_config(env));
        let (opener, activity, bandwidth) = openers(config, &client)?;
        let cascade =
            Cascade::resolve(&path, opener, default_downstream, config.cascade_options()).await;
        let (ci, chain) = cascade
            .chains()
            .iter()
            .enumerate()
            .find(|(_, c)| c.tiers.len() >= 2)
            .map(|(i, c)| (i, c.clone()))
            .ok_or_else(|| {
                chain_error(
                    "sympath",
                    "the agent needs a chain with a local store and a branch store",
                    format!("e.g. {EXAMPLE_CHAIN}"),
                )
            })?;
        let locations = chain_locations(&path, ci, default_downstream);
        let branch = branch_index(config, &locations)?;
        let local = match &locations[0] {
            Location::Local { path } => PathBuf::from(path),
            other => {
                return Err(chain_error(
                    "sympath",
                    format!("the chain's downstream store must be a local folder, not {other}"),
                    format!("start the chain with a folder of this machine, e.g. {EXAMPLE_CHAIN}"),
                ));
            }
        };
        let admin = queue_folder(config, branch, &locations, &local, &client)?;
        let state_dir = config
            .agent
            .state_dir
            .clone()
            .unwrap_or_else(|| local.join(queue::ADMIN_DIR).join("agent"));
        let cascade = Arc::new(cascade.with_partial_dir(state_dir.join(PARTIAL_DIR)).await);
        let id = config.agent.id.clone().unwrap_or_else(default_agent_id);
        if !queue::valid_agent_id(&id) {
            return Err(chain_error(
                "agent.id",
                format!("{id:?} must be 1-64 of [A-Za-z0-9_-]"),
                "e.g. the host name, DESKTOP-4F2K9Q1",
            ));
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
            activity,
            bandwidth,
            objects: config.object_config().resolved(),
        })
    }

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

    /// Writes a request record for `key` into the branch queue, wanted by `requester`
    /// (an agent id or [`queue::ANY`]). `Ok(false)` when the same request is already queued.
    ///
    /// # Errors
    /// A [`StoreError`] when the queue cannot be written; an invalid requester is reported as
    /// `Corrupt`.
    pub async fn request(&self, key: &Key, requester: &str) -> Result<bool, StoreError> {
        let record = Record::new(key, requester).map_err(|e| {
            StoreError::new(
                self.requests().describe(),
                "request",
                "",
                crate::store::StoreErrorKind::Corrupt,
                e.to_string(),
            )
        })?;
        self.requests()
            .create_new(&record.file_name(), &record.to_bytes())
            .await
    }
}

/// The process's opener: the transports under the bandwidth caps, progress logging, the
/// activity registry (reads in flight) and probe logging, in that order from the inside.
#[allow(clippy::type_complexity)]
fn openers(
    config: &Config,
    client: &Arc<SmbClient>,
) -> Result<
    (
        Arc<dyn crate::store::open::StoreOpener>,
        Arc<crate::report::Activity>,
        Arc<crate::bandwidth::Bandwidth>,
    ),
    InvalidConfig,
> {
    let opener = Arc::new(Transports {
        smb: client.clone(),
        http: crate::store::http::transport_from_env(&config.http_config()),
        blackout: config.blackout(),
        objects: config.object_config().resolved(),
    });
    // `[bandwidth]`: remote reads go through the caps of their class (innermost, so the
    // wrappers below count bytes as they leave the limiter).
    let bandwidth = crate::bandwidth::Bandwidth::new(config.bandwidth_policy()?);
    let opener = crate::store::limited::LimitedOpener::wrap(opener, bandwidth.clone());
    // Long transfers log their progress; `[log] noisy` logs every probe.
    let every = crate::store::progress::LogEvery {
        every: config.log.progress_interval,
    };
    let opener = crate::store::progress::ProgressOpener::wrap(opener, Arc::new(every));
    // Reads in flight for the status (`/status`, `status.json`).
    let activity = crate::report::Activity::new();
    let opener = crate::store::progress::ProgressOpener::wrap(opener, activity.sink());
    let sink = crate::store::noisy::ProbeSink {
        noisy: config.log.noisy,
        record: None,
    };
    let opener = crate::store::noisy::NoisyOpener::wrap(opener, sink);
    Ok((opener, activity, bandwidth))
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

/// The symbol path: key `sympath`, else `_NT_SYMBOL_PATH`; on Windows a chain of shares only
/// gets `C:\\Symbols` as its local store (see `platform`).
fn symbol_path(config: &Config) -> Result<SymbolPath, InvalidConfig> {
    let text = config
        .sympath
        .clone()
        .or_else(|| SymbolPath::from_env().ok().flatten().map(|p| p.to_string()))
        .ok_or_else(|| {
            chain_error(
                "sympath",
                "no symbol path",
                format!("set `sympath = '{EXAMPLE_CHAIN}'` or _NT_SYMBOL_PATH"),
            )
        })?;
    let path: SymbolPath = text.parse().map_err(InvalidConfig::SymbolPath)?;
    Ok(crate::platform::with_default_local_store(
        path,
        crate::platform::default_local_store(),
    ))
}

/// The index of the branch store (the queue holder) in the chain's `locations`.
fn branch_index(config: &Config, locations: &[Location]) -> Result<Option<usize>, InvalidConfig> {
    match &config.agent.branch {
        Some(b) => locations
            .iter()
            .position(|l| l.to_string().eq_ignore_ascii_case(b))
            .map(Some)
            .ok_or_else(|| {
                let stores: Vec<String> = locations.iter().map(|l| l.to_string()).collect();
                chain_error(
                    "agent.branch",
                    format!("{b:?} is not a store of the chain"),
                    format!("name one of: {}", stores.join(", ")),
                )
            }),
        None => default_branch(locations.len(), config.agent.queue),
    }
}

/// `<branch>/000Cascade`, the queue's folder.
fn queue_folder(
    config: &Config,
    branch: Option<usize>,
    locations: &[Location],
    local: &Path,
    client: &Arc<SmbClient>,
) -> Result<Folder, InvalidConfig> {
    match branch.and_then(|b| admin_folder(&locations[b], client)) {
        Some(a) => Ok(a),
        // A SymProxy-style server (`queue = false`) may have only HTTP upstreams; its queue
        // folder is never watched, so the local store's admin folder stands in.
        None if !config.agent.queue => Ok(Folder::Local(local.join(queue::ADMIN_DIR))),
        None => Err(chain_error(
            "agent.branch",
            "an HTTP or object store (S3, Azure) cannot hold the queue",
            "name an SMB or local store of the chain, or set `agent.queue = false` to run only the HTTP front",
        )),
    }
}

/// The branch store (the one holding the queue) of an `n`-store chain when `[agent] branch` is
/// not set: the second store, but never the chain's last store — that is the upstream (the
/// main office), which the agent must not write its queue into. With `queue` off no branch is
/// needed (`Ok(None)`).
///
/// # Errors
/// What to add to the config, when the chain has no store between local and upstream.
fn default_branch(n: usize, queue: bool) -> Result<Option<usize>, InvalidConfig> {
    match n {
        3.. => Ok(Some(1)),
        _ if !queue => Ok(None),
        _ => Err(chain_error(
            "sympath",
            format!(
                "the chain has {n} stores, so its second store is the upstream (main office) store, and the agent will not put its queue there"
            ),
            format!(
                "add a branch store between the local and the upstream store ({EXAMPLE_CHAIN}), or name the store that holds the queue with `[agent] branch = \"…\"`, or set `[agent] queue = false` to run only the HTTP front"
            ),
        )),
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

/// A folder for control files in a store's root (`000Cascade/<sub>`), for local and SMB
/// stores; `None` for HTTP and object stores (the queue needs renames and change
/// notifications: it stays on SMB or local stores).
pub fn admin_folder(location: &Location, client: &Arc<SmbClient>) -> Option<Folder> {
    use crate::store::open::{SmbRoute, smb_route};
    match location {
        Location::Local { path } => Some(Folder::Local(PathBuf::from(path).join(queue::ADMIN_DIR))),
        // Reached through the OS's client (Windows, no credentials configured): the queue is a
        // folder of the UNC path, watched with the OS's own change notifications (`notify`).
        Location::Smb { host, port, .. }
            if smb_route(
                cfg!(windows),
                client.config().has_credentials(host),
                port.is_some(),
            ) == SmbRoute::Os =>
        {
            Some(Folder::Local(
                PathBuf::from(location.to_string()).join(queue::ADMIN_DIR),
            ))
        }
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
        Location::Http { .. } | Location::Object { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::default_branch;

    #[test]
    fn the_queue_never_defaults_to_the_upstream_store() {
        assert_eq!(default_branch(3, true).ok(), Some(Some(1)));
        assert_eq!(default_branch(4, false).ok(), Some(Some(1)));
        assert_eq!(default_branch(2, false).ok(), Some(None));
        let e = default_branch(2, true).unwrap_err().to_string();
        assert!(
            e.contains("agent] branch") && e.contains("queue = false"),
            "{e}"
        );
    }
}
