//! `Noisy`: SymSrv's `!sym noisy` as a store wrapper. Every `stat` and `open` the cascade makes
//! through a wrapped store becomes one [`Probe`] — store, full path, form (plain, compressed,
//! `file.ptr`, `index2.txt`, …), result (hit, miss, error) and milliseconds — logged as one line
//! (target [`PROBE_TARGET`]: at `info` when noisy, else at `trace`) and, when a [`ProbeLog`] is
//! given, recorded for reports (`get --json` lists them as `"probes"`).
//!
//! Data flow: [`NoisyOpener`] wraps the process's [`StoreOpener`], so every store the cascade
//! resolves (including the folders `file.ptr` targets open) is a [`Noisy`] around the
//! transport's store (itself around its blackout wrapper): the cascade is not touched. Writes
//! (`put`, `replace`) are not probes and pass through unrecorded.
//!
//! Source: the debugger's `!sym noisy` prints one `SYMSRV:` line per path tried and its outcome
//! (Microsoft, "Symbol path for Windows debuggers" / "!sym").

use super::open::StoreOpener;
use super::{
    Capabilities, FileMeta, Opened, PutOutcome, Store, StoreDescription, StoreError, Transport,
};
use crate::layout::{self, RelPath};
use crate::sympath::Location;
use async_trait::async_trait;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::AsyncRead;

/// The `tracing` target of probe lines: `--noisy` enables it at `info`.
pub const PROBE_TARGET: &str = "symcascade::probe";

/// What a probed path holds, from its place in the SymStore layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProbeForm {
    /// The file itself (`<name>/<index>/<name>`, or `<name>` in a flat folder).
    #[serde(rename = "plain")]
    Plain,
    /// A compressed file (`<name>/<index>/<nam_>`).
    #[serde(rename = "compressed")]
    Compressed,
    /// A `file.ptr` pointer.
    #[serde(rename = "file.ptr")]
    FilePtr,
    /// The two-tier marker in a store's root.
    #[serde(rename = "index2.txt")]
    Index2,
    /// The SymStore marker SymSrv autodetects plain folders by.
    #[serde(rename = "pingme.txt")]
    Pingme,
    /// The marker asking for `file.ptr` copies.
    #[serde(rename = "wantsptr.txt")]
    Wantsptr,
    /// Connecting to the store (no path).
    #[serde(rename = "connect")]
    Connect,
    /// Any other path.
    #[serde(rename = "other")]
    Other,
}

impl ProbeForm {
    /// The form of `path` in a store: root markers by name, `file.ptr`, a key's file under its
    /// compressed name, else plain.
    pub fn of(path: &RelPath) -> ProbeForm {
        let parts = path.components();
        let file = path.file_name();
        if parts.len() == 1 {
            return match file.to_ascii_lowercase().as_str() {
                layout::INDEX2_TXT => ProbeForm::Index2,
                layout::PINGME_TXT => ProbeForm::Pingme,
                layout::WANTSPTR_TXT => ProbeForm::Wantsptr,
                f if f.ends_with('_') => ProbeForm::Compressed,
                _ => ProbeForm::Plain,
            };
        }
        if file.eq_ignore_ascii_case(layout::FILE_PTR) {
            return ProbeForm::FilePtr;
        }
        // `<name>/<index>/<file>`: the key's name is two folders up.
        match parts.len().checked_sub(3).map(|i| parts[i].as_str()) {
            Some(name) if name.eq_ignore_ascii_case(file) => ProbeForm::Plain,
            Some(name) if layout::compressed_name(name).eq_ignore_ascii_case(file) => {
                ProbeForm::Compressed
            }
            _ => ProbeForm::Other,
        }
    }

    /// The name shown in log lines and reports (`plain`, `file.ptr`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeForm::Plain => "plain",
            ProbeForm::Compressed => "compressed",
            ProbeForm::FilePtr => "file.ptr",
            ProbeForm::Index2 => "index2.txt",
            ProbeForm::Pingme => "pingme.txt",
            ProbeForm::Wantsptr => "wantsptr.txt",
            ProbeForm::Connect => "connect",
            ProbeForm::Other => "other",
        }
    }
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeResult {
    /// The path exists.
    Hit,
    /// The store answered that the path does not exist.
    Miss,
    /// The store could not answer (the cascade skips it).
    Error,
}

impl ProbeResult {
    /// `hit`, `miss` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeResult::Hit => "hit",
            ProbeResult::Miss => "miss",
            ProbeResult::Error => "error",
        }
    }
}

/// One path tried in one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// The store's location as written (e.g. `\\MainOffice\Symbols`).
    pub store: String,
    /// How the store is reached (serialized `local`, `smb`, `http`).
    pub transport: Transport,
    /// `stat`, `open` or `connect`.
    pub op: &'static str,
    /// The full path tried: the store's location and the path inside it, joined with the
    /// store's separator (`\` for shares and Windows folders, `/` for URLs and POSIX folders).
    pub path: String,
    /// What the path holds.
    pub form: ProbeForm,
    /// Hit, miss or error.
    pub result: ProbeResult,
    /// Time the store took to answer, in milliseconds.
    pub ms: u64,
    /// The error, for `result = error` (never holds a secret: see [`StoreError`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Probes recorded by the stores of one process, in the order made; shared by every
