//! The reset exchange against scripted keys: a fake report transport that answers what is
//! written to it the way a key does (CTAPHID_INIT, then the scripted reports after the CBOR
//! request, then its answer to CTAPHID_CANCEL), recording every report keygate wrote.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::reset::reset_over;
use super::*;
use crate::device::ctap2::cmd as ctap;

const NONCE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const CID: u32 = 0x0A0B_0C0D;
/// Another program's channel on the same key.
const OTHER_CID: u32 = 0x0505_0505;

fn keepalive_report(cid: u32, status: u8) -> [u8; REPORT] {
    fragment(cid, cmd::KEEPALIVE, &[status])[0]
}

/// A scripted key.
struct FakeKey {
    capabilities: u8,
    /// Sent after the CBOR request, in order.
    after_request: Vec<[u8; REPORT]>,
    /// Once `after_request` is used up: a key nobody touches (UP_NEEDED keepalives).
    keepalive_forever: bool,
    /// The key's answer to CTAPHID_CANCEL (a CTAP status byte), or silence.
    answer_to_cancel: Option<u8>,
    /// Raise this context's cancel flag after this many keepalives were read (the kiosk's
    /// cancel, arriving while the key waits for a touch).
    cancel_after_keepalives: Option<(usize, OpContext)>,
    /// A read fails as on a node whose device is gone.
    removed_after_request: bool,
    queue: VecDeque<[u8; REPORT]>,
    written: Vec<[u8; REPORT]>,
    requested: bool,
    cancelled: bool,
    keepalives_read: usize,
}

impl FakeKey {
    fn new() -> Self {
        FakeKey {
            capabilities: 0x01 | 0x04 | 0x08,
            after_request: Vec::new(),
            keepalive_forever: false,
            answer_to_cancel: None,
            cancel_after_keepalives: None,
            removed_after_request: false,
            queue: VecDeque::new(),
            written: Vec::new(),
            requested: false,
            cancelled: false,
            keepalives_read: 0,
        }
    }

    fn answering(status: u8) -> Self {
        let mut key = FakeKey::new();
        key.after_request = fragment(CID, cmd::CBOR, &[status]);
        key
    }

    /// The written reports, reassembled into messages.
    fn written_messages(&self) -> Vec<crate::device::ctaphid::Message> {
        let mut a = Assembler::default();
        self.written
            .iter()
            .filter_map(|r| match a.push(r) {
                Incoming::Complete(m) => Some(m),
                _ => None,
            })
            .collect()
    }
}

