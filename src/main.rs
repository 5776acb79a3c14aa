//! The `symcascade` command line: `get`, `parse`, `add`.
//!
//! Data flow: arguments (clap) → symbol path (`--sympath`, else `_NT_ALT_SYMBOL_PATH` /
//! `_NT_SYMBOL_PATH`) → `Cascade::resolve` → `Cascade::lookup` → text or JSON on stdout.
//! Exit codes for scripts: 0 found/ok, 1 not found, 2 error; `get` also 3: not found, but
//! some store could not be searched.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use symcascade::cascade::{Cascade, SearchKind};
use symcascade::config::Config;
use symcascade::key::{Key, PeKey};
use symcascade::layout::Form;
use symcascade::store::noisy::{NoisyOpener, ProbeLog, ProbeSink};
use symcascade::store::open::{StoreOpener, Transports};
use symcascade::sympath::{self, Element, Location, StoreSpec, SymbolPath};

// `symcascade service …`: the Windows service (platform code lives in service/, outside the
// library, which forbids unsafe code).
#[path = "../service/mod.rs"]
mod service;

// Transfer buffers are 1 MiB: a caching allocator avoids an mmap/munmap pair and a page-fault
// storm per chunk (measured: see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "symcascade",
    version,
    about = "Keeps Windows debugger symbol stores warm across slow links"
)]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log as JSON lines instead of human text.
    #[arg(long, global = true)]
    log_json: bool,
    /// Log one line per store probe (store, path, form, result, ms), like SymSrv's
    /// `!sym noisy`; the same as `[log] noisy = true`.
    #[arg(long, global = true)]
    noisy: bool,
    /// Configuration file (TOML); default: $SYMCASCADE_CONFIG when set.
    #[arg(long, global = true, env = "SYMCASCADE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Find a symbol file through the symbol path, copying it down the cascade; prints its
    /// local path (exit 0), or `not found`: exit 1 when every store was searched, exit 3 when
    /// some store could not be searched (wrong credentials, unreachable share, access denied:
    /// stderr says which and why); exit 2 for an error.
    #[command(after_help = concat!(
        "Examples:\n",
        "  symcascade get --sympath 'srv*C:\\Symbols*\\\\BranchOfficeA\\Symbols*\\\\MainOffice\\Symbols' ntdll.pdb 1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21\n",
        "  symcascade get --noisy C:\\Build\\app.dll        (symbol path from _NT_SYMBOL_PATH)\n",
        "  symcascade get --json ntdll.pdb 1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21 C:\\Build\\app.pdb\n",
        "Exit: 0 all found, 1 some key absent from every store, 3 some key not found while a store could not be searched, 2 error."
    ))]
    Get {
        /// Symbol path; default: _NT_ALT_SYMBOL_PATH;_NT_SYMBOL_PATH.
        #[arg(long)]
        sympath: Option<String>,
        /// Print the full result as JSON.
        #[arg(long)]
        json: bool,
        /// For a PE file argument: fetch the image itself, not its PDB.
        #[arg(long)]
        image: bool,
        /// Do not follow file.ptr (SymProxy NoFilePointers).
        #[arg(long)]
        no_file_pointers: bool,
        /// Keep compressed files compressed everywhere (SymProxy NoUncompress).
        #[arg(long)]
        no_uncompress: bool,
        /// Keys: `NAME INDEX` pairs (e.g. `ntdll.pdb 1EB8…1`) and PE/PDB files whose key to
        /// use, in any mix; each is looked up in turn.
        #[arg(required = true, num_args = 1.., value_name = "NAME INDEX|FILE")]
        what: Vec<String>,
    },
    /// Parse a symbol path and print its chains and stores.
    #[command(
        after_help = "Example:\n  symcascade parse 'srv*C:\\Symbols*\\\\BranchOfficeA\\Symbols*\\\\MainOffice\\Symbols'"
    )]
    Parse {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The symbol path; default: _NT_ALT_SYMBOL_PATH;_NT_SYMBOL_PATH.
        path: Option<String>,
    },
    /// Run the replication agent: watch the branch share's miss queue and replicate each wanted
    /// key down the cascade (main → branch → local) until Ctrl-C / SIGTERM.
    #[command(
        after_help = "Example:\n  symcascade run --config C:\\ProgramData\\symcascade\\symcascade.toml --noisy"
    )]
    Run,
    /// Queue a request for NAME INDEX on the branch share (the agent fills this machine's local
    /// store; `--any` lets any agent pull it into the branch store).
    #[command(after_help = concat!(
        "Examples:\n",
        "  symcascade request ntdll.pdb 1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21        (for DESKTOP-4F2K9Q1's local store)\n",
        "  symcascade request --any ntdll.pdb 1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21  (for \\\\BranchOfficeA\\Symbols)"
    ))]
    Request {
        /// Any agent of the branch may serve it (prefetch into the branch store).
        #[arg(long)]
        any: bool,
        /// File name, e.g. `ntdll.pdb`.
        name: String,
        /// Index, e.g. `1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21`.
        index: String,
    },
    /// Queue every key of a SymChk `/om` manifest (`<name>,<index>,1` lines) for the branch.
    #[command(
        after_help = "Example:\n  symcascade prefetch --manifest C:\\Temp\\after-patch-tuesday.txt --wait --timeout 30m"
    )]
    Prefetch {
        /// The manifest file.
        #[arg(long)]
        manifest: PathBuf,
        /// Request for this agent's local store instead of the branch as a whole.
        #[arg(long)]
        mine: bool,
        /// Wait until every key is copied or known missing (progress on a terminal), then print
        /// each key's result and a SymChk-style summary; exit 1 when any key failed.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. `10m`), naming the keys still pending;
        /// exit 1 then.
        #[arg(long, requires = "wait", value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Show queue depth, pending back-fills, each store's health and recent transfers.
    #[command(
        after_help = "Examples:\n  symcascade status\n  symcascade status --json --config C:\\ProgramData\\symcascade\\symcascade.toml"
    )]
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Preflight every store of the chain as this identity: read, write (probe file), free
    /// space, latency; says which tier would be skipped and why. Exit 0 all usable, 1 some tier
    /// would be skipped, 2 error.
    #[command(
        after_help = "Example (as the service account, on DESKTOP-4F2K9Q1):\n  symcascade doctor --config C:\\ProgramData\\symcascade\\symcascade.toml"
    )]
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install and control the agent as a Windows service (install, uninstall, start, stop,
    /// status); on Linux use the systemd unit service/symcascade.service.
    #[command(after_help = concat!(
        "Examples:\n",
        "  symcascade service install --account 'NT AUTHORITY\\NetworkService' --config C:\\ProgramData\\symcascade\\symcascade.toml\n",
        "  symcascade service status"
    ))]
    Service {
        #[command(subcommand)]
        cmd: service::ServiceCmd,
    },
    /// Add PE/PDB files to a local store, as `symstore add` does.
    #[command(
        after_help = "Example:\n  symcascade add --store D:\\Symbols --compress C:\\Build\\app.pdb C:\\Build\\app.dll"
    )]
    Add {
        /// The store's root folder.
        #[arg(long)]
        store: PathBuf,
        /// Write compressed files (one-file MSZIP cabinets, `name.pd_`).
        #[arg(long, conflicts_with = "pointer")]
        compress: bool,
        /// Write `file.ptr` pointers to the files instead of copies.
        #[arg(long)]
        pointer: bool,
        #[command(flatten)]
        labels: AdminLabels,
        /// Files to add.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete an `add` transaction (symstore del /i): removes the key folders only it
    /// added and records the deletion in 000Admin/history.txt.
    #[command(after_help = "Example:\n  symcascade del --store D:\\Symbols 0000000042")]
    Del {
        /// The store's root folder.
        #[arg(long)]
        store: PathBuf,
        /// The transaction id (e.g. 0000000001, as `add` printed).
        id: String,
    },
    /// Remove unused keys from a local or SMB store, as AgeStore does, by last use (write time,
    /// refreshed hourly when served; not NTFS last-access time).
    #[command(after_help = concat!(
        "Examples:\n",
        "  symcascade age --unused-for 30d --dry-run C:\\Symbols\n",
        "  symcascade age --max-size 50GB \\\\BranchOfficeA\\Symbols"
    ))]
    Age {
        /// Remove keys not used for this long (e.g. 30d).
        #[arg(long, value_parser = humantime::parse_duration)]
        unused_for: Option<std::time::Duration>,
        /// Then remove least recently used keys until the store is at most this size (e.g. 50GB).
        #[arg(long)]
        max_size: Option<String>,
        /// Report what would be removed; change nothing (AgeStore -l).
        #[arg(long)]
        dry_run: bool,
        /// Keys written more recently than this are left alone (a writer may be busy).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        grace: std::time::Duration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The store (a folder, \\host\share\dir or smb://host/share/dir).
        store: String,
    },
    /// List a store's keys, forms and sizes, or (`--queue`) the branch queue.
    #[command(after_help = concat!(
        "Examples:\n",
        "  symcascade query \\\\MainOffice\\Symbols\n",
        "  symcascade query --queue --json --config C:\\ProgramData\\symcascade\\symcascade.toml"
    ))]
    Query {
        /// List the branch queue of the configured agent instead of a store.
        #[arg(long, conflicts_with = "store")]
        queue: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The store (a folder, \\host\share\dir or smb://host/share/dir).
        #[arg(required_unless_present = "queue")]
        store: Option<String>,
    },
    /// Check a configuration: parse and validate it, resolve the agent's chain, bind the HTTP
    /// listen address, write in the state folder and the log file. Prints each check with OK or
    /// FAIL; exit 0 all passed, 1 some failed.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) on stdout.
    #[command(after_help = concat!(
        "Examples:\n",
        "  symcascade completions bash > /etc/bash_completion.d/symcascade\n",
        "  symcascade completions powershell >> $PROFILE"
    ))]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    #[command(
        after_help = "Example:\n  symcascade man > /usr/local/share/man/man1/symcascade.1 && man symcascade"
    )]
    Man,
}

