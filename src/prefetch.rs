//! Prefetch: queue a manifest's keys for the branch's agents and, optionally, wait until each
//! is replicated, like `symchk /om` then `symchk /im` against the store (SymChk's PASSED and
//! FAILED words and totals).
//!
//! Data flow: manifest text → `queue::parse_manifest` → [`queue_keys`] (one request record per
//! distinct key, through `Setup::request`) → [`wait_for_keys`] polls the queue folder, the
//! branch's miss cache and the target store until every key has a [`KeyResult`] or the time is
//! up. The CLI prints; progress goes to a callback so a bar or a status page can show it.

use crate::key::Key;
use crate::queue;
use crate::setup::Setup;
use crate::store::StoreError;
use std::time::{Duration, Instant};

/// Why a prefetch could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrefetchError {
    /// The queue could not be written or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A requester id the queue cannot hold.
    #[error(transparent)]
    Record(#[from] queue::RecordError),
}

/// Where one key of a prefetch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyResult {
    /// In the target store.
    Copied,
    /// No store has it: the agents wrote a miss-cache entry (expiry, seconds since the epoch).
    Missing(u64),
    /// No longer queued but not in the target store (dropped after `MissAgeTimeout`).
    Dropped,
    /// Still queued when the time was up.
    Pending,
}

impl KeyResult {
    /// SymChk's word for the result (`PASSED`, `FAILED`, `PENDING`), and why for the others.
    pub fn line(&self, key: &Key) -> String {
        match self {
            KeyResult::Copied => format!("PASSED  {key}"),
            KeyResult::Missing(until) => {
                let left = until.saturating_sub(queue::now_secs());
                format!(
                    "FAILED  {key}: no store has it (miss cached; the agents ask again in {})",
                    humantime::format_duration(Duration::from_secs(left))
                )
            }
            KeyResult::Dropped => {
                format!("FAILED  {key}: dropped from the queue and not in the store")
            }
            KeyResult::Pending => format!("PENDING {key}: still queued"),
        }
    }
}

/// Totals of a waited prefetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Keys copied.
    pub passed: usize,
    /// Keys missing or dropped.
    pub failed: usize,
    /// Keys still queued.
    pub pending: usize,
}

impl Totals {
    /// Counts `results`.
    pub fn of(results: &[KeyResult]) -> Totals {
        let mut t = Totals::default();
        for r in results {
            match r {
                KeyResult::Copied => t.passed += 1,
                KeyResult::Missing(_) | KeyResult::Dropped => t.failed += 1,
                KeyResult::Pending => t.pending += 1,
            }
        }
        t
    }

    /// SymChk's summary line: `SYMCHK: PASSED files = 3, FAILED files = 1` (with the pending
    /// count when some are).
    pub fn symchk_line(&self) -> String {
        let (p, f, n) = (self.passed, self.failed, self.pending);
        if n > 0 {
            format!("SYMCHK: PASSED files = {p}, FAILED files = {f}, PENDING files = {n}")
        } else {
            format!("SYMCHK: PASSED files = {p}, FAILED files = {f}")
        }
    }
}

/// The distinct keys of a manifest, in order (a manifest may name a key twice: one request,
/// one result).
pub fn distinct(mut keys: Vec<Key>) -> Vec<Key> {
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.to_string().to_ascii_lowercase()));
    keys
}

/// Queues each of `keys` for `who` (an agent id or [`queue::ANY`]); `progress` is called after
/// each. Returns how many were new (the rest were already queued).
///
/// # Errors
/// [`PrefetchError::Store`] when the queue cannot be written.
pub async fn queue_keys(
    setup: &Setup,
    keys: &[Key],
    who: &str,
    mut progress: impl FnMut(),
) -> Result<usize, PrefetchError> {
    let mut queued = 0;
    for k in keys {
        if setup.request(k, who).await? {
            queued += 1;
        }
        progress();
    }
    Ok(queued)
}

