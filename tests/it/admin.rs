//! Store administration: `age` (local and SMB), the agent's `[aging]`, `add`/`del` with
//! `000Admin` checked against PyPI `symstore`, and `query`.

// On Windows its PyPI symstore helpers serve Linux-only tests (README "Testing").
#![cfg_attr(windows, allow(dead_code))]

use crate::harness::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

const HOUR: u64 = 3600;

/// Writes `<root>/<name>/<index>/<file>` of `len` bytes with write time `mtime`.
fn put(root: &Path, name: &str, index: &str, file: &str, len: usize, mtime: SystemTime) {
    let d = root.join(name).join(index);
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(file);
    std::fs::write(&p, vec![b'x'; len]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

fn key_name(i: usize) -> (String, String) {
    (format!("k{i:04}.bin"), format!("{i:032X}1"))
}

/// Key folders of a one-tier store (not `000*`), with their total size.
fn key_sizes(root: &Path) -> Vec<(String, u64)> {
    let mut m = std::collections::BTreeMap::new();
    for (p, len) in files_with_len(root) {
        if p.starts_with("000") || !p.contains('/') {
            continue;
        }
        let key: Vec<&str> = p.splitn(3, '/').take(2).collect();
        *m.entry(key.join("/")).or_insert(0) += len;
    }
    m.into_iter().collect()
}

fn total(root: &Path) -> u64 {
    key_sizes(root).iter().map(|(_, n)| n).sum()
}

fn out(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A store of 1,000 keys: key `i` was last used `2000 - i` hours ago (key 0 the oldest), holds
/// `100 * (i % 7 + 1)` bytes plain, and every tenth also a compressed form and a `file.ptr`.
/// Plus `000Admin`, `000Cascade`, `000Other` and a root file, all old.
fn thousand_keys(root: &Path) -> u64 {
    let now = SystemTime::now();
    let mut sum = 0;
    for i in 0..1000 {
        let (name, index) = key_name(i);
        let t = now - Duration::from_secs((2000 - i as u64) * HOUR);
        let len = 100 * (i % 7 + 1);
        put(root, &name, &index, &name, len, t);
        sum += len as u64;
        if i % 10 == 0 {
            put(root, &name, &index, "k.bi_", 50, t);
            put(root, &name, &index, "file.ptr", 20, t);
            sum += 70;
        }
    }
    let old = now - Duration::from_secs(5000 * HOUR);
    for d in ["000Admin", "000Cascade", "000Other"] {
        put(root, d, "sub", "f.txt", 1000, old);
    }
    std::fs::write(root.join("pingme.txt"), b"").unwrap();
    sum
}

#[test]
fn age_max_size_on_1000_keys_removes_oldest_first_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let sum = thousand_keys(&root);
    // A key being written (our temp name) though it is the oldest: never removed.
    let (n0, i0) = key_name(0);
    put(
        &root,
        &n0,
        &i0,
        ".k0000.bin.abc123.symcascade-tmp",
        10,
        SystemTime::now(),
    );
    let before = files_with_len(&root);
    let cap: u64 = 100_000;
    assert!(sum > 3 * cap, "{sum}");
    let store = root.to_str().unwrap();
    let (code, dry, err) = out(bin().args(["age", "--dry-run", "--max-size", "100KB", store]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(files_with_len(&root), before, "--dry-run changed the store");
    assert!(dry.contains("would remove k0001.bin/"), "{dry}");

    let t = std::time::Instant::now();
    let (code, stdout, err) = out(bin().args(["age", "--json", "--max-size", "100KB", store]));
    eprintln!("age over 1,000 keys: {:?}", t.elapsed());
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let left = total(&root);
    assert!(left <= cap, "{left} > {cap}");
    assert_eq!(report["bytes_after"].as_u64(), Some(left));
    // The dry run announced exactly what the real run removed.
    let removed: Vec<String> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "would remove {}/{}",
                r["name"].as_str().unwrap(),
                r["index"].as_str().unwrap()
            )
        })
        .collect();
    let announced: Vec<&str> = dry
        .lines()
        .filter(|l| l.starts_with("would remove"))
        .collect();
    assert_eq!(removed.len(), announced.len());
    for (r, a) in removed.iter().zip(&announced) {
        assert!(a.starts_with(r.as_str()), "{a} vs {r}");
    }
    // Oldest first: the survivors (busy key 0 aside) are exactly the most recent keys.
    let keys = key_sizes(&root);
    let first_kept: usize = keys
        .iter()
        .map(|(k, _)| k[1..5].parse::<usize>().unwrap())
        .filter(|&i| i != 0)
        .min()
        .unwrap();
    for i in first_kept..1000 {
        let (n, ix) = key_name(i);
        assert!(
            root.join(&n).join(&ix).join(&n).exists(),
            "key {i} removed out of order"
        );
    }
    for i in 1..first_kept {
        assert!(
            !root.join(key_name(i).0).exists(),
            "key {i} and its name folder remain"
        );
    }
    // Whole key folders go (all forms); busy and reserved folders stay.
    assert!(
        root.join(&n0).join(&i0).join(&n0).exists(),
        "busy key removed"
    );
    for d in ["000Admin", "000Cascade", "000Other"] {
        assert!(root.join(d).join("sub/f.txt").exists(), "{d} touched");
    }
    assert!(root.join("pingme.txt").exists());
    // Nothing over the cap left to do: a second run removes nothing.
    let (_, again, _) = out(bin().args(["age", "--max-size", "100KB", store]));
    assert!(again.contains("removed 0 keys"), "{again}");
}

#[test]
fn age_unused_for_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let now = SystemTime::now();
    put(
        &root,
        "a.bin",
        "AA1",
        "a.bin",
        10,
        now - Duration::from_secs(40 * 86400),
    );
    put(
        &root,
        "b.bin",
        "BB1",
        "b.bin",
        10,
        now - Duration::from_secs(86400),
    );
    let store = root.to_str().unwrap();
    let (code, o, e) = out(bin().args(["age", "--unused-for", "30d", store]));
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("removed a.bin/AA1"), "{o}");
    assert!(!root.join("a.bin").exists() && root.join("b.bin/BB1/b.bin").exists());
    let (code, _, e) = out(bin().args(["age", "--max-size", "lots", store]));
    assert_eq!(code, 2);
    assert!(e.contains("\"lots\""), "{e}");
    let (code, _, e) = out(bin().args(["age", store]));
    assert_eq!(code, 2);
    assert!(e.contains("--max-size"), "{e}");
    let (code, _, e) = out(bin().args(["age", "--max-size", "1KB", "https://example.invalid/sym"]));
    assert_eq!(code, 2);
    assert!(e.contains("HTTP store"), "{e}");
}

