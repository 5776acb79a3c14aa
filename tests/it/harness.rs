//! Shared test harness: temp stores built from the real fixtures, real file-system faults
//! (tmpfs for a full disk, read-only bind mounts, an unprivileged user for permission denied),
//! and a fault-injecting store wrapper for failures midway that no real component produces on
//! demand.

#![allow(dead_code)]

use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use symcascade::cascade::{Cascade, CascadeOptions};
use symcascade::key::{Key, PeKey};
use symcascade::layout::{Form, RelPath, Tiering};
use symcascade::store::open::{LocalOnly, StoreOpener};
use symcascade::store::{
    Capabilities, FileMeta, LocalStore, Opened, PutOutcome, Store, StoreDescription, StoreError,
    StoreErrorKind,
};
use symcascade::sympath::{Location, SymbolPath};
use tokio::io::{AsyncRead, ReadBuf};

/// The real MSVC-built fixtures (see tests/fixtures/README.md).
pub const PDB: &str = "attach_amd64.pdb";
pub const DLL: &str = "attach_amd64.dll";
pub const PDB_X86: &str = "run_code_on_dllmain_x86.pdb";
pub const DLL_X86: &str = "run_code_on_dllmain_x86.dll";
pub const ALL: [&str; 4] = [DLL, PDB, DLL_X86, PDB_X86];
/// A 5.7 MB PDB, for transfers big enough to overlap.
pub const BIG_PDB: &str = "inject_dll_amd64.pdb";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn key_of(name: &str) -> Key {
    Key::from_file(&fixture(name), PeKey::Image).unwrap()
}

pub fn pdb_key() -> Key {
    key_of(PDB)
}

pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Three local tiers (local ← branch ← main) plus a default downstream store, in one temp dir.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        for d in ["local", "branch", "main", "default"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Lab { dir }
    }
    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }
    pub fn s(&self, sub: &str) -> String {
        self.path(sub).display().to_string()
    }
    /// `srv*local*branch*main`.
    pub fn three_tier(&self) -> String {
        format!(
            "srv*{}*{}*{}",
            self.s("local"),
            self.s("branch"),
            self.s("main")
        )
    }
    /// Publishes fixtures into a store folder of the lab.
    pub async fn publish(&self, store: &str, names: &[&str], form: Form) {
        let s = LocalStore::new(self.path(store));
        let tiering = if self.path(store).join("index2.txt").exists() {
            Tiering::TwoTier
        } else {
            Tiering::OneTier
        };
        for n in names {
            symcascade::publish::publish_file(&s, &fixture(n), tiering, form)
                .await
                .unwrap();
        }
    }
    pub fn default_downstream(&self) -> Location {
        Location::Local {
            path: self.s("default"),
        }
    }
    pub async fn cascade(&self, sympath: &str) -> Cascade {
        self.cascade_with(sympath, CascadeOptions::default(), Arc::new(LocalOnly))
            .await
    }
    pub async fn cascade_with(
        &self,
        sympath: &str,
        mut options: CascadeOptions,
        opener: Arc<dyn StoreOpener>,
    ) -> Cascade {
        let p: SymbolPath = sympath.parse().unwrap();
        if options.spool_dir.is_none() {
            options.spool_dir = Some(self.path("spool"));
        }
        Cascade::resolve(&p, opener, &self.default_downstream(), options).await
    }
    /// Path of a key's file in a lab store (one-tier).
    pub fn file_in(&self, store: &str, key: &Key, form: Form) -> PathBuf {
        let rel = symcascade::layout::path_for(key, Tiering::OneTier, form);
        rel.components()
            .iter()
            .fold(self.path(store), |p, c| p.join(c))
    }
}

/// Every regular file under `dir` with its length, relative paths (`/`-separated), sorted.
pub fn files_with_len(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                // `/` between components on every platform (tests split and compare them).
                let rel: Vec<_> = p
                    .strip_prefix(dir)
                    .unwrap()
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push((rel.join("/"), len));
            }
        }
    }
    out.sort();
    out
}

/// Every published file under `dir` (not the `000Cascade` admin folder), relative paths.
pub fn published_files(dir: &Path) -> Vec<String> {
    files_with_len(dir)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.starts_with("000Cascade"))
        .collect()
}

/// A real tmpfs of `size` bytes (a genuinely full disk); unmounted on drop.
pub struct Tmpfs(pub PathBuf);
impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at));
        Tmpfs(at.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A real read-only view (bind mount remounted `ro`) of `src` at `at`; unmounted on drop.
pub struct ReadOnlyMount(pub PathBuf);
impl ReadOnlyMount {
    pub fn mount(src: &Path, at: &Path) -> ReadOnlyMount {
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount").arg("--bind").arg(src).arg(at));
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(at));
        ReadOnlyMount(at.to_path_buf())
    }
}
impl ReadOnlyMount {
    /// Makes the mount writable again (a server may hold the folder open, so no unmount).
    pub fn make_writable(&self) {
        run(Command::new("mount")
            .args(["-o", "remount,bind,rw"])
            .arg(&self.0));
    }
}
impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        // Lazy: a server may still hold the folder open.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where a [`FaultyStore`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads deliver this many bytes, then fail (a link dropping midway).
    ReadFailsAfter(u64),
    /// Writes consume this many bytes, then fail (a share going away midway).
    WriteFailsAfter(u64),
}

