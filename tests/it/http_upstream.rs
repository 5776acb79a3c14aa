//! HTTP upstream stores end to end: the real `symcascade` binary fetches from a loopback symbol
//! server (`httpd::Upstream`) into a local store, directly and through a loopback proxy that
//! demands basic auth (`httpd::Proxy`), with soft-404 answers, 503s, a stalled server and a
//! slow-but-steady one.

use crate::cli::{bin, out};
use crate::harness::*;
use crate::httpd::{Fault, Proxy, Upstream, rel_path};
use std::process::Command;
use std::time::{Duration, Instant};
use symcascade::layout::Form;

/// Variables that would route or authenticate requests behind the test's back.
const PROXY_VARS: [&str; 11] = [
    "_NT_SYMBOL_PROXY",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SYMCASCADE_PROXY_USER",
    "SYMCASCADE_PROXY_PASSWORD",
];

/// The binary without the proxy variables of the environment.
fn hermetic() -> Command {
    let mut c = bin();
    for v in PROXY_VARS {
        c.env_remove(v);
    }
    c
}

/// A lab whose `main` store holds the fixture PDB (compressed or not), served over HTTP.
struct Site {
    lab: Lab,
    up: Upstream,
}

impl Site {
    fn new(compress: bool) -> Site {
        let lab = Lab::new();
        let mut add = bin();
        add.args(["add", "--store"]).arg(lab.path("main"));
        if compress {
            add.arg("--compress");
        }
        let (code, _, err) = out(add.arg(fixture(PDB)));
        assert_eq!(code, 0, "{err}");
        let up = Upstream::start(lab.path("main"));
        Site { lab, up }
    }

