//! authenticatorReset (CTAP 2.1 §6.6) on a real key. ctap-hid-fido2 3.6 has no reset command
//! and keeps its raw CTAPHID send private, so keygate sends it itself, on a handle of its own
//! (`raw`) with its own framing (`exchange`).
//!
//! Quirk this works around: hidraw hands every input report to every open handle of the
//! node, and ctap-hid-fido2 reads the next report from its handle without checking the
//! channel id. While keygate's handle talks, the library's handle is therefore closed (the
//! reset's keepalives and answer would otherwise sit in its queue and be read as the answers
//! to its next requests); the next library call opens a fresh one.

use rand::RngCore;

use super::exchange::{cbor_request, open_channel, ReportIo};
use super::raw::RawHid;
use super::HidAuthenticator;
use crate::device::ctap2::{cmd, reset_outcome, split_response};
use crate::device::{DeviceError, OpContext};

/// The reset exchange over any report transport: a channel, the request, the status.
/// NOT_ALLOWED (the key is past its power-up window) is `ResetWindowMissed`; the key's answer
/// to keygate's CTAPHID_CANCEL (KEEPALIVE_CANCEL) is `TouchTimeout` once the deadline passed.
pub(super) fn reset_over(
    io: &mut dyn ReportIo,
    nonce: [u8; 8],
    ctx: &OpContext,
) -> Result<(), DeviceError> {
    let cid = open_channel(io, nonce)?;
    let answer = cbor_request(io, cid, &[cmd::RESET], ctx)?;
    let (status, _) = split_response(&answer)?;
    match reset_outcome(status) {
        Err(DeviceError::Cancelled) if ctx.expired() => Err(DeviceError::TouchTimeout),
        other => other,
    }
}

impl HidAuthenticator {
    pub(super) fn factory_reset(&self, ctx: &OpContext) -> Result<(), DeviceError> {
        if ctx.is_cancelled() {
            return Err(DeviceError::Cancelled);
        }
        self.retire_library();
        let mut raw = RawHid::open(self.path())?;
        let mut nonce = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let outcome = reset_over(&mut raw, nonce, ctx);
        tracing::info!(device = %self.path(), outcome = ?outcome.as_ref().map_err(|e| e.code()), "authenticatorReset sent");
        outcome
    }
}
