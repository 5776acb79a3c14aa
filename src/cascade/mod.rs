//! The cascade engine: look a key up along a symbol path and copy a hit into every store to
//! the left of it, as SymSrv does.
//!
//! Data flow: [`Cascade::resolve`] turns a parsed [`SymbolPath`] into [`Chain`]s of live stores
//! (opening each location once through a [`StoreOpener`], autodetecting `pingme.txt` stores).
//! [`Cascade::lookup`] then walks the chains left to right; each store is probed in SymSrv's
//! order (plain, compressed, `file.ptr`). On a hit in store *i* the source is read **once** into
//! a local spool file (and, for a compressed hit that must be expanded, decoded once into a
//! second spool file) and **verified** (`verify`: not empty, the content kind and key its name
//! promises, a cabinet whole); then stores *i-1 … 0* are written in cascade order, nearest to
//! the hit first, followed by the `cache*` stores that apply, nearest first. Only a hit whose
//! name cannot be keyed and whose length is announced streams straight into a single
//! destination without a spool file.
//!
//! Never publish garbage (issue 10): a refused source is a `corrupt` read skip and the search
//! goes on; a bad file already under a final name (a local hit answered in place is verified
//! too, once per version) is treated as absent there and replaced by the verified copy
//! ([`Store::replace`]). A lookup whose only failures are corrupt files is a definitive miss
//! ([`Lookup::is_definitive_miss`]); an I/O failure of the spool disk is [`CascadeError::Spool`].
//!
//! Semantics (Microsoft "Advanced SymSrv Use", `shared/semantics.md`):
//! - a store that cannot be read or written is skipped without failing the request; the skip
//!   is reported and logged once per store and reason;
//! - a compressed hit stays compressed in intermediate stores and is expanded only into the
//!   bottom-most store of the chain (and into `cache*` stores);
//! - `srv*X` with one store does no caching, except when X is HTTP or the hit is compressed:
//!   then the default downstream store receives it;
//! - `file.ptr` is followed to its target (`PATH:`), `MSG:` means "not here, go on";
//!   SymProxy's `NoFilePointers` turns following off; a downstream store whose root holds
//!   `wantsptr.txt` receives the pointer rather than the target;
//! - several chains are consulted in order until one finds the file; a miss is `Ok(None)`.

mod fill;
pub mod plan;

use crate::compress;
use crate::key::{Key, PeKey};
use crate::layout::{
    self, FILE_PTR, FilePtr, Form, INDEX2_TXT, PINGME_TXT, RelPath, Tiering, WANTSPTR_TXT,
};
use crate::store::open::StoreOpener;
use crate::store::{Opened, Store, StoreError, StoreErrorKind, Transport};
use crate::sympath::{Location, SymbolPath};
use crate::verify::{self, VerifyError};
use fill::SpoolError;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::sync::{OnceCell, watch};

/// Engine switches; defaults match SymSrv/SymProxy defaults.
#[derive(Debug, Clone)]
pub struct CascadeOptions {
    /// Follow `file.ptr` to its target (SymProxy `NoFilePointers` = `false`). Default `true`.
    pub follow_file_pointers: bool,
    /// Expand compressed files into the bottom-most store (SymProxy `NoUncompress` = `false`).
    /// Default `true`.
    pub uncompress: bool,
    /// Cap on an expanded file, bytes. Default [`compress::DEFAULT_MAX_EXPANDED`].
    pub max_expanded: u64,
    /// Directory for spool files (a hit is read once into it). Default: the system temp dir.
    pub spool_dir: Option<PathBuf>,
    /// Directory for resumable partials ([`crate::resume`]): a transfer from a remote store
    /// that breaks is kept there and continued by a later lookup, also after a restart.
    /// `None` (the default): transfers resume only within one lookup. The agent uses its
    /// state folder's `partial`.
    pub partial_dir: Option<PathBuf>,
    /// Extra SMB hosts a `file.ptr` may point to (build drops), besides the hosts of the
    /// symbol path. Default: none.
    pub file_ptr_hosts: Vec<String>,
    /// Extra local folders a `file.ptr` may point into (a build output folder), besides the
    /// local stores of the symbol path. Default: none.
    pub file_ptr_roots: Vec<PathBuf>,
    /// SymProxy/SymSrv `UriFilter` (SSRVOPT_URI_FILTER): bitmask of the forms asked of remote
    /// stores: HTTP 0x1 plain, 0x2 compressed, 0x4 `file.ptr`; UNC 0x10/0x20/0x40. `0` (the
    /// default) asks for every form. Fewer forms = fewer round trips per miss on slow links.
    pub uri_filter: u32,
    /// SymProxy/SymSrv `UriTiers` (SSRVOPT_URI_TIERS): the layout of every remote store, so no
    /// `index2.txt` request is needed. `None` (the default) detects it.
    pub uri_tiers: Option<Tiering>,
}

impl CascadeOptions {
    /// Whether `UriFilter` lets a store reached over `transport` (`"http"`, `"smb"`, `"local"`)
    /// be asked for `form`. Local stores are never filtered.
    pub fn uri_allows(&self, transport: Transport, form: Form) -> bool {
        let bit = match form {
            Form::Plain => 0x1,
            Form::Compressed => 0x2,
            Form::FilePtr => 0x4,
        };
        if self.uri_filter == 0 {
            return true;
        }
        match transport {
            Transport::Http => self.uri_filter & bit != 0,
            Transport::Smb | Transport::OsSmb => self.uri_filter & (bit << 4) != 0,
            // SymProxy's filter names only its two network transports.
            Transport::Local | Transport::S3 | Transport::Azure | Transport::Unavailable => true,
        }
    }
}

impl Default for CascadeOptions {
    fn default() -> Self {
        CascadeOptions {
            follow_file_pointers: true,
            uncompress: true,
            max_expanded: compress::DEFAULT_MAX_EXPANDED,
            spool_dir: None,
            partial_dir: None,
            file_ptr_hosts: Vec::new(),
            file_ptr_roots: Vec::new(),
            uri_filter: 0,
            uri_tiers: None,
        }
    }
}

/// A store in a chain, with the per-store facts the engine learns once (layout, markers).
#[derive(Debug)]
pub struct Tier {
    store: Arc<dyn Store>,
    read_only: bool,
    tiering: OnceCell<Tiering>,
    wantsptr: OnceCell<bool>,
}

impl Tier {
    /// Wraps a store. `read_only` tiers (HTTP) are never written.
    pub fn new(store: Arc<dyn Store>, read_only: bool) -> Arc<Tier> {
        Tier::with_tiering(store, read_only, None)
    }

