//! SMB stores against a real Samba server on loopback (see `samba.rs`).

use crate::harness::*;
use crate::samba::Samba;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use symcascade::cascade::{CascadeOptions, SkipOp};
use symcascade::layout::{Form, RelPath};
use symcascade::store::open::Transports;
use symcascade::store::smb::{Credentials, SmbClient, SmbConfig, SmbStore};
use symcascade::store::{LocalStore, Store, StoreErrorKind};
use tokio::io::AsyncReadExt;

fn smb_config(creds: Option<Credentials>) -> SmbConfig {
    SmbConfig {
        default_credentials: creds,
        // Generous: tests run in parallel on 2 cores, and NTLM session setup is CPU-bound.
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(20),
        ..SmbConfig::default()
    }
}

fn transports(cfg: SmbConfig) -> (Arc<SmbClient>, Arc<Transports>) {
    let client = SmbClient::new(cfg);
    let t = Arc::new(Transports {
        smb: client.clone(),
        http: symcascade::store::http::transport_from_env(&Default::default()),
        blackout: Default::default(),
        objects: Default::default(),
    });
    (client, t)
}

/// Publishes fixtures straight onto the server's disk behind a share.
async fn publish_on_server(samba: &Samba, share: &str, names: &[&str], form: Form) {
    let s = LocalStore::new(samba.share_dir(share));
    for n in names {
        symcascade::publish::publish_file(
            &s,
            &fixture(n),
            symcascade::layout::Tiering::OneTier,
            form,
        )
        .await
        .unwrap();
    }
}

