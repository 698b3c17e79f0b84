//! The kiosk page's Microsoft Entra ID flow in a real headless Chromium (WebDriver via
//! chromedriver), against the real binary with `--simulate` configured with `[entra]` and
//! `[kiosk] enroll_target = "entra"`, and the fake tenant (tests/common/fake_entra.rs) running
//! in this test: in Dutch, a student sets a PIN on a new key, the page asks Microsoft, shows the
//! touch screen with Microsoft's 5-minute window counting down (never announced every tick),
//! registers with Microsoft and names the passkey as Entra does; "Test my key" names the masked
//! student and the passkey. In English, each failure explained: Graph refusing the registration
//! (its reason quoted once), a forbidden creationOptions, throttling with `Retry-After`, and a
//! key without the extensions Microsoft needs. Screenshots of every step go to
//! `target/kiosk-screenshots-entra/`.
//!
//! `scripts/setup` installs `chromium` and `chromium-driver`; where no browser can be installed
//! this test says so loudly and skips.

mod common;
#[path = "kiosk_browser/harness.rs"]
mod harness;

use std::time::Duration;

use common::fake_entra::{self, graph_error, FakeEntra, FakeEntraOptions, Route};
use fantoccini::Locator;
use harness::{Kiosk, EN, NL};
use serde_json::{json, Value};

/// Students as the upstream sign-in hands them over, and their accounts in the tenant
/// (`upn_template = "{user}@student.odisee.be"`).
const AN: (&str, &str, &str) = ("r0123456", "An Peeters", "r0123456@student.odisee.be");
const BO: (&str, &str, &str) = ("r0654321", "Bo Jansen", "r0654321@student.odisee.be");

const TOUCH_TIMEOUT_SECS: u64 = 30;
const INACTIVITY_SECS: u64 = 10;

/// Seconds left in `#entra-window` when it reads `{prefix}m:ss{suffix}` (one-digit minutes,
/// two-digit seconds), else None.
fn window_left(text: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let (m, s) = text
        .strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .split_once(':')?;
    let digits = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(m, 1) || !digits(s, 2) {
        return None;
    }
    let (m, s): (u64, u64) = (m.parse().ok()?, s.parse().ok()?);
    (s < 60).then_some(m * 60 + s)
}

const WINDOW_NL: (&str, &str) = ("Registratie bij Microsoft: nog ", ".");

