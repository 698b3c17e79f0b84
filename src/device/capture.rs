//! Wire captures: every CTAP2 request and response of a session, one JSON object per line
//! (`{"device", "request", "response"}`, bytes in hex), for bench operators to keep and for
//! offline replay tests (`tests/replay.rs`). Captures hold no PIN in clear: ClientPIN requests
//! carry only values encrypted under a one-time ECDH secret.
//!
//! The simulated and the uhid virtual key record at the CTAP2 level. Real keys go through
//! ctap-hid-fido2, which does not expose its CBOR bytes, so they are not captured here.
//!
//! A capture may also hold [`ClientData`] lines (`{"device", "client_data_json"}`): the
//! clientDataJSON a client hashed into a request. It never crosses the wire, but without it a
//! replay can check signatures only, not run the relying party's checks (challenge, origin,
//! type). `keygate bench --capture` writes one before each MakeCredential/GetAssertion; a
//! replay pairs it with its request by SHA-256 (the request's clientDataHash), so the order of
//! lines does not matter. Readers of one kind of line skip the other.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::base::sync::lock;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exchange {
    pub device: String,
    /// Command byte followed by CBOR parameters, hex.
    pub request: String,
    /// Status byte followed by CBOR, hex.
    pub response: String,
}

impl Exchange {
    pub fn request_bytes(&self) -> Vec<u8> {
        hex::decode(&self.request).unwrap_or_default()
    }
    pub fn response_bytes(&self) -> Vec<u8> {
        hex::decode(&self.response).unwrap_or_default()
    }
}

/// The clientDataJSON behind a request's clientDataHash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientData {
    pub device: String,
    /// The exact clientDataJSON text (UTF-8 JSON).
    pub client_data_json: String,
}

/// An append-only capture file. Several sinks may append to one file (the simulated keys'
/// and the bench's): each line is written with one `write` on an `O_APPEND` handle.
pub struct CaptureSink {
    file: Mutex<std::fs::File>,
}

impl CaptureSink {
    pub fn create(path: &Path) -> std::io::Result<CaptureSink> {
        let file = crate::base::fs::append_private(path)?;
        Ok(CaptureSink {
            file: Mutex::new(file),
        })
    }

    pub fn record(&self, device: &str, request: &[u8], response: &[u8]) {
        self.write_line(serde_json::to_string(&Exchange {
            device: device.to_string(),
            request: hex::encode(request),
            response: hex::encode(response),
        }));
    }

    /// Record the clientDataJSON the next request of `device` hashes.
    pub fn record_client_data(&self, device: &str, client_data_json: &[u8]) {
        self.write_line(serde_json::to_string(&ClientData {
            device: device.to_string(),
            client_data_json: String::from_utf8_lossy(client_data_json).into_owned(),
        }));
    }

    fn write_line(&self, line: serde_json::Result<String>) {
        let Ok(mut line) = line else {
            return;
        };
        line.push('\n');
        let mut f = lock(&self.file);
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot write the CTAP capture");
        }
    }
}

/// The request/response exchanges of a capture file's text; other and malformed lines are
/// skipped.
pub fn parse(text: &str) -> Vec<Exchange> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The [`ClientData`] lines of a capture file's text.
pub fn parse_client_data(text: &str) -> Vec<ClientData> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_of_line_share_a_file_and_are_read_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let (a, b) = (
            CaptureSink::create(&path).unwrap(),
            CaptureSink::create(&path).unwrap(),
        );
        b.record_client_data("sim:1", br#"{"type":"webauthn.get"}"#);
        a.record("sim:1", &[0x02, 0xA0], &[0x00, 0xA0]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let ex = parse(&text);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].request_bytes(), vec![0x02, 0xA0]);
        let cd = parse_client_data(&text);
        assert_eq!(cd.len(), 1);
        assert_eq!(cd[0].client_data_json, r#"{"type":"webauthn.get"}"#);
    }
}
