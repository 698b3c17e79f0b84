//! The listener's limits over real sockets (the hardening issue, hole 1): a cap on open
//! connections that still answers a fresh client, a timeout for request heads and idle
//! keep-alive connections, one for request bodies that never arrive, and capped event streams.

mod common;

use std::time::Duration;

use common::{code, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: &str =
    "[http]\nmax_connections = 4\nheader_timeout_secs = 1\nbody_timeout_secs = 1\n\
                      max_event_streams = 3\nmax_event_streams_per_ceremony = 2\n\
                      [relying_party]\nuser_verification = \"preferred\"\n";

/// Read until the server closes (or 10 s pass: a generous bound, not a measurement).
async fn read_to_close(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_full_house_still_answers_and_idle_sockets_are_closed() {
    let s = TestServer::start_with(LIMITS).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(s.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fifth client is answered at once: 503 in keygate's error shape, then closed.
    let mut fifth = TcpStream::connect(s.addr).await.unwrap();
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut fifth)
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(code(&body), "too_many_connections");
    // Sockets that never send a request head are closed by the server.
    for sock in &mut idle {
        assert!(read_to_close(sock).await.is_some(), "idle socket closed");
    }
    drop(idle);
    let (st, _) = s.get("/healthz").await;
    assert!(st.is_success());
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_when_idle() {
    let s = TestServer::start_with(LIMITS).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let all = read_to_close(&mut c).await.expect("closed after idling");
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_does_not_wait_forever() {
    let s = TestServer::start_with(LIMITS).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v1/assertions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"pin\":",
        s.admin
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut c).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(answer.contains("\"invalid_request\""), "{answer}");
}

#[tokio::test]
async fn event_streams_are_capped_per_ceremony_and_in_all() {
    let s = TestServer::start_with(LIMITS).await;
    let first = s.sim_key().await;
    s.configure_key(&first, json!({ "touch": "never" })).await;
    let (_, second) = s.post("/v1/sim/keys", json!({ "touch": "never" })).await;
    let second = second["key"]["id"].as_str().unwrap().to_string();
    let mut ceremonies = Vec::new();
    for (i, device) in [first, second].iter().enumerate() {
        let (st, v) = s
            .post(
                "/v1/enrollments",
                json!({ "user": format!("r{i}"), "display_name": "x", "device": device, "timeout_ms": 60000 }),
            )
            .await;
        assert!(st.is_success(), "{st} {v}");
        ceremonies.push(v["id"].as_str().unwrap().to_string());
    }
    let open = |cid: String| {
        let client = s.client.clone();
        let url = format!("{}/v1/enrollments/{cid}/events", s.base);
        let token = s.admin.clone();
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let a1 = open(ceremonies[0].clone()).await;
    let a2 = open(ceremonies[0].clone()).await;
    assert!(a1.status().is_success() && a2.status().is_success());
    let a3 = open(ceremonies[0].clone()).await;
    assert_eq!(a3.status(), 429);
    let v: Value = a3.json().await.unwrap();
    assert_eq!(code(&v), "too_many_streams");
    let b1 = open(ceremonies[1].clone()).await;
    assert!(b1.status().is_success());
    let b2 = open(ceremonies[1].clone()).await;
    assert_eq!(b2.status(), 429, "three streams in all");
    // A stream that ends frees its slot.
    drop(a1);
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = open(ceremonies[1].clone()).await;
        if r.status().is_success() {
            freed = true;
            break;
        }
    }
    assert!(freed, "the slot of a closed stream comes back");
}