/// Wraps a store and injects a fault; counts bytes read through it.
#[derive(Debug)]
pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    pub fault: Fault,
    pub bytes_read: Arc<AtomicU64>,
}

struct FailAfter<R> {
    inner: R,
    left: u64,
}
impl<R: AsyncRead + Unpin> AsyncRead for FailAfter<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected fault: connection reset midway",
            )));
        }
        let max = (self.left as usize).min(buf.remaining());
        let mut tmp = vec![0u8; max];
        let mut sub = ReadBuf::new(&mut tmp);
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut sub);
        let n = sub.filled().len();
        buf.put_slice(sub.filled());
        self.left -= n as u64;
        r
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn describe(&self) -> StoreDescription {
        self.inner.describe()
    }
    async fn stat(&self, p: &RelPath) -> Result<Option<FileMeta>, StoreError> {
        self.inner.stat(p).await
    }
    async fn open(&self, p: &RelPath) -> Result<Option<Opened>, StoreError> {
        let Some(mut o) = self.inner.open(p).await? else {
            return Ok(None);
        };
        if let Fault::ReadFailsAfter(n) = self.fault {
            o.reader = Box::new(FailAfter {
                inner: o.reader,
                left: n,
            });
        }
        self.bytes_read
            .fetch_add(o.len.unwrap_or(0), Ordering::Relaxed);
        Ok(Some(o))
    }
    async fn put(
        &self,
        p: &RelPath,
        src: &mut (dyn AsyncRead + Send + Unpin),
        len: Option<u64>,
    ) -> Result<PutOutcome, StoreError> {
        match self.fault {
            Fault::WriteFailsAfter(n) => {
                let mut r = FailAfter {
                    inner: src,
                    left: n,
                };
                self.inner.put(p, &mut r, len).await
            }
            _ => self.inner.put(p, src, len).await,
        }
    }
    async fn capabilities(&self) -> Result<Capabilities, StoreError> {
        self.inner.capabilities().await
    }
}

/// An opener that maps chosen local paths to fault-injecting stores.
#[derive(Debug)]
pub struct FaultOpener {
    pub faults: Vec<(String, Fault)>,
    pub bytes_read: Arc<AtomicU64>,
}

impl StoreOpener for FaultOpener {
    fn open_store(&self, location: &Location) -> Result<Arc<dyn Store>, StoreError> {
        let inner = LocalOnly.open_store(location)?;
        match self.faults.iter().find(|(p, _)| *p == location.to_string()) {
            Some((_, fault)) => Ok(Arc::new(FaultyStore {
                inner,
                fault: *fault,
                bytes_read: self.bytes_read.clone(),
            })),
            None => Ok(inner),
        }
    }
}

pub fn unreachable_kind(e: &StoreErrorKind) -> bool {
    matches!(e, StoreErrorKind::Unreachable | StoreErrorKind::Unsupported)
}

/// Asserts two files have the same bytes.
pub fn same(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a).unwrap_or_else(|e| panic!("{}: {e}", a.display())),
        std::fs::read(b).unwrap(),
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

/// A daemon run in this process, as `symcascade run` and the Windows service run it
/// (`Daemon::start`, then `Daemon::run`), with its front on a listener bound to `127.0.0.1:0`
/// here (the OS picks the port: nothing is probed). Stopped by [`InProcessDaemon::stop`], or
/// when dropped.
pub struct InProcessDaemon {
    /// Where the front listens.
    pub addr: std::net::SocketAddr,
    /// The daemon's bandwidth caps (tests move its clock with `set_clock`).
    pub bandwidth: std::sync::Arc<symcascade::bandwidth::Bandwidth>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), symcascade::daemon::DaemonError>>>,
}

