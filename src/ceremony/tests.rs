//! The ceremony service on its own: the real service, a simulated key bench and a `Store` on a
//! SQLite file in a tempdir, on a manual clock. Covers both ceremonies end to end, the request
//! checks, the PIN conversation (`submit_pin`), cancel, and that every wall-clock time the
//! service writes or shows is the injected clock's.

use std::sync::Arc;
use std::time::Duration;

use crate::base::clock::{Clock, ManualClock};
use crate::config::{Config, UserVerification};
use crate::device::actor::DeviceManager;
use crate::device::sim::{SimBench, SimKeyOptions, Touch};
use crate::device::{DeviceError, DeviceSource};
use crate::store::Store;

use super::rp::RelyingParty;
use super::*;

/// A round second, far from the real date: a time that did not come from this clock shows.
const START_MS: i64 = 1_790_000_000_000;
const PIN: &str = "1234";

struct Bench {
    svc: Arc<CeremonyService>,
    store: Store,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// One simulated key (`sim:1`) with `touch` and PIN [`PIN`], under the default config
/// (user verification required, 30 s default timeout, 120 s at most).
fn bench(touch: Touch) -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        simulate: true,
        simulate_seed: Some(7),
        ..Config::default()
    };
    let store = Store::open(&dir.path().join("keygate.db")).unwrap();
    let sim = Arc::new(SimBench::open(dir.path(), Some(7)).unwrap());
    sim.configure(
        "sim:1",
        SimKeyOptions {
            touch: Some(touch),
            pin: Some(Some(PIN.into())),
            ..Default::default()
        },
    )
    .unwrap();
    let rp = RelyingParty::new(
        &cfg.relying_party.id,
        &cfg.relying_party.name,
        &cfg.relying_party.origin,
        &[sim.attestation_ca_pem()],
        cfg.relying_party.require_trusted_attestation,
    )
    .unwrap();
    let devices = Arc::new(DeviceManager::new(vec![sim as Arc<dyn DeviceSource>]));
    let clock = Arc::new(ManualClock::new(START_MS));
    let svc = Arc::new(CeremonyService::new(
        cfg,
        rp,
        store.clone(),
        devices,
        clock.clone(),
    ));
    Bench {
        svc,
        store,
        clock,
        _dir: dir,
    }
}

fn enrollment(user: &str, pin: Option<&str>) -> EnrollmentRequest {
    EnrollmentRequest {
        user: user.into(),
        display_name: "An Peeters".into(),
        nickname: Some("blue key".into()),
        discoverable: None,
        user_verification: None,
        pin: pin.map(str::to_string),
        device: None,
        timeout_ms: None,
        target: None,
    }
}

fn assertion(user: &str, pin: Option<&str>) -> AssertionRequest {
    AssertionRequest {
        user: Some(user.into()),
        user_verification: None,
        pin: pin.map(str::to_string),
        device: None,
        timeout_ms: None,
        target: None,
    }
}

/// The view of ceremony `id` once `what` holds (10 s at most).
async fn until(
    svc: &CeremonyService,
    id: &str,
    kind: Kind,
    what: impl Fn(&CeremonyView) -> bool,
) -> CeremonyView {
    let mut rx = svc.subscribe(id, kind).unwrap();
    let v = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| what(v)))
        .await
        .unwrap_or_else(|_| panic!("ceremony {id}: state {:?}", svc.get(id, kind)))
        .unwrap();
    v.clone()
}

async fn ended(svc: &CeremonyService, id: &str, kind: Kind) -> CeremonyView {
    until(svc, id, kind, |v| v.state.is_terminal()).await
}

fn code(e: &CeremonyError) -> String {
    e.code().to_string()
}

