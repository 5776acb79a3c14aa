//! `SmbStore`: a symbol store in a folder of an SMB share.
//!
//! Data flow: `open` opens the file once and streams it with several READs in flight (ordered
//! by `buffered`), so a slow, high-latency link stays full; `put` streams into
//! `.<name>.<random>.symcascade-tmp` created with "fail if exists" in the destination folder
//! (created level by level only when missing), writes with several WRITEs in flight, flushes,
//! then renames it to the final name **without replacing**: if the final name appeared
//! meanwhile, ours is deleted and the existing file kept. No partial file is ever visible under
//! a final name. Every request is bounded by the configured request timeout; a timed-out or
//! broken connection is retired and rebuilt on the next call.

use super::{Server, SmbClient, connection_level, is_not_found, map_error, status};
use crate::layout::RelPath;
use crate::store::{
    Capabilities, FileMeta, Opened, PutOutcome, Store, StoreDescription, StoreError, StoreErrorKind,
};
use async_trait::async_trait;
use futures_util::stream::{FuturesUnordered, StreamExt};
use smb::{
    CreateDisposition, CreateOptions, File, FileAccessMask, FileAttributes, FileCreateArgs,
    FileDispositionInformation, FileRenameInformation, Resource, Tree,
};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A store rooted at `\\host[:port]\share[\dir…]`.
#[derive(Debug, Clone)]
pub struct SmbStore {
    client: Arc<SmbClient>,
    host: String,
    port: Option<u16>,
    share: String,
    dirs: Vec<String>,
    shown: String,
}

impl SmbStore {
    /// A store on `share` of `host` (an alias or a name/address), below `dirs`. `shown` is
    /// the location as the user wrote it. No network traffic until the first operation.
    pub fn new(
        client: Arc<SmbClient>,
        host: &str,
        port: Option<u16>,
        share: &str,
        dirs: &[String],
        shown: &str,
    ) -> SmbStore {
        SmbStore {
            client,
            host: host.to_string(),
            port,
            share: share.to_string(),
            dirs: dirs.to_vec(),
            shown: shown.to_string(),
        }
    }

    fn share_path(&self, rel: &[String]) -> String {
        self.dirs
            .iter()
            .chain(rel.iter())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\\")
    }

    async fn tree(&self) -> Result<(Arc<Server>, Arc<super::Live>, Arc<Tree>), StoreError> {
        let server = self
            .client
            .server(&self.shown, &self.host, self.port)
            .await?;
        let (live, tree) = server.tree(&self.shown, &self.share).await?;
        Ok((server, live, tree))
    }

    fn timeout(&self) -> Duration {
        self.client.config().request_timeout
    }

    /// Runs one SMB request under the request timeout; a timeout or a connection-level
    /// failure retires the connection.
    async fn call<T>(
        &self,
        server: &Server,
        live: &super::Live,
        op: &'static str,
        path: &str,
        fut: impl std::future::Future<Output = smb::Result<T>>,
    ) -> Result<Result<T, smb::Error>, StoreError> {
        match tokio::time::timeout(self.timeout(), fut).await {
            Err(_) => {
                server.poison(live);
                Err(StoreError::new(
                    &self.shown,
                    op,
                    path,
                    StoreErrorKind::Timeout,
                    format!("no answer within {:?}", self.timeout()),
                ))
            }
            Ok(Err(e)) => {
                if connection_level(&e) {
                    server.poison(live);
                }
                Ok(Err(e))
            }
            Ok(Ok(v)) => Ok(Ok(v)),
        }
    }

    /// Opens an existing file for reading; `Ok(None)` when missing or a directory.
    async fn open_file(
        &self,
        rel: &RelPath,
        access: FileAccessMask,
    ) -> Result<Option<(Arc<Server>, Arc<super::Live>, File)>, StoreError> {
        let p = self.share_path(rel.components());
        let mut attempt = 0;
        let (server, live, r) = loop {
            let (server, live, tree) = self.tree().await?;
            let r = self
                .call(&server, &live, "open", &p, tree.open_existing(&p, access))
                .await?;
            match r {
                // Opening is idempotent: after a rejected signature (the connection is retired
                // by `call`), try once more on a fresh connection.
                Err(e) if super::is_sign_failure(&e) && attempt < 1 => attempt += 1,
                r => break (server, live, r),
            }
        };
        match r {
            Ok(Resource::File(f)) => Ok(Some((server, live, f))),
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e)
                if matches!(
                    super::nt_status(&e),
                    Some(status::FILE_IS_A_DIRECTORY | status::NAME_INVALID)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(map_error(&self.shown, "open", rel, &e)),
        }
    }

