//! Cascade scenarios over real local stores built from the real fixtures.

use crate::harness::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use symcascade::cascade::{CascadeOptions, SkipOp};
use symcascade::layout::{Form, Tiering};
use symcascade::store::StoreErrorKind;

#[tokio::test]
async fn hit_in_main_is_copied_into_branch_then_local() {
    let lab = Lab::new();
    lab.publish("main", &ALL, Form::Plain).await;
    let c = lab.cascade(&lab.three_tier()).await;
    let key = pdb_key();
    let f = c.fetch(&key).await.unwrap().expect("hit");
    assert_eq!((f.chain, f.tier, f.form), (0, 2, Form::Plain));
    // Cascade order: nearest to the hit first.
    let stores: Vec<_> = f.written.iter().map(|w| w.store.clone()).collect();
    assert_eq!(stores, vec![lab.s("branch"), lab.s("local")]);
    same(&lab.file_in("branch", &key, Form::Plain), &fixture(PDB));
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
    assert_eq!(
        f.local_path.as_deref(),
        Some(lab.file_in("local", &key, Form::Plain).as_path())
    );
    let size = std::fs::metadata(fixture(PDB)).unwrap().len();
    assert_eq!((f.bytes_read, f.bytes_written), (size, 2 * size));
    // Branch copy was published first.
    let t = |s: &str| {
        std::fs::metadata(lab.file_in(s, &key, Form::Plain))
            .unwrap()
            .modified()
            .unwrap()
    };
    assert!(t("branch") <= t("local"));

    // Second lookup: a local hit, nothing copied, nothing read from the other tiers.
    let again = c.fetch(&key).await.unwrap().unwrap();
    assert_eq!((again.tier, again.written.len()), (0, 0));
    assert_eq!(again.local_path, f.local_path);
    // No temp files anywhere.
    for s in ["local", "branch", "main"] {
        assert!(
            published_files(&lab.path(s))
                .iter()
                .all(|p| !p.contains("tmp")),
            "{s}"
        );
    }
}

#[tokio::test]
async fn hit_in_branch_fills_only_local() {
    let lab = Lab::new();
    lab.publish("branch", &[DLL], Form::Plain).await;
    let c = lab.cascade(&lab.three_tier()).await;
    let key = key_of(DLL);
    let f = c.fetch(&key).await.unwrap().unwrap();
    assert_eq!(f.tier, 1);
    assert_eq!(f.written.len(), 1);
    same(&lab.file_in("local", &key, Form::Plain), &fixture(DLL));
    assert!(published_files(&lab.path("main")).is_empty());
}

#[tokio::test]
async fn miss_everywhere_is_none() {
    let lab = Lab::new();
    lab.publish("main", &[DLL], Form::Plain).await;
    let c = lab.cascade(&lab.three_tier()).await;
    let key =
        symcascade::key::Key::new("nothere.pdb", "0123456789ABCDEF0123456789ABCDEF1").unwrap();
    assert!(c.fetch(&key).await.unwrap().is_none());
    let l = c.lookup(&key).await.unwrap();
    assert!(l.fetched.is_none() && l.skipped.is_empty());
}

#[tokio::test]
async fn compressed_stays_compressed_in_intermediate_and_is_expanded_at_the_bottom() {
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Compressed).await;
    let c = lab.cascade(&lab.three_tier()).await;
    let key = pdb_key();
    let f = c.fetch(&key).await.unwrap().unwrap();
    assert_eq!(f.form, Form::Compressed);
    same(
        &lab.file_in("branch", &key, Form::Compressed),
        &lab.file_in("main", &key, Form::Compressed),
    );
    assert!(!lab.file_in("branch", &key, Form::Plain).exists());
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
    assert!(!lab.file_in("local", &key, Form::Compressed).exists());
    // Read once: the compressed size, not once per destination.
    let csize = std::fs::metadata(lab.file_in("main", &key, Form::Compressed))
        .unwrap()
        .len();
    assert_eq!(f.bytes_read, csize);
    // An independent tool agrees the intermediate copy is a valid cabinet (cabextract is a
    // Linux program: the Windows pass checks the rest).
    #[cfg(unix)]
    if std::process::Command::new("cabextract")
        .arg("--version")
        .output()
        .is_ok()
    {
        run(std::process::Command::new("cabextract")
            .arg("-t")
            .arg(lab.file_in("branch", &key, Form::Compressed)));
    } else {
        assert!(!is_ci(), "CI must install cabextract");
    }

    // NoUncompress keeps it compressed everywhere.
    let lab2 = Lab::new();
    lab2.publish("main", &[PDB], Form::Compressed).await;
    let opts = CascadeOptions {
        uncompress: false,
        ..Default::default()
    };
    let c = lab2
        .cascade_with(
            &lab2.three_tier(),
            opts,
            Arc::new(symcascade::store::open::LocalOnly),
        )
        .await;
    c.fetch(&key).await.unwrap().unwrap();
    assert!(lab2.file_in("local", &key, Form::Compressed).exists());
    assert!(!lab2.file_in("local", &key, Form::Plain).exists());
}

