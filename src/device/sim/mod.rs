//! Simulated keys (`--simulate`): software CTAP2 authenticators ([`core::SoftKey`]) behind the
//! same [`Ctap2Authenticator`] command layer as a transport, so every request and response is
//! real CTAP2 CBOR. The [`SimBench`] is the bench they sit on: plug, unplug, replug, clone,
//! configure touch/PIN/counter behaviour. Keys persist in `<data_dir>/sim/keys/<n>.json` like a
//! real key's flash; the packed-attestation test CA lives in `<data_dir>/sim/`.

pub mod core;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::core::{
    AlwaysPresent, Attestation, AttestationMode, CounterMode, KeyState, SoftKey, UserPresence,
    SIM_AAGUID, SIM_MODEL,
};
use super::capture::CaptureSink;
use super::ctap2::{Ctap2Authenticator, CtapTransport};
use super::{Authenticator, CtapStatus, DeviceError, DeviceSource, OpContext, Progress};
use crate::base::sync::lock;

/// How the simulated user touches the key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    /// Touch after this many milliseconds.
    AutoAfterMs(u64),
    /// Nobody touches it: the operation runs into its deadline.
    Never,
    /// The user declines (a key with a "deny" gesture; CTAP2_ERR_OPERATION_DENIED).
    Deny,
}

impl Default for Touch {
    fn default() -> Self {
        Touch::AutoAfterMs(100)
    }
}

/// Options for a new key (`POST /v1/sim/keys`) and changes to one (`PATCH`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimKeyOptions {
    pub touch: Option<Touch>,
    pub counter: Option<CounterMode>,
    /// A PIN to set directly (null clears it), bypassing ClientPIN.
    #[serde(default, deserialize_with = "double_option")]
    pub pin: Option<Option<String>>,
    pub pin_retries: Option<u32>,
    pub resident_slots: Option<u32>,
    /// `ca` (default) or `self`.
    pub attestation: Option<AttestationMode>,
    /// False: a touch-only key without ClientPIN (no PIN can be set, no UV).
    pub pin_supported: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::<String>::deserialize(d)?))
}

/// What `/v1/sim/keys` shows about a key.
#[derive(Debug, Clone, Serialize)]
pub struct SimKeyStatus {
    pub id: String,
    pub plugged: bool,
    pub aaguid: uuid::Uuid,
    pub model: &'static str,
    pub touch: Touch,
    pub counter: CounterMode,
    pub sign_counter: u32,
    pub pin_set: bool,
    pub pin_retries: u32,
    pub discoverable_credentials: usize,
    pub resident_slots: u32,
    pub attestation: AttestationMode,
    pub pin_supported: bool,
    pub cloned_from: Option<String>,
}

struct SimKey {
    index: u32,
    id: String,
    soft: Mutex<SoftKey>,
    touch: Mutex<Touch>,
    plugged: AtomicBool,
    /// Bumped on every unplug, so an operation that began before it notices.
    plug_generation: AtomicU64,
    cancel_requested: AtomicBool,
    /// Total time spent inside this key's requests, in nanoseconds: see [`SimBench::time_in_keys`].
    busy_nanos: AtomicU64,
    cloned_from: Option<String>,
    /// Last known status, readable while an operation holds the key.
    snapshot: Mutex<SimKeyStatus>,
    file: PathBuf,
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
            cloned_from: self.cloned_from.clone(),
        }
    }

    fn refresh_snapshot(&self, soft: &SoftKey) {
        *lock(&self.snapshot) = self.status_of(soft);
    }

    fn status(&self) -> SimKeyStatus {
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
struct SimTransport {
    key: Arc<SimKey>,
    /// Shared with the bench: when set, every request/response is recorded.
    capture: Arc<Mutex<Option<Arc<CaptureSink>>>>,
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
}

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

    fn master_for(&self, index: u32) -> [u8; 32] {
        match self.seed {
            Some(seed) => Sha256::new()
                .chain_update(b"keygate-sim-master")
                .chain_update(seed.to_be_bytes())
                .chain_update(index.to_be_bytes())
                .finalize()
                .into(),
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

    /// Plug it back in: a power cycle (PIN auth block lifted, new PIN token).
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

#[derive(Serialize, Deserialize)]
struct AttestationFile {
    ca_pem: String,
    cert_der_hex: String,
    key_pem: String,
}

fn load_or_create_attestation(
    dir: &Path,
    seed: Option<u64>,
) -> Result<(Arc<Attestation>, String), DeviceError> {
    let path = dir.join("attestation.json");
    let stored = match std::fs::read(&path) {
        Ok(bytes) => Some(
            serde_json::from_slice::<AttestationFile>(&bytes)
                .map_err(|e| DeviceError::Io(format!("{}: {e}", path.display())))?,
        )
        .filter(|f| {
            let der = hex::decode(&f.cert_der_hex).unwrap_or_default();
            !has_non_der_basic_constraints(&der)
        })
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)),
        Err(e) => Err(e),
    };
    let file: AttestationFile = match stored {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = create_attestation(seed)?;
            core::write_atomically(&path, &serde_json::to_vec_pretty(&f).map_err(io)?)
                .map_err(io)?;
            core::write_atomically(&dir.join("attestation-ca.pem"), f.ca_pem.as_bytes())
                .map_err(io)?;
            f
        }
        Err(e) => return Err(io(e)),
    };
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&file.key_pem).map_err(io)?;
    let cert_der = hex::decode(&file.cert_der_hex).map_err(io)?;
    Ok((Arc::new(Attestation { cert_der, key }), file.ca_pem))
}