    /// `symcascade get` for the fixture PDB over `srv*<local>*<upstream>`, with `config` (TOML)
    /// as `--config`, hermetic proxy environment plus `env`.
    fn get(&self, config: &str, env: &[(&str, &str)]) -> (i32, String, String) {
        let cfg = self.lab.path("symcascade.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut c = self.command(&cfg);
        for (k, v) in env {
            c.env(k, v);
        }
        out(c.arg(fixture(DLL)))
    }

    fn command(&self, cfg: &std::path::Path) -> Command {
        let mut c = hermetic();
        c.arg("--config")
            .arg(cfg)
            .args(["get", "--sympath"])
            .arg(format!("srv*{}*{}", self.lab.s("local"), self.up.url()));
        c
    }

    fn local_file(&self) -> std::path::PathBuf {
        self.lab.file_in("local", &pdb_key(), Form::Plain)
    }

    fn assert_fetched(&self, (code, stdout, err): (i32, String, String)) {
        assert_eq!(code, 0, "{stdout}{err}");
        assert_eq!(std::path::PathBuf::from(stdout.trim()), self.local_file());
        same(&self.local_file(), &fixture(PDB));
    }

    fn assert_nothing_stored(&self) {
        assert_eq!(
            published_files(&self.lab.path("local")),
            Vec::<String>::new()
        );
    }
}

#[test]
fn fetches_plain_and_compressed_files_byte_identical() {
    let plain = rel_path(&pdb_key(), Form::Plain);
    let site = Site::new(false);
    site.assert_fetched(site.get("", &[]));
    assert_eq!(site.up.hits(&plain), 1);
    assert_eq!(site.up.hits("index2.txt"), 1);
    // SymSrv's User-Agent by default.
    let ua = site.up.seen()[0].user_agent.clone();
    assert_eq!(ua.as_deref(), Some("Microsoft-Symbol-Server/10.0.0.0"));
    // A second lookup is answered by the local store: the upstream is not asked again.
    let before = site.up.total_hits();
    site.assert_fetched(site.get("", &[]));
    assert_eq!(site.up.total_hits(), before);

    // Compressed on the server: the plain name misses, the `.pd_` is fetched and expanded
    // into the bottom-most store.
    let site = Site::new(true);
    site.assert_fetched(site.get("[http_client]\nuser_agent = \"symcascade-test/1\"\n", &[]));
    assert_eq!(site.up.hits(&plain), 1);
    assert_eq!(site.up.hits(&rel_path(&pdb_key(), Form::Compressed)), 1);
    assert!(
        site.up
            .seen()
            .iter()
            .all(|s| s.user_agent.as_deref() == Some("symcascade-test/1"))
    );
}

#[test]
fn servers_that_reject_head_are_asked_with_get() {
    let site = Site::new(false);
    site.up.set_fault(Fault::NoHead);
    site.assert_fetched(site.get("", &[]));
    let index2: Vec<String> = site
        .up
        .seen()
        .into_iter()
        .filter(|s| s.target == "/store/index2.txt")
        .map(|s| s.method)
        .collect();
    assert_eq!(index2, ["HEAD", "GET"]);
}

#[test]
fn file_ptr_over_http_is_read() {
    // A `file.ptr` with `MSG:` is SymSrv's "not here": fetched over HTTP, read, not followed.
    let site = Site::new(false);
    let plain = site.lab.file_in("main", &pdb_key(), Form::Plain);
    std::fs::remove_file(&plain).unwrap();
    std::fs::write(
        plain.with_file_name("file.ptr"),
        "MSG: withdrawn by the build team",
    )
    .unwrap();
    let (code, stdout, err) = site.get("", &[]);
    assert_eq!((code, stdout.trim()), (1, "not found"), "{err}");
    assert_eq!(site.up.hits(&rel_path(&pdb_key(), Form::FilePtr)), 1);
    site.assert_nothing_stored();
}

#[test]
fn soft_404_answers_are_misses_and_store_nothing() {
    let site = Site::new(false);
    for fault in [Fault::HtmlPage, Fault::Empty, Fault::EmptyChunked] {
        site.up.set_fault(fault);
        let before = site.up.hits(&rel_path(&pdb_key(), Form::Plain));
        let (code, stdout, err) = site.get("", &[]);
        assert_eq!((code, stdout.trim()), (1, "not found"), "{fault:?}: {err}");
        // A miss, not a failure: nothing skipped.
        assert!(!err.contains("skipped"), "{fault:?}: {err}");
        assert_eq!(
            site.up.hits(&rel_path(&pdb_key(), Form::Plain)),
            before + 1,
            "{fault:?}"
        );
        site.assert_nothing_stored();
    }
    site.up.set_fault(Fault::None);
    site.assert_fetched(site.get("", &[]));
}

#[test]
fn a_transfer_broken_midway_stores_nothing() {
    let site = Site::new(false);
    site.up.set_fault(Fault::CutAfter(100_000));
    let (code, _, err) = site.get("", &[]);
    assert_eq!(code, 3, "{err}"); // not found, a store could not be searched
    assert!(err.contains("truncated"), "{err}");
    site.assert_nothing_stored();
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let plain = rel_path(&pdb_key(), Form::Plain);
    let site = Site::new(false);
    site.up.fail_next(&plain, 2, 503);
    let t = Instant::now();
    site.assert_fetched(site.get("", &[]));
    assert_eq!(site.up.hits(&plain), 3);
    // Default backoff: 250 ms, then 500 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(750),
        "{:?}",
        t.elapsed()
    );

    // More failures than retries: the store is skipped with the status, nothing stored.
    let site = Site::new(false);
    site.up.fail_next(&plain, 5, 503);
    let (code, _, err) = site.get(
        "[http_client]\nretries = 1\nretry_backoff = \"10ms\"\n",
        &[],
    );
    assert_eq!(code, 3, "{err}"); // not found, a store could not be searched
    assert!(err.contains("503"), "{err}");
    assert_eq!(site.up.hits(&plain), 2);
    site.assert_nothing_stored();
}