fn in_share(
    samba: &Samba,
    share: &str,
    key: &symcascade::key::Key,
    form: Form,
) -> std::path::PathBuf {
    let rel = symcascade::layout::path_for(key, symcascade::layout::Tiering::OneTier, form);
    rel.components()
        .iter()
        .fold(samba.share_dir(share), |p, c| p.join(c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_main_branch_local_over_smb() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    publish_on_server(&samba, "MainOffice", &[PDB, DLL_X86], Form::Plain).await;
    publish_on_server(&samba, "MainOffice", &[DLL], Form::Compressed).await;
    let lab = Lab::new();
    let (_c, t) = transports(smb_config(Some(samba.credentials())));
    let path = format!(
        "srv*{}*{}*{}",
        lab.s("local"),
        samba.unc("BranchOfficeA"),
        samba.unc("MainOffice")
    );
    let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
    for (name, form) in [(PDB, Form::Plain), (DLL, Form::Compressed)] {
        let key = key_of(name);
        let l = c.lookup(&key).await.unwrap();
        assert!(l.skipped.is_empty(), "{:?}", l.skipped);
        let f = l.fetched.expect("hit on MainOffice");
        assert_eq!((f.tier, f.form), (2, form));
        let stores: Vec<_> = f.written.iter().map(|w| w.store.clone()).collect();
        assert_eq!(
            stores,
            vec![samba.unc("BranchOfficeA"), lab.s("local")],
            "branch first"
        );
        // Byte-identical on the server's disk (compressed stays compressed there) and locally.
        same(
            &in_share(&samba, "BranchOfficeA", &key, form),
            &in_share(&samba, "MainOffice", &key, form),
        );
        same(&lab.file_in("local", &key, Form::Plain), &fixture(name));
        // No temp file left on the share.
        assert!(
            published_files(&samba.share_dir("BranchOfficeA"))
                .iter()
                .all(|p| !p.contains("symcascade-tmp"))
        );
    }
    // A second lookup of a branch-only file reads it from the branch share over SMB.
    std::fs::remove_dir_all(lab.path("local")).unwrap();
    let f = c.fetch(&pdb_key()).await.unwrap().unwrap();
    assert_eq!(f.tier, 1);
    same(
        &lab.file_in("local", &pdb_key(), Form::Plain),
        &fixture(PDB),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliased_unc_paths_on_two_servers_with_one_ip() {
    let Some(main) = Samba::try_start() else {
        return;
    };
    let branch = Samba::start();
    assert_ne!(main.port, branch.port);
    publish_on_server(&main, "MainOffice", &[PDB], Form::Plain).await;
    // A decoy with the same key on the branch server's read-only share: if the two servers
    // were confused, the lookup would find it there or write to the wrong server.
    let lab = Lab::new();
    let mut cfg = smb_config(Some(main.credentials()));
    cfg.aliases = BTreeMap::from([
        ("MainOffice".to_string(), main.host()),
        ("BranchOfficeA".to_string(), branch.host()),
    ]);
    let (client, t) = transports(cfg);
    let path = format!(
        "srv*{}*\\\\BranchOfficeA\\BranchOfficeA*\\\\MainOffice\\MainOffice",
        lab.s("local")
    );
    let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
    let key = pdb_key();
    let l = c.lookup(&key).await.unwrap();
    let f = l
        .fetched
        .unwrap_or_else(|| panic!("not found on the main server: {:?}", l.skipped));
    assert_eq!(f.found_in, "\\\\MainOffice\\MainOffice");
    assert!(
        l.skipped.is_empty(),
        "{:?} written {:?}",
        l.skipped,
        f.written
    );
    same(
        &in_share(&branch, "BranchOfficeA", &key, Form::Plain),
        &fixture(PDB),
    );
    assert!(
        !in_share(&main, "BranchOfficeA", &key, Form::Plain).exists(),
        "written to the wrong server"
    );
    let a = client.server("t", "MainOffice", None).await.unwrap();
    let b = client.server("t", "BranchOfficeA", None).await.unwrap();
    assert_ne!(a.addr(), b.addr());
    assert!(!Arc::ptr_eq(&a, &b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_or_forbidden_branch_still_fills_local() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    publish_on_server(&samba, "MainOffice", &[PDB], Form::Plain).await;
    for (branch, kind) in [
        ("BranchOfficeARO", StoreErrorKind::PermissionDenied),
        ("Forbidden", StoreErrorKind::PermissionDenied),
    ] {
        let lab = Lab::new();
        let (_c, t) = transports(smb_config(Some(samba.credentials())));
        let path = format!(
            "srv*{}*{}*{}",
            lab.s("local"),
            samba.unc(branch),
            samba.unc("MainOffice")
        );
        let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
        let l = c.lookup(&pdb_key()).await.unwrap();
        let f = l.fetched.expect("delivered");
        assert_eq!(f.tier, 2, "{branch}");
        assert!(
            l.skipped
                .iter()
                .any(|s| s.op == SkipOp::Write && s.store == samba.unc(branch) && s.kind == kind),
            "{branch}: {:?}",
            l.skipped
        );
        same(
            &lab.file_in("local", &pdb_key(), Form::Plain),
            &fixture(PDB),
        );
        assert!(published_files(&samba.share_dir("BranchOfficeA")).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_local_hits_still_served_and_misses_fail_fast() {
    let Some(mut samba) = Samba::try_start() else {
        return;
    };
    let lab = Lab::new();
    lab.publish("local", &[DLL], Form::Plain).await;
    samba.stop();
    let (_c, t) = transports(smb_config(Some(samba.credentials())));
    let path = format!(
        "srv*{}*{}*{}",
        lab.s("local"),
        samba.unc("BranchOfficeA"),
        samba.unc("MainOffice")
    );
    let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
    let start = Instant::now();
    assert_eq!(c.fetch(&key_of(DLL)).await.unwrap().unwrap().tier, 0);
    let l = c.lookup(&pdb_key()).await.unwrap();
    let took = start.elapsed();
    assert!(l.fetched.is_none());
    assert!(
        l.skipped
            .iter()
            .any(|s| s.store == samba.unc("MainOffice") && s.kind == StoreErrorKind::Unreachable),
        "{:?}",
        l.skipped
    );
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} (connect timeout 3 s)"
    );
    // Many misses cost no more: the failed connect is remembered.
    let start = Instant::now();
    for i in 0..20u32 {
        let k = symcascade::key::Key::new("x.pdb", &format!("{i:032X}1")).unwrap();
        assert!(c.fetch(&k).await.unwrap().is_none());
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Back up: it recovers (after the back-off).
    samba.restart();
    publish_on_server(&samba, "MainOffice", &[PDB], Form::Plain).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let f = loop {
        match c.fetch(&pdb_key()).await.unwrap() {
            Some(f) => break f,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            None => panic!("not found within 15 s of the restart"),
        }
    };
    assert_eq!(f.tier, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_for_password_share_and_host_without_secrets() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    let p = RelPath::from_safe(["x.pdb", "12", "x.pdb"]);
    let wrong = Credentials {
        user: crate::samba::USER.into(),
        password: "not-the-Pa55word".into(),
        domain: None,
    };
    let cases = [
        (
            samba.host(),
            "MainOffice",
            Some(wrong),
            StoreErrorKind::AuthFailed,
        ),
        (
            samba.host(),
            "NoSuchShare",
            Some(samba.credentials()),
            StoreErrorKind::Unreachable,
        ),
        (
            "no-such-host.invalid".to_string(),
            "s",
            Some(samba.credentials()),
            StoreErrorKind::Unreachable,
        ),
        (samba.host(), "MainOffice", None, StoreErrorKind::AuthFailed),
    ];
    for (host, share, creds, kind) in cases {
        let client = SmbClient::new(smb_config(creds));
        let shown = format!("\\\\{host}\\{share}");
        let (h, port) = host
            .rsplit_once(':')
            .map(|(h, p)| (h.to_string(), p.parse().ok()))
            .unwrap_or((host.clone(), None));
        let s = SmbStore::new(client, &h, port, share, &[], &shown);
        let e = s.stat(&p).await.unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind, kind, "{msg}");
        assert!(msg.contains(&shown), "names the store: {msg}");
        assert!(
            !msg.contains(crate::samba::PASSWORD) && !msg.contains("not-the-Pa55word"),
            "{msg}"
        );
    }
}

/// Reads of 8 MiB (split into 1 MiB requests), 16 at once, on one server connection pool, while
/// Samba answers slow reads with interim responses: all complete, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stall_under_interim_responses() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    let dir = samba.share_dir("MainOffice").join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let mut data = vec![0u8; 32 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[1];
    }
    std::fs::write(dir.join("blob.bin"), &data).unwrap();
    let mut cfg = smb_config(Some(samba.credentials()));
    cfg.chunk_size = 8 << 20;
    cfg.in_flight = 16;
    let client = SmbClient::new(cfg);
    let store = Arc::new(SmbStore::new(
        client.clone(),
        "127.0.0.1",
        Some(samba.port),
        "MainOffice",
        &["big".into()],
        "\\\\lab\\MainOffice\\big",
    ));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut o = store
                .open(&RelPath::from_safe(["blob.bin"]))
                .await
                .unwrap()
                .unwrap();
            let mut v = Vec::new();
            o.reader.read_to_end(&mut v).await.unwrap();
            v
        }));
    }
    let deadline = Duration::from_secs(240);
    for t in tasks {
        let v = tokio::time::timeout(deadline, t)
            .await
            .expect("stalled")
            .unwrap();
        assert!(v == data, "content differs");
    }
    let server = client
        .server("t", "127.0.0.1", Some(samba.port))
        .await
        .unwrap();
    let (interims, _lost) = server.credit_stats().await;
    eprintln!(
        "interim responses: {interims}, connections: {}",
        server.connects()
    );
    // The scenario must really have met interim responses, or it proves nothing.
    assert!(
        interims > 0,
        "Samba sent no interim response: the test did not exercise the defect"
    );
}

/// 1,000 files published over SMB into a watched folder: the watch sees every one of them and
/// never stalls, although each CHANGE_NOTIFY leaks a credit in the `smb` crate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_change_notifications_complete() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    std::fs::create_dir_all(samba.share_dir("BranchOfficeA").join("q")).unwrap();
    let client = SmbClient::new(smb_config(Some(samba.credentials())));
    let store = SmbStore::new(
        client.clone(),
        "127.0.0.1",
        Some(samba.port),
        "BranchOfficeA",
        &[],
        "\\\\lab\\BranchOfficeA",
    );
    let mut rx = store.watch(&["q".to_string()]).await.unwrap();
    let mut writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..1000u32 {
                let body = format!("request {i}");
                let p = RelPath::from_safe(["q".to_string(), format!("r{i:04}.req")]);
                if let Err(e) = store
                    .put(&p, &mut body.as_bytes(), Some(body.len() as u64))
                    .await
                {
                    panic!("put r{i:04}.req failed: {e}");
                }
            }
        })
    };
    let mut seen = std::collections::HashSet::new();
    let mut rescans = 0;
    let mut idle = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    while seen.len() < 1000 {
        assert!(
            Instant::now() < deadline,
            "watch stalled: {} of 1000 seen",
            seen.len()
        );
        let change = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(c) => c.expect("watch ended"),
            Err(_) => {
                idle += 1;
                if writer.is_finished() && idle >= 5 {
                    // Surface a writer failure instead of waiting for names that never come.
                    (&mut writer).await.unwrap();
                    panic!("writer done, watch silent: {} of 1000 seen", seen.len());
                }
                continue;
            }
        };
        idle = 0;
        match change {
            symcascade::store::smb::DirChange::Changed(names) => {
                seen.extend(names.into_iter().filter(|n| n.ends_with(".req")));
            }
            symcascade::store::smb::DirChange::Rescan => {
                // What a consumer does on Rescan: list the folder (here, on the server's disk).
                rescans += 1;
                for e in std::fs::read_dir(samba.share_dir("BranchOfficeA").join("q")).unwrap() {
                    let n = e.unwrap().file_name().into_string().unwrap();
                    if n.ends_with(".req") {
                        seen.insert(n);
                    }
                }
            }
        }
    }
    writer.await.unwrap();
    let server = client
        .server("t", "127.0.0.1", Some(samba.port))
        .await
        .unwrap();
    let (interims, _) = server.credit_stats().await;
    eprintln!(
        "names: {}, rescans: {rescans}, interims: {interims}, connections: {}",
        seen.len(),
        server.connects()
    );
    assert!(
        interims >= 500,
        "CHANGE_NOTIFY goes async: expected many interim responses, saw {interims}"
    );
}