    /// Wraps a store whose layout is known (`UriTiers`): `index2.txt` is never asked for.
    pub fn with_tiering(
        store: Arc<dyn Store>,
        read_only: bool,
        tiering: Option<Tiering>,
    ) -> Arc<Tier> {
        Arc::new(Tier {
            store,
            read_only,
            tiering: OnceCell::new_with(tiering),
            wantsptr: OnceCell::new(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the tier is never written (HTTP stores).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    fn name(&self) -> String {
        self.store.describe().location
    }

    /// One-tier or two-tier, from `index2.txt` in the root; learned once per process.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be asked.
    pub async fn tiering(&self) -> Result<Tiering, StoreError> {
        self.tiering
            .get_or_try_init(|| async {
                let two = self
                    .store
                    .stat(&layout::root_file(INDEX2_TXT))
                    .await?
                    .is_some();
                Ok(if two {
                    Tiering::TwoTier
                } else {
                    Tiering::OneTier
                })
            })
            .await
            .copied()
    }

    async fn wants_ptr(&self) -> bool {
        *self
            .wantsptr
            .get_or_init(|| async {
                matches!(
                    self.store.stat(&layout::root_file(WANTSPTR_TXT)).await,
                    Ok(Some(_))
                )
            })
            .await
    }
}

/// How a chain's stores are searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchKind {
    /// SymStore layout (`srv*`, `cache*`, autodetected `pingme.txt` folders).
    Store,
    /// A plain folder holding files by name; a hit must have the requested key.
    Flat,
}

/// One element of a resolved symbol path.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Stores in search order (downstream first). HTTP stores are moved to the end (they
    /// cannot be written, and peers accept them anywhere in a chain).
    pub tiers: Vec<Arc<Tier>>,
    /// `srv*X` with a single store: the default downstream store, used when X is HTTP or the
    /// hit is compressed.
    pub implicit_downstream: Option<Arc<Tier>>,
    /// `cache*` stores to the left of this element, leftmost first.
    pub caches: Vec<Arc<Tier>>,
    /// How the tiers are searched.
    pub search: SearchKind,
    /// The element as written, for reports.
    pub element: String,
}

/// Whether a skipped operation was a read or a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipOp {
    /// Looking up or reading from the store.
    Read,
    /// Writing the file into the store.
    Write,
}

/// A store that was skipped for this request, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skip {
    /// The store's location.
    pub store: String,
    /// Read or write.
    pub op: SkipOp,
    /// The classified reason.
    pub kind: StoreErrorKind,
    /// The full message.
    pub detail: String,
    /// Bytes read from the store before it was skipped (e.g. a corrupt file downloaded and
    /// refused): they count in `store_read_bytes_total` like a hit's.
    pub bytes_read: u64,
}

/// A copy made (or found already present) in a downstream store.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// The store's location.
    pub store: String,
    /// Path inside the store.
    pub path: String,
    /// The form written.
    pub form: Form,
    /// Bytes written; 0 when the file was already present.
    pub bytes: u64,
    /// `false` when a complete file was already there (kept, not rewritten).
    pub new: bool,
}

/// A successful lookup.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    /// Where the file was found (store location).
    pub found_in: String,
    /// Index of the chain (symbol path element) that found it.
    pub chain: usize,
    /// Index of the store inside that chain.
    pub tier: usize,
    /// The form it was found in.
    pub form: Form,
    /// The `file.ptr` target that was followed, if any.
    pub via_file_ptr: Option<String>,
    /// Copies made, in the order they were published (cascade order).
    pub written: Vec<Written>,
    /// Path of the uncompressed file on this machine, when one exists.
    pub local_path: Option<PathBuf>,
    /// Where the file can be read (local path or store location + path).
    pub location: String,
    /// Bytes read from the source store by this lookup (each byte once).
    pub bytes_read: u64,
    /// Bytes an earlier, interrupted transfer of the same file had read, which this lookup
    /// continued from rather than reading again (issue #17: resumable transfers).
    pub resumed_bytes: u64,
    /// Bytes written into all downstream stores together.
    pub bytes_written: u64,
}

impl Fetched {
    /// A hit answered where it is: nothing read, nothing copied.
    fn in_place(
        tier: &Tier,
        chain: usize,
        ti: usize,
        form: Form,
        location: String,
        local_path: Option<PathBuf>,
    ) -> Fetched {
        Fetched {
            found_in: tier.name(),
            chain,
            tier: ti,
            form,
            via_file_ptr: None,
            written: Vec::new(),
            location,
            local_path,
            bytes_read: 0,
            resumed_bytes: 0,
            bytes_written: 0,
        }
    }
}

/// The full result of a lookup: the hit (if any), the skipped stores, the time taken.
#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    /// The key looked up.
    pub key: Key,
    /// `None` when no store has the file (a miss).
    pub fetched: Option<Fetched>,
    /// Stores skipped, in the order met.
    pub skipped: Vec<Skip>,
    /// Wall time, milliseconds.
    pub elapsed_ms: u64,
}

impl Lookup {
    /// Whether this lookup is a miss to remember (SymProxy `MissTimeout`, `MissAgeTimeout`):
    /// nothing was found, and every store that could not answer failed because its file is
    /// corrupt. A corrupt file is a result, not an outage (issue 10, item 11): asking again
    /// soon would only download it again. Other read failures (unreachable, timeout, a
    /// transfer cut off) may hide the file, so they are not definitive.
    pub fn is_definitive_miss(&self) -> bool {
        self.fetched.is_none()
            && self
                .skipped
                .iter()
                .all(|s| s.op == SkipOp::Write || s.kind == StoreErrorKind::Corrupt)
    }

    /// Why a definitive miss missed when stores held corrupt files (their details, `; `
    /// between), for the miss entry; `None` when no store had anything.
    pub fn miss_reason(&self) -> Option<String> {
        let corrupt: Vec<&str> = self
            .skipped
            .iter()
            .filter(|s| s.op == SkipOp::Read && s.kind == StoreErrorKind::Corrupt)
            .map(|s| s.detail.as_str())
            .collect();
        (!corrupt.is_empty()).then(|| corrupt.join("; "))
    }
}

