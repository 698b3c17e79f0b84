//! One actor thread per plugged key. CTAP calls block (ctap-hid-fido2 has no timeouts), so each
//! device gets a thread that runs one operation at a time; callers await the result from async
//! code. Contract of [`DeviceActor::run`]:
//! - a second operation while one is in flight fails at once with `Busy`;
//! - at the deadline the actor raises the context's cancel flag and calls
//!   [`Authenticator::cancel`] (CTAPHID_CANCEL on HID) and the caller gets `TouchTimeout`;
//! - [`DeviceActor::cancel`] does the same on demand and the caller gets `Cancelled`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Authenticator, DeviceError, DeviceId, DeviceInfo, DeviceSource, OpContext};
use crate::base::sync::lock;

type Job = Box<dyn FnOnce(&dyn Authenticator) + Send>;

/// How long an operation may take to wind down after a cancel before the actor stops waiting
/// for it (the device stays busy until it really returns).
const CANCEL_GRACE: Duration = Duration::from_secs(3);

pub struct DeviceActor {
    id: DeviceId,
    auth: Arc<dyn Authenticator>,
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    busy: Arc<AtomicBool>,
    current: Arc<Mutex<Option<OpContext>>>,
    last_info: Mutex<Option<DeviceInfo>>,
    /// `last_info` still describes the key: no operation that could have changed what it
    /// reports (PIN set or not, UV, discoverable support) has run since it was read.
    info_fresh: AtomicBool,
}

/// A device as the API reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceStatus {
    #[serde(flatten)]
    pub info: DeviceInfo,
    pub busy: bool,
}

impl DeviceActor {
    pub fn spawn(auth: Arc<dyn Authenticator>) -> Arc<DeviceActor> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let id = auth.id();
        let thread_auth = auth.clone();
        std::thread::Builder::new()
            .name(format!("keygate-device-{id}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(thread_auth.as_ref());
                }
            })
            .expect("spawning a device thread");
        Arc::new(DeviceActor {
            id,
            auth,
            jobs: Mutex::new(tx),
            busy: Arc::new(AtomicBool::new(false)),
            current: Arc::new(Mutex::new(None)),
            last_info: Mutex::new(None),
            info_fresh: AtomicBool::new(false),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// See [`Authenticator::power_ups`]: moves on when a simulated key is replugged.
    pub fn power_ups(&self) -> u64 {
        self.auth.power_ups()
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Run `op` on the device thread, bounded by `ctx.deadline`. The cached info is dropped:
    /// `op` may change it (a PIN set, a reset).
    pub async fn run<T, F>(&self, ctx: OpContext, op: F) -> Result<T, DeviceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Authenticator, &OpContext) -> Result<T, DeviceError> + Send + 'static,
    {
        self.info_fresh.store(false, Ordering::SeqCst);
        self.run_inner(ctx, op).await
    }

    /// [`DeviceActor::run`] for a ceremony's MakeCredential or GetAssertion, which cannot
    /// change what [`DeviceActor::ceremony_status`] reports: the cached info stays unless the
    /// operation failed (then the key is asked again next time).
    pub async fn run_ceremony<T, F>(&self, ctx: OpContext, op: F) -> Result<T, DeviceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Authenticator, &OpContext) -> Result<T, DeviceError> + Send + 'static,
    {
        let r = self.run_inner(ctx, op).await;
        if r.is_err() {
            self.info_fresh.store(false, Ordering::SeqCst);
        }
        r
    }

    async fn run_inner<T, F>(&self, ctx: OpContext, op: F) -> Result<T, DeviceError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Authenticator, &OpContext) -> Result<T, DeviceError> + Send + 'static,
    {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(DeviceError::Busy);
        }
        *lock(&self.current) = Some(ctx.clone());
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let busy = self.busy.clone();
        let current = self.current.clone();
        let job_ctx = ctx.clone();
        let job: Job = Box::new(move |auth| {
            let out = op(auth, &job_ctx);
            *lock(&current) = None;
            busy.store(false, Ordering::SeqCst);
            let _ = tx.send(out);
        });
        if lock(&self.jobs).send(job).is_err() {
            self.busy.store(false, Ordering::SeqCst);
            return Err(DeviceError::Removed);
        }
        let deadline = tokio::time::Instant::from_std(ctx.deadline);
        tokio::select! {
            r = &mut rx => r.unwrap_or(Err(DeviceError::Removed)),
            _ = tokio::time::sleep_until(deadline) => {
                ctx.cancel();
                self.auth.cancel();
                match tokio::time::timeout(CANCEL_GRACE, rx).await {
                    Ok(Ok(Err(DeviceError::Cancelled))) | Err(_) => Err(DeviceError::TouchTimeout),
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(DeviceError::Removed),
                }
            }
        }
    }

    /// Interrupt the operation in flight (if any). Never blocks.
    pub fn cancel(&self) {
        if let Some(ctx) = lock(&self.current).as_ref() {
            ctx.cancel();
        }
        self.auth.cancel();
    }

    /// Fresh info when the device is idle; the last known info when it is busy.
    pub async fn status(&self) -> Result<DeviceStatus, DeviceError> {
        let ctx = OpContext::new(Instant::now() + Duration::from_secs(5), Arc::new(|_| {}));
        match self.run_inner(ctx, |a, _| a.info()).await {
            Ok(info) => {
                *lock(&self.last_info) = Some(info.clone());
                self.info_fresh.store(true, Ordering::SeqCst);
                Ok(DeviceStatus { info, busy: false })
            }
            Err(DeviceError::Busy) => match lock(&self.last_info).clone() {
                Some(info) => Ok(DeviceStatus { info, busy: true }),
                None => Err(DeviceError::Busy),
            },
            Err(e) => Err(e),
        }
    }

    /// What a ceremony needs to know before it starts (PIN set, UV, discoverable support):
    /// the cached info while it is fresh, else [`DeviceActor::status`]. Saves a getInfo and a
    /// getPinRetries round trip (USB) per ceremony on a key that has not changed.
    pub async fn ceremony_status(&self) -> Result<DeviceStatus, DeviceError> {
        if self.info_fresh.load(Ordering::SeqCst) {
            if let Some(info) = lock(&self.last_info).clone() {
                return Ok(DeviceStatus {
                    info,
                    busy: self.is_busy(),
                });
            }
        }
        self.status().await
    }
}

