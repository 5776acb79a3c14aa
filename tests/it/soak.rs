//! Crash soak: `kill -9` of `symcascade get` and of `symcascade run` at random points of a
//! 5.7 MB transfer from MainOffice (through a slow-link relay) into an SMB branch share and a
//! local folder. After every kill no final name holds anything but the complete file; after the
//! next run completes, no temp file is left on the share or locally and no spool file in the
//! spool folder.
//!
//! Cycles: `SYMCASCADE_SOAK_CYCLES` (default 10, as CI runs it); the seed of the random kill
//! points is printed and can be replayed with `SYMCASCADE_SOAK_SEED`. The 100-cycle run:
//! `SYMCASCADE_SOAK_CYCLES=100 cargo test --test it soak:: -- --nocapture`.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use symcascade::layout::Form;

/// A small deterministic generator (xorshift64*), so a failing run can be replayed by seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Every file under `dir` whose name marks it as a temp or spool file.
fn leftovers(dir: &Path) -> Vec<String> {
    files_with_len(dir)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with(".symcascade-tmp") || p.contains(".symcascade-spool."))
        .collect()
}

fn same_or_absent(p: &Path) {
    if p.exists() {
        assert_eq!(
            std::fs::read(p).unwrap(),
            std::fs::read(fixture(BIG_PDB)).unwrap(),
            "a final name holds something else than the source: {}",
            p.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_leaves_nothing_behind() {
    let Some(office) = Office::start() else {
        return;
    };
    let cycles: u64 = std::env::var("SYMCASCADE_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("SYMCASCADE_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("soak: {cycles} cycles, SYMCASCADE_SOAK_SEED={seed}");
    let mut rng = Rng(seed);
    publish_main(&office, &[BIG_PDB]).await;
    // 40 Mbit/s and 10 ms each way: the transfer takes about 1.3 s.
    let port = crate::relay::relay(office.main.addr(), Duration::from_millis(10), 40_000_000).await;
    let id = "DESKTOP-S0AK001";
    let cfg = office.config(id, &format!("127.0.0.1:{port}"), "");
    let spool = office.dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let key = key_of(BIG_PDB);
    let branch_root = office.branch.share_dir("BranchOfficeA");
    let finals: Vec<PathBuf> = [&branch_root, &office.local(id)]
        .iter()
        .map(|r| key_path(r, &key, Form::Plain))
        .collect();
    let get = || {
        let mut c = bin();
        c.arg("--config")
            .arg(&cfg)
            .args(["get", key.name(), key.index()])
            .env("TMPDIR", &spool)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    for cycle in 0..cycles {
        let kill_after = Duration::from_millis(100 + rng.below(1600));
        let through_agent = cycle % 2 == 1;
        eprintln!(
            "cycle {cycle}: kill -9 of {} after {kill_after:?}",
            if through_agent { "run" } else { "get" }
        );
        if through_agent {
            let o = bin()
                .arg("--config")
                .arg(&cfg)
                .args(["request", key.name(), key.index()])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let mut agent = AgentProc::start_with_tmp(&office, &cfg, id, &spool);
            tokio::time::sleep(kill_after).await;
            agent.kill9();
        } else {
            let mut child = get().spawn().unwrap();
            tokio::time::sleep(kill_after).await;
            let _ = child.kill();
            let _ = child.wait();
        }
        finals.iter().for_each(|p| same_or_absent(p));
        // The next run completes the copy in every tier.
        if through_agent {
            let mut agent = AgentProc::start_with_tmp(&office, &cfg, id, &spool);
            wait_for("the agent to complete", Duration::from_secs(60), || {
                finals.iter().all(|p| p.exists())
            })
            .await;
            // A SIGTERM before the agent has installed its handlers would kill it outright.
            wait_for("the agent to be up", Duration::from_secs(20), || {
                agent.ready()
            })
            .await;
            assert!(agent.stop().success());
        } else {
            let o = get().output().unwrap();
            assert!(o.status.success(), "the next get completes");
        }
        finals.iter().for_each(|p| same_or_absent(p));
        assert!(finals.iter().all(|p| p.exists()));
        // Nothing left behind: on the share (the server deletes a delete-pending temp file once
        // the killed client's connection is gone), locally, in the spool folder.
        wait_for("no temp file on the share", Duration::from_secs(10), || {
            leftovers(&branch_root).is_empty()
        })
        .await;
        assert_eq!(leftovers(&office.local(id)), Vec::<String>::new());
        let in_spool: Vec<_> = files_with_len(&spool).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            in_spool,
            Vec::<String>::new(),
            "the spool folder (TMPDIR) is empty"
        );
        // Evict the copies so the next cycle transfers again.
        for p in &finals {
            std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
        }
    }
}
