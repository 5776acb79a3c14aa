//! Issue #17: companion prefetch through the in-process daemon's front, `[bandwidth]` caps
//! measured on a 20 Mbit/s relay (background at its cap, interactive gets the rest, a window
//! changes the rate mid-transfer), and `[bandwidth]` config errors naming their key.

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

/// An Office agent config for an in-process daemon (which reads no credentials from the
/// environment): `extra`, a front on port 0, the lab's credentials for both shares.
fn daemon_config(office: &Office, id: &str, main_host: &str, extra: &str) -> std::path::PathBuf {
    let (user, pass) = (crate::samba::USER, crate::samba::PASSWORD);
    let extra = format!(
        "{extra}[http]\nlisten = \"127.0.0.1:0\"\n\
         [smb.credentials.MainOffice]\nuser = \"{user}\"\npassword = \"{pass}\"\n\
         [smb.credentials.BranchOfficeA]\nuser = \"{user}\"\npassword = \"{pass}\"\n"
    );
    office.config(id, main_host, &extra)
}

/// Bits per second `meter` delivered over `secs` seconds from now.
#[cfg(unix)]
async fn measured_bps(meter: &crate::relay::Meter, secs: f64) -> f64 {
    let (t0, d0) = (Instant::now(), meter.delivered());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    (meter.delivered() - d0) as f64 * 8.0 / t0.elapsed().as_secs_f64()
}

#[cfg(unix)]
fn within(bps: f64, want: f64, what: &str) {
    eprintln!("{what}: {:.2} Mbit/s (cap {:.1})", bps / 1e6, want / 1e6);
    assert!(
        (bps - want).abs() <= want * 0.10,
        "{what}: {:.2} Mbit/s, not {:.1} ±10%",
        bps / 1e6,
        want / 1e6
    );
}

/// Issue #17's "done when" for caps: a 20 Mbit/s link (the relay), `background = 4Mbit/s`: a
/// 32 MiB queued transfer runs at 4 Mbit/s ±10% while an interactive front request for another
/// file gets the rest of the link; a schedule window that starts during the transfer (the
/// daemon's clock moved) changes its rate at once; the file arrives whole.
// Linux-only: rates within ±10% over seconds are measured on the Linux build; under Wine the
// emulated timers add jitter unrelated to the code (the unit tests of `bandwidth` run on both).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_runs_at_its_cap_interactive_gets_the_rest_and_a_window_changes_the_rate() {
    let Some(office) = Office::start() else {
        return;
    };
    publish_main(&office, &[BIG_PDB]).await;
    // The 32 MiB file: the real PDB padded after its last MSF block (same key).
    let mut big = std::fs::read(fixture(PDB)).unwrap();
    big.extend(
        (0..(32u32 << 20) - big.len() as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8),
    );
    let src = key_path(
        &office.main.share_dir("MainOffice"),
        &pdb_key(),
        Form::Plain,
    );
    std::fs::create_dir_all(src.parent().unwrap()).unwrap();
    std::fs::write(&src, &big).unwrap();
    let meter =
        crate::relay::metered(office.main.addr(), Duration::from_millis(10), 20_000_000).await;
    let extra = "[bandwidth]\nbackground = \"4Mbit/s\"\nwindows = [\n  { hours = \"03:00-04:00\", background = \"8Mbit/s\" },\n  { hours = \"05:00-06:00\", background = \"unlimited\" },\n]\n";
    let cfg = daemon_config(&office, "bw1", &format!("127.0.0.1:{}", meter.port), extra);
    // READs of 64 KiB: the relay counts bytes as they cross, and a 1 MiB READ crosses at link
    // speed in one burst, which over seconds quantizes the measured rate by ±20% (the cap
    // holds on average with any size).
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[smb]\n",
        "[smb]\nchunk_size = 65536\n",
        1,
    );
    std::fs::write(&cfg, &text).unwrap();
    let dd = symcascade::sympath::Location::Local {
        path: office.dir.path().join("dd").display().to_string(),
    };
    let d = InProcessDaemon::start(&text, &dd).await;
    // The daemon's clock: noon (no window), later inside each window.
    let clock = std::sync::Arc::new(std::sync::Mutex::new(
        chrono::NaiveDate::from_ymd_opt(2026, 12, 2)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap(),
    ));
    let c = clock.clone();
    d.bandwidth
        .set_clock(std::sync::Arc::new(move || *c.lock().unwrap()));
    let set = |h: u32| {
        *clock.lock().unwrap() = chrono::NaiveDate::from_ymd_opt(2026, 12, 2)
            .unwrap()
            .and_hms_opt(h, 30, 0)
            .unwrap();
    };
    wait_for("the noon caps", Duration::from_secs(10), || {
        d.bandwidth.status().background_cap_bps == Some(4_000_000)
    })
    .await;
    let key = pdb_key();
    cli(&cfg, &["request", key.name(), key.index()]);
    wait_for("the transfer to start", Duration::from_secs(20), || {
        meter.delivered() > 1 << 20
    })
    .await;
    // The SMB reader keeps up to 4 READs ahead of what is consumed: that lead crosses at link
    // speed first; the cap holds from then on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    within(measured_bps(&meter, 6.0).await, 4e6, "background alone");
    // An interactive request for another file, while the background transfer runs.
    let url = d.url(&format!(
        "/{}",
        symcascade::layout::path_for(&key_of(BIG_PDB), Tiering::OneTier, Form::Plain)
    ));
    let t = Instant::now();
    let (code, body) = get(&url).await;
    let took = t.elapsed().as_secs_f64();
    assert_eq!(code, 200);
    assert_eq!(body, std::fs::read(fixture(BIG_PDB)).unwrap());
    let interactive = body.len() as f64 * 8.0 / took;
    eprintln!("interactive: {:.2} Mbit/s", interactive / 1e6);
    assert!(
        interactive >= 12e6,
        "the rest of the link: {:.2} Mbit/s",
        interactive / 1e6
    );
    // A window starts mid-transfer: the rate follows within a tick.
    set(3);
    wait_for("the window's cap", Duration::from_secs(5), || {
        d.bandwidth.status().background_cap_bps == Some(8_000_000)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    within(
        measured_bps(&meter, 5.0).await,
        8e6,
        "background in the 03:00 window",
    );
    set(5);
    let local = key_path(&office.local("bw1"), &key, Form::Plain);
    wait_for("the whole file", Duration::from_secs(60), || {
        std::fs::read(&local).is_ok_and(|b| b == big)
    })
    .await;
    d.stop().await.unwrap();
}

/// The queue side of companion prefetch: a record for an image brings its PDB into the local
/// store (and the branch) without anyone asking, as a record of the same requester.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_image_brings_its_pdb_through_the_queue() {
    let lab = Lab::new();
    lab.publish("main", &[DLL, PDB], Form::Plain).await;
    let text = config(&lab, "");
    let cfg = lab.path("agent.toml");
    std::fs::write(&cfg, &text).unwrap();
    let d = InProcessDaemon::start(&text, &lab.default_downstream()).await;
    let (dll, pdb) = (key_of(DLL), key_of(PDB));
    cli(&cfg, &["request", dll.name(), dll.index()]);
    let local = lab.file_in("local", &pdb, Form::Plain);
    wait_for("the companion PDB", Duration::from_secs(30), || {
        local.exists()
    })
    .await;
    same(&local, &fixture(PDB));
    same(&lab.file_in("branch", &pdb, Form::Plain), &fixture(PDB));
    let m = metrics(&d).await;
    assert_eq!(
        metric(&m, "symcascade_companions_fetched_total"),
        1.0,
        "{m}"
    );
    // Both records are done and gone.
    let requests = lab.path("branch").join("000Cascade/requests");
    wait_for("the records to go", Duration::from_secs(10), || {
        std::fs::read_dir(&requests).map_or(0, |d| d.count()) == 0
    })
    .await;
    d.stop().await.unwrap();
}