/// Dutch: An enrolls the new simulated key into her Microsoft account.
async fn enroll_into_entra(k: &mut Kiosk, fake: &FakeEntra) {
    let (user, name, upn) = AN;
    k.sign_in(user, name).await;
    k.choose(&NL).await;
    k.shot("start-nl").await;
    k.sim("sim:1", json!({ "touch": "never" })).await;
    k.record_announcements().await;
    // Graph's creationOptions held back a moment: the page says it is asking Microsoft.
    fake.delay(Route::CreationOptions, Duration::from_millis(1500));
    k.click("#btn-enroll").await;
    k.wait_screen("pin-new", 10).await;
    assert!(k.text("#screen-pin-new").await.contains(NL.pin_rules));
    k.type_in("#pin-new-1", "1234").await;
    k.type_in("#pin-new-2", "1234").await;
    k.shot("pin-new-nl").await;
    k.click("#form-pin-new button[type=submit]").await;
    k.wait_text(
        "working-status",
        "We vragen Microsoft om je sleutel te registreren",
        10,
    )
    .await;
    assert_eq!(k.js("return document.body.dataset.screen").await, "working");
    assert_eq!(k.text("#screen-working h1").await, "Even geduld");
    k.shot("contacting-microsoft-nl").await;

    // The touch screen, with Microsoft's window under the touch countdown.
    k.wait_screen("touch", 15).await;
    fake.delay(Route::CreationOptions, Duration::ZERO);
    assert!(k.text("#screen-touch h1").await.contains(NL.touch_title));
    let first = k
        .wait_js(
            "return document.getElementById('entra-window').textContent",
            "#entra-window reads 'Registratie bij Microsoft: nog 4:5x.'",
            10,
            |v| {
                v.as_str()
                    .and_then(|t| window_left(t, WINDOW_NL.0, WINDOW_NL.1))
                    .is_some_and(|s| (290..300).contains(&s))
            },
        )
        .await;
    let first = first.as_str().unwrap().to_string();
    let first_left = window_left(&first, WINDOW_NL.0, WINDOW_NL.1).unwrap();
    assert!(
        first.starts_with("Registratie bij Microsoft: nog 4:5"),
        "{first}"
    );
    assert!(
        k.c.find(Locator::Id("entra-window"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "shown, not only in the DOM"
    );
    let countdown: u64 = k.text("#countdown").await.parse().unwrap();
    assert!(countdown <= TOUCH_TIMEOUT_SECS, "{countdown}");
    k.shot("touch-entra-window-nl").await;
    // It counts down.
    k.wait_js(
        "return document.getElementById('entra-window').textContent",
        "the Microsoft window counts down",
        10,
        |v| {
            v.as_str()
                .and_then(|t| window_left(t, WINDOW_NL.0, WINDOW_NL.1))
                .is_some_and(|s| s < first_left)
        },
    )
    .await;
    // A screen reader heard that Microsoft is asked and the touch countdown's start, and
    // nothing of the redrawn window: the window is in no live region.
    let heard = k.announcements().await;
    assert_eq!(
        heard,
        [
            "We vragen Microsoft om je sleutel te registreren…".to_string(),
            format!("Raak je sleutel aan. Je hebt {TOUCH_TIMEOUT_SECS} seconden.")
        ],
        "#announce while the Microsoft window counts down"
    );
    assert_eq!(
        k.js("return document.getElementById('entra-window').closest('[aria-live], [role=status], [role=alert], [role=timer]') === null")
            .await,
        true,
        "#entra-window is not live"
    );

    // The student takes their time: touched only once the kiosk's inactivity has passed (the
    // touch screen is exempt), so the registration under way must not be reset either.
    let late = TOUCH_TIMEOUT_SECS - INACTIVITY_SECS - 1;
    k.wait_js(
        "return Number(document.getElementById('countdown').textContent)",
        "the touch countdown passes the kiosk's inactivity",
        INACTIVITY_SECS + 10,
        |v| v.as_u64().is_some_and(|left| left <= late),
    )
    .await;
    // Touched: registering with Microsoft (Graph's answer held back a moment). The touch
    // countdown and the window stop there: nothing ticks or is announced but the outcome.
    fake.delay(Route::RegisterFido2, Duration::from_millis(2000));
    k.sim("sim:1", json!({ "touch": { "auto_after_ms": 0 } }))
        .await;
    k.wait_text(
        "working-status",
        "We registreren je sleutel bij Microsoft",
        10,
    )
    .await;
    k.record_announcements().await;
    k.js(
        "window.__ticks = 0; const o = new MutationObserver(() => window.__ticks++); \
         for (const id of ['countdown', 'entra-window', 'bar-fill']) \
           o.observe(document.getElementById(id), { childList: true, characterData: true, subtree: true, attributes: true }); \
         window.__screens = []; new MutationObserver(() => \
           window.__screens.push([document.body.dataset.screen, performance.now()])) \
           .observe(document.body, { attributes: true, attributeFilter: ['data-screen'] }); \
         return true;",
    )
    .await;
    k.shot("registering-with-microsoft-nl").await;
    k.wait_screen("success", 15).await;
    fake.delay(Route::RegisterFido2, Duration::ZERO);
    assert_eq!(
        k.js("return window.__ticks").await,
        0,
        "the touch countdown or the Microsoft window still ticked after the touch"
    );

    // Success names the passkey as Microsoft holds it; the tenant holds exactly that one,
    // verified (the fake stores a passkey only once its attestation verified).
    let methods = fake.fido2_methods(upn);
    assert_eq!(methods.len(), 1, "{methods:?}");
    assert_eq!(fake.count(Route::RegisterFido2), 1);
    let entra_name = methods[0]["displayName"].as_str().unwrap().to_string();
    assert!(!entra_name.is_empty());
    assert!(k.text("#success-title").await.contains(NL.enrolled_title));
    let detail = k.text("#success-detail").await;
    assert!(
        detail.contains(&format!(
            "in je Microsoft-account als \u{201c}{entra_name}\u{201d}"
        )),
        "{detail}"
    );
    let heard = k.announcements().await;
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].contains(&entra_name), "{heard:?}");
    k.shot("enrolled-entra-nl").await;
    // The outcome stays although the student's last input is older than the kiosk's
    // inactivity: watched for well over the page's inactivity check (twice a second).
    k.wait_js(
        "const s = window.__screens.find((x) => x[0] === 'success'); \
         return s ? performance.now() - s[1] : 0",
        "the success screen has been up for 1.5 s",
        10,
        |v| v.as_f64().is_some_and(|ms| ms > 1500.0),
    )
    .await;
    let screens = k.js("return window.__screens.map((x) => x[0])").await;
    assert_eq!(screens, json!(["success"]), "the outcome was reset");
    k.click("#btn-done").await;
    k.wait_screen("start", 5).await;
    k.assert_forgotten().await;
}

