//! Filling a spool file from a hit's source, resuming when the source breaks (issue #17 item
//! 2): a hit read from a remote store goes into a [`Partial`] of the agent's state folder when
//! one is configured (`CascadeOptions::partial_dir`), else into a plain spool file. When the
//! stream fails midway after making progress, the source is reopened from the bytes already
//! spooled ([`Store::open_from`], a few times with backoff) within the same lookup; a partial
//! that still breaks stays on disk for the next lookup, of this process or the next.
//!
//! Data flow: `Cascade::spool` → [`SpoolFile::claim`] (a partial to continue, or a fresh
//! file) → [`fill`] (reads, appends, announces on the tap, reopens) → `Cascade::spool`
//! verifies the complete file.

use super::{CascadeError, Spooling};
use crate::layout::RelPath;
use crate::resume::{Partial, RESUME_MIN};
use crate::store::{Opened, Store, StoreError, StoreErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Reopens after a break within one lookup, at most; each must have made progress.
const MAX_REOPENS: u32 = 3;

/// Where a hit was opened: the store and path to reopen it from.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    pub store: Arc<dyn Store>,
    pub path: RelPath,
}

/// Why filling a spool file failed.
pub(super) enum SpoolError {
    /// The source's fault, with the bytes read from it in this lookup.
    Store(StoreError, u64),
    /// Ours: the spool disk.
    Local(CascadeError),
}

/// The file a hit is spooled into.
#[derive(Debug)]
pub(super) enum SpoolFile {
    /// A spool file of this lookup's only.
    Temp(tempfile::NamedTempFile),
    /// A partial that outlives a failed lookup.
    Partial(Partial),
}

/// A spool file claimed for a hit, and the stream to fill it from.
pub(super) struct Claimed {
    pub file: SpoolFile,
    pub opened: Opened,
    /// Bytes an earlier attempt left in the file (not read again).
    pub resumed: u64,
}

impl SpoolFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            SpoolFile::Temp(t) => t.path(),
            SpoolFile::Partial(p) => p.path(),
        }
    }

    /// Claims the file for a hit opened as `opened` from `origin`: a partial of `partial_dir`
    /// (continued from where an earlier attempt stopped, the source reopened there) when the
    /// source is remote, at least [`RESUME_MIN`] bytes and versioned; else a fresh spool file
    /// in `spool_dir`.
    pub async fn claim(
        spool_dir: &Path,
        partial_dir: Option<&PathBuf>,
        opened: Opened,
        origin: Option<&Origin>,
    ) -> Result<Claimed, SpoolError> {
        let resumable = origin
            .zip(partial_dir)
            .filter(|_| opened.len.is_some_and(|l| l >= RESUME_MIN) && opened.version.is_some());
        let Some((o, dir)) = resumable else {
            return fresh(spool_dir, opened);
        };
        let (len, version) = (opened.len.unwrap_or(0), opened.version.clone());
        let version = version.unwrap_or_default();
        let location = o.store.describe().location;
        let (d, l, p, v) = (
            dir.clone(),
            location.clone(),
            o.path.clone(),
            version.clone(),
        );
        let claimed = tokio::task::spawn_blocking(move || Partial::claim(&d, &l, &p, len, &v))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let mut partial = match claimed {
            Ok(Some(p)) => p,
            Ok(None) => return fresh(spool_dir, opened),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "partial folder unusable: this transfer cannot resume");
                return fresh(spool_dir, opened);
            }
        };
        let have = partial.have();
        if have == 0 {
            return Ok(Claimed {
                file: SpoolFile::Partial(partial),
                opened,
                resumed: 0,
            });
        }
        drop(opened);
        let again = match o.store.open_from(&o.path, have, &version).await {
            Ok(Some(a)) => a,
            Ok(None) => return Err(vanished(&o.path)),
            Err(e) => {
                partial.keep();
                return Err(SpoolError::Store(e, 0));
            }
        };
        if again.offset == have {
            tracing::info!(store = %location, path = %o.path, bytes = have, "resuming an interrupted transfer");
            return Ok(Claimed {
                file: SpoolFile::Partial(partial),
                opened: again,
                resumed: have,
            });
        }
        // The source changed since: start over, never mix versions.
        let v = again.version.clone().unwrap_or_default();
        let len = again.len.unwrap_or(0);
        partial.restart(len, &v).map_err(local)?;
        Ok(Claimed {
            file: SpoolFile::Partial(partial),
            opened: again,
            resumed: 0,
        })
    }

    /// Leaves a partial on disk for a later lookup (the source broke); a temp file goes.
    pub fn keep(self) {
        if let SpoolFile::Partial(p) = self {
            p.keep();
        }
    }
}

