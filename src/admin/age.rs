//! Aging: AgeStore's job (remove what was not used recently, or the least recently used until
//! the store fits a size cap) without NTFS last-access times, which Windows often does not keep.
//!
//! Data flow: [`super::scan_keys`] lists the key folders; [`candidates`] turns them into
//! [`Candidate`]s (size, last use = the latest write time of the folder's files, busy or not);
//! the pure [`plan`] picks which to remove, oldest first; [`age_store`] removes them (or only
//! reports, `dry_run`, like AgeStore `-l`/`-s`). Last use is kept current by [`touch_hit`],
//! called where a hit is delivered (the cascade, the HTTP front): it sets the file's write time
//! to now at most hourly, as symbolicator does for its caches. The agent runs [`age_store`] on
//! the local tiers it writes every `[aging] interval` ([`run_agent_aging`]).

use super::{AdminError, AdminStore, KeyFolder};
use serde::Serialize;
use std::time::{Duration, SystemTime};

pub use crate::store::local::{TOUCH_EVERY, touch_hit};

/// Files written more recently than this are never aged: a writer that is not ours (e.g.
/// symstore.exe, robocopy) may still be busy with the folder (its write time moves while it
/// writes). Our own writers are recognised by their temp names and key locks.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// What to keep a store under. Both unset: nothing is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct AgePolicy {
    /// Remove keys whose last use is at least this long ago (AgeStore `-days`).
    #[serde(with = "opt_secs")]
    pub unused_for: Option<Duration>,
    /// Then remove the least recently used keys until the store's key folders total at most
    /// this many bytes (AgeStore `-size`).
    pub max_size: Option<u64>,
}

impl AgePolicy {
    /// Whether the policy can remove anything.
    pub fn is_active(&self) -> bool {
        self.unused_for.is_some() || self.max_size.is_some()
    }
}

/// One key folder as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Bytes of all its forms.
    pub bytes: u64,
    /// Latest write time of its files.
    pub last_use: SystemTime,
    /// Being written (a temp file inside, its writer lock held, or written within the grace):
    /// counted in the store's size, never removed.
    pub busy: bool,
}

/// Why a key is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not used for `unused_for`.
    Unused,
    /// Least recently used while the store was over `max_size`.
    OverSize,
}

/// Which candidates to remove and why, in removal order (least recently used first; ties in
/// input order). Per AgeStore: first everything unused for `unused_for`, then, while the total
/// of all candidates left (busy ones included) exceeds `max_size`, the least recently used
/// non-busy one. A busy candidate is never chosen, so the result can stay above the cap when
/// only busy keys are left. Pure: `now` is passed in.
pub fn plan(cands: &[Candidate], policy: &AgePolicy, now: SystemTime) -> Vec<(usize, Reason)> {
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by_key(|&i| cands[i].last_use);
    let mut total: u64 = cands.iter().map(|c| c.bytes).sum();
    let mut out = Vec::new();
    let mut rest = Vec::new();
    for i in order {
        let c = &cands[i];
        let unused = policy
            .unused_for
            .is_some_and(|d| now.duration_since(c.last_use).is_ok_and(|age| age >= d));
        if unused && !c.busy {
            total -= c.bytes;
            out.push((i, Reason::Unused));
        } else {
            rest.push(i);
        }
    }
    if let Some(cap) = policy.max_size {
        for i in rest {
            if total <= cap {
                break;
            }
            if !cands[i].busy {
                total -= cands[i].bytes;
                out.push((i, Reason::OverSize));
            }
        }
    }
    out
}

/// How to run [`age_store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeOptions {
    /// Report only; change nothing (AgeStore `-l`).
    pub dry_run: bool,
    /// Keys with a file written more recently than this are busy.
    pub grace: Duration,
}

impl Default for AgeOptions {
    fn default() -> Self {
        AgeOptions {
            dry_run: false,
            grace: DEFAULT_GRACE,
        }
    }
}

