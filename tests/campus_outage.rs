//! The campus store taken away under a running kiosk (a TCP proxy the test cuts): requests
//! answer a bounded `503 store_unavailable`, `/healthz` says so, a ceremony on the local key
//! ends cleanly, and the kiosk comes back by itself with the database.

mod common;
#[path = "campus/kiosk.rs"]
mod kiosk;
#[path = "campus/proxy.rs"]
mod proxy;

use std::time::{Duration, Instant};

use keygate::harness::pg;
use kiosk::{call, kiosk, token, urlencode};
use proxy::Proxy;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// `GET /healthz` at the kiosk `base`.
async fn healthz(base: &str) -> Value {
    reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET /v1/enrollments/{id}` at the kiosk `base`.
async fn enrollment_of(base: &str, t: &str, id: &str) -> (StatusCode, Value) {
    call(base, t, Method::GET, &format!("/v1/enrollments/{id}"), None).await
}

/// A kiosk whose campus store is reached through a proxy the test can cut, with an admin
/// token.
struct Behind {
    proxy: Proxy,
    kiosk: keygate::harness::Spawned,
    admin: String,
    /// The campus database's name on the test cluster.
    db: String,
    _dir: tempfile::TempDir,
}

impl Behind {
    async fn start() -> Behind {
        let cluster = pg::cluster();
        let db = cluster.new_database();
        let proxy = Proxy::start(cluster.port).await;
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            proxy.port
        );
        let dir = tempfile::tempdir().unwrap();
        let kiosk = kiosk(dir.path(), &url, "http://127.0.0.1:1/sms");
        let admin = token(dir.path(), &url, "admin");
        Behind {
            proxy,
            kiosk,
            admin,
            db,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_costs_a_bounded_503_and_comes_back() {
    let Behind {
        proxy,
        kiosk: k,
        admin: t,
        ..
    } = Behind::start().await;
    let (st, _) = call(&k.base, &t, Method::GET, "/v1/users", None).await;
    assert_eq!(st, StatusCode::OK);

    proxy.cut();
    // The proxy drops the connections it carried within 50 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (st, v) = call(&k.base, &t, Method::GET, "/v1/users", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the store timeout, not a hang"
    );
    let health = healthz(&k.base).await;
    assert_eq!(health["store"], "unavailable", "{health}");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, _) = call(&k.base, &t, Method::GET, "/v1/users", None).await;
        if st == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "keygate did not recover: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = healthz(&k.base).await;
    assert_eq!(health["store"], "ok", "{health}");
}

/// A ceremony waiting for the touch when the database goes: the key does its part, the
/// ceremony ends `failed` (`store_unavailable`) without hanging and without storing half of
/// it, its end is recorded once the database is back (not left "waiting" for another kiosk or
/// the service desk to read), and the same enrollment then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceremony_live_on_the_local_key_fails_cleanly_when_the_database_goes() {
    let Behind {
        proxy,
        kiosk: k,
        admin: t,
        db,
        ..
    } = Behind::start().await;
    let cluster = pg::cluster();
    let (_, keys) = call(&k.base, &t, Method::GET, "/v1/sim/keys", None).await;
    let key = keys["keys"][0]["id"].as_str().unwrap().to_string();
    let sim = format!("/v1/sim/keys/{}", urlencode(&key));
    // The student takes two seconds to touch the key.
    let (st, v) = call(
        &k.base,
        &t,
        Method::PATCH,
        &sim,
        Some(json!({ "pin": "1234", "touch": { "auto_after_ms": 2000 } })),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let enrollment = json!({ "user": "r0200001", "display_name": "Bo", "pin": "1234" });
    let (st, started) = call(
        &k.base,
        &t,
        Method::POST,
        "/v1/enrollments",
        Some(enrollment.clone()),
    )
    .await;
    assert!(st.is_success(), "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = enrollment_of(&k.base, &t, &id).await;
        if v["state"] == "waiting_touch" {
            break;
        }
        assert!(Instant::now() < deadline, "never waited for the touch: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    proxy.cut();
    // The touch comes, the key makes the credential, the store cannot take it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (st, v) = call(&k.base, &t, Method::GET, "/v1/users", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "still cut: {v}");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, v) = enrollment_of(&k.base, &t, &id).await;
        if st == StatusCode::OK {
            assert_eq!(v["state"], "failed", "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keygate did not recover: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The ceremony's end is recorded in the campus store once it is back: a final state, not
    // one left "waiting" for another kiosk or the service desk to read.
    let campus = cluster.connect(&db);
    loop {
        let row: (String, Option<String>) = campus
            .query_row(
                "SELECT state, error_code FROM ceremonies WHERE id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if row.0 == "failed" {
            assert_eq!(row.1.as_deref(), Some("store_unavailable"), "{row:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ceremony's end was never recorded: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, creds) = call(
        &k.base,
        &t,
        Method::GET,
        "/v1/users/r0200001/credentials",
        None,
    )
    .await;
    assert_eq!(
        creds["credentials"].as_array().map_or(0, Vec::len),
        0,
        "nothing half-stored: {creds}"
    );
    let (st, v) = call(
        &k.base,
        &t,
        Method::PATCH,
        &sim,
        Some(json!({ "touch": { "auto_after_ms": 100 } })),
    )
    .await;
    assert!(st.is_success(), "{v}");
    let (st, v) = call(
        &k.base,
        &t,
        Method::POST,
        "/v1/enrollments?wait=true",
        Some(enrollment),
    )
    .await;
    assert!(st.is_success() && v["state"] == "succeeded", "{st} {v}");
}
