//! `Blackout`: SymSrv's `[timeouts]` rule as a store wrapper. A store that timed out (or could
//! not be reached) `count` times within `trigger` is not contacted for `blackout`; a failed
//! authentication blacks it out at once (SymSrv stops contacting such a store). During a
//! blackout every operation fails immediately with `Unreachable`, so a dead share costs a few
//! timeouts, not one per file.
//!
//! Source: Microsoft "Dealing with unavailable symbol stores" (`symsrv.ini`:
//! `[timeouts] trigger=10 count=5 blackout=15`, minutes).

use super::{
    Capabilities, FileMeta, Opened, PutOutcome, Store, StoreDescription, StoreError, StoreErrorKind,
};
use crate::layout::RelPath;
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncRead;

/// Blackout thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlackoutPolicy {
    /// Window in which failures are counted (SymSrv `trigger`, default 10 min).
    pub trigger: Duration,
    /// Failures within the window that start a blackout (SymSrv `count`, default 5).
    pub count: usize,
    /// How long the store is not contacted (SymSrv `blackout`, default 15 min).
    pub blackout: Duration,
}

impl Default for BlackoutPolicy {
    fn default() -> Self {
        BlackoutPolicy {
            trigger: Duration::from_secs(10 * 60),
            count: 5,
            blackout: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    failures: VecDeque<Instant>,
    until: Option<(Instant, String)>,
}

/// Wraps a store with a [`BlackoutPolicy`].
#[derive(Debug)]
pub struct Blackout {
    inner: Arc<dyn Store>,
    policy: BlackoutPolicy,
    state: Mutex<State>,
}

impl Blackout {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, policy: BlackoutPolicy) -> Blackout {
        Blackout {
            inner,
            policy,
            state: Mutex::new(State::default()),
        }
    }

    /// `Some(remaining)` while blacked out.
    pub fn blacked_out(&self) -> Option<Duration> {
        let s = self.state.lock().expect("blackout state poisoned");
        s.until
            .as_ref()
            .and_then(|(t, _)| t.checked_duration_since(Instant::now()))
    }

    fn check(&self, op: &'static str, path: &dyn std::fmt::Display) -> Result<(), StoreError> {
        let s = self.state.lock().expect("blackout state poisoned");
        if let Some((until, why)) = &s.until
            && let Some(left) = until.checked_duration_since(Instant::now())
        {
            return Err(StoreError::new(
                self.inner.describe().location,
                op,
                path,
                StoreErrorKind::Unreachable,
                format!("blacked out for another {}s after: {why}", left.as_secs()),
            ));
        }
        Ok(())
    }

    fn record<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        // Errors a transport answers from memory (connect back-off) are not new timeouts.
        if let Err(e) = &r
            && e.op != "backoff"
        {
            let now = Instant::now();
            let mut s = self.state.lock().expect("blackout state poisoned");
            let start = match e.kind {
                StoreErrorKind::AuthFailed => true,
                StoreErrorKind::Timeout | StoreErrorKind::Unreachable => {
                    s.failures.push_back(now);
                    while s
                        .failures
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > self.policy.trigger)
                    {
                        s.failures.pop_front();
                    }
                    s.failures.len() >= self.policy.count
                }
                _ => false,
            };
            if start {
                tracing::warn!(store = %e.store, minutes = self.policy.blackout.as_secs() / 60,
                    "store blacked out: {e}");
                s.failures.clear();
                s.until = Some((now + self.policy.blackout, e.to_string()));
            }
        }
        r
    }
}

#[async_trait]
impl Store for Blackout {
    fn describe(&self) -> StoreDescription {
        self.inner.describe()
    }
    async fn stat(&self, p: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        self.check("stat", p)?;
        self.record(self.inner.stat(p).await)
    }
    async fn open(&self, p: &RelPath) -> Result<Option<Opened>, StoreError> {
        self.check("open", p)?;
        self.record(self.inner.open(p).await)
    }
    async fn open_from(
        &self,
        p: &RelPath,
        offset: u64,
        version: &str,
    ) -> Result<Option<Opened>, StoreError> {
        self.check("open", p)?;
        self.record(self.inner.open_from(p, offset, version).await)
    }
    async fn put(
        &self,
        p: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.check("put", p)?;
        // Only this store's own failures count: a source that times out while streaming into
        // us must not black *us* out.
        let mut watched = super::Watched::new(src);
        let r = self.inner.put(p, &mut watched, len).await;
        if watched.failed { r } else { self.record(r) }
    }
    async fn replace(
        &self,
        p: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.check("replace", p)?;
        let mut watched = super::Watched::new(src);
        let r = self.inner.replace(p, &mut watched, len).await;
        if watched.failed { r } else { self.record(r) }
    }
    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        self.check("capabilities", &"")?;
        self.record(self.inner.capabilities().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open::UnavailableStore;

    #[tokio::test]
    async fn count_timeouts_start_a_blackout_and_auth_failure_at_once() {
        let dead = StoreError::new("\\\\x\\s", "connect", "", StoreErrorKind::Timeout, "t");
        let b = Blackout::new(
            Arc::new(UnavailableStore::from_error(&dead)),
            BlackoutPolicy {
                count: 3,
                ..Default::default()
            },
        );
        let p = RelPath::from_safe(["a"]);
        for _ in 0..3 {
            assert_eq!(b.stat(&p).await.unwrap_err().kind, StoreErrorKind::Timeout);
        }
        let e = b.stat(&p).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Unreachable);
        assert!(e.detail.contains("blacked out"), "{e}");
        assert!(b.blacked_out().is_some());

        let auth = StoreError::new("\\\\x\\s", "connect", "", StoreErrorKind::AuthFailed, "a");
        let b = Blackout::new(
            Arc::new(UnavailableStore::from_error(&auth)),
            BlackoutPolicy::default(),
        );
        assert_eq!(
            b.stat(&p).await.unwrap_err().kind,
            StoreErrorKind::AuthFailed
        );
        assert!(b.stat(&p).await.unwrap_err().detail.contains("blacked out"));
    }
}