/// A debugger's front request for the 5.7 MB PDB while the agent of the same in-process daemon
/// pulls it for a queue record, MainOffice behind a `bits_per_sec` relay; `extra` goes into the
/// config. Returns the answer's status and body, and the bytes MainOffice delivered in all.
async fn ask_during_the_agents_transfer(
    id: &str,
    bits_per_sec: u64,
    extra: &str,
) -> Option<(u16, Vec<u8>, u64)> {
    let office = Office::start()?;
    publish_main(&office, &[BIG_PDB]).await;
    let meter =
        crate::relay::metered(office.main.addr(), Duration::from_millis(10), bits_per_sec).await;
    let cfg = daemon_config(&office, id, &format!("127.0.0.1:{}", meter.port), extra);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let dd = symcascade::sympath::Location::Local {
        path: office.dir.path().join("dd").display().to_string(),
    };
    let d = InProcessDaemon::start(&text, &dd).await;
    let key = key_of(BIG_PDB);
    cli(&cfg, &["request", key.name(), key.index()]);
    wait_for("the agent's transfer", Duration::from_secs(20), || {
        meter.delivered() > 1 << 18
    })
    .await;
    let url = d.url(&format!(
        "/{}",
        symcascade::layout::path_for(&key, Tiering::OneTier, Form::Plain)
    ));
    let (code, body) = get(&url).await;
    let read = meter.delivered();
    eprintln!("MainOffice delivered {read} bytes");
    d.stop().await.unwrap();
    Some((code, body, read))
}

/// Each byte crosses the WAN once, also between the two sides of one process: a debugger asks
/// the front for a file the agent is pulling for a queue record; the front waits for that copy
/// and serves it from the local store instead of reading MainOffice a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_waits_for_the_agents_transfer_instead_of_reading_the_wan_again() {
    // 8 Mbit/s: the 5.7 MB PDB takes ~6 s, well inside the client's 25 s.
    let Some((code, body, read)) = ask_during_the_agents_transfer("dedupe1", 8_000_000, "").await
    else {
        return;
    };
    assert_eq!(code, 200);
    assert_eq!(body, std::fs::read(fixture(BIG_PDB)).unwrap());
    let size = std::fs::metadata(fixture(BIG_PDB)).unwrap().len();
    assert!(read < size + size / 20, "read once: {read} for {size}");
}

/// ...and is not served at the background cap: with `background = "1Mbit/s"` the agent's copy
/// of the 5.7 MB PDB would take ~46 s, past the client's 25 s; the waiting client promotes the
/// agent's transfer to the interactive class (BITS: foreground transfers are unaffected), gets
/// 200, and MainOffice is still read once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debugger_waiting_for_a_capped_transfer_promotes_it_and_the_wan_is_read_once() {
    let extra = "[bandwidth]\nbackground = \"1Mbit/s\"\n";
    let Some((code, body, read)) =
        ask_during_the_agents_transfer("capped1", 20_000_000, extra).await
    else {
        return;
    };
    assert_eq!(code, 200, "served, not told to come back");
    assert_eq!(body, std::fs::read(fixture(BIG_PDB)).unwrap());
    let size = std::fs::metadata(fixture(BIG_PDB)).unwrap().len();
    assert!(read < size + size / 20, "read once: {read} for {size}");
}
