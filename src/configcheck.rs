//! `symcascade config check`: everything that can be checked about a configuration without
//! running the agent, each as one [`Check`] with OK/FAIL and the reason.
//!
//! Data flow: config file → [`Config::load`] (syntax, keys, values, paths) → the agent's chain
//! ([`crate::agent::setup`]: symbol path, local/branch/upstream roles, queue holder) → the
//! HTTP front's listen address (bound and released) → the state folder and the log file
//! (created if missing, written, probe removed). Stores themselves are `doctor`'s job (it
//! contacts them as this identity); nothing here contacts a share or server.

use crate::config::Config;
use crate::sympath::Location;
use serde::Serialize;
use std::path::Path;

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: `config`, `chain`, `listen`, `state folder`, `log file`.
    pub name: &'static str,
    /// It passed.
    pub ok: bool,
    /// What was found (OK) or what is wrong and where (FAIL).
    pub detail: String,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            ok: true,
            detail: detail.into(),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Runs every check of the configuration at `path` (`None`: the built-in defaults, symbol
/// path from the environment). A config that cannot be loaded stops there (one FAIL).
pub async fn check(path: Option<&Path>, default_downstream: &Location) -> Vec<Check> {
    let config = match path {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => return vec![Check::fail("config", e.to_string())],
        },
        None => Config::default(),
    };
    let shown = path.map_or("(defaults)".into(), |p| p.display().to_string());
    let mut checks = vec![Check::ok("config", format!("{shown}: parsed and valid"))];
    let state_dir = match crate::setup::Setup::resolve(&config, default_downstream).await {
        Ok(setup) => {
            let roles: Vec<String> = setup
                .locations
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let role = crate::report::tier_role(i, setup.locations.len(), setup.branch);
                    format!("{role} {l}")
                })
                .collect();
            checks.push(Check::ok("chain", roles.join(" <- ")));
            Some(setup.state_dir)
        }
        Err(e) => {
            checks.push(Check::fail("chain", e.to_string()));
            config.agent.state_dir.clone()
        }
    };
    checks.push(listen(config.http.listen));
    if let Some(dir) = state_dir {
        checks.push(writable_dir("state folder", &dir));
    }
    if let Some(file) = &config.log.file {
        checks.push(log_file(file));
    }
    checks
}

/// The HTTP front's address can be bound now (bound, then released at once).
fn listen(addr: Option<std::net::SocketAddr>) -> Check {
    let Some(addr) = addr else {
        return Check::ok("listen", "no [http] listen: the HTTP front is off");
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::ok("listen", format!("{addr} can be bound")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Check::fail(
            "listen",
            format!(
                "key `http.listen`: {addr} is in use (another symcascade or service listens there): {e}"
            ),
        ),
        Err(e) => Check::fail(
            "listen",
            format!("key `http.listen`: cannot bind {addr}: {e}"),
        ),
    }
}

/// `dir` exists (or can be created) and a file can be written in it.
fn writable_dir(name: &'static str, dir: &Path) -> Check {
    let r = std::fs::create_dir_all(dir).and_then(|()| {
        let f = tempfile::Builder::new()
            .prefix(".symcascade-check.")
            .tempfile_in(dir)?;
        std::io::Write::write_all(&mut f.as_file(), b"check")?;
        f.close()
    });
    match r {
        Ok(()) => Check::ok(name, format!("{} is writable", dir.display())),
        Err(e) => Check::fail(name, format!("{} is not writable: {e}", dir.display())),
    }
}

/// The log file can be opened for appending (its folder created if missing); a file this
/// check created is removed again.
fn log_file(file: &Path) -> Check {
    let existed = file.exists();
    let r = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(file)
        });
    match r {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(file);
            }
            Check::ok("log file", format!("{} is writable", file.display()))
        }
        Err(e) => Check::fail(
            "log file",
            format!("key `log.file`: {} is not writable: {e}", file.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_fails_naming_the_key() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = listen(Some(l.local_addr().unwrap()));
        assert!(!c.ok && c.detail.contains("http.listen") && c.detail.contains("in use"));
        drop(l);
        assert!(listen(None).ok);
    }

    #[test]
    fn folders_and_log_files_are_written_and_left_as_found() {
        let d = tempfile::tempdir().unwrap();
        assert!(writable_dir("state folder", &d.path().join("a/b")).ok);
        assert_eq!(std::fs::read_dir(d.path().join("a/b")).unwrap().count(), 0);
        let f = d.path().join("logs/x.log");
        assert!(log_file(&f).ok);
        assert!(!f.exists(), "a file the check created is removed");
        // Under a regular file nothing can be created.
        std::fs::write(d.path().join("plain"), b"").unwrap();
        let c = writable_dir("state folder", &d.path().join("plain/state"));
        assert!(!c.ok && c.detail.contains("not writable"), "{c:?}");
        assert!(!log_file(&d.path().join("plain/x.log")).ok);
    }
}
