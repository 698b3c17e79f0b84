//! [`bench_key`] against a key that ignores deadlines, as an untouched real key does.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::suite::empty_info;
use super::{bench_key, BenchOptions};
use crate::device::actor::DeviceActor;
use crate::device::{
    AssertionOutput, Authenticator, DeviceError, DeviceInfo, GetAssertionArgs, MakeCredentialArgs,
    MakeCredentialOutput, OpContext, Pin, Progress,
};

/// A key that behaves like ctap-hid-fido2 in front of an untouched real key: a ceremony
/// blocks, ignoring the context's deadline and cancel flag, until [`Authenticator::cancel`]
/// (CTAPHID_CANCEL) makes it answer KEEPALIVE_CANCEL.
struct Untouched {
    cancels: AtomicUsize,
    cancelled: Mutex<bool>,
    wake: Condvar,
}

impl Untouched {
    fn wait_for_cancel(&self) -> DeviceError {
        let mut c = self.cancelled.lock().unwrap();
        while !*c {
            c = self.wake.wait(c).unwrap();
        }
        *c = false;
        DeviceError::Cancelled
    }
}

impl Authenticator for Untouched {
    fn id(&self) -> String {
        "hid:/dev/hidraw-untouched".into()
    }
    fn info(&self) -> Result<DeviceInfo, DeviceError> {
        let mut i = empty_info(&self.id());
        i.transport = "hid".into();
        i.product = "Untouched key".into();
        i.versions = vec!["FIDO_2_0".into()];
        Ok(i)
    }
    fn make_credential(
        &self,
        _: &MakeCredentialArgs,
        ctx: &OpContext,
    ) -> Result<MakeCredentialOutput, DeviceError> {
        ctx.emit(Progress::WaitingTouch);
        Err(self.wait_for_cancel())
    }
    fn get_assertion(
        &self,
        _: &GetAssertionArgs,
        ctx: &OpContext,
    ) -> Result<Vec<AssertionOutput>, DeviceError> {
        ctx.emit(Progress::WaitingTouch);
        Err(self.wait_for_cancel())
    }
    fn pin_retries(&self) -> Result<u32, DeviceError> {
        Err(DeviceError::PinNotSet)
    }
    fn set_pin(&self, _: &Pin) -> Result<(), DeviceError> {
        Err(DeviceError::OperationDenied)
    }
    fn change_pin(&self, _: &Pin, _: &Pin) -> Result<(), DeviceError> {
        Err(DeviceError::OperationDenied)
    }
    fn verify_pin(&self, _: &Pin) -> Result<(), DeviceError> {
        Err(DeviceError::PinNotSet)
    }
    fn cancel(&self) {
        self.cancels.fetch_add(1, Ordering::SeqCst);
        *self.cancelled.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

#[test]
fn an_untouched_key_that_ignores_deadlines_times_out_at_the_touch_timeout() {
    let auth = Arc::new(Untouched {
        cancels: AtomicUsize::new(0),
        cancelled: Mutex::new(false),
        wake: Condvar::new(),
    });
    let actor = DeviceActor::spawn(auth.clone());
    let opts = BenchOptions {
        iterations: 3,
        pin: None,
        discoverable: false,
        touch_timeout: Duration::from_millis(400),
        capture: None,
    };
    let started = Instant::now();
    let report = bench_key(&actor, &opts, &|_| {});
    let elapsed = started.elapsed();
    assert!(!report.passed);
    let mc = report
        .steps
        .iter()
        .find(|s| s.name.starts_with("make_credential"))
        .expect("the make_credential step ran");
    assert!(!mc.ok);
    assert!(mc.detail.contains("(touch_timeout)"), "{}", mc.detail);
    assert!(
        (400.0..2000.0).contains(&mc.ms),
        "the step ends at its deadline: {} ms",
        mc.ms
    );
    assert_eq!(
        auth.cancels.load(Ordering::SeqCst),
        1,
        "the actor sent one cancel at the deadline"
    );
    // The key is free again: the silent round trips after it were measured.
    let rt = report.round_trip.expect("round trips after the timeout");
    assert_eq!(rt.n, 3);
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}
