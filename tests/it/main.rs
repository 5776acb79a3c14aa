//! The integration test binary: one binary, one shared harness (`harness.rs`), real files and
//! real file-system faults. Run with `cargo test` (see README).

mod admin;
mod agent;
mod cascade;
mod cli;
mod daemon;
mod front;
mod harness;
mod house;
mod http_upstream;
mod httpd;
mod keys;
mod ops;
mod relay;
mod samba;
mod smb;
mod soak;
mod status;
mod unc;
mod wan;
// Linux-only: drives Wine (the Windows build under test) from Linux.
#[cfg(unix)]
mod wine;
