//! Issue #17: companion prefetch through the in-process daemon's front, and `[bandwidth]`
//! config errors naming their key.

use crate::harness::*;
use std::time::{Duration, Instant};
use symcascade::layout::{Form, Tiering};

fn config(lab: &Lab, extra: &str) -> String {
    format!(
        "sympath = '{}'\n[agent]\nid = \"WAN-1\"\nrescan_interval = \"1s\"\nstate_dir = '{}'\n{extra}\n[http]\nlisten = \"127.0.0.1:0\"\n",
        lab.three_tier(),
        lab.s("state"),
    )
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::get(url).await.unwrap();
    let code = r.status().as_u16();
    (code, r.bytes().await.unwrap().to_vec())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics:\n{text}"))
}

async fn metrics(d: &InProcessDaemon) -> String {
    String::from_utf8(get(&d.url("/metrics")).await.1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_brings_its_pdb_and_the_pdb_request_is_a_warm_hit() {
    let lab = Lab::new();
    lab.publish("main", &[DLL, PDB], Form::Plain).await;
    let d = InProcessDaemon::start(&config(&lab, ""), &lab.default_downstream()).await;
    let (dll, pdb) = (key_of(DLL), key_of(PDB));
    let rel = |k| symcascade::layout::path_for(k, Tiering::OneTier, Form::Plain);
    let (code, body) = get(&d.url(&format!("/{}", rel(&dll)))).await;
    assert_eq!(code, 200);
    assert_eq!(body, std::fs::read(fixture(DLL)).unwrap());
    // No client asked for the PDB: the front fetched it into its store.
    let local = lab.file_in("local", &pdb, Form::Plain);
    let start = Instant::now();
    loop {
        let m = metrics(&d).await;
        if local.exists() && metric(&m, "symcascade_companions_fetched_total") == 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no companion: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    same(&local, &fixture(PDB));
    let before = metrics(&d).await;
    let hit = "symcascade_http_requests_total{outcome=\"local_hit\"}";
    let warm_before = if before.contains(hit) {
        metric(&before, hit)
    } else {
        0.0
    };
    let lookups = metric(&before, "symcascade_lookups_total");
    assert_eq!(lookups, 2.0, "the image's lookup and its companion's");
    // WAN accounting: both files crossed from main once.
    let wan = metric(&before, "symcascade_wan_read_bytes_total") as u64;
    let sizes = std::fs::metadata(fixture(DLL)).unwrap().len()
        + std::fs::metadata(fixture(PDB)).unwrap().len();
    assert_eq!(wan, sizes, "{before}");
    // The debugger's PDB request that follows is a warm hit: no lookup, counted as asked.
    let (code, body) = get(&d.url(&format!("/{}", rel(&pdb)))).await;
    assert_eq!(code, 200);
    assert_eq!(body, std::fs::read(fixture(PDB)).unwrap());
    let after = metrics(&d).await;
    assert_eq!(metric(&after, "symcascade_lookups_total"), lookups);
    assert_eq!(metric(&after, "symcascade_companions_asked_total"), 1.0);
    assert_eq!(
        metric(
            &after,
            "symcascade_http_requests_total{outcome=\"local_hit\"}"
        ),
        warm_before + 1.0,
        "{after}"
    );
    d.stop().await.unwrap();
}

#[tokio::test]
async fn companions_off_fetches_only_what_was_asked() {
    let lab = Lab::new();
    lab.publish("main", &[DLL, PDB], Form::Plain).await;
    let cfg = config(&lab, "companions = false");
    let d = InProcessDaemon::start(&cfg, &lab.default_downstream()).await;
    let rel = symcascade::layout::path_for(&key_of(DLL), Tiering::OneTier, Form::Plain);
    assert_eq!(get(&d.url(&format!("/{rel}"))).await.0, 200);
    let start = Instant::now();
    while metric(&metrics(&d).await, "symcascade_lookups_total") < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The image's lookup is over (counted after its copies): a companion would start now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = metrics(&d).await;
    assert_eq!(metric(&m, "symcascade_lookups_total"), 1.0, "{m}");
    assert!(!lab.file_in("local", &key_of(PDB), Form::Plain).exists());
    d.stop().await.unwrap();
}

#[test]
fn bandwidth_errors_name_the_key() {
    let parse = |t: &str| symcascade::config::Config::parse(t).unwrap_err();
    let e = parse("[bandwidth]\nbackground = \"4 Mbps\"");
    assert_eq!(e.key(), Some("bandwidth.background"), "{e}");
    let e = parse(
        "[bandwidth]\nwindows = [{ days = \"Mon-Fry\", hours = \"08:00-18:00\", background = \"2Mbit/s\" }]",
    );
    assert_eq!(e.key(), Some("bandwidth.windows[0].days"), "{e}");
    assert!(e.to_string().contains("Fry"), "{e}");
    let ok = symcascade::config::Config::parse(
        "[bandwidth]\nbackground = \"4Mbit/s\"\ninteractive = \"500KiB/s\"\nwindows = [{ days = \"Mon-Fri\", hours = \"08:00-18:00\", background = \"2Mbit/s\" }]",
    );
    assert!(ok.is_ok(), "{ok:?}");
}