#[tokio::test]
async fn an_enrollment_then_an_assertion_succeed_with_times_from_the_clock() {
    let b = bench(Touch::AutoAfterMs(0));
    let started = b
        .svc
        .start_enrollment(enrollment("an.peeters", Some(PIN)), "test")
        .await
        .unwrap();
    assert_eq!(started.kind, Kind::Enrollment);
    assert_eq!(started.user.as_deref(), Some("an.peeters"));
    let at = b.clock.now();
    assert_eq!(started.created_at, at);
    assert_eq!(started.expires_at, at + Duration::from_millis(30_000));
    let done = ended(&b.svc, &started.id, Kind::Enrollment).await;
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    let cred = &done.result.as_ref().unwrap()["credential"];
    assert_eq!(cred["user"], "an.peeters");
    assert_eq!(cred["nickname"], "blue key");
    assert_eq!(cred["created_at"], time_json(at));
    let rec = b.store.get_ceremony(&started.id).unwrap().unwrap();
    assert_eq!((rec.state.as_str(), rec.created_at), ("succeeded", at));
    assert_eq!(rec.expires_at, started.expires_at);
    let user = b.store.get_user("an.peeters").unwrap().unwrap();
    assert_eq!(user.created_at, at);

    b.clock.advance(Duration::from_secs(3600));
    let later = b.clock.now();
    let a = b
        .svc
        .start_assertion(assertion("an.peeters", Some(PIN)), "test")
        .await
        .unwrap();
    assert_eq!((a.kind, a.created_at), (Kind::Assertion, later));
    let done = ended(&b.svc, &a.id, Kind::Assertion).await;
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    let result = done.result.clone().unwrap();
    assert_eq!(result["user"], "an.peeters");
    assert_eq!(result["user_verified"], true);
    assert_eq!(result["enrolled_at"], time_json(at));
    // The ids are not interchangeable between the two kinds.
    assert!(matches!(
        b.svc.get(&a.id, Kind::Enrollment),
        Err(CeremonyError::NotFound)
    ));
    assert_eq!(b.svc.get(&a.id, Kind::Assertion).unwrap(), done);
}

#[tokio::test]
async fn timeout_ms_outside_1_to_the_maximum_is_an_invalid_request() {
    let b = bench(Touch::AutoAfterMs(0));
    for bad in [0, 120_001, u64::MAX] {
        let mut req = enrollment("an.peeters", Some(PIN));
        req.timeout_ms = Some(bad);
        let e = b.svc.start_enrollment(req, "test").await.unwrap_err();
        assert_eq!(code(&e), "invalid_request", "{bad}");
        assert!(e.public_message().contains("120000"), "{e}");
        let mut req = assertion("an.peeters", Some(PIN));
        req.timeout_ms = Some(bad);
        let e = b.svc.start_assertion(req, "test").await.unwrap_err();
        assert_eq!(code(&e), "invalid_request", "{bad}");
    }
    // The bounds themselves pass the check (this user has no key yet: the next check answers).
    for good in [1, 120_000] {
        let mut req = assertion("an.peeters", Some(PIN));
        req.timeout_ms = Some(good);
        let e = b.svc.start_assertion(req, "test").await.unwrap_err();
        assert!(matches!(e, CeremonyError::NoCredentials), "{good}: {e}");
    }
}

#[tokio::test]
async fn requests_are_checked_before_any_key_is_touched() {
    let b = bench(Touch::AutoAfterMs(0));
    let e = b
        .svc
        .start_enrollment(enrollment("..", Some(PIN)), "test")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "invalid_request");
    let e = b
        .svc
        .start_enrollment(enrollment("an.peeters", Some("12")), "test")
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        CeremonyError::Device(DeviceError::PinPolicyViolation)
    ));
    // The configured level (required) is a floor a request cannot lower.
    let mut req = enrollment("an.peeters", Some(PIN));
    req.user_verification = Some(UserVerification::Preferred);
    let e = b.svc.start_enrollment(req, "test").await.unwrap_err();
    assert_eq!(code(&e), "invalid_request");
    assert!(b.store.get_user("an.peeters").unwrap().is_none());
}

