//! The device conversation of a running ceremony: run the CTAP operation on the key's actor,
//! ask the client for a PIN when the key needs one (and again after a wrong PIN), and stop on
//! success, a terminal error, cancel or the deadline.
//!
//! Deadlines here are monotonic ([`Instant`] / tokio time): they bound a conversation with a
//! device and must not jump with the wall clock. Wall-clock times (`expires_at` in the view and
//! the record) come from the service's [`crate::base::clock::Clock`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::device::actor::DeviceActor;
use crate::device::{DeviceError, OpContext, Pin, Progress};

use super::{Ceremony, CeremonyError, CeremonyService, ErrorView, State};

/// A PIN from a request, refused (`pin_policy_violation`) when shorter than `min_len` code
/// points, before any key sees it.
pub(super) fn parse_pin(p: Option<String>, min_len: u32) -> Result<Option<Pin>, CeremonyError> {
    match p {
        None => Ok(None),
        Some(p) => {
            let pin = Pin::new(p);
            pin.check_policy(min_len)?;
            Ok(Some(pin))
        }
    }
}

enum Waited {
    Pin(Pin),
    Cancelled,
    Expired,
}

impl CeremonyService {
    /// Run the device operation, asking the client for a PIN when the key needs one and
    /// retrying after a wrong PIN, until success, a terminal error, cancel or the deadline.
    pub(super) async fn drive<A, T, F>(
        &self,
        c: &Arc<Ceremony>,
        deadline: Instant,
        pin_rx: &mut mpsc::Receiver<Pin>,
        args: A,
        op: F,
    ) -> Result<T, CeremonyError>
    where
        A: PinArgs + Clone + Send + 'static,
        T: Send + 'static,
        F: Fn(&dyn crate::device::Authenticator, &A, &OpContext) -> Result<T, DeviceError>
            + Send
            + Sync
            + Copy
            + 'static,
    {
        self.drive_keeping_pin(c, deadline, pin_rx, args, op)
            .await
            .map(|(t, _)| t)
    }