/// Dutch: "Test my key" asks whose key this is in Microsoft's records.
async fn test_my_key(k: &mut Kiosk, fake: &FakeEntra) {
    let entra_name = fake.fido2_methods(AN.2)[0]["displayName"]
        .as_str()
        .unwrap()
        .to_string();
    k.sim("sim:1", json!({ "touch": { "auto_after_ms": 200 } }))
        .await;
    k.click("#btn-verify").await;
    k.wait_screen("pin", 10).await;
    k.type_in("#pin-input", "1234").await;
    k.click("#form-pin button[type=submit]").await;
    k.wait_screen("success", 10).await;
    assert_eq!(k.text("#success-title").await, "Je sleutel werkt");
    assert_eq!(
        k.text("#success-detail").await,
        format!("Deze sleutel hoort bij r01•••56 en staat in Microsoft als \u{201c}{entra_name}\u{201d}.")
    );
    k.shot("verified-entra-nl").await;
    k.click("#btn-done").await;
    k.wait_screen("start", 5).await;
    k.assert_forgotten().await;
}

/// One English attempt that ends on the error screen: from the start screen (`first`) or from
/// the error screen's Try again, PIN, then the error `code`.
async fn attempt_fails(k: &mut Kiosk, first: bool, code: &str) {
    k.click(if first { "#btn-enroll" } else { "#btn-retry" })
        .await;
    k.wait_screen("pin", 10).await;
    k.type_in("#pin-input", "1234").await;
    k.click("#form-pin button[type=submit]").await;
    k.wait_screen("error", 15).await;
    assert_eq!(
        k.screen_error().await.as_deref(),
        Some(code),
        "{}",
        k.text("#screen-error").await
    );
}

async fn error_texts(k: &Kiosk) -> (String, String, String) {
    (
        k.text("#error-title").await,
        k.text("#error-text").await,
        k.text("#error-next").await,
    )
}