#[tokio::test]
async fn a_corrupt_compressed_file_is_skipped_and_the_next_store_answers() {
    let lab = Lab::new();
    let key = pdb_key();
    let bad = lab.file_in("branch", &key, Form::Compressed);
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, b"MSCF but not really a cabinet").unwrap();
    lab.publish("main", &[PDB], Form::Plain).await;
    let c = lab.cascade(&lab.three_tier()).await;
    let l = c.lookup(&key).await.unwrap();
    let f = l.fetched.unwrap();
    assert_eq!(f.tier, 2);
    assert_eq!(l.skipped.len(), 1);
    assert_eq!(
        (l.skipped[0].op, l.skipped[0].kind),
        (SkipOp::Read, StoreErrorKind::Corrupt)
    );
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
}

#[tokio::test]
async fn file_ptr_is_followed_msg_goes_on_and_no_file_pointers_turns_it_off() {
    let lab = Lab::new();
    let key = pdb_key();
    // Main holds a pointer to a build drop (the target exists only compressed there).
    let drop = lab.path("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let cab = symcascade::compress::write_cab(
        PDB,
        &mut std::fs::File::open(fixture(PDB)).unwrap(),
        std::fs::File::create(drop.join("attach_amd64.pd_")).unwrap(),
    );
    cab.unwrap();
    let ptr = lab.file_in("main", &key, Form::FilePtr);
    std::fs::create_dir_all(ptr.parent().unwrap()).unwrap();
    std::fs::write(&ptr, format!("PATH:{}", drop.join(PDB).display())).unwrap();
    // The branch holds a MSG: pointer: "not here", the search goes on.
    let msg = lab.file_in("branch", &key, Form::FilePtr);
    std::fs::create_dir_all(msg.parent().unwrap()).unwrap();
    std::fs::write(&msg, "MSG: withdrawn from this share").unwrap();

    let opts = CascadeOptions {
        follow_file_pointers: false,
        ..Default::default()
    };
    let off = lab
        .cascade_with(
            &lab.three_tier(),
            opts,
            Arc::new(symcascade::store::open::LocalOnly),
        )
        .await;
    assert!(off.fetch(&key).await.unwrap().is_none());

    // The drop is outside the symbol path's stores: followed only once configured.
    let c = lab.cascade(&lab.three_tier()).await;
    let l = c.lookup(&key).await.unwrap();
    assert!(l.fetched.is_none(), "{l:?}");
    assert_eq!(l.skipped[0].kind, StoreErrorKind::PermissionDenied, "{l:?}");
    let opts = CascadeOptions {
        file_ptr_roots: vec![drop.clone()],
        ..Default::default()
    };
    let c = lab
        .cascade_with(
            &lab.three_tier(),
            opts,
            Arc::new(symcascade::store::open::LocalOnly),
        )
        .await;
    let f = c.fetch(&key).await.unwrap().unwrap();
    assert_eq!((f.tier, f.form), (2, Form::FilePtr));
    assert_eq!(
        f.via_file_ptr.as_deref(),
        Some(drop.join(PDB).display().to_string().as_str())
    );
    // The target's bytes come down: compressed into the branch, expanded locally.
    same(
        &lab.file_in("branch", &key, Form::Compressed),
        &drop.join("attach_amd64.pd_"),
    );
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
}

#[tokio::test]
async fn wantsptr_downstream_gets_the_pointer() {
    let lab = Lab::new();
    let key = pdb_key();
    let ptr = lab.file_in("main", &key, Form::FilePtr);
    std::fs::create_dir_all(ptr.parent().unwrap()).unwrap();
    let text = format!("PATH:{}", fixture(PDB).display());
    std::fs::write(&ptr, &text).unwrap();
    std::fs::write(lab.path("branch").join("wantsptr.txt"), b"").unwrap();
    let opts = CascadeOptions {
        file_ptr_roots: vec![fixture(PDB).parent().unwrap().to_path_buf()],
        ..Default::default()
    };
    let c = lab
        .cascade_with(
            &lab.three_tier(),
            opts,
            Arc::new(symcascade::store::open::LocalOnly),
        )
        .await;
    c.fetch(&key).await.unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(lab.file_in("branch", &key, Form::FilePtr)).unwrap(),
        text
    );
    assert!(!lab.file_in("branch", &key, Form::Plain).exists());
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
}

