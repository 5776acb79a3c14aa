//! The integration test binary: one binary, one shared harness (`harness.rs`), real files and
//! real file-system faults. Run with `cargo test` (see README).

mod admin;
mod agent;
mod cascade;
mod cli;
mod front;
mod harness;
mod http_upstream;
mod httpd;
mod keys;
mod ops;
mod relay;
mod samba;
mod smb;
// Linux-only: kill -9 of Linux processes at random points (see soak.rs).
#[cfg(unix)]
mod soak;
// Linux-only: drives Wine itself from Linux (the service smoke test).
#[cfg(unix)]
mod wine;
