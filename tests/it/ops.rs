//! What an operator sees: `--noisy` probe lines and `get --json` probes over local, SMB (the
//! Samba lab) and HTTP stores; no NTLM material at any log level; journald lines; a rotating
//! log file that keeps its name; `config check`; completions and the man page; `get` of
//! several keys.

use crate::cli::{bin, out};
use crate::harness::*;
#[cfg(unix)]
use std::path::Path;

const MISSING: [&str; 2] = ["x.pdb", "0123456789ABCDEF0123456789ABCDEF1"];

/// A config whose symbol path is local ← branch share ← main share ← HTTP store.
fn four_store_config(
    lab: &Lab,
    samba: &crate::samba::Samba,
    http: &str,
    extra: &str,
) -> std::path::PathBuf {
    let p = lab.path("ops.toml");
    std::fs::write(
        &p,
        format!(
            "sympath = 'srv*{}*\\\\BranchOfficeA\\BranchOfficeA*\\\\MainOffice\\MainOffice*{http}'\n\
             [smb]\naliases = {{ MainOffice = \"{h}\", BranchOfficeA = \"{h}\" }}\nconnect_timeout = \"10s\"\n{extra}",
            lab.s("local"),
            h = samba.host()
        ),
    )
    .unwrap();
    p
}

fn with_smb_creds(c: &mut std::process::Command) -> &mut std::process::Command {
    c.env("SYMCASCADE_SMB_USER", crate::samba::USER)
        .env("SYMCASCADE_SMB_PASSWORD", crate::samba::PASSWORD)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
}

/// The stores of the four-store chain, as probe lines and JSON name them.
fn stores(lab: &Lab, http: &str) -> [String; 4] {
    [
        lab.s("local"),
        "\\\\BranchOfficeA\\BranchOfficeA".into(),
        "\\\\MainOffice\\MainOffice".into(),
        http.to_string(),
    ]
}

#[test]
fn noisy_miss_shows_every_probe_of_every_store_and_json_lists_them() {
    let Some(samba) = crate::samba::Samba::try_start() else {
        return;
    };
    let lab = Lab::new();
    std::fs::create_dir_all(lab.path("http")).unwrap();
    let up = crate::httpd::Upstream::start(lab.path("http"));
    let cfg = four_store_config(&lab, &samba, &up.url(), "");
    let (code, stdout, stderr) =
        out(with_smb_creds(bin().args(["get", "--noisy", "--config"]).arg(&cfg)).args(MISSING));
    assert_eq!((code, stdout.trim()), (1, "not found"), "{stderr}");
    let probes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("symcascade::probe"))
        .collect();
    for store in stores(&lab, &up.url()) {
        for form in ["plain", "compressed", "file.ptr"] {
            let hit = probes.iter().any(|l| {
                l.contains(&format!("store={store} "))
                    && l.contains(&format!("form={form} "))
                    && l.contains("result=miss")
                    && l.contains("ms=")
                    && l.contains("x.pdb")
            });
            assert!(hit, "no {form} probe of {store}:\n{stderr}");
        }
    }
    // Without --noisy: no probe lines.
    let (code, _, stderr) =
        out(with_smb_creds(bin().args(["get", "--config"]).arg(&cfg)).args(MISSING));
    assert_eq!(code, 1);
    assert!(!stderr.contains("symcascade::probe"), "{stderr}");
    // `[log] noisy = true` does the same as --noisy.
    let noisy_cfg = lab.path("noisy.toml");
    std::fs::write(
        &noisy_cfg,
        std::fs::read_to_string(&cfg).unwrap() + "[log]\nnoisy = true\n",
    )
    .unwrap();
    let (_, _, stderr) =
        out(with_smb_creds(bin().args(["get", "--config"]).arg(&noisy_cfg)).args(MISSING));
    assert!(
        stderr.matches("symcascade::probe").count() >= 12,
        "{stderr}"
    );
    // JSON: the same probes, with their fields.
    let (code, json, stderr) =
        out(with_smb_creds(bin().args(["get", "--json", "--config"]).arg(&cfg)).args(MISSING));
    assert_eq!(code, 1, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let probes = v["probes"].as_array().unwrap();
    for store in stores(&lab, &up.url()) {
        let of: Vec<_> = probes
            .iter()
            .filter(|p| p["store"] == store.as_str())
            .collect();
        let forms: Vec<&str> = of.iter().map(|p| p["form"].as_str().unwrap()).collect();
        for form in ["plain", "compressed", "file.ptr"] {
            assert!(forms.contains(&form), "{store}: {forms:?}");
        }
        for p in of {
            assert_eq!(p["result"], "miss", "{p}");
            assert!(
                p["ms"].is_u64() && p["path"].as_str().unwrap().contains("x.pdb")
                    || p["form"] == "index2.txt",
                "{p}"
            );
        }
    }
}