#[test]
fn read_timeout_bounds_a_stalled_server_but_not_a_slow_transfer() {
    let site = Site::new(false);
    let cfg = "[http_client]\nread_timeout = \"1s\"\nretries = 0\n";
    site.up.set_fault(Fault::Delay(Duration::from_secs(5)));
    let t = Instant::now();
    let (code, stdout, err) = site.get(cfg, &[]);
    let took = t.elapsed();
    assert_eq!((code, stdout.trim()), (3, "not found"), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    site.assert_nothing_stored();

    // A body that keeps flowing (a chunk every 300 ms) but takes longer than the read timeout
    // in total is not cut off: the timeout is an idle timeout.
    let len = std::fs::metadata(fixture(PDB)).unwrap().len() as usize;
    site.up.set_fault(Fault::Throttle {
        chunk: len / 6 + 1,
        pause: Duration::from_millis(300),
    });
    let t = Instant::now();
    site.assert_fetched(site.get(cfg, &[]));
    assert!(
        t.elapsed() > Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

/// The "done when": an HTTP upstream reached through a loopback proxy that demands
/// basic auth works with `_NT_SYMBOL_PROXY` set and the credentials from the config file.
#[test]
fn nt_symbol_proxy_with_basic_auth() {
    let site = Site::new(false);
    let proxy = Proxy::start("symuser", "pr0xy-pass");
    let nt = [("_NT_SYMBOL_PROXY", proxy.host_port())];
    let nt: Vec<(&str, &str)> = nt.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Without credentials: a clear failure naming the proxy and the 407; nothing stored.
    let (code, stdout, err) = site.get("", &nt);
    assert_eq!((code, stdout.trim()), (3, "not found"), "{err}");
    assert!(
        err.contains("407") && err.contains(&proxy.host_port()) && err.contains("proxy_user"),
        "{err}"
    );
    assert!(!proxy.rejected().is_empty());
    assert!(proxy.forwarded().is_empty());
    assert_eq!(site.up.total_hits(), 0, "the proxy let a request through");
    site.assert_nothing_stored();

    // Wrong password: refused the same way.
    let (code, _, err) = site.get(
        "[http_client]\nproxy_user = \"symuser\"\nproxy_password = \"wrong\"\n",
        &nt,
    );
    assert_eq!(code, 3);
    assert!(err.contains("407"), "{err}");
    assert!(!err.contains("wrong"), "password printed: {err}");

    // With the credentials from the config file: fetched through the proxy.
    let (code, stdout, err) = site.get(
        "[http_client]\nproxy_user = \"symuser\"\nproxy_password = \"pr0xy-pass\"\n",
        &nt,
    );
    site.assert_fetched((code, stdout, err));
    let pdb_url = format!("{}/{}", site.up.url(), rel_path(&pdb_key(), Form::Plain));
    let forwarded: Vec<String> = proxy.forwarded().into_iter().map(|s| s.target).collect();
    assert!(forwarded.contains(&pdb_url), "{forwarded:?}");
    assert_eq!(site.up.total_hits(), forwarded.len());

    // The same credentials from the environment work too; `proxy = "direct"` bypasses the
    // proxy entirely.
    std::fs::remove_file(site.local_file()).unwrap();
    let env = [
        nt[0],
        ("SYMCASCADE_PROXY_USER", "symuser"),
        ("SYMCASCADE_PROXY_PASSWORD", "pr0xy-pass"),
    ];
    let before = proxy.forwarded().len();
    site.assert_fetched(site.get("", &env));
    assert!(proxy.forwarded().len() > before);
    std::fs::remove_file(site.local_file()).unwrap();
    let before = proxy.forwarded().len() + proxy.rejected().len();
    site.assert_fetched(site.get("[http_client]\nproxy = \"direct\"\n", &nt));
    assert_eq!(proxy.forwarded().len() + proxy.rejected().len(), before);
}

/// An HTTPS store behind the proxy: the CONNECT tunnel refused with 407 is an authentication
/// failure with the same hint, asked once (not retried), and the store is not contacted again.
#[test]
fn https_store_behind_a_proxy_without_credentials_fails_once() {
    let lab = Lab::new();
    let proxy = Proxy::start("symuser", "pr0xy-pass");
    let (code, stdout, err) = out(hermetic()
        .env("_NT_SYMBOL_PROXY", proxy.host_port())
        .args(["get", "--sympath"])
        .arg(format!("srv*{}*https://127.0.0.1:9/store", lab.s("local")))
        .arg(fixture(DLL)));
    assert_eq!((code, stdout.trim()), (3, "not found"), "{err}");
    assert!(
        err.contains("407") && err.contains(&proxy.host_port()) && err.contains("proxy_user"),
        "{err}"
    );
    let rejected = proxy.rejected();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        (rejected[0].method.as_str(), rejected[0].target.as_str()),
        ("CONNECT", "127.0.0.1:9")
    );
    assert_eq!(published_files(&lab.path("local")), Vec::<String>::new());
}
