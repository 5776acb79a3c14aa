//! The `symcascade` binary: exit codes, human and JSON output, a real permission denial.

use crate::harness::*;
use std::process::Command;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_symcascade"));
    c.env_remove("_NT_SYMBOL_PATH")
        .env_remove("_NT_ALT_SYMBOL_PATH");
    c
}

pub fn out(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn parse_shows_the_three_store_chain() {
    let (code, stdout, _) = out(bin().args([
        "parse",
        r"srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols",
    ]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("3 stores"), "{stdout}");
    assert!(
        lines[1].contains("downstream") && lines[1].contains(r"C:\Symbols"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("intermediate") && lines[2].contains(r"\\BranchOfficeA\Symbols"),
        "{stdout}"
    );
    assert!(
        lines[3].contains("upstream") && lines[3].contains(r"\\MainOffice\Symbols"),
        "{stdout}"
    );
    let (code, json, _) = out(bin().args(["parse", "--json", r"srv*a*\\h:445\s*https://x/y"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["elements"][0]["stores"].as_array().unwrap().len(), 3);
    assert_eq!(v["elements"][0]["stores"][1]["location"]["port"], 445);
    // Malformed: exit 2 with the element, offset and reason.
    let (code, _, err) = out(bin().args(["parse", r"C:\x;cache*a*b"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("cache*a*b") && err.contains("offset 5"),
        "{err}"
    );
}

#[test]
fn get_exit_codes_and_outputs() {
    let lab = Lab::new();
    let (code, _, _) = out(bin()
        .args(["add", "--store"])
        .arg(lab.path("main"))
        .args(ALL.map(fixture)));
    assert_eq!(code, 0);
    let sympath = lab.three_tier();
    // A PE file gives its PDB's key; the local path is printed.
    let (code, stdout, err) = out(bin().args(["get", "--sympath", &sympath]).arg(fixture(DLL)));
    assert_eq!(code, 0, "{err}");
    let printed = std::path::PathBuf::from(stdout.trim());
    assert_eq!(
        printed,
        lab.file_in("local", &pdb_key(), symcascade::layout::Form::Plain)
    );
    assert_eq!(
        std::fs::read(&printed).unwrap(),
        std::fs::read(fixture(PDB)).unwrap()
    );
    // NAME INDEX form, JSON output, from the environment variable.
    let (code, json, _) = out(bin()
        .args(["get", "--json", "attach_amd64.dll", "6AA9A872c000"])
        .env("_NT_SYMBOL_PATH", &sympath));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["fetched"]["tier"], 2);
    assert_eq!(v["fetched"]["written"].as_array().unwrap().len(), 2);
    // Not found: exit 1.
    let (code, stdout, _) = out(bin().args([
        "get",
        "--sympath",
        &sympath,
        "x.pdb",
        "0123456789ABCDEF0123456789ABCDEF1",
    ]));
    assert_eq!((code, stdout.trim()), (1, "not found"));
    // Bad key and no symbol path: exit 2 with the reason.
    let (code, _, err) = out(bin().args(["get", "--sympath", &sympath, "../x.pdb", "12"]));
    assert_eq!(code, 2);
    assert!(err.contains("path separator"), "{err}");
    let (code, _, err) = out(bin().args(["get", "x.pdb", "12"]));
    assert_eq!(code, 2);
    assert!(err.contains("_NT_SYMBOL_PATH"), "{err}");
}

/// As an unprivileged user, a branch store the user may not write is skipped (a real EACCES),
/// the local folder is still filled, and the exit code is 0.
// Linux-only: a real EACCES as `nobody` (chmod, setpriv).
#[cfg(unix)]
#[test]
fn permission_denied_branch_is_skipped() {
    let lab = Lab::new();
    let (code, _, _) = out(bin()
        .args(["add", "--store"])
        .arg(lab.path("main"))
        .arg(fixture(PDB)));
    assert_eq!(code, 0);
    // The whole lab readable and traversable by `nobody`; local writable; branch not writable.
    run(Command::new("chmod").arg("755").arg(lab.dir.path()));
    run(Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(lab.dir.path()));
    run(Command::new("chmod").arg("777").arg(lab.path("local")));
    let bin_path = env!("CARGO_BIN_EXE_symcascade");
    let spool = lab.path("spool-nobody");
    std::fs::create_dir_all(&spool).unwrap();
    run(Command::new("chmod").arg("777").arg(&spool));
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin_path)
        .args(["get", "--json", "--sympath", &lab.three_tier()])
        .arg(fixture(PDB))
        .env("TMPDIR", &spool)
        .env("HOME", &spool)
        .env_remove("_NT_SYMBOL_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["skipped"][0]["kind"], "permission_denied", "{stdout}");
    assert_eq!(v["skipped"][0]["op"], "write");
    assert!(published_files(&lab.path("branch")).is_empty());
    assert_eq!(
        std::fs::read(lab.file_in("local", &pdb_key(), symcascade::layout::Form::Plain)).unwrap(),
        std::fs::read(fixture(PDB)).unwrap()
    );
}

/// `symcascade get` through aliased `\\MainOffice\…` paths on the Samba lab, credentials from the
/// environment, a read-only branch share: the local folder is filled and the exit code is 0;
/// the password never appears in the output.
#[test]
fn get_over_smb_with_config_aliases_and_env_credentials() {
    let Some(samba) = crate::samba::Samba::try_start() else {
        return;
    };
    let lab = Lab::new();
    let (code, _, _) = out(bin()
        .args(["add", "--store"])
        .arg(samba.share_dir("MainOffice"))
        .arg(fixture(PDB)));
    assert_eq!(code, 0);
    let cfg = lab.path("symcascade.toml");
    std::fs::write(
        &cfg,
        format!(
            "sympath = 'srv*{}*\\\\BranchOfficeA\\BranchOfficeARO*\\\\MainOffice\\MainOffice'\n\
             [smb]\naliases = {{ MainOffice = \"{h}\", BranchOfficeA = \"{h}\" }}\nconnect_timeout = \"10s\"\n",
            lab.s("local"),
            h = samba.host()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = out(bin()
        .args(["-v", "get", "--config"])
        .arg(&cfg)
        .arg(fixture(DLL))
        .env("SYMCASCADE_SMB_USER", crate::samba::USER)
        .env("SYMCASCADE_SMB_PASSWORD", crate::samba::PASSWORD));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        lab.file_in("local", &pdb_key(), symcascade::layout::Form::Plain)
            .display()
            .to_string()
    );
    assert!(
        stderr.contains("BranchOfficeARO"),
        "the skip is reported: {stderr}"
    );
    assert!(!stdout.contains(crate::samba::PASSWORD) && !stderr.contains(crate::samba::PASSWORD));
    // Wrong password: a clear error naming the store, exit 3 (not found, but not every store
    // could be searched), no secret.
    let (code, stdout, stderr) = out(bin()
        .args(["get", "--config"])
        .arg(&cfg)
        .args(["x.pdb", "0123456789ABCDEF0123456789ABCDEF1"])
        .env("SYMCASCADE_SMB_USER", crate::samba::USER)
        .env("SYMCASCADE_SMB_PASSWORD", "Wrong-Secret-1"));
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("\\\\MainOffice\\MainOffice") && stderr.contains("authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("Wrong-Secret-1"));
    // Even RUST_LOG=trace (and naming the crates) prints no SMB protocol or NTLM messages:
    // an NTLM AUTHENTICATE message in a log can be cracked offline.
    std::fs::remove_dir_all(lab.path("local")).unwrap();
    let (code, _, stderr) = out(bin()
        .args(["get", "--config"])
        .arg(&cfg)
        .arg(fixture(DLL))
        .env("RUST_LOG", "trace,smb=trace,sspi=trace")
        .env("SYMCASCADE_SMB_USER", crate::samba::USER)
        .env("SYMCASCADE_SMB_PASSWORD", crate::samba::PASSWORD));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("DEBUG"), "debug logging is on: {stderr}");
    for l in stderr.lines() {
        // Capped at warn: the `smb` crate's own warnings (e.g. a signature it rejected under
        // load) still show; nothing below warn, where protocol messages are dumped.
        let crate_line = l.contains(" smb::") || l.contains(" sspi::") || l.contains("smb_msg");
        assert!(
            !crate_line || l.contains(" WARN ") || l.contains(" ERROR "),
            "an SMB/authentication crate logged below warn: {l}"
        );
        assert!(!l.to_ascii_uppercase().contains("NTLMSSP"), "{l}");
    }
    assert!(!stderr.contains('\u{1b}'), "no colour codes in a pipe");
}

const MISSING: [&str; 2] = ["x.pdb", "0123456789ABCDEF0123456789ABCDEF1"];

/// `get` of a key no store has: exit 1 only when every store was searched. A wrong password,
/// a share typo, a host that does not resolve or a local store this account may not read is
/// exit 3, with how many stores were searched and, once per reason, which stores and a hint.
#[test]
fn get_tells_absent_from_could_not_search() {
    let Some(samba) = crate::samba::Samba::try_start() else {
        return;
    };
    let lab = Lab::new();
    let cfg = |name: &str, sympath: String| {
        let p = lab.path(name);
        std::fs::write(
            &p,
            format!(
                "sympath = '{sympath}'\n[smb]\naliases = {{ MainOffice = \"{h}\", BranchOfficeA = \"{h}\" }}\nconnect_timeout = \"5s\"\n",
                h = samba.host()
            ),
        )
        .unwrap();
        p
    };
    let local = lab.s("local");
    let get = |cfg: &std::path::Path, password: &str, json: bool| {
        let mut c = bin();
        c.args(["get", "--config"]).arg(cfg);
        if json {
            c.arg("--json");
        }
        out(c
            .args(MISSING)
            .env("SYMCASCADE_SMB_USER", crate::samba::USER)
            .env("SYMCASCADE_SMB_PASSWORD", password))
    };
    // Everything searched: a plain miss, exit 1.
    let good = cfg(
        "good.toml",
        format!("srv*{local}*\\\\BranchOfficeA\\BranchOfficeA*\\\\MainOffice\\MainOffice"),
    );
    let (code, stdout, stderr) = get(&good, crate::samba::PASSWORD, false);
    assert_eq!((code, stdout.trim()), (1, "not found"), "{stderr}");
    assert!(!stderr.contains("could not be searched"), "{stderr}");
    // Wrong password: both shares fail for one reason, said once.
    let (code, stdout, stderr) = get(&good, "Wrong-Secret-1", false);
    assert_eq!((code, stdout.trim()), (3, "not found"), "{stderr}");
    assert!(
        stderr.contains("searched 1 of 3 stores; 2 could not be searched"),
        "{stderr}"
    );
    let reason_lines = stderr
        .lines()
        .filter(|l| l.starts_with("  authentication failed: "));
    assert_eq!(reason_lines.count(), 1, "{stderr}");
    assert!(stderr.contains("[smb.credentials.<host>]"), "{stderr}");
    // The same in JSON, for scripts.
    let (code, json, _) = get(&good, "Wrong-Secret-1", true);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (v["stores"].as_u64(), v["searched"].as_u64()),
        (Some(3), Some(1)),
        "{json}"
    );
    assert_eq!(v["not_searched"][0]["kind"], "auth_failed", "{json}");
    assert_eq!(
        v["not_searched"][0]["stores"].as_array().unwrap().len(),
        2,
        "{json}"
    );
    // A share typo, and a host name that resolves nowhere (no alias): two reasons.
    let typo = cfg(
        "typo.toml",
        format!("srv*{local}*\\\\BranchOfficeA\\BranchOfficeAA*\\\\NoSuchHost.invalid\\Symbols"),
    );
    let (code, _, stderr) = get(&typo, crate::samba::PASSWORD, false);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("searched 1 of 3 stores"), "{stderr}");
    assert!(
        stderr.contains("BranchOfficeAA") && stderr.contains("NoSuchHost.invalid"),
        "{stderr}"
    );
    assert!(stderr.contains("[smb] aliases"), "{stderr}");
}

/// A local store this account may not read (a real EACCES, as `nobody`): exit 3, not 1.
// Linux-only: a real EACCES as `nobody` (chmod, setpriv).
#[cfg(unix)]
#[test]
fn get_with_an_unreadable_local_store_is_exit_3() {
    let lab = Lab::new();
    run(Command::new("chmod").arg("755").arg(lab.dir.path()));
    run(Command::new("chmod").arg("777").arg(lab.path("local")));
    run(Command::new("chmod").arg("700").arg(lab.path("branch")));
    let spool = lab.path("spool-nobody");
    std::fs::create_dir_all(&spool).unwrap();
    run(Command::new("chmod").arg("777").arg(&spool));
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_symcascade"))
        .args([
            "get",
            "--sympath",
            &format!("srv*{}*{}", lab.s("local"), lab.s("branch")),
        ])
        .args(MISSING)
        .env("TMPDIR", &spool)
        .env("HOME", &spool)
        .env_remove("_NT_SYMBOL_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("searched 1 of 2 stores") && stderr.contains("permission denied"),
        "{stderr}"
    );
    assert!(stderr.contains("symcascade doctor"), "{stderr}");
}

/// The shipped systemd unit passes `systemd-analyze verify` (with ExecStart pointing at the
/// binary under test).
// Linux-only: systemd-analyze.
#[cfg(unix)]
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/service/symcascade.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/symcascade run"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("symcascade.service");
    std::fs::write(
        &p,
        unit.replace(
            "/usr/local/bin/symcascade",
            env!("CARGO_BIN_EXE_symcascade"),
        ),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&p)
        .output();
    match o {
        Ok(o) => assert!(
            o.status.success() && o.stderr.is_empty(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            assert!(
                !is_ci(),
                "CI must have systemd-analyze (scripts/test installs systemd): {e}"
            );
            eprintln!("skipping: systemd-analyze not available: {e}");
        }
    }
}

/// Outside Windows, `symcascade service …` exists (same help everywhere) but exits 2 and points
/// to the systemd unit; the hidden `run` entry too.
#[cfg(not(windows))]
#[test]
fn service_subcommand_points_to_systemd_off_windows() {
    for args in [
        &[
            "service",
            "install",
            "--account",
            r"NT AUTHORITY\NetworkService",
        ][..],
        &["service", "status"],
        &["service", "run"],
    ] {
        let (code, stdout, stderr) = out(bin().args(args));
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("service/symcascade.service"), "{stderr}");
    }
    let (code, stdout, _) = out(bin().args(["service", "--help"]));
    assert_eq!(code, 0);
    for sub in ["install", "uninstall", "start", "stop", "status"] {
        assert!(stdout.contains(sub), "{sub} missing from: {stdout}");
    }
    assert!(
        !stdout.contains("  run "),
        "`service run` is hidden: {stdout}"
    );
}

// Linux-only: the Linux account name from id(1).
#[cfg(unix)]
#[test]
fn request_is_refused_when_no_agent_watches_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("sympath = 'srv*{d}/local*{d}/branch*{d}/main'\n[agent]\nqueue = false\n"),
    )
    .unwrap();
    let (code, _, err) = out(bin().arg("--config").arg(&cfg).args([
        "request",
        "a.pdb",
        "0123456789ABCDEF0123456789ABCDEF1",
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("agent.queue = false"), "{err}");
    assert!(
        !dir.path().join("branch/000Cascade").exists(),
        "nothing queued"
    );
    // doctor names the identity even without USER (a service's environment).
    let (_, so, _) = out(bin()
        .arg("--config")
        .arg(&cfg)
        .arg("doctor")
        .env_remove("USER")
        .env_remove("USERNAME"));
    let who = so.lines().next().unwrap_or_default();
    let me = Command::new("id").arg("-un").output().unwrap();
    let me = String::from_utf8_lossy(&me.stdout).trim().to_string();
    assert!(!me.is_empty());
    assert!(
        who.starts_with("running as: ") && who.contains(&me),
        "{so} (expected the user {me})"
    );
}

/// Runs `cmd` in `cwd` and waits up to 20 s for it to exit: `None` when it was still running
/// (it is killed then), e.g. an agent that accepted a configuration it should have refused.
fn exit_within(cmd: &mut Command, cwd: &std::path::Path) -> Option<(i32, String)> {
    let mut child = cmd
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(20) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return Some((status.code().unwrap_or(-1), err));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Everything under `dir`, relative paths (files and folders), sorted.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Configuration values that passed validation but broke the agent: a Windows path on Linux
/// (files with backslashes in their names in the working directory), zero intervals (a tokio
/// panic), a huge timeout (an `Instant` overflow), an unwritable log file (a panic, exit 101).
/// `symcascade run` now exits 2 naming the key, and creates nothing in its working directory.
// Linux-only: its cases are Linux's path rules (POSIX paths; `C:\x` is valid on Windows).
#[cfg(unix)]
#[test]
fn run_refuses_config_values_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(dir.path().join("afile"), b"").unwrap();
    let good = format!("sympath = 'srv*{d}/local*{d}/branch*{d}/main'\n");
    let cases = [
        (
            format!("{good}[log]\nfile = 'C:\\x\\y.log'\n"),
            "log.file",
            "POSIX path",
        ),
        (
            format!("{good}[log]\nfile = '{d}/afile/y.log'\n"),
            "log.file",
            "afile",
        ),
        (
            format!("{good}[log]\nfile = 'logs/y.log'\n"),
            "log.file",
            "absolute",
        ),
        (
            format!("{good}[agent]\nstate_dir = 'C:\\ProgramData\\s'\n"),
            "agent.state_dir",
            "POSIX",
        ),
        (
            format!("{good}[cascade]\nspool_dir = 'D:\\spool'\n"),
            "cascade.spool_dir",
            "POSIX",
        ),
        (
            format!("{good}[agent]\nrescan_interval = \"0s\"\n"),
            "agent.rescan_interval",
            "more than 0",
        ),
        (
            format!("{good}[agent]\nbackfill_interval = \"0s\"\n"),
            "agent.backfill_interval",
            "more than 0",
        ),
        (
            format!("{good}[http]\nlisten = \"127.0.0.1:0\"\nclient_timeout = \"500000000y\"\n"),
            "http.client_timeout",
            "too long",
        ),
        (
            format!("sympath = 'srv*C:\\Symbols*{d}/branch*{d}/main'\n"),
            "sympath",
            "POSIX path",
        ),
        (
            format!("sympath = 'srv*sym*{d}/branch*{d}/main'\n"),
            "sympath",
            "absolute",
        ),
        (
            format!("sympath = 'srv*{d}/local*gs://symbols/main'\n"),
            "sympath",
            "gs://",
        ),
        // The queue stays on SMB or local stores (issue #18).
        (
            format!("sympath = 'srv*{d}/local*s3://symbols/branch*{d}/main'\n"),
            "agent.branch",
            "object store",
        ),
    ];
    for (i, (text, key, says)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let got = exit_within(bin().arg("--config").arg(&cfg).arg("run"), &cwd);
        let (code, err) =
            got.unwrap_or_else(|| panic!("{text}: `run` accepted it and kept running"));
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(key) && err.contains(says), "{text}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            tree(&cwd),
            Vec::<String>::new(),
            "{text}: created in the working directory"
        );
    }
    assert!(!dir.path().join("local").exists(), "no store was created");
}

/// The shipped examples are written for Windows: on Linux they are refused with the path to
/// edit, instead of creating `C:\Symbols` folders in the working directory.
#[cfg(not(windows))]
#[test]
fn examples_name_the_windows_path_to_edit_on_linux() {
    let cwd = tempfile::tempdir().unwrap();
    for ex in ["desktop.toml", "branch-server.toml", "symcascade.toml"] {
        let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(ex);
        let (code, err) = exit_within(bin().arg("--config").arg(&cfg).arg("run"), cwd.path())
            .unwrap_or_else(|| panic!("{ex}: `run` kept running"));
        assert_eq!(code, 2, "{ex}: {err}");
        assert!(
            err.contains("key `sympath`") && err.contains("POSIX path"),
            "{ex}: {err}"
        );
        assert_eq!(tree(cwd.path()), Vec::<String>::new(), "{ex}");
    }
}

/// `get` with a typo'd or unknown URL scheme is an error naming the element: no `s3:` or
/// `https` folder appears in the working directory, even when a hit would be copied there.
#[test]
fn get_refuses_unknown_schemes_instead_of_creating_folders() {
    let lab = Lab::new();
    let cwd = lab.path("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let (code, _, _) = out(bin()
        .args(["add", "--store"])
        .arg(lab.path("main"))
        .arg(fixture(PDB)));
    assert_eq!(code, 0);
    let main = lab.s("main");
    for (sympath, says) in [
        (
            format!("srv*gs://symbols/main*{main}"),
            "unknown scheme `gs://`",
        ),
        (
            format!("srv*https//symbols.corp/s*{main}"),
            "mistyped `https://`",
        ),
        (
            format!("srv*htps://symbols.corp/s*{main}"),
            "mistyped `https://`",
        ),
    ] {
        let (code, err) = exit_within(
            bin().args(["get", "--sympath", &sympath]).arg(fixture(PDB)),
            &cwd,
        )
        .unwrap();
        assert_eq!(code, 2, "{sympath}: {err}");
        assert!(
            err.contains(says) && err.contains(&sympath),
            "{sympath}: {err}"
        );
        assert_eq!(tree(&cwd), Vec::<String>::new(), "{sympath}");
    }
}

/// `prefetch --wait --timeout` with no agent to serve the queue: it gives up when the timeout
/// expires, names every key still pending and exits 1 (it used to wait forever).
#[test]
fn prefetch_wait_timeout_names_the_pending_keys() {
    let lab = Lab::new();
    let cfg = lab.path("c.toml");
    std::fs::write(&cfg, format!("sympath = '{}'\n", lab.three_tier())).unwrap();
    let manifest = lab.path("manifest.txt");
    std::fs::write(
        &manifest,
        "a.pdb,0123456789ABCDEF0123456789ABCDEF1,1\nb.pdb,0123456789ABCDEF0123456789ABCDEF2,1\n",
    )
    .unwrap();
    let start = std::time::Instant::now();
    let (code, stdout, stderr) = out(bin()
        .arg("--config")
        .arg(&cfg)
        .args(["prefetch", "--wait", "--timeout", "1s", "--manifest"])
        .arg(&manifest));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
    for k in [
        "a.pdb/0123456789ABCDEF0123456789ABCDEF1",
        "b.pdb/0123456789ABCDEF0123456789ABCDEF2",
    ] {
        assert!(
            stdout.contains(&format!("PENDING {k}: still queued")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("SYMCHK: PASSED files = 0, FAILED files = 0, PENDING files = 2")
            && stdout.contains("timed out after 1s"),
        "{stdout}"
    );
    // --timeout without --wait is a usage error.
    let (code, _, err) = out(bin()
        .arg("--config")
        .arg(&cfg)
        .args(["prefetch", "--timeout", "1s", "--manifest"])
        .arg(&manifest));
    assert_eq!(code, 2, "{err}");
}

/// On a terminal (a real pty, through `script`), the wait shows the time elapsed, not an ETA
/// (a key that stays pending made it read "(35w)").
// Linux-only: a terminal from script(1).
#[cfg(unix)]
#[test]
fn prefetch_wait_progress_shows_elapsed_time() {
    let lab = Lab::new();
    let cfg = lab.path("c.toml");
    std::fs::write(&cfg, format!("sympath = '{}'\n", lab.three_tier())).unwrap();
    let manifest = lab.path("manifest.txt");
    std::fs::write(&manifest, "a.pdb,0123456789ABCDEF0123456789ABCDEF1,1\n").unwrap();
    let line = format!(
        "{} --config {} prefetch --wait --timeout 3s --manifest {}",
        env!("CARGO_BIN_EXE_symcascade"),
        cfg.display(),
        manifest.display()
    );
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("_NT_SYMBOL_PATH")
        .stdin(std::process::Stdio::null())
        .output();
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            assert!(!is_ci(), "CI must have `script` (util-linux): {e}");
            eprintln!("skipping: no `script`: {e}");
            return;
        }
    };
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("replicated ["), "{shown}");
    assert!(
        shown.contains("0/1 keys, elapsed 2s"),
        "elapsed time, labelled: {shown}"
    );
    assert!(shown.contains("timed out after 3s"), "{shown}");
}

#[cfg(unix)]
/// Modes of every file and folder under `dir` (not `000Cascade`), relative paths.
fn modes(dir: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if rel.starts_with("000Cascade") {
                continue;
            }
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push((rel, e.metadata().unwrap().permissions().mode() & 0o7777));
        }
    }
    out
}

