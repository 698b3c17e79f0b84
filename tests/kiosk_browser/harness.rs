//! What the kiosk page's browser tests share: the real `keygate` binary (`--simulate`) with a
//! test's config, chromedriver driving a headless Chromium, the one-time kiosk session, and
//! [`Kiosk`]: steps on the page (screens, clicks, typing, screenshots) plus the admin API
//! that scripts the simulated keys. Included by each `tests/kiosk_browser*.rs` with `#[path]`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use keygate::harness::Spawned;
use reqwest::Method;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_keygate");

pub fn which(names: &[&str]) -> Option<PathBuf> {
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

/// A child process killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `keygate <args> --data-dir <dir>`, which must succeed; its trimmed stdout.
pub fn cli(dir: &Path, args: &[&str]) -> String {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon, a browser on it and the page's steps. Dropping it stops chromedriver (and with
/// it the browser), then the daemon, then removes the data dir.
pub struct Kiosk {
    pub c: Client,
    pub base: String,
    pub dir: PathBuf,
    pub admin: String,
    pub http: reqwest::Client,
    pub shots: PathBuf,
    pub n: usize,
    _driver: Proc,
    _daemon: Spawned,
    _tmp: tempfile::TempDir,
}

/// Start `keygate serve --simulate --config <config_toml>` in a fresh data dir (with an admin
/// token), chromedriver and a headless Chromium (1080×1920, Dutch), with screenshots going to
/// `target/<shots_dir>/` (emptied first). The page is not opened yet.
///
/// None, after saying so loudly, where no Chromium or chromedriver is installed.
pub async fn start(test: &str, config_toml: &str, shots_dir: &str) -> Option<Kiosk> {
    let (Some(chromium), Some(driver)) = (
        which(&["chromium", "chromium-browser", "google-chrome"]),
        which(&["chromedriver"]),
    ) else {
        eprintln!("\n\n*** SKIPPED {test}: no chromium/chromedriver on PATH (scripts/setup installs them) ***\n");
        return None;
    };
    // fantoccini's TLS stack finds two rustls providers in this build; pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let conf = dir.join("keygate.toml");
    std::fs::write(&conf, config_toml).unwrap();
    let admin = cli(&dir, &["token", "create", "--role", "admin"]);
    let daemon = Spawned::spawn(Spawned::command(BIN, &dir).arg("--config").arg(&conf));
    let base = daemon.base.clone();

    let port = free_port();
    let driver = Proc(
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
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(shots_dir);
    // Only this run's screenshots.
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    Some(Kiosk {
        c: c.expect("chromedriver answers"),
        base,
        dir,
        admin,
        http: reqwest::Client::new(),
        shots,
        n: 0,
        _driver: driver,
        _daemon: daemon,
        _tmp: tmp,
    })
}

impl Kiosk {
    /// Open the page through a fresh one-time kiosk URL (which gives the browser its session
    /// cookie) and wait until the page is ready; returns that URL.
    pub async fn open_session(&self) -> String {
        let url = cli(&self.dir, &["kiosk-url", "--base", &self.base]);
        self.c.goto(&url).await.unwrap();
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("body[data-ready='true']"))
            .await
            .unwrap();
        url
    }

    pub async fn shot(&mut self, name: &str) {
        self.n += 1;
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.n)), png).unwrap();
    }

    pub async fn wait_screen(&self, screen: &str, secs: u64) {
        let shown = self
            .c
            .wait()
            .at_most(Duration::from_secs(secs))
            .for_element(Locator::Css(&format!("body[data-screen='{screen}']")))
            .await;
        if let Err(e) = shown {
            let now = self
                .js("return [document.body.dataset.screen, document.body.dataset.error || null, document.querySelector('main').innerText]")
                .await;
            panic!("screen {screen} never showed ({e}); the page shows {now}");
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    pub async fn type_in(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// The upstream sign-in hands a student to the kiosk.
    pub async fn sign_in(&self, user: &str, name: &str) {
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
    pub async fn admin_api(&self, method: Method, path: &str, body: Option<Value>) -> Value {
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
    pub async fn sim(&self, key: &str, patch: Value) {
        self.admin_api(
            Method::PATCH,
            &format!("/v1/sim/keys/{}", key.replace(':', "%3A")),
            Some(patch),
        )
        .await;
    }

    pub async fn sim_action(&self, key: &str, action: &str) {
        self.admin_api(
            Method::POST,
            &format!("/v1/sim/keys/{}/{action}", key.replace(':', "%3A")),
            None,
        )
        .await;
    }

    pub async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    /// Wait until the node `#id` holds `needle` (shown or not).
    pub async fn wait_text(&self, id: &str, needle: &str, secs: u64) {
        self.c
            .wait()
            .at_most(Duration::from_secs(secs))
            .for_element(Locator::XPath(&format!(
                "//*[@id='{id}'][contains(., \"{needle}\")]"
            )))
            .await
            .unwrap_or_else(|e| panic!("#{id} never said {needle:?}: {e}"));
    }

    /// Poll `probe` (a script body) every 100 ms until `done` accepts its value; that value.
    pub async fn wait_js(
        &self,
        probe: &str,
        what: &str,
        secs: u64,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(probe).await;
            if done(&v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < until,
                "{what}: still {v} after {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// From now on, record what a screen reader hears: every change of the page's one live
    /// region (`#announce`). Calling it again starts a new record.
    pub async fn record_announcements(&self) {
        self.js(
            "window.__announced = []; \
             if (!window.__announcer) { const a = document.getElementById('announce'); \
               window.__announcer = new MutationObserver(() => window.__announced.push(a.textContent)); \
               window.__announcer.observe(a, { childList: true, characterData: true, subtree: true }); } \
             return true;",
        )
        .await;
    }

    /// What `#announce` said since [`Kiosk::record_announcements`].
    pub async fn announcements(&self) -> Vec<String> {
        serde_json::from_value(self.js("return window.__announced").await).unwrap()
    }

    /// Text of a node whether shown or not (WebDriver's text is "" for hidden nodes).
    pub async fn content(&self, id: &str) -> String {
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

    pub async fn screen_error(&self) -> Option<String> {
        self.c
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .attr("data-error")
            .await
            .unwrap()
    }

    pub async fn choose(&self, lang: &Lang) {
        self.click(&format!("#lang-{}", lang.code)).await;
        assert_eq!(
            self.js("return document.documentElement.lang").await,
            lang.code
        );
    }

    /// What the next student must find after a reset: the page in Dutch, nobody greeted, and
    /// no form field, outcome or data node holding anything of the previous one.
    pub async fn assert_forgotten(&self) {
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
pub struct Lang {
    pub code: &'static str,
    pub pin_rules: &'static str,
    pub pin_short: &'static str,
    pub touch_title: &'static str,
    pub enrolled_title: &'static str,
}

pub const NL: Lang = Lang {
    code: "nl",
    pin_rules: "Minstens 4 tekens",
    pin_short: "minstens 4",
    touch_title: "Raak je beveiligingssleutel nu aan",
    enrolled_title: "geregistreerd",
};

pub const EN: Lang = Lang {
    code: "en",
    pin_rules: "At least 4 characters",
    pin_short: "at least 4",
    touch_title: "Touch your security key now",
    enrolled_title: "Your key is registered",
};
