//! Simulated keys (`--simulate`): software CTAP2 authenticators ([`core::SoftKey`]) behind the
//! same [`Ctap2Authenticator`] command layer as a transport, so every request and response is
//! real CTAP2 CBOR. The [`SimBench`] is the bench they sit on: plug, unplug, replug, clone,
//! configure touch/PIN/counter behaviour. Keys persist in `<data_dir>/sim/keys/<n>.json` like a
//! real key's flash; the packed-attestation test CA lives in `<data_dir>/sim/`.

//!
//! Files: `options` (the scripting surface: touch, key options, status), `transport` (one key
//! and its CTAP transport), `attestation` (the test CA), `core` (the authenticator itself, with
//! the credProtect and hmac-secret extensions).

mod attestation;
pub mod core;
mod options;
mod transport;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};

use self::attestation::load_or_create_attestation;
pub use self::core::{
    AlwaysPresent, Attestation, AttestationMode, CounterMode, KeyState, SimExtension, SoftKey,
    UserPresence, SIM_AAGUID, SIM_MODEL,
};
pub use self::options::{SimKeyOptions, SimKeyStatus, Touch};
use self::transport::{SimKey, SimTransport};
use super::capture::CaptureSink;
use super::ctap2::Ctap2Authenticator;
use super::{Authenticator, DeviceError, DeviceSource};
use crate::base::sync::lock;

struct Plugged {
    key: Arc<SimKey>,
    auth: Arc<dyn Authenticator>,
}

/// All simulated keys of a data dir, and the controls a test bench has over them.
pub struct SimBench {
    dir: PathBuf,
    seed: Option<u64>,
    attestation: Arc<Attestation>,
    ca_pem: String,
    keys: Mutex<Vec<Plugged>>,
    capture: Arc<Mutex<Option<Arc<CaptureSink>>>>,
    /// How many keys this bench has plugged under each index: a key plugged where a removed
    /// one was gets its id (as a USB key takes over the hidraw path of the one before) but is
    /// another key, with secrets of its own even on a seeded bench.
    plugged_at: Mutex<std::collections::HashMap<u32, u32>>,
}

fn io(e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Io(e.to_string())
}

impl SimBench {
    /// Open (or create) the bench in `<data_dir>/sim`. With no key yet, one is plugged:
    /// no PIN, touch after ~100 ms.
    pub fn open(data_dir: &Path, seed: Option<u64>) -> Result<SimBench, DeviceError> {
        let dir = data_dir.join("sim");
        std::fs::create_dir_all(dir.join("keys")).map_err(io)?;
        let (attestation, ca_pem) = load_or_create_attestation(&dir, seed)?;
        let bench = SimBench {
            dir,
            seed,
            attestation,
            ca_pem,
            keys: Mutex::new(Vec::new()),
            capture: Arc::new(Mutex::new(None)),
            plugged_at: Mutex::new(std::collections::HashMap::new()),
        };
        let mut indices: Vec<u32> = std::fs::read_dir(bench.dir.join("keys"))
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        indices.sort_unstable();
        for i in indices {
            let file = bench.key_file(i);
            let text = std::fs::read(&file).map_err(io)?;
            let state: KeyState = serde_json::from_slice(&text)
                .map_err(|e| DeviceError::Io(format!("{}: {e}", file.display())))?;
            bench.insert(i, state, Touch::default(), None);
        }
        if lock(&bench.keys).is_empty() {
            bench.plug(SimKeyOptions::default())?;
        }
        Ok(bench)
    }

    fn key_file(&self, index: u32) -> PathBuf {
        self.dir.join("keys").join(format!("{index}.json"))
    }