    async fn create_dirs(
        &self,
        server: &Server,
        live: &super::Live,
        tree: &Tree,
        rel: &RelPath,
    ) -> Result<(), StoreError> {
        // The store's own folders too: per SymStore, a downstream store that does not exist
        // yet is created ("If DownstreamStore specifies a directory that does not exist,
        // SymStore will attempt to create it"). One level at a time; existing ones are opened.
        let all: Vec<&str> = self
            .dirs
            .iter()
            .chain(rel.parent())
            .map(String::as_str)
            .collect();
        for i in 1..=all.len() {
            let p = all[..i].join("\\");
            let r = self
                .call(
                    server,
                    live,
                    "put",
                    &p,
                    tree.create_directory(
                        &p,
                        CreateDisposition::OpenIf,
                        FileAccessMask::new().with_file_read_attributes(true),
                    ),
                )
                .await?;
            match r {
                Ok(d) => drop(d),
                Err(e) if super::nt_status(&e) == Some(status::NAME_COLLISION) => {}
                Err(e) => return Err(map_error(&self.shown, "put", &p, &e)),
            }
        }
        Ok(())
    }

    /// Sets or clears "delete on close" on an open file (FileDispositionInformation).
    async fn set_delete_pending(&self, f: &File, on: bool) -> Result<(), String> {
        let info = FileDispositionInformation {
            delete_pending: on.into(),
        };
        match tokio::time::timeout(self.timeout(), f.set_info(info)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout())),
        }
    }

    async fn discard(&self, f: &File) {
        let _ = tokio::time::timeout(
            self.timeout(),
            f.set_info(FileDispositionInformation::default()),
        )
        .await;
        let _ = tokio::time::timeout(self.timeout(), f.close()).await;
    }
}

fn temp_name(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!(
        "{}{:016x}{}",
        crate::layout::temp_prefix(name, 16),
        h.finish(),
        crate::layout::TEMP_SUFFIX
    )
}

/// An open file that follows connection retirement: when the connection it lives on is retired
/// (the crate lost too many credits on it, or it broke), the next request reopens the file on
/// the server's current connection and goes on from the same offset. Without this, one long
/// transfer could outlive its connection's credits.
struct Handle {
    store: SmbStore,
    path: String,
    disposition: CreateDisposition,
    access: FileAccessMask,
    cur: tokio::sync::Mutex<(Arc<Server>, Arc<super::Live>, Arc<File>)>,
    /// A temp file being written: kept delete-pending until it is renamed into place.
    temp: bool,
}

/// A temp file filled and flushed, ready to be renamed into place.
struct Temp {
    server: Arc<Server>,
    live: Arc<super::Live>,
    file: Arc<File>,
    /// Bytes written.
    total: u64,
}

/// One WRITE of `buf` at offset `at` (repeated while the server takes less), on whichever
/// connection `handle` holds now, within `timeout` (a timed-out connection is poisoned).
/// Spawned by `write_all`, so the connection slot is released as soon as the WRITE completes,
/// even while the caller is busy reading the source.
async fn write_chunk(
    handle: Arc<Handle>,
    buf: Vec<u8>,
    at: u64,
    timeout: std::time::Duration,
) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let (server, live, f) = handle
            .get()
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))?;
        let _slot = live.slots.acquire().await.map_err(io::Error::other)?;
        let write = f.write_block(&buf[done..], at + done as u64, None);
        let w = match tokio::time::timeout(timeout, write).await {
            Err(_) => {
                server.poison(&live);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
            }
            Ok(r) => r?,
        };
        if w == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "server accepted 0 bytes",
            ));
        }
        done += w;
    }
    Ok(())
}

impl Handle {
    async fn get(&self) -> Result<(Arc<Server>, Arc<super::Live>, Arc<File>), StoreError> {
        let mut g = self.cur.lock().await;
        if !g
            .1
            .usable(self.store.client.config().retire_after_lost_credits)
        {
            // A delete-pending temp file cannot be opened again: lift it on the old handle
            // first (if that connection is gone, so is the file, and the reopen fails cleanly).
            if self.temp {
                let _ = self.store.set_delete_pending(&g.2, false).await;
            }
            let (server, live, tree) = self.store.tree().await?;
            let args = FileCreateArgs {
                disposition: self.disposition,
                attributes: FileAttributes::new(),
                options: CreateOptions::new().with_non_directory_file(true),
                desired_access: self.access,
            };
            let r = self
                .store
                .call(
                    &server,
                    &live,
                    "open",
                    &self.path,
                    tree.create(&self.path, &args),
                )
                .await?
                .map_err(|e| map_error(&self.store.shown, "open", &self.path, &e))?;
            let Resource::File(f) = r else {
                return Err(StoreError::new(
                    &self.store.shown,
                    "open",
                    &self.path,
                    StoreErrorKind::Io,
                    "reopened name is not a file",
                ));
            };
            if self.temp {
                let _ = self.store.set_delete_pending(&f, true).await;
            }
            tracing::debug!(store = %self.store.shown, path = %self.path, "reopened on a fresh SMB connection");
            *g = (server, live, Arc::new(f));
        }
        Ok(g.clone())
    }