/// [`Noisy`] wrapper of an opener.
#[derive(Debug, Clone, Default)]
pub struct ProbeLog(Arc<Mutex<Vec<Probe>>>);

impl ProbeLog {
    /// Takes every probe recorded so far (the log is empty afterwards).
    pub fn take(&self) -> Vec<Probe> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, p: Probe) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(p);
    }
}

/// Where probes go: log lines (at `info` when `noisy`, else `trace`) and optionally a
/// [`ProbeLog`].
#[derive(Debug, Clone, Default)]
pub struct ProbeSink {
    /// Log every probe at `info` (`--noisy`, `[log] noisy = true`) rather than `trace`.
    pub noisy: bool,
    /// Also record probes here.
    pub record: Option<ProbeLog>,
}

impl ProbeSink {
    fn emit(&self, p: Probe) {
        macro_rules! line {
            ($lvl:ident) => {
                match &p.error {
                    None => tracing::$lvl!(target: PROBE_TARGET, store = %p.store, path = %p.path,
                        form = %p.form.as_str(), result = %p.result.as_str(), ms = p.ms, "probe"),
                    Some(e) => tracing::$lvl!(target: PROBE_TARGET, store = %p.store,
                        path = %p.path, form = %p.form.as_str(), result = %p.result.as_str(),
                        ms = p.ms, error = %e, "probe"),
                }
            };
        }
        if self.noisy {
            line!(info);
        } else {
            line!(trace);
        }
        if let Some(r) = &self.record {
            r.push(p);
        }
    }
}

/// The full path of `rel` in a store at `location`, with the store's separator.
pub fn display_path(location: &str, transport: Transport, rel: &RelPath) -> String {
    let sep =
        if transport == Transport::Http || (location.contains('/') && !location.contains('\\')) {
            '/'
        } else {
            '\\'
        };
    let mut s = location.trim_end_matches(['/', '\\']).to_string();
    for c in rel.components() {
        s.push(sep);
        s.push_str(c);
    }
    s
}

/// A store whose `stat` and `open` calls are reported as [`Probe`]s.
#[derive(Debug)]
pub struct Noisy {
    inner: Arc<dyn Store>,
    sink: ProbeSink,
}

impl Noisy {
    /// Wraps `inner`; probes go to `sink`.
    pub fn new(inner: Arc<dyn Store>, sink: ProbeSink) -> Noisy {
        Noisy { inner, sink }
    }

    fn report<T>(
        &self,
        op: &'static str,
        path: &RelPath,
        start: Instant,
        r: &Result<Option<T>, StoreError>,
    ) {
        let d = self.inner.describe();
        let (result, error) = match r {
            Ok(Some(_)) => (ProbeResult::Hit, None),
            Ok(None) => (ProbeResult::Miss, None),
            Err(e) => (
                ProbeResult::Error,
                Some(format!("{}: {}", e.kind, e.detail)),
            ),
        };
        self.sink.emit(Probe {
            path: display_path(&d.location, d.transport, path),
            store: d.location,
            transport: d.transport,
            op,
            form: ProbeForm::of(path),
            result,
            ms: start.elapsed().as_millis() as u64,
            error,
        });
    }
}

#[async_trait]
impl Store for Noisy {
    fn describe(&self) -> StoreDescription {
        self.inner.describe()
    }
    async fn stat(&self, p: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        let start = Instant::now();
        let r = self.inner.stat(p).await;
        self.report("stat", p, start, &r);
        r
    }
    async fn open(&self, p: &RelPath) -> Result<Option<Opened>, StoreError> {
        let start = Instant::now();
        let r = self.inner.open(p).await;
        self.report("open", p, start, &r);
        r
    }
    async fn open_from(
        &self,
        p: &RelPath,
        offset: u64,
        version: &str,
    ) -> Result<Option<Opened>, StoreError> {
        let start = Instant::now();
        let r = self.inner.open_from(p, offset, version).await;
        self.report("open", p, start, &r);
        r
    }
    async fn put(
        &self,
        p: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.put(p, src, len).await
    }
    async fn replace(
        &self,
        p: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.replace(p, src, len).await
    }
    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        self.inner.capabilities().await
    }
}

/// An opener whose stores are [`Noisy`]; a location no transport can open is reported as a
/// failed `connect` probe (the cascade then skips it, as before).
#[derive(Debug)]
pub struct NoisyOpener {
    inner: Arc<dyn StoreOpener>,
    sink: ProbeSink,
}

impl NoisyOpener {
    /// Wraps `inner`; every store it opens reports its probes to `sink`.
    pub fn wrap(inner: Arc<dyn StoreOpener>, sink: ProbeSink) -> Arc<dyn StoreOpener> {
        Arc::new(NoisyOpener { inner, sink })
    }
}