    /// [`Self::drive`], also returning the PIN the key took (from the request or asked for),
    /// for what an enrollment does with the key afterwards (its PIN policy).
    pub(super) async fn drive_keeping_pin<A, T, F>(
        &self,
        c: &Arc<Ceremony>,
        deadline: Instant,
        pin_rx: &mut mpsc::Receiver<Pin>,
        mut args: A,
        op: F,
    ) -> Result<(T, Option<Pin>), CeremonyError>
    where
        A: PinArgs + Clone + Send + 'static,
        T: Send + 'static,
        F: Fn(&dyn crate::device::Authenticator, &A, &OpContext) -> Result<T, DeviceError>
            + Send
            + Sync
            + Copy
            + 'static,
    {
        let mut last_error: Option<CeremonyError> = None;
        let mut need_pin = false;
        loop {
            if c.cancelled.load(Ordering::SeqCst) {
                return Err(DeviceError::Cancelled.into());
            }
            if std::mem::take(&mut need_pin) {
                let pin = self
                    .ask_pin(c, deadline, pin_rx, last_error.as_ref())
                    .await?;
                args.set_pin(Some(pin));
            }
            let view = c.view.clone();
            let progress: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(move |p| {
                let state = match p {
                    Progress::WaitingTouch => State::WaitingTouch,
                    Progress::Processing => State::Processing,
                    _ => return,
                };
                view.send_modify(|v| {
                    if !v.state.is_terminal() {
                        v.state = state;
                    }
                });
            });
            let ctx = OpContext::new(deadline, progress);
            let call_args = args.clone();
            let in_key = Instant::now();
            let r = c
                .actor
                .run_ceremony(ctx, move |a, ctx| op(a, &call_args, ctx))
                .await;
            c.key_nanos
                .fetch_add(in_key.elapsed().as_nanos() as u64, Ordering::Relaxed);
            match r {
                Ok(t) => return Ok((t, args.pin())),
                Err(DeviceError::PinRequired) if !args.has_pin() => {
                    need_pin = true;
                    last_error = None;
                }
                Err(e @ DeviceError::PinInvalid { .. }) => {
                    args.set_pin(None);
                    need_pin = true;
                    last_error = Some(e.into());
                }
                Err(DeviceError::Cancelled) if !c.cancelled.load(Ordering::SeqCst) => {
                    return Err(DeviceError::TouchTimeout.into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Ask the client for the key's PIN (`needs_pin`, with the retries left and the error of a
    /// wrong PIN) and wait for it until cancel or `deadline`.
    pub(super) async fn ask_pin(
        &self,
        c: &Arc<Ceremony>,
        deadline: Instant,
        pin_rx: &mut mpsc::Receiver<Pin>,
        last_error: Option<&CeremonyError>,
    ) -> Result<Pin, CeremonyError> {
        let retries = self.pin_retries(&c.actor, deadline).await;
        let err_view = last_error.map(ErrorView::from);
        // Stored first: whoever sees `needs_pin` in the view finds it in the store too.
        self.persist_state(c, State::NeedsPin).await;
        c.update(|v| {
            v.state = State::NeedsPin;
            v.pin_retries = retries;
            v.error = err_view;
        });
        let pin = match self.wait_for_pin(c, deadline, pin_rx).await {
            Waited::Pin(p) => p,
            Waited::Cancelled => return Err(DeviceError::Cancelled.into()),
            Waited::Expired => return Err(CeremonyError::CeremonyExpired),
        };
        c.update(|v| {
            v.state = State::Pending;
            v.pin_retries = None;
            v.error = None;
        });
        Ok(pin)
    }

    /// The key's PIN, checked on the key without a touch (getPinToken) before anything else
    /// runs: from the request, else asked for (`needs_pin`); a wrong one is asked for again
    /// with `pin_invalid` and the retries left, until the right one, a terminal error, cancel
    /// or `deadline`. Only where the PIN is used right after (it counts a retry like the
    /// ceremony itself would).
    pub(super) async fn checked_pin(
        &self,
        c: &Arc<Ceremony>,
        deadline: Instant,
        pin_rx: &mut mpsc::Receiver<Pin>,
        mut pin: Option<Pin>,
    ) -> Result<Pin, CeremonyError> {
        let mut last_error: Option<CeremonyError> = None;
        loop {
            let p = match pin.take() {
                Some(p) => p,
                None => {
                    self.ask_pin(c, deadline, pin_rx, last_error.as_ref())
                        .await?
                }
            };
            let ctx = OpContext::new(
                deadline.min(Instant::now() + Duration::from_secs(10)),
                Arc::new(|_| {}),
            );
            let check = p.clone();
            let checked = self
                .unless_cancelled(c, c.actor.run(ctx, move |a, _| a.verify_pin(&check)))
                .await?;
            match checked {
                Ok(()) => return Ok(p),
                Err(e @ DeviceError::PinInvalid { .. }) => last_error = Some(e.into()),
                Err(DeviceError::Cancelled) if !c.cancelled.load(Ordering::SeqCst) => {
                    return Err(CeremonyError::CeremonyExpired)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Run `work` (a call to a remote service) unless the ceremony is cancelled first: a
    /// cancel drops `work` where it stands and answers `cancelled`.
    pub(super) async fn unless_cancelled<T>(
        &self,
        c: &Arc<Ceremony>,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, CeremonyError> {
        let notified = c.cancel_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if c.cancelled.load(Ordering::SeqCst) {
            return Err(DeviceError::Cancelled.into());
        }
        tokio::select! {
            out = work => Ok(out),
            _ = &mut notified => Err(DeviceError::Cancelled.into()),
        }
    }

    pub(super) async fn pin_retries(
        &self,
        actor: &Arc<DeviceActor>,
        deadline: Instant,
    ) -> Option<u32> {
        let ctx = OpContext::new(
            deadline.min(Instant::now() + Duration::from_secs(5)),
            Arc::new(|_| {}),
        );
        actor.run(ctx, |a, _| a.pin_retries()).await.ok()
    }

    async fn wait_for_pin(
        &self,
        c: &Arc<Ceremony>,
        deadline: Instant,
        pin_rx: &mut mpsc::Receiver<Pin>,
    ) -> Waited {
        let notified = c.cancel_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if c.cancelled.load(Ordering::SeqCst) {
            return Waited::Cancelled;
        }
        tokio::select! {
            p = pin_rx.recv() => match p { Some(p) => Waited::Pin(p), None => Waited::Cancelled },
            _ = &mut notified => Waited::Cancelled,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => Waited::Expired,
        }
    }

    pub(super) async fn persist_state(&self, c: &Ceremony, state: State) {
        let id = c.view.borrow().id.clone();
        if let Err(e) = self
            .store
            .update_ceremony(&id, state.as_str(), None, None)
            .await
        {
            tracing::error!(ceremony = %id, error = %e, "cannot persist ceremony state");
        }
    }
}

/// Arguments that may carry a PIN.
pub(super) trait PinArgs {
    fn has_pin(&self) -> bool;
    fn set_pin(&mut self, pin: Option<Pin>);
    fn pin(&self) -> Option<Pin>;
}

macro_rules! impl_pin_args {
    ($t:ty) => {
        impl PinArgs for $t {
            fn has_pin(&self) -> bool {
                self.pin.is_some()
            }
            fn set_pin(&mut self, pin: Option<Pin>) {
                self.pin = pin;
            }
            fn pin(&self) -> Option<Pin> {
                self.pin.clone()
            }
        }
    };
}
impl_pin_args!(crate::device::MakeCredentialArgs);
impl_pin_args!(crate::device::GetAssertionArgs);
