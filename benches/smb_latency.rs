//! SMB latency benchmark (issue #15): what a miss and a small hit cost on a link with a long
//! round trip, through the cascade over a warm connection (the HTTP front's case: the
//! connection, session and tree are up, the store's layout is known).
//!
//! Run: `cargo bench --bench smb_latency` (as root, with Debian's samba installed:
//! `./scripts/test` installs it). Env: `BENCH_RUNS` (lookups per row, default 15),
//! `BENCH_DELAY_MS` (one-way delay, default 50).
//!
//! One run starts a real Samba lab server on loopback behind a relay adding the one-way delay
//! in each direction, publishes the real 46 KB `attach_amd64.dll` into its `MainOffice` share,
//! and times, side by side under the same conditions:
//! - a miss probed in every form (plain, compressed, `file.ptr`: SymSrv's order) — the default;
//! - a miss with `UriFilter = 0x10` (plain only: one CREATE), the floor of one round trip;
//! - a small hit (CREATE, READ; CLOSE behind), into a local store on tmpfs-like temp space.
//!
//! Each row's lookups use a fresh key (misses) or a fresh local store (hits), so nothing is
//! answered from memory. The table is printed as Markdown for BENCHMARKS.md.

#[path = "../tests/it/samba.rs"]
mod samba;

#[path = "../tests/it/relay.rs"]
mod relay;

/// What `samba.rs` needs from the test harness.
mod harness {
    pub fn is_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
    }
}

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use symcascade::cascade::{Cascade, CascadeOptions};
use symcascade::key::{Key, PeKey};
use symcascade::layout::{Form, Tiering};
use symcascade::store::open::Transports;
use symcascade::store::smb::{Credentials, SmbClient, SmbConfig};
use symcascade::sympath::{Location, SymbolPath};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A cascade `srv*<local>*\\MainOffice\MainOffice` over `relay_port`, with `uri_filter`.
async fn cascade(local: &Path, relay_port: u16, uri_filter: u32) -> Cascade {
    let mut cfg = SmbConfig {
        default_credentials: Some(Credentials {
            user: samba::USER.into(),
            password: samba::PASSWORD.into(),
            domain: None,
        }),
        ..SmbConfig::default()
    };
    cfg.aliases
        .insert("MainOffice".into(), format!("127.0.0.1:{relay_port}"));
    let opener = Arc::new(Transports {
        smb: SmbClient::new(cfg),
        http: symcascade::store::http::transport_from_env(&Default::default()),
        blackout: Default::default(),
        objects: Default::default(),
    });
    let path: SymbolPath = format!(r"srv*{}*\\MainOffice\MainOffice", local.display())
        .parse()
        .unwrap();
    let dd = Location::Local {
        path: local.display().to_string(),
    };
    let options = CascadeOptions {
        uri_filter,
        spool_dir: Some(local.join("spool")),
        ..CascadeOptions::default()
    };
    Cascade::resolve(&path, opener, &dd, options).await
}

/// Milliseconds of each of `runs` lookups of a fresh missing key.
async fn misses(c: &Cascade, runs: usize, tag: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..runs {
        let key = Key::new(&format!("missing{tag}{i}.pdb"), &format!("{:032X}1", i + 7)).unwrap();
        let t = Instant::now();
        let l = c.lookup(&key).await.unwrap();
        assert!(l.fetched.is_none() && l.is_definitive_miss(), "{l:?}");
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("smb_latency: benchmark");
        return;
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    // Under `cargo test --all-targets` (debug build) a 2-lookup smoke version keeps it tested.
    let full = !cfg!(debug_assertions);
    let runs = env("BENCH_RUNS", if full { 15 } else { 2 }) as usize;
    let delay = Duration::from_millis(env("BENCH_DELAY_MS", 50));
    let samba = samba::Samba::start();
    let dll = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/attach_amd64.dll");
    let key = Key::from_file(&dll, PeKey::Image).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let main = symcascade::store::LocalStore::new(samba.share_dir("MainOffice"));
        symcascade::publish::publish_file(&main, &dll, Tiering::OneTier, Form::Plain)
            .await
            .unwrap();
        let port = relay::relay(samba.addr(), delay, 1_000_000_000).await;
        let tmp = tempfile::tempdir().unwrap();
        let all = cascade(&tmp.path().join("a"), port, 0).await;
        let plain = cascade(&tmp.path().join("p"), port, 0x10).await;
        // Warm both: connection, session, tree, layout detection.
        misses(&all, 1, "warm-a").await;
        misses(&plain, 1, "warm-p").await;
        let rows = [
            (
                "miss, every form probed (default)",
                misses(&all, runs, "a").await,
            ),
            (
                "miss, plain only (UriFilter 0x10): one CREATE",
                misses(&plain, runs, "p").await,
            ),
            (
                "small hit (46 KB DLL)",
                hits(&tmp.path().join("h"), port, &key, runs).await,
            ),
        ];
        let rtt = delay.as_secs_f64() * 2000.0;
        println!("\none-way delay {delay:?} (round trip {rtt:.0} ms), {runs} lookups per row\n");
        println!("| lookup over a warm connection | median ms | min ms | max ms | round trips |");
        println!("| --- | --- | --- | --- | --- |");
        for (label, ms) in rows {
            let (lo, hi) = (
                ms.iter().cloned().fold(f64::INFINITY, f64::min),
                ms.iter().cloned().fold(0.0, f64::max),
            );
            let m = median(ms);
            println!("| {label} | {m:.0} | {lo:.0} | {hi:.0} | {:.1} |", m / rtt);
        }
    });
}

/// Milliseconds of each of `runs` hits of `key`, each into a fresh local store.
async fn hits(root: &Path, port: u16, key: &Key, runs: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let warm = cascade(&root.join("warm"), port, 0).await;
    warm.lookup(key).await.unwrap();
    for i in 0..runs {
        // A fresh local store each time, same connection (the client is per cascade: reuse
        // the warm one's by looking up through it after clearing its local store).
        let local = root.join("warm");
        let _ = std::fs::remove_dir_all(local.join(key.name()));
        let t = Instant::now();
        let l = warm.lookup(key).await.unwrap();
        assert_eq!(l.fetched.as_ref().map(|f| f.tier), Some(1), "run {i}");
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out
}
