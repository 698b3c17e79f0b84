//! The kiosk page in a real headless Chromium (WebDriver via chromedriver), against the real
//! binary with `--simulate`: enroll and verify in Dutch, verify and add a phone in English, a
//! wrong PIN, a touch timeout, and the inactivity reset. Screenshots of every step go to
//! `target/kiosk-screenshots/`.
//!
//! `scripts/setup` installs `chromium` and `chromium-driver`; where no browser can be installed
//! this test says so loudly and skips.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
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

    async fn sim(&self, patch: Value) {
        let r = self
            .http
            .patch(format!("{}/v1/sim/keys/sim%3A1", self.base))
            .bearer_auth(&self.admin)
            .json(&patch)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
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
    let mut child = Command::new(BIN)
        .args(["serve", "--simulate", "--listen", "127.0.0.1:0", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _daemon = Proc(child);
    let base = line
        .trim()
        .strip_prefix("keygate listening on ")
        .unwrap()
        .to_string();

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

    // --- Dutch: enroll (set a PIN first), then verify ------------------------------------
    k.sign_in("r0123456", "An Peeters").await;
    k.shot("start-nl").await;
    k.sim(json!({ "touch": { "auto_after_ms": 1500 } })).await;
    k.click("#btn-enroll").await;
    k.wait_screen("pin-new", 10).await;
    assert!(k
        .text("#screen-pin-new")
        .await
        .contains("Minstens 4 tekens"));
    k.type_in("#pin-new-1", "12").await;
    k.type_in("#pin-new-2", "12").await;
    k.click("#form-pin-new button[type=submit]").await;
    assert!(k.text("#pin-new-error").await.contains("minstens 4"));
    k.type_in("#pin-new-1", "1234").await;
    k.type_in("#pin-new-2", "1234").await;
    k.shot("pin-new").await;
    k.click("#form-pin-new button[type=submit]").await;
    k.wait_screen("touch", 10).await;
    assert!(k
        .text("#screen-touch h1")
        .await
        .contains("Raak je beveiligingssleutel nu aan"));
    k.shot("touch-nl").await;
    k.wait_screen("success", 10).await;
    assert!(
        k.text("#success-title").await.contains("geregistreerd"),
        "{}",
        k.text("#screen-success").await
    );
    k.shot("enrolled-nl").await;
    k.click("#btn-done").await;
    k.wait_screen("start", 5).await;
    assert_eq!(
        k.text("#greeting").await,
        "",
        "the next student sees nothing of this one"
    );

    // Test my key: a wrong PIN first.
    k.sim(json!({ "touch": { "auto_after_ms": 200 } })).await;
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

    // --- English: verify, then add a phone --------------------------------------------------
    k.click("#lang-en").await;
    k.sign_in("r0123456", "An Peeters").await;
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

    k.sign_in("r0123456", "An Peeters").await;
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
    k.shot("phone-verified-en").await;
    k.click("#btn-done").await;

    // --- an error path: nobody touches the key ----------------------------------------------
    k.sim(json!({ "touch": "never" })).await;
    k.sign_in("r0123456", "An Peeters").await;
    k.click("#btn-verify").await;
    k.wait_screen("pin", 10).await;
    k.type_in("#pin-input", "1234").await;
    k.click("#form-pin button[type=submit]").await;
    k.wait_screen("touch", 10).await;
    k.wait_screen("error", 15).await;
    assert_eq!(
        k.c.find(Locator::Css("body"))
            .await
            .unwrap()
            .attr("data-error")
            .await
            .unwrap()
            .as_deref(),
        Some("touch_timeout")
    );
    assert!(k.text("#error-title").await.contains("Time is up"));
    k.shot("touch-timeout-en").await;

    // --- inactivity: the page resets itself and forgets the student ------------------------
    tokio::time::sleep(Duration::from_secs(9)).await;
    k.wait_screen("start", 5).await;
    assert_eq!(k.text("#greeting").await, "");
    assert!(k
        .text("#signin-hint")
        .await
        .contains("Sign in at the kiosk first"));
    k.shot("after-inactivity").await;

    // Landscape 1080p renders too.
    k.c.set_window_size(1920, 1080).await.unwrap();
    k.shot("landscape").await;
    k.c.close().await.unwrap();
}
