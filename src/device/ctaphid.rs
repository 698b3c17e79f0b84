//! CTAPHID framing (FIDO CTAP 2.1 §11.2.4): 64-byte reports are reassembled into messages and
//! messages split into reports. Pure and fuzzed (proptest). Both sides use it: the uhid
//! virtual key (`keygate-uhid`) as the authenticator, and the HID adapter's own requests
//! (`device::hid::exchange`, authenticatorReset) as the platform.

pub const REPORT: usize = 64;
pub const BROADCAST: u32 = 0xFFFF_FFFF;
const INIT_DATA: usize = REPORT - 7;
const CONT_DATA: usize = REPORT - 5;
/// Largest message a 128-continuation-packet transfer can carry.
pub const MAX_MESSAGE: usize = INIT_DATA + 128 * CONT_DATA;

pub mod cmd {
    pub const PING: u8 = 0x81;
    pub const MSG: u8 = 0x83;
    pub const INIT: u8 = 0x86;
    pub const WINK: u8 = 0x88;
    pub const CBOR: u8 = 0x90;
    pub const CANCEL: u8 = 0x91;
    pub const KEEPALIVE: u8 = 0xBB;
    pub const ERROR: u8 = 0xBF;
}

/// CTAPHID_KEEPALIVE status bytes (§11.2.9.2.3).
pub mod keepalive {
    /// The key is still processing the request.
    pub const PROCESSING: u8 = 1;
    /// The key waits for user presence (a touch).
    pub const UP_NEEDED: u8 = 2;
}

/// CTAPHID_ERROR codes (§11.2.9.1.6).
pub mod err {
    pub const INVALID_CMD: u8 = 0x01;
    pub const INVALID_LEN: u8 = 0x03;
    pub const INVALID_SEQ: u8 = 0x04;
    pub const CHANNEL_BUSY: u8 = 0x06;
    pub const INVALID_CHANNEL: u8 = 0x0B;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub cid: u32,
    pub cmd: u8,
    pub data: Vec<u8>,
}

/// What one incoming report amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole message arrived.
    Complete(Message),
    /// More continuation packets are expected.
    Partial,
    /// The report was bad: answer CTAPHID_ERROR with this code on this channel.
    Error { cid: u32, code: u8 },
    /// Nothing to do (e.g. a stray continuation packet on an idle channel).
    Ignored,
}

struct Pending {
    cid: u32,
    cmd: u8,
    total: usize,
    data: Vec<u8>,
    next_seq: u8,
}

/// Reassembles one message at a time (an authenticator serves one transaction at a time).
#[derive(Default)]
pub struct Assembler {
    pending: Option<Pending>,
}

impl Assembler {
    pub fn push(&mut self, report: &[u8]) -> Incoming {
        if report.len() < 5 {
            return Incoming::Ignored;
        }
        let cid = u32::from_be_bytes([report[0], report[1], report[2], report[3]]);
        let b = report[4];
        if b & 0x80 != 0 {
            if report.len() < 7 {
                return Incoming::Error {
                    cid,
                    code: err::INVALID_LEN,
                };
            }
            if let Some(p) = &self.pending {
                if p.cid != cid && b != cmd::INIT {
                    return Incoming::Error {
                        cid,
                        code: err::CHANNEL_BUSY,
                    };
                }
            }
            let total = u16::from_be_bytes([report[5], report[6]]) as usize;
            if total > MAX_MESSAGE {
                self.pending = None;
                return Incoming::Error {
                    cid,
                    code: err::INVALID_LEN,
                };
            }
            let take = total.min(INIT_DATA).min(report.len() - 7);
            let data = report[7..7 + take].to_vec();
            if data.len() >= total {
                self.pending = None;
                return Incoming::Complete(Message { cid, cmd: b, data });
            }
            self.pending = Some(Pending {
                cid,
                cmd: b,
                total,
                data,
                next_seq: 0,
            });
            Incoming::Partial
        } else {
            let Some(p) = &mut self.pending else {
                return Incoming::Ignored;
            };
            if p.cid != cid {
                return Incoming::Error {
                    cid,
                    code: err::CHANNEL_BUSY,
                };
            }
            if b != p.next_seq {
                self.pending = None;
                return Incoming::Error {
                    cid,
                    code: err::INVALID_SEQ,
                };
            }
            p.next_seq += 1;
            let want = p.total - p.data.len();
            let take = want.min(CONT_DATA).min(report.len() - 5);
            p.data.extend_from_slice(&report[5..5 + take]);
            if p.data.len() >= p.total {
                let p = self.pending.take().expect("pending");
                Incoming::Complete(Message {
                    cid: p.cid,
                    cmd: p.cmd,
                    data: p.data,
                })
            } else {
                Incoming::Partial
            }
        }
    }
}