impl ReportIo for FakeKey {
    fn write_report(&mut self, report: &[u8; REPORT]) -> Result<(), DeviceError> {
        self.written.push(*report);
        match report[4] {
            cmd::INIT => {
                // Another program's INIT answer first: a different nonce, to be skipped.
                let mut theirs = vec![9u8; 8];
                theirs.extend(OTHER_CID.to_be_bytes());
                theirs.extend([2, 1, 0, 0, self.capabilities]);
                self.queue.extend(fragment(BROADCAST, cmd::INIT, &theirs));
                let mut ours = report[7..15].to_vec();
                ours.extend(CID.to_be_bytes());
                ours.extend([2, 1, 0, 0, self.capabilities]);
                self.queue.extend(fragment(BROADCAST, cmd::INIT, &ours));
            }
            cmd::CBOR => {
                self.requested = true;
                // Another channel's answer, interleaved: never taken for this one's.
                self.queue.extend(fragment(
                    OTHER_CID,
                    cmd::CBOR,
                    &[CtapStatus::OperationDenied.to_byte()],
                ));
                self.queue.extend(self.after_request.iter().copied());
            }
            cmd::CANCEL => {
                self.cancelled = true;
                if let Some(status) = self.answer_to_cancel {
                    self.queue.extend(fragment(CID, cmd::CBOR, &[status]));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<[u8; REPORT]>, DeviceError> {
        if let Some(r) = self.queue.pop_front() {
            return Ok(Some(r));
        }
        if self.requested && self.removed_after_request {
            return Err(DeviceError::Removed);
        }
        if self.requested && self.keepalive_forever && !self.cancelled {
            self.keepalives_read += 1;
            if let Some((n, ctx)) = &self.cancel_after_keepalives {
                if self.keepalives_read == *n {
                    ctx.cancel();
                }
            }
            return Ok(Some(keepalive_report(CID, keepalive::UP_NEEDED)));
        }
        std::thread::sleep(timeout.min(Duration::from_millis(5)));
        Ok(None)
    }
}

fn recording_ctx(deadline: Instant) -> (OpContext, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let ctx = OpContext::new(deadline, Arc::new(move |p| sink.lock().unwrap().push(p)));
    (ctx, seen)
}

fn minute() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[test]
fn keepalives_then_ok_is_a_reset_on_the_allocated_channel() {
    let mut key = FakeKey::new();
    key.after_request = vec![
        keepalive_report(CID, keepalive::PROCESSING),
        keepalive_report(CID, keepalive::UP_NEEDED),
        keepalive_report(OTHER_CID, keepalive::UP_NEEDED),
        keepalive_report(CID, keepalive::UP_NEEDED),
        keepalive_report(CID, keepalive::UP_NEEDED),
        fragment(CID, cmd::CBOR, &[0x00])[0],
    ];
    let (ctx, seen) = recording_ctx(minute());
    reset_over(&mut key, NONCE, &ctx).unwrap();

    let sent = key.written_messages();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        (sent[0].cid, sent[0].cmd, sent[0].data.as_slice()),
        (BROADCAST, cmd::INIT, NONCE.as_slice())
    );
    assert_eq!(
        (sent[1].cid, sent[1].cmd, sent[1].data.as_slice()),
        (CID, cmd::CBOR, [ctap::RESET].as_slice()),
        "authenticatorReset, alone, on the channel the key allocated"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [Progress::Processing, Progress::WaitingTouch],
        "one event per keepalive status change"
    );
}

#[test]
fn ctap_statuses_of_a_reset_become_typed_errors() {
    for (status, want) in [
        (CtapStatus::NotAllowed, DeviceError::ResetWindowMissed),
        (CtapStatus::OperationDenied, DeviceError::OperationDenied),
        (CtapStatus::UserActionTimeout, DeviceError::TouchTimeout),
        (CtapStatus::KeepaliveCancel, DeviceError::Cancelled),
        (
            CtapStatus::InvalidCommand,
            DeviceError::Ctap(CtapStatus::InvalidCommand),
        ),
    ] {
        let mut key = FakeKey::answering(status.to_byte());
        let (ctx, _) = recording_ctx(minute());
        assert_eq!(reset_over(&mut key, NONCE, &ctx), Err(want), "{status:?}");
        assert!(!key.cancelled, "nothing to cancel");
    }
}

#[test]
fn ctaphid_errors_and_a_vanished_key_are_typed_errors() {
    let mut busy = FakeKey::new();
    busy.after_request = fragment(CID, cmd::ERROR, &[0x06]);
    let (ctx, _) = recording_ctx(minute());
    assert_eq!(reset_over(&mut busy, NONCE, &ctx), Err(DeviceError::Busy));

    let mut unknown = FakeKey::new();
    unknown.after_request = fragment(CID, cmd::ERROR, &[0x01]);
    assert_eq!(
        reset_over(&mut unknown, NONCE, &ctx),
        Err(DeviceError::Ctap(CtapStatus::InvalidCommand))
    );

    let mut u2f_only = FakeKey::answering(0x00);
    u2f_only.capabilities = 0x01 | 0x08;
    assert_eq!(
        reset_over(&mut u2f_only, NONCE, &ctx),
        Err(DeviceError::Ctap(CtapStatus::InvalidCommand))
    );
    assert!(!u2f_only.requested, "no CBOR request to a key without CBOR");

    let mut pulled = FakeKey::new();
    pulled.removed_after_request = true;
    assert_eq!(
        reset_over(&mut pulled, NONCE, &ctx),
        Err(DeviceError::Removed)
    );
}

#[test]
fn a_cancel_while_waiting_for_the_touch_sends_ctaphid_cancel() {
    let (ctx, seen) = recording_ctx(minute());
    let mut key = FakeKey::new();
    key.keepalive_forever = true;
    key.answer_to_cancel = Some(CtapStatus::KeepaliveCancel.to_byte());
    key.cancel_after_keepalives = Some((3, ctx.clone()));
    assert_eq!(
        reset_over(&mut key, NONCE, &ctx),
        Err(DeviceError::Cancelled)
    );
    let sent = key.written_messages();
    let cancels: Vec<_> = sent.iter().filter(|m| m.cmd == cmd::CANCEL).collect();
    assert_eq!(cancels.len(), 1, "one CTAPHID_CANCEL: {sent:?}");
    assert_eq!((cancels[0].cid, cancels[0].data.len()), (CID, 0));
    assert_eq!(*seen.lock().unwrap(), [Progress::WaitingTouch]);
}

#[test]
fn a_deadline_passed_sends_ctaphid_cancel_and_is_a_touch_timeout() {
    // The key answers the cancel.
    let (ctx, _) = recording_ctx(Instant::now());
    let mut key = FakeKey::new();
    key.keepalive_forever = true;
    key.answer_to_cancel = Some(CtapStatus::KeepaliveCancel.to_byte());
    assert_eq!(
        reset_over(&mut key, NONCE, &ctx),
        Err(DeviceError::TouchTimeout)
    );
    assert!(key.cancelled);

    // The key stays silent after the cancel: keygate stops waiting on its own.
    let mut mute = FakeKey::new();
    mute.keepalive_forever = true;
    assert_eq!(
        reset_over(&mut mute, NONCE, &ctx),
        Err(DeviceError::TouchTimeout)
    );
    let cancels = mute
        .written_messages()
        .iter()
        .filter(|m| m.cmd == cmd::CANCEL)
        .count();
    assert_eq!(cancels, 1, "CTAPHID_CANCEL is sent once");
}

#[test]
fn a_long_answer_is_reassembled_from_continuation_packets() {
    let answer: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
    let mut key = FakeKey::new();
    key.after_request = vec![keepalive_report(CID, keepalive::UP_NEEDED)];
    key.after_request.extend(fragment(CID, cmd::CBOR, &answer));
    let (ctx, _) = recording_ctx(minute());
    let cid = open_channel(&mut key, NONCE).unwrap();
    assert_eq!(cid, CID);
    assert_eq!(cbor_request(&mut key, cid, &[0x04], &ctx).unwrap(), answer);
}