#[tokio::test]
async fn a_ceremony_waiting_for_a_pin_takes_it_after_a_wrong_one() {
    let b = bench(Touch::AutoAfterMs(0));
    let v = b
        .svc
        .start_enrollment(enrollment("an.peeters", None), "test")
        .await
        .unwrap();
    let asks = until(&b.svc, &v.id, Kind::Enrollment, |v| {
        v.state == State::NeedsPin
    })
    .await;
    let retries = asks.pin_retries.expect("retries shown while asking");
    assert_eq!(asks.error, None);
    assert_eq!(
        b.store.get_ceremony(&v.id).unwrap().unwrap().state,
        "needs_pin"
    );

    b.svc
        .submit_pin(&v.id, Kind::Enrollment, "9999".into())
        .unwrap();
    let again = until(&b.svc, &v.id, Kind::Enrollment, |v| {
        v.state == State::NeedsPin && v.error.is_some()
    })
    .await;
    let err = again.error.unwrap();
    assert_eq!(err.code, "pin_invalid");
    assert_eq!(err.retries_left, Some(retries - 1));
    assert_eq!(again.pin_retries, Some(retries - 1));

    b.svc
        .submit_pin(&v.id, Kind::Enrollment, PIN.into())
        .unwrap();
    let done = ended(&b.svc, &v.id, Kind::Enrollment).await;
    assert_eq!(done.state, State::Succeeded, "{:?}", done.error);
    let e = b
        .svc
        .submit_pin(&v.id, Kind::Enrollment, PIN.into())
        .unwrap_err();
    assert!(matches!(e, CeremonyError::AlreadyEnded), "{e}");
    let e = b
        .svc
        .submit_pin("no-such-id", Kind::Enrollment, PIN.into())
        .unwrap_err();
    assert!(matches!(e, CeremonyError::NotFound), "{e}");
}

#[tokio::test]
async fn a_ceremony_not_asking_refuses_a_pin_and_cancel_ends_it_once() {
    let b = bench(Touch::Never);
    let v = b
        .svc
        .start_enrollment(enrollment("an.peeters", Some(PIN)), "test")
        .await
        .unwrap();
    until(&b.svc, &v.id, Kind::Enrollment, |v| {
        v.state == State::WaitingTouch
    })
    .await;
    let e = b
        .svc
        .submit_pin(&v.id, Kind::Enrollment, PIN.into())
        .unwrap_err();
    assert!(matches!(e, CeremonyError::NotWaitingForPin), "{e}");
    assert_eq!(code(&e), "not_waiting_for_pin");

    let first = b.svc.cancel(&v.id, Kind::Enrollment).unwrap();
    assert!(!first.state.is_terminal(), "cancel asks; the task ends it");
    let done = ended(&b.svc, &v.id, Kind::Enrollment).await;
    assert_eq!(done.state, State::Cancelled);
    assert_eq!(done.error.as_ref().unwrap().code, "cancelled");
    assert_eq!(
        b.store.get_ceremony(&v.id).unwrap().unwrap().state,
        "cancelled"
    );
    // A second cancel is not an error: it answers the ended ceremony as it is.
    assert_eq!(b.svc.cancel(&v.id, Kind::Enrollment).unwrap(), done);
    let e = b
        .svc
        .submit_pin(&v.id, Kind::Enrollment, PIN.into())
        .unwrap_err();
    assert!(matches!(e, CeremonyError::AlreadyEnded), "{e}");
    assert!(matches!(
        b.svc.cancel("no-such-id", Kind::Enrollment),
        Err(CeremonyError::NotFound)
    ));
    assert!(b.store.get_user("an.peeters").unwrap().is_none());
}

