//! Resumable spool files ("partials", issue #17 item 2): a hit read from a remote store is
//! spooled into a file of the agent's state folder named after its source, beside a sidecar
//! that records the source's length and version. When the transfer breaks (a dropped
//! connection, a timeout, a `kill -9`, a reboot), the partial stays; the next lookup of the
//! same file from the same store continues it from where it stopped, through
//! [`Store::open_from`](crate::store::Store::open_from), which starts over when the source's
//! version changed. Neither SymSrv, SymProxy nor dotnet-symbol resume: they retry whole files.
//!
//! Data flow: `Cascade::spool` claims a [`Partial`] (an OS lock on `<id>.lock` keeps two
//! processes sharing the state folder apart), appends to its data file, and either keeps it
//! for later ([`Partial::keep`]) or, once the copy is complete and verified, lets it go with
//! the lookup (drop removes it). `Cascade::resolve` runs [`sweep`], which bounds the partials
//! in number and age.
//!
//! Files in the folder: `<id>.part` (the bytes so far), `<id>.json` (the sidecar), `<id>.lock`.
//! `<id>` is a hash of the store's location and the file's path in it, then its name.

use crate::layout::RelPath;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Files smaller than this are spooled as before: starting them over costs less than keeping
/// their partials.
pub const RESUME_MIN: u64 = 1 << 20;

/// Partials kept at most; the oldest go first.
pub const MAX_PARTIALS: usize = 16;

/// Partials older than this are removed (their source has likely changed, or nobody asks).
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Bytes taken back from a partial's end before resuming: a power cut can leave a file's
/// last blocks unwritten though its length says otherwise; the tail is read again.
pub const TORN_TAIL: u64 = 64 * 1024;

/// What the sidecar records: which file of which store, at which version and length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sidecar {
    store: String,
    path: String,
    len: u64,
    version: String,
}

/// A claimed partial: this process alone writes its data file until it is dropped.
#[derive(Debug)]
pub struct Partial {
    /// The source: the store's location and the file's path in it.
    store: String,
    path: String,
    data: PathBuf,
    meta: PathBuf,
    lock_path: PathBuf,
    lock: Option<std::fs::File>,
    /// Bytes of the data file that continue the source at its recorded version.
    have: u64,
    keep: bool,
}

/// The partial's id: FNV-1a (64 bit) of `store` and `path`, then the file's name, so that a
/// listing of the folder says what each partial is. Stable across builds, unlike std's hasher.
fn id_of(store: &str, path: &RelPath) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in store.bytes().chain([0]).chain(path.to_string().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let name = path.components().last().map_or("file", String::as_str);
    format!("{h:016x}.{name}")
}

impl Partial {
    /// Claims the partial of `path` in `store` in `dir` (created when missing), for a source of
    /// `len` bytes at `version`. A partial left by an earlier attempt at the same version is
    /// continued ([`Partial::have`] bytes, less [`TORN_TAIL`]); any other is started over.
    /// `Ok(None)` when another process holds it (then spool without resuming).
    ///
    /// # Errors
    /// The folder or its files cannot be created, locked or written.
    pub fn claim(
        dir: &Path,
        store: &str,
        path: &RelPath,
        len: u64,
        version: &str,
    ) -> io::Result<Option<Partial>> {
        std::fs::create_dir_all(dir)?;
        let id = id_of(store, path);
        let lock_path = dir.join(format!("{id}.lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        if let Err(e) = lock.try_lock() {
            tracing::info!(store, %path, error = %e, "partial held by another process: not resuming");
            return Ok(None);
        }
        let mut p = Partial {
            store: store.to_string(),
            path: path.to_string(),
            data: dir.join(format!("{id}.part")),
            meta: dir.join(format!("{id}.json")),
            lock_path,
            lock: Some(lock),
            have: 0,
            keep: false,
        };
        let want = Sidecar {
            store: store.to_string(),
            path: path.to_string(),
            len,
            version: version.to_string(),
        };
        let recorded = std::fs::read(&p.meta)
            .ok()
            .and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok());
        let on_disk = std::fs::metadata(&p.data).map_or(0, |m| m.len());
        if recorded.as_ref() == Some(&want) && on_disk <= len {
            p.have = on_disk.saturating_sub(TORN_TAIL);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p.data)?
                .set_len(p.have)?;
        } else {
            if let Some(r) = &recorded {
                tracing::info!(store, %path, was = %r.version, now = %version, on_disk, "partial of another version or length: starting over");
            }
            p.restart(len, version)?;
        }
        Ok(Some(p))
    }

    /// Starts the partial over for a source of `len` bytes at `version` (the source changed):
    /// empties the data file and records the new version.
    ///
    /// # Errors
    /// The files cannot be written.
    pub fn restart(&mut self, len: u64, version: &str) -> io::Result<()> {
        let side = Sidecar {
            store: self.store.clone(),
            path: self.path.clone(),
            len,
            version: version.to_string(),
        };
        std::fs::File::create(&self.data)?;
        std::fs::write(
            &self.meta,
            serde_json::to_vec(&side).map_err(io::Error::other)?,
        )?;
        self.have = 0;
        Ok(())
    }

    /// Bytes of the source already in the data file.
    pub fn have(&self) -> u64 {
        self.have
    }

    /// The data file: the source's bytes from 0 to [`Partial::have`], appended to from there.
    pub fn path(&self) -> &Path {
        &self.data
    }

    /// Leaves the partial on disk for a later attempt (the source broke midway).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.data);
            let _ = std::fs::remove_file(&self.meta);
        }
        drop(self.lock.take()); // Windows cannot remove an open file
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Bounds the partials in `dir`: removes those older than `max_age` (by their data file's
/// last write), the oldest beyond `max_files`, and leftovers without a data file or sidecar.
/// Partials another process holds are left alone. Returns how many were removed.
pub fn sweep(dir: &Path, max_files: usize, max_age: Duration) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut ids: Vec<(String, Option<SystemTime>, bool)> = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((id, ext)) = name.rsplit_once('.') else {
            continue;
        };
        if !matches!(ext, "part" | "json" | "lock") || ids.iter().any(|(i, ..)| i == id) {
            continue;
        }
        let modified = std::fs::metadata(dir.join(format!("{id}.part")))
            .and_then(|m| m.modified())
            .ok();
        let whole = dir.join(format!("{id}.json")).exists();
        ids.push((id.to_string(), modified, whole));
    }
    // Newest first: what is beyond `max_files` after the fresh ones is the oldest.
    ids.sort_by_key(|e| std::cmp::Reverse(e.1));
    let now = SystemTime::now();
    let mut kept = 0;
    let mut removed = 0;
    for (id, modified, whole) in ids {
        let fresh = modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age <= max_age);
        if whole && fresh && kept < max_files {
            kept += 1;
            continue;
        }
        if remove_unheld(dir, &id) {
            removed += 1;
        }
    }
    removed
}

