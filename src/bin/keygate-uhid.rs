//! `keygate-uhid`: a virtual FIDO2 key in the Linux kernel, for machines without USB (CI).
//! It creates a USB-bus HID device through /dev/uhid with a FIDO report descriptor (usage page
//! 0xF1D0, 64-byte reports) and answers CTAPHID INIT/PING/WINK/CBOR/CANCEL, sending KEEPALIVE
//! while it "waits for a touch", with the simulated key's authenticator core. hidapi and
//! ctap-hid-fido2 then talk to it exactly as to a real key, through hidraw.
//!
//! Usage: keygate-uhid --data-dir DIR [--seed N] [--touch-ms MS] [--capture FILE] [--fault garbage]
//! Power-up is the creation of the uhid device: the key's authenticatorReset window
//! (`reset_window_ms` of its state, 10 s by default) starts then, so destroying and creating
//! the device again (stopping and starting this program) is a replug.
//! `--fault garbage`: a faulty key for the fault tests — MakeCredential is answered with status
//! OK followed by bytes that are not CBOR (other commands work, so the key still enumerates).
//! The uhid structures (linux/uhid.h) are packed little-endian; they are written as bytes, so
//! no unsafe code is needed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate::device::capture::CaptureSink;
use keygate::device::ctaphid::{
    cmd, err, fragment, keepalive, Assembler, Incoming, BROADCAST, REPORT,
};
use keygate::device::sim::{standalone_key, SoftKey, UserPresence};
use keygate::device::CtapStatus;

const UHID_EVENT_SIZE: usize = 4 + 4372;
const UHID_START: u32 = 2;
const UHID_OUTPUT: u32 = 6;
const UHID_CREATE2: u32 = 11;
const UHID_INPUT2: u32 = 12;
const BUS_USB: u16 = 0x03;

/// FIDO HID report descriptor (CTAP 2.1 §11.2.8.1).
const REPORT_DESCRIPTOR: &[u8] = &[
    0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x01, 0x09, 0x20, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08,
    0x95, 0x40, 0x81, 0x02, 0x09, 0x21, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08, 0x95, 0x40, 0x91,
    0x02, 0xC0,
];

fn create_event() -> Vec<u8> {
    let mut ev = vec![0u8; UHID_EVENT_SIZE];
    ev[0..4].copy_from_slice(&UHID_CREATE2.to_le_bytes());
    let name = b"keygate virtual FIDO2 key";
    ev[4..4 + name.len()].copy_from_slice(name);
    let phys = b"keygate-uhid";
    ev[132..132 + phys.len()].copy_from_slice(phys);
    ev[260..262].copy_from_slice(&(REPORT_DESCRIPTOR.len() as u16).to_le_bytes());
    ev[262..264].copy_from_slice(&BUS_USB.to_le_bytes());
    // pid.codes test vendor/product.
    ev[264..268].copy_from_slice(&0x1209u32.to_le_bytes());
    ev[268..272].copy_from_slice(&0x0001u32.to_le_bytes());
    ev[272..276].copy_from_slice(&1u32.to_le_bytes());
    ev[280..280 + REPORT_DESCRIPTOR.len()].copy_from_slice(REPORT_DESCRIPTOR);
    ev
}

struct Device {
    out: Mutex<File>,
}

impl Device {
    fn send_report(&self, report: &[u8; REPORT]) {
        let mut ev = vec![0u8; UHID_EVENT_SIZE];
        ev[0..4].copy_from_slice(&UHID_INPUT2.to_le_bytes());
        ev[4..6].copy_from_slice(&(REPORT as u16).to_le_bytes());
        ev[6..6 + REPORT].copy_from_slice(report);
        let mut f = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(&ev) {
            eprintln!("keygate-uhid: write: {e}");
        }
    }

    fn send(&self, cid: u32, command: u8, data: &[u8]) {
        for r in fragment(cid, command, data) {
            self.send_report(&r);
        }
    }
}

/// Touch after a fixed delay, with CTAPHID_KEEPALIVE (status 2: user presence needed) every
/// 100 ms meanwhile, and CTAPHID_CANCEL honoured.
struct Presence<'a> {
    dev: &'a Device,
    cid: u32,
    touch: Duration,
    cancel: &'a AtomicBool,
}

