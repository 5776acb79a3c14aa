//! The HTTP front's miss cache, with SymProxy's semantics (Microsoft, "Configuring the
//! Registry": `MissTimeout`, `MissAgeCheck`, `MissAgeTimeout`).
//!
//! Data flow: a lookup that found a key nowhere (or only corrupt copies of it, with the reason)
//! calls [`MissCache::record`]; later requests ask
//! [`MissCache::is_fresh_miss`] and are answered 404 at once while the miss is younger than
//! `MissTimeout`. The first request after that re-queries upstream: on success the entry is
//! cleared, on failure the miss moves forward to now. A periodic sweep (every `MissAgeCheck`)
//! purges entries nobody asked for in `MissAgeTimeout`. Pure state: time is passed in, so the
//! rules are unit-tested without sleeping.

use crate::key::Key;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most entries kept; beyond it the least recently asked-for entry is dropped first (a flood of
/// random keys must not grow memory without bound).
pub const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone)]
struct Entry {
    missed: Instant,
    asked: Instant,
    /// Why, when upstream stores held only corrupt copies.
    reason: Option<String>,
}

/// Misses by key (case-insensitive, as [`Key`] compares).
#[derive(Debug)]
pub struct MissCache {
    timeout: Duration,
    age_timeout: Duration,
    entries: HashMap<Key, Entry>,
}

impl MissCache {
    /// `timeout` is `MissTimeout` (`0` disables the cache), `age_timeout` is `MissAgeTimeout`
    /// (`0`: entries are never purged by age).
    pub fn new(timeout: Duration, age_timeout: Duration) -> MissCache {
        MissCache {
            timeout,
            age_timeout,
            entries: HashMap::new(),
        }
    }

    /// Whether `key` missed less than `MissTimeout` ago (then the caller answers 404 without
    /// asking upstream). Counts as a request for the entry's age.
    pub fn is_fresh_miss(&mut self, key: &Key, now: Instant) -> bool {
        if self.timeout.is_zero() {
            return false;
        }
        match self.entries.get_mut(key) {
            Some(e) => {
                e.asked = now;
                now.saturating_duration_since(e.missed) < self.timeout
            }
            None => false,
        }
    }

    /// Records (or moves forward) a miss of `key` at `now`; `reason` says why when stores held
    /// only corrupt copies (a corrupt file is a result, cached like a miss).
    pub fn record(&mut self, key: &Key, now: Instant, reason: Option<String>) {
        if self.timeout.is_zero() {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES
            && !self.entries.contains_key(key)
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.asked)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(
            key.clone(),
            Entry {
                missed: now,
                asked: now,
                reason,
            },
        );
    }

    /// The reason recorded with `key`'s miss, if any.
    pub fn reason(&self, key: &Key) -> Option<&str> {
        self.entries.get(key)?.reason.as_deref()
    }

    /// Forgets `key` (it was found).
    pub fn clear(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    /// Purges entries nobody asked for in `MissAgeTimeout`; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        if self.age_timeout.is_zero() {
            return 0;
        }
        let before = self.entries.len();
        let age = self.age_timeout;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.asked) < age);
        before - self.entries.len()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        Key::new("a.pdb", &format!("{i:08X}1")).unwrap()
    }

    #[test]
    fn symproxy_miss_rules() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = MissCache::new(s(300), s(86400));
        let k = key(1);
        assert!(!c.is_fresh_miss(&k, t0), "unknown key: look it up");
        c.record(&k, t0, None);
        assert!(
            c.is_fresh_miss(&k, t0 + s(299)),
            "within MissTimeout: 404 at once"
        );
        assert!(
            c.is_fresh_miss(&Key::new("A.PDB", "000000011").unwrap(), t0 + s(10)),
            "keys compare case-insensitively"
        );
        assert!(!c.is_fresh_miss(&k, t0 + s(300)), "expired: re-query");
        c.record(&k, t0 + s(301), Some("corrupt".into()));
        assert_eq!(c.reason(&k), Some("corrupt"));
        assert!(
            c.is_fresh_miss(&k, t0 + s(500)),
            "failure moves the miss forward"
        );
        c.clear(&k);
        assert!(!c.is_fresh_miss(&k, t0 + s(501)), "found: forgotten");
    }

    #[test]
    fn sweep_purges_entries_nobody_asked_for() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = MissCache::new(s(300), s(3600));
        c.record(&key(1), t0, None);
        c.record(&key(2), t0, None);
        // key 2 keeps being asked for; key 1 is not.
        assert!(!c.is_fresh_miss(&key(2), t0 + s(3000)));
        assert_eq!(c.sweep(t0 + s(3700)), 1);
        assert_eq!(c.len(), 1);
        assert!(!c.is_fresh_miss(&key(1), t0 + s(3700)));
    }

    #[test]
    fn zero_timeouts_disable() {
        let t0 = Instant::now();
        let mut c = MissCache::new(Duration::ZERO, Duration::ZERO);
        c.record(&key(1), t0, None);
        assert!(!c.is_fresh_miss(&key(1), t0));
        assert!(c.is_empty());
        let mut c = MissCache::new(Duration::from_secs(1), Duration::ZERO);
        c.record(&key(1), t0, None);
        assert_eq!(c.sweep(t0 + Duration::from_secs(1_000_000)), 0);
    }
}