    /// The handle currently in use (for rename/close at the end of a write).
    async fn file(&self) -> Arc<File> {
        self.cur.lock().await.2.clone()
    }
}

impl SmbStore {
    /// Opens `path` for reading, from `resume`'s offset when the file's version is still
    /// `resume`'s. The READs are pipelined: `in_flight` chunks of `chunk_size` at once.
    async fn open_at(
        &self,
        path: &RelPath,
        resume: Option<(u64, &str)>,
    ) -> Result<Option<Opened>, StoreError> {
        let access = FileAccessMask::new().with_generic_read(true);
        let Some((server, live, f)) = self.open_file(path, access).await? else {
            return Ok(None);
        };
        let len = smb::resource::GetLen::get_len(&f)
            .await
            .map_err(|e| map_error(&self.shown, "open", path, &e))?;
        // Size and last-write time: Samba without birth times reports a creation time derived
        // from the access time, which a read moves (Windows-pass finding).
        let version = format!("{len}-{}", f.modified());
        let offset = match resume {
            Some((off, v)) if v == version && off <= len => off,
            _ => 0,
        };
        let chunk = self
            .client
            .config()
            .chunk_size
            .min(live.max_read)
            .clamp(4096, super::MAX_CHUNK) as u64;
        let in_flight = self.client.config().in_flight.clamp(1, super::MAX_SLOTS);
        let handle = Arc::new(Handle {
            store: self.clone(),
            path: self.share_path(path.components()),
            disposition: CreateDisposition::Open,
            access,
            cur: tokio::sync::Mutex::new((server, live, Arc::new(f))),
            temp: false,
        });
        let timeout = self.timeout();
        let shown = format!("{} {}", self.shown, path);
        let st = futures_util::stream::iter((offset..len).step_by(chunk as usize))
            .map(move |off| {
                let n = chunk.min(len - off) as usize;
                let chunk = read_chunk(handle.clone(), off, n, timeout, shown.clone());
                // A task of its own: the chunk's connection slot is released the moment its
                // READ completes, whether or not the consumer is polling us right then
                // (otherwise an SMB-to-SMB copy on one connection could wait on itself).
                let task = tokio::spawn(chunk);
                async move { task.await.unwrap_or_else(|e| Err(io::Error::other(e))) }
            })
            .buffered(in_flight);
        Ok(Some(Opened {
            len: Some(len),
            reader: Box::new(tokio_util::io::StreamReader::new(Box::pin(st))),
            local_path: None,
            offset,
            version: Some(version),
        }))
    }
}

/// READs `n` bytes at `off` through `handle` (reopened on a fresh connection when its own
/// failed); a timeout or error poisons the connection.
async fn read_chunk(
    handle: Arc<Handle>,
    off: u64,
    n: usize,
    timeout: std::time::Duration,
    shown: String,
) -> io::Result<bytes::Bytes> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let (server, live, file) = handle
            .get()
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string()))?;
        let _slot = live.slots.acquire().await.map_err(io::Error::other)?;
        let r = tokio::time::timeout(
            timeout,
            file.read_block(&mut buf[got..], off + got as u64, None, false),
        )
        .await;
        match r {
            Err(_) => {
                server.poison(&live);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{shown}: read at {off} timed out after {timeout:?}"),
                ));
            }
            Ok(Err(e)) => {
                server.poison(&live);
                return Err(io::Error::new(e.kind(), format!("{shown}: {e}")));
            }
            Ok(Ok(0)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{shown}: file shrank while being read"),
                ));
            }
            Ok(Ok(k)) => got += k,
        }
    }
    Ok(bytes::Bytes::from(buf))
}

#[async_trait]
impl Store for SmbStore {
    fn describe(&self) -> StoreDescription {
        StoreDescription {
            location: self.shown.clone(),
            transport: crate::store::Transport::Smb,
        }
    }

