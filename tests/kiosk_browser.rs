//! The kiosk page in a real headless Chromium (WebDriver via chromedriver), against the real
//! binary with `--simulate`: enroll in Dutch and (a second key) in English, Cancel while the
//! page waits for a touch, verify in Dutch, verify and add a phone in English, a wrong PIN, a
//! touch timeout, and the resets (after a success and after inactivity: Dutch again, nothing of
//! the previous student left in the page). Screenshots of every step go to
//! `target/kiosk-screenshots/`.
//!
//! `scripts/setup` installs `chromium` and `chromium-driver`; where no browser can be installed
//! this test says so loudly and skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use keygate::harness::Spawned;
use reqwest::Method;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kiosk {
    c: Client,
    base: String,
    dir: PathBuf,
    admin: String,
    http: reqwest::Client,
    shots: PathBuf,
    n: usize,
}

impl Kiosk {
    async fn shot(&mut self, name: &str) {
        self.n += 1;
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.n)), png).unwrap();
    }

    async fn wait_screen(&self, screen: &str, secs: u64) {
        self.c
            .wait()
            .at_most(Duration::from_secs(secs))
            .for_element(Locator::Css(&format!("body[data-screen='{screen}']")))
            .await
            .unwrap_or_else(|e| panic!("screen {screen} never showed: {e}"));
    }

    async fn text(&self, css: &str) -> String {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// The upstream sign-in hands a student to the kiosk.
    async fn sign_in(&self, user: &str, name: &str) {
        let token = cli(
            &self.dir,
            &["kiosk-handoff", "--user", user, "--display-name", name],
        );
        self.c
            .goto(&format!("{}/kiosk/#handoff={token}", self.base))
            .await
            .unwrap();
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath(&format!(
                "//p[@id='greeting'][contains(., '{name}')]"
            )))
            .await
            .unwrap();
    }

    /// An admin API call that must succeed; returns its JSON (null when it has none).
    async fn admin_api(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    /// Change a simulated key (`/v1/sim/keys/{id}` PATCH), e.g. how it is touched.
    async fn sim(&self, key: &str, patch: Value) {
        self.admin_api(
            Method::PATCH,
            &format!("/v1/sim/keys/{}", key.replace(':', "%3A")),
            Some(patch),
        )
        .await;
    }

    async fn sim_action(&self, key: &str, action: &str) {
        self.admin_api(
            Method::POST,
            &format!("/v1/sim/keys/{}/{action}", key.replace(':', "%3A")),
            None,
        )
        .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Text of a node whether shown or not (WebDriver's text is "" for hidden nodes).
    async fn content(&self, id: &str) -> String {
        self.c
            .execute(
                "return document.getElementById(arguments[0]).textContent",
                vec![json!(id)],
            )
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn screen_error(&self) -> Option<String> {
        self.c
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .attr("data-error")
            .await
            .unwrap()
    }

    async fn choose(&self, lang: &Lang) {
        self.click(&format!("#lang-{}", lang.code)).await;
        assert_eq!(
            self.js("return document.documentElement.lang").await,
            lang.code
        );
    }

    /// What the next student must find after a reset: the page in Dutch, nobody greeted, and
    /// no form field, outcome or data node holding anything of the previous one.
    async fn assert_forgotten(&self) {
        assert_eq!(self.js("return document.documentElement.lang").await, "nl");
        assert_eq!(self.text("#greeting").await, "");
        assert!(self
            .text("#signin-hint")
            .await
            .contains("Meld je eerst aan"));
        assert!(self
            .text("#btn-verify")
            .await
            .contains("Mijn sleutel testen"));
        let leftovers = self
            .js(r##"const out = {};
                for (const e of document.querySelectorAll("[data-clear], .error"))
                  if (e.textContent !== "") out["#" + e.id] = e.textContent;
                for (const i of document.querySelectorAll("input"))
                  if (i.value !== "") out["#" + i.id] = i.value;
                for (const s of document.querySelectorAll("select"))
                  if (s.selectedIndex !== 0) out["#" + s.id] = s.value;
                if (document.body.dataset.error) out["data-error"] = document.body.dataset.error;
                return out;"##)
            .await;
        assert_eq!(leftovers, json!({}), "left behind by the previous student");
        // Named here too, so that a node losing its data-clear mark fails this test.
        for id in [
            "success-title",
            "success-detail",
            "code-number",
            "error-title",
            "error-text",
            "error-next",
            "pin-new-model",
            "pin-model",
        ] {
            assert_eq!(self.content(id).await, "", "#{id} after the reset");
        }
        assert_eq!(
            self.js("return document.getElementById('country').value")
                .await,
            "32",
            "the country is Belgium again"
        );
    }
}

/// What the page says in one language, for the steps the tests check.
struct Lang {
    code: &'static str,
    pin_rules: &'static str,
    pin_short: &'static str,
    touch_title: &'static str,
    enrolled_title: &'static str,
}

const NL: Lang = Lang {
    code: "nl",
    pin_rules: "Minstens 4 tekens",
    pin_short: "minstens 4",
    touch_title: "Raak je beveiligingssleutel nu aan",
    enrolled_title: "geregistreerd",
};

const EN: Lang = Lang {
    code: "en",
    pin_rules: "At least 4 characters",
    pin_short: "at least 4",
    touch_title: "Touch your security key now",
    enrolled_title: "Your key is registered",
};

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
    let (Some(chromium), Some(driver)) = (
        which(&["chromium", "chromium-browser", "google-chrome"]),
        which(&["chromedriver"]),
    ) else {
        eprintln!("\n\n*** SKIPPED kiosk_page_in_a_real_browser: no chromium/chromedriver on PATH (scripts/setup installs them) ***\n");
        return;
    };
    // fantoccini's TLS stack finds two rustls providers in this build; pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let conf = dir.join("keygate.toml");
    std::fs::write(
        &conf,
        "simulate_seed = 3\n[kiosk]\ninactivity_secs = 8\ntouch_timeout_secs = 4\n",
    )
    .unwrap();
    let admin = cli(&dir, &["token", "create", "--role", "admin"]);
    let daemon = Spawned::spawn(Spawned::command(BIN, &dir).arg("--config").arg(&conf));
    let base = daemon.base.clone();

    let port = free_port();
    let _driver = Proc(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1080,1920", "--lang=nl-BE"] }),
    );
    let mut c = None;
    for _ in 0..100 {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => {
                c = Some(client);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/kiosk-screenshots");
    // Only this run's screenshots.
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let mut k = Kiosk {
        c: c.expect("chromedriver answers"),
        base: base.clone(),
        dir: dir.clone(),
        admin,
        http: reqwest::Client::new(),
        shots,
        n: 0,
    };

    // Without the one-time session the page cannot call the API.
    k.c.goto(&format!("{base}/kiosk/")).await.unwrap();
    k.wait_screen("error", 10).await;
    assert!(k.text("#error-title").await.contains("niet aangemeld"));
    k.shot("no-session").await;

    // The one-time URL gives the browser its session cookie; a second use is refused.
    let url = cli(&dir, &["kiosk-url", "--base", &base]);
    k.c.goto(&url).await.unwrap();
    k.c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("body[data-ready='true']"))
        .await
        .unwrap();
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
