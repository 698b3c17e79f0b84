//! The key inventory through the HTTP API with simulated keys: two keys enrolled for two users,
//! listed as JSON pages and as CSV, filtered; one marked lost, after which the key's credential
//! no longer verifies.

mod common;

use common::{code, enc, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PIN: &str = "123456";

/// A nickname a spreadsheet would run as a formula, with a comma and quotes to quote.
const FORMULA_NICKNAME: &str = "=HYPERLINK(\"http://x\", \"y\")";

struct Fleet {
    /// (user, key id, device id) of the first and the second key.
    first: (String, String, String),
    second: (String, String, String),
}

async fn two_keys_two_users(s: &TestServer) -> Fleet {
    let key1 = s.sim_key().await;
    s.set_pin(PIN).await;
    let e = s
        .enroll(
            json!({ "user": "r0200001", "display_name": "An Peeters", "pin": PIN,
            "discoverable": true, "nickname": FORMULA_NICKNAME, "device": key1 }),
        )
        .await;
    assert_eq!(e["state"], "succeeded", "{e}");
    let id1 = e["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, k) = s.post("/v1/sim/keys", json!({ "pin": PIN })).await;
    assert_eq!(st, StatusCode::CREATED, "{k}");
    let key2 = k["key"]["id"].as_str().unwrap().to_string();
    let e = s
        .enroll(
            json!({ "user": "r0200002", "display_name": "Bo Claes", "pin": PIN, "device": key2 }),
        )
        .await;
    assert_eq!(e["state"], "succeeded", "{e}");
    let id2 = e["result"]["credential"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    Fleet {
        first: ("r0200001".into(), id1, key1),
        second: ("r0200002".into(), id2, key2),
    }
}

fn find<'a>(keys: &'a Value, id: &str) -> &'a Value {
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {keys}"))
}

fn ids(page: &Value) -> Vec<String> {
    page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

/// A GET with the admin token: status, headers and body text.
async fn raw_get(s: &TestServer, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let r = s
        .client
        .get(format!("{}{path}", s.base))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

fn csv_records(text: &str) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let records = reader.records().map(|r| r.unwrap()).collect();
    (header, records)
}

#[tokio::test]
async fn keys_are_listed_paged_filtered_and_exported() {
    let s = TestServer::start().await;
    let f = two_keys_two_users(&s).await;
    let (user1, id1, dev1) = &f.first;
    let (user2, id2, dev2) = &f.second;
    let a = s
        .verify(json!({ "user": user1, "pin": PIN, "device": dev1 }))
        .await;
    assert_eq!(a["state"], "succeeded", "{a}");

    let (st, page) = s.get("/v1/keys").await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(page["keys"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page["next"], Value::Null);
    let (_, sim) = s.get("/v1/sim/keys").await;
    let aaguid = sim["keys"][0]["aaguid"].as_str().unwrap().to_string();
    let k1 = find(&page, id1);
    assert_eq!(k1["owners"], json!([user1]), "{k1}");
    assert_eq!(k1["aaguid"], aaguid.as_str());
    assert_eq!(k1["model"], sim["keys"][0]["model"]);
    assert_eq!(k1["device"], dev1.as_str());
    assert_eq!(k1["firmware"], "65538", "the simulated key's GetInfo 0x0E");
    assert_eq!(k1["state"], "active");
    assert_eq!(k1["nickname"], FORMULA_NICKNAME);
    assert!(k1["last_used"].is_string(), "verified once: {k1}");
    assert_eq!(k1["last_seen"], k1["last_used"]);
    let k2 = find(&page, id2);
    assert_eq!(k2["owners"], json!([user2]));
    assert_eq!(k2["device"], dev2.as_str());
    assert_eq!(k2["last_used"], Value::Null, "never verified: {k2}");
    assert_eq!(k2["last_seen"], k2["first_seen"]);
    assert!(k2["first_seen"].as_str().unwrap() >= k1["first_seen"].as_str().unwrap());

    // One key per page, following `next`: the same keys in the same order.
    let (_, p1) = s.get("/v1/keys?limit=1").await;
    let next = p1["next"].as_str().expect("a second page").to_string();
    assert_eq!(next, ids(&p1)[0]);
    let (_, p2) = s.get(&format!("/v1/keys?limit=1&after={next}")).await;
    assert_eq!(p2["next"], Value::Null, "{p2}");
    assert_eq!([ids(&p1), ids(&p2)].concat(), ids(&page));

    // Filters.
    let (_, v) = s.get("/v1/keys?state=active").await;
    assert_eq!(ids(&v).len(), 2);
    let (_, v) = s.get("/v1/keys?state=lost").await;
    assert!(ids(&v).is_empty(), "{v}");
    let (_, v) = s
        .get(&format!("/v1/keys?aaguid={}", aaguid.to_uppercase()))
        .await;
    assert_eq!(ids(&v).len(), 2, "{v}");
    let (_, v) = s
        .get("/v1/keys?aaguid=2fc0579f-8113-47ea-b116-bb5a8db9202a")
        .await;
    assert!(ids(&v).is_empty(), "{v}");

    // CSV: an attachment with a header row, one record per key, formulas defused.
    let (st, headers, text) = raw_get(&s, "/v1/keys?format=csv").await;
    assert_eq!(st, StatusCode::OK, "{text}");
    assert!(headers[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(headers[reqwest::header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert!(text.contains("\r\n"), "RFC 4180 line ends");
    let (header, records) = csv_records(&text);
    assert_eq!(header[0], "id");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(records.len(), 2, "{text}");
    let row1 = records
        .iter()
        .find(|r| r[col("id")].trim_start_matches('\'') == id1.as_str())
        .expect("the first key's row");
    assert_eq!(&row1[col("nickname")], format!("'{FORMULA_NICKNAME}"));
    assert_eq!(&row1[col("owners")], user1.as_str());
    assert_eq!(&row1[col("state")], "active");
    assert_eq!(&row1[col("firmware")], "65538");
    assert_eq!(&row1[col("last_used")], k1["last_used"].as_str().unwrap());
    for r in &records {
        for cell in r.iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@']),
                "a formula cell: {cell:?}"
            );
        }
    }
    // One page of CSV links the next.
    let (_, headers, text) = raw_get(&s, "/v1/keys?format=csv&limit=1&state=active").await;
    assert_eq!(csv_records(&text).1.len(), 1);
    let link = headers[reqwest::header::LINK].to_str().unwrap().to_string();
    let target = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .map(|(t, rest)| {
            assert_eq!(rest, "; rel=\"next\"");
            t.to_string()
        })
        .unwrap();
    assert!(target.contains("state=active"), "{target}");
    let (st, headers, text) = raw_get(&s, &target).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(csv_records(&text).1.len(), 1);
    assert!(headers.get(reqwest::header::LINK).is_none());
}

#[tokio::test]
async fn a_lost_key_is_revoked_audited_once_and_refused() {
    let s = TestServer::start().await;
    let f = two_keys_two_users(&s).await;
    let (user1, id1, dev1) = &f.first;
    let (_, id2, _) = &f.second;

    let (st, v) = s
        .patch(&format!("/v1/keys/{id1}"), json!({ "state": "lost" }))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["key"]["state"], "lost", "{v}");
    assert_eq!(v["key"]["state_reason"], "lost");
    // Idempotent: the same answer, no second revocation.
    let (st, again) = s
        .patch(&format!("/v1/keys/{id1}"), json!({ "state": "lost" }))
        .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again, v);
    let (_, audit) = s.get(&format!("/v1/audit?user={user1}")).await;
    let revoked: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "credential.revoked" && e["credential_id"] == id1.as_str())
        .collect();
    assert_eq!(revoked.len(), 1, "{audit}");
    assert_eq!(revoked[0]["detail"]["reason"], "lost");
    assert_eq!(revoked[0]["detail"]["previous_state"], "active");
    assert!(revoked[0]["actor"].as_str().unwrap().starts_with("token:"));

    // The credential: revoked, reason lost; the other key untouched.
    let (_, c) = s.get(&format!("/v1/users/{user1}/credentials/{id1}")).await;
    assert_eq!(c["credential"]["state"], "revoked", "{c}");
    assert_eq!(c["credential"]["state_reason"], "lost");
    let (_, lost) = s.get("/v1/keys?state=lost").await;
    assert_eq!(ids(&lost), vec![id1.clone()]);
    let (_, active) = s.get("/v1/keys?state=active").await;
    assert_eq!(ids(&active), vec![id2.clone()]);

    // The key still holds the credential (it is discoverable): keygate refuses it.
    let (st, a) = s
        .post(
            "/v1/assertions?wait=true",
            json!({ "pin": PIN, "device": dev1 }),
        )
        .await;
    assert!(st.is_success(), "{st} {a}");
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(a["error"]["code"], "unknown_credential", "{a}");
    // Named, the user has no usable key left.
    let (st, a) = s
        .post(
            "/v1/assertions?wait=true",
            json!({ "user": user1, "pin": PIN, "device": dev1 }),
        )
        .await;
    assert_ne!(a["state"], "succeeded", "{st} {a}");
}

#[tokio::test]
async fn only_lost_can_be_set_and_bad_requests_are_refused() {
    let s = TestServer::start().await;
    let f = two_keys_two_users(&s).await;
    let id = &f.first.1;
    for state in ["active", "revoked", "reset", "quarantined"] {
        let (st, v) = s
            .patch(&format!("/v1/keys/{id}"), json!({ "state": state }))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{state}: {v}");
        assert_eq!(code(&v), "key_state_not_settable", "{v}");
        assert_eq!(v["error"]["allowed"], json!(["lost"]));
    }
    for body in [
        json!({ "state": "stolen" }),
        json!({}),
        json!({ "state": "lost", "why": "x" }),
    ] {
        let (st, v) = s.patch(&format!("/v1/keys/{id}"), body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(code(&v), "invalid_request", "{v}");
    }
    let (_, v) = s.get("/v1/keys?state=active").await;
    assert_eq!(ids(&v).len(), 2, "nothing changed: {v}");
    // Unknown and malformed key ids.
    let (st, v) = s
        .patch(
            "/v1/keys/AAAAAAAAAAAAAAAAAAAAAA",
            json!({ "state": "lost" }),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(code(&v), "not_found");
    let (st, v) = s.patch("/v1/keys/A", json!({ "state": "lost" })).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    for query in [
        "limit=0",
        "limit=1001",
        "state=gone",
        "format=xml",
        "aaguid=not-a-uuid",
        "aaguid=2fc0579f811347eab116bb5a8db9202a",
        "after=A",
        "after=AA%3D%3D",
        "colour=red",
    ] {
        let (st, v) = s.get(&format!("/v1/keys?{query}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(code(&v), "invalid_request", "{query}: {v}");
    }
    let (st, v) = s.get("/v1/keys?after=AAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn the_inventory_needs_an_admin() {
    let s = TestServer::start().await;
    let f = two_keys_two_users(&s).await;
    let path = format!("/v1/keys/{}", enc(&f.first.1));
    let kiosk = s.kiosk.clone();
    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(kiosk.as_str()), StatusCode::FORBIDDEN),
    ] {
        let (st, v) = s.req(Method::GET, "/v1/keys", token, None).await;
        assert_eq!(st, status, "{v}");
        let (st, v) = s.req(Method::GET, "/v1/keys?format=csv", token, None).await;
        assert_eq!(st, status, "{v}");
        let (st, v) = s
            .req(
                Method::PATCH,
                &path,
                token,
                Some(json!({ "state": "lost" })),
            )
            .await;
        assert_eq!(st, status, "{v}");
        assert!(code(&v) == "unauthorized" || code(&v) == "forbidden", "{v}");
    }
    let (_, v) = s.get("/v1/keys?state=active").await;
    assert_eq!(ids(&v).len(), 2, "nothing was marked lost: {v}");
}

/// The whole-inventory CSV is streamed a chunk at a time: more keys than one chunk all come
/// out, each once, in the JSON listing's order.
#[tokio::test]
async fn the_csv_export_holds_every_key() {
    let s = TestServer::start().await;
    let store = s.state.store.clone();
    let total = 1203usize;
    let mut units = Vec::new();
    for i in 0..total {
        let store = store.clone();
        units.push(async move {
            let user = format!("u{i:05}");
            let handle = (i as u128).to_be_bytes();
            let u = store.upsert_user(&user, &user, &handle).await.unwrap();
            let now = store.now();
            let ceremony = format!("cer{i}");
            store
                .insert_ceremony(
                    &keygate::store::CeremonyRecord {
                        id: ceremony.clone(),
                        kind: "enrollment".into(),
                        user: Some(user.clone()),
                        state: "pending".into(),
                        error_code: None,
                        created_at: now,
                        updated_at: now,
                        expires_at: now,
                        created_by: None,
                    },
                    &keygate::store::NewAudit::new("ceremony.started", "test"),
                )
                .await
                .unwrap();
            let cred = keygate::store::CredentialRecord {
                id: format!("cred-{i}").into_bytes(),
                user: user.clone(),
                rp_credential: "{}".into(),
                public_key_cose: vec![1],
                counter: 0,
                aaguid: (i % 3 == 0).then(uuid::Uuid::new_v4),
                attestation_format: "none".into(),
                attested: false,
                discoverable: false,
                user_verified: true,
                nickname: None,
                model: None,
                created_at: now,
                last_used_at: None,
                state: keygate::store::CredentialState::Active,
                state_reason: None,
            };
            store
                .insert_credential(
                    &u,
                    &cred,
                    &ceremony,
                    &keygate::store::NewAudit::new("credential.enrolled", "test"),
                )
                .await
                .unwrap();
        });
    }
    futures::future::join_all(units).await;

    let (st, _, text) = raw_get(&s, "/v1/keys?format=csv").await;
    assert_eq!(st, StatusCode::OK);
    let (header, records) = csv_records(&text);
    let id_col = header.iter().position(|h| h == "id").unwrap();
    let exported: Vec<String> = records
        .iter()
        .map(|r| r[id_col].trim_start_matches('\'').to_string())
        .collect();
    assert_eq!(exported.len(), total);
    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let (st, page) = s.get(&format!("/v1/keys?limit=1000{after}")).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        listed.extend(ids(&page));
        match page["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!(exported, listed);
    let unique: std::collections::BTreeSet<_> = exported.iter().collect();
    assert_eq!(unique.len(), total);
}
