//! The `Store` abstraction: the handful of async operations the cascade needs from a symbol
//! store, whatever its transport (local folder, SMB share, HTTP server).
//!
//! Data flow: the cascade engine computes a [`RelPath`] with `layout`, then calls `open` to
//! stream a file out of one store and `put` to stream it into another. Transports never format
//! store paths themselves and never hold a whole file in memory. A miss is `Ok(None)`; an error
//! means the store could not answer (the cascade then skips it). Behaviour such as blackouts or
//! metrics is added by wrapping a store, not by growing this trait.

pub mod blackout;
pub mod http;
pub mod limited;
pub mod local;
pub mod noisy;
pub mod object;
pub mod open;
pub mod progress;
pub mod smb;

use crate::layout::RelPath;
use async_trait::async_trait;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use tokio::io::AsyncRead;

pub use local::LocalStore;

/// A readable byte stream (a file being read out of a store).
pub type ByteStream = Box<dyn AsyncRead + Send + Unpin>;

/// A file opened for reading.
pub struct Opened {
    /// Length of the whole file in bytes when the store knows it up front (also when the
    /// stream starts at `offset`).
    pub len: Option<u64>,
    /// The content, from byte `offset` on.
    pub reader: ByteStream,
    /// The file's path on this machine's file system, for local stores.
    pub local_path: Option<PathBuf>,
    /// The byte of the file the stream starts at: 0, except when [`Store::open_from`]
    /// continued an interrupted copy.
    pub offset: u64,
    /// The file's version as the store saw it at open (a validator: for SMB and local stores
    /// size and last-write time, for HTTP the `ETag` or `Last-Modified`), `None` when the
    /// store has none. [`Store::open_from`] continues a copy only while it is unchanged.
    pub version: Option<String>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("len", &self.len)
            .field("local_path", &self.local_path)
            .field("offset", &self.offset)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Metadata of a file in a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMeta {
    /// Length in bytes.
    pub len: u64,
    /// The file's path on this machine's file system, for local stores.
    pub local_path: Option<PathBuf>,
}

/// What `put` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PutOutcome {
    /// The file was written (temp file, flushed, renamed into place).
    Written {
        /// Bytes written.
        bytes: u64,
        /// Path on this machine, for local stores.
        local_path: Option<PathBuf>,
    },
    /// A complete file was already under the final name; it was kept and the source was not
    /// consumed (or our copy was dropped when the name appeared meanwhile).
    AlreadyPresent {
        /// Path on this machine, for local stores.
        local_path: Option<PathBuf>,
    },
}

impl PutOutcome {
    /// The local path of the file in the store, if the store is local.
    pub fn local_path(&self) -> Option<&PathBuf> {
        match self {
            PutOutcome::Written { local_path, .. } | PutOutcome::AlreadyPresent { local_path } => {
                local_path.as_ref()
            }
        }
    }
}

/// What a store can do right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The store answered and its root can be listed.
    pub readable: bool,
    /// The store accepts writes (HTTP stores never do). A hint: a write can still fail.
    pub writable: bool,
    /// Free space in bytes where the store can tell.
    pub free_bytes: Option<u64>,
}

/// How a store describes itself in logs and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreDescription {
    /// The location as the user wrote it (e.g. `C:\Symbols`, `\\MainOffice\Symbols`).
    pub location: String,
    /// How the store is reached.
    pub transport: Transport,
}