    async fn stat(&self, path: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        let access = FileAccessMask::new().with_file_read_attributes(true);
        let Some((_s, _l, f)) = self.open_file(path, access).await? else {
            return Ok(None);
        };
        // The size CREATE returned; dropping the handle closes it in the background, which
        // keeps the CLOSE round trip off this lookup's latency.
        let len = smb::resource::GetLen::get_len(&f)
            .await
            .map_err(|e| map_error(&self.shown, "stat", path, &e))?;
        Ok(Some(FileMeta {
            len,
            local_path: None,
        }))
    }

    async fn open(&self, path: &RelPath) -> Result<Option<Opened>, StoreError> {
        self.open_at(path, None).await
    }

    /// One CREATE, then READs from the offset: the version is what CREATE returned (size and
    /// last-write time), so checking it costs no round trip.
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

    /// SET_INFO rename with `ReplaceIfExists`: the server swaps the name atomically.
    async fn replace(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.write(path, src, len, true).await
    }

    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        let (server, live, tree) = self.tree().await?;
        let root = self.share_path(&[]);
        let read = self
            .call(
                &server,
                &live,
                "capabilities",
                &root,
                tree.open_existing(&root, FileAccessMask::new().with_generic_read(true)),
            )
            .await?;
        let readable = read.is_ok();
        let mut free_bytes = None;
        if let Ok(r) = &read {
            let info = match r {
                Resource::Directory(d) => tokio::time::timeout(
                    self.timeout(),
                    d.query_fs_info::<smb::FileFsFullSizeInformation>(),
                )
                .await
                .ok()
                .and_then(Result::ok),
                _ => None,
            };
            free_bytes = info.map(|i| {
                i.caller_available_allocation_units
                    * i.sectors_per_allocation_unit as u64
                    * i.bytes_per_sector as u64
            });
        }
        // Writable: the share grants "add file" on its root (read-only shares do not).
        let write = self
            .call(
                &server,
                &live,
                "capabilities",
                &root,
                tree.open_existing(&root, FileAccessMask::new().with_file_write_data(true)),
            )
            .await?;
        Ok(Capabilities {
            readable,
            writable: write.is_ok(),
            free_bytes,
        })
    }
}

impl SmbStore {
    /// `put` (`replace == false`: an existing file is kept, a name collision at the rename
    /// keeps theirs) or `replace` (renamed with `ReplaceIfExists`): a delete-pending temp file
    /// in the destination folder ([`SmbStore::create_temp`]), filled and checked
    /// ([`SmbStore::fill_temp`]), then renamed into place ([`SmbStore::publish_temp`]).
    async fn write(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
        replace: bool,
    ) -> Result<PutOutcome, StoreError> {
        if !replace && self.stat(path).await?.is_some() {
            return Ok(PutOutcome::AlreadyPresent { local_path: None });
        }
        let tmp_rel: Vec<String> = path
            .parent()
            .iter()
            .cloned()
            .chain(std::iter::once(temp_name(path.file_name())))
            .collect();
        let tmp_path = self.share_path(&tmp_rel);
        let access = FileAccessMask::new()
            .with_generic_read(true)
            .with_generic_write(true)
            .with_delete(true);
        let (server, live, file) = self.create_temp(path, &tmp_path, access).await?;
        // Delete-pending until renamed: a dropped connection, a killed process or a cancelled
        // transfer makes the server delete the temp file when its handle closes, so nothing
        // is left behind on the share. Best effort: a server refusing it still gets the
        // explicit discard on every error path.
        let _ = self.set_delete_pending(&file, true).await;
        let handle = Arc::new(Handle {
            store: self.clone(),
            path: tmp_path,
            disposition: CreateDisposition::Open,
            access,
            cur: tokio::sync::Mutex::new((server, live, Arc::new(file))),
            temp: true,
        });
        let (server, live, file, total) = self.fill_temp(&handle, src, path, len).await?;
        let tmp = RelPath::from_safe(tmp_rel);
        let done = Temp {
            server,
            live,
            file,
            total,
        };
        self.publish_temp(done, path, &tmp, replace).await
    }