/// Polls the queue every 500 ms until every key is copied into tier `target` of the chain or
/// is a known miss (a current entry in `000Cascade/misses`), or `timeout` expires. `progress`
/// gets the number of keys settled after each round. Results in `keys` order. A share that
/// does not answer for a moment leaves keys pending; it does not fail the wait.
pub async fn wait_for_keys(
    setup: &Setup,
    keys: &[Key],
    who: &str,
    target: usize,
    timeout: Option<Duration>,
    mut progress: impl FnMut(usize),
) -> Vec<KeyResult> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut results = vec![KeyResult::Pending; keys.len()];
    loop {
        match setup.requests().list().await {
            Ok(names) => {
                for (k, r) in keys.iter().zip(results.iter_mut()) {
                    if *r == KeyResult::Pending {
                        *r = key_result(setup, k, who, target, &names)
                            .await
                            .unwrap_or_else(|e| {
                                tracing::warn!(key = %k, "cannot check: {e}");
                                KeyResult::Pending
                            });
                    }
                }
            }
            Err(e) => tracing::warn!("cannot list the queue: {e}"),
        }
        let done = results.iter().filter(|r| **r != KeyResult::Pending).count();
        progress(done);
        if done == keys.len() || deadline.is_some_and(|d| Instant::now() >= d) {
            return results;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One key's state: its record still queued (pending, or missing when the agents wrote a
/// current miss entry), or gone (copied when the target store has it in any form).
async fn key_result(
    setup: &Setup,
    key: &Key,
    who: &str,
    target: usize,
    queued: &[String],
) -> Result<KeyResult, PrefetchError> {
    let record = queue::Record::new(key, who)?.file_name();
    if queued.binary_search(&record).is_ok() {
        let misses = setup.admin.join(queue::MISSES);
        let miss = misses
            .read(&queue::key_file(key, "miss"))
            .await
            .ok()
            .flatten();
        let entry = miss.and_then(|b| serde_json::from_slice::<queue::Miss>(&b).ok());
        return Ok(match entry {
            Some(m) if m.expires > queue::now_secs() => KeyResult::Missing(m.expires),
            _ => KeyResult::Pending,
        });
    }
    let tier = &setup.chain.tiers[target];
    let tiering = tier.tiering().await?;
    for (_, path) in crate::layout::probe_order(key, tiering) {
        if tier.store().stat(&path).await?.is_some() {
            return Ok(KeyResult::Copied);
        }
    }
    Ok(KeyResult::Dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_symchk_lines() {
        let r = [
            KeyResult::Copied,
            KeyResult::Missing(0),
            KeyResult::Dropped,
            KeyResult::Copied,
        ];
        let t = Totals::of(&r);
        assert_eq!((t.passed, t.failed, t.pending), (2, 2, 0));
        assert_eq!(
            t.symchk_line(),
            "SYMCHK: PASSED files = 2, FAILED files = 2"
        );
        let t = Totals::of(&[KeyResult::Pending, KeyResult::Copied]);
        assert_eq!(
            t.symchk_line(),
            "SYMCHK: PASSED files = 1, FAILED files = 0, PENDING files = 1"
        );
        let k = Key::new("ntdll.pdb", "1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21").unwrap();
        assert!(KeyResult::Copied.line(&k).starts_with("PASSED  ntdll.pdb/"));
        assert!(KeyResult::Pending.line(&k).starts_with("PENDING "));
        assert!(KeyResult::Dropped.line(&k).contains("dropped"));
    }

    #[test]
    fn a_key_named_twice_is_one_request() {
        let a = Key::new("a.pdb", "11").unwrap();
        let a2 = Key::new("A.PDB", "11").unwrap();
        let b = Key::new("b.pdb", "11").unwrap();
        let d = distinct(vec![a.clone(), b.clone(), a2]);
        assert_eq!(d, vec![a, b]);
    }
}