/// All plugged devices from all sources, each behind its actor.
pub struct DeviceManager {
    sources: Vec<Arc<dyn DeviceSource>>,
    actors: Mutex<BTreeMap<DeviceId, Arc<DeviceActor>>>,
}

impl DeviceManager {
    pub fn new(sources: Vec<Arc<dyn DeviceSource>>) -> DeviceManager {
        DeviceManager {
            sources,
            actors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Re-enumerate; keeps the actor of a device that is still plugged (so an operation in
    /// flight is not disturbed) and drops the others. Sorted by id.
    pub fn refresh(&self) -> Result<Vec<Arc<DeviceActor>>, DeviceError> {
        let mut found = Vec::new();
        for s in &self.sources {
            found.extend(s.enumerate()?);
        }
        let mut actors = lock(&self.actors);
        let mut next = BTreeMap::new();
        for auth in found {
            let id = auth.id();
            // An id is a port: another key plugged there since (another authenticator under
            // the same id) gets an actor of its own, never the last key's cached facts.
            let actor = match actors.remove(&id) {
                Some(a) if Arc::ptr_eq(&a.auth, &auth) => a,
                _ => DeviceActor::spawn(auth),
            };
            next.insert(id, actor);
        }
        *actors = next;
        Ok(actors.values().cloned().collect())
    }

    /// The device a ceremony should use: the requested one, or the only one plugged.
    pub fn select(&self, requested: Option<&str>) -> Result<Arc<DeviceActor>, DeviceError> {
        let all = self.refresh()?;
        match requested {
            Some(id) => all
                .into_iter()
                .find(|a| a.id() == id)
                .ok_or(DeviceError::NoDevice),
            None => match all.len() {
                0 => Err(DeviceError::NoDevice),
                1 => Ok(all.into_iter().next().expect("one device")),
                _ => Err(DeviceError::MultipleDevices),
            },
        }
    }

    /// Status of every plugged device (devices that fail to answer are skipped and logged).
    pub async fn statuses(&self) -> Result<Vec<DeviceStatus>, DeviceError> {
        let mut out = Vec::new();
        for a in self.refresh()? {
            match a.status().await {
                Ok(s) => out.push(s),
                Err(e) => {
                    tracing::warn!(device = %a.id(), error = %e, "device did not answer getInfo")
                }
            }
        }
        Ok(out)
    }

    /// A key changed behind the actors' backs (the simulator's controls): every actor asks
    /// its key again before the next ceremony.
    pub fn forget_info(&self) {
        for a in lock(&self.actors).values() {
            a.info_fresh.store(false, Ordering::SeqCst);
        }
    }

    pub fn ids(&self) -> Vec<DeviceId> {
        lock(&self.actors).keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim::fixtures::{bench, ctx};
    use crate::device::{AssertionOutput, GetAssertionArgs, MakeCredentialArgs};
    use crate::device::{MakeCredentialOutput, Pin};
    use std::sync::atomic::AtomicU32;

    /// A simulated key that counts the getInfo round trips it is asked for.
    struct CountingKey {
        inner: Arc<dyn Authenticator>,
        infos: AtomicU32,
    }

    impl Authenticator for CountingKey {
        fn id(&self) -> DeviceId {
            self.inner.id()
        }
        fn info(&self) -> Result<DeviceInfo, DeviceError> {
            self.infos.fetch_add(1, Ordering::SeqCst);
            self.inner.info()
        }
        fn make_credential(
            &self,
            args: &MakeCredentialArgs,
            ctx: &OpContext,
        ) -> Result<MakeCredentialOutput, DeviceError> {
            self.inner.make_credential(args, ctx)
        }
        fn get_assertion(
            &self,
            args: &GetAssertionArgs,
            ctx: &OpContext,
        ) -> Result<Vec<AssertionOutput>, DeviceError> {
            self.inner.get_assertion(args, ctx)
        }
        fn pin_retries(&self) -> Result<u32, DeviceError> {
            self.inner.pin_retries()
        }
        fn set_pin(&self, new_pin: &Pin) -> Result<(), DeviceError> {
            self.inner.set_pin(new_pin)
        }
        fn change_pin(&self, current_pin: &Pin, new_pin: &Pin) -> Result<(), DeviceError> {
            self.inner.change_pin(current_pin, new_pin)
        }
        fn verify_pin(&self, pin: &Pin) -> Result<(), DeviceError> {
            self.inner.verify_pin(pin)
        }
        fn cancel(&self) {
            self.inner.cancel()
        }
    }

    #[tokio::test]
    async fn ceremonies_reuse_the_info_until_an_operation_may_have_changed_it() {
        let (_dir, _bench, inner) = bench(Some(3));
        let key = Arc::new(CountingKey {
            inner,
            infos: AtomicU32::new(0),
        });
        let actor = DeviceActor::spawn(key.clone());
        let asked = || key.infos.load(Ordering::SeqCst);

        assert_eq!(
            actor.ceremony_status().await.unwrap().info.pin_set,
            Some(false)
        );
        assert_eq!(
            actor.ceremony_status().await.unwrap().info.pin_set,
            Some(false)
        );
        assert_eq!(asked(), 1, "the second ceremony used the cached info");

        // A PIN set through the actor: the next ceremony asks the key again and sees it.
        actor
            .run(ctx(), |a, _| a.set_pin(&Pin::new("1234")))
            .await
            .unwrap();
        assert_eq!(
            actor.ceremony_status().await.unwrap().info.pin_set,
            Some(true)
        );
        assert_eq!(asked(), 2);

        // A failed ceremony operation drops the cache too.
        let failed = actor
            .run_ceremony(ctx(), |_, _| Err::<(), _>(DeviceError::PinRequired))
            .await;
        assert!(matches!(failed, Err(DeviceError::PinRequired)));
        actor.ceremony_status().await.unwrap();
        assert_eq!(asked(), 3);

        // A successful one keeps it.
        actor.run_ceremony(ctx(), |_, _| Ok(())).await.unwrap();
        actor.ceremony_status().await.unwrap();
        assert_eq!(asked(), 3);

        // GET /v1/devices always asks the key.
        actor.status().await.unwrap();
        assert_eq!(asked(), 4);
    }
}