#[cfg(unix)]
/// Under umask 022, what `add` and `get` write is readable by every account (a store exported by
/// Samba or nginx, or read by another user's debugger): files 0644, folders 0755, as any file the
/// user creates — not tempfile's 0600. Checked by mode and by reading as `nobody`.
#[test]
fn written_files_follow_the_umask_and_other_users_read_them() {
    let lab = Lab::new();
    let with_umask = |args: &[&str]| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 022; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_symcascade"))
            .args(args)
            .env_remove("_NT_SYMBOL_PATH")
            .env_remove("_NT_ALT_SYMBOL_PATH");
        c
    };
    let main = lab.s("main");
    let (code, _, err) = out(with_umask(&["add", "--store", &main, "--compress"])
        .arg(fixture(PDB))
        .arg(fixture(DLL)));
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) =
        out(with_umask(&["get", "--sympath", &lab.three_tier()]).arg(fixture(DLL)));
    assert_eq!(code, 0, "{err}");
    for store in ["main", "branch", "local"] {
        let m = modes(&lab.path(store));
        assert!(!m.is_empty(), "{store} holds files");
        for (p, mode) in m {
            let want = if lab.path(store).join(&p).is_dir() {
                0o755
            } else {
                0o644
            };
            assert_eq!(mode, want, "{store}/{p}: {mode:o}");
        }
    }
    run(Command::new("chmod").arg("755").arg(lab.dir.path()));
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(stdout.trim())
        .output()
        .unwrap();
    assert!(o.status.success(), "nobody reads {}", stdout.trim());
    assert_eq!(o.stdout, std::fs::read(fixture(PDB)).unwrap());
}

