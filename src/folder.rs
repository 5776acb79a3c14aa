//! `Folder`: a folder of small control files (the miss queue, leases, the miss cache) on a local
//! path or an SMB share.
//!
//! Data flow: the agent opens `<branch store>/000Cascade/<sub>` as a `Folder` and lists, reads,
//! creates ("create new", never replace) and removes records in it. This is deliberately not
//! part of `Store`, which stays about symbol files; two transports only, so an enum.
//!
//! Every write is atomic for readers: local files are written to a temp name and linked into
//! place without replacing; SMB files are created with "fail if exists" and written in one
//! request before anyone can list them as complete (readers treat unparsable records as
//! possibly in progress only when they are younger than a few seconds; see the agent).

use crate::layout::RelPath;
use crate::store::smb::{DirChange, SmbStore};
use crate::store::{StoreError, StoreErrorKind};
use std::io;
use std::path::PathBuf;

/// A folder of small control files.
#[derive(Debug, Clone)]
pub enum Folder {
    /// A local folder.
    Local(PathBuf),
    /// A folder below an SMB store's root.
    Smb {
        /// The store.
        store: SmbStore,
        /// Folder components below the store root.
        dir: Vec<String>,
    },
}

/// Largest control file read, bytes.
pub const MAX_CONTROL_FILE: usize = 64 * 1024;

impl Folder {
    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Folder::Local(p) => p.display().to_string(),
            Folder::Smb { store, dir } => {
                use crate::store::Store;
                format!("{}\\{}", store.describe().location, dir.join("\\"))
            }
        }
    }

    /// A subfolder.
    pub fn join(&self, sub: &str) -> Folder {
        match self {
            Folder::Local(p) => Folder::Local(p.join(sub)),
            Folder::Smb { store, dir } => {
                let mut d = dir.clone();
                d.push(sub.to_string());
                Folder::Smb {
                    store: store.clone(),
                    dir: d,
                }
            }
        }
    }

    fn rel(&self, name: &str) -> Result<RelPath, StoreError> {
        let dir = match self {
            Folder::Local(_) => Vec::new(),
            Folder::Smb { dir, .. } => dir.clone(),
        };
        RelPath::checked(dir.into_iter().chain(std::iter::once(name.to_string()))).ok_or_else(
            || {
                StoreError::new(
                    self.describe(),
                    "name",
                    name,
                    StoreErrorKind::Corrupt,
                    "unusable file name",
                )
            },
        )
    }

    fn io_err(&self, op: &'static str, name: &str, e: &io::Error) -> StoreError {
        StoreError::from_io(self.describe(), op, name, e)
    }

    /// File names in the folder (not subfolders, not temp files); empty when it does not
    /// exist.
    ///
    /// # Errors
    /// [`StoreError`] when it cannot be listed.
    pub async fn list(&self) -> Result<Vec<String>, StoreError> {
        let mut names = match self {
            Folder::Local(p) => {
                let p = p.clone();
                let r = tokio::task::spawn_blocking(move || -> io::Result<Vec<String>> {
                    let rd = match std::fs::read_dir(&p) {
                        Ok(rd) => rd,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                        Err(e) => return Err(e),
                    };
                    Ok(rd
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                        .filter_map(|e| e.file_name().into_string().ok())
                        .collect())
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                r.map_err(|e| self.io_err("list", "", &e))?
            }
            Folder::Smb { store, dir } => store.list_dir(dir).await?.unwrap_or_default(),
        };
        names.retain(|n| !n.starts_with('.'));
        names.sort();
        Ok(names)
    }

    /// Content of `name` (at most [`MAX_CONTROL_FILE`] bytes), `Ok(None)` when missing.
    ///
    /// # Errors
    /// [`StoreError`] when it cannot be read.
    pub async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Folder::Local(p) => match tokio::fs::read(p.join(name)).await {
                Ok(v) if v.len() > MAX_CONTROL_FILE => Err(StoreError::new(
                    self.describe(),
                    "read",
                    name,
                    StoreErrorKind::Corrupt,
                    "control file too large",
                )),
                Ok(v) => Ok(Some(v)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.io_err("read", name, &e)),
            },
            Folder::Smb { store, .. } => {
                use crate::store::Store;
                use tokio::io::AsyncReadExt;
                let rel = self.rel(name)?;
                let Some(o) = store.open(&rel).await? else {
                    return Ok(None);
                };
                let mut v = Vec::new();
                o.reader
                    .take(MAX_CONTROL_FILE as u64 + 1)
                    .read_to_end(&mut v)
                    .await
                    .map_err(|e| self.io_err("read", name, &e))?;
                Ok(Some(v))
            }
        }
    }

    /// Creates `name` with `content` unless it exists (`Ok(false)` then). Creates the folder
    /// when missing. Readers never see partial content under `name`.
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be written.
    pub async fn create_new(&self, name: &str, content: &[u8]) -> Result<bool, StoreError> {
        match self {
            Folder::Local(p) => {
                let (p, name_s, content) = (p.clone(), name.to_string(), content.to_vec());
                let r = tokio::task::spawn_blocking(move || -> io::Result<bool> {
                    std::fs::create_dir_all(&p)?;
                    let mut tmp = crate::store::local::shared_tempfile(
                        &p,
                        &format!(".{name_s}."),
                        ".symcascade-tmp",
                    )?;
                    io::Write::write_all(&mut tmp, &content)?;
                    tmp.as_file().sync_all()?;
                    match tmp.persist_noclobber(p.join(&name_s)) {
                        Ok(_) => Ok(true),
                        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                        Err(e) => Err(e.error),
                    }
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                r.map_err(|e| self.io_err("create", name, &e))
            }
            Folder::Smb { store, .. } => store.create_new(&self.rel(name)?, content).await,
        }
    }

    /// Removes `name`; a missing file is fine.
    ///
    /// # Errors
    /// [`StoreError`] when it cannot be removed.
    pub async fn remove(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Folder::Local(p) => match tokio::fs::remove_file(p.join(name)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.io_err("remove", name, &e)),
            },
            Folder::Smb { store, .. } => store.remove(&self.rel(name)?).await,
        }
    }

    /// Watches the folder: SMB change notification, or `notify` for local folders (polling
    /// when `poll` is set, as network file systems need). Each message means "something
    /// changed, list again". The caller keeps a periodic rescan as a safety net.
    ///
    /// # Errors
    /// [`StoreError`] when the watch cannot be set up.
    pub async fn watch(
        &self,
        poll: Option<std::time::Duration>,
    ) -> Result<tokio::sync::mpsc::Receiver<()>, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        match self {
            Folder::Smb { store, dir } => {
                // Make sure the folder exists, so the watch has something to open.
                let probe = self.rel(".symcascade-probe")?;
                store.create_new(&probe, b"").await?;
                store.remove(&probe).await?;
                let mut changes = store.watch(dir).await?;
                tokio::spawn(async move {
                    while let Some(c) = changes.recv().await {
                        if matches!(c, DirChange::Changed(_) | DirChange::Rescan)
                            && tx.try_send(()).is_err()
                            && tx.is_closed()
                        {
                            return;
                        }
                    }
                });
            }
            Folder::Local(p) => {
                std::fs::create_dir_all(p).map_err(|e| self.io_err("watch", "", &e))?;
                let w = local_watcher(p, poll, tx).map_err(|e| {
                    StoreError::new(
                        self.describe(),
                        "watch",
                        "",
                        StoreErrorKind::Io,
                        e.to_string(),
                    )
                })?;
                // The watcher lives as long as the channel's consumer: park it in a task that
                // ends when the receiver is gone.
                let tx_probe = w.1;
                tokio::spawn(async move {
                    let _keep = w.0;
                    tx_probe.closed().await;
                });
            }
        }
        Ok(rx)
    }
}