impl InProcessDaemon {
    /// Starts a daemon from config text (which must set `[http] listen`; its address is not
    /// used).
    pub async fn start(config: &str, dd: &Location) -> InProcessDaemon {
        let config = symcascade::config::Config::parse(config).unwrap();
        let daemon = symcascade::daemon::Daemon::start(config, dd).await.unwrap();
        let bandwidth = daemon.setup().bandwidth.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(daemon.run(Some(listener), async {
            let _ = rx.await;
        }));
        InProcessDaemon {
            addr,
            bandwidth,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Asks the daemon to stop and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), symcascade::daemon::DaemonError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for InProcessDaemon {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The branch office of the agent and front tests, one set of helpers for every test file:
/// two real Samba servers (`\\MainOffice\MainOffice` read-only, `\\BranchOfficeA\BranchOfficeA`),
/// agents as real `symcascade run` processes ([`AgentProc`]), the binary ([`bin`]), store
/// paths ([`key_path`]) and polling ([`wait_for`]).
mod office {
    use super::*;
    use crate::samba::{PASSWORD, Samba, USER};
    use std::process::{Child, Stdio};
    use std::time::{Duration, Instant};
    use symcascade::report::Status;

    pub(crate) struct Office {
        pub(crate) main: Samba,
        pub(crate) branch: Samba,
        pub(crate) dir: tempfile::TempDir,
    }

    impl Office {
        pub(crate) fn start() -> Option<Office> {
            let main = Samba::try_start()?;
            let branch = Samba::start();
            Some(Office {
                main,
                branch,
                dir: tempfile::tempdir().unwrap(),
            })
        }

        /// Writes an agent config; `main_host` lets a test route MainOffice through a relay.
        pub(crate) fn config(&self, id: &str, main_host: &str, extra: &str) -> PathBuf {
            let local = self.dir.path().join(format!("local-{id}"));
            let cfg = self.dir.path().join(format!("{id}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    r#"sympath = 'srv*{local}*\\BranchOfficeA\BranchOfficeA*\\MainOffice\MainOffice'
    [smb]
    aliases = {{ MainOffice = "{main_host}", BranchOfficeA = "{branch}" }}
    connect_timeout = "5s"
    request_timeout = "10s"
    [timeouts]
    count = 3
    blackout = "3s"
    [agent]
    id = "{id}"
    rescan_interval = "2s"
    backfill_interval = "1s"
    {extra}
    "#,
                    local = local.display(),
                    branch = self.branch.host(),
                ),
            )
            .unwrap();
            cfg
        }

        pub(crate) fn local(&self, id: &str) -> PathBuf {
            self.dir.path().join(format!("local-{id}"))
        }
    }

    pub(crate) fn bin() -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_symcascade"));
        c.env("SYMCASCADE_SMB_USER", USER)
            .env("SYMCASCADE_SMB_PASSWORD", PASSWORD)
            .env_remove("_NT_SYMBOL_PATH")
            .env_remove("_NT_ALT_SYMBOL_PATH");
        c
    }

    pub(crate) fn cli(cfg: &Path, args: &[&str]) -> String {
        let o = bin().arg("--config").arg(cfg).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub(crate) struct AgentProc {
        pub(crate) child: Child,
        pub(crate) state: PathBuf,
    }

    impl AgentProc {
        pub(crate) fn start(office: &Office, cfg: &Path, id: &str) -> AgentProc {
            AgentProc::start_with_tmp(office, cfg, id, office.dir.path())
        }

        /// Like `start`, with `tmp` as TMPDIR (where spool files go).
        pub(crate) fn start_with_tmp(
            office: &Office,
            cfg: &Path,
            id: &str,
            tmp: &Path,
        ) -> AgentProc {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(office.dir.path().join(format!("{id}.log")))
                .unwrap();
            let child = bin()
                .arg("--config")
                .arg(cfg)
                .arg("run")
                .env("TMPDIR", tmp)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            AgentProc {
                child,
                state: office.local(id).join("000Cascade/agent"),
            }
        }
        pub(crate) fn status(&self) -> Option<Status> {
            serde_json::from_slice(&std::fs::read(self.state.join("status.json")).ok()?).ok()
        }
        pub(crate) fn alive(&mut self) -> bool {
            self.child.try_wait().unwrap().is_none()
        }
        /// This process has published its status (its signal handlers are installed by then).
        pub(crate) fn ready(&self) -> bool {
            self.status().is_some_and(|s| s.pid == self.child.id())
        }
        pub(crate) fn kill9(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            self.child.wait().unwrap()
        }
        #[cfg(unix)]
        pub(crate) fn peak_rss_kib(&self) -> u64 {
            let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
                .unwrap_or_default();
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        }
    }

    impl Drop for AgentProc {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub(crate) async fn wait_for(
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut() -> bool,
    ) -> Duration {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        start.elapsed()
    }

    pub(crate) fn key_path(root: &Path, key: &symcascade::key::Key, form: Form) -> PathBuf {
        let rel = symcascade::layout::path_for(key, Tiering::OneTier, form);
        rel.components()
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
    }

    pub(crate) async fn publish_main(office: &Office, names: &[&str]) {
        let s = symcascade::store::LocalStore::new(office.main.share_dir("MainOffice"));
        for n in names {
            symcascade::publish::publish_file(&s, &fixture(n), Tiering::OneTier, Form::Plain)
                .await
                .unwrap();
        }
    }
}
pub(crate) use office::*;