/// Failures that stop a lookup: only local problems outside any store (the spool directory).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CascadeError {
    /// The spool directory cannot be used.
    #[error("spool directory {dir}: {source}")]
    Spool {
        /// The directory.
        dir: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The engine: resolved chains plus options. Cheap to share (`Arc`) across requests.
#[derive(Debug)]
pub struct Cascade {
    chains: Vec<Chain>,
    /// The symbol path's plan: its stores and chains by [`plan::StoreId`].
    shape: plan::Shape,
    /// The stores of [`Cascade::shape`], by id (one tier per distinct location).
    tiers: Vec<Arc<Tier>>,
    options: CascadeOptions,
    /// SMB hosts named by the symbol path (lower-case): the only hosts a `file.ptr` may send us
    /// to, besides [`CascadeOptions::file_ptr_hosts`].
    known_hosts: HashSet<String>,
    /// Local folders a `file.ptr` may point into: the local stores of the symbol path and
    /// [`CascadeOptions::file_ptr_roots`].
    local_roots: Vec<PathBuf>,
    opener: Arc<dyn StoreOpener>,
    logged: Mutex<HashSet<(String, SkipOp, StoreErrorKind)>>,
    /// Local files answered in place that were found good (verified once, see `verify`).
    verified: Arc<verify::VerifiedFiles>,
}

/// Progress of a hit being read into a spool file, for [`Cascade::lookup_tapped`]. A reader
/// may read `path` up to `written` bytes; `generation` changes when a new spool starts (the
/// previous source failed and the next store is tried); `failed` marks the current one dead.
#[derive(Debug, Clone, Default)]
pub struct Spooling {
    /// Incremented for each spool file started.
    pub generation: u64,
    /// The spool file (removed when the lookup ends: open it while it runs).
    pub path: Option<PathBuf>,
    /// Bytes the source announced, when it did.
    pub len: Option<u64>,
    /// Bytes flushed into the file so far.
    pub written: u64,
    /// The source failed midway, or its content was refused; this spool will not complete.
    pub failed: bool,
    /// The spool is complete and its content verified (`verify`): only then may a reader
    /// hand out the last byte, so a client never receives a whole file the cascade refused.
    pub verified: bool,
}

/// Announces a new spool file on `tap`: `path`, of `len` bytes when complete, holding
/// `written` already (a resumed partial).
fn tap_started(
    tap: Option<&watch::Sender<Spooling>>,
    path: &std::path::Path,
    len: Option<u64>,
    written: u64,
) {
    if let Some(t) = tap {
        t.send_modify(|s| {
            s.generation += 1;
            s.path = Some(path.to_path_buf());
            s.len = len;
            s.written = written;
            s.failed = false;
            s.verified = false;
        });
    }
}

fn tap_failed(tap: Option<&watch::Sender<Spooling>>) {
    if let Some(t) = tap {
        t.send_modify(|s| s.failed = true);
    }
}

/// A probe hit in one store.
struct Found {
    form: Form,
    opened: Opened,
    via_ptr: Option<String>,
    ptr_text: Option<Vec<u8>>,
    /// Where to reopen it when the transfer breaks (remote stores only).
    origin: Option<fill::Origin>,
}

/// The origin of a hit opened as `path` in `store`, when a broken transfer from it is worth
/// resuming (the store is remote).
fn origin(store: &Arc<dyn Store>, path: &RelPath) -> Option<fill::Origin> {
    store
        .describe()
        .transport
        .is_remote()
        .then(|| fill::Origin {
            store: store.clone(),
            path: path.clone(),
        })
}

/// What [`Cascade::answer_in_place`] decided.
enum InPlace {
    /// The hit, answered where it is.
    Answer(Fetched),
    /// The file there is bad (`Corrupt`): treated as absent and replaced by a verified copy.
    Refused(StoreError),
    /// The file there could not be read.
    Unreadable(StoreError),
    /// A flat-folder file of another key: not a hit.
    OtherKey,
    /// Not answerable in place: read it and copy it as usual.
    Copy,
}

/// A verification that panicked (a parser bug on hostile input): the content's fault.
fn parser_failed(key: &Key, e: &tokio::task::JoinError) -> VerifyError {
    VerifyError::WrongContent {
        name: key.name().to_string(),
        expected: "symbol file",
        reason: format!("the parser failed: {e}"),
    }
}

/// A hit read once into local spool files.
struct Spooled {
    form: Form,
    raw: fill::SpoolFile,
    raw_len: u64,
    /// Bytes of `raw` an earlier, interrupted attempt read (not read again by this lookup).
    resumed: u64,
    expanded: Option<(tempfile::NamedTempFile, u64)>,
}

impl Cascade {
    /// Resolves `path` into chains, opening each distinct location once through `opener`.
    /// `default_downstream` is the store used for empty tokens and `srv*X` caching.
    /// Locations no transport can open become [`UnavailableStore`]s (skipped with a reason).
    /// Plain directories are probed for `pingme.txt` (SymSrv autodetection).
    pub async fn resolve(
        path: &SymbolPath,
        opener: Arc<dyn StoreOpener>,
        default_downstream: &Location,
        options: CascadeOptions,
    ) -> Cascade {
        let mut shape = plan::shape(path, default_downstream);
        let tiers: Vec<Arc<Tier>> = shape
            .stores
            .iter()
            .map(|loc| {
                let store = opener.open_store(loc).unwrap_or_else(|e| {
                    Arc::new(crate::store::open::UnavailableStore::from_error(&e))
                });
                let forced = options
                    .uri_tiers
                    .filter(|_| !matches!(loc, Location::Local { .. }));
                Tier::with_tiering(store, loc.is_http(), forced)
            })
            .collect();
        // Autodetection: a plain directory whose root holds pingme.txt is a symbol store.
        for c in shape
            .chains
            .iter_mut()
            .filter(|c| c.search == SearchKind::Flat)
        {
            let pingme = layout::root_file(PINGME_TXT);
            if let Ok(Some(_)) = tiers[c.tiers[0]].store.stat(&pingme).await {
                c.search = SearchKind::Store;
            }
        }
        let chains = shape
            .chains
            .iter()
            .map(|c| Chain {
                tiers: c.tiers.iter().map(|&i| tiers[i].clone()).collect(),
                implicit_downstream: c.implicit_downstream.map(|i| tiers[i].clone()),
                caches: c.caches.iter().map(|&i| tiers[i].clone()).collect(),
                search: c.search,
                element: c.element.clone(),
            })
            .collect();
        let (known_hosts, local_roots) = file_ptr_scope(&shape, &options, default_downstream);
        let spool = options.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let swept = tokio::task::spawn_blocking(move || crate::spool::sweep_spool_dir(&spool))
            .await
            .unwrap_or(0);
        if swept > 0 {
            tracing::info!(
                files = swept,
                "removed spool files left by interrupted transfers"
            );
        }
        if let Some(dir) = options.partial_dir.clone() {
            sweep_partials(dir).await;
        }
        Cascade {
            chains,
            shape,
            tiers,
            options,
            known_hosts,
            local_roots,
            opener,
            logged: Mutex::new(HashSet::new()),
            verified: Arc::default(),
        }
    }

    /// Keeps interrupted transfers in `dir` to resume them later (see
    /// [`CascadeOptions::partial_dir`]); bounds what an earlier process left there.
    pub async fn with_partial_dir(mut self, dir: PathBuf) -> Cascade {
        sweep_partials(dir.clone()).await;
        self.options.partial_dir = Some(dir);
        self
    }

    /// The resolved chains, in search order.
    pub fn chains(&self) -> &[Chain] {
        &self.chains
    }

    /// Whether the local file `path` of a store, holding `key`'s file in `form`, passes
    /// verification (`verify`). Answered from memory for a file already found good with the
    /// same length and modification time ([`verify::VerifiedFiles`]), so the HTTP front's warm
    /// path keys each file once, not on every request; a file that cannot be read is `false`.
    pub async fn verified_local(&self, path: &std::path::Path, key: &Key, form: Form) -> bool {
        if self.verified.is_known_good(path) {
            return true;
        }
        let (v, p, k) = (self.verified.clone(), path.to_path_buf(), key.clone());
        let (cap, dir) = (self.options.max_expanded, self.spool_dir());
        let r = tokio::task::spawn_blocking(move || v.check(&p, &k, form, cap, &dir)).await;
        match r {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(key = %key, path = %path.display(), "local file refused: {e}");
                false
            }
            Err(_) => false,
        }
    }

    /// The options the engine runs with.
    pub fn options(&self) -> &CascadeOptions {
        &self.options
    }

    /// Looks `key` up and copies a hit down the cascade. `Ok(None)` is a miss everywhere.
    ///
    /// # Errors
    /// [`CascadeError`] only when the local spool directory is unusable; store failures are
    /// skips (see [`Cascade::lookup`] for the report).
    pub async fn fetch(&self, key: &Key) -> Result<Option<Fetched>, CascadeError> {
        Ok(self.lookup(key).await?.fetched)
    }

    /// Like [`Cascade::fetch`], with the full report: skipped stores and time taken.
    ///
    /// # Errors
    /// As [`Cascade::fetch`].
    pub async fn lookup(&self, key: &Key) -> Result<Lookup, CascadeError> {
        self.lookup_tapped(key, None).await
    }

    /// Like [`Cascade::lookup`], publishing the progress of a plain hit read from a store of a
    /// `srv*` chain to `tap` while it is being read (the bytes go to a spool file whose path and
    /// flushed length `tap` announces), so an HTTP client can be served while the copy-down
    /// is still running. Compressed or flat-folder hits are not announced (they are expanded or
    /// key-checked first).
    ///
    /// # Errors
    /// As [`Cascade::fetch`].
    pub async fn lookup_tapped(
        &self,
        key: &Key,
        tap: Option<&watch::Sender<Spooling>>,
    ) -> Result<Lookup, CascadeError> {
        let start = Instant::now();
        let mut run = Run::default();
        let mut fetched = None;
        'search: for (ci, chain) in self.chains.iter().enumerate() {
            for ti in 0..chain.tiers.len() {
                if let Some(f) = self.try_tier(ci, ti, key, tap, &mut run).await? {
                    fetched = Some(f);
                    break 'search;
                }
            }
        }
        let lookup = Lookup {
            key: key.clone(),
            fetched,
            skipped: run.skipped,
            elapsed_ms: start.elapsed().as_millis() as u64,
        };
        crate::store::local::touch_hit(
            lookup
                .fetched
                .as_ref()
                .and_then(|f| f.local_path.as_deref()),
            None,
        );
        match &lookup.fetched {
            Some(f) => tracing::info!(key = %key, found_in = %f.found_in, form = ?f.form,
                copies = f.written.len(), bytes = f.bytes_read, ms = lookup.elapsed_ms, "hit"),
            None => tracing::info!(key = %key, skipped = lookup.skipped.len(),
                ms = lookup.elapsed_ms, "miss"),
        }
        Ok(lookup)
    }

    /// Tier `ti` of chain `ci`: probe it, plan the delivery ([`plan::delivery`]) and carry it
    /// out. `Ok(None)` means go on searching (a miss, a skip, a refused or failed source).
    async fn try_tier(
        &self,
        ci: usize,
        ti: usize,
        key: &Key,
        tap: Option<&watch::Sender<Spooling>>,
        run: &mut Run,
    ) -> Result<Option<Fetched>, CascadeError> {
        let chain = &self.chains[ci];
        let (tier, id) = (&chain.tiers[ti], self.shape.chains[ci].tiers[ti]);
        let found = match self.probe(tier, chain.search, key).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.skip(&mut run.skipped, SkipOp::Read, &e);
                return Ok(None);
            }
        };
        let dests = plan::destinations(&self.shape, ci, ti, found.form, self.options.uncompress);
        let tapped = tap.filter(|_| chain.search == SearchKind::Store && found.form == Form::Plain);
        let hit = plan::Hit {
            form: found.form,
            via_ptr: found.via_ptr.is_some(),
            keyable: verify::keyable(key.name()).is_some(),
            len: found.opened.len,
            tapped: tapped.is_some(),
        };
        let refused: Vec<plan::StoreId> = run.refused.iter().map(|(id, _)| *id).collect();
        match plan::delivery(chain.search, &dests, &hit, &refused) {
            plan::Delivery::InPlace => {
                let at = (
                    found.form,
                    found.opened.len,
                    found.opened.local_path.clone(),
                );
                match self.answer_in_place(chain, ci, ti, key, at).await? {
                    InPlace::Answer(f) => return Ok(Some(f)),
                    InPlace::Refused(e) => {
                        self.skip(&mut run.skipped, SkipOp::Read, &e);
                        run.refused.push((id, found.form));
                        return Ok(None);
                    }
                    InPlace::Unreadable(e) => {
                        self.skip(&mut run.skipped, SkipOp::Read, &e);
                        return Ok(None);
                    }
                    InPlace::OtherKey => return Ok(None),
                    InPlace::Copy => {}
                }
            }
            plan::Delivery::Direct(d) => {
                let dest = &self.tiers[d];
                let at = (ci, ti);
                return Ok(self
                    .stream_direct(chain, at, key, dest, found, &mut run.skipped)
                    .await);
            }
            plan::Delivery::Spool => {}
        }
        self.spool_and_deliver((ci, ti), key, &dests, found, tapped, run)
            .await
    }

    /// [`plan::Delivery::Spool`]: reads the hit once into a spool file, verifies it, then
    /// copies it down. `Ok(None)` when the source failed or was refused (search goes on).
    async fn spool_and_deliver(
        &self,
        (ci, ti): (usize, usize),
        key: &Key,
        dests: &[plan::Dest],
        found: Found,
        tapped: Option<&watch::Sender<Spooling>>,
        run: &mut Run,
    ) -> Result<Option<Fetched>, CascadeError> {
        let chain = &self.chains[ci];
        let (tier, id) = (&chain.tiers[ti], self.shape.chains[ci].tiers[ti]);
        let form = found.form;
        let spooled = match self
            .spool(
                chain.search,
                form,
                (found.opened, found.origin.as_ref()),
                key,
                tapped,
            )
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(None), // flat-folder file with another key
            Err(SpoolError::Local(e)) => {
                tap_failed(tapped);
                return Err(e);
            }
            Err(SpoolError::Store(e, bytes)) => {
                tap_failed(tapped);
                let rel = rel_path(chain.search, tier, key, form).await;
                let e = e.with_store(&tier.name(), &rel);
                if e.kind == StoreErrorKind::Corrupt {
                    run.refused.push((id, form));
                }
                self.skip_read(&mut run.skipped, &e, bytes);
                return Ok(None);
            }
        };
        let source = Source {
            chain,
            at: (ci, ti),
            via_ptr: found.via_ptr,
            ptr_text: found.ptr_text,
        };
        Ok(Some(self.deliver(&source, key, dests, spooled, run).await))
    }

    fn skip(&self, skipped: &mut Vec<Skip>, op: SkipOp, e: &StoreError) {
        let first =
            self.logged
                .lock()
                .expect("skip log poisoned")
                .insert((e.store.clone(), op, e.kind));
        if first {
            tracing::warn!(store = %e.store, ?op, kind = %e.kind, "store skipped: {e}");
        } else {
            tracing::debug!(store = %e.store, ?op, kind = %e.kind, "store skipped: {e}");
        }
        skipped.push(Skip {
            store: e.store.clone(),
            op,
            kind: e.kind,
            detail: e.to_string(),
            bytes_read: 0,
        });
    }

    /// [`Cascade::skip`] for a read, recording the bytes read before the store was skipped.
    fn skip_read(&self, skipped: &mut Vec<Skip>, e: &StoreError, bytes: u64) {
        self.skip(skipped, SkipOp::Read, e);
        if let Some(s) = skipped.last_mut() {
            s.bytes_read = bytes;
        }
    }

    /// A hit with no store to copy into is answered where it is, as SymSrv reads it in place.
    /// A local file is verified first (once per length and modification time, see
    /// [`verify::VerifiedFiles`]); a remote one only for being empty: keying it would mean
    /// downloading it, which answering in place exists to avoid.
    async fn answer_in_place(
        &self,
        chain: &Chain,
        ci: usize,
        ti: usize,
        key: &Key,
        (form, len, local): (Form, Option<u64>, Option<PathBuf>),
    ) -> Result<InPlace, CascadeError> {
        let tier = &chain.tiers[ti];
        let rel = rel_path(chain.search, tier, key, form).await;
        let refuse = |e: VerifyError| {
            InPlace::Refused(StoreError::new(
                tier.name(),
                "verify",
                &rel,
                StoreErrorKind::Corrupt,
                e.to_string(),
            ))
        };
        let Some(local) = local else {
            if chain.search != SearchKind::Store {
                return Ok(InPlace::Copy);
            }
            if len == Some(0) {
                let name = key.name().to_string();
                return Ok(refuse(VerifyError::Empty { name }));
            }
            let location = format!("{}\\{}", tier.name(), rel.components().join("\\"));
            let f = Fetched::in_place(tier, ci, ti, form, location, None);
            return Ok(InPlace::Answer(f));
        };
        if chain.search == SearchKind::Flat {
            // A flat folder holds files by name only: another key is simply not a hit.
            let (p, k) = (local.clone(), key.clone());
            let ok = tokio::task::spawn_blocking(move || flat_file_matches(&p, &k))
                .await
                .unwrap_or(false);
            if !ok {
                return Ok(InPlace::OtherKey);
            }
        } else {
            let (v, p, k) = (self.verified.clone(), local.clone(), key.clone());
            let (cap, dir) = (self.options.max_expanded, self.spool_dir());
            let r = tokio::task::spawn_blocking(move || v.check(&p, &k, form, cap, &dir))
                .await
                .unwrap_or_else(|e| Err(parser_failed(key, &e)));
            match r {
                Ok(()) => {}
                Err(VerifyError::Spool { path, source }) => {
                    return Err(CascadeError::Spool { dir: path, source });
                }
                Err(VerifyError::Read { source, .. }) => {
                    let e = StoreError::from_io(tier.name(), "open", &rel, &source);
                    return Ok(InPlace::Unreadable(e));
                }
                Err(e) => return Ok(refuse(e)),
            }
        }
        let location = local.display().to_string();
        let local = (form == Form::Plain).then_some(local);
        let f = Fetched::in_place(tier, ci, ti, form, location, local);
        Ok(InPlace::Answer(f))
    }

    fn spool_dir(&self) -> PathBuf {
        self.options
            .spool_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// Probes one store in SymSrv's order. Flat folders are probed for `<name>` only.
    async fn probe(
        &self,
        tier: &Tier,
        search: SearchKind,
        key: &Key,
    ) -> Result<Option<Found>, StoreError> {
        if search == SearchKind::Flat {
            let p = RelPath::from_safe([key.name()]);
            return Ok(tier.store.open(&p).await?.map(|opened| Found {
                form: Form::Plain,
                opened,
                via_ptr: None,
                ptr_text: None,
                origin: origin(&tier.store, &p),
            }));
        }
        let tiering = tier.tiering().await?;
        let transport = tier.store.describe().transport;
        let probes: Vec<(Form, RelPath)> = layout::probe_order(key, tiering)
            .into_iter()
            .filter(|(form, _)| self.options.uri_allows(transport, *form))
            .collect();
        let opens = open_all(&tier.store, &probes).await;
        for ((form, path), opened) in probes.into_iter().zip(opens) {
            let Some(opened) = opened? else {
                continue;
            };
            if form != Form::FilePtr {
                return Ok(Some(Found {
                    form,
                    opened,
                    via_ptr: None,
                    ptr_text: None,
                    origin: origin(&tier.store, &path),
                }));
            }
            let mut text = Vec::new();
            opened
                .reader
                .take(layout::MAX_FILE_PTR_LEN as u64 + 1)
                .read_to_end(&mut text)
                .await
                .map_err(|e| StoreError::from_io(tier.name(), "open", &path, &e))?;
            let ptr = layout::parse_file_ptr(&text).map_err(|e| {
                StoreError::new(
                    tier.name(),
                    "open",
                    &path,
                    StoreErrorKind::Corrupt,
                    e.to_string(),
                )
            })?;
            return match ptr {
                FilePtr::Msg(m) => {
                    tracing::debug!(store = %tier.name(), key = %key, msg = %m, "file.ptr MSG: not here");
                    Ok(None)
                }
                FilePtr::Path(_) if !self.options.follow_file_pointers => Ok(None),
                FilePtr::Path(target) => {
                    let from_remote = tier.store.describe().transport.is_remote();
                    self.open_target(&tier.name(), &target, text, from_remote)
                        .await
                }
            };
        }
        Ok(None)
    }

    /// Opens a `file.ptr` target (local or UNC), plain or in compressed form.
    ///
    /// Policy, because anyone who can write a share can write a `file.ptr`: a pointer found in a
    /// remote store may not point to this machine's disk; an SMB target must be a host of the
    /// symbol path (or listed in `file_ptr_hosts`), so our credentials never go to a host the
    /// admin did not name; administrative shares (`C$`, `ADMIN$`, `IPC$`) are refused.
    async fn open_target(
        &self,
        store: &str,
        target: &str,
        ptr_text: Vec<u8>,
        from_remote: bool,
    ) -> Result<Option<Found>, StoreError> {
        let bad = |detail: String| {
            StoreError::new(store, "open", FILE_PTR, StoreErrorKind::Corrupt, detail)
        };
        let loc: Location = target
            .parse()
            .map_err(|e| bad(format!("file.ptr target {target:?}: {e}")))?;
        let (dir, name) = loc
            .split_file()
            .ok_or_else(|| bad(format!("file.ptr target {target:?} names no file")))?;
        if !self
            .target_allowed(store, target, (&dir, &name), from_remote)
            .await?
        {
            return Ok(None); // nothing there
        }
        let s = self.opener.open_store(&dir)?;
        for (form, n) in [
            (Form::Plain, name.clone()),
            (Form::Compressed, layout::compressed_name(&name)),
        ] {
            let Some(p) = RelPath::checked([n]) else {
                return Err(bad(format!(
                    "file.ptr target {target:?} has an unusable name"
                )));
            };
            if let Some(opened) = s.open(&p).await? {
                return Ok(Some(Found {
                    form,
                    opened,
                    via_ptr: Some(target.to_string()),
                    ptr_text: Some(ptr_text),
                    origin: origin(&s, &p),
                }));
            }
        }
        Ok(None)
    }

    /// The `file.ptr` policy of [`Cascade::open_target`] for target `dir\\name`: `Ok(true)`
    /// to follow it, `Ok(false)` when a local target folder does not exist, an error
    /// (`PermissionDenied`) when the policy refuses it.
    async fn target_allowed(
        &self,
        store: &str,
        target: &str,
        (dir, name): (&Location, &str),
        from_remote: bool,
    ) -> Result<bool, StoreError> {
        let refused = |detail: String| {
            StoreError::new(
                store,
                "open",
                FILE_PTR,
                StoreErrorKind::PermissionDenied,
                detail,
            )
        };
        match dir {
            Location::Local { .. } if from_remote => {
                return Err(refused(format!(
                    "file.ptr target {target:?}: a pointer in a remote store may not point to a local path"
                )));
            }
            Location::Local { path } => {
                let (roots, dir, n) = (
                    self.local_roots.clone(),
                    PathBuf::from(path),
                    name.to_string(),
                );
                let inside =
                    tokio::task::spawn_blocking(move || local_target_inside(&roots, &dir, &n))
                        .await
                        .unwrap_or(Some(false));
                match inside {
                    None => return Ok(false), // nothing there
                    Some(true) => {}
                    Some(false) => {
                        return Err(refused(format!(
                            "file.ptr target {target:?}: outside the symbol path's local stores (add its folder to file_ptr_roots to allow it)"
                        )));
                    }
                }
            }
            Location::Smb { host, share, .. } => {
                let admin = share.eq_ignore_ascii_case("ADMIN$")
                    || share.eq_ignore_ascii_case("IPC$")
                    || (share.len() == 2 && share.ends_with('$'));
                if admin {
                    return Err(refused(format!(
                        "file.ptr target {target:?}: administrative shares are not followed"
                    )));
                }
                if !self.known_hosts.contains(&host.to_ascii_lowercase()) {
                    return Err(refused(format!(
                        "file.ptr target {target:?}: host {host:?} is not in the symbol path (add it to file_ptr_hosts to allow it)"
                    )));
                }
            }
            _ => {}
        }
        Ok(true)
    }

    /// Reads the hit once into a spool file and verifies it before any store sees it
    /// (`verify`): length, then for a store chain the content (a plain file's kind and key; a
    /// compressed file whole: one complete member whose content passes the same checks, expanded
    /// once and kept when some destination needs it expanded). For flat folders, verifies the
    /// file's key and returns `Ok(None)` on mismatch. Announces `verified` on `tap` at the end.
    async fn spool(
        &self,
        search: SearchKind,
        form: Form,
        (opened, origin): (Opened, Option<&fill::Origin>),
        key: &Key,
        tap: Option<&watch::Sender<Spooling>>,
    ) -> Result<Option<Spooled>, SpoolError> {
        let dir = self.spool_dir();
        let local = |source| {
            SpoolError::Local(CascadeError::Spool {
                dir: dir.display().to_string(),
                source,
            })
        };
        // Name the spool folder in our own failures (`fill` does not know it).
        let named = |e| match e {
            SpoolError::Local(CascadeError::Spool { source, .. }) => local(source),
            other => other,
        };
        std::fs::create_dir_all(&dir).map_err(local)?;
        let partials = self.options.partial_dir.as_ref();
        let mut c = fill::SpoolFile::claim(&dir, partials, opened, origin)
            .await
            .map_err(named)?;
        tap_started(tap, c.file.path(), c.opened.len, c.opened.offset);
        let n = match fill::fill(&mut c, origin, tap).await {
            Ok(n) => n,
            Err(e @ SpoolError::Store(..)) => {
                c.file.keep();
                return Err(e);
            }
            Err(e) => return Err(named(e)),
        };
        let (raw, resumed) = (c.file, c.resumed);
        if let Some(want) = c.opened.len
            && want != n
        {
            let detail = format!("expected {want} bytes, read {n}");
            let e = StoreError::new("", "open", "", StoreErrorKind::Truncated, detail);
            return Err(SpoolError::Store(e, n - resumed));
        }
        let raw_path = raw.path().to_path_buf();
        if search == SearchKind::Flat {
            // A plain folder holds files by name only: accept it only if its key matches.
            let (rp, k) = (raw_path.clone(), key.clone());
            let ok = tokio::task::spawn_blocking(move || flat_file_matches(&rp, &k))
                .await
                .unwrap_or(false);
            if !ok {
                tracing::debug!(key = %key, "flat folder file has another key; not a hit");
                return Ok(None);
            }
        }
        let expanded = match self.verify_spooled(search, form, &raw_path, key).await {
            Ok(e) => e,
            Err(VerifyError::Spool { source, .. } | VerifyError::Read { source, .. }) => {
                return Err(local(source));
            }
            Err(e) => {
                let e = StoreError::new("", "verify", "", StoreErrorKind::Corrupt, e.to_string());
                return Err(SpoolError::Store(e, n - resumed));
            }
        };
        if let Some(t) = tap {
            t.send_modify(|s| s.verified = true);
        }
        if resumed > 0 {
            tracing::info!(key = %key, resumed, read = n - resumed, "resumed transfer complete and verified");
        }
        Ok(Some(Spooled {
            form,
            raw,
            raw_len: n,
            resumed,
            expanded,
        }))
    }

    /// Verifies a complete spool file (see [`Cascade::spool`]); returns the expansion of a
    /// compressed hit when the bottom-most store will want it (`uncompress`).
    async fn verify_spooled(
        &self,
        search: SearchKind,
        form: Form,
        raw: &std::path::Path,
        key: &Key,
    ) -> Result<Option<(tempfile::NamedTempFile, u64)>, VerifyError> {
        let (rp, k, dir) = (raw.to_path_buf(), key.clone(), self.spool_dir());
        let (cap, keep) = (self.options.max_expanded, self.options.uncompress);
        let work = move || match (form, search) {
            (Form::Compressed, _) => {
                // Sniff, do not trust names.
                let mut magic = [0u8; 4];
                let ok = std::fs::File::open(&rp)
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                    .is_ok();
                if !ok || !compress::is_cab(&magic) {
                    return Err(VerifyError::BadCabinet {
                        name: k.name().to_string(),
                        source: compress::CompressError::NotCab("no MSCF signature".into()),
                    });
                }
                verify::verify_cab(&rp, &k, cap, &dir, keep)
            }
            (Form::Plain, SearchKind::Store) => verify::verify_plain(&rp, &k).map(|()| None),
            _ => Ok(None),
        };
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(parser_failed(key, &e)))
    }

    /// Streams a hit straight from its source into its only destination
    /// ([`plan::Delivery::Direct`]). `None` when the source failed midway (the caller goes on
    /// searching); a failed write is a skip and the hit is still reported (at its source).
    async fn stream_direct(
        &self,
        chain: &Chain,
        (ci, ti): (usize, usize),
        key: &Key,
        dest: &Arc<Tier>,
        found: Found,
        skipped: &mut Vec<Skip>,
    ) -> Option<Fetched> {
        let source = &chain.tiers[ti];
        let mut written = Vec::new();
        let mut local_path = None;
        let mut tracked = crate::store::Watched::new(found.opened.reader);
        match dest.tiering().await {
            Ok(tiering) => {
                let path = layout::path_for(key, tiering, found.form);
                match dest.store.put(&path, &mut tracked, found.opened.len).await {
                    Ok(outcome) => {
                        local_path = outcome.local_path().cloned();
                        written.push(Written::of(dest, &path, found.form, &outcome));
                    }
                    Err(e) if tracked.failed || e.kind == StoreErrorKind::Truncated => {
                        let e = StoreError::new(source.name(), "open", &path, e.kind, e.detail);
                        self.skip(skipped, SkipOp::Read, &e);
                        return None;
                    }
                    Err(e) => self.skip(skipped, SkipOp::Write, &e),
                }
            }
            Err(e) => self.skip(skipped, SkipOp::Write, &e),
        }
        let local_path = local_path.or(found.opened.local_path);
        let location = local_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("{} ({})", source.name(), key));
        Some(Fetched {
            found_in: source.name(),
            chain: ci,
            tier: ti,
            form: found.form,
            via_file_ptr: None,
            bytes_written: written.iter().map(|w| w.bytes).sum(),
            written,
            location,
            local_path,
            bytes_read: tracked.bytes,
            resumed_bytes: 0,
        })
    }

    /// Copies a verified spooled hit into each destination as [`plan::copies`] says, in
    /// cascade order; a store that cannot be written is skipped. Reports where the file can
    /// now be read (the bottom-most plain copy, else the source).
    async fn deliver(
        &self,
        src: &Source<'_>,
        key: &Key,
        dests: &[plan::Dest],
        spooled: Spooled,
        run: &mut Run,
    ) -> Fetched {
        let (ci, ti) = src.at;
        let source = &src.chain.tiers[ti];
        let mut facts = Vec::with_capacity(dests.len());
        for d in dests {
            let wants_ptr = src.ptr_text.is_some() && self.tiers[d.id].wants_ptr().await;
            let refused = run
                .refused
                .iter()
                .find(|(id, _)| *id == d.id)
                .map(|(_, f)| *f);
            facts.push(plan::DestFacts { wants_ptr, refused });
        }
        let source_id = self.shape.chains[ci].tiers[ti];
        let copies = plan::copies(
            dests,
            &facts,
            source_id,
            spooled.form,
            src.via_ptr.is_some(),
            spooled.expanded.is_some(),
        );
        let mut written = Vec::new();
        let mut local_path = None;
        for copy in copies {
            let tier = &self.tiers[copy.id];
            match self
                .write_copy(tier, key, copy, &spooled, src.ptr_text.as_deref())
                .await
            {
                Ok((w, path)) => {
                    if w.form == Form::Plain && path.is_some() {
                        local_path = path;
                    }
                    written.push(w);
                }
                Err(e) => self.skip(&mut run.skipped, SkipOp::Write, &e),
            }
        }
        if local_path.is_none() && spooled.form == Form::Plain && src.via_ptr.is_none() {
            local_path = self.source_local_path(src.chain, source, key).await;
        }
        let location = match &local_path {
            Some(p) => p.display().to_string(),
            None => src
                .via_ptr
                .clone()
                .unwrap_or_else(|| format!("{} ({})", source.name(), key)),
        };
        Fetched {
            found_in: source.name(),
            chain: ci,
            tier: ti,
            form: if src.via_ptr.is_some() {
                Form::FilePtr
            } else {
                spooled.form
            },
            via_file_ptr: src.via_ptr.clone(),
            bytes_written: written.iter().map(|w| w.bytes).sum(),
            written,
            local_path,
            location,
            bytes_read: spooled.raw_len - spooled.resumed,
            resumed_bytes: spooled.resumed,
        }
    }

    /// One copy of [`Cascade::deliver`]: the store path, the bytes (raw, expanded or the
    /// pointer text), `put` or `replace`. Returns the record and the copy's local path.
    async fn write_copy(
        &self,
        tier: &Arc<Tier>,
        key: &Key,
        copy: plan::Copy,
        spooled: &Spooled,
        ptr_text: Option<&[u8]>,
    ) -> Result<(Written, Option<PathBuf>), StoreError> {
        let (file, len) = match copy.bytes {
            plan::Bytes::Raw => (Some(spooled.raw.path()), spooled.raw_len),
            plan::Bytes::Expanded => match &spooled.expanded {
                Some((f, l)) => (Some(f.path()), *l),
                None => (Some(spooled.raw.path()), spooled.raw_len),
            },
            plan::Bytes::PtrText => (None, 0),
        };
        let path = layout::path_for(key, tier.tiering().await?, copy.form);
        let (mut src, len) = copy_source(file, len, ptr_text).await?;
        let outcome = if copy.replace {
            tier.store.replace(&path, &mut src, Some(len)).await?
        } else {
            tier.store.put(&path, &mut src, Some(len)).await?
        };
        let w = Written::of(tier, &path, copy.form, &outcome);
        tracing::debug!(store = %w.store, %path, new = w.new, bytes = w.bytes, "copied down");
        Ok((w, outcome.local_path().cloned()))
    }

    /// The local path of a plain hit in its source store, when the source is local.
    async fn source_local_path(&self, chain: &Chain, source: &Tier, key: &Key) -> Option<PathBuf> {
        let t = source.tiering().await.ok()?;
        let p = match chain.search {
            SearchKind::Store => layout::path_for(key, t, Form::Plain),
            SearchKind::Flat => RelPath::from_safe([key.name()]),
        };
        source.store.stat(&p).await.ok().flatten()?.local_path
    }
}