/// Whatever level is asked for — `RUST_LOG=trace`, naming the SMB and authentication crates,
/// span-scoped directives, `[log] level = "trace"`, JSON, the log file — no NTLM message,
/// SMB protocol dump or password is written.
#[test]
fn no_log_level_prints_ntlm_messages() {
    let Some(samba) = crate::samba::Samba::try_start() else {
        return;
    };
    let lab = Lab::new();
    std::fs::create_dir_all(lab.path("http")).unwrap();
    let up = crate::httpd::Upstream::start(lab.path("http"));
    let log = lab.path("logs/sym.log");
    let extra = format!("[log]\nlevel = \"trace\"\nfile = '{}'\n", log.display());
    let cfg = four_store_config(&lab, &samba, &up.url(), &extra);
    let forbidden = |text: &str, what: &str| {
        let upper = text.to_ascii_uppercase();
        for bad in [
            "NTLMSSP",
            "TLRMTVNTUA",
            "4E544C4D53535000",
            "AUTHENTICATE_MESSAGE",
        ] {
            assert!(!upper.contains(bad), "{what}: {bad} in\n{text}");
        }
        assert!(
            !text.contains(crate::samba::PASSWORD),
            "{what}: the password"
        );
        for l in text.lines() {
            let low = [
                " smb::",
                " sspi::",
                "smb_msg",
                "smb_transport",
                "\"target\":\"smb",
                "\"target\":\"sspi",
            ];
            let capped =
                l.contains("WARN") || l.contains("ERROR") || l.contains("\"level\":\"WARN");
            assert!(capped || !low.iter().any(|t| l.contains(t)), "{what}: {l}");
        }
    };
    for (rust_log, json) in [
        (Some("trace"), false),
        (
            Some("trace,smb=trace,sspi=trace,smb_transport=trace,sspi:=trace,picky=trace"),
            false,
        ),
        (Some("[]=trace,trace"), true),
        (None, false),
    ] {
        let mut c = bin();
        c.arg("-vv");
        if json {
            c.arg("--log-json");
        }
        c.args(["get", "--noisy", "--config"])
            .arg(&cfg)
            .arg(fixture(DLL));
        with_smb_creds(&mut c);
        if let Some(r) = rust_log {
            c.env("RUST_LOG", r);
        }
        // Put the file on the main share so a real SMB session authenticates and reads it.
        let main = samba.share_dir("MainOffice");
        let _ = std::fs::remove_dir_all(lab.path("local"));
        let (code, _, stderr) = out(&mut c);
        assert!(code == 1 || code == 0, "{stderr}");
        assert!(
            stderr.contains("TRACE") || stderr.contains("\"level\":\"TRACE\""),
            "trace is on: {stderr}"
        );
        assert!(
            stderr.contains("MainOffice"),
            "the share was used: {stderr}"
        );
        forbidden(&stderr, &format!("stderr with RUST_LOG={rust_log:?}"));
        let _ = main;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let file = std::fs::read_to_string(&log).unwrap();
    assert!(file.contains("TRACE"), "the file logs at trace too");
    forbidden(&file, "the log file");
}

#[test]
fn journald_gets_plain_lines_and_a_pipe_no_colour() {
    let lab = Lab::new();
    let sympath = lab.three_tier();
    let run = |journal: bool| {
        let mut c = bin();
        c.args(["get", "--noisy", "--sympath", &sympath])
            .args(MISSING);
        c.env_remove("RUST_LOG").env_remove("NO_COLOR");
        if journal {
            c.env("JOURNAL_STREAM", "8:123456");
        } else {
            c.env_remove("JOURNAL_STREAM");
        }
        out(&mut c).2
    };
    let plain = run(true);
    let lines: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("symcascade::probe"))
        .collect();
    assert!(lines.len() >= 12, "{plain}");
    for l in &lines {
        assert!(
            l.starts_with("<6>INFO symcascade::probe: "),
            "priority prefix, no timestamp: {l}"
        );
    }
    assert!(!plain.contains('\u{1b}'), "no colour codes");
    let normal = run(false);
    let first = normal
        .lines()
        .find(|l| l.contains("symcascade::probe"))
        .unwrap();
    assert!(
        first.starts_with("20") && first.contains('T'),
        "timestamped: {first}"
    );
    assert!(!normal.contains('\u{1b}'), "no colour codes in a pipe");
}