/// English: every way Microsoft (or the key) says no, explained.
async fn failures_explained(k: &mut Kiosk, fake: &FakeEntra) {
    let (user, name, upn) = BO;
    k.sign_in(user, name).await;
    k.choose(&EN).await;
    k.sim("sim:1", json!({ "touch": { "auto_after_ms": 200 } }))
        .await;

    // Graph refuses the registration: its reason, quoted once.
    let reason = "The authenticator's AAGUID is not allowed by policy.";
    fake.fail_next(
        Route::RegisterFido2,
        400,
        graph_error("badRequest", reason),
        None,
    );
    k.record_announcements().await;
    attempt_fails(k, true, "entra_rejected").await;
    let (title, text, next) = error_texts(k).await;
    assert_eq!(title, "Refused by Microsoft");
    assert_eq!(
        text,
        format!("Microsoft Entra ID refused this key: {reason}")
    );
    assert_eq!(next, "Use a key from the service desk's list.");
    assert_eq!(
        k.content("screen-error").await.matches(reason).count(),
        1,
        "the reason quoted once"
    );
    // Said once to a screen reader too, as the last thing it heard.
    let heard = k.announcements().await;
    assert_eq!(
        heard.last().map(String::as_str),
        Some(
            format!("Refused by Microsoft. Microsoft Entra ID refused this key: {reason}").as_str()
        ),
        "{heard:?}"
    );
    assert_eq!(heard.concat().matches(reason).count(), 1, "{heard:?}");
    assert!(
        heard.windows(2).all(|w| w[0] != w[1]),
        "nothing said twice in a row: {heard:?}"
    );
    assert!(fake.fido2_methods(upn).is_empty());
    k.shot("entra-rejected-en").await;

    // creationOptions forbidden (permission or policy): keygate's words, not Graph's.
    fake.fail_next(
        Route::CreationOptions,
        403,
        graph_error(
            "accessDenied",
            "Insufficient privileges to complete the operation.",
        ),
        None,
    );
    attempt_fails(k, false, "entra_forbidden").await;
    let (title, text, next) = error_texts(k).await;
    assert_eq!(title, "Not allowed by Microsoft");
    assert_eq!(
        text,
        "The kiosk may not register keys in Microsoft Entra ID (a permission or policy is missing)."
    );
    assert_eq!(next, "Go to the service desk.");
    assert!(!k
        .content("screen-error")
        .await
        .contains("Insufficient privileges"));
    k.shot("entra-forbidden-en").await;

    // Throttled, Retry-After 120 s: come back in 2 minutes.
    fake.fail_next(
        Route::CreationOptions,
        429,
        graph_error(
            "tooManyRequests",
            "Too many requests. Please try again later.",
        ),
        Some(120),
    );
    attempt_fails(k, false, "entra_throttled").await;
    let (title, text, next) = error_texts(k).await;
    assert_eq!(title, "Microsoft is busy");
    assert_eq!(
        text,
        "Microsoft Entra ID is getting too many requests right now."
    );
    assert_eq!(next, "Try again in 2 minutes.");
    k.shot("entra-throttled-en").await;

    // A key without credProtect and hmac-secret: refused before Microsoft is asked.
    k.sim("sim:1", json!({ "extensions": [] })).await;
    let asked = fake.count(Route::CreationOptions);
    attempt_fails(k, false, "key_unsupported").await;
    let (title, text, next) = error_texts(k).await;
    assert_eq!(title, "Key not suitable for Microsoft");
    assert!(text.contains("hmac-secret and credProtect"), "{text}");
    assert_eq!(next, "Use a recent FIDO2 key or go to the service desk.");
    assert_eq!(fake.count(Route::CreationOptions), asked);
    k.shot("key-unsupported-en").await;

    assert!(fake.fido2_methods(upn).is_empty());
    k.click("#btn-home").await;
    k.wait_screen("start", 5).await;
    k.assert_forgotten().await;
}

// Multi-threaded: the fake tenant answers the daemon while a worker runs a blocking CLI call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_enrolls_into_entra_in_a_real_browser() {
    let fake = fake_entra::start(FakeEntraOptions::default()).await;
    for (_, name, upn) in [AN, BO] {
        fake.add_user(upn, name);
    }
    // One [kiosk] table: TOML refuses a table declared twice.
    let config = format!(
        "simulate_seed = 3\n{}[kiosk]\ninactivity_secs = {INACTIVITY_SECS}\n\
         touch_timeout_secs = {TOUCH_TIMEOUT_SECS}\nenroll_target = \"entra\"\n",
        fake.entra_toml()
    );
    let Some(mut k) = harness::start(
        "kiosk_enrolls_into_entra_in_a_real_browser",
        &config,
        "kiosk-screenshots-entra",
    )
    .await
    else {
        return;
    };
    k.open_session().await;
    k.wait_screen("start", 5).await;
    let cfg: Value = k
        .js("return fetch('/v1/kiosk/config').then((r) => r.json())")
        .await;
    assert_eq!(cfg["enroll_target"], "entra", "{cfg}");

    enroll_into_entra(&mut k, &fake).await;
    test_my_key(&mut k, &fake).await;
    failures_explained(&mut k, &fake).await;

    k.c.close().await.unwrap();
}

#[test]
fn window_text_is_parsed_strictly() {
    let (p, s) = WINDOW_NL;
    assert_eq!(
        window_left("Registratie bij Microsoft: nog 4:59.", p, s),
        Some(299)
    );
    assert_eq!(
        window_left("Registratie bij Microsoft: nog 0:05.", p, s),
        Some(5)
    );
    for bad in [
        "Registratie bij Microsoft: nog 4:5.",
        "Registratie bij Microsoft: nog 4:60.",
        "Registratie bij Microsoft: nog 04:59.",
        "Registratie bij Microsoft: nog 4:59",
        "Microsoft registration: 4:59 left.",
        "",
    ] {
        assert_eq!(window_left(bad, p, s), None, "{bad}");
    }
}