/// With a two-store chain (`srv*local*main`), the second store is the upstream: the agent
/// refuses to start (exit 2, saying what to add) instead of writing its queue into the main
/// store; naming the store with `[agent] branch` is the deliberate opt-in.
#[test]
fn two_store_chain_never_queues_in_the_upstream_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("main")).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("sympath = 'srv*{d}/local*{d}/main'\n")).unwrap();
    for cmd in [
        &["run"][..],
        &["request", "a.pdb", "0123456789ABCDEF0123456789ABCDEF1"],
        &["doctor"],
    ] {
        let (code, _, err) = out(bin().arg("--config").arg(&cfg).args(cmd));
        assert_eq!(code, 2, "{cmd:?}: {err}");
        assert!(
            err.contains("[agent] branch") && err.contains("upstream"),
            "{cmd:?}: {err}"
        );
    }
    assert!(
        !dir.path().join("main/000Cascade").exists(),
        "nothing written into the main store"
    );
    // Opting in: the queue goes where the admin said.
    std::fs::write(
        &cfg,
        format!("sympath = 'srv*{d}/local*{d}/main'\n[agent]\nbranch = '{d}/main'\n"),
    )
    .unwrap();
    let (code, so, err) = out(bin().arg("--config").arg(&cfg).args(["doctor", "--json"]));
    assert!(code == 0 || code == 1, "{so} {err}");
    assert!(so.contains("\"branch\""), "{so}");
}
