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
// Linux-only: the S3 server (moto) and the checking client (boto3) are Debian's Python.
#[cfg(unix)]
mod objects;
mod ops;
mod relay;
mod resume;
mod samba;
mod smb;
// Linux-only: kill -9 of Linux processes at random points (see soak.rs).
#[cfg(unix)]
mod soak;
// Linux-only: its clients are Linux programs (headless Chromium, Python's prometheus_client).
#[cfg(unix)]
mod status;
mod unc;
mod wan;
// Linux-only: drives Wine itself from Linux (the service smoke test, the UNC test).
#[cfg(unix)]
mod wine;