/// `add`'s 000Admin fields (symstore.exe /t /v /c).
#[derive(clap::Args, Debug)]
struct AdminLabels {
    /// Product name recorded in 000Admin.
    #[arg(long, default_value = "")]
    product: String,
    /// Product version recorded in 000Admin.
    #[arg(long, default_value = "")]
    version: String,
    /// Comment recorded in 000Admin.
    #[arg(long, default_value = "")]
    comment: String,
}

/// `symcascade config …`.
#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Parse, validate and check a configuration (see `symcascade config --help`).
    #[command(after_help = concat!(
        "Examples:\n",
        "  symcascade config check --config C:\\ProgramData\\symcascade\\symcascade.toml\n",
        "  symcascade config check --json --config /etc/symcascade/symcascade.toml"
    ))]
    Check {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Installs logging (see `symcascade::logging`).
///
/// # Errors
/// The log file cannot be created (nothing is installed then).
fn init_logging(
    verbose: u8,
    json: bool,
    log: &symcascade::config::LogSection,
    agent: bool,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let opts = symcascade::logging::LogOptions {
        verbose,
        json,
        agent,
        noisy: log.noisy,
    };
    Ok(symcascade::logging::init(opts, log)?)
}

/// Logging for the Windows service: a log file that cannot be written must not keep the
/// service from reporting to its manager, so it logs to the console only and says why.
fn init_service_logging(
    verbose: u8,
    json: bool,
    log: &symcascade::config::LogSection,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    match init_logging(verbose, json, log, true) {
        Ok(g) => g,
        Err(e) => {
            let console = symcascade::config::LogSection {
                file: None,
                ..log.clone()
            };
            let g = init_logging(verbose, json, &console, true).ok().flatten();
            tracing::error!("{e:#}");
            g
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "symcascade", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Cmd::Man => return man_page(),
        _ => {}
    }
    if let Cmd::Service { cmd } = cli.cmd {
        // The service loads its own config: a bad one must reach the service manager as an
        // exit code, not end the process before it has talked to it.
        let (verbose, json) = (cli.verbose, cli.log_json);
        return service::main(
            cmd,
            service::Host {
                config: cli.config,
                default_config: default_config_path(),
                default_downstream: default_downstream(),
                init_logging: &|log| init_service_logging(verbose, json, log),
            },
        );
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Cmd::Config {
        cmd: ConfigCmd::Check { json },
    } = &cli.cmd
    {
        let path = cli.config.clone().or_else(|| {
            let p = default_config_path();
            p.exists().then_some(p)
        });
        return rt.block_on(config_check(path, *json));
    }
    let (config, config_path, _log_guard) = match load_config(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = rt.block_on(dispatch(cli.cmd, config, config_path));
    // Transfers still running in the background (the front's detached copies) end with the
    // runtime; only then may the spool lock files go.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    symcascade::spool::release_spool_locks();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The config (`--config`, else the platform's default file for the commands that need one,
/// else the defaults) with the command line's overrides, and logging installed. `Err` is the
/// exit code after the error was printed.
fn load_config(
    cli: &Cli,
) -> Result<
    (
        Config,
        Option<PathBuf>,
        Option<tracing_appender::non_blocking::WorkerGuard>,
    ),
    ExitCode,
> {
    let config_path = cli.config.clone().or_else(|| {
        // `run`, the queue commands and `doctor` fall back to the platform's default config.
        let needs = matches!(
            cli.cmd,
            Cmd::Run
                | Cmd::Request { .. }
                | Cmd::Prefetch { .. }
                | Cmd::Status { .. }
                | Cmd::Doctor { .. }
                | Cmd::Query { queue: true, .. }
        );
        let p = default_config_path();
        (needs && p.exists()).then_some(p)
    });
    let mut config = match &config_path {
        Some(p) => Config::load(p).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })?,
        None => Config::default(),
    };
    config.log.noisy |= cli.noisy;
    let agent = matches!(cli.cmd, Cmd::Run);
    let guard = init_logging(cli.verbose, cli.log_json, &config.log, agent).map_err(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })?;
    Ok((config, config_path, guard))
}

fn symbol_path(arg: Option<String>, config: &Config) -> Result<SymbolPath> {
    match arg.or_else(|| config.sympath.clone()) {
        Some(s) => s.parse().map_err(|e| anyhow!("{e}")),
        None => SymbolPath::from_env()
            .map_err(|e| anyhow!("{e}"))?
            .ok_or_else(|| anyhow!("no symbol path: pass --sympath or set _NT_SYMBOL_PATH")),
    }
}

fn transports(config: &Config) -> Arc<dyn StoreOpener> {
    let env = symcascade::store::smb::Credentials::from_env_with(|k| std::env::var(k).ok());
    Arc::new(Transports {
        smb: symcascade::store::smb::SmbClient::new(config.smb_config(env)),
        http: symcascade::store::http::transport_from_env(&config.http_config()),
        blackout: config.blackout(),
        objects: config.object_config().resolved(),
    })
}

fn default_downstream() -> Location {
    Location::Local {
        path: sympath::default_downstream_store(|k| std::env::var(k).ok()),
    }
}

/// Blocking threads (file-system calls of local stores) at most. Tokio's default, 512, let a
/// flood of 1,000 concurrent misses start ~500 threads, each keeping its own allocator heap:
/// 260 MB of RSS that stayed after the flood (measured, release build). 64 keep local I/O
/// parallel enough for a 2–8 core branch server.
const MAX_BLOCKING_THREADS: usize = 64;

/// The process's async runtime (also used by the Windows service, see service/).
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// Installs the stop signals' handlers at once and returns a future that completes on
/// Ctrl-C, or SIGTERM/SIGHUP on Unix (what `systemctl stop` and `kill` send). Installed
/// before the work starts, not when the future is first polled: a signal arriving while the
/// daemon starts (or between two polls) must stop it gracefully, not kill it outright.
// Not an `async fn`: its body would only run (and install the handlers) when first polled.
#[allow(clippy::manual_async_fn)]
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let listeners = {
        use tokio::signal::unix::{SignalKind, signal};
        // SIGHUP (a closed terminal, `systemctl reload` without ExecReload) stops gracefully
        // too, rather than killing the process mid-transfer.
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        if let (Ok(mut term), Ok(mut hup), Ok(mut int)) = listeners {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs one command (all but `service`, `config`, `completions` and `man`, which `main`
/// handles before a config is loaded).
async fn dispatch(cmd: Cmd, config: Config, config_path: Option<PathBuf>) -> Result<ExitCode> {
    match cmd {
        Cmd::Get {
            sympath,
            json,
            image,
            no_file_pointers,
            no_uncompress,
            what,
        } => {
            let pe = if image { PeKey::Image } else { PeKey::Pdb };
            let keys = symcascade::key::keys_from_args(&what, pe)?;
            let mut options = config.cascade_options();
            options.follow_file_pointers &= !no_file_pointers;
            options.uncompress &= !no_uncompress;
            let path = symbol_path(sympath, &config)?;
            get(&config, &path, options, &keys, json).await
        }
        Cmd::Run => run(config, config_path).await,
        Cmd::Request { any, name, index } => request(&config, &name, &index, any).await,
        Cmd::Prefetch {
            manifest,
            mine,
            wait,
            timeout,
        } => {
            no_queue_check(&config)?;
            prefetch(&config, &manifest, mine, wait.then_some(timeout)).await
        }
        Cmd::Status { json } => status(&config, json).await,
        Cmd::Doctor { json } => doctor(&config, json).await,
        Cmd::Parse { json, path } => {
            let p = symbol_path(path, &config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print_path(&p);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Service { .. } | Cmd::Config { .. } | Cmd::Completions { .. } | Cmd::Man => {
            unreachable!("handled in main")
        }
        Cmd::Add {
            store,
            compress,
            pointer,
            labels,
            files,
        } => add(&store, compress, pointer, labels, files).await,
        Cmd::Del { store, id } => {
            print!("{}", symcascade::admin::cli::del(&store, &id)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Age {
            unused_for,
            max_size,
            dry_run,
            grace,
            json,
            store,
        } => {
            use symcascade::admin::{age::AgeOptions, cli};
            let policy = cli::policy(unused_for, max_size.as_deref())?;
            if !policy.is_active() {
                bail!("age: give --unused-for and/or --max-size");
            }
            let opts = AgeOptions { dry_run, grace };
            let (r, text) = cli::age(&store, &smb_client(&config), policy, opts, json).await?;
            print!("{text}");
            Ok(ExitCode::from(u8::from(!r.failed.is_empty())))
        }
        Cmd::Query { queue, json, store } => query(&config, queue, json, store).await,
    }
}

/// `symcascade add`: files into a local store with a `000Admin` transaction.
async fn add(
    store: &std::path::Path,
    compress: bool,
    pointer: bool,
    labels: AdminLabels,
    files: Vec<PathBuf>,
) -> Result<ExitCode> {
    let form = match (compress, pointer) {
        (true, _) => Form::Compressed,
        (_, true) => Form::FilePtr,
        _ => Form::Plain,
    };
    let labels = symcascade::admin::transaction::Labels {
        product: labels.product,
        version: labels.version,
        comment: labels.comment,
    };
    for line in symcascade::admin::cli::add(store, files, form, &labels).await? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `symcascade query`: a store's keys, or (`--queue`) the branch queue.
async fn query(
    config: &Config,
    queue: bool,
    json: bool,
    store: Option<String>,
) -> Result<ExitCode> {
    let text = if queue {
        let setup = symcascade::setup::Setup::resolve(config, &default_downstream()).await?;
        symcascade::admin::cli::queue(&setup.admin, json).await?
    } else {
        let store = store.unwrap_or_default();
        symcascade::admin::cli::query(&store, &smb_client(config), json).await?
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The SMB client for commands that reach shares outside a symbol path (`age`, `query`).
fn smb_client(config: &Config) -> Arc<symcascade::store::smb::SmbClient> {
    symcascade::store::smb::SmbClient::new(config.smb_config(
        symcascade::store::smb::Credentials::from_env_with(|k| std::env::var(k).ok()),
    ))
}

/// `symcascade get`: looks each key up along `path` (progress bar on a terminal, probes
/// recorded for `--noisy` and `--json`).
async fn get(
    config: &Config,
    path: &SymbolPath,
    options: symcascade::cascade::CascadeOptions,
    keys: &[Key],
    json: bool,
) -> Result<ExitCode> {
    let probes = ProbeLog::default();
    let sink = ProbeSink {
        noisy: config.log.noisy,
        record: Some(probes.clone()),
    };
    // A bar on a terminal for files of 1 MiB and more.
    let bar = Arc::new(symcascade::store::progress::Bar { min_len: 1 << 20 });
    let opener = symcascade::store::progress::ProgressOpener::wrap(transports(config), bar);
    let opener = NoisyOpener::wrap(opener, sink);
    let cascade = Cascade::resolve(path, opener, &default_downstream(), options).await;
    get_keys(&cascade, keys, json, &probes).await
}

/// `symcascade run`: the daemon until a stop signal.
async fn run(config: Config, config_path: Option<PathBuf>) -> Result<ExitCode> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_path.as_ref().map_or("(defaults)".into(), |p| p.display().to_string()),
        sympath = config.sympath.as_deref().unwrap_or("(from _NT_SYMBOL_PATH)"),
        "symcascade starting"
    );
    let stop = stop_signal();
    let shutdown = async {
        stop.await;
        tracing::info!("shutdown requested");
    };
    let daemon = symcascade::daemon::Daemon::start(config, &default_downstream()).await?;
    daemon.run(None, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// `symcascade request`: one record in the branch queue.
async fn request(config: &Config, name: &str, index: &str, any: bool) -> Result<ExitCode> {
    let key = Key::new(name, index)?;
    no_queue_check(config)?;
    let setup = symcascade::setup::Setup::resolve(config, &default_downstream()).await?;
    let who = if any {
        symcascade::queue::ANY.to_string()
    } else {
        setup.id.clone()
    };
    let new = setup.request(&key, &who).await?;
    println!(
        "{} {key} in {}",
        if new { "queued" } else { "already queued" },
        setup.requests().describe()
    );
    Ok(ExitCode::SUCCESS)
}

/// `symcascade doctor`: each store checked, with the identity used.
async fn doctor(config: &Config, json: bool) -> Result<ExitCode> {
    let setup = symcascade::setup::Setup::resolve(config, &default_downstream()).await?;
    let timeout = config
        .smb
        .connect_timeout
        .max(std::time::Duration::from_secs(5));
    let checks = symcascade::doctor::check(&setup, timeout).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        println!("running as: {}", identity());
        for c in &checks {
            let lat = c
                .latency_ms
                .map(|l| format!(", {l} ms"))
                .unwrap_or_default();
            let free = c
                .free_bytes
                .map(|b| format!(", {:.1} GiB free", b as f64 / (1u64 << 30) as f64))
                .unwrap_or_default();
            println!("{:<12} {:<40} {}{lat}{free}", c.role, c.store, c.verdict);
            println!("{:<12} reached by: {}", "", c.reached_by);
        }
    }
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `symcascade man`: the roff page on stdout.
fn man_page() -> ExitCode {
    use clap::CommandFactory;
    let mut out = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => {
            use std::io::Write;
            match std::io::stdout().write_all(&out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the man page: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Err(e) => {
            eprintln!("error: rendering the man page: {e}");
            ExitCode::from(2)
        }
    }
}

/// `symcascade config check`: each check with OK/FAIL (or JSON); exit 0 all passed, 1 not.
async fn config_check(path: Option<PathBuf>, json: bool) -> ExitCode {
    let checks = symcascade::configcheck::check(path.as_deref(), &default_downstream()).await;
    if json {
        match serde_json::to_string_pretty(&checks) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        for c in &checks {
            let word = if c.ok { "OK  " } else { "FAIL" };
            println!("{word} {:<13} {}", c.name, c.detail);
        }
    }
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Looks up each key in turn and reports it: the local path (`NAME/INDEX<TAB>path` lines when
/// several keys), or `not found` with why on stderr; JSON: the lookup with its `"probes"` (an
/// array of them for several keys). Exit code: the worst of the keys' (0 found, 1 absent from
/// every store, 3 not found while some store could not be searched).
async fn get_keys(
    cascade: &Cascade,
    keys: &[Key],
    json: bool,
    probes: &ProbeLog,
) -> Result<ExitCode> {
    let many = keys.len() > 1;
    let (mut worst, mut reports) = (0u8, Vec::new());
    let stop = stop_signal();
    tokio::pin!(stop);
    for key in keys {
        // Ctrl-C or SIGTERM: drop the lookup, which removes its spool and temp files (SMB
        // temp files are delete-pending), then exit 130 as a shell would.
        let lookup = tokio::select! {
            l = cascade.lookup(key) => l?,
            _ = &mut stop => {
                eprintln!("interrupted: nothing was published, temp files removed");
                return Ok(ExitCode::from(130));
            }
        };
        let search = Search::of(cascade, &lookup);
        let code = match (&lookup.fetched, search.reasons.is_empty()) {
            (Some(_), _) => 0,
            (None, true) => 1,
            (None, false) => 3,
        };
        worst = worst.max(code);
        if json {
            let mut v = serde_json::to_value(&lookup)?;
            v["stores"] = search.stores.into();
            v["searched"] = search.searched().into();
            v["not_searched"] = serde_json::to_value(&search.reasons)?;
            v["probes"] = serde_json::to_value(probes.take())?;
            reports.push(v);
            continue;
        }
        if lookup.fetched.is_some() {
            for s in &lookup.skipped {
                eprintln!("skipped {:?} {}: {}", s.op, s.store, s.detail);
            }
        } else {
            if many && !search.reasons.is_empty() {
                eprintln!("{key}:");
            }
            search.explain();
        }
        let shown = match &lookup.fetched {
            Some(f) => f.location.clone(),
            None => "not found".to_string(),
        };
        if many {
            println!("{key}\t{shown}");
        } else {
            println!("{shown}");
        }
    }
    if json {
        let v = match reports.len() {
            1 => reports.remove(0),
            _ => serde_json::Value::Array(reports),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(ExitCode::from(worst))
}

/// How complete a lookup's search was: the stores of the symbol path, and those that could not
/// be searched grouped by reason (each reason once), so that `get` can tell "absent" (exit 1)
/// from "could not look everywhere" (exit 3).
struct Search {
    /// Stores of the symbol path (distinct locations).
    stores: usize,
    /// Stores that could not be searched, by reason.
    reasons: Vec<NotSearched>,
}

/// Stores that could not be searched for one reason.
#[derive(serde::Serialize)]
struct NotSearched {
    kind: symcascade::store::StoreErrorKind,
    stores: Vec<String>,
    /// The first store's full message.
    detail: String,
    hint: &'static str,
}

impl Search {
    fn of(cascade: &Cascade, lookup: &symcascade::cascade::Lookup) -> Search {
        let mut all: Vec<String> = cascade
            .chains()
            .iter()
            .flat_map(|c| c.tiers.iter().map(|t| t.store().describe().location))
            .collect();
        all.sort();
        all.dedup();
        let mut reasons: Vec<NotSearched> = Vec::new();
        // A store that answered with a corrupt copy was searched: that is a miss there.
        let read = lookup.skipped.iter().filter(|s| {
            s.op == symcascade::cascade::SkipOp::Read
                && s.kind != symcascade::store::StoreErrorKind::Corrupt
        });
        for s in read {
            if reasons.iter().any(|r| r.stores.contains(&s.store)) {
                continue;
            }
            match reasons.iter_mut().find(|r| r.kind == s.kind) {
                Some(r) => r.stores.push(s.store.clone()),
                None => reasons.push(NotSearched {
                    kind: s.kind,
                    stores: vec![s.store.clone()],
                    detail: s.detail.clone(),
                    hint: hint(s.kind, s.store.starts_with("http")),
                }),
            }
        }
        Search {
            stores: all.len(),
            reasons,
        }
    }

    fn searched(&self) -> usize {
        let failed: usize = self.reasons.iter().map(|r| r.stores.len()).sum();
        self.stores.saturating_sub(failed)
    }

    /// On stderr: how many stores were searched, and why the others were not.
    fn explain(&self) {
        if self.reasons.is_empty() {
            return;
        }
        let failed = self.stores.saturating_sub(self.searched());
        eprintln!(
            "searched {} of {} stores; {failed} could not be searched, so the file may exist there:",
            self.searched(),
            self.stores
        );
        for r in &self.reasons {
            eprintln!("  {}: {} ({})", r.kind, r.stores.join(", "), r.detail);
            eprintln!("    hint: {}", r.hint);
        }
    }
}

/// What to check for a store that could not be searched.
fn hint(kind: symcascade::store::StoreErrorKind, http: bool) -> &'static str {
    use symcascade::store::StoreErrorKind as K;
    match kind {
        K::AuthFailed if http => {
            "the HTTP store or its proxy refused: proxy credentials go in [http_client] proxy_user / proxy_password (or SYMCASCADE_PROXY_USER / SYMCASCADE_PROXY_PASSWORD), store credentials in the store's URL"
        }
        K::Unreachable if http => {
            "check the URL, and the proxy ([http_client] proxy, _NT_SYMBOL_PROXY, HTTPS_PROXY)"
        }
        K::AuthFailed => {
            "check the credentials: [smb.credentials.<host>] in the config, or SYMCASCADE_SMB_USER / SYMCASCADE_SMB_PASSWORD / SYMCASCADE_SMB_DOMAIN"
        }
        K::Unreachable => {
            "check the host and share names; a host name that does not resolve can be mapped to an address in the config's [smb] aliases"
        }
        K::PermissionDenied => {
            "the account running symcascade needs read access to the store (`symcascade doctor` checks every store as this account)"
        }
        K::Timeout => {
            "the store did not answer in time: check the link, [smb] connect_timeout / request_timeout, [http_client] read_timeout; a store that keeps timing out is blacked out ([timeouts])"
        }
        K::Unsupported => "this build cannot reach this kind of location on this system",
        _ => "see the message; `-v` logs more",
    }
}

fn print_path(p: &SymbolPath) {
    let dd = default_downstream();
    for (i, e) in p.elements.iter().enumerate() {
        match e {
            Element::Server { dll, stores } => {
                let kw = dll
                    .as_ref()
                    .map(|d| format!("symsrv*{d}"))
                    .unwrap_or_else(|| "srv".into());
                println!(
                    "chain {}: {kw} ({} stores, searched left to right)",
                    i + 1,
                    stores.len()
                );
                let n = stores.len();
                for (j, s) in stores.iter().enumerate() {
                    let role = if n == 1 {
                        "upstream (no caching unless HTTP or compressed)"
                    } else if j == 0 {
                        "downstream"
                    } else if j + 1 == n {
                        "upstream"
                    } else {
                        "intermediate"
                    };
                    println!("  store {}: {:<12} {}", j + 1, role, describe_spec(s, &dd));
                }
            }
            Element::Cache { store } => {
                println!(
                    "chain {}: cache (caches hits from every element to its right)",
                    i + 1
                );
                println!("  store 1: {:<12} {}", "cache", describe_spec(store, &dd));
            }
            Element::Plain { location } => {
                println!(
                    "chain {}: plain directory ({:?} search unless it holds pingme.txt)",
                    i + 1,
                    SearchKind::Flat
                );
                println!("  store 1: {:<12} {}", "directory", describe_loc(location));
            }
        }
    }
}

fn describe_spec(s: &StoreSpec, dd: &Location) -> String {
    match s {
        StoreSpec::DefaultDownstream => format!("{} (default downstream store)", describe_loc(dd)),
        StoreSpec::At(l) => describe_loc(l),
    }
}

fn describe_loc(l: &Location) -> String {
    let kind = match l {
        Location::Local { .. } => "local",
        Location::Smb { .. } => "smb",
        Location::Http { .. } => "http",
        Location::Object { service, .. } => service.scheme(),
    };
    format!("[{kind}] {l}")
}

/// `request`/`prefetch` write to the branch queue: refuse when no agent watches it.
fn no_queue_check(config: &Config) -> Result<()> {
    if !config.agent.queue {
        bail!(
            "the branch queue is disabled in this config (agent.queue = false): nothing would process the request; fetch through the HTTP front instead"
        );
    }
    Ok(())
}

/// Who this process runs as, for `doctor`: `USER`/`USERNAME`, else (a service or `sudo -E`
/// without them) the name of the real uid from `/proc/self/status` and `/etc/passwd`.
fn identity() -> String {
    if let Some(u) = ["USER", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    {
        return u;
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    let Some(uid) = uid else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[2] == uid)
                .map(|f| f[0].to_string())
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The platform's default config file: `%ProgramData%\symcascade\symcascade.toml` on Windows,
/// `/etc/symcascade/symcascade.toml` elsewhere.
fn default_config_path() -> PathBuf {
    if cfg!(windows) {
        let pd = std::env::var("ProgramData").unwrap_or_else(|_| r"C:\ProgramData".into());
        PathBuf::from(pd).join("symcascade").join("symcascade.toml")
    } else {
        PathBuf::from("/etc/symcascade/symcascade.toml")
    }
}

fn progress(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        // Elapsed, not an ETA: a key that stays pending makes any estimate absurd ("35w").
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} keys, elapsed {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Queues every key of a manifest; with `wait = Some(timeout)`, waits for the results and
/// prints them (see [`wait_for_keys`]).
async fn prefetch(
    config: &Config,
    manifest: &std::path::Path,
    mine: bool,
    wait: Option<Option<std::time::Duration>>,
) -> Result<ExitCode> {
    use symcascade::prefetch::{self, Totals};
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let keys = symcascade::queue::parse_manifest(&text)
        .map_err(|e| anyhow!("{}: {e}", manifest.display()))?;
    let keys = prefetch::distinct(keys);
    let setup = symcascade::setup::Setup::resolve(config, &default_downstream()).await?;
    let who = if mine {
        setup.id.clone()
    } else {
        symcascade::queue::ANY.to_string()
    };
    let pb = progress(keys.len() as u64, "queueing");
    let queued = prefetch::queue_keys(&setup, &keys, &who, || pb.inc(1)).await?;
    pb.finish_and_clear();
    println!(
        "queued {queued} requests ({} already queued) in {}",
        keys.len() - queued,
        setup.requests().describe()
    );
    let Some(timeout) = wait else {
        return Ok(ExitCode::SUCCESS);
    };
    // With the queue on (checked above), `setup` always names a branch store.
    let target = if mine { 0 } else { setup.branch.unwrap_or(0) };
    let pb = progress(keys.len() as u64, "replicated");
    let results = prefetch::wait_for_keys(&setup, &keys, &who, target, timeout, |done| {
        pb.set_position(done as u64)
    })
    .await;
    pb.finish_and_clear();
    for (k, r) in keys.iter().zip(&results) {
        println!("{}", r.line(k));
    }
    let t = Totals::of(&results);
    println!("{}", t.symchk_line());
    if t.pending > 0 {
        println!(
            "timed out after {}: {} key(s) still pending (listed above)",
            humantime::format_duration(timeout.unwrap_or_default()),
            t.pending
        );
    }
    Ok(if t.failed + t.pending == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn status(config: &Config, json: bool) -> Result<ExitCode> {
    let setup = symcascade::setup::Setup::resolve(config, &default_downstream()).await?;
    let depth = setup.requests().list().await.map(|v| v.len());
    let stores = symcascade::report::store_health(
        &setup.chain,
        setup.branch,
        std::time::Duration::from_secs(10),
    )
    .await;
    let agent = setup.read_status();
    let running = setup.agent_running();
    // A front-only server (`queue = false`) has no agent to be down.
    let (verdict, reason) =
        symcascade::report::verdict(&stores, config.agent.queue.then_some(running));
    let code = match verdict {
        symcascade::report::Verdict::Ok => 0,
        symcascade::report::Verdict::Degraded => 1,
        _ => 2,
    };
    let report = serde_json::json!({
        "health": { "verdict": verdict, "reason": reason },
        "agent": setup.id,
        "agent_running": running,
        "queue": setup.requests().describe(),
        "queue_depth": depth.as_ref().ok(),
        "queue_error": depth.as_ref().err().map(|e| e.to_string()),
        "backfills": agent.as_ref().map(|a| a.backfills.clone()).unwrap_or_default(),
        "stores": stores,
        "recent": agent.as_ref().map(|a| a.recent.clone()).unwrap_or_default(),
        "queue_entries": agent.as_ref().map(|a| a.queue.clone()).unwrap_or_default(),
        "queue_oldest_age_secs": agent.as_ref().and_then(|a| a.queue_oldest_age_secs),
        "transfers": agent.as_ref().map(|a| a.transfers.clone()).unwrap_or_default(),
        "traffic": agent.as_ref().map(|a| a.traffic.clone()),
        "counters": agent.as_ref().map(|a| serde_json::json!({
            "lookups": a.lookups, "hits": a.hits, "misses": a.misses, "bytes_read": a.bytes_read,
        })),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::from(code));
    }
    let word = serde_json::to_value(verdict)?;
    println!("health: {} ({reason})", word.as_str().unwrap_or("?"));
    println!(
        "agent {} ({})",
        setup.id,
        if running { "running" } else { "not running" }
    );
    match &depth {
        Ok(n) => println!("queue: {n} request(s) in {}", setup.requests().describe()),
        Err(e) => println!("queue: unavailable: {e}"),
    }
    let backfills = agent.as_ref().map(|a| a.backfills.len()).unwrap_or(0);
    println!("pending back-fills: {backfills}");
    for b in agent.iter().flat_map(|a| a.backfills.iter()) {
        println!("  {}/{} -> {}", b.name, b.index, b.store);
    }
    println!("stores:");
    for s in &stores {
        let free = s
            .free_bytes
            .map(|b| format!(", {:.1} GiB free", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_default();
        let state = match (&s.error, s.reachable, s.writable) {
            (Some(e), _, _) => format!("UNREACHABLE: {e}"),
            (None, true, true) => format!("reachable, writable{free}"),
            (None, true, false) => format!("reachable, NOT writable{free}"),
            (None, false, _) => "not readable".to_string(),
        };
        println!("  {:<12} {:<40} {state}", s.role, s.store);
    }
    if let Some(a) = &agent {
        print!(
            "{}",
            symcascade::report::details_text(a, symcascade::queue::now_secs())
        );
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// The definition is consistent (clap's own checks) and every subcommand's help ends with
    /// an example.
    #[test]
    fn every_subcommand_has_an_example() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut seen = 0;
        for sub in cmd.get_subcommands() {
            let nested: Vec<_> = sub.get_subcommands().filter(|c| !c.is_hide_set()).collect();
            let targets = if sub.get_name() == "config" {
                nested
            } else {
                vec![sub]
            };
            for c in targets {
                let help = c
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(
                    help.contains("symcascade "),
                    "`{}` has no example",
                    c.get_name()
                );
                seen += 1;
            }
        }
        assert!(seen >= 12, "{seen}");
    }
}