/// How a store is reached. The cascade's rules that depend on it (SymProxy's `UriFilter`, the
/// `file.ptr` rule that a remote store may not point into local folders) match on it
/// exhaustively, so a new transport has to be placed in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Transport {
    /// A folder of this machine's file system (`C:\Symbols`, `/var/symbols`), or a share the
    /// operating system has mounted.
    Local,
    /// An SMB share reached by the built-in client (`\\MainOffice\Symbols`).
    Smb,
    /// An HTTP(S) symbol server (`https://msdl.microsoft.com/download/symbols`).
    Http,
    /// An SMB share reached through the operating system's own client: on Windows, a UNC
    /// path through the file system for a host the config gives no credentials for, so the
    /// process's identity (the logged-on user, or a service's machine account or gMSA) and
    /// whatever the OS negotiates (Kerberos, signing, encryption, DFS) apply, as with SymSrv.
    OsSmb,
    /// An S3 bucket (`s3://bucket/prefix`; AWS or S3-compatible), see [`object`].
    S3,
    /// An Azure Blob container (`az://account/container/prefix`), see [`object`].
    Azure,
    /// A location no transport of this build could open (see [`open::UnavailableStore`]).
    Unavailable,
}

impl Transport {
    /// The lower-case name used in logs, reports and metrics labels: `local`, `smb`, `http`,
    /// `os-smb`, `s3`, `azure`, `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Local => "local",
            Transport::Smb => "smb",
            Transport::Http => "http",
            Transport::OsSmb => "os-smb",
            Transport::S3 => "s3",
            Transport::Azure => "azure",
            Transport::Unavailable => "unavailable",
        }
    }

    /// Whether the store lies outside this machine (its files are not this machine's to
    /// point at: per SymSrv, only a store's own side decides what a `file.ptr` may reach).
    pub fn is_remote(self) -> bool {
        match self {
            Transport::Local => false,
            Transport::Smb
            | Transport::OsSmb
            | Transport::Http
            | Transport::S3
            | Transport::Azure
            | Transport::Unavailable => true,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for StoreDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location)
    }
}

/// Why a store operation failed. Every kind makes the cascade skip the store for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store (host, share or root folder) cannot be reached or does not exist.
    #[error("unreachable")]
    Unreachable,
    /// The server refused our credentials.
    #[error("authentication failed")]
    AuthFailed,
    /// Access denied.
    #[error("permission denied")]
    PermissionDenied,
    /// The store or file system is read-only.
    #[error("read-only")]
    ReadOnly,
    /// No room left.
    #[error("disk full")]
    DiskFull,
    /// The operation took longer than allowed.
    #[error("timed out")]
    Timeout,
    /// Fewer or more bytes arrived than announced; nothing was published.
    #[error("truncated transfer")]
    Truncated,
    /// The content is not what its name promises (bad CAB, bad `file.ptr`).
    #[error("corrupt content")]
    Corrupt,
    /// This build cannot reach this kind of location.
    #[error("unsupported")]
    Unsupported,
    /// Any other I/O failure.
    #[error("I/O error")]
    Io,
}

/// A failed store operation: which store, which path, what kind of failure, and the detail.
#[derive(Debug, thiserror::Error)]
#[error("{store}: {op} {path}: {kind}: {detail}")]
pub struct StoreError {
    /// The store's location as written.
    pub store: String,
    /// The operation: `stat`, `open`, `put`, `capabilities`, `connect`.
    pub op: &'static str,
    /// The path inside the store (empty for whole-store failures).
    pub path: String,
    /// The classified reason.
    pub kind: StoreErrorKind,
    /// Human detail (the OS or server message). Never holds a secret.
    pub detail: String,
}

impl StoreError {
    /// Builds an error.
    pub fn new(
        store: impl Into<String>,
        op: &'static str,
        path: impl fmt::Display,
        kind: StoreErrorKind,
        detail: impl Into<String>,
    ) -> StoreError {
        StoreError {
            store: store.into(),
            op,
            path: path.to_string(),
            kind,
            detail: detail.into(),
        }
    }

    /// Classifies an I/O error from a local or mounted file system.
    pub fn from_io(
        store: impl Into<String>,
        op: &'static str,
        path: impl fmt::Display,
        e: &std::io::Error,
    ) -> StoreError {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::PermissionDenied => StoreErrorKind::PermissionDenied,
            K::ReadOnlyFilesystem => StoreErrorKind::ReadOnly,
            K::StorageFull | K::QuotaExceeded => StoreErrorKind::DiskFull,
            K::NotFound => StoreErrorKind::Unreachable,
            K::TimedOut => StoreErrorKind::Timeout,
            K::UnexpectedEof => StoreErrorKind::Truncated,
            K::InvalidData => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Io,
        };
        StoreError::new(store, op, path, kind, e.to_string())
    }
}

