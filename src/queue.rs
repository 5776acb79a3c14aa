//! The miss queue's on-share formats, as pure functions: request records, leases, miss-cache
//! entries, back-fill entries and SymChk manifests.
//!
//! Data flow: `symcascade request`/`prefetch` (or any agent) write a request record into
//! `<branch root>/000Cascade/requests/`; agents read, lease, process and remove it. Everything
//! here is small JSON, written with "create new" so that no reader ever sees half a record.
//!
//! Layout under the branch store's `000Cascade/` (SymStore ignores it as it ignores `000Admin`):
//! - `requests/<index>-<requester>-<name>.req`: one wanted key for one requester (an agent id,
//!   or `any` for a branch-wide prefetch);
//! - `leases/<index>-<name>.lease`: the agent pulling that key over the WAN, until `expires`;
//! - `misses/<index>-<name>.miss`: no upstream had the key; not asked again until `expires`
//!   (SymProxy `MissTimeout`);
//! - `rejected/<record>` + `<record>.reason`: malformed records moved aside.

use crate::key::Key;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The admin folder (in the branch store's root) holding the queue.
pub const ADMIN_DIR: &str = crate::store::local::ADMIN_DIR;
/// Request records.
pub const REQUESTS: &str = "requests";
/// Leases.
pub const LEASES: &str = "leases";
/// Miss cache entries.
pub const MISSES: &str = "misses";
/// Malformed records, moved aside.
pub const REJECTED: &str = "rejected";
/// Requester id meaning "any agent of the branch" (prefetch into the branch store).
pub const ANY: &str = "any";

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A request for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// File name, e.g. `ntdll.pdb`.
    pub name: String,
    /// Index.
    pub index: String,
    /// Agent id that wants the file in its local store, or [`ANY`].
    pub requester: String,
    /// When it was requested, seconds since the epoch.
    pub requested: u64,
}

/// Why a record was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Not JSON of the expected shape.
    #[error("not a request record: {0}")]
    Syntax(String),
    /// The key is invalid.
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    /// The requester id is invalid.
    #[error("invalid requester id {0:?} (letters, digits, `_` and `-`, at most 64)")]
    Requester(String),
}

/// `true` for a valid agent id: 1–64 of `[A-Za-z0-9_-]`.
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Record {
    /// A record for `key` wanted by `requester`, stamped now.
    ///
    /// # Errors
    /// [`RecordError::Requester`] for an invalid requester id.
    pub fn new(key: &Key, requester: &str) -> Result<Record, RecordError> {
        if !valid_agent_id(requester) {
            return Err(RecordError::Requester(requester.to_string()));
        }
        Ok(Record {
            name: key.name().to_string(),
            index: key.index().to_string(),
            requester: requester.to_string(),
            requested: now_secs(),
        })
    }

    /// Parses and validates a record file's content.
    ///
    /// # Errors
    /// [`RecordError`] naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<(Record, Key), RecordError> {
        let r: Record =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Syntax(e.to_string()))?;
        if !valid_agent_id(&r.requester) {
            return Err(RecordError::Requester(r.requester));
        }
        let key = Key::new(&r.name, &r.index)?;
        Ok((r, key))
    }

    /// The record's file name: `<index>-<requester>-<name>.req`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.req", self.index, self.requester, self.name)
    }

    /// JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("record serialises")
    }
}

/// The per-key file name used for leases and misses: `<index>-<name>.<ext>`.
pub fn key_file(key: &Key, ext: &str) -> String {
    format!(
        "{}-{}.{ext}",
        key.index().to_ascii_uppercase(),
        key.name().to_ascii_lowercase()
    )
}

/// A lease: `holder` pulls the key over the WAN until `expires` (seconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Agent id.
    pub holder: String,
    /// Expiry, seconds since the epoch.
    pub expires: u64,
}

/// A miss-cache entry: no upstream had the key (or only corrupt copies of it); do not ask
/// again before `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Miss {
    /// Expiry, seconds since the epoch.
    pub expires: u64,
    /// When the key was first found missing (for `MissAgeTimeout`).
    pub first: u64,
    /// Why, when stores held corrupt copies (the refusals, `; ` between); absent for a plain
    /// miss. Entries written before this field existed read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Expiry `ttl` from now.
pub fn expires_in(ttl: Duration) -> u64 {
    now_secs() + ttl.as_secs().max(1)
}

/// A pending back-fill: `store` (a location as written) lacks `key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backfill {
    /// File name.
    pub name: String,
    /// Index.
    pub index: String,
    /// The store that was skipped.
    pub store: String,
}

/// Why a manifest line was rejected.
#[derive(Debug, thiserror::Error)]
#[error("manifest line {line}: {reason}")]
pub struct ManifestError {
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// Parses a SymChk `/om` manifest: one `<name>,<index>,<n>` per line (`symchk /om` writes
/// `1` as the third field). Blank lines and `;`/`#` comments are skipped.
///
/// # Errors
/// [`ManifestError`] for the first malformed line, naming it.
pub fn parse_manifest(text: &str) -> Result<Vec<Key>, ManifestError> {
    let mut keys = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        // A byte-order mark (an editor's, or several from concatenated files) counts as
        // blank wherever it stands between fields (fuzz finding: `\u{feff}\t\u{feff}a.pdb`
        // kept one in the name, which did not survive writing and parsing again).
        let blank = |c: char| c.is_whitespace() || c == '\u{feff}';
        let line = raw.trim_matches(blank);
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| ManifestError {
            line: i + 1,
            reason,
        };
        let parts: Vec<&str> = line.split(',').map(|p| p.trim_matches(blank)).collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad(format!("expected `<name>,<index>,1`, got {line:?}")));
        }
        keys.push(Key::new(parts[0], parts[1]).map_err(|e| bad(e.to_string()))?);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_rejections() {
        let k = Key::new("ntdll.pdb", "1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21").unwrap();
        let r = Record::new(&k, "desk-01").unwrap();
        assert_eq!(
            r.file_name(),
            "1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21-desk-01-ntdll.pdb.req"
        );
        let (back, key) = Record::parse(&r.to_bytes()).unwrap();
        assert_eq!((back, key), (r, k.clone()));
        assert!(Record::new(&k, "a.b").is_err());
        for bad in [
            &b"not json"[..],
            br#"{"name":"../x","index":"12","requester":"a","requested":1}"#,
            br#"{"name":"x.pdb","index":"zz","requester":"a","requested":1}"#,
            br#"{"name":"x.pdb","index":"12","requester":"a/b","requested":1}"#,
            br#"{"name":"x.pdb","index":"12","requester":"a","requested":1,"extra":1}"#,
        ] {
            assert!(
                Record::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn byte_order_marks_between_fields_are_blank() {
        let keys = parse_manifest("\u{feff}\t\t\u{feff}p.a.apdb,\t\u{feff}DEf\n").unwrap();
        assert_eq!(keys, vec![Key::new("p.a.apdb", "DEf").unwrap()]);
    }

    #[test]
    fn manifests() {
        let keys = parse_manifest(
            "; symchk /om output\nntdll.pdb,1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21,1\n\n kernel32.dll , 6AA9A872c000 ,1\n",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].name(), "kernel32.dll");
        let e = parse_manifest("a.pdb,12,1\nb.pdb\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_manifest("a/b.pdb,12,1").unwrap_err();
        assert!(e.reason.contains("separator"), "{e}");
    }
}
