//! keygate: FIDO2 security keys and SMS codes for a campus, behind a local HTTP API.
#![forbid(unsafe_code)]

/// mimalloc instead of glibc's malloc: glibc keeps per-thread arenas of freed memory (RSS
/// stayed at 705 MB after 20,000 sockets had come and gone); mimalloc returns freed pages to
/// the OS after a short delay (see `benches/connections.rs` for the figures). It serves the C
/// libraries' malloc too (the `override` feature of the dependency): SQLite's page caches,
/// handed back after every sweep, went to glibc's arenas and stayed there (3.9 MiB in
/// `benches/memory.rs`). Its purges need a pass of their own when the daemon is quiet: see
/// [`base::allocator`].
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod attestation;
pub mod auth;
pub mod base;
pub mod ceremony;
pub mod config;
pub mod daemon;
pub mod device;
pub mod doctor;
pub mod entra;
#[doc(hidden)]
pub mod harness;
pub mod hooks;
pub mod http;
pub mod hwbench;
pub mod kiosk;
pub mod metrics;
pub mod sms;
pub mod store;