/// What one lookup has learned so far, across the stores it tried.
#[derive(Default)]
struct Run {
    skipped: Vec<Skip>,
    /// Stores whose file was refused (bad content under a final name), with the form it was
    /// found in: a verified copy replaces it there (`Store::replace`).
    refused: Vec<(plan::StoreId, Form)>,
}

/// Where a spooled hit came from.
struct Source<'a> {
    chain: &'a Chain,
    /// (chain, tier) indexes.
    at: (usize, usize),
    via_ptr: Option<String>,
    ptr_text: Option<Vec<u8>>,
}

impl Written {
    fn of(tier: &Tier, path: &RelPath, form: Form, outcome: &crate::store::PutOutcome) -> Written {
        let (bytes, new) = match outcome {
            crate::store::PutOutcome::Written { bytes, .. } => (*bytes, true),
            crate::store::PutOutcome::AlreadyPresent { .. } => (0, false),
        };
        Written {
            store: tier.name(),
            path: path.to_string(),
            form,
            bytes,
            new,
        }
    }
}

/// Opens every probe of a store, in SymSrv's order of preference. On an SMB share (built-in
/// or OS client) all CREATEs are in flight at once, so a miss costs one round trip instead of
/// one per form (issue #15: 3 probes took 3 round trips); the handles of forms that lose to an
/// earlier one are dropped (closed in the background). Local folders are probed one by one
/// (no round trips to save); HTTP stores too, since a second GET of an existing form would
/// start a download only to drop it.
/// The answers come in probe order; the sequential way stops at the first that is not a miss.
async fn open_all(
    store: &Arc<dyn Store>,
    probes: &[(Form, RelPath)],
) -> Vec<Result<Option<Opened>, StoreError>> {
    if matches!(
        store.describe().transport,
        Transport::Smb | Transport::OsSmb
    ) {
        return futures_util::future::join_all(probes.iter().map(|(_, p)| store.open(p))).await;
    }
    let mut out = Vec::with_capacity(probes.len());
    for (_, p) in probes {
        let r = store.open(p).await;
        let answered = !matches!(r, Ok(None));
        out.push(r);
        if answered {
            break;
        }
    }
    out
}