/// Removes partial `id` unless another process holds its lock.
fn remove_unheld(dir: &Path, id: &str) -> bool {
    let lock_path = dir.join(format!("{id}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path);
    let Ok(lock) = lock else {
        return false;
    };
    if lock.try_lock().is_err() {
        return false;
    }
    let _ = std::fs::remove_file(dir.join(format!("{id}.part")));
    let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
    drop(lock);
    let _ = std::fs::remove_file(&lock_path);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::from_safe(s.split('/'))
    }

    #[test]
    fn a_kept_partial_is_continued_at_the_same_version_and_restarted_at_another() {
        let d = tempfile::tempdir().unwrap();
        let path = rel("big.pdb/ABC1/big.pdb");
        let p = Partial::claim(d.path(), r"\\MainOffice\Symbols", &path, 1 << 21, "v1")
            .unwrap()
            .unwrap();
        assert_eq!(p.have(), 0);
        std::fs::write(p.path(), vec![7u8; 300_000]).unwrap();
        p.keep();
        // Same source, same version: continued (less the torn-tail margin).
        let p = Partial::claim(d.path(), r"\\MainOffice\Symbols", &path, 1 << 21, "v1")
            .unwrap()
            .unwrap();
        assert_eq!(p.have(), 300_000 - TORN_TAIL);
        assert_eq!(std::fs::metadata(p.path()).unwrap().len(), p.have());
        p.keep();
        // Another version: started over, never mixed.
        let p = Partial::claim(d.path(), r"\\MainOffice\Symbols", &path, 1 << 21, "v2")
            .unwrap()
            .unwrap();
        assert_eq!(p.have(), 0);
        assert_eq!(std::fs::metadata(p.path()).unwrap().len(), 0);
        // Another store's file of the same name is another partial.
        let q = Partial::claim(d.path(), r"\\Other\Symbols", &path, 1 << 21, "v2")
            .unwrap()
            .unwrap();
        assert_ne!(q.path(), p.path());
        drop((p, q));
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "dropped: gone"
        );
    }

    #[test]
    fn a_corrupt_sidecar_or_an_overlong_partial_starts_over() {
        let d = tempfile::tempdir().unwrap();
        let path = rel("big.pdb/ABC1/big.pdb");
        let p = Partial::claim(d.path(), "s", &path, 1 << 20, "v")
            .unwrap()
            .unwrap();
        std::fs::write(p.path(), vec![1u8; 200_000]).unwrap();
        let (data, meta) = (p.data.clone(), p.meta.clone());
        p.keep();
        std::fs::write(&meta, b"{ not json").unwrap();
        let p = Partial::claim(d.path(), "s", &path, 1 << 20, "v")
            .unwrap()
            .unwrap();
        assert_eq!(p.have(), 0, "unreadable sidecar");
        std::fs::write(&data, vec![1u8; (1 << 20) + 1]).unwrap();
        p.keep();
        let p = Partial::claim(d.path(), "s", &path, 1 << 20, "v")
            .unwrap()
            .unwrap();
        assert_eq!(p.have(), 0, "longer than the source");
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 0);
    }

    #[test]
    fn a_held_partial_is_not_claimed_twice() {
        let d = tempfile::tempdir().unwrap();
        let path = rel("a.dll/5F3C1A2B6000/a.dll");
        let held = Partial::claim(d.path(), "s", &path, 1 << 21, "v").unwrap();
        assert!(held.is_some());
        // A second handle in this process stands for another process: the OS lock is per
        // open file description.
        assert!(
            Partial::claim(d.path(), "s", &path, 1 << 21, "v")
                .unwrap()
                .is_none()
        );
        assert_eq!(sweep(d.path(), 0, Duration::ZERO), 0, "held: left alone");
    }

    #[test]
    fn sweep_bounds_number_and_age_and_removes_leftovers() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..5 {
            let p = Partial::claim(d.path(), "s", &rel(&format!("f{i}.pdb/1/f{i}.pdb")), 9, "v")
                .unwrap()
                .unwrap();
            std::fs::write(p.path(), b"1234").unwrap();
            p.keep();
        }
        std::fs::write(d.path().join("0123456789abcdef.orphan.pdb.part"), b"x").unwrap();
        assert_eq!(
            sweep(d.path(), 3, MAX_AGE),
            3,
            "the orphan and the two beyond 3"
        );
        let parts = |d: &Path| {
            std::fs::read_dir(d)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "part")
                .count()
        };
        assert_eq!(parts(d.path()), 3);
        assert_eq!(sweep(d.path(), 16, Duration::ZERO), 3, "all too old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