/// A symbol store reachable through some transport.
///
/// Implementations stream (never buffer whole files), publish writes atomically (temp name in
/// the destination directory, then rename without replacing), match names case-insensitively
/// (stores live on case-insensitive file systems) and report a missing file as `Ok(None)`.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Location and transport, for logs and reports.
    fn describe(&self) -> StoreDescription;

    /// Metadata of `path`, or `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn stat(&self, path: &RelPath) -> Result<Option<FileMeta>, StoreError>;

    /// Opens `path` as a byte stream, or `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn open(&self, path: &RelPath) -> Result<Option<Opened>, StoreError>;

    /// Opens `path` to continue a copy that was interrupted after `offset` bytes (issue #17:
    /// resumable transfers): the stream starts at `offset` when the file's version is still
    /// `version` (see [`Opened::version`]), else at 0, because the file changed and a copy
    /// must never mix two versions. [`Opened::offset`] says which; `Ok(None)` when the file
    /// is gone.
    ///
    /// The default opens from 0: a transport that cannot read from an offset starts over.
    /// SMB (a READ at the offset), HTTP (`Range` with `If-Range`) and local stores resume;
    /// wrappers forward it.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot answer.
    async fn open_from(
        &self,
        path: &RelPath,
        offset: u64,
        version: &str,
    ) -> Result<Option<Opened>, StoreError> {
        let _ = (offset, version);
        self.open(path).await
    }

    /// Streams `src` into `path`. `len`, when known, is checked: a short or long stream
    /// publishes nothing. A complete file already under `path` is never rewritten.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written (read-only, denied, full, failed
    /// midway) or `src` fails; no partial file is left under `path`.
    async fn put(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError>;

    /// What the store can do now (readable, writable, free space).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be reached at all.
    async fn capabilities(&self) -> Result<Capabilities, StoreError>;

    /// Streams `src` into `path` like [`Store::put`], but atomically **replaces** a file
    /// already under `path`: the cascade calls it only for a file it found bad there (0 bytes,
    /// another key: left by an older tool or a crashed writer, WinDbg-Feedback#299), after the
    /// new content was verified. The bad file stays visible until the rename, never a partial
    /// one. Returns [`PutOutcome::Written`].
    ///
    /// The default answers `Unsupported` (the cascade then skips the store for the write);
    /// local and SMB stores implement it (rename over the old name), wrappers forward it.
    ///
    /// # Errors
    /// As [`Store::put`]; `Unsupported` when the transport cannot replace a file.
    async fn replace(
        &self,
        path: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        let _ = (src, len);
        Err(StoreError::new(
            self.describe().location,
            "replace",
            path,
            StoreErrorKind::Unsupported,
            "this store cannot replace a file",
        ))
    }
}

/// A source stream that remembers whether *it* failed (as opposed to the store it is being
/// written into) and how many bytes it gave: lets the cascade and the blackout wrapper blame
/// the right store when a copy breaks midway.
#[derive(Debug)]
pub struct Watched<R> {
    /// The source.
    pub inner: R,
    /// Bytes read so far.
    pub bytes: u64,
    /// A read failed.
    pub failed: bool,
}

impl<R> Watched<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Watched<R> {
        Watched {
            inner,
            bytes: 0,
            failed: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            std::task::Poll::Ready(Ok(())) => self.bytes += (buf.filled().len() - before) as u64,
            std::task::Poll::Ready(Err(_)) => self.failed = true,
            std::task::Poll::Pending => {}
        }
        r
    }
}

/// `true` for `C:`-style drive paths.
pub fn is_drive_path(p: &str) -> bool {
    let b = p.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}