/// Bounds the partials in `dir` ([`crate::resume::sweep`]).
async fn sweep_partials(dir: PathBuf) {
    let swept = tokio::task::spawn_blocking(move || {
        crate::resume::sweep(&dir, crate::resume::MAX_PARTIALS, crate::resume::MAX_AGE)
    })
    .await
    .unwrap_or(0);
    if swept > 0 {
        tracing::info!(partials = swept, "removed old partial transfers");
    }
}

impl StoreError {
    fn with_store(mut self, store: &str, path: &RelPath) -> StoreError {
        if self.store.is_empty() {
            self.store = store.to_string();
        }
        if self.path.is_empty() {
            self.path = path.to_string();
        }
        self
    }
}

/// Where a `file.ptr` may send us: the SMB hosts the symbol path names (lower-case) plus
/// `file_ptr_hosts`, and the local folders it names (the default downstream store included)
/// plus `file_ptr_roots`. Anyone who can write a share can write a `file.ptr`: our credentials
/// and our disk stay within what the admin named.
fn file_ptr_scope(
    shape: &plan::Shape,
    options: &CascadeOptions,
    default_downstream: &Location,
) -> (HashSet<String>, Vec<PathBuf>) {
    let mut hosts: HashSet<String> = options
        .file_ptr_hosts
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let mut roots = options.file_ptr_roots.clone();
    for l in std::iter::once(default_downstream).chain(&shape.stores) {
        match l {
            Location::Smb { host, .. } => {
                hosts.insert(host.to_ascii_lowercase());
            }
            Location::Local { path } => roots.push(PathBuf::from(path)),
            Location::Http { .. } | Location::Object { .. } => {}
        }
    }
    (hosts, roots)
}