#[tokio::test]
async fn two_tier_stores_are_read_and_written_in_their_layout() {
    let lab = Lab::new();
    std::fs::write(lab.path("main").join("index2.txt"), b"").unwrap();
    std::fs::write(lab.path("branch").join("index2.txt"), b"").unwrap();
    lab.publish("main", &[PDB], Form::Plain).await;
    let key = pdb_key();
    let two = |s: &str| {
        lab.path(s)
            .join(symcascade::layout::path_for(&key, Tiering::TwoTier, Form::Plain).to_string())
    };
    assert!(two("main").exists(), "{}", two("main").display());
    let c = lab.cascade(&lab.three_tier()).await;
    c.fetch(&key).await.unwrap().unwrap();
    same(&two("branch"), &fixture(PDB));
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
}

#[tokio::test]
async fn lookups_are_case_insensitive_and_write_canonical_case() {
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    let c = lab.cascade(&lab.three_tier()).await;
    let key =
        symcascade::key::Key::new("ATTACH_AMD64.PDB", "446150eee021480999c4bce7828e15281").unwrap();
    let f = c.fetch(&key).await.unwrap().expect("case-insensitive hit");
    assert_eq!(f.tier, 2);
    // The index is written in SymStore's canonical case.
    assert!(
        lab.path("local/ATTACH_AMD64.PDB/446150EEE021480999C4BCE7828E15281/ATTACH_AMD64.PDB")
            .exists()
    );
}

#[tokio::test]
async fn several_chains_cache_and_single_store_rules() {
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    lab.publish("branch", &[DLL], Form::Compressed).await;
    let key = pdb_key();
    // First chain misses, second finds; the cache* element to the left caches the hit.
    let path = format!(
        "cache*{};srv*{};srv*{}*{}",
        lab.s("local"),
        lab.s("branch"),
        lab.s("default"),
        lab.s("main")
    );
    let c = lab.cascade(&path).await;
    let f = c.fetch(&key).await.unwrap().unwrap();
    assert_eq!((f.chain, f.tier), (2, 1));
    same(&lab.file_in("default", &key, Form::Plain), &fixture(PDB));
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));

    // srv*X with one store and a plain hit: no caching at all.
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    let c = lab.cascade(&format!("srv*{}", lab.s("main"))).await;
    let f = c.fetch(&key).await.unwrap().unwrap();
    assert!(f.written.is_empty());
    assert_eq!(
        f.local_path.as_deref(),
        Some(lab.file_in("main", &key, Form::Plain).as_path())
    );
    assert!(published_files(&lab.path("default")).is_empty());

    // srv*X with one store holding a compressed file: the default downstream store gets it.
    lab.publish("branch", &[DLL], Form::Compressed).await;
    let c = lab.cascade(&format!("srv*{}", lab.s("branch"))).await;
    let dk = key_of(DLL);
    let f = c.fetch(&dk).await.unwrap().unwrap();
    assert_eq!(f.written.len(), 1);
    same(&lab.file_in("default", &dk, Form::Plain), &fixture(DLL));

    // The empty token is the default downstream store.
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    let c = lab.cascade(&format!("srv**{}", lab.s("main"))).await;
    c.fetch(&key).await.unwrap().unwrap();
    same(&lab.file_in("default", &key, Form::Plain), &fixture(PDB));

    // When the first chain finds the file, later chains are not consulted.
    lab.publish("branch", &[PDB], Form::Plain).await;
    let c = lab
        .cascade(&format!(
            "srv*{};srv*{}*{}",
            lab.s("branch"),
            lab.s("local"),
            lab.s("main")
        ))
        .await;
    let f = c.fetch(&key).await.unwrap().unwrap();
    assert_eq!(f.chain, 0);
    assert!(published_files(&lab.path("local")).is_empty());
}

#[tokio::test]
async fn plain_folders_pingme_autodetect_and_flat_verification() {
    let lab = Lab::new();
    let key = pdb_key();
    // A flat folder holding the right file by name: a hit, verified by its key.
    let flat = lab.path("flat");
    std::fs::create_dir_all(&flat).unwrap();
    std::fs::copy(fixture(PDB), flat.join(PDB)).unwrap();
    let c = lab
        .cascade(&format!("cache*{};{}", lab.s("local"), flat.display()))
        .await;
    let f = c.fetch(&key).await.unwrap().unwrap();
    assert_eq!(f.chain, 1);
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
    // A file with the same name but another key is not a hit.
    let other = lab.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(fixture(PDB_X86), other.join(PDB)).unwrap();
    let c = lab.cascade(&other.display().to_string()).await;
    assert!(c.fetch(&key).await.unwrap().is_none());
    // A plain element whose root holds pingme.txt is searched as a symbol store.
    lab.publish("main", &[PDB], Form::Plain).await;
    let c = lab.cascade(&lab.s("main")).await;
    assert!(
        c.fetch(&key).await.unwrap().is_none(),
        "no pingme.txt: flat search"
    );
    std::fs::write(lab.path("main").join("pingme.txt"), b"").unwrap();
    let c = lab.cascade(&lab.s("main")).await;
    assert!(
        c.fetch(&key).await.unwrap().is_some(),
        "pingme.txt: store search"
    );
}