fn fresh(spool_dir: &Path, opened: Opened) -> Result<Claimed, SpoolError> {
    let t = crate::spool::new_spool_file(spool_dir).map_err(local)?;
    Ok(Claimed {
        file: SpoolFile::Temp(t),
        opened,
        resumed: 0,
    })
}

fn local(source: std::io::Error) -> SpoolError {
    SpoolError::Local(CascadeError::Spool {
        dir: String::new(),
        source,
    })
}

fn vanished(path: &RelPath) -> SpoolError {
    let e = StoreError::new(
        "",
        "open",
        path,
        StoreErrorKind::Truncated,
        "the file vanished between probe and read",
    );
    SpoolError::Store(e, 0)
}

/// Whether a break of this kind is worth reopening for (the link, not the content).
fn transient(kind: StoreErrorKind) -> bool {
    matches!(
        kind,
        StoreErrorKind::Unreachable
            | StoreErrorKind::Timeout
            | StoreErrorKind::Io
            | StoreErrorKind::Truncated
    )
}

/// Fills `c.file` from `c.opened` (which starts at `c.opened.offset`, the bytes already in the
/// file), reopening the source from `origin` after a break that made progress. Returns the
/// file's length. `Store` errors carry the bytes read in this lookup.
pub(super) async fn fill(
    c: &mut Claimed,
    origin: Option<&Origin>,
    tap: Option<&watch::Sender<Spooling>>,
) -> Result<u64, SpoolError> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(c.file.path())
        .map_err(local)?;
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(f));
    let start = c.opened.offset;
    let mut have = start;
    let mut reopens = 0;
    loop {
        let e = match read_into_spool(&mut c.opened.reader, &mut out, tap, have).await {
            Ok(n) => return Ok(have + n),
            Err((SpoolError::Store(e, _), n)) => {
                have += n;
                // Keep what arrived: it is what the next attempt continues from.
                out.flush().await.map_err(local)?;
                if n == 0 {
                    return Err(SpoolError::Store(e, have - start));
                }
                e
            }
            Err((other, _)) => return Err(other),
        };
        let (Some(o), Some(version)) = (origin, c.opened.version.clone()) else {
            return Err(SpoolError::Store(e, have - start));
        };
        if reopens >= MAX_REOPENS || !transient(e.kind) {
            return Err(SpoolError::Store(e, have - start));
        }
        reopens += 1;
        tracing::info!(path = %o.path, bytes = have, error = %e, attempt = reopens, "transfer broke; reopening from where it stopped");
        tokio::time::sleep(Duration::from_millis(250 << reopens)).await;
        match o.store.open_from(&o.path, have, &version).await {
            Ok(Some(a)) if a.offset == have => c.opened = a,
            // Changed or gone meanwhile: clients may have been served the first bytes, so
            // this lookup fails; the partial starts over next time.
            Ok(_) | Err(_) => return Err(SpoolError::Store(e, have - start)),
        }
    }
}

/// Copies a hit's stream into its spool file, announcing each flushed chunk on `tap` (as the
/// file's length: `base` bytes were there before); returns the bytes read. A failure comes
/// with the bytes read before it: read errors are the source's (`Store`); write errors are
/// ours (`Local`: a full temp disk must not make the cascade blame the store and fetch the
/// file again elsewhere).
async fn read_into_spool(
    reader: &mut crate::store::ByteStream,
    out: &mut tokio::io::BufWriter<tokio::fs::File>,
    tap: Option<&watch::Sender<Spooling>>,
    base: u64,
) -> Result<u64, (SpoolError, u64)> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match reader.read(&mut buf).await {
            Ok(k) => k,
            Err(e) => {
                let e = StoreError::from_io("", "open", "", &e);
                return Err((SpoolError::Store(e, n), n));
            }
        };
        if k == 0 {
            break;
        }
        out.write_all(&buf[..k]).await.map_err(|e| (local(e), n))?;
        n += k as u64;
        if let Some(t) = tap {
            // Announce only bytes that are in the file.
            out.flush().await.map_err(|e| (local(e), n))?;
            t.send_modify(|s| s.written = base + n);
        }
    }
    out.flush().await.map_err(|e| (local(e), n))?;
    Ok(n)
}