/// Whether a local `file.ptr` target `dir\name` (or its compressed form) lies inside one of
/// `roots` once `..` and symbolic links are resolved: a pointer is text anyone who can write a
/// store can write, and must not make us copy `/etc/shadow` or the agent's own config into
/// the stores and serve it. `None` when `dir` does not exist (the target is simply absent).
fn local_target_inside(roots: &[PathBuf], dir: &std::path::Path, name: &str) -> Option<bool> {
    let dir = match std::fs::canonicalize(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(_) => return Some(false),
    };
    let roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .collect();
    let within = |p: &std::path::Path| roots.iter().any(|r| p.starts_with(r));
    if !within(&dir) {
        return Some(false);
    }
    // The file itself may be a link out of the root.
    let ok = [name.to_string(), layout::compressed_name(name)]
        .iter()
        .filter_map(|n| std::fs::canonicalize(dir.join(n)).ok())
        .all(|p| within(&p));
    Some(ok)
}

/// What [`Cascade::deliver`] streams into one store: a spool file of `len` bytes, or (no file)
/// the `file.ptr` text.
async fn copy_source(
    file: Option<&std::path::Path>,
    len: u64,
    ptr_text: Option<&[u8]>,
) -> Result<(Box<dyn tokio::io::AsyncRead + Send + Unpin>, u64), StoreError> {
    match file {
        Some(p) => match tokio::fs::File::open(p).await {
            Ok(f) => Ok((Box::new(f), len)),
            Err(e) => Err(StoreError::from_io("spool", "open", p.display(), &e)),
        },
        None => {
            let text = ptr_text.unwrap_or_default().to_vec();
            let len = text.len() as u64;
            Ok((Box::new(std::io::Cursor::new(text)), len))
        }
    }
}