impl StoreOpener for NoisyOpener {
    fn open_store(&self, location: &Location) -> Result<Arc<dyn Store>, StoreError> {
        match self.inner.open_store(location) {
            Ok(s) => Ok(Arc::new(Noisy::new(s, self.sink.clone()))),
            Err(e) => {
                let transport = match location {
                    Location::Local { .. } => Transport::Local,
                    Location::Smb { .. } => Transport::Smb,
                    Location::Http { .. } => Transport::Http,
                    Location::Object {
                        service: crate::sympath::ObjectService::S3,
                        ..
                    } => Transport::S3,
                    Location::Object { .. } => Transport::Azure,
                };
                self.sink.emit(Probe {
                    store: location.to_string(),
                    transport,
                    op: "connect",
                    path: location.to_string(),
                    form: ProbeForm::Connect,
                    result: ProbeResult::Error,
                    ms: 0,
                    error: Some(format!("{}: {}", e.kind, e.detail)),
                });
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use crate::layout::{Form, Tiering};
    use crate::store::LocalStore;
    use crate::store::open::LocalOnly;

    fn key() -> Key {
        Key::new("ntdll.pdb", "1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21").unwrap()
    }

    #[test]
    fn forms_follow_the_layout() {
        for tiering in [Tiering::OneTier, Tiering::TwoTier] {
            let of = |f| ProbeForm::of(&layout::path_for(&key(), tiering, f));
            assert_eq!(of(Form::Plain), ProbeForm::Plain);
            assert_eq!(of(Form::Compressed), ProbeForm::Compressed);
            assert_eq!(of(Form::FilePtr), ProbeForm::FilePtr);
        }
        let root = |n| ProbeForm::of(&RelPath::from_safe([n]));
        assert_eq!(root("index2.txt"), ProbeForm::Index2);
        assert_eq!(root("PingMe.txt"), ProbeForm::Pingme);
        assert_eq!(root("wantsptr.txt"), ProbeForm::Wantsptr);
        assert_eq!(root("ntdll.pd_"), ProbeForm::Compressed);
        assert_eq!(root("ntdll.pdb"), ProbeForm::Plain);
        let odd = RelPath::from_safe(["000Cascade", "requests", "x.json"]);
        assert_eq!(ProbeForm::of(&odd), ProbeForm::Other);
        let v = serde_json::to_value(ProbeForm::FilePtr).unwrap();
        assert_eq!(v, "file.ptr");
    }

    #[test]
    fn paths_use_the_store_separator() {
        let rel = RelPath::from_safe(["a.pdb", "IDX", "a.pdb"]);
        assert_eq!(
            display_path(r"\\Main\Symbols", Transport::Smb, &rel),
            r"\\Main\Symbols\a.pdb\IDX\a.pdb"
        );
        assert_eq!(
            display_path("https://h/sym/", Transport::Http, &rel),
            "https://h/sym/a.pdb/IDX/a.pdb"
        );
        assert_eq!(
            display_path("/var/sym", Transport::Local, &rel),
            "/var/sym/a.pdb/IDX/a.pdb"
        );
        assert_eq!(
            display_path(r"C:\Symbols", Transport::Local, &rel),
            r"C:\Symbols\a.pdb\IDX\a.pdb"
        );
    }

    #[tokio::test]
    async fn every_stat_and_open_is_recorded_with_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let plain = layout::path_for(&k, Tiering::OneTier, Form::Plain);
        let on_disk = dir.path().join("ntdll.pdb").join(k.index());
        std::fs::create_dir_all(&on_disk).unwrap();
        std::fs::write(on_disk.join("ntdll.pdb"), b"x").unwrap();
        let log = ProbeLog::default();
        let sink = ProbeSink {
            noisy: true,
            record: Some(log.clone()),
        };
        let s = Noisy::new(Arc::new(LocalStore::new(dir.path())), sink.clone());
        assert!(s.open(&plain).await.unwrap().is_some());
        let ptr = layout::path_for(&k, Tiering::OneTier, Form::FilePtr);
        assert!(s.stat(&ptr).await.unwrap().is_none());
        let probes = log.take();
        assert_eq!(probes.len(), 2);
        assert_eq!(
            (probes[0].op, probes[0].form, probes[0].result),
            ("open", ProbeForm::Plain, ProbeResult::Hit)
        );
        assert_eq!(
            (probes[1].op, probes[1].form, probes[1].result),
            ("stat", ProbeForm::FilePtr, ProbeResult::Miss)
        );
        assert!(probes[1].path.ends_with("file.ptr"), "{:?}", probes[1]);
        assert!(log.take().is_empty(), "take empties the log");
        // A location no transport opens is a failed `connect` probe.
        let opener = NoisyOpener::wrap(Arc::new(LocalOnly), sink);
        let smb: Location = "\\\\Main\\Symbols".parse().unwrap();
        assert!(opener.open_store(&smb).is_err());
        let probes = log.take();
        assert_eq!(probes.len(), 1);
        assert_eq!(
            (probes[0].op, probes[0].result),
            ("connect", ProbeResult::Error)
        );
        assert!(probes[0].error.as_deref().unwrap().contains("unsupported"));
    }
}
