//! The Samba lab: a real `smbd` (Debian `samba`) started per test as a standalone server on
//! 127.0.0.1 and a port below the ephemeral range (see `next_port`), with config, passdb and all
//! state in a temp dir (on Windows, under Wine: through scripts/samba-broker, see `broker`).
//!
//! Shares: `MainOffice` (read-only), `BranchOfficeA` (read-write), `BranchOfficeARO` (the same
//! folder, read-only), `Forbidden` (the test user is not a valid user). The SMB user `symuser`
//! maps to the local `root` account through a `username map`, so nothing touches /etc/passwd.
//! When `CI=true` and smbd cannot start, tests fail rather than skip.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "symuser";
pub const PASSWORD: &str = "Sym-Pa55word!";
pub const SMBD: &str = "/usr/sbin/smbd";

pub struct Samba {
    pub dir: tempfile::TempDir,
    pub port: u16,
    #[cfg(unix)]
    child: Option<Child>,
    #[cfg(windows)]
    running: bool,
}

/// Where labs are created: the temp dir, or on Windows the broker's root (a Linux folder, seen
/// through Wine's `Z:` drive).
fn lab_root() -> PathBuf {
    #[cfg(windows)]
    {
        let root = std::env::var("SYMCASCADE_SAMBA_ROOT")
            .expect("SYMCASCADE_SAMBA_ROOT (set by scripts/test with the broker)");
        PathBuf::from(format!("Z:{}", root.replace('/', "\\")))
    }
    #[cfg(unix)]
    std::env::temp_dir()
}

/// A path as Linux sees it (on Windows: `Z:\tmp\x` is `/tmp/x`).
pub fn linux_path(p: &Path) -> String {
    let s = p.display().to_string();
    if cfg!(windows) {
        let s = s.strip_prefix(r"\\?\").unwrap_or(&s);
        let s = s
            .strip_prefix("Z:")
            .or_else(|| s.strip_prefix("z:"))
            .unwrap_or_else(|| panic!("{s} is not on Wine's Z: drive"));
        s.replace('\\', "/")
    } else {
        s
    }
}

/// The Windows test binary's way to run smbd: scripts/samba-broker, a Linux process started by
/// scripts/test (address in SYMCASCADE_SAMBA_BROKER).
#[cfg(windows)]
mod broker {
    use std::io::{BufRead, BufReader, Write};

    pub fn addr() -> Option<String> {
        std::env::var("SYMCASCADE_SAMBA_BROKER").ok()
    }

    /// Sends one request; returns the answer after `ok` (panics on `err`).
    pub fn ask(request: &str) -> String {
        let a = addr().expect("SYMCASCADE_SAMBA_BROKER");
        let mut s =
            std::net::TcpStream::connect(&a).unwrap_or_else(|e| panic!("Samba broker at {a}: {e}"));
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        let line = line.trim_end();
        match line.strip_prefix("ok") {
            Some(rest) => rest.trim().to_string(),
            None => panic!("Samba broker: {request:?} -> {line}"),
        }
    }
}

/// Ports for smbd, which cannot be told to bind port 0 and report the port: below the OS's
/// ephemeral range (32768-60999 on Linux), so no socket the OS hands out can take one between
/// our choice and smbd's bind; spread by process id, so concurrent test runs rarely meet. A
/// port already taken makes smbd exit, and the next one is tried (see `start`). Under Wine the
/// sockets are Linux's too (smbd runs on Linux, the tests' client through Wine), so the same
/// range holds; the process id is Wine's.
fn next_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 20;
    20_000 + (std::process::id() % 600) as u16 * 20 + n
}

impl Samba {
    /// Starts a server, or returns `None` (outside CI only) when smbd is not installed.
    pub fn try_start() -> Option<Samba> {
        #[cfg(windows)]
        if broker::addr().is_none() {
            assert!(
                !crate::harness::is_ci(),
                "CI=true but SYMCASCADE_SAMBA_BROKER is not set: scripts/test runs \
                 scripts/samba-broker for the Windows pass"
            );
            eprintln!("skipping: no Samba broker (SYMCASCADE_SAMBA_BROKER; run ./scripts/test)");
            return None;
        }
        #[cfg(unix)]
        if !Path::new(SMBD).exists() {
            assert!(
                !crate::harness::is_ci(),
                "CI=true but {SMBD} is missing: scripts/test installs Debian's samba"
            );
            eprintln!("skipping: {SMBD} not installed (run ./scripts/test)");
            return None;
        }
        Some(Samba::start())
    }

    pub fn start() -> Samba {
        let dir = tempfile::Builder::new()
            .prefix("samba-lab.")
            .tempdir_in(lab_root())
            .unwrap();
        let d = dir.path();
        for sub in [
            "private",
            "lock",
            "state",
            "cache",
            "pid",
            "ncalrpc",
            "MainOffice",
            "BranchOfficeA",
            "Forbidden",
            "Encrypted",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("usermap"), format!("root = {USER}\n")).unwrap();
        let mut s = Samba {
            dir,
            port: next_port(),
            #[cfg(unix)]
            child: None,
            #[cfg(windows)]
            running: false,
        };
        s.write_conf();
        s.add_password();
        for _ in 0..40 {
            // A port that answers before our smbd starts is another server's (ports repeat
            // after 20 labs, and a long test keeps its labs): never wait on it, as a slow
            // smbd's failed bind could go unseen while that server answers for it.
            if TcpStream::connect(s.addr()).is_err() && s.try_run_smbd().is_ok() {
                return s;
            }
            // Taken by another process: the next port.
            s.port = next_port();
            s.write_conf();
        }
        s.run_smbd();
        s
    }

