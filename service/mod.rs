//! `symcascade service …`: install and control the agent as a Windows service.
//!
//! Data flow: `main.rs` parses the arguments into [`ServiceCmd`] and calls [`main`] with the
//! config file and what only `main.rs` knows (its logging set-up, the default downstream
//! store). On Windows every command goes to `windows.rs` (the service manager, the dispatcher
//! and the service's main, which runs the same `Daemon::run` as `symcascade run`). Elsewhere the
//! subcommand exists too, so that scripts and `--help` look the same everywhere, but it exits 2
//! and points to the systemd unit.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use symcascade::config::LogSection;
use symcascade::sympath::Location;

#[cfg(windows)]
mod windows;

/// The `service` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum ServiceCmd {
    /// Install the agent as a Windows service: automatic (delayed) start, restart on failure,
    /// runs `symcascade service run --config FILE` (FILE: --config, else
    /// %ProgramData%\symcascade\symcascade.toml; it must exist and be valid).
    Install {
        /// Account the service runs as: LocalSystem (default), `NT AUTHORITY\NetworkService`,
        /// `NT AUTHORITY\LocalService`, a gMSA (`CORP\svc-symbols$`) or a user account whose
        /// password is read from SYMCASCADE_SERVICE_PASSWORD (never prompted for).
        #[arg(long)]
        account: Option<String>,
    },
    /// Stop (if running) and remove the service.
    Uninstall,
    /// Start the service and wait until it is running (or says why it stopped).
    Start,
    /// Stop the service and wait until it has stopped (in-flight copies get
    /// `[agent] shutdown_grace`, then are discarded).
    Stop,
    /// Show the service's state; exit 0 running, 1 not running or not installed, 2 error.
    Status,
    /// The service's entry point, started by the service manager (not for consoles: use
    /// `symcascade run` there).
    #[command(hide = true)]
    Run,
}

/// What the service needs from `main.rs`.
// Read by windows.rs only; filled on every platform so that main.rs has no cfg of its own.
#[cfg_attr(not(windows), allow(dead_code))]
pub struct Host<'a> {
    /// The config file given with `--config` / `SYMCASCADE_CONFIG`, if any.
    pub config: Option<PathBuf>,
    /// The platform's default config file (`%ProgramData%\symcascade\symcascade.toml`).
    pub default_config: PathBuf,
    /// The default downstream store (SymSrv rules) for `Daemon::start`.
    pub default_downstream: Location,
    /// `main.rs`'s logging set-up (console + daily-rotated file); the guard flushes the file.
    pub init_logging:
        &'a dyn Fn(&LogSection) -> Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Runs a `service` subcommand and returns the process's exit code.
#[cfg(windows)]
pub fn main(cmd: ServiceCmd, host: Host<'_>) -> ExitCode {
    windows::main(cmd, host)
}

/// Runs a `service` subcommand and returns the process's exit code: on this platform, 2 and a
/// pointer to the systemd unit.
#[cfg(not(windows))]
pub fn main(cmd: ServiceCmd, host: Host<'_>) -> ExitCode {
    let _ = (cmd, host);
    eprintln!(
        "error: `symcascade service` installs and controls a Windows service; this is not \
         Windows. On Linux run the agent with the systemd unit service/symcascade.service \
         (README.md, \"Install as a service\"), or `symcascade run` in a console."
    );
    ExitCode::from(2)
}
