//! `LocalStore`: a symbol store in a folder of this machine's file system.
//!
//! Data flow: `open` streams a file with tokio; `put` takes a per-key lock, streams into a temp
//! file in the destination directory (`.<name>.<random>.symcascade-tmp`), checks the length,
//! flushes to disk, and renames it into place without replacing (tempfile's
//! `persist_noclobber`). Lookups are case-insensitive even on case-sensitive file systems:
//! the exact path is tried first and a directory listing only on a miss.
//!
//! Locking: the per-key lock is an OS file lock (std `File::lock`, stable since Rust 1.89; the
//! `fs2` crate the brief names is unmaintained since 2018 and superseded by it) on
//! `<root>/000Cascade/locks/<name>-<index>.lock`. Holding it means no other writer of that key
//! is alive, so leftover temp files for that key (from a crash) are removed right then.

use super::{
    Capabilities, FileMeta, Opened, PutOutcome, Store, StoreDescription, StoreError, StoreErrorKind,
};
use crate::layout::{self, RelPath};
use async_trait::async_trait;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncRead, AsyncWriteExt};

/// Directory (in the store root) for symcascade's own state; SymStore ignores it as it
/// ignores `000Admin`.
pub const ADMIN_DIR: &str = "000Cascade";
use crate::layout::TEMP_SUFFIX as TMP_SUFFIX;
/// Random characters in a local temp name (tempfile's default).
const TMP_RANDOM: usize = 6;
const COPY_BUF: usize = 256 * 1024;

/// A symbol store rooted at a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    shown: String,
    /// Case-folded names of the root's entries, for the case-insensitive fallback: a store
    /// root holds one folder per file name (200,000 in a big store), so listing it per miss
    /// made every miss O(store). Shared by clones.
    root_index: std::sync::Arc<std::sync::Mutex<RootIndex>>,
    /// Directory listings taken for case-insensitive lookups, shared by clones.
    listings: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `Local`, or `OsSmb` for a share reached through the operating system's client.
    transport: crate::store::Transport,
}