    /// Creates the temp file `tmp_path` for `path` (creating the store's folders when they are
    /// missing).
    async fn create_temp(
        &self,
        path: &RelPath,
        tmp_path: &str,
        access: FileAccessMask,
    ) -> Result<(Arc<Server>, Arc<super::Live>, File), StoreError> {
        let (server, live, tree) = self.tree().await?;
        let args = FileCreateArgs {
            disposition: CreateDisposition::Create,
            attributes: FileAttributes::new(),
            options: CreateOptions::new().with_non_directory_file(true),
            desired_access: access,
        };
        let create = || tree.create(tmp_path, &args);
        let mut created = self.call(&server, &live, "put", tmp_path, create()).await?;
        if matches!(&created, Err(e) if is_not_found(e)) {
            self.create_dirs(&server, &live, &tree, path).await?;
            created = self.call(&server, &live, "put", tmp_path, create()).await?;
        }
        match created {
            Ok(Resource::File(f)) => Ok((server, live, f)),
            Ok(_) => Err(StoreError::new(
                &self.shown,
                "put",
                path,
                StoreErrorKind::Io,
                "temp name is not a file",
            )),
            Err(e) => Err(map_error(&self.shown, "put", path, &e)),
        }
    }

    /// Writes `src` into the temp file, checks the length against `len`, flushes it and lifts
    /// its delete-pending mark; on any failure the temp file is discarded.
    async fn fill_temp(
        &self,
        handle: &Arc<Handle>,
        src: &mut (dyn AsyncRead + Send + Unpin),
        path: &RelPath,
        len: Option<u64>,
    ) -> Result<(Arc<Server>, Arc<super::Live>, Arc<File>, u64), StoreError> {
        let written = self.write_all(handle, src, path).await;
        let (server, live, file) = match handle.get().await {
            Ok(v) => v,
            Err(e) => {
                self.discard(&*handle.file().await).await;
                return Err(e);
            }
        };
        let fail = |kind, detail: String| StoreError::new(&self.shown, "put", path, kind, detail);
        let checked = match written {
            Ok(n) if len.is_some_and(|want| want != n) => Err(fail(
                StoreErrorKind::Truncated,
                format!("expected {} bytes, got {n}", len.unwrap_or_default()),
            )),
            other => other,
        };
        let total = match checked {
            Ok(n) => n,
            Err(e) => {
                self.discard(&file).await;
                return Err(e);
            }
        };
        let flushed = self
            .call(&server, &live, "put", &handle.path, async {
                file.flush().await.map_err(smb::Error::from)
            })
            .await?;
        let ready = match flushed {
            Ok(()) => self.set_delete_pending(&file, false).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = ready {
            self.discard(&file).await;
            return Err(fail(StoreErrorKind::Io, e));
        }
        Ok((server, live, file, total))
    }

    /// Renames the filled temp file `tmp` to `path` (replacing only when `replace`). A name
    /// collision keeps theirs; an unknown outcome is settled by looking at the share.
    async fn publish_temp(
        &self,
        t: Temp,
        path: &RelPath,
        tmp: &RelPath,
        replace: bool,
    ) -> Result<PutOutcome, StoreError> {
        let final_path = self.share_path(path.components());
        let rename = FileRenameInformation {
            replace_if_exists: replace.into(),
            root_directory: 0,
            file_name: final_path.as_str().into(),
        };
        let renamed = self
            .call(
                &t.server,
                &t.live,
                "put",
                &final_path,
                t.file.set_info(rename),
            )
            .await;
        let written = PutOutcome::Written {
            bytes: t.total,
            local_path: None,
        };
        match renamed {
            Ok(Ok(())) => {
                let _ = tokio::time::timeout(self.timeout(), t.file.close()).await;
                Ok(written)
            }
            Ok(Err(e)) if super::nt_status(&e) == Some(status::NAME_COLLISION) => {
                // Someone published the same key meanwhile: keep theirs, drop ours.
                self.discard(&t.file).await;
                Ok(PutOutcome::AlreadyPresent { local_path: None })
            }
            other => {
                // The outcome is unknown (e.g. the crate rejected an interim response although
                // the server went on): look instead of guessing.
                drop(t.file);
                if let Ok(Some(m)) = self.stat(path).await
                    && m.len == t.total
                {
                    return Ok(written);
                }
                let delete = FileAccessMask::new().with_delete(true);
                if let Ok(Some((_, _, f))) = self.open_file(tmp, delete).await {
                    self.discard(&f).await;
                }
                Err(match other {
                    Ok(Err(e)) => map_error(&self.shown, "put", path, &e),
                    Err(e) => e,
                    Ok(Ok(())) => unreachable!("handled above"),
                })
            }
        }
    }

    /// A failed WRITE as a store error: a full disk or quota, denied access and timeouts
    /// are told apart (the status comes from the crate's message, see `nt_status`).
    fn write_error(&self, path: &RelPath, e: &io::Error) -> StoreError {
        let kind = match super::status_in_text(&e.to_string()) {
            Some(status::DISK_FULL | status::QUOTA_EXCEEDED) => StoreErrorKind::DiskFull,
            Some(status::ACCESS_DENIED) => StoreErrorKind::PermissionDenied,
            _ if e.kind() == io::ErrorKind::TimedOut => StoreErrorKind::Timeout,
            _ => StoreErrorKind::Io,
        };
        StoreError::new(&self.shown, "put", path, kind, e.to_string())
    }

    /// Streams `src` into the handle's file with several WRITEs in flight; returns the byte
    /// count.
    async fn write_all(
        &self,
        handle: &Arc<Handle>,
        src: &mut (dyn AsyncRead + Send + Unpin),
        path: &RelPath,
    ) -> Result<u64, StoreError> {
        let max_write = handle.cur.lock().await.1.max_write;
        let chunk = self
            .client
            .config()
            .chunk_size
            .min(max_write)
            .clamp(4096, super::MAX_CHUNK);
        let in_flight = self.client.config().in_flight.clamp(1, super::MAX_SLOTS);
        let timeout = self.timeout();
        let mut pending = FuturesUnordered::new();
        let mut off = 0u64;
        let mut eof = false;
        loop {
            while !eof && pending.len() < in_flight {
                let mut buf = Vec::with_capacity(chunk);
                let n = (&mut *src)
                    .take(chunk as u64)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| StoreError::from_io(&self.shown, "put", path, &e))?;
                if n == 0 {
                    eof = true;
                    break;
                }
                let at = off;
                off += n as u64;
                let handle = handle.clone();
                // Spawned, so the WRITE's connection slot is released when it completes even
                // while this loop is busy reading the source.
                pending.push(tokio::spawn(write_chunk(handle, buf, at, timeout)));
                if n < chunk {
                    eof = true;
                }
            }
            match pending
                .next()
                .await
                .map(|r| r.unwrap_or_else(|e| Err(io::Error::other(e))))
            {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(self.write_error(path, &e)),
                None if eof => return Ok(off),
                None => {}
            }
        }
    }
}