#[tokio::test]
async fn unavailable_upstream_is_skipped_with_its_reason() {
    let lab = Lab::new();
    lab.publish("branch", &[PDB], Form::Plain).await;
    let key = pdb_key();
    // No SMB transport in this opener: the UNC store is skipped, the branch still answers.
    let path = format!(
        "srv*{}*\\\\MainOffice\\Symbols*{}",
        lab.s("local"),
        lab.s("branch")
    );
    let c = lab.cascade(&path).await;
    let l = c.lookup(&key).await.unwrap();
    assert!(l.fetched.is_some());
    assert_eq!(l.skipped.len(), 2, "{:?}", l.skipped); // read, then write
    assert!(
        l.skipped
            .iter()
            .all(|s| s.store == "\\\\MainOffice\\Symbols" && unreachable_kind(&s.kind))
    );
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
}

#[tokio::test]
async fn read_failing_midway_publishes_nothing_and_the_next_store_answers() {
    let lab = Lab::new();
    lab.publish("branch", &[PDB], Form::Plain).await;
    lab.publish("main", &[PDB], Form::Plain).await;
    let opener = FaultOpener {
        faults: vec![(lab.s("branch"), Fault::ReadFailsAfter(100_000))],
        bytes_read: Arc::new(AtomicU64::new(0)),
    };
    let c = lab
        .cascade_with(
            &lab.three_tier(),
            CascadeOptions::default(),
            Arc::new(opener),
        )
        .await;
    let key = pdb_key();
    let l = c.lookup(&key).await.unwrap();
    let f = l.fetched.unwrap();
    assert_eq!(f.tier, 2);
    assert_eq!(
        (l.skipped[0].op, l.skipped[0].store.as_str()),
        (SkipOp::Read, lab.s("branch").as_str())
    );
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
    // The branch already had it, so it is not rewritten.
    assert!(
        f.written
            .iter()
            .any(|w| w.store == lab.s("branch") && !w.new)
    );
}

#[tokio::test]
async fn a_write_failing_midway_skips_that_store_only() {
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    let bytes = Arc::new(AtomicU64::new(0));
    let opener = FaultOpener {
        faults: vec![
            (lab.s("branch"), Fault::WriteFailsAfter(300_000)),
            (lab.s("main"), Fault::ReadFailsAfter(u64::MAX)),
        ],
        bytes_read: bytes.clone(),
    };
    let c = lab
        .cascade_with(
            &lab.three_tier(),
            CascadeOptions::default(),
            Arc::new(opener),
        )
        .await;
    let key = pdb_key();
    let l = c.lookup(&key).await.unwrap();
    assert!(l.fetched.is_some());
    assert_eq!(l.skipped.len(), 1);
    assert_eq!(
        (l.skipped[0].op, l.skipped[0].store.as_str()),
        (SkipOp::Write, lab.s("branch").as_str())
    );
    // Nothing under a final name in the branch, not even a temp file.
    assert!(
        published_files(&lab.path("branch")).is_empty(),
        "{:?}",
        published_files(&lab.path("branch"))
    );
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
    // The source was read once for two destinations.
    assert_eq!(
        bytes.load(Ordering::Relaxed),
        std::fs::metadata(fixture(PDB)).unwrap().len()
    );
}

// Linux-only: a real full disk (tmpfs) and a read-only bind mount.
#[cfg(unix)]
#[tokio::test]
async fn a_full_disk_and_a_read_only_store_are_skipped_for_real() {
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    // Branch: a real read-only mount. Local: a real 256 KiB tmpfs (the PDB is ~1 MB).
    let _ro = ReadOnlyMount::mount(&lab.path("branch"), &lab.path("branch_ro"));
    let _full = Tmpfs::mount(&lab.path("tiny"), "256k");
    let path = format!(
        "srv*{}*{}*{}*{}",
        lab.s("tiny"),
        lab.s("local"),
        lab.s("branch_ro"),
        lab.s("main")
    );
    let c = lab.cascade(&path).await;
    let key = pdb_key();
    let l = c.lookup(&key).await.unwrap();
    let f = l.fetched.expect("still delivered");
    let kinds: Vec<_> = l
        .skipped
        .iter()
        .map(|s| (s.store.clone(), s.op, s.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (lab.s("branch_ro"), SkipOp::Write, StoreErrorKind::ReadOnly),
            (lab.s("tiny"), SkipOp::Write, StoreErrorKind::DiskFull),
        ]
    );
    // The tier between them was filled, and is where the local path points.
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
    assert_eq!(
        f.local_path.as_deref(),
        Some(lab.file_in("local", &key, Form::Plain).as_path())
    );
    assert!(published_files(&lab.path("tiny")).is_empty());
}

