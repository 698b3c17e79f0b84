//! keygate: FIDO2 security keys and SMS codes for a campus, behind a local HTTP API.
#![forbid(unsafe_code)]

/// mimalloc instead of glibc's malloc: glibc keeps per-thread arenas of freed memory (RSS
/// stayed at 705 MB after 20,000 sockets had come and gone); mimalloc returns freed pages to
/// the OS after a short delay (see `benches/connections.rs` for the figures).
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
