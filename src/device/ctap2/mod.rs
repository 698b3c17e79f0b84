//! The CTAP2 command layer: encodes authenticator requests as CTAP2 canonical CBOR, decodes the
//! responses, and runs the ClientPIN protocol (PIN/UV auth protocol 1, CTAP 2.1 §6.5.6) from the
//! platform side. It sits on a [`CtapTransport`] that moves one request/response pair; the
//! simulated key plugs in below it, so the whole encode/decode path runs in tests.
//!
//! Files: `cbor` (CBOR building/lookup helpers and the status split), `cose` (COSE_Key),
//! `pin_protocol_one` (the PIN/UV auth protocol 1 primitives), `response` (GetInfo,
//! attestation object and assertion parsers), `extensions` (credProtect/hmac-secret inputs and
//! the authData extension outputs), `client` (the platform-side [`Ctap2Authenticator`]). The status codes live in `device::status`.
//!
//! Section references are to FIDO CTAP 2.1 (Proposed Standard, 2021-06-15).

mod cbor;
mod client;
mod config;
mod cose;
mod extensions;
pub mod pin_protocol_one;
mod response;
#[cfg(test)]
mod tests;

pub use cbor::{
    as_i64, bytes, decode, encode, get_int_key, get_text_key, int, int_map, split_response, text,
    text_map,
};
pub use client::{reset_outcome, Ctap2Authenticator};
pub use config::{config_auth_message, set_min_pin_length_params};
pub use cose::{cose_ec2, parse_cose_ec2};
pub use extensions::{auth_data_extensions, make_credential_extensions};
pub use response::{attestation_object, credential_id_from_auth_data, parse_assertion, GetInfo};

use super::{DeviceError, OpContext};

/// authenticator API command bytes (§6).
pub mod cmd {
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    pub const GET_ASSERTION: u8 = 0x02;
    pub const GET_INFO: u8 = 0x04;
    pub const CLIENT_PIN: u8 = 0x06;
    pub const RESET: u8 = 0x07;
    pub const GET_NEXT_ASSERTION: u8 = 0x08;
    pub const AUTHENTICATOR_CONFIG: u8 = 0x0D;
}

/// authenticatorConfig subcommands (§6.11) and the pinUvAuthToken permission it needs (§6.5.5.7).
pub mod config_sub {
    pub const SET_MIN_PIN_LENGTH: u8 = 0x03;
    /// Permission `acfg` of getPinUvAuthTokenUsingPinWithPermissions.
    pub const PERMISSION_ACFG: u8 = 0x20;
    /// The default permissions a getPinToken token carries (`mc` | `ga`).
    pub const PERMISSIONS_DEFAULT: u8 = 0x01 | 0x02;
}

/// authenticatorClientPIN subcommands (§6.5.5).
pub mod pin_sub {
    pub const GET_PIN_RETRIES: u8 = 0x01;
    pub const GET_KEY_AGREEMENT: u8 = 0x02;
    pub const SET_PIN: u8 = 0x03;
    pub const CHANGE_PIN: u8 = 0x04;
    pub const GET_PIN_TOKEN: u8 = 0x05;
    pub const GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS: u8 = 0x09;
}

/// Moves one CTAP2 request (command byte followed by CBOR parameters) to an authenticator and
/// returns its raw response (status byte followed by CBOR). Blocks until the authenticator
/// answers; must give up with `Cancelled`/`TouchTimeout` when `ctx` is cancelled or expires.
pub trait CtapTransport: Send + Sync {
    fn transact(&self, request: &[u8], ctx: &OpContext) -> Result<Vec<u8>, DeviceError>;
    /// Interrupt a transaction in flight (CTAPHID_CANCEL). Must not block.
    fn cancel(&self);
    /// Human product string (HID product name or the simulator's).
    fn product(&self) -> String;
    /// `hid`, `sim`, ...
    fn kind(&self) -> &'static str;
    /// See [`crate::device::Authenticator::power_ups`].
    fn power_ups(&self) -> u64 {
        0
    }
}
