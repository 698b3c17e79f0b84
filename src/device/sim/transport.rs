//! One simulated key on the bench and its transport: [`SimKey`] holds the core behind a mutex
//! with its plug state; [`SimTransport`] hands each CTAP2 request straight to the core, with
//! [`SimPresence`] playing the user who touches (or does not touch) the key. An unplug during a
//! request bumps the plug generation, so the request ends as `DeviceError::Removed`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::options::{SimKeyStatus, Touch};
use super::{SoftKey, UserPresence, SIM_AAGUID, SIM_MODEL};
use crate::base::sync::lock;
use crate::device::capture::CaptureSink;
use crate::device::ctap2::CtapTransport;
use crate::device::{CtapStatus, DeviceError, OpContext, Progress};

pub(super) struct SimKey {
    pub(super) index: u32,
    pub(super) id: String,
    pub(super) soft: Mutex<SoftKey>,
    pub(super) touch: Mutex<Touch>,
    pub(super) plugged: AtomicBool,
    /// Bumped on every unplug, so an operation that began before it notices.
    pub(super) plug_generation: AtomicU64,
    pub(super) cancel_requested: AtomicBool,
    /// Total time spent inside this key's requests, in nanoseconds: see [`SimBench::time_in_keys`].
    pub(super) busy_nanos: AtomicU64,
    pub(super) cloned_from: Option<String>,
    /// Last known status, readable while an operation holds the key.
    pub(super) snapshot: Mutex<SimKeyStatus>,
    pub(super) file: PathBuf,
}

impl SimKey {
    fn status_of(&self, soft: &SoftKey) -> SimKeyStatus {
        SimKeyStatus {
            id: self.id.clone(),
            plugged: self.plugged.load(Ordering::SeqCst),
            aaguid: SIM_AAGUID,
            model: SIM_MODEL,
            touch: *lock(&self.touch),
            counter: soft.state.counter_mode,
            sign_counter: soft.state.sign_counter,
            pin_set: soft.pin_set(),
            pin_retries: soft.state.pin_retries,
            discoverable_credentials: soft.state.resident.len(),
            resident_slots: soft.state.resident_slots,
            attestation: soft.state.attestation,
            pin_supported: soft.state.pin_supported,
            extensions: soft.state.extensions.clone(),
            cloned_from: self.cloned_from.clone(),
        }
    }

    pub(super) fn refresh_snapshot(&self, soft: &SoftKey) {
        *lock(&self.snapshot) = self.status_of(soft);
    }

    pub(super) fn status(&self) -> SimKeyStatus {
        let mut s = match self.soft.try_lock() {
            Ok(soft) => self.status_of(&soft),
            Err(_) => lock(&self.snapshot).clone(),
        };
        s.plugged = self.plugged.load(Ordering::SeqCst);
        s.touch = *lock(&self.touch);
        s
    }
}

/// The simulated user at the key during one request.
struct SimPresence<'a> {
    key: &'a SimKey,
    ctx: &'a OpContext,
    generation: u64,
}

impl SimPresence<'_> {
    fn interrupted(&self) -> Option<CtapStatus> {
        if self.key.plug_generation.load(Ordering::SeqCst) != self.generation
            || !self.key.plugged.load(Ordering::SeqCst)
        {
            // The transport reports the unplug as `Removed` once the core returns.
            return Some(CtapStatus::KeepaliveCancel);
        }
        if self.ctx.is_cancelled() || self.key.cancel_requested.load(Ordering::SeqCst) {
            return Some(CtapStatus::KeepaliveCancel);
        }
        if self.ctx.expired() {
            return Some(CtapStatus::UserActionTimeout);
        }
        None
    }
}

impl UserPresence for SimPresence<'_> {
    fn wait(&mut self) -> Result<(), CtapStatus> {
        let started = Instant::now();
        loop {
            if let Some(s) = self.interrupted() {
                return Err(s);
            }
            match *lock(&self.key.touch) {
                Touch::Deny => return Err(CtapStatus::OperationDenied),
                Touch::AutoAfterMs(ms) if started.elapsed() >= Duration::from_millis(ms) => {
                    self.ctx.emit(Progress::Processing);
                    return Ok(());
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// The transport of one simulated key: requests go straight into its core.
pub(super) struct SimTransport {
    pub(super) key: Arc<SimKey>,
    /// Shared with the bench: when set, every request/response is recorded.
    pub(super) capture: Arc<Mutex<Option<Arc<CaptureSink>>>>,
}

impl SimTransport {
    fn transact_timed(&self, request: &[u8], ctx: &OpContext) -> Result<Vec<u8>, DeviceError> {
        let key = &self.key;
        if !key.plugged.load(Ordering::SeqCst) {
            return Err(DeviceError::Removed);
        }
        let generation = key.plug_generation.load(Ordering::SeqCst);
        key.cancel_requested.store(false, Ordering::SeqCst);
        let mut soft = lock(&key.soft);
        let mut presence = SimPresence {
            key,
            ctx,
            generation,
        };
        let response = soft.process(request, &mut presence);
        key.refresh_snapshot(&soft);
        if key.plug_generation.load(Ordering::SeqCst) != generation {
            return Err(DeviceError::Removed);
        }
        if let Some(sink) = lock(&self.capture).as_ref() {
            sink.record(&key.id, request, &response);
        }
        Ok(response)
    }
}

impl CtapTransport for SimTransport {
    fn transact(&self, request: &[u8], ctx: &OpContext) -> Result<Vec<u8>, DeviceError> {
        let started = Instant::now();
        let result = self.transact_timed(request, ctx);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.key.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
        result
    }

    fn cancel(&self) {
        self.key.cancel_requested.store(true, Ordering::SeqCst);
    }

    fn product(&self) -> String {
        SIM_MODEL.to_string()
    }

    fn kind(&self) -> &'static str {
        "sim"
    }

    /// Every unplug and replug moves the plug generation on.
    fn power_ups(&self) -> u64 {
        self.key.plug_generation.load(Ordering::SeqCst)
    }
}
