//! Spool files: where a hit read from an upstream store waits, verified, before any store or
//! client sees it. Each process names its spool files `.symcascade-spool.<pid>.<random>` and
//! holds an OS lock on `.symcascade-spool.<pid>.lock` in each spool folder for its whole life,
//! so a sweep can tell a dead process's leftovers (a `kill -9` or a power cut mid-transfer) from
//! a live one's.
//!
//! Data flow: `cascade` and `verify` create spool files with [`new_spool_file`];
//! `Cascade::resolve` sweeps the spool folder once ([`sweep_spool_dir`]); the binary calls
//! [`release_spool_locks`] at exit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Name prefix of spool files (in [`crate::cascade::CascadeOptions::spool_dir`], else the system temp folder):
/// `.symcascade-spool.<pid>.<random>`, next to `.symcascade-spool.<pid>.lock`.
pub const SPOOL_PREFIX: &str = ".symcascade-spool.";

/// Lock files this process holds, one per spool folder, for its whole life.
static SPOOL_OWNERS: Mutex<Vec<(PathBuf, std::fs::File)>> = Mutex::new(Vec::new());

fn spool_lock_path(dir: &std::path::Path, pid: u32) -> PathBuf {
    dir.join(format!("{SPOOL_PREFIX}{pid}.lock"))
}

/// A new spool file in `dir`, removed on drop. The first one in a folder also creates and
/// locks (an OS file lock, released when the process ends, however it ends) this process's
/// lock file there, so that [`sweep_spool_dir`] can tell a live process's spool files from a
/// dead one's. The spool files themselves are not locked: on Windows a lock would block the
/// HTTP front reading a spool file while it is written.
pub(crate) fn new_spool_file(dir: &std::path::Path) -> std::io::Result<tempfile::NamedTempFile> {
    let pid = std::process::id();
    {
        let mut owners = SPOOL_OWNERS.lock().unwrap_or_else(|e| e.into_inner());
        if !owners.iter().any(|(d, _)| d == dir) {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(spool_lock_path(dir, pid))?;
            f.try_lock().map_err(std::io::Error::other)?;
            owners.push((dir.to_path_buf(), f));
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{SPOOL_PREFIX}{pid}."))
        .tempfile_in(dir)
}

/// Removes this process's spool lock files: call once, at the very end of the process, after
/// every lookup has ended (a lookup started later would spool without the lock's protection).
/// A process that ends without calling it leaves a 0-byte lock file, which the next sweep
/// removes.
pub fn release_spool_locks() {
    let owners = std::mem::take(&mut *SPOOL_OWNERS.lock().unwrap_or_else(|e| e.into_inner()));
    for (dir, f) in owners {
        drop(f); // Windows cannot remove an open file
        let _ = std::fs::remove_file(spool_lock_path(&dir, std::process::id()));
    }
}

/// Removes the spool files of dead processes from `dir` (a `kill -9`, a crash or a power cut
/// during a transfer leaves them, up to the size of the file being copied each): the files of
/// a process whose lock file can be locked (or is gone) have no live owner. Files that cannot
/// be opened (other accounts') are left alone. Returns how many spool files were removed.
pub fn sweep_spool_dir(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let me = std::process::id();
    let mut by_pid: HashMap<u32, Vec<PathBuf>> = HashMap::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SPOOL_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me {
            by_pid.entry(pid).or_default().push(e.path());
        }
    }
    let mut removed = 0;
    for (pid, files) in by_pid {
        let lock = spool_lock_path(dir, pid);
        let dead = match std::fs::OpenOptions::new().write(true).open(&lock) {
            Ok(f) => f.try_lock().is_ok(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if !dead {
            continue;
        }
        for f in files.iter().filter(|f| **f != lock) {
            if std::fs::remove_file(f).is_ok() {
                removed += 1;
            }
        }
        let _ = std::fs::remove_file(&lock);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_dead_processes_spool_files() {
        let d = tempfile::tempdir().unwrap();
        let put = |n: &str| std::fs::write(d.path().join(n), b"x").unwrap();
        // A dead process: its lock file is unlocked (or gone).
        put(".symcascade-spool.4000001.aaaaaa");
        put(".symcascade-spool.4000001.bbbbbb");
        put(".symcascade-spool.4000001.lock");
        put(".symcascade-spool.4000002.cccccc");
        // A live one: its lock file is locked.
        put(".symcascade-spool.4000003.dddddd");
        put(".symcascade-spool.4000003.lock");
        let live = std::fs::File::options()
            .write(true)
            .open(d.path().join(".symcascade-spool.4000003.lock"))
            .unwrap();
        live.lock().unwrap();
        // Ours, and files that are not spool files.
        let mine = new_spool_file(d.path()).unwrap();
        put("unrelated.txt");
        assert_eq!(sweep_spool_dir(d.path()), 3);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let pid = std::process::id();
        let mut want = vec![
            ".symcascade-spool.4000003.dddddd".to_string(),
            ".symcascade-spool.4000003.lock".to_string(),
            format!(".symcascade-spool.{pid}.lock"),
            mine.path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
            "unrelated.txt".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
    }
}
