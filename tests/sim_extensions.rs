//! The simulated keys' `extensions` option over the real HTTP API: plug a key that implements
//! none (an older CTAP 2.0 key), change the set with PATCH, see it in the key's status and in
//! what `/v1/devices` reports from the key's GetInfo, and refuse unknown extension names.

mod common;

use common::{code, enc, TestServer};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_extensions_option_shapes_what_the_key_reports() {
    let s = TestServer::start().await;
    let first = s.sim_key().await;
    let (_, keys) = s.get("/v1/sim/keys").await;
    assert_eq!(
        keys["keys"][0]["extensions"],
        json!(["credProtect", "hmac-secret"])
    );

    let (st, k) = s.post("/v1/sim/keys", json!({ "extensions": [] })).await;
    assert_eq!(st, StatusCode::CREATED, "{k}");
    assert_eq!(k["key"]["extensions"], json!([]));
    let old = k["key"]["id"].as_str().unwrap().to_string();

    let devices = || async {
        let (st, d) = s.get("/v1/devices").await;
        assert_eq!(st, StatusCode::OK, "{d}");
        d["devices"].as_array().unwrap().clone()
    };
    let find = |list: &[serde_json::Value], id: &str| {
        list.iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {list:?}"))
            .clone()
    };
    let list = devices().await;
    assert_eq!(
        find(&list, &first)["extensions"],
        json!(["credProtect", "hmac-secret"])
    );
    assert_eq!(
        find(&list, &first)["versions"],
        json!(["FIDO_2_0", "FIDO_2_1"])
    );
    assert_eq!(find(&list, &old)["extensions"], json!([]));
    assert_eq!(find(&list, &old)["versions"], json!(["FIDO_2_0"]));

    // Each name once, in GetInfo order, whatever order the request gave.
    let v = s
        .configure_key(
            &enc(&old),
            json!({ "extensions": ["hmac-secret", "hmac-secret"] }),
        )
        .await;
    assert_eq!(v["key"]["extensions"], json!(["hmac-secret"]));
    assert_eq!(
        find(&devices().await, &old)["extensions"],
        json!(["hmac-secret"])
    );

    let (st, e) = s
        .patch(
            &format!("/v1/sim/keys/{}", enc(&old)),
            json!({ "extensions": ["credBlob"] }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(code(&e), "invalid_request");
}

#[tokio::test]
async fn the_option_is_in_the_derived_openapi_document() {
    let s = TestServer::start().await;
    let (st, doc) = s.get("/openapi.json").await;
    assert_eq!(st, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["SimExtension"]["enum"],
        json!(["credProtect", "hmac-secret"]),
        "{}",
        schemas["SimExtension"]
    );
    for owner in ["SimKeyOptions", "SimKeyStatus"] {
        let property = schemas[owner]["properties"]["extensions"].to_string();
        assert!(
            property.contains("#/components/schemas/SimExtension"),
            "{owner}: {property}"
        );
    }
}
