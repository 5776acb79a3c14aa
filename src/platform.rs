//! Platform defaults that differ on Windows: the agent's local store when the symbol path
//! names none, and where a service writes its logs.
//!
//! Data flow: pure functions of a "windows?" flag and an environment getter, so the Windows
//! rules are table-tested on every platform; `agent::setup` applies
//! [`with_default_local_store`] to the parsed symbol path before resolving it, and the Windows
//! service (`service/windows.rs`) asks [`default_log_file`] when `[log] file` is unset.

use crate::sympath::{Element, Location, StoreSpec, SymbolPath};
use std::path::PathBuf;

/// The local store a Windows agent uses when its chain names none: `C:\Symbols`, the folder
/// Microsoft's docs use for the downstream store in every `srv*` example.
pub const WINDOWS_LOCAL_STORE: &str = r"C:\Symbols";

/// The agent's default local store on this platform: [`WINDOWS_LOCAL_STORE`] on Windows, none
/// elsewhere (a Linux agent must name its local folder; the systemd unit's sandbox only allows
/// writing below `/var/cache/symcascade`).
pub fn default_local_store() -> Option<&'static str> {
    local_store_for(cfg!(windows))
}

fn local_store_for(windows: bool) -> Option<&'static str> {
    windows.then_some(WINDOWS_LOCAL_STORE)
}

/// `path` with `local` put in front of its first `srv*` chain when that chain names no local
/// store: its first store is a share or an HTTP server (`srv*\\Branch\Symbols*\\Main\Symbols`).
/// The empty token (`srv**…`) is not touched: SymSrv's rules already give it the default
/// downstream store. With `local == None`, or any other path, `path` is returned unchanged.
pub fn with_default_local_store(mut path: SymbolPath, local: Option<&str>) -> SymbolPath {
    let Some(local) = local else {
        return path;
    };
    let first_srv = path.elements.iter_mut().find_map(|e| match e {
        Element::Server { stores, .. } if !stores.is_empty() => Some(stores),
        _ => None,
    });
    if let Some(stores) = first_srv
        && matches!(&stores[0], StoreSpec::At(l) if !matches!(l, Location::Local { .. }))
    {
        stores.insert(
            0,
            StoreSpec::At(Location::Local {
                path: local.to_string(),
            }),
        );
    }
    path
}

/// `%ProgramData%\symcascade\logs\symcascade.log` (`C:\ProgramData` when the variable is
/// unset): where the Windows service logs, daily rotated, unless `[log] file` says otherwise.
pub fn default_log_file(get: impl Fn(&str) -> Option<String>) -> PathBuf {
    let pd = get("ProgramData")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| r"C:\ProgramData".to_string());
    // Backslashes on purpose: this is a Windows path, also when a test builds it on Linux.
    PathBuf::from(format!(
        r"{}\symcascade\logs\symcascade.log",
        pd.trim_end_matches('\\')
    ))
}

/// This process's identity as Windows names it on the network, `DOMAIN\user`, from the
/// variables Windows sets for every process (`USERDOMAIN`, `USERNAME`; `get` reads them). A
/// service running as LocalSystem or NetworkService has `USERNAME` = `HOST$`: on the network
/// it is the machine account, which is said. `None` when `USERNAME` is unset (not Windows).
/// Source: Microsoft, "Choosing Network Security Credentials" (symbol server pages).
pub fn process_identity(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let user = get("USERNAME").filter(|u| !u.is_empty())?;
    let who = match get("USERDOMAIN").filter(|d| !d.is_empty()) {
        Some(d) => format!("{d}\\{user}"),
        None => user.clone(),
    };
    Some(if user.ends_with('$') {
        format!("{who} (the machine account)")
    } else {
        who
    })
}

/// Whether a Windows service account is one that has no password: LocalSystem,
/// NetworkService, LocalService, or a group managed service account (`DOMAIN\name$`). For any
/// other account `symcascade service install` takes a password from the environment.
pub fn is_builtin_service_account(account: &str) -> bool {
    let a = account.to_ascii_lowercase();
    [
        "localsystem",
        ".\\localsystem",
        "nt authority\\system",
        "nt authority\\networkservice",
        "nt authority\\localservice",
    ]
    .contains(&a.as_str())
        || a.ends_with('$')
}

/// File descriptors kept free for stores, spool files and logs when sizing the front's
/// connection cap.
const FD_RESERVE: u64 = 256;

/// The HTTP front's connection cap: `wanted`, but below the open-file limit so that accepting
/// a connection never takes the last descriptor a transfer needs. On Unix the soft limit is
/// first raised to the hard limit (a service's default soft limit, 1024, is far below what a
/// branch office's debuggers open). At least 16.
pub fn connection_cap(wanted: usize) -> usize {
    let limit = raise_open_file_limit();
    let fit = limit.map_or(usize::MAX, |l| l.saturating_sub(FD_RESERVE) as usize);
    wanted.min(fit).max(16)
}

