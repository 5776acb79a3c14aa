//! SMB transfer benchmark: `symcascade get` (release build) against `smbclient get`, on the same
//! file from the same Samba lab share, in one run, on loopback and on a slow link.
//!
//! Run: `cargo bench --bench smb_transfer` (as root, with Debian's samba, smbclient and time
//! installed: `./scripts/test` installs them). Env: `BENCH_RUNS` (default 3), `BENCH_MIB`
//! (loopback size, default 256), `BENCH_SLOW_MIB` (slow-link size, default 32).
//!
//! The slow link is a loopback TCP relay that adds one-way delay (20 ms each way) and caps the
//! rate (20 Mbit/s) in both directions. Wall time and peak RSS come from GNU time for each
//! process; the table is printed as Markdown for BENCHMARKS.md.

#[path = "../tests/it/samba.rs"]
mod samba;

#[path = "../tests/it/relay.rs"]
mod relay;
use relay::relay;

/// What `samba.rs` needs from the test harness.
mod harness {
    pub fn is_ci() -> bool {
        std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
    }
}

use std::path::Path;
use std::process::Command;
use std::time::Duration;

const INDEX: &str = "0123456789ABCDEF0123456789ABCDEF1";

/// Runs `cmd` under GNU time; returns (seconds, peak RSS KiB).
fn timed(cmd: &mut Command) -> (f64, u64) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut t = Command::new("/usr/bin/time");
    t.args(["-f", "%e %M", "-o"])
        .arg(out.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let o = t.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let s = std::fs::read_to_string(out.path()).unwrap();
    let mut it = s.split_whitespace();
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    label: String,
    ours: Vec<(f64, u64)>,
    theirs: Vec<(f64, u64)>,
}

fn run_pair(
    our_config: Option<&Path>,
    port: u16,
    name: &str,
    size: u64,
    runs: usize,
    label: &str,
) -> Row {
    let work = tempfile::tempdir().unwrap();
    let mut row = Row {
        label: label.to_string(),
        ours: vec![],
        theirs: vec![],
    };
    for i in 0..runs {
        // Alternate who goes first so neither always gets the warmer cache.
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for ours in order {
            let local = work.path().join("local");
            let _ = std::fs::remove_dir_all(&local);
            let dest = work.path().join("smbclient.out");
            let _ = std::fs::remove_file(&dest);
            if ours {
                let sympath = format!("srv*{}*\\\\127.0.0.1:{port}\\MainOffice", local.display());
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_symcascade"));
                if let Some(c) = our_config {
                    cmd.arg("--config").arg(c);
                }
                let r = timed(
                    cmd.args(["get", "--sympath", &sympath, name, INDEX])
                        .env("SYMCASCADE_SMB_USER", samba::USER)
                        .env("SYMCASCADE_SMB_PASSWORD", samba::PASSWORD)
                        .env("TMPDIR", work.path()),
                );
                // The key's canonical spelling of the index (case depends on the file kind).
                let key = symcascade::key::Key::new(name, INDEX).unwrap();
                let got = local.join(name).join(key.index()).join(name);
                assert_eq!(std::fs::metadata(&got).unwrap().len(), size);
                row.ours.push(r);
            } else {
                let r = timed(Command::new("smbclient").args([
                    "-p",
                    &port.to_string(),
                    "//127.0.0.1/MainOffice",
                    "-U",
                    &format!("{}%{}", samba::USER, samba::PASSWORD),
                    "-c",
                    &format!("get {name}\\{INDEX}\\{name} {}", dest.display()),
                ]));
                assert_eq!(std::fs::metadata(&dest).unwrap().len(), size);
                row.theirs.push(r);
            }
        }
    }
    row
}

fn make_file(dir: &Path, name: &str, mib: u64) -> u64 {
    let d = dir.join(name).join(INDEX);
    std::fs::create_dir_all(&d).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(d.join(name)).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..mib {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::io::Write::write_all(&mut f, &block).unwrap();
    }
    mib << 20
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("smb_transfer: benchmark");
        return;
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    // `cargo bench` builds this in release; `cargo test --all-targets` in debug: then run a
    // small smoke version so the benchmark itself stays tested without taking minutes.
    let full = !cfg!(debug_assertions);
    let runs = env("BENCH_RUNS", if full { 3 } else { 1 }) as usize;
    let big = env("BENCH_MIB", if full { 256 } else { 4 });
    let slow = env("BENCH_SLOW_MIB", if full { 32 } else { 1 });
    let samba = samba::Samba::start();
    let share = samba.share_dir("MainOffice");
    // Random bytes under a name the cascade cannot key (`.bin`): a `.pdb` name would be
    // verified as a PDB and refused (issue #10), and this measures the transfer, not a file.
    let big_size = make_file(&share, "big.bin", big);
    let slow_size = make_file(&share, "slow.bin", slow);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay_port = rt.block_on(relay(samba.addr(), Duration::from_millis(20), 20_000_000));

    let smb21 = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(smb21.path(), "[smb]\nmax_dialect = \"2.1\"\n").unwrap();
    let rows = vec![
        run_pair(
            None,
            samba.port,
            "big.bin",
            big_size,
            runs,
            &format!("loopback, {big} MiB"),
        ),
        run_pair(
            None,
            relay_port,
            "slow.bin",
            slow_size,
            runs,
            &format!("20 ms each way, 20 Mbit/s, {slow} MiB"),
        ),
        run_pair(
            Some(smb21.path()),
            samba.port,
            "big.bin",
            big_size,
            runs,
            &format!("loopback, {big} MiB, ours with max_dialect = 2.1"),
        ),
    ];
    println!(
        "\n| link | symcascade get (median s) | smbclient get (median s) | ratio smbclient/symcascade | symcascade peak RSS | smbclient peak RSS |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        let o = median(r.ours.iter().map(|x| x.0).collect());
        let t = median(r.theirs.iter().map(|x| x.0).collect());
        let om = r.ours.iter().map(|x| x.1).max().unwrap();
        let tm = r.theirs.iter().map(|x| x.1).max().unwrap();
        println!(
            "| {} | {o:.2} | {t:.2} | {:.2} | {:.1} MiB | {:.1} MiB |",
            r.label,
            t / o,
            om as f64 / 1024.0,
            tm as f64 / 1024.0
        );
        println!(
            "<!-- {}: runs ours {:?} smbclient {:?} -->",
            r.label, r.ours, r.theirs
        );
    }
}
