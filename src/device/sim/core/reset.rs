//! authenticatorReset (CTAP 2.1 §6.6) of the simulated key, with the power-up window real keys
//! enforce: the command is accepted only within `reset_window_ms` of the key powering up
//! (plugged in, or `keygate-uhid` started), else CTAP2_ERR_NOT_ALLOWED; then it needs a touch
//! (OPERATION_DENIED / USER_ACTION_TIMEOUT / KEEPALIVE_CANCEL otherwise). A reset draws a new
//! master secret, so credential ids made before it no longer authenticate and are unknown.

use std::time::Duration;

use ciborium::value::Value;

use super::{KeyState, Reply, SoftKey, UserPresence};
use crate::device::CtapStatus;

impl SoftKey {
    pub(super) fn reset(&mut self, presence: &mut dyn UserPresence) -> Reply {
        let window = Duration::from_millis(self.state.reset_window_ms);
        if self.volatile.powered_up_at.elapsed() > window {
            return Err(CtapStatus::NotAllowed);
        }
        presence.wait()?;
        // A reset wipes secrets, PIN and credentials; what the key is (its firmware: slots,
        // counter mode, attestation, ClientPIN and extension support, reset window) stays.
        let fresh = KeyState::new(self.random());
        let old = std::mem::replace(&mut self.state, fresh);
        self.state.resident_slots = old.resident_slots;
        self.state.counter_mode = old.counter_mode;
        self.state.attestation = old.attestation;
        self.state.pin_supported = old.pin_supported;
        self.state.extensions = old.extensions;
        self.state.reset_window_ms = old.reset_window_ms;
        let powered_up_at = self.volatile.powered_up_at;
        self.power_cycle();
        // Not a power-up: the window keeps counting from the real one.
        self.volatile.powered_up_at = powered_up_at;
        self.persist();
        Ok(Value::Map(vec![]))
    }

    /// Shorten or lengthen the power-up window (simulator control: an older key model).
    pub fn set_reset_window(&mut self, window: Duration) {
        self.state.reset_window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.persist();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{AlwaysPresent, UserPresence};
    use crate::device::ctap2::cmd;
    use crate::device::CtapStatus;

    struct Denied;
    impl UserPresence for Denied {
        fn wait(&mut self) -> Result<(), CtapStatus> {
            Err(CtapStatus::OperationDenied)
        }
    }

    fn key() -> (tempfile::TempDir, super::SoftKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::device::sim::standalone_key(dir.path(), Some(11)).unwrap();
        (dir, key)
    }

    #[test]
    fn reset_inside_the_window_wipes_pin_and_secrets() {
        let (_dir, mut key) = key();
        key.force_pin(Some("123456"));
        let master = key.state.master.clone();
        assert_eq!(key.process(&[cmd::RESET], &mut AlwaysPresent)[0], 0);
        assert!(!key.pin_set());
        assert!(key.state.resident.is_empty());
        assert_ne!(key.state.master, master);
    }

    #[test]
    fn reset_after_the_window_is_not_allowed_until_a_power_cycle() {
        let (_dir, mut key) = key();
        key.force_pin(Some("123456"));
        key.set_reset_window(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            key.process(&[cmd::RESET], &mut AlwaysPresent),
            vec![CtapStatus::NotAllowed.to_byte()]
        );
        assert!(key.pin_set(), "a refused reset changes nothing");
        key.set_reset_window(Duration::from_secs(60));
        key.power_cycle();
        assert_eq!(key.process(&[cmd::RESET], &mut AlwaysPresent)[0], 0);
        assert_eq!(key.state.reset_window_ms, 60_000, "the window is firmware");
    }

    #[test]
    fn reset_without_a_touch_is_denied() {
        let (_dir, mut key) = key();
        key.force_pin(Some("123456"));
        assert_eq!(
            key.process(&[cmd::RESET], &mut Denied),
            vec![CtapStatus::OperationDenied.to_byte()]
        );
        assert!(key.pin_set());
    }
}
