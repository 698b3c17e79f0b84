//! keygate: FIDO2 security keys and SMS codes for a campus, behind a local HTTP API.
#![forbid(unsafe_code)]

pub mod auth;
pub mod base;
pub mod ceremony;
pub mod config;
pub mod daemon;
pub mod device;
pub mod doctor;
#[doc(hidden)]
pub mod harness;
pub mod http;
pub mod hwbench;
pub mod kiosk;
pub mod sms;
pub mod store;
