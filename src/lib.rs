//! keygate: FIDO2 security keys and SMS codes for a campus, behind a local HTTP API.
#![forbid(unsafe_code)]

/// mimalloc instead of glibc's malloc: glibc keeps per-thread arenas of freed memory (RSS
/// stayed at 705 MB after 20,000 sockets had come and gone); mimalloc returns freed pages to
/// the OS after a short delay (see `benches/connections.rs` for the figures), given a pass of
/// its own while the daemon is quiet ([`base::allocator`]). Rust's allocations only: SQLite
/// allocates with glibc's malloc. Not the dependency's `override` feature, which would serve
/// C's malloc too: with it the process crashes at start under an `LD_PRELOAD` library that
/// calls `dlsym` early (libfaketime), glibc freeing its own `dlerror` buffer with mimalloc.
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