#[cfg(unix)]
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        if setrlimit(Resource::Nofile, l).is_err() {
            l = getrlimit(Resource::Nofile);
        }
    }
    l.current
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> Option<u64> {
    // Windows has no per-process socket limit of this kind.
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_local_store_only_on_windows() {
        assert_eq!(local_store_for(true), Some(r"C:\Symbols"));
        assert_eq!(local_store_for(false), None);
        assert_eq!(default_local_store(), local_store_for(cfg!(windows)));
    }

    #[test]
    fn local_store_goes_first_only_when_the_chain_names_none() {
        let c = Some(WINDOWS_LOCAL_STORE);
        let table: &[(&str, Option<&str>, &str)] = &[
            // A chain of shares only: the local store is added in front.
            (
                r"srv*\\BranchOfficeA\Symbols*\\MainOffice\Symbols",
                c,
                r"srv*C:\Symbols*\\BranchOfficeA\Symbols*\\MainOffice\Symbols",
            ),
            (
                r"srv*\\Branch\S*https://msdl.microsoft.com/download/symbols",
                c,
                r"srv*C:\Symbols*\\Branch\S*https://msdl.microsoft.com/download/symbols",
            ),
            // Only the first srv* chain is the agent's.
            (
                r"C:\flat;srv*\\B\S*\\M\S;srv*\\X\S",
                c,
                r"C:\flat;srv*C:\Symbols*\\B\S*\\M\S;srv*\\X\S",
            ),
            // A local store is named: unchanged.
            (
                r"srv*D:\SymCache*\\B\S*\\M\S",
                c,
                r"srv*D:\SymCache*\\B\S*\\M\S",
            ),
            // The empty token is SymSrv's default downstream store: unchanged.
            (r"srv**\\B\S*\\M\S", c, r"srv**\\B\S*\\M\S"),
            // cache* and plain directories are not agent chains.
            (r"cache*\\B\S;\\M\S", c, r"cache*\\B\S;\\M\S"),
            // No default on this platform: unchanged.
            (r"srv*\\B\S*\\M\S", None, r"srv*\\B\S*\\M\S"),
        ];
        for (input, local, want) in table {
            let p: SymbolPath = input.parse().unwrap();
            let got = with_default_local_store(p, *local).to_string();
            assert_eq!(&got, want, "{input} with {local:?}");
        }
    }

    #[test]
    fn log_file_under_program_data() {
        let env = |v: Option<&'static str>| move |k: &str| (k == "ProgramData").then_some(v)?;
        let table: &[(Option<&'static str>, &str)] = &[
            (Some(r"D:\PD"), r"D:\PD\symcascade\logs\symcascade.log"),
            (Some(r"D:\PD\"), r"D:\PD\symcascade\logs\symcascade.log"),
            (None, r"C:\ProgramData\symcascade\logs\symcascade.log"),
            (Some(""), r"C:\ProgramData\symcascade\logs\symcascade.log"),
        ];
        for (pd, want) in table {
            let got = default_log_file(|k| env(*pd)(k).map(str::to_string));
            assert_eq!(got, PathBuf::from(want), "{pd:?}");
        }
    }

    #[test]
    fn the_process_identity_names_the_machine_account() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        type Vars = &'static [(&'static str, &'static str)];
        let cases: [(Vars, Option<&str>); 4] = [
            (
                &[("USERDOMAIN", "CORP"), ("USERNAME", "bob")],
                Some("CORP\\bob"),
            ),
            (
                &[("USERDOMAIN", "CORP"), ("USERNAME", "DESKTOP-4F2K9Q1$")],
                Some("CORP\\DESKTOP-4F2K9Q1$ (the machine account)"),
            ),
            (&[("USERNAME", "svc-symbols")], Some("svc-symbols")),
            (&[("USERDOMAIN", "CORP")], None),
        ];
        for (vars, want) in cases {
            assert_eq!(process_identity(env(vars)).as_deref(), want, "{vars:?}");
        }
    }

    #[test]
    fn builtin_service_accounts_take_no_password() {
        for a in [
            "LocalSystem",
            r".\LocalSystem",
            r"NT AUTHORITY\SYSTEM",
            r"NT AUTHORITY\NetworkService",
            r"nt authority\LocalService",
            r"CORP\svc-symbols$",
        ] {
            assert!(is_builtin_service_account(a), "{a}");
        }
        for a in [r"CORP\svc-symbols", "Administrator", r".\symbols"] {
            assert!(!is_builtin_service_account(a), "{a}");
        }
    }
}