    /// A new key's master secret: from the seed, the index and how many keys had that index
    /// before (the first one's is the seed and the index alone), or random without a seed.
    fn master_for(&self, index: u32) -> [u8; 32] {
        let before = lock(&self.plugged_at).get(&index).copied().unwrap_or(0);
        match self.seed {
            Some(seed) => {
                let mut h = Sha256::new()
                    .chain_update(b"keygate-sim-master")
                    .chain_update(seed.to_be_bytes())
                    .chain_update(index.to_be_bytes());
                if before > 0 {
                    h.update(before.to_be_bytes());
                }
                h.finalize().into()
            }
            None => {
                let mut m = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut m);
                m
            }
        }
    }

    fn insert(
        &self,
        index: u32,
        state: KeyState,
        touch: Touch,
        cloned_from: Option<String>,
    ) -> SimKeyStatus {
        *lock(&self.plugged_at).entry(index).or_insert(0) += 1;
        let file = self.key_file(index);
        let soft = SoftKey::new(state, self.attestation.clone(), Some(file.clone()));
        soft.persist();
        let id = format!("sim:{index}");
        let key = Arc::new(SimKey {
            index,
            id: id.clone(),
            snapshot: Mutex::new(SimKeyStatus {
                id: id.clone(),
                plugged: true,
                aaguid: SIM_AAGUID,
                model: SIM_MODEL,
                touch,
                counter: CounterMode::Increment,
                sign_counter: 0,
                pin_set: false,
                pin_retries: 0,
                discoverable_credentials: 0,
                resident_slots: 0,
                attestation: AttestationMode::Ca,
                pin_supported: true,
                extensions: Vec::new(),
                cloned_from: cloned_from.clone(),
            }),
            soft: Mutex::new(soft),
            touch: Mutex::new(touch),
            plugged: AtomicBool::new(true),
            plug_generation: AtomicU64::new(0),
            cancel_requested: AtomicBool::new(false),
            busy_nanos: AtomicU64::new(0),
            cloned_from,
            file,
        });
        key.refresh_snapshot(&lock(&key.soft));
        let auth: Arc<dyn Authenticator> = Arc::new(Ctap2Authenticator::new(
            id,
            Arc::new(SimTransport {
                key: key.clone(),
                capture: self.capture.clone(),
            }),
            super::model_name,
        ));
        let status = key.status();
        lock(&self.keys).push(Plugged { key, auth });
        status
    }

    fn next_index(&self) -> u32 {
        lock(&self.keys)
            .iter()
            .map(|p| p.key.index)
            .max()
            .unwrap_or(0)
            + 1
    }

    fn find(&self, id: &str) -> Result<Arc<SimKey>, DeviceError> {
        lock(&self.keys)
            .iter()
            .find(|p| p.key.id == id)
            .map(|p| p.key.clone())
            .ok_or(DeviceError::NoDevice)
    }

    /// Plug a new key.
    pub fn plug(&self, opts: SimKeyOptions) -> Result<SimKeyStatus, DeviceError> {
        let index = self.next_index();
        let state = KeyState::new(self.master_for(index));
        let status = self.insert(index, state, opts.touch.unwrap_or_default(), None);
        let mut opts = opts;
        opts.touch = None;
        self.configure(&status.id, opts)
    }

    /// Change a key's behaviour.
    pub fn configure(&self, id: &str, opts: SimKeyOptions) -> Result<SimKeyStatus, DeviceError> {
        let key = self.find(id)?;
        if let Some(Some(p)) = &opts.pin {
            super::Pin::new(p.clone()).check_policy(4)?;
        }
        if let Some(t) = opts.touch {
            *lock(&key.touch) = t;
        }
        if opts.counter.is_some()
            || opts.pin.is_some()
            || opts.pin_retries.is_some()
            || opts.resident_slots.is_some()
            || opts.attestation.is_some()
            || opts.pin_supported.is_some()
            || opts.extensions.is_some()
            || opts.reset_window_ms.is_some()
        {
            let mut soft = lock(&key.soft);
            if let Some(c) = opts.counter {
                soft.set_counter_mode(c);
            }
            if let Some(pin) = &opts.pin {
                soft.force_pin(pin.as_deref());
            }
            if let Some(r) = opts.pin_retries {
                soft.set_pin_retries(r);
            }
            if let Some(a) = opts.attestation {
                soft.state.attestation = a;
            }
            if let Some(p) = opts.pin_supported {
                soft.state.pin_supported = p;
                if !p {
                    soft.state.pin_hash = None;
                }
            }
            if let Some(n) = opts.resident_slots {
                soft.state.resident_slots = n.min(1000);
            }
            if let Some(e) = &opts.extensions {
                soft.set_extensions(e);
            }
            if let Some(ms) = opts.reset_window_ms {
                soft.set_reset_window(Duration::from_millis(ms.min(3_600_000)));
            }
            soft.persist();
            key.refresh_snapshot(&soft);
        }
        Ok(key.status())
    }

    /// Pull the key out: an operation in flight fails with `device_removed`.
    pub fn unplug(&self, id: &str) -> Result<SimKeyStatus, DeviceError> {
        let key = self.find(id)?;
        key.plugged.store(false, Ordering::SeqCst);
        key.plug_generation.fetch_add(1, Ordering::SeqCst);
        Ok(key.status())
    }

    /// Plug it back in: a power cycle (PIN auth block lifted, new PIN token, the factory
    /// reset's power-up window starts).
    pub fn replug(&self, id: &str) -> Result<SimKeyStatus, DeviceError> {
        let key = self.find(id)?;
        key.plugged.store(false, Ordering::SeqCst);
        key.plug_generation.fetch_add(1, Ordering::SeqCst);
        {
            let mut soft = lock(&key.soft);
            soft.power_cycle();
            key.refresh_snapshot(&soft);
        }
        key.plugged.store(true, Ordering::SeqCst);
        Ok(key.status())
    }

    /// Plug in a second key with this one's secrets and counter: a cloned key.
    pub fn clone_key(&self, id: &str) -> Result<SimKeyStatus, DeviceError> {
        let key = self.find(id)?;
        let state = lock(&key.soft).clone_state();
        let index = self.next_index();
        let touch = *lock(&key.touch);
        Ok(self.insert(index, state, touch, Some(key.id.clone())))
    }

    /// Unplug the key and forget it (its file is deleted).
    pub fn remove(&self, id: &str) -> Result<(), DeviceError> {
        let key = self.find(id)?;
        self.unplug(id)?;
        lock(&self.keys).retain(|p| p.key.id != id);
        match std::fs::remove_file(&key.file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    pub fn list(&self) -> Vec<SimKeyStatus> {
        lock(&self.keys).iter().map(|p| p.key.status()).collect()
    }

    /// Record every CTAP request/response of these keys to `path` (JSON lines).
    pub fn capture_to(&self, path: &Path) -> Result<(), DeviceError> {
        *lock(&self.capture) = Some(Arc::new(CaptureSink::create(path).map_err(io)?));
        Ok(())
    }

    /// Total time spent inside the simulated keys' requests since they were plugged: their
    /// CTAP processing, P-256 operations, state-file writes and any wait for a scripted touch.
    /// What an operation costs that is the key's and not keygate's (the ceremony benchmark
    /// subtracts it per ceremony); the platform side (our CTAP client, PIN protocol) is not in it.
    pub fn time_in_keys(&self) -> Duration {
        Duration::from_nanos(
            lock(&self.keys)
                .iter()
                .map(|p| p.key.busy_nanos.load(Ordering::Relaxed))
                .sum(),
        )
    }

    /// PEM of the CA that issued the simulated keys' attestation certificate.
    pub fn attestation_ca_pem(&self) -> String {
        self.ca_pem.clone()
    }
}

impl DeviceSource for SimBench {
    fn enumerate(&self) -> Result<Vec<Arc<dyn Authenticator>>, DeviceError> {
        Ok(lock(&self.keys)
            .iter()
            .filter(|p| p.key.plugged.load(Ordering::SeqCst))
            .map(|p| p.auth.clone())
            .collect())
    }
}

/// The first simulated key of `data_dir` as a bare core (created if needed), for the uhid
/// virtual key: same secrets, same attestation CA, persisted in the same file.
pub fn standalone_key(data_dir: &Path, seed: Option<u64>) -> Result<SoftKey, DeviceError> {
    let bench = SimBench::open(data_dir, seed)?;
    let first = lock(&bench.keys)
        .first()
        .map(|p| p.key.clone())
        .ok_or(DeviceError::NoDevice)?;
    let state = lock(&first.soft).clone_state();
    Ok(SoftKey::new(
        state,
        bench.attestation.clone(),
        Some(first.file.clone()),
    ))
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
