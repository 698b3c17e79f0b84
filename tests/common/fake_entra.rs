//! A fake Microsoft identity platform + Microsoft Graph on 127.0.0.1, behaving like Entra ID
//! for what keygate calls: the client-credentials token endpoint (client secret or a
//! private_key_jwt certificate assertion), passkey provisioning (`fido2Methods/creationOptions`,
//! then `POST fido2Methods`, verified the way Entra verifies it), listing and deleting passkeys,
//! phone methods and Temporary Access Passes. Used by the adapter tests, the ceremony and HTTP
//! tests, the virtual-key hardware test and the bench.
//!
//! ```ignore
//! let fake = fake_entra::start(FakeEntraOptions::default()).await;
//! fake.add_user("s123@student.odisee.be", "Student 123");
//! let cfg = fake.entra_config();            // [entra] pointing at the fake, secret auth
//! fake.fail_next(Route::RegisterFido2, 503, json!({...}), None);
//! assert_eq!(fake.count(Route::Token), 1);
//! ```
//!
//! Layout: `{base}/authority/{tenant}/oauth2/v2.0/token` (authority_url = `{base}/authority`)
//! and `{base}/graph/v1.0/users/{id or upn}/authentication/...` (graph_url =
//! `{base}/graph/v1.0`). Users are created by the test (`add_user`); anyone else is a 404.
//! Time (token and challenge expiry) comes from `FakeEntraOptions::clock`.

#![allow(dead_code)]

mod graph;
pub mod softkey;
mod token;
mod verify;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use keygate::base::clock::{Clock, SystemClock};
use rand::RngCore;
use serde_json::{json, Value};

/// What the fake tenant accepts and how it behaves.
#[derive(Clone)]
pub struct FakeEntraOptions {
    pub tenant_id: String,
    pub client_id: String,
    /// Accepted client secret (None: secrets are refused).
    pub client_secret: Option<String>,
    /// DER of the app registration's certificate: private_key_jwt assertions signed with its
    /// key are accepted (RS256 with `x5t`, PS256 with `x5t#S256`).
    pub client_certificate_der: Option<Vec<u8>>,
    /// `expires_in` of issued access tokens.
    pub token_lifetime: Duration,
    /// Registration window of a creationOptions challenge (Graph v1.0: 5 minutes, fixed).
    pub challenge_window: Duration,
    /// `publicKey.rp.id` (`login.microsoft.com` in real tenants).
    pub rp_id: String,
    /// Entries per page of a list (`@odata.nextLink` beyond).
    pub page_size: usize,
    /// The FIDO2 policy's "Enforce attestation": self and none attestation are refused.
    pub enforce_attestation: bool,
    /// The FIDO2 policy's key restrictions: only these AAGUIDs (None: any).
    pub allowed_aaguids: Option<Vec<uuid::Uuid>>,
    /// The tenant's clock (token and challenge expiry).
    pub clock: Arc<dyn Clock>,
}