/// On a terminal (a pty from `script`), `get` of a slow 5.7 MB file shows a progress bar
/// naming the source store with bytes, rate and ETA; log lines are coloured there.
#[cfg(unix)]
#[test]
fn a_terminal_gets_a_progress_bar() {
    if !Path::new("/usr/bin/script").exists() {
        assert!(
            !is_ci(),
            "CI=true but script(1) is missing: scripts/test installs bsdutils"
        );
        return;
    }
    let lab = Lab::new();
    std::fs::create_dir_all(lab.path("http")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(lab.publish("http", &[BIG_PDB], symcascade::layout::Form::Plain));
    let up = crate::httpd::Upstream::start(lab.path("http"));
    up.set_fault(crate::httpd::Fault::Throttle {
        chunk: 256 << 10,
        pause: std::time::Duration::from_millis(60),
    });
    let key = key_of(BIG_PDB);
    let cmd = format!(
        "{} -v get --sympath 'srv*{}*{}' {} {}",
        env!("CARGO_BIN_EXE_symcascade"),
        lab.s("local"),
        up.url(),
        key.name(),
        key.index()
    );
    let (code, stdout, stderr) = out(std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("from {}", up.url())), "{stdout}");
    assert!(stdout.contains("MiB") && stdout.contains("ETA"), "{stdout}");
    assert!(stdout.contains('\u{1b}'), "colour on a terminal");
}