/// The path of `key`'s file in `form` inside `tier`, for reports.
async fn rel_path(search: SearchKind, tier: &Tier, key: &Key, form: Form) -> RelPath {
    match (search, tier.tiering().await) {
        (SearchKind::Flat, _) => RelPath::from_safe([key.name()]),
        (_, Ok(t)) => layout::path_for(key, t, form),
        (_, Err(_)) => layout::path_for(key, Tiering::OneTier, form),
    }
}

/// Verifies that a flat-folder file has the requested key; `Ok(true)` when it has.
pub fn flat_file_matches(path: &std::path::Path, key: &Key) -> bool {
    let pe = if key.name().to_ascii_lowercase().ends_with(".pdb") {
        PeKey::Pdb
    } else {
        PeKey::Image
    };
    match Key::from_file(path, pe) {
        Ok(k) => k.index().eq_ignore_ascii_case(key.index()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod destination_tests {
    use super::*;

    /// Store names (`a`, `b`, … — the last path component) a hit in `tier` of chain `chain`
    /// is copied into, in order, each with whether it gets the expanded form (`!` suffix).
    async fn dests(path: &str, chain: usize, tier: usize, form: Form, uncompress: bool) -> String {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().display().to_string();
        let sp: SymbolPath = path.replace('@', &format!("{r}/")).parse().unwrap();
        let dd = Location::Local {
            path: format!("{r}/dd"),
        };
        let opts = CascadeOptions {
            uncompress,
            spool_dir: Some(root.path().join("spool")),
            ..Default::default()
        };
        let c = Cascade::resolve(&sp, Arc::new(crate::store::open::LocalOnly), &dd, opts).await;
        plan::destinations(&c.shape, chain, tier, form, uncompress)
            .iter()
            .map(|d| (&c.tiers[d.id], d.bottom))
            .map(|(t, bottom)| {
                let n = t.name();
                let n = n.rsplit('/').next().unwrap().to_string();
                if bottom { format!("{n}!") } else { n }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// SymSrv's copy rules ("Advanced SymSrv Use", semantics.md), one row per rule.
    #[tokio::test]
    async fn symsrv_copy_rules() {
        use Form::{Compressed as C, Plain as P};
        let rows: &[(&str, usize, usize, Form, bool, &str)] = &[
            // A hit is copied into every store to its left, nearest first; the bottom-most
            // store gets the expanded form of a compressed hit, intermediates keep it as is.
            ("srv*@a*@b*@c", 0, 2, P, true, "b a!"),
            ("srv*@a*@b*@c", 0, 2, C, true, "b a!"),
            ("srv*@a*@b*@c", 0, 1, P, true, "a!"),
            ("srv*@a*@b*@c", 0, 0, P, true, ""),
            // The bottom-most store holding only the compressed form expands it in place.
            ("srv*@a*@b", 0, 0, C, true, "a!"),
            ("srv*@a*@b", 0, 0, C, false, ""),
            // srv*X alone: no caching of a plain hit; a compressed one goes to the default
            // downstream store.
            ("srv*@x", 0, 0, P, true, ""),
            ("srv*@x", 0, 0, C, true, "dd!"),
            // cache* to the left of an element receives that element's hits, nearest first.
            ("cache*@k;srv*@a*@b", 1, 1, P, true, "a! k!"),
            ("cache*@k1;cache*@k2;srv*@b", 2, 0, C, true, "dd! k2! k1!"),
            // A store named twice is written once.
            ("cache*@a;srv*@a*@b", 1, 1, P, true, "a!"),
        ];
        for (path, chain, tier, form, uncompress, want) in rows {
            let got = dests(path, *chain, *tier, *form, *uncompress).await;
            assert_eq!(
                &got, want,
                "{path} chain {chain} tier {tier} {form:?} uncompress {uncompress}"
            );
        }
    }
}
