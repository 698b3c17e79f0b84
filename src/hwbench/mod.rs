//! `keygate bench`: the bench operator's tool. Runs a scripted suite against each plugged key
//! (real keys over HID, or the simulated ones) and writes a report per key as JSON, Markdown and
//! JUnit XML. Nothing destructive: no PIN is set, no reset; credentials are made for the RP ID
//! `keygate-bench.invalid` (discoverable ones only with `--discoverable`, as they use a slot).
//!
//! Every step runs through the key's [`DeviceActor`](crate::device::actor::DeviceActor), never
//! on the authenticator directly: ctap-hid-fido2 has no timeouts and a real key waits for a touch
//! for as long as it likes, so only the actor's deadline (which sends CTAPHID_CANCEL) bounds a
//! step on a real key.
//!
//! Here: the options and the report's types; `suite` runs the steps, `report` writes the files.

mod report;
mod suite;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::device::capture::CaptureSink;
use crate::device::DeviceInfo;

pub use report::{junit, markdown, write_reports};
pub use suite::bench_key;

/// The RP ID every bench credential is made for (never a real relying party's).
pub const BENCH_RP: &str = "keygate-bench.invalid";

#[derive(Clone)]
pub struct BenchOptions {
    /// Silent round trips (GetInfo) measured for p50/p99.
    pub iterations: usize,
    /// The key's PIN, for the user-verification steps.
    pub pin: Option<String>,
    pub discoverable: bool,
    /// Deadline of each step that waits for a touch.
    pub touch_timeout: Duration,
    /// Where the clientDataJSON of each ceremony is recorded (beside the CTAP capture), so a
    /// replay can run the relying party's checks.
    pub capture: Option<Arc<CaptureSink>>,
}

impl std::fmt::Debug for BenchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchOptions")
            .field("iterations", &self.iterations)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .field("discoverable", &self.discoverable)
            .field("touch_timeout", &self.touch_timeout)
            .field("capture", &self.capture.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub ms: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    pub operation: &'static str,
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    pub device: DeviceInfo,
    pub steps: Vec<Step>,
    pub round_trip: Option<RoundTrip>,
    pub passed: bool,
}
