//! CTAPHID from the platform side (FIDO CTAP 2.1 §11.2), for the commands ctap-hid-fido2 3.6
//! cannot send (authenticatorReset): allocate a channel with CTAPHID_INIT, then one
//! CTAPHID_CBOR request, reading KEEPALIVEs until the answer and sending CTAPHID_CANCEL when
//! the operation's context is cancelled or its deadline passes. The framing is the
//! authenticator side's (`device::ctaphid`): the same `fragment` and `Assembler`.
//!
//! Contract with the device: every input report goes to every open handle of a hidraw node,
//! so reports of other channels (another program talking to the key) are skipped by channel
//! id, never taken as answers.

use std::time::{Duration, Instant};

use crate::device::ctaphid::{cmd, fragment, keepalive, Assembler, Incoming, BROADCAST, REPORT};
use crate::device::{CtapStatus, DeviceError, OpContext, Progress};

/// One FIDO HID device, report by report (64 bytes, without the report number).
pub trait ReportIo {
    fn write_report(&mut self, report: &[u8; REPORT]) -> Result<(), DeviceError>;
    /// The next input report, or `None` when none came within `timeout`.
    fn read_report(&mut self, timeout: Duration) -> Result<Option<[u8; REPORT]>, DeviceError>;
}

/// How long one read waits before the cancel flag and the deadline are looked at again.
const POLL: Duration = Duration::from_millis(100);
/// How long a key gets to answer CTAPHID_INIT (it needs no touch).
pub const INIT_ANSWER: Duration = Duration::from_secs(3);
/// How long a key gets to answer a request it was sent CTAPHID_CANCEL for (§11.2.9.1.5: it
/// ends the request with CTAP2_ERR_KEEPALIVE_CANCEL "as soon as possible"). Shorter than the
/// actor's grace after a cancel, so the actor sees how the request ended.
pub const CANCEL_ANSWER: Duration = Duration::from_secs(2);
/// CTAPHID_INIT capability flag: the key speaks CTAPHID_CBOR (§11.2.9.1.3).
const CAPABILITY_CBOR: u8 = 0x04;

fn channel_of(report: &[u8; REPORT]) -> u32 {
    u32::from_be_bytes([report[0], report[1], report[2], report[3]])
}

/// A CTAPHID_ERROR answer (§11.2.9.1.6); its codes share the CTAP1 status values.
fn hid_error(data: &[u8]) -> DeviceError {
    match data.first().map(|b| CtapStatus::from_byte(*b)) {
        Some(CtapStatus::ChannelBusy) => DeviceError::Busy,
        Some(status) => DeviceError::Ctap(status),
        None => DeviceError::Protocol("empty CTAPHID_ERROR".into()),
    }
}

/// CTAPHID_INIT on the broadcast channel with `nonce` (fresh from the OS RNG: the answer is
/// recognised by it among answers to other programs' INITs). Answers the new channel id.
pub fn open_channel(io: &mut dyn ReportIo, nonce: [u8; 8]) -> Result<u32, DeviceError> {
    for report in fragment(BROADCAST, cmd::INIT, &nonce) {
        io.write_report(&report)?;
    }
    let until = Instant::now() + INIT_ANSWER;
    let mut assembler = Assembler::default();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DeviceError::Io(
                "the key did not answer CTAPHID_INIT".into(),
            ));
        }
        let Some(report) = io.read_report(left.min(POLL))? else {
            continue;
        };
        if channel_of(&report) != BROADCAST {
            continue;
        }
        match assembler.push(&report) {
            Incoming::Complete(m) if m.cmd == cmd::INIT => {
                // nonce(8) cid(4) protocol version(1) device version(3) capabilities(1)
                if m.data.len() < 17 || m.data[..8] != nonce {
                    continue;
                }
                if m.data[16] & CAPABILITY_CBOR == 0 {
                    // A U2F-only key: no CTAP2 command reaches it.
                    return Err(DeviceError::Ctap(CtapStatus::InvalidCommand));
                }
                return Ok(u32::from_be_bytes([
                    m.data[8], m.data[9], m.data[10], m.data[11],
                ]));
            }
            Incoming::Complete(m) if m.cmd == cmd::ERROR => return Err(hid_error(&m.data)),
            _ => {}
        }
    }
}

/// Why a request ended after keygate cancelled it.
fn interrupted(ctx: &OpContext) -> DeviceError {
    if ctx.expired() {
        DeviceError::TouchTimeout
    } else {
        DeviceError::Cancelled
    }
}

/// One CTAPHID_CBOR request on channel `cid`: answers the raw CTAP response (status byte, then
/// CBOR). KEEPALIVE "user presence needed" emits [`Progress::WaitingTouch`], "processing"
/// [`Progress::Processing`], each when the status changes. When `ctx` is cancelled or expires
/// a CTAPHID_CANCEL goes out once; the key's answer to it (KEEPALIVE_CANCEL) is returned as
/// any other answer, and a key that stays silent for [`CANCEL_ANSWER`] after it ends the
/// request as `TouchTimeout` (deadline) or `Cancelled`.
pub fn cbor_request(
    io: &mut dyn ReportIo,
    cid: u32,
    request: &[u8],
    ctx: &OpContext,
) -> Result<Vec<u8>, DeviceError> {
    for report in fragment(cid, cmd::CBOR, request) {
        io.write_report(&report)?;
    }
    let mut assembler = Assembler::default();
    let mut cancel_sent: Option<Instant> = None;
    let mut last_keepalive: Option<u8> = None;
    loop {
        match cancel_sent {
            None if ctx.is_cancelled() || ctx.expired() => {
                io.write_report(&fragment(cid, cmd::CANCEL, &[])[0])?;
                cancel_sent = Some(Instant::now());
            }
            Some(at) if at.elapsed() >= CANCEL_ANSWER => return Err(interrupted(ctx)),
            _ => {}
        }
        let Some(report) = io.read_report(POLL)? else {
            continue;
        };
        if channel_of(&report) != cid {
            continue;
        }
        match assembler.push(&report) {
            Incoming::Complete(m) => match m.cmd {
                cmd::CBOR => return Ok(m.data),
                cmd::ERROR => return Err(hid_error(&m.data)),
                cmd::KEEPALIVE => {
                    let status = m.data.first().copied();
                    if status != last_keepalive {
                        match status {
                            Some(keepalive::UP_NEEDED) => ctx.emit(Progress::WaitingTouch),
                            Some(keepalive::PROCESSING) => ctx.emit(Progress::Processing),
                            _ => {}
                        }
                        last_keepalive = status;
                    }
                }
                // A late answer to an earlier command on this channel: not ours.
                _ => {}
            },
            Incoming::Error { .. } => {
                return Err(DeviceError::Protocol(
                    "the key's answer is not valid CTAPHID framing".into(),
                ))
            }
            Incoming::Partial | Incoming::Ignored => {}
        }
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