/// A change reported by [`SmbStore::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirChange {
    /// Names (relative to the watched folder) that were added, removed, renamed or modified.
    Changed(Vec<String>),
    /// Changes may have been missed (server buffer overflow, reconnect, connection retired):
    /// list the folder again.
    Rescan,
}

impl SmbStore {
    /// Watches the folder `dir` (below the store root) with SMB2 CHANGE_NOTIFY and sends what
    /// changes to the returned channel until it is dropped.
    ///
    /// Each notification costs the `smb` crate one credit it never gets back (lab defect 2), so
    /// the watch moves to a fresh connection when the current one is retired and then sends
    /// [`DirChange::Rescan`]; the same happens after an overflow or a dropped connection. The
    /// caller keeps a periodic rescan as a safety net anyway.
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be opened the first time.
    pub async fn watch(
        &self,
        dir: &[String],
    ) -> Result<tokio::sync::mpsc::Receiver<DirChange>, StoreError> {
        let path = self.share_path(dir);
        let first = self.open_dir(&path).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let me = self.clone();
        tokio::spawn(async move {
            let mut cur = Some(first);
            let retire = me.client.config().retire_after_lost_credits;
            let filter = smb::NotifyFilter::new()
                .with_file_name(true)
                .with_dir_name(true)
                .with_size(true)
                .with_last_write(true);
            loop {
                let (server, live, d) = match cur.take() {
                    Some(c) => c,
                    None => {
                        if tx.send(DirChange::Rescan).await.is_err() {
                            return;
                        }
                        match me.open_dir(&path).await {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::debug!(store = %me.shown, "watch reopen failed: {e}");
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                                    _ = tx.closed() => return,
                                }
                            }
                        }
                    }
                };
                // A listing made before this handle's first CHANGE_NOTIFY is armed can miss a
                // change: ask for one more rescan once it surely is.
                let mut settle = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                loop {
                    let fut = d.watch(filter, false);
                    tokio::pin!(fut);
                    let r = loop {
                        tokio::select! {
                            r = &mut fut => break r,
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep_until(settle.unwrap_or_else(tokio::time::Instant::now)), if settle.is_some() => {
                                settle = None;
                                if tx.send(DirChange::Rescan).await.is_err() {
                                    return;
                                }
                            }
                        }
                    };
                    match r {
                        Ok(items) => {
                            let names: Vec<String> =
                                items.into_iter().map(|i| i.file_name.to_string()).collect();
                            if tx.send(DirChange::Changed(names)).await.is_err() {
                                return;
                            }
                            if !live.usable(retire) {
                                break; // retired: move to a fresh connection
                            }
                        }
                        Err(e) => {
                            // Overflow, cleanup or a broken connection: reopen and rescan.
                            tracing::debug!(store = %me.shown, "watch ended: {e}");
                            if connection_level(&e) {
                                server.poison(&live);
                            }
                            break;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn open_dir(
        &self,
        path: &str,
    ) -> Result<(Arc<Server>, Arc<super::Live>, smb::Directory), StoreError> {
        let (server, live, tree) = self.tree().await?;
        let access = FileAccessMask::new()
            .with_generic_read(true)
            .with_file_read_attributes(true);
        match self
            .call(
                &server,
                &live,
                "open",
                path,
                tree.open_existing(path, access),
            )
            .await?
        {
            Ok(Resource::Directory(d)) => Ok((server, live, d)),
            Ok(_) => Err(StoreError::new(
                &self.shown,
                "open",
                path,
                StoreErrorKind::Io,
                "not a folder",
            )),
            Err(e) => Err(map_error(&self.shown, "open", path, &e)),
        }
    }
}

/// Control-file operations used by the queue (`crate::folder`): listing, exclusive creation
/// and removal of small files.
impl SmbStore {
    /// Names of the files (not folders) in `dir`; `Ok(None)` when `dir` does not exist.
    ///
    /// # Errors
    /// [`StoreError`] when the share cannot be listed.
    pub async fn list_dir(&self, dir: &[String]) -> Result<Option<Vec<String>>, StoreError> {
        Ok(self.list_entries(dir).await?.map(|v| {
            v.into_iter()
                .filter(|e| !e.is_dir)
                .map(|e| e.name)
                .collect()
        }))
    }

    /// Entries of `dir` (files and folders, without `.` and `..`) with their sizes and last
    /// write times, as the server's directory listing reports them (one QUERY_DIRECTORY
    /// exchange, no per-file round trip); `Ok(None)` when `dir` does not exist.
    ///
    /// Runs the query on a dedicated current-thread runtime: the crate's directory query can
    /// lose a wakeup and hang on a multi-threaded runtime (lab defect 3), which cannot happen
    /// on a current-thread one. Bounded by the request timeout.
    ///
    /// # Errors
    /// [`StoreError`] when the share cannot be listed.
    pub async fn list_entries(&self, dir: &[String]) -> Result<Option<Vec<Listed>>, StoreError> {
        let (server, live, tree) = self.tree().await?;
        let path = self.share_path(dir);
        let timeout = self.timeout();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Some(Err(smb::Error::IoError(e))));
                    return;
                }
            };
            let r = rt.block_on(async move {
                // `None`: timed out.
                tokio::time::timeout(timeout, query_dir(&tree, &p))
                    .await
                    .ok()
            });
            let _ = tx.send(r);
        });
        match rx.await {
            Ok(Some(Ok(v))) => Ok(v),
            Ok(Some(Err(e))) if is_not_found(&e) => Ok(None),
            Ok(Some(Err(e))) => {
                if connection_level(&e) {
                    server.poison(&live);
                }
                Err(map_error(&self.shown, "list", &path, &e))
            }
            Ok(None) => {
                server.poison(&live);
                Err(StoreError::new(
                    &self.shown,
                    "list",
                    &path,
                    StoreErrorKind::Timeout,
                    format!("no listing within {timeout:?}"),
                ))
            }
            Err(_) => Err(StoreError::new(
                &self.shown,
                "list",
                &path,
                StoreErrorKind::Io,
                "listing thread ended",
            )),
        }
    }

