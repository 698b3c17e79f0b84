//! The kiosk page in a real headless Chromium (WebDriver via chromedriver), against the real
//! binary with `--simulate`: enroll in Dutch and (a second key) in English, Cancel while the
//! page waits for a touch, verify in Dutch, verify and add a phone in English, a wrong PIN, a
//! touch timeout, and the resets (after a success and after inactivity: Dutch again, nothing of
//! the previous student left in the page). Screenshots of every step go to
//! `target/kiosk-screenshots/`.
//!
//! `scripts/setup` installs `chromium` and `chromium-driver`; where no browser can be installed
//! this test says so loudly and skips.

#[path = "kiosk_browser/harness.rs"]
mod harness;

use std::time::Duration;

use fantoccini::Locator;
use harness::{Kiosk, Lang, EN, NL};
use reqwest::Method;
use serde_json::{json, Value};

/// Enroll `key` (plugged alone, no PIN yet) for a student, in `lang`: the upstream handoff,
/// a too-short PIN refused, a PIN set, the touch, success, Done; then the page has forgotten
/// the student.
async fn enroll(k: &mut Kiosk, lang: &Lang, key: &str, user: &str, name: &str) {
    let l = lang.code;
    k.sign_in(user, name).await;
    k.choose(lang).await;
    k.shot(&format!("start-{l}")).await;
    k.sim(key, json!({ "touch": { "auto_after_ms": 1500 } }))
        .await;
    k.click("#btn-enroll").await;
    k.wait_screen("pin-new", 10).await;
    assert!(k.text("#screen-pin-new").await.contains(lang.pin_rules));
    assert!(
        !k.text("#pin-new-model").await.is_empty(),
        "the key's model"
    );
    k.type_in("#pin-new-1", "12").await;
    k.type_in("#pin-new-2", "12").await;
    k.click("#form-pin-new button[type=submit]").await;
    assert!(k.text("#pin-new-error").await.contains(lang.pin_short));
    k.type_in("#pin-new-1", "1234").await;
    k.type_in("#pin-new-2", "1234").await;
    k.shot(&format!("pin-new-{l}")).await;
    k.click("#form-pin-new button[type=submit]").await;
    k.wait_screen("touch", 10).await;
    assert!(k.text("#screen-touch h1").await.contains(lang.touch_title));
    k.shot(&format!("touch-{l}")).await;
    k.wait_screen("success", 10).await;
    assert!(
        k.text("#success-title").await.contains(lang.enrolled_title),
        "{}",
        k.text("#screen-success").await
    );
    assert!(k.text("#success-detail").await.contains(name));
    k.shot(&format!("enrolled-{l}")).await;
    k.click("#btn-done").await;
    k.wait_screen("start", 5).await;
    k.assert_forgotten().await;
}