impl Default for FakeEntraOptions {
    fn default() -> Self {
        FakeEntraOptions {
            tenant_id: "8f0c7d5e-3b1a-4c2d-9e6f-0a1b2c3d4e5f".into(),
            client_id: "4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d".into(),
            client_secret: Some("fake~entra.Secret_0123456789abcdefXYZ".into()),
            client_certificate_der: None,
            token_lifetime: Duration::from_secs(3599),
            challenge_window: Duration::from_secs(300),
            rp_id: "login.microsoft.com".into(),
            page_size: 100,
            enforce_attestation: false,
            allowed_aaguids: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The routes the fake answers (for counters, faults, delays and received requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Token,
    CreationOptions,
    RegisterFido2,
    ListFido2,
    DeleteFido2,
    AddPhone,
    ListPhones,
    CreateTap,
    /// Anything else (answered 404 or 405 like Graph).
    Other,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub route: Route,
    pub method: String,
    /// Path as sent (percent-encoded) and query, if any.
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug, Clone)]
struct Fault {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredFido2 {
    pub id: String,
    pub credential_id: Vec<u8>,
    pub display_name: String,
    pub aaguid: String,
    pub model: Option<String>,
    pub attestation_level: String,
    pub attestation_certificates: Vec<String>,
    pub created: String,
}

#[derive(Debug, Clone)]
pub(crate) struct StoredPhone {
    pub id: String,
    pub number: String,
    pub phone_type: String,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub oid: String,
    pub upn: String,
    pub display_name: String,
    /// `publicKey.user.id`: random, stable per user.
    pub webauthn_id: Vec<u8>,
    pub fido2: Vec<StoredFido2>,
    pub phones: Vec<StoredPhone>,
    pub taps: Vec<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub user_oid: String,
    pub expires_ms: i64,
    pub used: bool,
}

#[derive(Default)]
pub(crate) struct Tenant {
    pub users: Vec<User>,
    /// Issued access tokens -> expiry (ms).
    pub tokens: HashMap<String, i64>,
    pub challenges: HashMap<String, Challenge>,
    pub assertion_ids: HashSet<String>,
    faults: HashMap<Route, VecDeque<Fault>>,
    delays: HashMap<Route, Duration>,
    counts: HashMap<Route, usize>,
    received: Vec<Received>,
    pub last_registration: Option<Value>,
    /// Time spent answering requests (delays included).
    busy: Duration,
}

impl Tenant {
    pub fn user_mut(&mut self, key: &str) -> Option<&mut User> {
        self.users
            .iter_mut()
            .find(|u| u.oid == key || u.upn.eq_ignore_ascii_case(key))
    }
}

pub(crate) struct Shared {
    pub opts: FakeEntraOptions,
    pub base: String,
    pub tenant: Mutex<Tenant>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Tenant> {
        self.tenant.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn now_ms(&self) -> i64 {
        self.opts.clock.now_ms()
    }
    pub fn graph_url(&self) -> String {
        format!("{}/graph/v1.0", self.base)
    }
    pub fn token_url(&self) -> String {
        format!(
            "{}/authority/{}/oauth2/v2.0/token",
            self.base, self.opts.tenant_id
        )
    }
}

/// A running fake tenant; stops when dropped.
pub struct FakeEntra {
    base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEntra {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a fake tenant on a fresh loopback port (inside a tokio runtime).
pub async fn start(opts: FakeEntraOptions) -> FakeEntra {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shared = Arc::new(Shared {
        opts,
        base: base.clone(),
        tenant: Mutex::new(Tenant::default()),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fake Entra");
    });
    FakeEntra { base, shared, task }
}

impl FakeEntra {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base.clone()
    }
    /// `[entra] authority_url` for this fake.
    pub fn authority_url(&self) -> String {
        format!("{}/authority", self.base)
    }
    /// `[entra] graph_url` for this fake.
    pub fn graph_url(&self) -> String {
        self.shared.graph_url()
    }
    /// The token endpoint, as a client assertion's `aud` must name it.
    pub fn token_url(&self) -> String {
        self.shared.token_url()
    }
    pub fn options(&self) -> &FakeEntraOptions {
        &self.shared.opts
    }

    /// An `[entra]` section for this tenant with client-secret auth (upn_template
    /// `{user}@student.odisee.be`, 5 s timeouts, fast retries).
    pub fn entra_config(&self) -> keygate::config::EntraConfig {
        let o = &self.shared.opts;
        keygate::config::EntraConfig {
            tenant_id: o.tenant_id.clone(),
            client_id: o.client_id.clone(),
            client_secret: keygate::config::Secret::new(
                o.client_secret.clone().unwrap_or_default(),
            ),
            client_certificate: None,
            upn_template: "{user}@student.odisee.be".into(),
            authority_url: self.authority_url(),
            graph_url: self.graph_url(),
            request_timeout_ms: 5_000,
            retry_base_ms: 10,
            ..Default::default()
        }
    }

    /// The same section as TOML (for `TestServer::start_with`).
    pub fn entra_toml(&self) -> String {
        let c = self.entra_config();
        format!(
            "[entra]\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n\
             upn_template = \"{}\"\nauthority_url = \"{}\"\ngraph_url = \"{}\"\n\
             request_timeout_ms = {}\nretry_base_ms = {}\n",
            c.tenant_id,
            c.client_id,
            c.client_secret.expose(),
            c.upn_template,
            c.authority_url,
            c.graph_url,
            c.request_timeout_ms,
            c.retry_base_ms
        )
    }

    /// Create a user; returns its object id.
    pub fn add_user(&self, upn: &str, display_name: &str) -> String {
        let oid = uuid::Uuid::new_v4().to_string();
        let mut webauthn_id = vec![0u8; 48];
        rand::thread_rng().fill_bytes(&mut webauthn_id);
        self.shared.lock().users.push(User {
            oid: oid.clone(),
            upn: upn.into(),
            display_name: display_name.into(),
            webauthn_id,
            fido2: Vec::new(),
            phones: Vec::new(),
            taps: Vec::new(),
        });
        oid
    }

    /// Seed a passkey registered elsewhere (random credential id); returns its method id.
    pub fn add_fido2_method(&self, upn: &str, display_name: &str) -> String {
        let mut cred = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut cred);
        let id = uuid::Uuid::new_v4().to_string();
        let created = graph::rfc3339(self.shared.now_ms());
        let mut t = self.shared.lock();
        let user = t.user_mut(upn).expect("known user");
        user.fido2.push(StoredFido2 {
            id: id.clone(),
            credential_id: cred,
            display_name: display_name.into(),
            aaguid: "2fc0579f-8113-47ea-b116-bb5a8db9202a".into(),
            model: Some("YubiKey 5 Series with NFC".into()),
            attestation_level: "attested".into(),
            attestation_certificates: Vec::new(),
            created,
        });
        id
    }

    /// Seed a phone method exactly as given (`+32 475345678`).
    pub fn add_phone(&self, upn: &str, number: &str, phone_type: &str) -> String {
        let id = graph::phone_method_id(phone_type).to_string();
        let mut t = self.shared.lock();
        let user = t.user_mut(upn).expect("known user");
        user.phones.push(StoredPhone {
            id: id.clone(),
            number: number.into(),
            phone_type: phone_type.into(),
        });
        id
    }

    /// The user's passkeys as Graph lists them.
    pub fn fido2_methods(&self, upn: &str) -> Vec<Value> {
        let mut t = self.shared.lock();
        let user = t.user_mut(upn).expect("known user");
        user.fido2.iter().map(graph::fido2_json).collect()
    }

    /// Credential ids (raw) of the user's passkeys.
    pub fn credential_ids(&self, upn: &str) -> Vec<Vec<u8>> {
        let mut t = self.shared.lock();
        let user = t.user_mut(upn).expect("known user");
        user.fido2.iter().map(|m| m.credential_id.clone()).collect()
    }

    pub fn phone_methods(&self, upn: &str) -> Vec<Value> {
        let mut t = self.shared.lock();
        let user = t.user_mut(upn).expect("known user");
        user.phones.iter().map(graph::phone_json).collect()
    }

    /// TAPs issued to the user (as answered, pass included).
    pub fn temporary_access_passes(&self, upn: &str) -> Vec<Value> {
        let mut t = self.shared.lock();
        t.user_mut(upn).expect("known user").taps.clone()
    }

    /// The body of the last `POST fido2Methods` (verified or not).
    pub fn last_registration(&self) -> Option<Value> {
        self.shared.lock().last_registration.clone()
    }

    /// Answer the next request on `route` with `status` and `body` (and `Retry-After`), before
    /// any other processing. Queued: call twice for two faults.
    pub fn fail_next(&self, route: Route, status: u16, body: Value, retry_after: Option<u64>) {
        self.shared
            .lock()
            .faults
            .entry(route)
            .or_default()
            .push_back(Fault {
                status,
                body,
                retry_after,
            });
    }

    /// Hold every answer on `route` this long (zero: no delay).
    pub fn delay(&self, route: Route, d: Duration) {
        self.shared.lock().delays.insert(route, d);
    }

    /// Requests received on `route` so far.
    /// The tenant's own time answering requests so far (delays included).
    pub fn time_spent(&self) -> Duration {
        self.shared.lock().busy
    }

    pub fn count(&self, route: Route) -> usize {
        self.shared.lock().counts.get(&route).copied().unwrap_or(0)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    pub fn requests_for(&self, route: Route) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.route == route)
            .collect()
    }

    /// Invalidate every issued access token (Graph answers 401 until a new one is fetched).
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// The challenges issued and not yet used, e.g. to check one was consumed.
    pub fn open_challenges(&self) -> usize {
        self.shared
            .lock()
            .challenges
            .values()
            .filter(|c| !c.used)
            .count()
    }
}

/// A Graph error body (`{"error":{"code","message","innerError":{...}}}`).
pub fn graph_error(code: &str, message: &str) -> Value {
    json!({"error": {
        "code": code,
        "message": message,
        "innerError": {
            "date": "2026-01-01T00:00:00",
            "request-id": uuid::Uuid::new_v4().to_string(),
            "client-request-id": uuid::Uuid::new_v4().to_string()
        }
    }})
}

/// base64url without padding, as Graph writes binary values.
pub fn b64url(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

pub(crate) fn json_response(status: u16, body: &Value, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(body.clone())).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("request-id", v.clone());
        h.insert("client-request-id", v);
    }
    if let Some(s) = retry_after {
        h.insert("retry-after", HeaderValue::from(s));
    }
    resp
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route_of(method: &Method, segs: &[String]) -> Route {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method.as_str(), s.as_slice()) {
        ("POST", ["authority", _, "oauth2", "v2.0", "token"]) => Route::Token,
        (
            "GET",
            ["graph", "v1.0", "users", _, "authentication", "fido2Methods", "creationOptions"],
        ) => Route::CreationOptions,
        ("POST", ["graph", "v1.0", "users", _, "authentication", "fido2Methods"]) => {
            Route::RegisterFido2
        }
        ("GET", ["graph", "v1.0", "users", _, "authentication", "fido2Methods"]) => {
            Route::ListFido2
        }
        ("DELETE", ["graph", "v1.0", "users", _, "authentication", "fido2Methods", _]) => {
            Route::DeleteFido2
        }
        ("POST", ["graph", "v1.0", "users", _, "authentication", "phoneMethods"]) => {
            Route::AddPhone
        }
        ("GET", ["graph", "v1.0", "users", _, "authentication", "phoneMethods"]) => {
            Route::ListPhones
        }
        ("POST", ["graph", "v1.0", "users", _, "authentication", "temporaryAccessPassMethods"]) => {
            Route::CreateTap
        }
        _ => Route::Other,
    }
}

/// Every request, timed: the tenant's own time (delays included) is what benches report
/// beside keygate's.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let response = answer(&shared, method, uri, headers, body).await;
    shared.lock().busy += started.elapsed();
    response
}

async fn answer(
    shared: &Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let segs: Vec<String> = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let route = route_of(&method, &segs);
    let (fault, delay) = {
        let mut t = shared.lock();
        t.received.push(Received {
            route,
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        *t.counts.entry(route).or_default() += 1;
        let fault = t.faults.get_mut(&route).and_then(VecDeque::pop_front);
        (fault, t.delays.get(&route).copied().unwrap_or_default())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(f) = fault {
        return json_response(f.status, &f.body, f.retry_after);
    }
    if route == Route::Token {
        return token::handle(shared, &segs[1], &headers, &body);
    }
    if route == Route::Other {
        let (status, code) = if segs.first().map(String::as_str) == Some("graph") {
            (405, "methodNotAllowed")
        } else {
            (404, "notFound")
        };
        return json_response(
            status,
            &graph_error(code, "The method is not supported for this URL."),
            None,
        );
    }
    if let Some(refusal) = token::refuse_bearer(shared, &headers) {
        return refusal;
    }
    let query = uri.query().unwrap_or_default().to_string();
    graph::handle(shared, route, &segs, &query, &body)
}
