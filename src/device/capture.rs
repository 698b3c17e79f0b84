//! Wire captures: every CTAP2 request and response of a session, one JSON object per line
//! (`{"device", "request", "response"}`, bytes in hex), for bench operators to keep and for
//! offline replay tests (`tests/replay.rs`). Captures hold no PIN in clear: ClientPIN requests
//! carry only values encrypted under a one-time ECDH secret.
//!
//! The simulated and the uhid virtual key record at the CTAP2 level. Real keys go through
//! ctap-hid-fido2, which does not expose its CBOR bytes, so they are not captured here.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

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

/// An append-only capture file.
pub struct CaptureSink {
    file: Mutex<std::fs::File>,
}

impl CaptureSink {
    pub fn create(path: &Path) -> std::io::Result<CaptureSink> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(CaptureSink {
            file: Mutex::new(file),
        })
    }

    pub fn record(&self, device: &str, request: &[u8], response: &[u8]) {
        let line = serde_json::to_string(&Exchange {
            device: device.to_string(),
            request: hex::encode(request),
            response: hex::encode(response),
        })
        .unwrap_or_default();
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(f, "{line}") {
            tracing::warn!(error = %e, "cannot write the CTAP capture");
        }
    }
}

/// Parse a capture file's text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Exchange> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
