//! Reports shared by the agent, the HTTP front and the CLI: store health, transfers, the
//! agent's status and the one-word health verdict. Plain data plus two functions
//! ([`store_health`] asks each store of a chain; [`verdict`] judges the answers), so that the
//! agent and the front, peers under `daemon`, describe the same things the same way.
//!
//! Data flow: the agent fills a [`Status`] and publishes it (in memory to the front, and as
//! `status.json` for `symcascade status` in other processes); the front and `status` render it.

use crate::cascade::Chain;
use crate::queue::{self, Backfill};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

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
    /// Queue listings done (change notifications and periodic rescans): lets a script or a
    /// test wait for "N more scans" instead of sleeping.
    #[serde(default)]
    pub scans: u64,
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
}