/// Split a message into 64-byte reports (init packet, then continuation packets).
pub fn fragment(cid: u32, command: u8, data: &[u8]) -> Vec<[u8; REPORT]> {
    let mut out = Vec::new();
    let mut first = [0u8; REPORT];
    first[..4].copy_from_slice(&cid.to_be_bytes());
    first[4] = command;
    first[5..7].copy_from_slice(&(data.len() as u16).to_be_bytes());
    let n = data.len().min(INIT_DATA);
    first[7..7 + n].copy_from_slice(&data[..n]);
    out.push(first);
    for (seq, chunk) in data[n..].chunks(CONT_DATA).enumerate() {
        let mut r = [0u8; REPORT];
        r[..4].copy_from_slice(&cid.to_be_bytes());
        r[4] = seq as u8 & 0x7F;
        r[5..5 + chunk.len()].copy_from_slice(chunk);
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_small_and_large() {
        for len in [0usize, 1, 57, 58, 200, 1024, MAX_MESSAGE] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut a = Assembler::default();
            let reports = fragment(0x0102_0304, cmd::CBOR, &data);
            let mut done = None;
            for (i, r) in reports.iter().enumerate() {
                match a.push(r) {
                    Incoming::Complete(m) => {
                        assert_eq!(i, reports.len() - 1);
                        done = Some(m);
                    }
                    Incoming::Partial => {}
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(
                done.unwrap(),
                Message {
                    cid: 0x0102_0304,
                    cmd: cmd::CBOR,
                    data
                }
            );
        }
    }

    #[test]
    fn wrong_sequence_and_channel_are_errors() {
        let data = vec![7u8; 200];
        let reports = fragment(5, cmd::CBOR, &data);
        let mut a = Assembler::default();
        assert_eq!(a.push(&reports[0]), Incoming::Partial);
        assert_eq!(
            a.push(&reports[2]),
            Incoming::Error {
                cid: 5,
                code: err::INVALID_SEQ
            }
        );
        let mut a = Assembler::default();
        a.push(&reports[0]);
        let other = fragment(6, cmd::CBOR, &data);
        assert_eq!(
            a.push(&other[0]),
            Incoming::Error {
                cid: 6,
                code: err::CHANNEL_BUSY
            }
        );
        let mut too_long = fragment(5, cmd::CBOR, &[])[0];
        too_long[5..7].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Assembler::default().push(&too_long),
            Incoming::Error {
                cid: 5,
                code: err::INVALID_LEN
            }
        );
    }

    proptest! {
        /// Arbitrary report sequences never panic and never yield more data than declared.
        #[test]
        fn assembler_survives_garbage(reports in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..40)) {
            let mut a = Assembler::default();
            for r in reports {
                if let Incoming::Complete(m) = a.push(&r) {
                    prop_assert!(m.data.len() <= MAX_MESSAGE);
                }
            }
        }

        #[test]
        fn fragment_then_assemble_is_identity(cid in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut a = Assembler::default();
            let mut got = None;
            for r in fragment(cid, cmd::CBOR, &data) {
                if let Incoming::Complete(m) = a.push(&r) { got = Some(m); }
            }
            prop_assert_eq!(got.unwrap().data, data);
        }
    }
}
