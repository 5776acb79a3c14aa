//! symcascade: an SMB-first cascading cache for Windows debugger symbol stores.
//!
//! Layers, pure core first: [`sympath`] (symbol path grammar), [`key`] (keys from text, PE and
//! PDB files), [`layout`] (SymStore paths, compressed names, `file.ptr`), [`compress`] (one-file
//! CABs); then I/O at the edges: [`store`] (the `Store` abstraction and its transports) and
//! [`cascade`] (SymSrv's lookup-and-copy-down over a symbol path); on top, the replication
//! [`agent`] and the SymProxy-compatible HTTP [`front`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod agent;
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
pub mod setup;
pub mod spool;
pub mod store;
pub mod sympath;
pub mod units;
pub mod verify;