type LocalWatch = (
    Box<dyn notify::Watcher + Send>,
    tokio::sync::mpsc::Sender<()>,
);

fn local_watcher(
    p: &std::path::Path,
    poll: Option<std::time::Duration>,
    tx: tokio::sync::mpsc::Sender<()>,
) -> notify::Result<LocalWatch> {
    use notify::Watcher;
    let t = tx.clone();
    let handler = move |r: notify::Result<notify::Event>| {
        if r.is_ok() {
            let _ = t.try_send(());
        }
    };
    let mut w: Box<dyn Watcher + Send> = match poll {
        Some(every) => Box::new(notify::PollWatcher::new(
            handler,
            notify::Config::default().with_poll_interval(every),
        )?),
        None => Box::new(notify::RecommendedWatcher::new(
            handler,
            notify::Config::default(),
        )?),
    };
    w.watch(p, notify::RecursiveMode::NonRecursive)?;
    Ok((w, tx))
}

// Linux-only: under Wine 8 this test never ends (notify's ReadDirectoryChangesW watcher); the
// Windows pass counts it as Linux-only (README "Testing").
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_folder_create_new_is_exclusive_and_watch_fires() {
        let d = tempfile::tempdir().unwrap();
        let f = Folder::Local(d.path().join("q"));
        assert!(f.list().await.unwrap().is_empty());
        let mut rx = f.watch(None).await.unwrap();
        assert!(f.create_new("a.req", b"1").await.unwrap());
        assert!(!f.create_new("a.req", b"2").await.unwrap());
        assert_eq!(f.read("a.req").await.unwrap().unwrap(), b"1");
        assert_eq!(f.list().await.unwrap(), vec!["a.req".to_string()]);
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("a change is seen")
            .unwrap();
        f.remove("a.req").await.unwrap();
        f.remove("a.req").await.unwrap();
        assert!(f.read("a.req").await.unwrap().is_none());
    }
}