#[tokio::test]
async fn file_ptr_targets_outside_the_symbol_path_are_refused() {
    let lab = Lab::new();
    let key = pdb_key();
    let ptr = lab.file_in("main", &key, Form::FilePtr);
    std::fs::create_dir_all(ptr.parent().unwrap()).unwrap();
    for (target, why) in [
        (
            "\\\\evil.example\\drop\\attach_amd64.pdb",
            "not in the symbol path",
        ),
        (
            "\\\\MainOffice\\C$\\secrets\\attach_amd64.pdb",
            "administrative shares",
        ),
    ] {
        std::fs::write(&ptr, format!("PATH:{target}")).unwrap();
        let path = format!(
            "srv*{}*{}*\\\\MainOffice\\Symbols",
            lab.s("local"),
            lab.s("main")
        );
        let c = lab.cascade(&path).await;
        let l = c.lookup(&key).await.unwrap();
        assert!(l.fetched.is_none(), "{target}");
        let s = l
            .skipped
            .iter()
            .find(|s| s.store == lab.s("main"))
            .expect("main skipped");
        assert_eq!(s.kind, StoreErrorKind::PermissionDenied, "{target}");
        assert!(s.detail.contains(why), "{target}: {}", s.detail);
    }
}

#[cfg(unix)]
/// Writability is what a write does, not what mode bits say: a folder with mode 0755 on a
/// read-only mount is not writable; a 0555 folder is writable for root (who may write anyway).
#[tokio::test]
async fn local_writability_is_probed_not_read_from_mode_bits() {
    use std::os::unix::fs::PermissionsExt;
    use symcascade::store::{LocalStore, Store};
    let lab = Lab::new();
    let _ro = ReadOnlyMount::mount(&lab.path("branch"), &lab.path("branch_ro"));
    let mode = std::fs::metadata(lab.path("branch_ro"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o200, 0, "mode bits say writable: {mode:o}");
    let c = LocalStore::new(lab.path("branch_ro"))
        .capabilities()
        .await
        .unwrap();
    assert!(c.readable && !c.writable, "{c:?}");
    std::fs::set_permissions(lab.path("local"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let c = LocalStore::new(lab.path("local"))
        .capabilities()
        .await
        .unwrap();
    let root = std::fs::File::create(lab.path("local").join("probe")).is_ok();
    assert_eq!(c.writable, root, "{c:?}");
    // The probe leaves nothing behind.
    let left: Vec<_> = std::fs::read_dir(lab.path("local"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.iter().all(|n| n == "probe"), "{left:?}");
}

#[cfg(unix)]
/// A `file.ptr` in a local store is followed only into the symbol path's local stores and the
/// configured `file_ptr_roots`: `/etc/passwd`, a `..` escape and a symbolic link out of the
/// store are refused (a `permission_denied` skip), and nothing is copied anywhere.
#[tokio::test]
async fn local_file_ptr_targets_are_contained() {
    let lab = Lab::new();
    let key = pdb_key();
    let ptr = lab.file_in("main", &key, Form::FilePtr);
    std::fs::create_dir_all(ptr.parent().unwrap()).unwrap();
    let secret = lab.path("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::copy(fixture(PDB), secret.join(PDB)).unwrap();
    // Inside the main store's folder, but a link to the secret folder.
    std::os::unix::fs::symlink(&secret, lab.path("main").join("linked")).unwrap();
    let escapes = [
        "/etc/passwd".to_string(),
        secret.join(PDB).display().to_string(),
        lab.path("main")
            .join("..")
            .join("secret")
            .join(PDB)
            .display()
            .to_string(),
        lab.path("main")
            .join("linked")
            .join(PDB)
            .display()
            .to_string(),
    ];
    for target in &escapes {
        std::fs::write(&ptr, format!("PATH:{target}")).unwrap();
        let c = lab.cascade(&lab.three_tier()).await;
        let l = c.lookup(&key).await.unwrap();
        assert!(l.fetched.is_none(), "{target}: {l:?}");
        assert_eq!(l.skipped.len(), 1, "{target}: {l:?}");
        assert_eq!(
            l.skipped[0].kind,
            StoreErrorKind::PermissionDenied,
            "{target}"
        );
        assert!(l.skipped[0].detail.contains("file_ptr_roots"), "{target}");
        for store in ["local", "branch"] {
            assert!(
                published_files(&lab.path(store)).is_empty(),
                "{target}: {store}"
            );
        }
    }
    // A target inside one of the chain's own stores is followed.
    std::fs::create_dir_all(lab.path("main").join("drops")).unwrap();
    std::fs::copy(fixture(PDB), lab.path("main").join("drops").join(PDB)).unwrap();
    std::fs::write(
        &ptr,
        format!(
            "PATH:{}",
            lab.path("main").join("drops").join(PDB).display()
        ),
    )
    .unwrap();
    let c = lab.cascade(&lab.three_tier()).await;
    let f = c
        .fetch(&key)
        .await
        .unwrap()
        .expect("followed inside the store");
    assert_eq!(f.form, Form::FilePtr);
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
}

/// Writes `body` under `key`'s final name (in `form`) in a lab store, as an older tool or a
/// crashed writer would have left it.
fn plant(lab: &Lab, store: &str, key: &symcascade::key::Key, form: Form, body: &[u8]) {
    let p = lab.file_in(store, key, form);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A one-member MSZIP cabinet of `body` named `member`.
pub(crate) fn cab_of(member: &str, body: &[u8]) -> Vec<u8> {
    symcascade::compress::write_cab(member, &mut &body[..], std::io::Cursor::new(Vec::new()))
        .unwrap()
        .into_inner()
}

/// Garbage under symbol names, each as (what, key, body).
fn garbage() -> Vec<(&'static str, symcascade::key::Key, Vec<u8>)> {
    vec![
        ("0-byte PDB", pdb_key(), Vec::new()),
        (
            "HTML page",
            pdb_key(),
            b"<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n".to_vec(),
        ),
        (
            "pointer text",
            key_of(DLL),
            b"PATH:\\\\MainOffice\\drop\\attach_amd64.dll".to_vec(),
        ),
        (
            "another build's PDB",
            pdb_key(),
            std::fs::read(fixture(PDB_X86)).unwrap(),
        ),
    ]
}

#[tokio::test]
async fn garbage_in_the_main_store_is_refused_as_corrupt_and_written_nowhere() {
    for (what, key, body) in garbage() {
        // Three tiers (spooled copy) and two (the direct-stream path).
        for three in [true, false] {
            let lab = Lab::new();
            plant(&lab, "main", &key, Form::Plain, &body);
            let path = if three {
                lab.three_tier()
            } else {
                format!("srv*{}*{}", lab.s("local"), lab.s("main"))
            };
            let l = lab.cascade(&path).await.lookup(&key).await.unwrap();
            assert!(
                l.fetched.is_none(),
                "{what} (three tiers: {three}) was a hit"
            );
            assert_eq!(l.skipped.len(), 1, "{what}: {:?}", l.skipped);
            let s = &l.skipped[0];
            assert_eq!(
                (s.op, s.kind, s.store.as_str()),
                (
                    SkipOp::Read,
                    StoreErrorKind::Corrupt,
                    lab.s("main").as_str()
                ),
                "{what}"
            );
            assert!(s.detail.contains(key.name()), "{what}: {}", s.detail);
            for t in ["local", "branch"] {
                assert!(published_files(&lab.path(t)).is_empty(), "{what} in {t}");
            }
        }
    }
    // A name whose type cannot be keyed: only the 0-byte check applies.
    let txt = symcascade::key::Key::new("notes.txt", "1234ABCD").unwrap();
    let lab = Lab::new();
    plant(&lab, "main", &txt, Form::Plain, b"");
    let c = lab.cascade(&lab.three_tier()).await;
    assert!(c.fetch(&txt).await.unwrap().is_none());
    plant(&lab, "main", &txt, Form::Plain, b"any text");
    let f = c
        .fetch(&txt)
        .await
        .unwrap()
        .expect("text under a .txt name");
    assert_eq!(f.tier, 2);
    assert_eq!(
        std::fs::read(lab.file_in("local", &txt, Form::Plain)).unwrap(),
        b"any text"
    );
}

#[tokio::test]
async fn bad_cabinets_are_refused_whole_with_and_without_no_uncompress() {
    let key = pdb_key();
    let good = cab_of(key.name(), &std::fs::read(fixture(PDB)).unwrap());
    let two = {
        let mut b = cab::CabinetBuilder::new();
        let f = b.add_folder(cab::CompressionType::MsZip);
        f.add_file(key.name());
        f.add_file("extra.txt");
        let mut w = b.build(std::io::Cursor::new(Vec::new())).unwrap();
        let body = std::fs::read(fixture(PDB)).unwrap();
        while let Some(mut f) = w.next_file().unwrap() {
            std::io::Write::write_all(&mut f, &body).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("two-member cabinet", two),
        ("truncated cabinet", good[..good.len() / 2].to_vec()),
        (
            "garbage after MSCF",
            b"MSCF\0\0\0\0this is no cabinet".to_vec(),
        ),
        (
            "cabinet of another build's PDB",
            cab_of(key.name(), &std::fs::read(fixture(PDB_X86)).unwrap()),
        ),
    ];
    for (what, body) in cases {
        for uncompress in [false, true] {
            let lab = Lab::new();
            plant(&lab, "main", &key, Form::Compressed, &body);
            let opts = CascadeOptions {
                uncompress,
                ..Default::default()
            };
            let c = lab
                .cascade_with(
                    &lab.three_tier(),
                    opts,
                    Arc::new(symcascade::store::open::LocalOnly),
                )
                .await;
            let l = c.lookup(&key).await.unwrap();
            assert!(
                l.fetched.is_none(),
                "{what} (uncompress {uncompress}) was a hit"
            );
            assert_eq!(
                l.skipped.iter().map(|s| (s.op, s.kind)).collect::<Vec<_>>(),
                vec![(SkipOp::Read, StoreErrorKind::Corrupt)],
                "{what}"
            );
            for t in ["local", "branch"] {
                assert!(published_files(&lab.path(t)).is_empty(), "{what} in {t}");
            }
            // Only this process's spool lock file (removed when the process ends) remains.
            assert!(
                files_with_len(&lab.path("spool"))
                    .iter()
                    .all(|(p, _)| p.ends_with(".lock")),
                "spool files left: {what}"
            );
        }
    }
    // The good cabinet still goes through with NoUncompress, compressed everywhere.
    let lab = Lab::new();
    plant(&lab, "main", &key, Form::Compressed, &good);
    let opts = CascadeOptions {
        uncompress: false,
        ..Default::default()
    };
    let c = lab
        .cascade_with(
            &lab.three_tier(),
            opts,
            Arc::new(symcascade::store::open::LocalOnly),
        )
        .await;
    let f = c.fetch(&key).await.unwrap().unwrap();
    assert_eq!(f.written.len(), 2);
    same(
        &lab.file_in("local", &key, Form::Compressed),
        &lab.file_in("main", &key, Form::Compressed),
    );
}

#[tokio::test]
async fn a_bad_file_under_a_final_name_is_replaced_by_a_verified_copy() {
    let key = pdb_key();
    // A 0-byte file in the local store (served in place until now) and another build's PDB
    // in the branch store (AlreadyPresent for every put until now).
    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    plant(&lab, "local", &key, Form::Plain, b"");
    let c = lab.cascade(&lab.three_tier()).await;
    let l = c.lookup(&key).await.unwrap();
    let f = l.fetched.expect("hit");
    assert_eq!(f.tier, 2, "the bad local file is treated as absent");
    assert_eq!(
        (
            l.skipped[0].op,
            l.skipped[0].kind,
            l.skipped[0].store.clone()
        ),
        (SkipOp::Read, StoreErrorKind::Corrupt, lab.s("local"))
    );
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
    assert!(f.written.iter().all(|w| w.new), "{:?}", f.written);
    // Now a warm local hit, verified and answered in place.
    let l = c.lookup(&key).await.unwrap();
    assert_eq!((l.fetched.unwrap().tier, l.skipped.len()), (0, 0));

    let lab = Lab::new();
    lab.publish("main", &[PDB], Form::Plain).await;
    plant(
        &lab,
        "branch",
        &key,
        Form::Plain,
        &std::fs::read(fixture(PDB_X86)).unwrap(),
    );
    let c = lab.cascade(&lab.three_tier()).await;
    let l = c.lookup(&key).await.unwrap();
    assert_eq!(l.fetched.as_ref().unwrap().tier, 2);
    same(&lab.file_in("branch", &key, Form::Plain), &fixture(PDB));
    same(&lab.file_in("local", &key, Form::Plain), &fixture(PDB));
    assert!(
        published_files(&lab.path("branch"))
            .iter()
            .all(|p| !p.contains("tmp")),
        "no temp file left"
    );
}

// Linux-only: a real full disk (tmpfs).
#[cfg(unix)]
#[tokio::test]
async fn a_full_spool_disk_is_a_local_error_not_a_corrupt_source() {
    let lab = Lab::new();
    lab.publish("main", &[BIG_PDB], Form::Compressed).await;
    let key = key_of(BIG_PDB);
    let cab_len = std::fs::metadata(lab.file_in("main", &key, Form::Compressed))
        .unwrap()
        .len();
    let pdb_len = std::fs::metadata(fixture(BIG_PDB)).unwrap().len();
    // Room for the compressed file, not for its expansion.
    let size = (cab_len + pdb_len) / 2;
    assert!(cab_len < size && size < pdb_len);
    let _tmpfs = Tmpfs::mount(&lab.path("spool"), &format!("{}k", size / 1024));
    let c = lab.cascade(&lab.three_tier()).await;
    let e = c.lookup(&key).await.expect_err("a local error, not a miss");
    assert!(
        matches!(e, symcascade::cascade::CascadeError::Spool { .. }),
        "{e}"
    );
    assert!(published_files(&lab.path("local")).is_empty());
    assert!(published_files(&lab.path("branch")).is_empty());
}

/// Renames every file and folder under `root` to upper case, as SymStore's own tools and older
/// caches leave stores (`NTDLL.PDB\1EB8…\NTDLL.PDB`).
pub(crate) fn upper_case_tree(root: &std::path::Path) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            upper_case_tree(&p);
        }
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name != "000Admin" && name != "index2.txt" && name != "pingme.txt" {
            // Two steps: a case-insensitive file system (Windows, Wine) sees one name.
            let tmp = p.with_file_name(format!("{name}.tmp"));
            std::fs::rename(&p, &tmp).unwrap();
            std::fs::rename(&tmp, p.with_file_name(name.to_ascii_uppercase())).unwrap();
        }
    }
}

/// An opener of local stores that keeps a handle on each (clones share their counters).
#[derive(Debug, Default)]
struct Keeping(std::sync::Mutex<Vec<symcascade::store::LocalStore>>);

impl symcascade::store::open::StoreOpener for Keeping {
    fn open_store(
        &self,
        location: &symcascade::sympath::Location,
    ) -> Result<Arc<dyn symcascade::store::Store>, symcascade::store::StoreError> {
        let s = symcascade::store::LocalStore::new(location.to_string());
        self.0.lock().unwrap().push(s.clone());
        Ok(Arc::new(s))
    }
}

/// Issue #14: a store written in upper case is found by the lower-case requests debuggers
/// make, on Linux (ext4/tmpfs are case-sensitive) and on Windows, without listing a directory
/// per request; what the cascade writes is in canonical case (index upper case).
#[tokio::test]
async fn an_upper_case_store_answers_lower_case_requests_without_listing() {
    let lab = Lab::new();
    lab.publish("main", &ALL, Form::Plain).await;
    upper_case_tree(&lab.path("main"));
    assert!(lab.path("main").join("ATTACH_AMD64.PDB").is_dir());
    let opener = Arc::new(Keeping::default());
    let c = lab
        .cascade_with(&lab.three_tier(), CascadeOptions::default(), opener.clone())
        .await;
    for name in ALL {
        let k = key_of(name);
        let lower = symcascade::key::Key::new(
            &k.name().to_ascii_lowercase(),
            &k.index().to_ascii_lowercase(),
        )
        .unwrap();
        let f = c.fetch(&lower).await.unwrap().expect("found in any case");
        assert_eq!(f.tier, 2, "{name}");
        same(&lab.file_in("local", &k, Form::Plain), &fixture(name));
        // A second request is a local hit.
        assert_eq!(c.fetch(&lower).await.unwrap().unwrap().tier, 0);
    }
    let stores = opener.0.lock().unwrap();
    // At most the root index of each store (taken once per 30 s, for names asked in neither
    // their own, upper nor lower case); no listing per request (12 lookups here).
    for s in stores.iter() {
        assert!(
            s.listings() <= 1,
            "{}: {} listings",
            s.root().display(),
            s.listings()
        );
    }
}

/// Issue #14: stores whose files lie beyond MAX_PATH (260 characters) on Windows, as a deep
/// `C:\Symbols` under a profile or a build tree makes them: read, written and found again
/// (Rust's std turns long absolute paths into `\\?\` paths; this checks we never build one
/// that it cannot, e.g. a relative one).
#[tokio::test]
async fn stores_beyond_max_path_are_read_and_written() {
    let lab = Lab::new();
    let deep = |name: &str| {
        let mut p = lab.path(name);
        for i in 0..6 {
            p = p.join(format!(
                "a-rather-long-folder-name-for-depth-{i}-{}",
                "x".repeat(12)
            ));
        }
        p
    };
    let (main, local) = (deep("main"), deep("local"));
    let s = symcascade::store::LocalStore::new(&main);
    symcascade::publish::publish_file(&s, &fixture(PDB), Tiering::OneTier, Form::Plain)
        .await
        .unwrap();
    let key = pdb_key();
    let rel = symcascade::layout::path_for(&key, Tiering::OneTier, Form::Plain).to_string();
    let local_file = local.join(&rel);
    assert!(
        local_file.display().to_string().len() > 300,
        "{}",
        local_file.display()
    );
    let sympath = format!("srv*{}*{}", local.display(), main.display());
    let c = lab.cascade(&sympath).await;
    let f = c.fetch(&key).await.unwrap().expect("found");
    assert_eq!(f.tier, 1);
    same(&local_file, &fixture(PDB));
    assert_eq!(c.fetch(&key).await.unwrap().unwrap().tier, 0, "found again");
}