/// A branch share on a full disk (a real 256 KiB tmpfs behind the share): Samba answers
/// STATUS_DISK_FULL midway, the branch is skipped as "disk full", nothing is left under a final
/// name or as a temp file, and the local folder still gets the file.
// Linux-only: a real full disk (tmpfs) behind the share.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_branch_share_is_skipped_and_left_clean() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    publish_on_server(&samba, "MainOffice", &[PDB], Form::Plain).await;
    let _full = Tmpfs::mount(&samba.share_dir("BranchOfficeA"), "256k");
    let lab = Lab::new();
    let (_c, t) = transports(smb_config(Some(samba.credentials())));
    let path = format!(
        "srv*{}*{}*{}",
        lab.s("local"),
        samba.unc("BranchOfficeA"),
        samba.unc("MainOffice")
    );
    let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
    let l = c.lookup(&pdb_key()).await.unwrap();
    assert!(l.fetched.is_some());
    assert!(
        l.skipped
            .iter()
            .any(|s| s.op == SkipOp::Write && s.kind == StoreErrorKind::DiskFull),
        "{:?}",
        l.skipped
    );
    let left: Vec<_> = published_files(&samba.share_dir("BranchOfficeA"));
    assert!(
        left.iter()
            .all(|p| !p.ends_with(PDB) && !p.contains("symcascade-tmp")),
        "{left:?}"
    );
    same(
        &lab.file_in("local", &pdb_key(), Form::Plain),
        &fixture(PDB),
    );
}