#[tokio::test]
async fn a_wait_returns_at_its_limit_and_views_keep_the_clock_s_times() {
    let b = bench(Touch::Never);
    let mut req = enrollment("an.peeters", Some(PIN));
    req.timeout_ms = Some(60_000);
    let v = b.svc.start_enrollment(req, "test").await.unwrap();
    let at = b.clock.now();
    assert_eq!(v.expires_at, at + Duration::from_secs(60));
    // The clock moving does not move the times already given.
    b.clock.advance(Duration::from_secs(5));
    let w = b
        .svc
        .wait(&v.id, Kind::Enrollment, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(!w.state.needs_client_or_done(), "{:?}", w.state);
    assert_eq!((w.created_at, w.expires_at), (at, v.expires_at));
    b.svc.cancel(&v.id, Kind::Enrollment).unwrap();
    let done = ended(&b.svc, &v.id, Kind::Enrollment).await;
    assert_eq!((done.created_at, done.expires_at), (at, v.expires_at));
    let rec = b.store.get_ceremony(&v.id).unwrap().unwrap();
    assert_eq!((rec.created_at, rec.expires_at), (at, v.expires_at));
}

/// CTAP 2.1 §6.5.5.5: a PIN is at least 4 Unicode code points and at most 63 bytes of UTF-8, and
/// the refusal says so (it used to say "at least 4 characters" for a PIN that was too long).
/// Checked where a request carries a PIN and where `submit_pin` takes one.
#[tokio::test]
async fn a_pin_outside_the_ctap_limits_is_refused_naming_the_limit_it_broke() {
    let b = bench(Touch::Never);
    let live = b
        .svc
        .start_enrollment(enrollment("an.peeters", Some(PIN)), "test")
        .await
        .unwrap();
    // "bo.janssens" has no key: a PIN that passes the policy gets as far as `no_credentials`.
    let refusal = |pin: String| {
        let svc = b.svc.clone();
        let id = live.id.clone();
        async move {
            let e = svc
                .start_assertion(assertion("bo.janssens", Some(&pin)), "test")
                .await
                .unwrap_err();
            assert_eq!(code(&e), "pin_policy_violation", "{pin:?}");
            let from_submit = svc.submit_pin(&id, Kind::Enrollment, pin).unwrap_err();
            assert_eq!(from_submit.public_message(), e.public_message());
            e.public_message()
        }
    };
    let too_long = refusal("1".repeat(64)).await;
    assert!(too_long.contains("at most 63 bytes"), "{too_long}");
    // 22 characters in 66 bytes: the maximum counts bytes, not characters.
    let too_long = refusal("€".repeat(22)).await;
    assert!(too_long.contains("at most 63 bytes"), "{too_long}");
    let too_short = refusal("123".into()).await;
    assert!(too_short.contains("at least 4 characters"), "{too_short}");

    // On the limits: 4 characters in 8 bytes, and 63 bytes in 21 characters, pass.
    for pin in ["éééé".to_string(), "€".repeat(21), "1".repeat(63)] {
        let e = b
            .svc
            .start_assertion(assertion("bo.janssens", Some(&pin)), "test")
            .await
            .unwrap_err();
        assert!(matches!(e, CeremonyError::NoCredentials), "{pin:?}: {e}");
    }
    b.svc.cancel(&live.id, Kind::Enrollment).unwrap();
}

#[tokio::test]
async fn entra_targets_without_an_entra_section_are_refused_before_any_key_is_touched() {
    let b = bench(Touch::Never);
    let mut req = enrollment("an.peeters", Some(PIN));
    req.target = Some(crate::config::EnrollTarget::Entra);
    let e = b.svc.start_enrollment(req, "test").await.unwrap_err();
    assert_eq!(code(&e), "entra_not_configured");
    let mut req = assertion("an.peeters", Some(PIN));
    req.user = None;
    req.target = Some(crate::config::EnrollTarget::Entra);
    let e = b.svc.start_assertion(req, "test").await.unwrap_err();
    assert_eq!(code(&e), "entra_not_configured");
    // `local` is the default and the same as naming it.
    let mut req = enrollment("an.peeters", Some(PIN));
    req.target = Some(crate::config::EnrollTarget::Local);
    let v = b.svc.start_enrollment(req, "test").await.unwrap();
    assert!(v.entra.is_none());
    b.svc.cancel(&v.id, Kind::Enrollment).unwrap();
    assert_eq!(
        ended(&b.svc, &v.id, Kind::Enrollment).await.state,
        State::Cancelled
    );
    assert!(b
        .store
        .list_audit(None, None, 100)
        .unwrap()
        .iter()
        .all(|a| !a.event.starts_with("entra.")));
}