/// One key removed (or, in a dry run, that would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// File name.
    pub name: String,
    /// Index.
    pub index: String,
    /// Bytes of all its forms.
    pub bytes: u64,
    /// Last use, seconds since the Unix epoch.
    #[serde(with = "super::unix_secs")]
    pub last_use: SystemTime,
    /// Why.
    pub reason: Reason,
}

/// What [`age_store`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgeReport {
    /// The store as written.
    pub store: String,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Key folders found.
    pub keys: usize,
    /// Their total size before, bytes.
    pub bytes_before: u64,
    /// Total size after (in a dry run: what it would be), bytes.
    pub bytes_after: u64,
    /// Keys being written, left alone.
    pub busy: usize,
    /// Keys removed (would be, in a dry run), least recently used first.
    pub removed: Vec<Removed>,
    /// Keys that could not be removed, with the store's reason.
    pub failed: Vec<(String, String)>,
}

impl AgeReport {
    /// Bytes removed.
    pub fn removed_bytes(&self) -> u64 {
        self.removed.iter().map(|r| r.bytes).sum()
    }
}

/// Whether a file name is one of ours still being written: a transport's temp file
/// (`.<name>.<random>.symcascade-tmp`), a spool or probe file (`.symcascade-*`).
pub fn is_in_progress_name(name: &str) -> bool {
    name.ends_with(crate::layout::TEMP_SUFFIX) || name.starts_with(".symcascade-")
}

/// The plan's view of the key folders: busy when a file is in progress
/// ([`is_in_progress_name`]) or written within `grace` of `now`.
pub fn candidates(keys: &[KeyFolder], grace: Duration, now: SystemTime) -> Vec<Candidate> {
    keys.iter()
        .map(|k| Candidate {
            bytes: k.bytes(),
            last_use: k.last_use(),
            busy: k.files.iter().any(|f| {
                is_in_progress_name(&f.name)
                    || now.duration_since(f.modified).map_or(true, |a| a < grace)
            }),
        })
        .collect()
}

/// Ages `store` under `policy`: scans its key folders, plans (see [`plan`]) and, unless
/// `dry_run`, removes each planned key folder whole (every form; then its `<name>` folder when
/// empty). Never touches `000*` folders or root files. On a local store each removal holds the
/// key's writer lock (a key being written is skipped and counted busy).
///
/// # Errors
/// [`AdminError`] when the store cannot be listed; a key that cannot be removed is reported in
/// `failed` and the others go on.
pub async fn age_store(
    store: &AdminStore,
    policy: &AgePolicy,
    opts: AgeOptions,
    now: SystemTime,
) -> Result<AgeReport, AdminError> {
    let keys = super::scan_keys(store).await?;
    let cands = candidates(&keys, opts.grace, now);
    let chosen = plan(&cands, policy, now);
    let bytes_before: u64 = cands.iter().map(|c| c.bytes).sum();
    let mut report = AgeReport {
        store: store.describe(),
        dry_run: opts.dry_run,
        keys: keys.len(),
        bytes_before,
        bytes_after: bytes_before,
        busy: cands.iter().filter(|c| c.busy).count(),
        removed: Vec::new(),
        failed: Vec::new(),
    };
    for (i, reason) in chosen {
        let k = &keys[i];
        let removed = Removed {
            name: k.name.clone(),
            index: k.index.clone(),
            bytes: cands[i].bytes,
            last_use: cands[i].last_use,
            reason,
        };
        if !opts.dry_run {
            match remove_one(store, k).await {
                Ok(true) => {}
                Ok(false) => {
                    report.busy += 1;
                    continue;
                }
                Err(e) => {
                    report.failed.push((format!("{}/{}", k.name, k.index), e));
                    continue;
                }
            }
        }
        report.bytes_after -= removed.bytes;
        report.removed.push(removed);
    }
    Ok(report)
}