/// How long a root listing answers case-insensitive lookups before it is taken again. A
/// folder another process creates meanwhile in another case than asked for is found at the
/// next listing; exact-case names are always found at once.
const ROOT_INDEX_TTL: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default)]
struct RootIndex {
    taken: Option<std::time::Instant>,
    /// Lower-cased name → name as on disk, for names with upper-case letters only: a
    /// lower-case name is found by probing its lower-case form, so a store of lower-case
    /// names costs no memory here.
    names: std::collections::HashMap<Box<str>, Box<str>>,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write if missing).
    pub fn new(root: impl AsRef<Path>) -> LocalStore {
        let root = root.as_ref().to_path_buf();
        LocalStore {
            shown: root.display().to_string(),
            root,
            root_index: Default::default(),
            listings: Default::default(),
            transport: crate::store::Transport::Local,
        }
    }

    /// Directory listings this store (and its clones) took so far to match a name in another
    /// case: the root index counts one per [`ROOT_INDEX_TTL`] at most; below the root, only a
    /// name in neither its own, upper nor lower case is listed for. Tests use it to check that
    /// lookups do not list directories per request (issue #14).
    pub fn listings(&self) -> u64 {
        self.listings.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn listed(&self) {
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A store on a share the operating system's SMB client reaches (`\\host\share\dir`
    /// through the file system, Windows): the same file operations as a local folder,
    /// described as [`crate::store::Transport::OsSmb`] so the cascade treats it as remote
    /// (its `file.ptr` may not point into local folders; `UriFilter`'s UNC bits apply).
    pub fn os_share(unc: impl AsRef<Path>) -> LocalStore {
        LocalStore {
            transport: crate::store::Transport::OsSmb,
            ..LocalStore::new(unc)
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// For a share reached through the OS's client: whether its root answers, so that a host
    /// or share that cannot be reached is an error (the cascade skips the store and the miss
    /// is not definitive), not an empty store. Asked only after a miss. Local folders: `Ok`.
    fn share_reachable(&self) -> io::Result<()> {
        if self.transport != crate::store::Transport::OsSmb {
            return Ok(());
        }
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the share's root is not a folder",
            )),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the share cannot be reached: {e}"),
            )),
        }
    }

    /// Where `rel` lives under this store's root, in its canonical case (the case the cascade
    /// writes). Pure: no I/O; a file stored in another case is found by [`Store::stat`] and
    /// [`Store::open`], which match names case-insensitively.
    pub fn canonical_path(&self, rel: &RelPath) -> PathBuf {
        rel.components()
            .iter()
            .fold(self.root.clone(), |p, c| p.join(c))
    }

    fn err(&self, op: &'static str, path: &RelPath, e: &io::Error) -> StoreError {
        StoreError::from_io(&self.shown, op, path, e)
    }

    /// Resolves `rel` case-insensitively. `Ok(None)` when any component is missing.
    fn resolve(&self, rel: &[String]) -> io::Result<Option<PathBuf>> {
        let exact = rel.iter().fold(self.root.clone(), |p, c| p.join(c));
        match std::fs::symlink_metadata(&exact) {
            Ok(_) => return Ok(Some(exact)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if cfg!(windows) {
            // NTFS matches names case-insensitively itself: the exact probe said it all.
            return Ok(None);
        }
        if !self.root.is_dir() {
            // A store not created yet holds nothing; the first put creates it (as SymSrv does
            // for downstream stores).
            return Ok(None);
        }
        let Some((first, rest)) = rel.split_first() else {
            return Ok(Some(self.root.clone()));
        };
        let mut cur = match self.root_entry(first)? {
            Some(p) => p,
            None => return Ok(None),
        };
        for c in rest {
            // As asked, then SymStore's canonical upper case (indexes; names written by
            // older tools), then lower case; a listing only for names in mixed case.
            let probes = [c.clone(), c.to_ascii_uppercase(), c.to_ascii_lowercase()];
            if let Some(p) = probes
                .iter()
                .map(|n| cur.join(n))
                .find(|p| std::fs::symlink_metadata(p).is_ok())
            {
                cur = p;
                continue;
            }
            self.listed();
            let found = match std::fs::read_dir(&cur) {
                Ok(rd) => rd.filter_map(Result::ok).find(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(c))
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            match found {
                Some(e) => cur = e.path(),
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The root entry named `name` in any case, from the root index (listed again when older
    /// than [`ROOT_INDEX_TTL`]).
    fn root_entry(&self, name: &str) -> io::Result<Option<PathBuf>> {
        let direct = self.root.join(name);
        if std::fs::symlink_metadata(&direct).is_ok() {
            return Ok(Some(direct));
        }
        let lower = name.to_ascii_lowercase();
        for other in [lower.clone(), name.to_ascii_uppercase()] {
            if other != name {
                let p = self.root.join(&other);
                if std::fs::symlink_metadata(&p).is_ok() {
                    return Ok(Some(p));
                }
            }
        }
        let mut idx = self.root_index.lock().unwrap_or_else(|e| e.into_inner());
        if idx.taken.is_none_or(|t| t.elapsed() >= ROOT_INDEX_TTL) {
            self.listed();
            let mut names = std::collections::HashMap::new();
            match std::fs::read_dir(&self.root) {
                Ok(rd) => {
                    for e in rd.filter_map(Result::ok) {
                        let n = e.file_name();
                        if let Some(s) = n.to_str()
                            && s.bytes().any(|b| b.is_ascii_uppercase())
                        {
                            names.insert(s.to_ascii_lowercase().into(), s.into());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            *idx = RootIndex {
                taken: Some(std::time::Instant::now()),
                names,
            };
        }
        let Some(p) = idx.names.get(lower.as_str()).map(|n| self.root.join(&**n)) else {
            return Ok(None);
        };
        if std::fs::symlink_metadata(&p).is_err() {
            // Removed since the listing (an admin's cleanup, AgeStore): forget it.
            idx.names.remove(lower.as_str());
            return Ok(None);
        }
        Ok(Some(p))
    }

    /// Notes a root folder this process created, so the root index knows it before its next
    /// listing.
    fn note_root_entry(&self, name: &str) {
        let mut idx = self.root_index.lock().unwrap_or_else(|e| e.into_inner());
        if idx.taken.is_some() && name.bytes().any(|b| b.is_ascii_uppercase()) {
            idx.names
                .insert(name.to_ascii_lowercase().into(), name.into());
        }
    }

    /// Creates (case-insensitively reusing existing) directories for `rel`'s parent.
    fn ensure_parent(&self, rel: &RelPath) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.root)?;
        let mut cur = self.root.clone();
        // Below a folder this call created, nothing exists in any case: no lookup (a lookup
        // of a missing mixed-case name would list the fresh folder).
        let mut created = false;
        for (i, c) in rel.parent().iter().enumerate() {
            let found = match created {
                true => None,
                false => self.resolve(&rel.parent()[..=i])?,
            };
            match found {
                Some(p) => cur = p,
                None => {
                    let p = cur.join(c);
                    match std::fs::create_dir(&p) {
                        Ok(()) => {
                            if i == 0 {
                                self.note_root_entry(c);
                            }
                            created = true;
                        }
                        // Another writer's: what is below may exist, in any case.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                    cur = p;
                }
            }
        }
        Ok(cur)
    }

    /// Takes the per-key OS lock (see [`LocalStore::lock_path`]), waiting for another
    /// process writing the same key; released when the file is dropped.
    async fn lock_key(&self, path: &RelPath) -> io::Result<std::fs::File> {
        let lock_path = self.lock_path(path);
        blocking(move || {
            std::fs::create_dir_all(lock_path.parent().expect("lock has a parent"))?;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            f.lock()?;
            Ok(f)
        })
        .await
    }

    /// A temp file beside `path`'s final name (its folder created, dead temps of the same
    /// name removed); refused up front when `len` bytes do not fit, rather than filling the
    /// disk and failing midway.
    async fn new_temp(
        &self,
        path: &RelPath,
        len: Option<u64>,
    ) -> io::Result<(PathBuf, tempfile::NamedTempFile)> {
        let me = self.clone();
        let rel = path.clone();
        let file_name = path.file_name().to_string();
        blocking(move || {
            let dir = me.ensure_parent(&rel)?;
            remove_dead_temps(&dir, &file_name);
            if let Some(need) = len
                && let Ok(free) = fs4::available_space(&dir)
                && free < need
            {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("{need} bytes needed, {free} free"),
                ));
            }
            let prefix = layout::temp_prefix(&file_name, TMP_RANDOM);
            let tmp = shared_tempfile(&dir, &prefix, TMP_SUFFIX)?;
            Ok((dir, tmp))
        })
        .await
    }

    fn lock_path(&self, rel: &RelPath) -> PathBuf {
        self.root
            .join(ADMIN_DIR)
            .join("locks")
            .join(format!("{:02x}.lock", lock_stripe(rel)))
    }

    /// Tries to take the per-key writer lock of the key folder `dir` (e.g. `["a.pdb",
    /// "<index>"]`), the lock every `put` into that folder holds: `Ok(Some(file))` (the lock,
    /// released on drop) when no writer of this key is alive, `Ok(None)` when one is. Used by
    /// store administration (aging) so that it never removes a folder being written.
    ///
    /// # Errors
    /// I/O errors creating or opening the lock file; an unsafe component is `InvalidInput`.
    pub fn try_lock_key_folder(&self, dir: &[String]) -> io::Result<Option<std::fs::File>> {
        let rel = RelPath::checked(dir.iter().cloned().chain(["x".to_string()]))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "unsafe folder name"))?;
        let lock_path = self.lock_path(&rel);
        std::fs::create_dir_all(lock_path.parent().expect("lock has a parent"))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Removes temp files older than `max_age` anywhere under the root: leftovers of writers
    /// that died before the OS lock protocol could clean them. Returns how many were removed.
    /// Walks the whole store, so the agent runs it rarely.
    ///
    /// # Errors
    /// I/O errors listing the root.
    pub fn sweep_stale_temps(&self, max_age: std::time::Duration) -> io::Result<usize> {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.filter_map(Result::ok) {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(e.path());
                } else if is_old_key_lock(&e) {
                    // Per-key lock files of older versions (one per key ever written): gone
                    // once no writer holds them.
                    let unused = std::fs::File::open(e.path()).is_ok_and(|f| f.try_lock().is_ok());
                    if unused && std::fs::remove_file(e.path()).is_ok() {
                        removed += 1;
                    }
                } else if e.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
                    let old = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age >= max_age);
                    if old && std::fs::remove_file(e.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// Creates a temp file in `dir` (`<prefix><random><suffix>`) that, once renamed into place, is
/// readable like any file the user creates: mode `0666 & !umask` on Unix (tempfile's default,
/// 0600, survives the rename and would hide the file from Samba's other users, nginx and other
/// accounts reading a shared store), the folder's inherited ACL on Windows.
///
/// # Errors
/// The I/O error creating the file.
pub fn shared_tempfile(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> io::Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(suffix).rand_bytes(TMP_RANDOM);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Passed to open(2), so the process umask applies, as for any new file.
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
}

/// `000Cascade/locks/<16 hex digits>.lock`: a lock file of a version that kept one per key.
fn is_old_key_lock(e: &std::fs::DirEntry) -> bool {
    let name = e.file_name();
    let name = name.to_string_lossy();
    let in_locks = e
        .path()
        .parent()
        .is_some_and(|p| p.ends_with(Path::new(ADMIN_DIR).join("locks")));
    in_locks
        && name
            .strip_suffix(".lock")
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Lock files per store: keys share [`LOCK_STRIPES`] lock files, so `000Cascade/locks` stays
/// this small however many keys the store holds (one file per key grew without bound).
pub const LOCK_STRIPES: u64 = 256;

/// The lock stripe of `rel`'s key folder: FNV-1a of the lower-cased folder path, stable across
/// builds and platforms. One lock covers every form of a key (plain, compressed, `file.ptr`),
/// since their temp files share the folder. Two keys on one stripe only wait for each other.
fn lock_stripe(rel: &RelPath) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rel.parent().join("/").to_ascii_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % LOCK_STRIPES
}

fn remove_dead_temps(dir: &Path, file_name: &str) {
    let prefix = layout::temp_prefix(file_name, TMP_RANDOM);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&prefix) && n.ends_with(TMP_SUFFIX) {
                tracing::debug!(path = %e.path().display(), "removing temp file of a dead writer");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Bytes written between background flushes to disk.
const SYNC_EVERY: u64 = 32 << 20;

/// Copies `src` into `out`, asking the OS to flush what was written so far every
/// [`SYNC_EVERY`] bytes on a blocking thread (at most one flush in flight). The network keeps
/// streaming meanwhile, so the final `fsync` before the rename has little left to do: a large
/// file becomes durable almost as soon as its last byte arrives.
async fn copy_with_background_sync(
    src: &mut (dyn AsyncRead + Send + Unpin),
    out: &mut tokio::fs::File,
    sync_file: std::fs::File,
) -> io::Result<u64> {
    use tokio::io::AsyncReadExt;
    let sync_file = std::sync::Arc::new(sync_file);
    let mut buf = vec![0u8; COPY_BUF];
    let (mut total, mut since_sync) = (0u64, 0u64);
    let mut flushing: Option<tokio::task::JoinHandle<io::Result<()>>> = None;
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await?;
        total += n as u64;
        since_sync += n as u64;
        if since_sync >= SYNC_EVERY && flushing.as_ref().is_none_or(|h| h.is_finished()) {
            if let Some(h) = flushing.take() {
                h.await.map_err(io::Error::other)??;
            }
            out.flush().await?;
            let f = sync_file.clone();
            flushing = Some(tokio::task::spawn_blocking(move || f.sync_data()));
            since_sync = 0;
        }
    }
    if let Some(h) = flushing {
        h.await.map_err(io::Error::other)??;
    }
    Ok(total)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

impl LocalStore {
    /// Opens `path`, from `resume`'s offset when the file's version is still `resume`'s.
    async fn open_at(
        &self,
        path: &RelPath,
        resume: Option<(u64, &str)>,
    ) -> Result<Option<Opened>, StoreError> {
        use tokio::io::AsyncSeekExt;
        let Some(meta) = self.stat(path).await? else {
            return Ok(None);
        };
        let p = meta.local_path.clone().expect("local stat has a path");
        let mut f = match tokio::fs::File::open(&p).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err("open", path, &e)),
        };
        let m = f.metadata().await.map_err(|e| self.err("open", path, &e))?;
        let version = file_version(&m);
        let offset = match resume {
            Some((off, v)) if v == version && off <= m.len() => off,
            _ => 0,
        };
        if offset > 0 {
            f.seek(io::SeekFrom::Start(offset))
                .await
                .map_err(|e| self.err("open", path, &e))?;
        }
        Ok(Some(Opened {
            len: Some(m.len()),
            reader: Box::new(f),
            local_path: Some(p),
            offset,
            version: Some(version),
        }))
    }
}

/// A local file's version for [`Store::open_from`]: its size and last-write time (ns).
fn file_version(m: &std::fs::Metadata) -> String {
    let t = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}-{t}", m.len())
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            location: self.shown.clone(),
            transport: self.transport,
        }
    }

    async fn stat(&self, path: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        let me = self.clone();
        let comps = path.components().to_vec();
        let r = blocking(move || match me.resolve(&comps)? {
            Some(p) => {
                let m = std::fs::metadata(&p)?;
                Ok(m.is_file().then_some(FileMeta {
                    len: m.len(),
                    local_path: Some(p),
                }))
            }
            None => me.share_reachable().map(|()| None),
        })
        .await;
        r.map_err(|e| self.err("stat", path, &e))
    }

    async fn open(&self, path: &RelPath) -> Result<Option<Opened>, StoreError> {
        self.open_at(path, None).await
    }

    async fn open_from(
        &self,
        path: &RelPath,
        offset: u64,
        version: &str,
    ) -> Result<Option<Opened>, StoreError> {
        self.open_at(path, Some((offset, version))).await
    }

    async fn put(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.write(path, src, len, false).await
    }

    async fn replace(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.write(path, src, len, true).await
    }

    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        let root = self.root.clone();
        let shown = self.shown.clone();
        blocking(move || {
            let meta = std::fs::metadata(&root)?;
            let readable = meta.is_dir() && std::fs::read_dir(&root).is_ok();
            // Mode bits say nothing about ACLs, read-only mounts, root or another account:
            // only creating a file tells (as `doctor` does). The probe is removed on drop.
            let writable =
                readable && shared_tempfile(&root, ".symcascade-probe.", TMP_SUFFIX).is_ok();
            Ok(Capabilities {
                readable,
                writable,
                free_bytes: fs4::available_space(&root).ok(),
            })
        })
        .await
        .map_err(|e| StoreError::from_io(shown, "capabilities", "", &e))
    }
}

impl LocalStore {
    /// `put` (`replace == false`: an existing file is kept) or `replace` (the file is renamed
    /// over an existing one, under the same per-key lock).
    async fn write(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
        replace: bool,
    ) -> Result<PutOutcome, StoreError> {
        let err = |e: &io::Error| self.err("put", path, e);
        if !replace && let Some(m) = self.stat(path).await? {
            return Ok(PutOutcome::AlreadyPresent {
                local_path: m.local_path,
            });
        }
        // Per-key OS lock: waits while another process writes the same key.
        let _lock = self.lock_key(path).await.map_err(|e| err(&e))?;
        // Replacing: rename over the existing name whatever its case.
        let existing = self.stat(path).await?;
        if !replace && let Some(m) = existing {
            return Ok(PutOutcome::AlreadyPresent {
                local_path: m.local_path,
            });
        }
        let (dir, tmp) = self.new_temp(path, len).await.map_err(|e| err(&e))?;
        let std_file = tmp.as_file().try_clone().map_err(|e| err(&e))?;
        let sync_file = tmp.as_file().try_clone().map_err(|e| err(&e))?;
        let mut out = tokio::fs::File::from_std(std_file);
        let copied = copy_with_background_sync(src, &mut out, sync_file).await;
        let bytes = match copied {
            Ok(n) => n,
            Err(e) => {
                // `tmp` is dropped (deleted) on return.
                return Err(StoreError::from_io(&self.shown, "put", path, &e));
            }
        };
        if let Some(want) = len
            && want != bytes
        {
            return Err(StoreError::new(
                &self.shown,
                "put",
                path,
                StoreErrorKind::Truncated,
                format!("expected {want} bytes, got {bytes}"),
            ));
        }
        out.flush().await.map_err(|e| err(&e))?;
        out.sync_all().await.map_err(|e| err(&e))?;
        drop(out);
        let final_path = match existing.and_then(|m| m.local_path) {
            Some(p) if replace => p,
            _ => dir.join(path.file_name()),
        };
        let persisted = publish_temp(tmp, final_path.clone(), replace)
            .await
            .map_err(|e| err(&e))?;
        Ok(if persisted {
            PutOutcome::Written {
                bytes,
                local_path: Some(final_path),
            }
        } else {
            PutOutcome::AlreadyPresent {
                local_path: Some(final_path),
            }
        })
    }
}

/// How often a served file's write time is moved to now, at most (symbolicator's "touch"
/// period; `admin::age` reads last use from it): a hot file costs one write-time update per hour, not one per request.
pub const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Records a use of the store file `path` (a hit served or copied): sets its write time to now
/// when it is older than [`TOUCH_EVERY`]. `modified`: its write time when the caller already
/// knows it (saves a stat). Best effort: any failure (read-only store, another owner) is
/// ignored, so it never fails the request. Cheap: a stat, and at most hourly an open and a
/// time update.
pub fn touch_hit(path: Option<&Path>, modified: Option<std::time::SystemTime>) {
    let Some(path) = path else { return };
    let now = std::time::SystemTime::now();
    let Some(m) = modified.or_else(|| std::fs::metadata(path).and_then(|m| m.modified()).ok())
    else {
        return;
    };
    if now.duration_since(m).is_ok_and(|age| age < TOUCH_EVERY) || m > now {
        return;
    }
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path)
        && let Err(e) = f.set_modified(now)
    {
        tracing::debug!(path = %path.display(), "recording last use: {e}");
    }
}

/// Renames a complete temp file to `to` without replacing (`Ok(false)`: a file appeared
/// there meanwhile and is kept), or replacing when `replace`.
async fn publish_temp(
    tmp: tempfile::NamedTempFile,
    to: PathBuf,
    replace: bool,
) -> io::Result<bool> {
    blocking(move || match tmp.persist_noclobber(&to) {
        Ok(_) => Ok(true),
        Err(e) if replace && e.error.kind() == io::ErrorKind::AlreadyExists => {
            e.file.persist(&to).map(|_| true).map_err(|e| e.error)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn rel(p: &[&str]) -> RelPath {
        RelPath::from_safe(p.iter().copied())
    }

    #[tokio::test]
    async fn put_open_stat_case_insensitive() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().join("store"));
        let p = rel(&["a.pdb", "ABC1", "a.pdb"]);
        assert!(s.stat(&p).await.unwrap().is_none());
        let mut data: &[u8] = b"hello";
        let out = s.put(&p, &mut data, Some(5)).await.unwrap();
        assert!(matches!(out, PutOutcome::Written { bytes: 5, .. }));
        let upper = rel(&["A.PDB", "abc1", "A.pdb"]);
        let mut o = s.open(&upper).await.unwrap().unwrap();
        let mut buf = String::new();
        o.reader.read_to_string(&mut buf).await.unwrap();
        assert_eq!(buf, "hello");
        // A complete file is never rewritten; the existing directory case is reused.
        let mut other: &[u8] = b"other";
        let out = s.put(&upper, &mut other, Some(5)).await.unwrap();
        assert!(matches!(out, PutOutcome::AlreadyPresent { .. }));
        assert_eq!(
            std::fs::read(dir.path().join("store/a.pdb/ABC1/a.pdb")).unwrap(),
            b"hello"
        );
        // Listed, not probed: on a case-insensitive file system (Windows) `store/A.PDB`
        // exists because `store/a.pdb` does.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("store"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with("000"))
            .collect();
        assert_eq!(names, ["a.pdb"]);
        assert!(
            s.stat(&rel(&["a.pdb", "ABC2", "a.pdb"]))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn short_stream_publishes_nothing_and_dead_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        let p = rel(&["b.dll", "1234", "b.dll"]);
        let mut data: &[u8] = b"abc";
        let e = s.put(&p, &mut data, Some(10)).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Truncated);
        assert!(!dir.path().join("b.dll/1234/b.dll").exists());
        // A crashed writer's temp file is removed by the next writer of the key.
        std::fs::write(
            dir.path().join("b.dll/1234/.b.dll.XXXX.symcascade-tmp"),
            b"x",
        )
        .unwrap();
        let mut data: &[u8] = b"abc";
        s.put(&p, &mut data, Some(3)).await.unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("b.dll/1234"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["b.dll".to_string()]);
    }

    #[tokio::test]
    async fn concurrent_writers_of_one_key_publish_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        let p = rel(&["c.pdb", "FF1", "c.pdb"]);
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let s = s.clone();
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                let body = vec![i; 100_000];
                let mut r: &[u8] = &body;
                s.put(&p, &mut r, Some(100_000)).await.unwrap()
            }));
        }
        let mut written = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), PutOutcome::Written { .. }) {
                written += 1;
            }
        }
        assert_eq!(written, 1);
        let body = std::fs::read(dir.path().join("c.pdb/FF1/c.pdb")).unwrap();
        assert!(body.len() == 100_000 && body.iter().all(|b| *b == body[0]));
    }

    #[test]
    fn lock_files_stay_bounded_and_cover_every_form_of_a_key() {
        let s = LocalStore::new("/store");
        let mut files = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            let idx = format!("{i:08X}1");
            files.insert(s.lock_path(&rel(&["a.pdb", &idx, "a.pdb"])));
            assert_eq!(
                s.lock_path(&rel(&["a.pdb", &idx, "a.pdb"])),
                s.lock_path(&rel(&["A.PDB", &idx, "a.pd_"]))
            );
        }
        assert_eq!(
            files.len() as u64,
            LOCK_STRIPES,
            "10,000 keys, {} lock files",
            files.len()
        );
    }

    #[tokio::test]
    async fn the_longest_name_a_key_accepts_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        for len in [232, 233, 255] {
            let name = format!("{}.pdb", "n".repeat(len - 4));
            let p = rel(&[&name, "ABC1", &name]);
            let mut data: &[u8] = b"hello";
            let out = s.put(&p, &mut data, Some(5)).await.unwrap();
            assert!(matches!(out, PutOutcome::Written { bytes: 5, .. }), "{len}");
        }
    }

    #[tokio::test]
    async fn replace_renames_over_a_bad_file_and_put_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        // A 0-byte file left under the final name (in another case) by an older tool.
        std::fs::create_dir_all(dir.path().join("d.pdb/AB1")).unwrap();
        std::fs::write(dir.path().join("d.pdb/AB1/D.PDB"), b"").unwrap();
        let p = rel(&["d.pdb", "AB1", "d.pdb"]);
        let mut good: &[u8] = b"good";
        let out = s.put(&p, &mut good, Some(4)).await.unwrap();
        assert!(matches!(out, PutOutcome::AlreadyPresent { .. }));
        let mut good: &[u8] = b"good";
        let out = s.replace(&p, &mut good, Some(4)).await.unwrap();
        assert!(
            matches!(out, PutOutcome::Written { bytes: 4, .. }),
            "{out:?}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("d.pdb/AB1/D.PDB")).unwrap(),
            b"good"
        );
        // A short stream replaces nothing.
        let mut short: &[u8] = b"ba";
        let e = s.replace(&p, &mut short, Some(9)).await.unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Truncated);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("d.pdb/AB1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["D.PDB".to_string()]);
        // Replacing where nothing is yet simply writes.
        let q = rel(&["e.pdb", "AB1", "e.pdb"]);
        let mut good: &[u8] = b"new";
        s.replace(&q, &mut good, Some(3)).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("e.pdb/AB1/e.pdb")).unwrap(),
            b"new"
        );
    }

    #[tokio::test]
    async fn sweep_removes_only_old_temps() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join("x/1")).unwrap();
        std::fs::write(dir.path().join("x/1/.x.a.symcascade-tmp"), b"x").unwrap();
        std::fs::write(dir.path().join("x/1/x"), b"x").unwrap();
        assert_eq!(
            s.sweep_stale_temps(std::time::Duration::from_secs(3600))
                .unwrap(),
            0
        );
        // Lock files of the per-key era go; the stripes stay.
        std::fs::create_dir_all(dir.path().join("000Cascade/locks")).unwrap();
        std::fs::write(
            dir.path().join("000Cascade/locks/0123456789abcdef.lock"),
            b"",
        )
        .unwrap();
        std::fs::write(dir.path().join("000Cascade/locks/0a.lock"), b"").unwrap();
        assert_eq!(s.sweep_stale_temps(std::time::Duration::ZERO).unwrap(), 2);
        assert!(dir.path().join("000Cascade/locks/0a.lock").exists());
        assert!(dir.path().join("x/1/x").exists());
    }
}
