//! The `symcascade` command line: `get`, `parse`, `add`.
//!
//! Data flow: arguments (clap) → symbol path (`--sympath`, else `_NT_ALT_SYMBOL_PATH` /
//! `_NT_SYMBOL_PATH`) → `Cascade::resolve` → `Cascade::lookup` → text or JSON on stdout.
//! Exit codes for scripts: 0 found/ok, 1 not found, 2 error.

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use symcascade::cascade::{Cascade, SearchKind};
use symcascade::config::Config;
use symcascade::key::{Key, PeKey};
use symcascade::layout::{Form, Tiering};
use symcascade::store::{LocalStore, Store, StoreOpener, Transports};
use symcascade::sympath::{self, Element, Location, StoreSpec, SymbolPath};

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
    /// Configuration file (TOML); default: $SYMCASCADE_CONFIG when set.
    #[arg(long, global = true, env = "SYMCASCADE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Find a symbol file through the symbol path, copying it down the cascade; prints its
    /// local path (exit 0), `not found` (exit 1) or an error (exit 2).
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
        /// `NAME INDEX` (e.g. `ntdll.pdb 1EB8…1`), or one PE/PDB file whose key to use.
        #[arg(required = true, num_args = 1..=2, value_names = ["NAME|FILE", "INDEX"])]
        what: Vec<String>,
    },
    /// Parse a symbol path and print its chains and stores.
    Parse {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The symbol path; default: _NT_ALT_SYMBOL_PATH;_NT_SYMBOL_PATH.
        path: Option<String>,
    },
    /// Add PE/PDB files to a local store, as `symstore add` does.
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
        /// Files to add.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn init_logging(verbose: u8, json: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // The smb crate logs ERROR on normal closes (lab defect 5): silence it unless RUST_LOG asks.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},smb=off,smb_transport=off,smb_msg=off,sspi=off"
        ))
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_json);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match &cli.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    match rt.block_on(dispatch(cli.cmd, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
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
    let env = symcascade::smb::Credentials::from_env_with(|k| std::env::var(k).ok());
    Arc::new(Transports {
        smb: symcascade::smb::SmbClient::new(config.smb_config(env)),
        blackout: config.blackout(),
    })
}

fn default_downstream() -> Location {
    Location::Local {
        path: sympath::default_downstream_store(|k| std::env::var(k).ok()),
    }
}

async fn dispatch(cmd: Cmd, config: Config) -> Result<ExitCode> {
    match cmd {
        Cmd::Get {
            sympath,
            json,
            image,
            no_file_pointers,
            no_uncompress,
            what,
        } => {
            let key = match what.as_slice() {
                [name, index] => Key::new(name, index)?,
                [file] => {
                    let pe = if image { PeKey::Image } else { PeKey::Pdb };
                    Key::from_file(std::path::Path::new(file), pe)?
                }
                _ => unreachable!("clap enforces 1..=2 values"),
            };
            let path = symbol_path(sympath, &config)?;
            let mut options = config.cascade_options();
            options.follow_file_pointers &= !no_file_pointers;
            options.uncompress &= !no_uncompress;
            let cascade =
                Cascade::resolve(&path, transports(&config), &default_downstream(), options).await;
            let lookup = cascade.lookup(&key).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&lookup)?);
            } else {
                for s in &lookup.skipped {
                    eprintln!("skipped {:?} {}: {}", s.op, s.store, s.detail);
                }
                match &lookup.fetched {
                    Some(f) => println!("{}", f.location),
                    None => println!("not found"),
                }
            }
            Ok(if lookup.fetched.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Parse { json, path } => {
            let p = symbol_path(path, &config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print_path(&p);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Add {
            store,
            compress,
            pointer,
            files,
        } => {
            let s = LocalStore::new(&store);
            let two = store.join(symcascade::layout::INDEX2_TXT).exists();
            let tiering = if two {
                Tiering::TwoTier
            } else {
                Tiering::OneTier
            };
            let form = if compress {
                Form::Compressed
            } else if pointer {
                Form::FilePtr
            } else {
                Form::Plain
            };
            std::fs::create_dir_all(&store)
                .with_context(|| format!("creating {}", store.display()))?;
            let ping = store.join(symcascade::layout::PINGME_TXT);
            if !ping.exists() {
                std::fs::write(&ping, b"")?;
            }
            for f in files {
                let abs = std::path::absolute(&f).unwrap_or(f);
                let (key, path, _) =
                    symcascade::publish::publish_file(&s as &dyn Store, &abs, tiering, form)
                        .await?;
                println!("{key}\t{path}");
            }
            Ok(ExitCode::SUCCESS)
        }
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
    };
    format!("[{kind}] {l}")
}