/// A branch store below a folder of the share that does not exist yet (`\\host\share\new\sub`)
/// is created and filled, as SymSrv creates a missing downstream store, instead of being
/// skipped with "Object Path Not Found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_store_folder_on_a_share_is_created_and_filled() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    publish_on_server(&samba, "MainOffice", &[PDB], Form::Plain).await;
    let lab = Lab::new();
    let (_c, t) = transports(smb_config(Some(samba.credentials())));
    let branch = format!("{}\\newsub\\Symbols", samba.unc("BranchOfficeA"));
    assert!(!samba.share_dir("BranchOfficeA").join("newsub").exists());
    let path = format!(
        "srv*{}*{branch}*{}",
        lab.s("local"),
        samba.unc("MainOffice")
    );
    let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
    let key = pdb_key();
    let l = c.lookup(&key).await.unwrap();
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);
    let f = l.fetched.expect("hit on MainOffice");
    let stores: Vec<_> = f.written.iter().map(|w| w.store.clone()).collect();
    assert_eq!(stores, vec![branch, lab.s("local")]);
    let rel = symcascade::layout::path_for(&key, symcascade::layout::Tiering::OneTier, Form::Plain);
    let on_disk = rel.components().iter().fold(
        samba.share_dir("BranchOfficeA").join("newsub/Symbols"),
        |p, c| p.join(c),
    );
    same(&on_disk, &fixture(PDB));
}