/// A test CA and a packed-attestation certificate under it (WebAuthn §8.2.1 requirements:
/// X.509 v3, subject C/O/OU="Authenticator Attestation"/CN, CA=false, id-fido-gen-ce-aaguid).
/// basicConstraints' value for an end entity in DER: `SEQUENCE {}` (cA's DEFAULT FALSE omitted).
const EMPTY_BASIC_CONSTRAINTS: [u8; 2] = [0x30, 0x00];

/// An attestation certificate made by keygate before 0.x wrote basicConstraints as
/// `SEQUENCE { BOOLEAN FALSE }` (not DER); such a file is made anew.
fn has_non_der_basic_constraints(cert_der: &[u8]) -> bool {
    const EXPLICIT_FALSE: [u8; 5] = [0x30, 0x03, 0x01, 0x01, 0x00];
    const OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x13];
    cert_der.windows(OID.len()).enumerate().any(|(i, w)| {
        w == OID
            && cert_der[i + OID.len()..]
                .windows(EXPLICIT_FALSE.len())
                .take(6)
                .any(|v| v == EXPLICIT_FALSE)
    })
}

fn create_attestation(seed: Option<u64>) -> Result<AttestationFile, DeviceError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa,
        KeyPair, KeyUsagePurpose, SerialNumber,
    };
    let rc = |e: rcgen::Error| DeviceError::Io(format!("creating the attestation CA: {e}"));
    let att_secret = match seed {
        Some(s) => {
            let mut h: [u8; 32] = Sha256::new()
                .chain_update(b"keygate-sim-attestation")
                .chain_update(s.to_be_bytes())
                .finalize()
                .into();
            loop {
                if let Ok(k) = p256::SecretKey::from_slice(&h) {
                    break k;
                }
                h = Sha256::digest(h).into();
            }
        }
        None => p256::SecretKey::random(&mut rand::rngs::OsRng),
    };
    let key_pem = att_secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(io)?
        .to_string();

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc)?;
    let mut ca = CertificateParams::default();
    ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2049, 12, 31);
    ca.serial_number = Some(SerialNumber::from(vec![1]));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "BE");
    dn.push(DnType::OrganizationName, "keygate");
    dn.push(
        DnType::CommonName,
        "keygate simulated key attestation CA (TEST ONLY)",
    );
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;

    let leaf_key = KeyPair::from_pem(&key_pem).map_err(rc)?;
    let mut leaf = CertificateParams::default();
    leaf.not_before = rcgen::date_time_ymd(2024, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2049, 12, 31);
    leaf.serial_number = Some(SerialNumber::from(vec![2]));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "BE");
    dn.push(DnType::OrganizationName, "keygate");
    dn.push(DnType::OrganizationalUnitName, "Authenticator Attestation");
    dn.push(DnType::CommonName, "keygate simulated key");
    leaf.distinguished_name = dn;
    // basicConstraints with cA FALSE, as WebAuthn §8.2.1 (packed attestation) requires. DER
    // (X.690 §11.5) forbids encoding a DEFAULT value, so the extension's value is the empty
    // SEQUENCE; rcgen's `ExplicitNoCa` writes `cA FALSE`, which strict parsers refuse.
    leaf.is_ca = IsCa::NoCa;
    let mut basic_constraints =
        CustomExtension::from_oid_content(&[2, 5, 29, 19], EMPTY_BASIC_CONSTRAINTS.to_vec());
    basic_constraints.set_criticality(true);
    leaf.custom_extensions.push(basic_constraints);
    leaf.use_authority_key_identifier_extension = true;
    let mut aaguid_ext = vec![0x04, 0x10];
    aaguid_ext.extend_from_slice(SIM_AAGUID.as_bytes());
    leaf.custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4],
            aaguid_ext,
        ));
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).map_err(rc)?;
    Ok(AttestationFile {
        ca_pem: ca_cert.pem(),
        cert_der_hex: hex::encode(leaf_cert.der()),
        key_pem,
    })
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