/// "Test my key" with nobody touching it, cancelled on "touch your key now": the page is back
/// at the start, stays there, and shows no error.
async fn cancel_while_waiting_for_touch(k: &mut Kiosk, key: &str) {
    k.sim(key, json!({ "touch": "never" })).await;
    // Record what a screen reader would hear: every change of the one live region.
    k.js(
        "window.__announced = []; const a = document.getElementById('announce'); \
         new MutationObserver(() => window.__announced.push(a.textContent)) \
           .observe(a, { childList: true, characterData: true, subtree: true }); return true;",
    )
    .await;
    k.click("#btn-verify").await;
    k.wait_screen("pin", 10).await;
    k.type_in("#pin-input", "1234").await;
    k.click("#form-pin button[type=submit]").await;
    k.wait_screen("touch", 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The countdown is redrawn every 250 ms but announced at most once a second (all of a
    // 4-second timeout is "the last 10 seconds"), starting with the start.
    let heard = k.js("return window.__announced").await;
    let heard: Vec<String> = serde_json::from_value(heard).unwrap();
    assert!(!heard.is_empty() && heard.len() <= 3, "{heard:?}");
    assert!(heard[0].contains("Je hebt 4 seconden"), "{heard:?}");
    assert_eq!(
        k.js("return document.querySelector('.countdown').getAttribute('aria-hidden')")
            .await,
        "true"
    );
    k.shot("touch-before-cancel").await;
    k.click("#screen-touch button.cancel").await;
    k.wait_screen("start", 10).await;
    assert_eq!(k.screen_error().await, None);
    // Past the touch timeout (4 s): the cancelled ceremony does not come back as an error.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(k.js("return document.body.dataset.screen").await, "start");
    assert_eq!(k.screen_error().await, None);
    assert!(k.text("#btn-verify").await.contains("Mijn sleutel testen"));
    k.shot("cancelled").await;
}

#[tokio::test]
async fn kiosk_page_in_a_real_browser() {
    let Some(mut k) = harness::start(
        "kiosk_page_in_a_real_browser",
        "simulate_seed = 3\n[kiosk]\ninactivity_secs = 8\ntouch_timeout_secs = 4\n",
        "kiosk-screenshots",
    )
    .await
    else {
        return;
    };
    let base = k.base.clone();

    // Without the one-time session the page cannot call the API.
    k.c.goto(&format!("{base}/kiosk/")).await.unwrap();
    k.wait_screen("error", 10).await;
    assert!(k.text("#error-title").await.contains("niet aangemeld"));
    k.shot("no-session").await;

    // The one-time URL gives the browser its session cookie; a second use is refused.
    let url = k.open_session().await;
    assert_eq!(k.c.current_url().await.unwrap().path(), "/kiosk/");
    assert!(
        reqwest::get(&url).await.unwrap().status().is_client_error(),
        "single use"
    );
    k.wait_screen("start", 5).await;
    assert!(k.text("#signin-hint").await.contains("Meld je eerst aan"));
    k.shot("start-no-user").await;

    // --- Dutch: enroll (set a PIN first), cancel a verification, then verify -------------
    enroll(&mut k, &NL, "sim:1", "r0123456", "An Peeters").await;
    cancel_while_waiting_for_touch(&mut k, "sim:1").await;

    // Test my key: a wrong PIN first.
    k.sim("sim:1", json!({ "touch": { "auto_after_ms": 200 } }))
        .await;
    k.click("#btn-verify").await;
    k.wait_screen("pin", 10).await;
    k.type_in("#pin-input", "9999").await;
    k.click("#form-pin button[type=submit]").await;
    k.c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//p[@id='pin-error'][contains(., 'Nog 7 pogingen')]",
        ))
        .await
        .unwrap();
    k.shot("wrong-pin-nl").await;
    k.type_in("#pin-input", "1234").await;
    k.click("#form-pin button[type=submit]").await;
    k.wait_screen("success", 10).await;
    let detail = k.text("#success-detail").await;
    assert!(detail.contains("r01•••56"), "{detail}");
    assert!(!detail.contains("r0123456"), "masked: {detail}");
    k.shot("verified-nl").await;
    k.click("#btn-done").await;
    k.wait_screen("start", 5).await;
    k.assert_forgotten().await;

    // --- English: enroll a second, new key for another student ------------------------------
    k.sim_action("sim:1", "unplug").await;
    let fresh = k
        .admin_api(Method::POST, "/v1/sim/keys", Some(json!({})))
        .await;
    let fresh = fresh["key"]["id"].as_str().unwrap().to_string();
    enroll(&mut k, &EN, &fresh, "r0654321", "Bo Jansen").await;
    k.admin_api(
        Method::DELETE,
        &format!("/v1/sim/keys/{}", fresh.replace(':', "%3A")),
        None,
    )
    .await;
    k.sim_action("sim:1", "replug").await;

    // --- English: verify, then add a phone --------------------------------------------------
    k.sign_in("r0123456", "An Peeters").await;
    k.choose(&EN).await;
    assert!(k
        .text("#btn-enroll")
        .await
        .contains("Register a security key"));
    k.click("#btn-verify").await;
    k.wait_screen("pin", 10).await;
    k.type_in("#pin-input", "1234").await;
    k.click("#form-pin button[type=submit]").await;
    k.wait_screen("success", 10).await;
    assert!(k.text("#success-title").await.contains("Your key works"));
    k.click("#btn-done").await;
    k.wait_screen("start", 5).await;
    k.assert_forgotten().await;

    k.sign_in("r0123456", "An Peeters").await;
    k.choose(&EN).await;
    k.click("#btn-phone").await;
    k.wait_screen("phone", 5).await;
    k.type_in("#phone-number", "0475/34.56.78").await;
    k.click("#form-phone button[type=submit]").await;
    k.wait_screen("code", 10).await;
    assert!(k.text("#code-number").await.contains("+32 4•• •• •• 78"));
    let resend = k.c.find(Locator::Css("#btn-resend")).await.unwrap();
    assert!(
        !resend.is_enabled().await.unwrap(),
        "Resend waits for the cooldown"
    );
    assert!(resend.text().await.unwrap().starts_with("Resend code ("));
    k.shot("code-en").await;
    let mut code = String::new();
    for _ in 0..100 {
        let v: Value = k
            .http
            .get(format!("{base}/v1/sim/sms?number=%2B32475345678"))
            .bearer_auth(&k.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(c) = v["messages"][0]["code"].as_str() {
            code = c.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wrong = if code == "000000" { "111111" } else { "000000" };
    k.type_in("#code-input", wrong).await;
    k.click("#form-code button[type=submit]").await;
    k.c.wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::XPath(
            "//p[@id='code-error'][contains(., '4 attempts left')]",
        ))
        .await
        .unwrap();
    k.type_in("#code-input", &code).await;
    k.click("#form-code button[type=submit]").await;
    k.wait_screen("success", 10).await;
    assert!(k
        .text("#success-title")
        .await
        .contains("phone number is verified"));
    assert!(k.text("#success-detail").await.contains("78"));
    k.shot("phone-verified-en").await;
    k.click("#btn-done").await;
    k.wait_screen("start", 5).await;
    k.assert_forgotten().await;

    // --- an error path: nobody touches the key ----------------------------------------------
    // First leave a country and a number behind on the phone screen ("Back" keeps them).
    k.sim("sim:1", json!({ "touch": "never" })).await;
    k.sign_in("r0123456", "An Peeters").await;
    k.choose(&EN).await;
    k.click("#btn-phone").await;
    k.wait_screen("phone", 5).await;
    k.c.find(Locator::Css("#country option[value='31']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    k.type_in("#phone-number", "06 12 34 56 78").await;
    k.click("#screen-phone button.cancel").await;
    k.wait_screen("start", 5).await;
    k.click("#btn-verify").await;
    k.wait_screen("pin", 10).await;
    k.type_in("#pin-input", "1234").await;
    k.click("#form-pin button[type=submit]").await;
    k.wait_screen("touch", 10).await;
    k.wait_screen("error", 15).await;
    assert_eq!(k.screen_error().await.as_deref(), Some("touch_timeout"));
    assert!(k.text("#error-title").await.contains("Time is up"));
    assert_eq!(
        k.js("return document.getElementById('country').value")
            .await,
        "31"
    );
    k.shot("touch-timeout-en").await;

    // --- inactivity: the page resets itself and forgets the student ------------------------
    // Back to Dutch, whatever the student chose; nothing of theirs left, shown or hidden.
    tokio::time::sleep(Duration::from_secs(9)).await;
    k.wait_screen("start", 5).await;
    k.assert_forgotten().await;
    k.shot("after-inactivity").await;

    // Landscape 1080p renders too.
    k.c.set_window_size(1920, 1080).await.unwrap();
    k.shot("landscape").await;
    k.c.close().await.unwrap();
}