/// Every name a key accepts (up to 255 bytes) can be stored on a share: the temp name is cut to
/// fit the 255-byte component limit (it did not from 223 bytes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_name_a_key_accepts_is_stored_on_a_share() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    let client = SmbClient::new(smb_config(Some(samba.credentials())));
    let s = SmbStore::new(
        client,
        "127.0.0.1",
        Some(samba.port),
        "BranchOfficeA",
        &[],
        "\\\\lab\\BranchOfficeA",
    );
    for len in [222, 223, 233, 255] {
        let name = format!("{}.pdb", "n".repeat(len - 4));
        let key = symcascade::key::Key::new(&name, "ABC1").unwrap();
        let p =
            symcascade::layout::path_for(&key, symcascade::layout::Tiering::OneTier, Form::Plain);
        let mut data: &[u8] = b"hello";
        s.put(&p, &mut data, Some(5))
            .await
            .unwrap_or_else(|e| panic!("{len}: {e}"));
        assert_eq!(s.stat(&p).await.unwrap().map(|m| m.len), Some(5), "{len}");
    }
}

/// Writes `body` under `key`'s final name on the server's disk behind `share`.
fn plant_on_server(
    samba: &Samba,
    share: &str,
    key: &symcascade::key::Key,
    form: Form,
    body: &[u8],
) {
    let p = in_share(samba, share, key, form);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_files_on_shares_are_refused_and_a_bad_branch_copy_is_replaced() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    let (_c, t) = transports(smb_config(Some(samba.credentials())));
    let path = |lab: &Lab| {
        format!(
            "srv*{}*{}*{}",
            lab.s("local"),
            samba.unc("BranchOfficeA"),
            samba.unc("MainOffice")
        )
    };
    // MainOffice: a 0-byte PDB and a truncated cabinet of the big PDB. Refused as corrupt,
    // written nowhere (neither the branch share nor the local store).
    let big = key_of(BIG_PDB);
    let cab = crate::cascade::cab_of(big.name(), &std::fs::read(fixture(BIG_PDB)).unwrap());
    plant_on_server(
        &samba,
        "MainOffice",
        &big,
        Form::Compressed,
        &cab[..cab.len() * 2 / 3],
    );
    plant_on_server(&samba, "MainOffice", &pdb_key(), Form::Plain, b"");
    let lab = Lab::new();
    let c = lab
        .cascade_with(&path(&lab), CascadeOptions::default(), t.clone())
        .await;
    for key in [big.clone(), pdb_key()] {
        let l = c.lookup(&key).await.unwrap();
        assert!(l.fetched.is_none(), "{key}");
        assert_eq!(
            l.skipped
                .iter()
                .map(|s| (s.op, s.kind, s.store.clone()))
                .collect::<Vec<_>>(),
            vec![(
                SkipOp::Read,
                StoreErrorKind::Corrupt,
                samba.unc("MainOffice")
            )],
            "{key}"
        );
        assert!(l.is_definitive_miss(), "a corrupt source is a result");
    }
    let l = c.lookup(&big).await.unwrap();
    assert_eq!(l.skipped[0].bytes_read, (cab.len() * 2 / 3) as u64);
    assert!(published_files(&samba.share_dir("BranchOfficeA")).is_empty());
    assert!(published_files(&lab.path("local")).is_empty());

    // BranchOfficeA holds another build's DLL under the key (an older tool's leftover): it is
    // refused and replaced over SMB (rename with ReplaceIfExists) by MainOffice's good copy.
    let dll = key_of(DLL);
    publish_on_server(&samba, "MainOffice", &[DLL], Form::Plain).await;
    plant_on_server(
        &samba,
        "BranchOfficeA",
        &dll,
        Form::Plain,
        &std::fs::read(fixture(DLL_X86)).unwrap(),
    );
    let lab = Lab::new();
    let c = lab
        .cascade_with(&path(&lab), CascadeOptions::default(), t)
        .await;
    let l = c.lookup(&dll).await.unwrap();
    let f = l.fetched.expect("hit on MainOffice");
    assert_eq!(f.tier, 2, "{:?}", l.skipped);
    assert_eq!(
        (
            l.skipped[0].op,
            l.skipped[0].kind,
            l.skipped[0].store.clone()
        ),
        (
            SkipOp::Read,
            StoreErrorKind::Corrupt,
            samba.unc("BranchOfficeA")
        )
    );
    assert!(f.written.iter().all(|w| w.new), "{:?}", f.written);
    same(
        &in_share(&samba, "BranchOfficeA", &dll, Form::Plain),
        &fixture(DLL),
    );
    same(&lab.file_in("local", &dll, Form::Plain), &fixture(DLL));
    assert!(
        published_files(&samba.share_dir("BranchOfficeA"))
            .iter()
            .all(|p| !p.contains("symcascade-tmp"))
    );
}