    /// Removes the folder `dir` if it is empty: `Ok(true)` when removed or already gone,
    /// `Ok(false)` when it still holds something (STATUS_DIRECTORY_NOT_EMPTY).
    ///
    /// # Errors
    /// [`StoreError`] when the share refuses.
    pub async fn remove_empty_dir(&self, dir: &[String]) -> Result<bool, StoreError> {
        let (server, live, tree) = self.tree().await?;
        let p = self.share_path(dir);
        let access = FileAccessMask::new()
            .with_delete(true)
            .with_file_read_attributes(true);
        let d = match self
            .call(&server, &live, "remove", &p, tree.open_existing(&p, access))
            .await?
        {
            Ok(Resource::Directory(d)) => d,
            Ok(_) => {
                return Err(StoreError::new(
                    &self.shown,
                    "remove",
                    &p,
                    StoreErrorKind::Io,
                    "not a folder",
                ));
            }
            Err(e) if is_not_found(&e) => return Ok(true),
            Err(e) => return Err(map_error(&self.shown, "remove", &p, &e)),
        };
        let r = self
            .call(
                &server,
                &live,
                "remove",
                &p,
                d.set_info(FileDispositionInformation::default()),
            )
            .await?;
        let _ = tokio::time::timeout(self.timeout(), d.close()).await;
        match r {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(true),
            Err(e) if super::nt_status(&e) == Some(status::DIRECTORY_NOT_EMPTY) => Ok(false),
            Err(e) => Err(map_error(&self.shown, "remove", &p, &e)),
        }
    }