    #[cfg(windows)]
    fn add_password(&self) {
        broker::ask(&format!("passwd {} {PASSWORD}", self.linux_dir()));
    }

    #[cfg(unix)]
    fn add_password(&self) {
        let out = Command::new("smbpasswd")
            .args(["-c"])
            .arg(self.conf())
            .args(["-s", "-a", "root"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{PASSWORD}\n{PASSWORD}\n").as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "smbpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The lab folder as smbd (a Linux process) sees it: on Windows, the Linux path behind
    /// Wine's `Z:` drive.
    fn linux_dir(&self) -> String {
        linux_path(self.dir.path())
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("smb.conf")
    }

    fn write_conf(&self) {
        let d = self.linux_dir();
        let conf = format!(
            r#"[global]
server role = standalone server
smb ports = {port}
interfaces = 127.0.0.1
bind interfaces only = yes
disable netbios = yes
private dir = {d}/private
lock directory = {d}/lock
state directory = {d}/state
cache directory = {d}/cache
pid directory = {d}/pid
ncalrpc dir = {d}/ncalrpc
log file = {d}/log.%m
log level = 1
passdb backend = tdbsam:{d}/passdb.tdb
username map = {d}/usermap
map to guest = never
load printers = no
printcap name = /dev/null
disable spoolss = yes
server min protocol = SMB2_10

[MainOffice]
path = {d}/MainOffice
read only = yes
valid users = root

[BranchOfficeA]
path = {d}/BranchOfficeA
read only = no
valid users = root

[BranchOfficeARO]
path = {d}/BranchOfficeA
read only = yes
valid users = root

[Forbidden]
path = {d}/Forbidden
read only = no
valid users = nobody

[Encrypted]
path = {d}/Encrypted
read only = no
valid users = root
smb encrypt = required
"#,
            port = self.port
        );
        std::fs::write(self.conf(), conf).unwrap();
    }

    fn run_smbd(&mut self) {
        if let Err(log) = self.try_run_smbd() {
            panic!("smbd did not start on port {}: {log}", self.port);
        }
    }

    /// Starts smbd (through the broker, which runs it on Linux) and waits until it listens;
    /// `Err` with its log when it exits first (its port is taken) or does not listen within
    /// 15 s.
    #[cfg(windows)]
    fn try_run_smbd(&mut self) -> Result<(), String> {
        broker::ask(&format!("start {}", self.linux_dir()));
        self.running = true;
        let alive = || broker::ask(&format!("alive {}", self.linux_dir())) == "1";
        self.wait_listening(alive)
    }

    /// Starts smbd and waits until it listens; `Err` with its log when it exits first (its
    /// port is taken) or does not listen within 15 s.
    #[cfg(unix)]
    fn try_run_smbd(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("smbd.out")).unwrap();
        // No --no-process-group: with it smbd kills its whole process group (the test runner)
        // on SIGTERM.
        let mut child = Command::new(SMBD)
            .args(["--foreground", "--debug-stdout", "-s"])
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {SMBD}: {e}"));
        let r = self.wait_listening(|| child.try_wait().unwrap().is_none());
        if child.try_wait().unwrap().is_none() {
            self.child = Some(child);
        }
        r
    }

    /// Waits until the port answers while `alive` (our smbd runs): `Err` with smbd's log when
    /// it exits first or does not listen within 15 s.
    fn wait_listening(&self, mut alive: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let log = || std::fs::read_to_string(self.dir.path().join("smbd.out")).unwrap_or_default();
        loop {
            // A listener on the port is ours only while our smbd lives: one that failed to
            // bind exits at once, so look again a moment after the port answers.
            if !alive() {
                return Err(log());
            }
            if TcpStream::connect(self.addr()).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
                return if alive() { Ok(()) } else { Err(log()) };
            }
            if Instant::now() > deadline {
                return Err(log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `127.0.0.1:PORT`, the host part of UNC paths.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `\\127.0.0.1:PORT\share`.
    pub fn unc(&self, share: &str) -> String {
        format!("\\\\127.0.0.1:{}\\{share}", self.port)
    }

    /// The folder behind a share, on the server's disk.
    pub fn share_dir(&self, share: &str) -> PathBuf {
        let share = if share == "BranchOfficeARO" {
            "BranchOfficeA"
        } else {
            share
        };
        self.dir.path().join(share)
    }

    /// Stops smbd (through the broker, which ends it by its PID) and waits for the port to
    /// close.
    #[cfg(windows)]
    pub fn stop(&mut self) {
        if std::mem::take(&mut self.running) {
            broker::ask(&format!("stop {}", self.linux_dir()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(self.addr()).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops smbd (by its own PID) and waits for the port to close.
    #[cfg(unix)]
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
            // smbd forks a child per connection; they exit when their parent's socket closes.
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(self.addr()).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts smbd again on the same port and state.
    pub fn restart(&mut self) {
        self.stop();
        self.run_smbd();
    }

    pub fn credentials(&self) -> symcascade::store::smb::Credentials {
        symcascade::store::smb::Credentials {
            user: USER.into(),
            password: PASSWORD.into(),
            domain: None,
        }
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        self.stop();
        // Per-connection smbd children of this server.
        #[cfg(unix)]
        let _ = Command::new("pkill")
            .args(["-f", &format!("{}", self.conf().display())])
            .status();
    }
}