#[test]
fn query_lists_keys_forms_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let t = SystemTime::now() - Duration::from_secs(HOUR);
    put(&root, "a.pdb", "ABC1", "a.pdb", 100, t);
    put(&root, "a.pdb", "ABC1", "a.pd_", 40, t);
    put(&root, "b.dll", "1234c000", "file.ptr", 12, t);
    put(&root, "000Admin", "x", "y", 5, t);
    let (code, o, e) = out(bin().args(["query", "--json", root.to_str().unwrap()]));
    assert_eq!(code, 0, "{e}");
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{o}");
    assert_eq!(rows[0]["name"], "a.pdb");
    assert_eq!(rows[0]["forms"], serde_json::json!(["plain", "compressed"]));
    assert_eq!(rows[0]["bytes"], 140);
    assert_eq!(rows[1]["forms"], serde_json::json!(["file_ptr"]));
    let (_, table, _) = out(bin().args(["query", root.to_str().unwrap()]));
    assert!(
        table.contains("plain,compressed") && table.ends_with("2 keys, 152 bytes\n"),
        "{table}"
    );
}

const PY: &str = "/usr/bin/python3";

fn have_pypi_symstore() -> bool {
    let have = Command::new(PY)
        .args(["-c", "import symstore"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(!is_ci(), "CI must install PyPI symstore (see .ci/run)");
        eprintln!("skipping: PyPI `symstore` not installed");
    }
    have
}

fn pypi_symstore(args: &[&str]) {
    run(Command::new(PY)
        .args([
            "-c",
            "import sys; from symstore.command_line import main; sys.argv[0] = 'symstore'; sys.exit(main())",
        ])
        .args(args));
}

fn admin_file(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join("000Admin").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Splits a server/history line into fields, replacing a date and a time field (checked for
/// SymStore's `MM/DD/YYYY` and `HH:MM:SS` shapes) by placeholders.
fn fields(line: &str) -> Vec<String> {
    let mut f: Vec<String> = line.split(',').map(String::from).collect();
    if f.get(1).map(String::as_str) == Some("add") {
        let (d, t) = (&f[3], &f[4]);
        let shape = |s: &str, sep: char, parts: &[usize]| {
            let p: Vec<&str> = s.split(sep).collect();
            p.len() == parts.len()
                && p.iter()
                    .zip(parts)
                    .all(|(x, n)| x.len() == *n && x.bytes().all(|b| b.is_ascii_digit()))
        };
        assert!(shape(d, '/', &[2, 2, 4]), "date {d:?} in {line}");
        assert!(shape(t, ':', &[2, 2, 2]), "time {t:?} in {line}");
        f[3] = "<date>".into();
        f[4] = "<time>".into();
    }
    f
}

fn lines_fields(text: &str) -> Vec<Vec<String>> {
    text.split('\n')
        .filter(|l| !l.is_empty())
        .map(fields)
        .collect()
}

fn admin_names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("000Admin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The same adds and deletes through PyPI symstore and through `symcascade add/del` give the
/// same `000Admin` records, field by field (dates and times only in shape), and the same key
/// folders; `add` then `del` leaves the store's keys as they were.
// Linux-only: Debian's python3 with PyPI symstore as the oracle.
#[cfg(unix)]
#[test]
fn add_and_del_write_000admin_like_pypi_symstore_and_del_restores_the_store() {
    if !have_pypi_symstore() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (theirs, ours) = (dir.path().join("theirs"), dir.path().join("ours"));
    let f = |n: &str| fixture(n).display().to_string();
    let (dll, pdb, dll86, pdb86) = (f(DLL), f(PDB), f(DLL_X86), f(PDB_X86));
    // 1: two files; 2: one shared with 1 and a new one; then 2 is deleted, 3 added, 1 deleted.
    let adds: [(&[&str], [&str; 3]); 3] = [
        (&[&dll, &pdb], ["App", "1.0", "first, with a comma"]),
        (&[&pdb, &dll86], ["App", "1.1", ""]),
        (&[&pdb86], ["", "", "just a comment"]),
    ];
    let symcascade = |args: &[&str]| {
        let (code, o, e) = out(bin().args(args));
        assert_eq!(code, 0, "{args:?}: {e}");
        o
    };
    let ours_s = ours.to_str().unwrap();
    let add_both = |i: usize| {
        let (files, [p, v, c]) = adds[i];
        let mut a = vec!["-p", p, "-r", v, "-c", c, theirs.to_str().unwrap()];
        a.extend_from_slice(files);
        pypi_symstore(&a);
        let mut a = vec![
            "add",
            "--store",
            ours_s,
            "--product",
            p,
            "--version",
            v,
            "--comment",
            c,
        ];
        a.extend_from_slice(files);
        let o = symcascade(&a);
        // The id PyPI symstore just allocated (a `del` takes an id too).
        let id = admin_file(&theirs, "lastid.txt");
        assert!(o.ends_with(&format!("transaction {id}\n")), "{o}");
    };
    let compare = |step: &str| {
        assert_eq!(
            admin_names(&theirs),
            admin_names(&ours),
            "{step}: 000Admin files"
        );
        for name in admin_names(&theirs) {
            let (t, o) = (admin_file(&theirs, &name), admin_file(&ours, &name));
            if name == "lastid.txt" {
                assert_eq!(o, t, "{step}: {name}");
            } else if name.starts_with("00000") {
                // Field by field, unquoted; PyPI symstore leaves out the last closing quote
                // that symstore.exe writes (and we write): the only byte difference.
                let unq = |s: &str| -> Vec<Vec<String>> {
                    s.lines()
                        .map(|l| {
                            l.split("\",\"")
                                .map(|f| f.trim_matches('"').to_string())
                                .collect()
                        })
                        .collect()
                };
                assert_eq!(unq(&o), unq(&t), "{step}: {name}");
                assert_eq!(
                    o.replace("\"\n", "\n"),
                    t,
                    "{step}: {name} beyond the quote"
                );
            } else {
                assert_eq!(lines_fields(&o), lines_fields(&t), "{step}: {name}");
                assert_eq!(
                    o.ends_with('\n'),
                    t.ends_with('\n'),
                    "{step}: {name} line end"
                );
            }
        }
        let keys = |r: &Path| {
            published_files(r)
                .into_iter()
                .filter(|p| !p.starts_with("000Admin"))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&ours), keys(&theirs), "{step}: key folders");
    };
    add_both(0);
    compare("add 1");
    let after_first = files_with_len(&ours);
    add_both(1);
    compare("add 2");
    pypi_symstore(&["-d", "0000000002", theirs.to_str().unwrap()]);
    let o = symcascade(&["del", "--store", ours_s, "0000000002"]);
    assert!(o.contains("1 key folders removed"), "{o}");
    compare("del 2");
    // add then del: the store is as it was (the key shared with transaction 1 stays) but for
    // the admin folders: 000Admin's history, 000Cascade's bounded writer-lock stripes.
    let now: Vec<_> = files_with_len(&ours)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("000"))
        .collect();
    let was: Vec<_> = after_first
        .into_iter()
        .filter(|(p, _)| !p.starts_with("000"))
        .collect();
    assert_eq!(now, was, "add then del changed the keys");
    add_both(2);
    compare("add 3");
    pypi_symstore(&["-d", "0000000001", theirs.to_str().unwrap()]);
    symcascade(&["del", "--store", ours_s, "1"]);
    compare("del 1");
    assert!(admin_file(&ours, "history.txt").ends_with("0000000005,del,0000000001"));
    // Unknown transaction and bad ids: exit 2 with the id named.
    let (code, _, e) = out(bin().args(["del", "--store", ours_s, "0000000001"]));
    assert_eq!(code, 2);
    assert!(e.contains("0000000001"), "{e}");
    let (code, _, e) = out(bin().args(["del", "--store", ours_s, "one"]));
    assert_eq!(code, 2);
    assert!(e.contains("\"one\""), "{e}");
    let (code, _, e) = out(bin().args(["add", "--store", ours_s, "--comment", "a \"b\"", &dll]));
    assert_eq!(code, 2);
    assert!(e.contains("--comment"), "{e}");
}

/// `age` over SMB against the Samba lab: lists with sizes and times, removes whole key folders
/// (and empty name folders), leaves `000*` alone.
#[cfg(unix)]
#[test]
fn age_on_an_smb_store() {
    let Some(samba) = crate::samba::Samba::try_start() else {
        return;
    };
    let root = samba.share_dir("BranchOfficeA");
    let now = SystemTime::now();
    for i in 0..20 {
        let (n, ix) = key_name(i);
        put(
            &root,
            &n,
            &ix,
            &n,
            1000,
            now - Duration::from_secs((100 - i as u64) * HOUR),
        );
    }
    put(
        &root,
        &key_name(3).0,
        "FFFF1",
        "k.bi_",
        500,
        now - Duration::from_secs(HOUR),
    );
    put(
        &root,
        "000Cascade",
        "requests",
        "r.req",
        10,
        now - Duration::from_secs(900 * HOUR),
    );
    let unc = samba.unc("BranchOfficeA");
    let (code, o, e) = out(bin().args(["age", "--dry-run", "--max-size", "10KB", &unc]));
    assert_eq!(code, 0, "{e}");
    assert!(o.contains("would remove 11 keys"), "{o}");
    assert_eq!(total(&root), 20_500);
    let (code, o, e) = out(bin().args(["age", "--json", "--max-size", "10KB", &unc]));
    assert_eq!(code, 0, "{o} {e}");
    assert!(total(&root) <= 10_000, "{o}");
    // Oldest first: keys 0 to 10 (11,000 bytes) leave 9,500.
    for i in 0..=10 {
        assert!(!root.join(key_name(i).0).exists() || i == 3, "key {i}: {o}");
    }
    // k0003.bin's other index was used an hour ago: it stays with its name folder.
    assert!(root.join(key_name(3).0).join("FFFF1/k.bi_").exists());
    assert!(!root.join(key_name(3).0).join(key_name(3).1).exists());
    for i in 11..20 {
        assert!(root.join(key_name(i).0).exists(), "key {i} removed");
    }
    assert!(root.join("000Cascade/requests/r.req").exists());
    let (code, o, _) = out(bin().args(["query", &unc]));
    assert_eq!(code, 0);
    assert!(o.ends_with("10 keys, 9500 bytes\n"), "{o}");
}

/// An agent with `[aging] max_size` keeps its local tier under the cap during a prefetch of
/// ten times the cap, removing least recently used keys, and logs and counts it.
// Linux-only: stops the agent with SIGTERM (kill(1)).
#[cfg(unix)]
#[test]
fn agent_keeps_its_local_tier_under_max_size_during_a_large_prefetch() {
    let lab = Lab::new();
    let n = 60;
    let old = SystemTime::now() - Duration::from_secs(HOUR);
    let mut manifest = String::new();
    for i in 0..n {
        let (name, index) = key_name(i);
        put(&lab.path("main"), &name, &index, &name, 20_000, old);
        manifest += &format!("{name},{index},1\n");
    }
    std::fs::write(lab.path("manifest.txt"), manifest).unwrap();
    let cfg = lab.path("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "sympath = '{}'\n[agent]\nid = \"DESK-1\"\nrescan_interval = \"1s\"\nmax_parallel = 2\n\
             [aging]\nmax_size = \"200KB\"\ninterval = \"100ms\"\ngrace = \"0s\"\n",
            lab.three_tier()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(lab.path("agent.log")).unwrap();
    let mut agent = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("TMPDIR", lab.path("spool"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::create_dir_all(lab.path("spool")).unwrap();
    let (code, _, e) = out(bin().arg("--config").arg(&cfg).args([
        "prefetch",
        "--mine",
        "--manifest",
        lab.path("manifest.txt").to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{e}");
    let requests = lab.path("branch/000Cascade/requests");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut peak, mut copied) = (0, std::collections::BTreeSet::new());
    loop {
        let sizes = key_sizes(&lab.path("local"));
        peak = peak.max(sizes.iter().map(|(_, b)| b).sum::<u64>());
        copied.extend(sizes.into_iter().map(|(k, _)| k));
        let queued = std::fs::read_dir(&requests).map(|r| r.count()).unwrap_or(0);
        if queued == 0 && copied.len() == n {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{queued} queued, {} copied",
            copied.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let left = total(&lab.path("local"));
    let _ = Command::new("kill").arg(agent.id().to_string()).status();
    let _ = agent.wait();
    let log = std::fs::read_to_string(lab.path("agent.log")).unwrap();
    eprintln!(
        "local tier: peak {peak} bytes sampled, {left} at the end (cap 200000, {} keys seen)",
        copied.len()
    );
    assert!(left <= 200_000, "{left}\n{log}");
    // Bounded throughout: at most the cap plus what one 100 ms interval lets in.
    assert!(peak <= 400_000, "peak {peak}");
    assert!(
        log.contains("aging: removed least recently used keys"),
        "{log}"
    );
    // What is left is what fits: at most 10 keys of 20 KB.
    let kept = key_sizes(&lab.path("local"));
    assert!(!kept.is_empty() && kept.len() <= 10, "{kept:?}");
}