    /// Creates `path` with `content`, failing (returning `Ok(false)`) when it already exists;
    /// creates missing folders. The content is small (one write).
    ///
    /// # Errors
    /// [`StoreError`] when the share refuses the write.
    pub async fn create_new(&self, path: &RelPath, content: &[u8]) -> Result<bool, StoreError> {
        let (server, live, tree) = self.tree().await?;
        let p = self.share_path(path.components());
        let args = FileCreateArgs {
            disposition: CreateDisposition::Create,
            attributes: FileAttributes::new(),
            options: CreateOptions::new().with_non_directory_file(true),
            desired_access: FileAccessMask::new()
                .with_generic_read(true)
                .with_generic_write(true)
                .with_delete(true),
        };
        let mut r = self
            .call(&server, &live, "create", &p, tree.create(&p, &args))
            .await?;
        if matches!(&r, Err(e) if is_not_found(e)) {
            self.create_dirs(&server, &live, &tree, path).await?;
            r = self
                .call(&server, &live, "create", &p, tree.create(&p, &args))
                .await?;
        }
        let f = match r {
            Ok(Resource::File(f)) => f,
            Ok(_) => return Ok(false),
            Err(e) if super::nt_status(&e) == Some(status::NAME_COLLISION) => return Ok(false),
            Err(e) => return Err(map_error(&self.shown, "create", path, &e)),
        };
        let mut done = 0;
        while done < content.len() {
            match self
                .call(&server, &live, "create", &p, async {
                    f.write_block(&content[done..], done as u64, None)
                        .await
                        .map_err(smb::Error::from)
                })
                .await?
            {
                Ok(0) | Err(_) => {
                    self.discard(&f).await;
                    return Err(StoreError::new(
                        &self.shown,
                        "create",
                        path,
                        StoreErrorKind::Io,
                        "short write",
                    ));
                }
                Ok(n) => done += n,
            }
        }
        let _ = tokio::time::timeout(self.timeout(), f.close()).await;
        Ok(true)
    }

    /// Deletes the file `path`; a missing file is fine.
    ///
    /// # Errors
    /// [`StoreError`] when the share refuses.
    pub async fn remove(&self, path: &RelPath) -> Result<(), StoreError> {
        let access = FileAccessMask::new().with_delete(true);
        let Some((server, live, f)) = self.open_file(path, access).await? else {
            return Ok(());
        };
        let p = self.share_path(path.components());
        let r = self
            .call(
                &server,
                &live,
                "remove",
                &p,
                f.set_info(FileDispositionInformation::default()),
            )
            .await?;
        let _ = tokio::time::timeout(self.timeout(), f.close()).await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                // The crate may reject an interim response while the server goes on: look.
                if self.stat(path).await?.is_none() {
                    return Ok(());
                }
                Err(map_error(&self.shown, "remove", path, &e))
            }
        }
    }
}

/// One entry of an SMB folder listing ([`SmbStore::list_entries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name as the server spells it.
    pub name: String,
    /// A folder (else a file).
    pub is_dir: bool,
    /// End of file, bytes (0 for folders).
    pub len: u64,
    /// Last write time.
    pub modified: std::time::SystemTime,
}

/// Lists `path` on `tree` (to be run on a current-thread runtime; see
/// [`SmbStore::list_entries`]). `Ok(None)` when `path` is not a folder.
async fn query_dir(tree: &Tree, path: &str) -> smb::Result<Option<Vec<Listed>>> {
    let access = FileAccessMask::new()
        .with_generic_read(true)
        .with_file_read_attributes(true);
    let d = match tree.open_existing(path, access).await? {
        Resource::Directory(d) => Arc::new(d),
        _ => return Ok(None),
    };
    let mut out = Vec::new();
    {
        let mut s = smb::Directory::query::<smb::FileIdBothDirectoryInformation>(&d, "*").await?;
        while let Some(e) = s.next().await {
            let e = e?;
            let name = e.file_name.to_string();
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = e.file_attributes.directory();
            out.push(Listed {
                name,
                is_dir,
                len: if is_dir { 0 } else { e.end_of_file },
                modified: e.last_write_time.into(),
            });
        }
    }
    let _ = d.close().await;
    Ok(Some(out))
}
