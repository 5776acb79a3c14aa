//! The status page, `status.json`, `symcascade status` and `/metrics` of a real `symcascade
//! run` (the agent working a queue on a branch folder, and the HTTP front), checked by
//! independent readers: headless Chromium renders `/status` (its DOM text is checked and a
//! screenshot is kept in `target/test-artifacts/status.png`), and Python's
//! `prometheus_client` parses `/metrics` (the parser the announced content type calls for).
//! Without Chromium or `prometheus_client` a test is skipped with a reason, and fails when
//! `CI=true` (scripts/test installs Debian's `chromium` and `python3-prometheus-client`).

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use symcascade::layout::{Form, Tiering};
use symcascade::queue::Record;

/// The agent's id in these tests.
const ID: &str = "DESK-1";

/// A `symcascade run` over local folders `<dir>/local ← <dir>/branch ← <dir>/main`, with the
/// queue on the branch folder and the HTTP front on a free port.
struct Office {
    dir: tempfile::TempDir,
    port: u16,
    cfg: PathBuf,
    child: Child,
}

impl Office {
    /// Publishes the fixtures into main, queues `requests` (key, requester, age in seconds)
    /// on the branch, and starts the agent.
    async fn start(requests: &[(symcascade::key::Key, &str, u64)]) -> Office {
        let dir = tempfile::tempdir().unwrap();
        let s = symcascade::store::LocalStore::new(dir.path().join("main"));
        for n in [PDB, DLL] {
            symcascade::publish::publish_file(&s, &fixture(n), Tiering::OneTier, Form::Plain)
                .await
                .unwrap();
        }
        let queue = dir.path().join("branch/000Cascade/requests");
        std::fs::create_dir_all(&queue).unwrap();
        for (key, requester, age) in requests {
            let mut r = Record::new(key, requester).unwrap();
            r.requested -= age;
            std::fs::write(queue.join(r.file_name()), r.to_bytes()).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.path().join("agent.toml");
        // No companion prefetch: the queued DLL's PDB is the one the test's debugger fetches
        // through the front, and the front would then wait for the agent's copy of it.
        std::fs::write(
            &cfg,
            format!(
                "sympath = 'srv*{d}/local*{d}/branch*{d}/main'\n[agent]\nid = \"{ID}\"\n\
                 rescan_interval = \"1s\"\nstate_dir = '{d}/state'\ncompanions = false\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = bin()
            .arg("--config")
            .arg(&cfg)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for("the HTTP front to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        Office {
            dir,
            port,
            cfg,
            child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET `path` with curl: status code, headers (lower-cased), body.
    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let body = self.dir.path().join("body");
        let hdr = self.dir.path().join("headers");
        let o = Command::new("curl")
            .args(["-s", "--max-time", "60", "-o"])
            .arg(&body)
            .arg("-D")
            .arg(&hdr)
            .args(["-w", "%{http_code}"])
            .arg(self.url(path))
            .output()
            .expect("curl runs");
        let code = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let headers = std::fs::read_to_string(&hdr)
            .unwrap_or_default()
            .to_ascii_lowercase();
        (code, headers, std::fs::read(&body).unwrap_or_default())
    }

    fn status_json(&self) -> serde_json::Value {
        let (code, _, body) = self.get("/status.json");
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for Office {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key no store has.
fn missing_key() -> symcascade::key::Key {
    symcascade::key::Key::new("nowhere.pdb", "0123456789ABCDEF0123456789ABCDEF1").unwrap()
}

/// `tool` on PATH, or why not: a failure under CI, else a loud skip.
fn require(tool: &str, why: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !is_ci(),
            "CI=true but `{tool}` is not installed: scripts/test installs it ({why})"
        );
        eprintln!("SKIPPING: `{tool}` is not installed ({why}); run ./scripts/test");
    }
    found
}

/// Where test artefacts are kept: `<target dir>/test-artifacts`.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let d = target.join("test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Headless Chromium with `args` then `url`; its stdout.
fn chromium(exe: &Path, profile: &Path, args: &[&str], url: &str) -> String {
    let o = Command::new("timeout")
        .arg("120")
        .arg(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        o.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The text of an HTML document as a browser lays it out, roughly: `<style>` dropped, a
/// space for block tags (none for inline ones), the page's entities undone, white space
/// collapsed.
fn dom_text(html: &str) -> String {
    let html = match (html.find("<style>"), html.find("</style>")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &html[..a], &html[b..]),
        _ => html.to_string(),
    };
    let mut out = String::new();
    let mut rest = html.as_str();
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('>').map_or(rest.len(), |c| open + c + 1);
        let tag = rest[open + 1..close.saturating_sub(1)].trim_start_matches('/');
        let name = tag.split([' ', '>']).next().unwrap_or("");
        if !["strong", "code", "span", "a"].contains(&name) {
            out.push(' ');
        }
        rest = &rest[close..];
    }
    out.push_str(rest);
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The request path of `key`'s plain file.
fn file_path(key: &symcascade::key::Key) -> String {
    format!(
        "/{}",
        symcascade::layout::path_for(key, Tiering::OneTier, Form::Plain)
    )
}

fn len_of(name: &str) -> u64 {
    std::fs::metadata(fixture(name)).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_shows_the_verdict_the_queue_and_wan_bytes_saved() {
    let Some(chromium_exe) = require("chromium", "headless Chromium renders /status") else {
        return;
    };
    let (dll, other) = (key_of(DLL), key_of(PDB_X86));
    let office = Office::start(&[
        (dll.clone(), ID, 30),
        (missing_key(), ID, 600),
        (other.clone(), "DESK-0042", 7200),
    ])
    .await;
    // A debugger fetches the PDB through the front: over the WAN once (the body is streamed
    // while the copies are written), then, once the lookup is over, a warm hit.
    let pdb = pdb_key();
    for i in 0..2 {
        let (code, _, body) = office.get(&file_path(&pdb));
        assert_eq!(code, 200);
        assert_eq!(body.len() as u64, len_of(PDB));
        if i == 0 {
            wait_for("the front's transfer", Duration::from_secs(30), || {
                let doc = office.status_json();
                let recent = doc["recent"].as_array().cloned().unwrap_or_default();
                recent.iter().any(|t| t["by"] == "front")
            })
            .await;
        }
    }
    // The agent replicated the DLL, cached the miss, and leaves DESK-0042's request queued.
    let mut doc = serde_json::Value::Null;
    wait_for(
        "the agent's queue in /status.json",
        Duration::from_secs(30),
        || {
            doc = office.status_json();
            let q = &doc["agent"]["queue"];
            q.as_array().is_some_and(|q| q.len() == 2)
                && q[1]["state"] == "miss_cached"
                && doc["recent"].as_array().is_some_and(|r| r.len() == 2)
        },
    )
    .await;
    assert_eq!(doc["health"]["verdict"], "OK", "{doc}");
    let q = &doc["agent"]["queue"];
    assert_eq!(q[0]["key"], other.to_string());
    assert_eq!(q[0]["requester"], "DESK-0042");
    assert_eq!(q[0]["state"], "queued");
    assert_eq!(q[1]["key"], missing_key().to_string());
    assert_eq!(q[1]["last_error"], "no store has it");
    assert!(q[1]["next_try"].as_u64().is_some(), "{doc}");
    assert!(doc["agent"]["queue_oldest_age_secs"].as_u64().unwrap() >= 7200);
    // One list, newest first: the agent's DLL and the front's PDB, each saying who did it.
    let recent = doc["recent"].as_array().unwrap();
    let by = |key: &symcascade::key::Key| {
        recent
            .iter()
            .find(|t| t["key"] == key.to_string())
            .map(|t| t["by"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(by(&dll).as_deref(), Some("agent DESK-1"), "{doc}");
    assert_eq!(by(&pdb).as_deref(), Some("front"), "{doc}");
    assert!(recent[0]["at"].as_u64() >= recent[1]["at"].as_u64());
    // The WAN (main) was crossed once per file; the local copies and the warm hit were not.
    let t = &doc["traffic"];
    assert_eq!(
        t["wan_bytes_read"].as_u64(),
        Some(len_of(PDB) + len_of(DLL))
    );
    let saved = len_of(DLL) + 2 * len_of(PDB);
    assert_eq!(t["wan_bytes_saved"].as_u64(), Some(saved), "{t}");
    let hits: Vec<u64> = (0..3)
        .map(|i| t["tiers"][i]["hits"].as_u64().unwrap())
        .collect();
    assert_eq!(hits, [1, 0, 2], "{t}");
    assert_eq!(t["tiers"][2]["wan"], true);
    assert_eq!(
        t["tiers"][2]["hit_ratio"].as_f64(),
        Some(0.5),
        "2 of 4 answers"
    );

    // The page refreshes itself unless asked not to.
    let page = String::from_utf8(office.get("/status").2).unwrap();
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    let still = String::from_utf8(office.get("/status?refresh=0").2).unwrap();
    assert!(!still.contains("http-equiv") && still.contains("auto-refresh off"));

    // What a browser shows: the DOM Chromium built.
    let profile = tempfile::tempdir().unwrap();
    let dom = chromium(
        &chromium_exe,
        profile.path(),
        &["--dump-dom"],
        &office.url("/status?refresh=0"),
    );
    let text = dom_text(&dom);
    for want in [
        "OK: every store answers".to_string(),
        format!("Queue of agent {ID}: 2 request(s)"),
        format!("{other} DESK-0042 2 h queued"),
        format!("{} {ID} 10 min", missing_key()),
        "miss cached no store has it (next try in ".to_string(),
        format!("{} WAN bytes saved", symcascade::units::bytes(saved)),
        format!("{dll} agent {ID} for {ID}"),
        format!("{pdb} front"),
    ] {
        assert!(text.contains(&want), "{want:?} not in the page: {text}");
    }
    // The screenshot an admin would see, kept as a test artefact.
    let png = artifacts().join("status.png");
    let _ = std::fs::remove_file(&png);
    chromium(
        &chromium_exe,
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1600",
        ],
        &office.url("/status"),
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(width, 1280);
    assert!(bytes.len() > 20_000, "a rendered page, not a blank one");
    eprintln!("screenshot of /status: {}", png.display());

    // `symcascade status` prints the same queue and WAN numbers.
    let o = bin()
        .arg("--config")
        .arg(&office.cfg)
        .arg("status")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for want in [
        "DESK-0042",
        "miss cached",
        "by agent DESK-1",
        "by front",
        "WAN bytes saved:",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
}

/// Parses `/metrics` with Python's `prometheus_client` (the OpenMetrics parser for an
/// OpenMetrics content type, else the Prometheus text parser): family name → (type, samples
/// as `[name, labels, value]`).
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus
ctype, text = sys.argv[1], sys.stdin.read()
parse = openmetrics if ctype.startswith("application/openmetrics-text") else prometheus
print(json.dumps({f.name: [f.type, [[s.name, s.labels, s.value] for s in f.samples]]
                  for f in parse(text)}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_with_prometheus_client_and_have_the_queue_and_wan_families() {
    // Debian's python3 (where scripts/test installs the parser), not a pyenv shim first on PATH.
    let debian = PathBuf::from("/usr/bin/python3");
    let python = if debian.is_file() {
        debian
    } else {
        let Some(python) = require("python3", "Python parses /metrics") else {
            return;
        };
        python
    };
    let has_parser = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_parser {
        assert!(
            !is_ci(),
            "CI=true but Python's prometheus_client is missing: scripts/test installs \
             Debian's python3-prometheus-client"
        );
        eprintln!("SKIPPING: Python's prometheus_client is not installed; run ./scripts/test");
        return;
    }
    let office = Office::start(&[(missing_key(), ID, 600)]).await;
    wait_for("the miss in the queue", Duration::from_secs(30), || {
        office.status_json()["agent"]["queue"][0]["state"] == "miss_cached"
    })
    .await;
    // The agent's first store check (at start, bounded by 10 s) feeds the store gauges.
    wait_for(
        "the agent's first store check",
        Duration::from_secs(30),
        || {
            office
                .get("/metrics")
                .2
                .windows(19)
                .any(|w| w == b"symcascade_store_up")
        },
    )
    .await;
    let (code, headers, body) = office.get("/metrics");
    assert_eq!(code, 200);
    let ctype = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let mut child = Command::new(&python)
        .args(["-c", PARSE, &ctype])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &body).unwrap();
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        o.status.success(),
        "the parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    let families: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let family = |name: &str, kind: &str| {
        let f = &families[name];
        assert_eq!(f[0], kind, "{name} in {text}");
        f[1].as_array().unwrap().clone()
    };
    let value = |samples: &[serde_json::Value]| samples[0][2].as_f64().unwrap();
    let age = family("symcascade_queue_oldest_request_age_seconds", "gauge");
    assert!(value(&age) >= 600.0, "{age:?}");
    assert_eq!(value(&family("symcascade_queue_depth", "gauge")), 1.0);
    assert_eq!(value(&family("symcascade_backfills_pending", "gauge")), 0.0);
    let states = family("symcascade_queue_requests", "gauge");
    let miss_cached = states
        .iter()
        .find(|s| s[1]["state"] == "miss_cached")
        .unwrap();
    assert_eq!(miss_cached[2], 1.0);
    family("symcascade_wan_saved_bytes", "counter");
    family("symcascade_wan_read_bytes", "counter");
    family("symcascade_reads_in_flight", "gauge");
    assert_eq!(family("symcascade_store_up", "gauge").len(), 3);
    family("symcascade_store_free_bytes", "gauge");
    let build = family("symcascade_build_info", "gauge");
    assert_eq!(build[0][1]["version"], env!("CARGO_PKG_VERSION"));
}
