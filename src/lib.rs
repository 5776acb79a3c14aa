//! symcascade: an SMB-first cascading cache for Windows debugger symbol stores.
//!
//! Layers, pure core first, I/O at the edges, the process on top:
//!
//! | module | role |
//! |---|---|
//! | [`sympath`] | symbol path grammar (`srv*C:\Symbols*\\MainOffice\Symbols`), no I/O |
//! | [`key`] | keys (name + index) from text, PE and PDB files |
//! | [`layout`] | SymStore paths, compressed names, `file.ptr`, request paths; pure |
//! | [`compress`] | compressed files: one-file cabinets |
//! | [`queue`] | the branch queue's on-share formats (records, leases, miss cache); pure |
//! | [`units`] | human sizes, rates and durations |
//! | [`store`] | the `Store` abstraction; local, SMB and HTTP transports; wrappers; openers |
//! | [`verify`] | a hit checked (kind, key, whole cabinet) before any store sees it |
//! | [`spool`] | spool files of hits in transit, and their sweep after a crash |
//! | [`cascade`] | SymSrv's lookup and copy-down: a pure plan ([`cascade::plan`]), an executor |
//! | [`publish`] | `symstore add`: a file into a store under its key |
//! | [`exclusions`] | SymProxy exclusion lists |
//! | [`folder`] | folders of control files on local and SMB stores, with change notification |
//! | [`config`] | the TOML configuration, validated (typed errors naming the key) |
//! | [`platform`] | Windows defaults (`C:\Symbols`, `%ProgramData%`), open-file limits |
//! | [`setup`] | a config resolved into cascade, chain, branch queue and state folder |
//! | [`report`] | store health, transfers, the agent's status, the health verdict |
//! | [`bandwidth`] | caps of background/interactive transfers with schedule windows |
//! | [`metrics`] | Prometheus metrics shared by the agent and the front |
//! | [`agent`] | the replication agent working the branch queue |
//! | [`front`] | the SymProxy-compatible HTTP front |
//! | [`daemon`] | the composition root: start once, then `run(listener, shutdown)` |
//! | [`prefetch`] | queue a manifest and wait for it (SymChk's PASSED/FAILED) |
//! | [`admin`] | store administration: `age`, `query`, `000Admin` transactions |
//! | [`doctor`] | a preflight of every store, as the agent's identity |
//! | [`configcheck`] | `symcascade config check` |
//! | [`logging`] | process logging: where lines go, which may be written at all |
//!
//! A lookup along a symbol path, copying the hit down the cascade (here two local folders;
//! `\\host\share` and `https://` stores work the same way through
//! [`store::open::Transports`]):
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use symcascade::cascade::{Cascade, CascadeOptions};
//! use symcascade::key::Key;
//! use symcascade::store::open::LocalOnly;
//! use symcascade::sympath::{Location, SymbolPath};
//!
//! let dir = tempfile::tempdir()?;
//! let (local, main) = (dir.path().join("local"), dir.path().join("main"));
//! let path: SymbolPath = format!("srv*{}*{}", local.display(), main.display()).parse()?;
//! let dd = Location::Local { path: dir.path().join("sym").display().to_string() };
//! let cascade = Cascade::resolve(&path, Arc::new(LocalOnly), &dd, CascadeOptions::default()).await;
//! let key = Key::new("ntdll.pdb", "1EB8F7F0C2F1E0A2A5F2D8E0B7C9A1B21")?;
//! let lookup = cascade.lookup(&key).await?;
//! assert!(lookup.fetched.is_none(), "an empty main store: a miss is Ok(None), not an error");
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod agent;
pub mod bandwidth;
pub mod cascade;
pub mod compress;
pub mod config;
pub mod configcheck;
pub mod daemon;
pub mod doctor;
pub mod exclusions;
pub mod folder;
pub mod front;
pub mod key;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod platform;
pub mod prefetch;
pub mod publish;
pub mod queue;
pub mod report;
pub mod resume;
pub mod setup;
pub mod spool;
pub mod store;
pub mod sympath;
pub mod units;
pub mod verify;