#[test]
fn the_log_file_keeps_its_name_and_max_files() {
    let lab = Lab::new();
    let log = lab.path("logs/symcascade.log");
    let cfg = lab.path("log.toml");
    std::fs::write(
        &cfg,
        format!(
            "sympath = '{}'\n[log]\nfile = '{}'\nlevel = \"debug\"\nnoisy = true\nmax_size = \"4KiB\"\nmax_files = 2\n",
            lab.three_tier(),
            log.display()
        ),
    )
    .unwrap();
    for _ in 0..8 {
        let (code, _, stderr) = out(bin().args(["get", "--config"]).arg(&cfg).args(MISSING));
        assert_eq!(code, 1, "{stderr}");
    }
    let mut names: Vec<String> = std::fs::read_dir(lab.path("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["symcascade.log", "symcascade.log.1", "symcascade.log.2"],
        "current name kept, two old files"
    );
    for n in &names {
        let text = std::fs::read_to_string(lab.path("logs").join(n)).unwrap();
        assert!(text.contains("\"symcascade::probe\""), "{n}: JSON lines");
        assert!(
            text.len() < 64 << 10,
            "{n} is capped near 4 KiB: {}",
            text.len()
        );
    }
    // A bad value names its key.
    std::fs::write(&cfg, "[log]\nmax_size = \"4 parsecs\"\n").unwrap();
    let (code, _, err) = out(bin().args(["get", "--config"]).arg(&cfg).args(MISSING));
    assert_eq!(code, 2);
    assert!(err.contains("max_size") && err.contains("parsecs"), "{err}");
}

// Linux-only: a read-only bind mount.
#[cfg(unix)]
#[test]
fn config_check_passes_a_good_config_and_names_what_is_wrong() {
    let lab = Lab::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = listener.local_addr().unwrap();
    // Port 0: the check binds whatever port the OS gives (no port probed and released).
    let free: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let write = |name: &str, listen: std::net::SocketAddr, state: &Path| {
        let p = lab.path(name);
        std::fs::write(
            &p,
            format!(
                "sympath = '{}'\n[http]\nlisten = \"{listen}\"\n[agent]\nstate_dir = '{}'\n[log]\nfile = '{}'\n",
                lab.three_tier(),
                state.display(),
                lab.path("logs/a.log").display()
            ),
        )
        .unwrap();
        p
    };
    let good = write("good.toml", free, &lab.path("state"));
    let (code, stdout, stderr) = out(bin().args(["config", "check", "--config"]).arg(&good));
    assert_eq!(code, 0, "{stdout}{stderr}");
    for name in ["config", "chain", "listen", "state folder", "log file"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("OK") && l.contains(name)),
            "{name}: {stdout}"
        );
    }
    assert!(stdout.contains("branch"), "the chain's roles: {stdout}");
    // Port in use.
    let bad = write("busy.toml", busy, &lab.path("state"));
    let (code, stdout, _) = out(bin().args(["config", "check", "--config"]).arg(&bad));
    assert_eq!(code, 1, "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        line.contains("listen") && line.contains("in use"),
        "{stdout}"
    );
    // A state folder on a read-only mount.
    let ro_src = lab.path("ro-src");
    std::fs::create_dir_all(&ro_src).unwrap();
    let ro = lab.path("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let _mount = ReadOnlyMount::mount(&ro_src, &ro);
    let bad = write("ro.toml", free, &ro.join("state"));
    let (code, stdout, _) = out(bin().args(["config", "check", "--config"]).arg(&bad));
    assert_eq!(code, 1, "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("FAIL")).unwrap();
    assert!(
        line.contains("state folder") && line.contains("not writable"),
        "{stdout}"
    );
    // An invalid config: one FAIL naming the key.
    std::fs::write(lab.path("inv.toml"), "[smb]\nin_flight = 0\n").unwrap();
    let (code, stdout, _) = out(bin()
        .args(["config", "check", "--config"])
        .arg(lab.path("inv.toml")));
    assert_eq!(code, 1);
    assert!(
        stdout.starts_with("FAIL") && stdout.contains("smb.in_flight"),
        "{stdout}"
    );
    drop(listener);
}

// Linux-only: bash -n and man(1).
#[cfg(unix)]
#[test]
fn completions_parse_and_the_man_page_renders() {
    let (code, script, _) = out(bin().args(["completions", "bash"]));
    assert_eq!(code, 0);
    assert!(script.contains("symcascade") && script.contains("prefetch"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("symcascade.bash");
    std::fs::write(&f, &script).unwrap();
    let st = std::process::Command::new("bash")
        .arg("-n")
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success(), "bash -n rejects the completion script");
    let (code, roff, _) = out(bin().arg("man"));
    assert_eq!(code, 0);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH symcascade"),
        "{roff}"
    );
    let page = dir.path().join("symcascade.1");
    std::fs::write(&page, &roff).unwrap();
    let o = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    match o {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            for sub in ["get", "run", "prefetch", "config", "completions"] {
                assert!(text.contains(sub), "{sub} in\n{text}");
            }
        }
        _ => assert!(
            !is_ci(),
            "CI=true but man(1) cannot render: scripts/test installs man-db"
        ),
    }
}

/// Several keys: each is looked up; the exit code is the worst (0 found, 1 absent from every
/// store, 3 not found while a store could not be searched).
#[test]
fn get_of_several_keys() {
    let lab = Lab::new();
    let (code, _, _) = out(bin()
        .args(["add", "--store"])
        .arg(lab.path("main"))
        .arg(fixture(PDB)));
    assert_eq!(code, 0);
    let sympath = lab.three_tier();
    let key = pdb_key();
    let (code, stdout, stderr) = out(bin()
        .args(["get", "--sympath", &sympath, key.name(), key.index()])
        .args(MISSING));
    assert_eq!(code, 1, "{stderr}");
    let written = lab.file_in("local", &key, symcascade::layout::Form::Plain);
    assert_eq!(
        std::fs::read(&written).unwrap(),
        std::fs::read(fixture(PDB)).unwrap()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{key}\t{}", written.display()),
            "x.pdb/0123456789ABCDEF0123456789ABCDEF1\tnot found".into()
        ]
    );
    // A store that cannot be searched makes the miss a 3; JSON is an array, one per key.
    let sympath = format!("{sympath}*\\\\nohost.invalid\\share");
    let (code, json, stderr) = out(bin()
        .args(["get", "--json", "--sympath", &sympath])
        .arg(fixture(PDB))
        .args(MISSING));
    assert_eq!(code, 3, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert!(a[0]["fetched"].is_object() && a[1]["fetched"].is_null());
    assert!(
        a[1]["probes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["result"] == "error")
    );
    // All found: 0.
    let (code, _, _) = out(bin()
        .args(["get", "--sympath", &lab.three_tier()])
        .arg(fixture(PDB))
        .args([key.name(), key.index()]));
    assert_eq!(code, 0);
}