/// Issue #14 on SMB: MainOffice's share holds the store in upper case (as SymStore's tools
/// write it); lower-case requests find it through the built-in client (the server matches
/// names case-insensitively, as Windows and Samba do for SMB clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upper_case_share_answers_lower_case_requests() {
    let Some(office) = Office::start() else {
        return;
    };
    publish_main(&office, &[PDB, DLL]).await;
    crate::cascade::upper_case_tree(&office.main.share_dir("MainOffice"));
    let cfg = office.config("case1", &office.main.host(), "");
    for name in [PDB, DLL] {
        let k = key_of(name);
        let (n, i) = (
            k.name().to_ascii_lowercase(),
            k.index().to_ascii_lowercase(),
        );
        cli(&cfg, &["get", &n, &i]);
        same(
            &key_path(&office.local("case1"), &k, Form::Plain),
            &fixture(name),
        );
        same(
            &key_path(&office.branch.share_dir("BranchOfficeA"), &k, Form::Plain),
            &fixture(name),
        );
    }
}

/// A share that requires encryption (`smb encrypt = required`, Windows' "Encrypt data
/// access") is read and written with the default `[smb] encrypt = "if-offered"`; with
/// `encrypt = "off"` it is skipped with a reason that names the share's requirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encryption_required_share_works_by_default_and_off_names_the_requirement() {
    let Some(samba) = Samba::try_start() else {
        return;
    };
    publish_on_server(&samba, "Encrypted", &[PDB], Form::Plain).await;
    publish_on_server(&samba, "MainOffice", &[DLL], Form::Plain).await;
    let lab = Lab::new();
    let (_c, t) = transports(smb_config(Some(samba.credentials())));
    let path = format!(
        "srv*{}*{}*{}",
        lab.s("local"),
        samba.unc("Encrypted"),
        samba.unc("MainOffice")
    );
    let c = lab.cascade_with(&path, CascadeOptions::default(), t).await;
    // Read from the encrypted share…
    let l = c.lookup(&pdb_key()).await.unwrap();
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);
    assert_eq!(l.fetched.expect("on the encrypted share").tier, 1);
    same(
        &lab.file_in("local", &pdb_key(), Form::Plain),
        &fixture(PDB),
    );
    // …and written into it as the intermediate tier.
    let l = c.lookup(&key_of(DLL)).await.unwrap();
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);
    let f = l.fetched.expect("on MainOffice");
    assert_eq!(f.written[0].store, samba.unc("Encrypted"));
    same(
        &in_share(&samba, "Encrypted", &key_of(DLL), Form::Plain),
        &fixture(DLL),
    );

    let mut off = smb_config(Some(samba.credentials()));
    off.encrypt = symcascade::store::smb::SmbEncrypt::Off;
    let (_c, t) = transports(off);
    let lab2 = Lab::new();
    let path = format!("srv*{}*{}", lab2.s("local"), samba.unc("Encrypted"));
    let c = lab2.cascade_with(&path, CascadeOptions::default(), t).await;
    let l = c.lookup(&pdb_key()).await.unwrap();
    assert!(l.fetched.is_none());
    let skip = l.skipped.first().expect("the share is skipped");
    assert!(
        skip.detail.contains("encrypt"),
        "the reason names encryption: {}",
        skip.detail
    );
}