impl UserPresence for Presence<'_> {
    fn wait(&mut self) -> Result<(), CtapStatus> {
        let started = Instant::now();
        while started.elapsed() < self.touch {
            if self.cancel.load(Ordering::SeqCst) {
                return Err(CtapStatus::KeepaliveCancel);
            }
            self.dev
                .send(self.cid, cmd::KEEPALIVE, &[keepalive::UP_NEEDED]);
            std::thread::sleep(Duration::from_millis(100).min(self.touch));
        }
        Ok(())
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data_dir =
        PathBuf::from(arg(&args, "--data-dir").unwrap_or_else(|| "keygate-uhid-data".into()));
    let seed = arg(&args, "--seed").and_then(|s| s.parse().ok());
    let touch = Duration::from_millis(
        arg(&args, "--touch-ms")
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    let garbage = arg(&args, "--fault").as_deref() == Some("garbage");
    let capture =
        arg(&args, "--capture").map(|p| CaptureSink::create(p.as_ref()).expect("capture file"));
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let key: Arc<Mutex<SoftKey>> = Arc::new(Mutex::new(
        standalone_key(&data_dir, seed).expect("simulated key"),
    ));

    let mut uhid_in = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/uhid")
        .unwrap_or_else(|e| {
            eprintln!(
                "keygate-uhid: cannot open /dev/uhid: {e} (load the uhid module; root needed)"
            );
            std::process::exit(2);
        });
    let dev = Arc::new(Device {
        out: Mutex::new(uhid_in.try_clone().expect("clone uhid fd")),
    });
    dev.out
        .lock()
        .unwrap()
        .write_all(&create_event())
        .expect("UHID_CREATE2");
    // The key powers up with its device: authenticatorReset's window starts now.
    key.lock().unwrap_or_else(|e| e.into_inner()).power_cycle();
    eprintln!(
        "keygate-uhid: virtual key created (1209:0001); touch after {} ms",
        touch.as_millis()
    );

    let busy = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(AtomicBool::new(false));
    let capture = capture.map(Arc::new);
    let mut assembler = Assembler::default();
    let mut next_cid: u32 = 0x0100_0000;
    let mut buf = vec![0u8; UHID_EVENT_SIZE];
    loop {
        let n = match uhid_in.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("keygate-uhid: read: {e}");
                return;
            }
        };
        if n < 4 {
            continue;
        }
        match u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) {
            UHID_START => eprintln!("keygate-uhid: started by the kernel"),
            UHID_OUTPUT => {
                let size = u16::from_le_bytes([buf[4100], buf[4101]]) as usize;
                let mut report = &buf[4..4 + size.min(4096)];
                // hidraw writes carry the report number (0) first.
                if report.len() == REPORT + 1 {
                    report = &report[1..];
                }
                match assembler.push(report) {
                    Incoming::Complete(m) => match m.cmd {
                        cmd::INIT => {
                            if m.data.len() != 8 {
                                dev.send(m.cid, cmd::ERROR, &[err::INVALID_LEN]);
                                continue;
                            }
                            let cid = if m.cid == BROADCAST {
                                next_cid += 1;
                                next_cid
                            } else {
                                m.cid
                            };
                            let mut resp = m.data.clone();
                            resp.extend(cid.to_be_bytes());
                            // protocol 2, version 1.0.0, capabilities WINK | CBOR | NMSG (no U2F).
                            resp.extend([2, 1, 0, 0, 0x01 | 0x04 | 0x08]);
                            dev.send(m.cid, cmd::INIT, &resp);
                        }
                        cmd::PING => dev.send(m.cid, cmd::PING, &m.data),
                        cmd::WINK => dev.send(m.cid, cmd::WINK, &[]),
                        cmd::CANCEL => cancel.store(true, Ordering::SeqCst),
                        cmd::CBOR => {
                            if busy.swap(true, Ordering::SeqCst) {
                                dev.send(m.cid, cmd::ERROR, &[err::CHANNEL_BUSY]);
                                continue;
                            }
                            cancel.store(false, Ordering::SeqCst);
                            let (dev, key, busy, cancel, capture) = (
                                dev.clone(),
                                key.clone(),
                                busy.clone(),
                                cancel.clone(),
                                capture.clone(),
                            );
                            std::thread::spawn(move || {
                                let mut presence = Presence {
                                    dev: &dev,
                                    cid: m.cid,
                                    touch,
                                    cancel: &cancel,
                                };
                                let resp = if garbage && m.data.first() == Some(&0x01) {
                                    presence.wait().ok();
                                    vec![0x00, 0xFF, 0xFE, 0x5B, 0x1F, 0xBB]
                                } else {
                                    key.lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .process(&m.data, &mut presence)
                                };
                                if let Some(c) = &capture {
                                    c.record("uhid:1", &m.data, &resp);
                                }
                                // Free before answering: a client sends its next request as
                                // soon as it has this response, and must not get CHANNEL_BUSY.
                                busy.store(false, Ordering::SeqCst);
                                dev.send(m.cid, cmd::CBOR, &resp);
                            });
                        }
                        _ => dev.send(m.cid, cmd::ERROR, &[err::INVALID_CMD]),
                    },
                    Incoming::Error { cid, code } => dev.send(cid, cmd::ERROR, &[code]),
                    Incoming::Partial | Incoming::Ignored => {}
                }
            }
            _ => {}
        }
    }
}