/// Removes one key folder; `Ok(false)` when a writer holds its lock (local stores).
async fn remove_one(store: &AdminStore, k: &KeyFolder) -> Result<bool, String> {
    let _lock = match store {
        AdminStore::Local(s) => {
            let (s, dir) = (s.clone(), k.dir.clone());
            let lock = tokio::task::spawn_blocking(move || s.try_lock_key_folder(&dir))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            match lock {
                Some(l) => Some(l),
                None => return Ok(false),
            }
        }
        AdminStore::Smb(_) => None,
    };
    super::remove_key_folder(store, k)
        .await
        .map(|_| true)
        .map_err(|e| e.to_string())
}

/// The agent's aging loop: every `interval` (first at once), ages each store of `stores` under
/// `policy`, logs what it removed and counts it in `metrics`, until `stop` is cancelled. A
/// store that cannot be listed is logged and tried again next time.
pub async fn run_agent_aging(
    stores: Vec<AdminStore>,
    policy: AgePolicy,
    interval: Duration,
    grace: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    if !policy.is_active() || stores.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for s in &stores {
            let opts = AgeOptions {
                dry_run: false,
                grace,
            };
            match age_store(s, &policy, opts, SystemTime::now()).await {
                Ok(r) => {
                    if !r.removed.is_empty() {
                        tracing::info!(store = %r.store, keys = r.removed.len(),
                            bytes = r.removed_bytes(), bytes_after = r.bytes_after,
                            "aging: removed least recently used keys");
                        metrics.aged(&r.store, r.removed.len() as u64, r.removed_bytes());
                    }
                    for (key, e) in &r.failed {
                        tracing::warn!(store = %r.store, key = %key, "aging: cannot remove: {e}");
                    }
                }
                Err(e) => tracing::warn!(store = %s.describe(), "aging: {e}"),
            }
        }
    }
}

/// Starts [`run_agent_aging`] for an agent: `policy` (from `[aging]`) over the local folder
/// tiers of `locations` (tier order) that the agent writes (every one but the last, the
/// upstream), checked every `interval`, sparing files younger than `grace`. Does nothing when
/// the policy sets no cap. Ends when `stop` is cancelled.
pub fn spawn_for_agent(
    policy: AgePolicy,
    (interval, grace): (Duration, Duration),
    locations: &[crate::sympath::Location],
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    stop: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let written = &locations[..locations.len().saturating_sub(1)];
    let stores: Vec<AdminStore> = written
        .iter()
        .filter_map(|l| match l {
            crate::sympath::Location::Local { path } => Some(AdminStore::Local(
                crate::store::LocalStore::new(std::path::PathBuf::from(path)),
            )),
            _ => None,
        })
        .collect();
    if !policy.is_active() || stores.is_empty() {
        return None;
    }
    for s in &stores {
        tracing::info!(store = %s.describe(), max_size = ?policy.max_size,
            unused_for = ?policy.unused_for, "aging this tier");
    }
    Some(tokio::spawn(run_agent_aging(
        stores, policy, interval, grace, metrics, stop,
    )))
}

mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000_000;

    fn at(secs_ago: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 - secs_ago)
    }

    fn now() -> SystemTime {
        at(0)
    }

    fn c(bytes: u64, secs_ago: u64, busy: bool) -> Candidate {
        Candidate {
            bytes,
            last_use: at(secs_ago),
            busy,
        }
    }

    const DAY: u64 = 86_400;

    #[test]
    fn plan_table() {
        let pol = |unused_days: Option<u64>, max: Option<u64>| AgePolicy {
            unused_for: unused_days.map(|d| Duration::from_secs(d * DAY)),
            max_size: max,
        };
        use Reason::*;
        type Case = (
            &'static str,
            Vec<Candidate>,
            AgePolicy,
            Vec<(usize, Reason)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no policy",
                vec![c(10, 99 * DAY, false)],
                pol(None, None),
                vec![],
            ),
            (
                "unused only, oldest first",
                vec![
                    c(1, 40 * DAY, false),
                    c(1, DAY, false),
                    c(1, 31 * DAY, false),
                ],
                pol(Some(30), None),
                vec![(0, Unused), (2, Unused)],
            ),
            (
                "exactly at the threshold counts as unused",
                vec![c(1, 30 * DAY, false)],
                pol(Some(30), None),
                vec![(0, Unused)],
            ),
            (
                "size cap: least recently used until total <= cap",
                vec![
                    c(40, 10, false),
                    c(30, 30, false),
                    c(20, 20, false),
                    c(10, 5, false),
                ],
                pol(None, Some(50)),
                vec![(1, OverSize), (2, OverSize)],
            ),
            (
                "under the cap: nothing",
                vec![c(40, 10, false), c(10, 20, false)],
                pol(None, Some(50)),
                vec![],
            ),
            (
                "busy keys count but stay",
                vec![c(40, 100, true), c(30, 50, false), c(20, 10, false)],
                pol(None, Some(50)),
                vec![(1, OverSize), (2, OverSize)],
            ),
            (
                "only busy keys left: above the cap",
                vec![c(100, 100, true), c(10, 10, false)],
                pol(None, Some(50)),
                vec![(1, OverSize)],
            ),
            (
                "unused first, then the cap on what is left",
                vec![
                    c(50, 40 * DAY, false),
                    c(30, 2 * DAY, false),
                    c(30, DAY, false),
                ],
                pol(Some(30), Some(40)),
                vec![(0, Unused), (1, OverSize)],
            ),
            (
                "busy unused key is kept",
                vec![c(5, 90 * DAY, true)],
                pol(Some(30), None),
                vec![],
            ),
            (
                "ties keep input order",
                vec![c(10, 7, false), c(10, 7, false), c(10, 7, false)],
                pol(None, Some(15)),
                vec![(0, OverSize), (1, OverSize)],
            ),
            (
                "cap 0 removes everything not busy",
                vec![c(1, 1, false), c(2, 2, false)],
                pol(None, Some(0)),
                vec![(1, OverSize), (0, OverSize)],
            ),
            (
                "a last use in the future is not unused",
                vec![Candidate {
                    bytes: 1,
                    last_use: now() + Duration::from_secs(DAY),
                    busy: false,
                }],
                pol(Some(1), None),
                vec![],
            ),
        ];
        for (name, cands, policy, want) in cases {
            assert_eq!(plan(&cands, &policy, now()), want, "{name}");
        }
    }

    #[test]
    fn busy_keys_are_recognised() {
        let f = |name: &str, secs_ago: u64| super::super::KeyFile {
            name: name.into(),
            form: None,
            bytes: 1,
            modified: at(secs_ago),
        };
        let k = |files| KeyFolder {
            name: "a.pdb".into(),
            index: "1".into(),
            dir: vec![],
            files,
        };
        let keys = [
            k(vec![f("a.pdb", 3600)]),
            k(vec![
                f("a.pdb", 3600),
                f(".a.pdb.x1y2z3.symcascade-tmp", 9000),
            ]),
            k(vec![f("a.pd_", 60)]),
            k(vec![f(".symcascade-spool.12.x", 9000)]),
        ];
        let busy: Vec<bool> = candidates(&keys, Duration::from_secs(600), now())
            .iter()
            .map(|c| c.busy)
            .collect();
        assert_eq!(busy, [false, true, true, true]);
    }

    #[test]
    fn touch_moves_old_write_times_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.pdb");
        std::fs::write(&p, b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(2 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        touch_hit(Some(&p), None);
        let m = std::fs::metadata(&p).unwrap().modified().unwrap();
        assert!(m.elapsed().unwrap() < Duration::from_secs(60), "{m:?}");
        // Recent: left alone (at most hourly).
        let recent = SystemTime::now() - Duration::from_secs(1800);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(recent)
            .unwrap();
        touch_hit(Some(&p), None);
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), recent);
        // Missing files and no path: no panic, no error.
        touch_hit(Some(&dir.path().join("missing")), None);
        touch_hit(None, None);
    }
}
