//! The kiosk page's server side over real HTTP: strict headers on the page, the session
//! cookie's flags, the Origin rule for cookie-authenticated changes, the binding of a page
//! session to the handed-off (or trusted-header) student, the session's server-side expiry,
//! and the handoff's lifetime cap and single use.

mod common;

use common::kiosk::{exchange, handoff, now, page, page_session, session_code, sign_in, token_of};
use common::{code, TestServer};
use keygate::kiosk::MAX_HANDOFF_TTL_SECS;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn enrollment(user: &str) -> Value {
    json!({ "user": user, "display_name": "X", "pin": "1234" })
}

fn assert_forbidden(st: StatusCode, v: &Value, what: &str) {
    assert_eq!(st, StatusCode::FORBIDDEN, "{what}: {v}");
    assert_eq!(code(v), "forbidden", "{what}: {v}");
}

/// A page POST that the user binding must refuse; returns the error body.
async fn refused(s: &TestServer, cookie: &str, path: &str, body: Value, what: &str) -> Value {
    let (st, v) = page(s, cookie, Method::POST, path, Some(body)).await;
    assert_forbidden(st, &v, what);
    v
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_csp() {
    let s = TestServer::start().await;
    for path in [
        "/kiosk/",
        "/kiosk/texts.js",
        "/kiosk/app.js",
        "/kiosk/app.css",
    ] {
        let r = s
            .client
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp}");
        }
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn the_session_cookie_is_http_only_same_site_strict_and_single_use() {
    let s = TestServer::start().await;
    let code = session_code(&s).await;
    let r = exchange(&s, &code).await;
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()[LOCATION], "/kiosk/");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    assert!(attrs[0].starts_with("keygate_session=kg_"), "{set}");
    for a in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attrs.contains(&a), "{a} in {set}");
    }
    // The code works once.
    let again = exchange(&s, &code).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    assert!(again.headers().get(SET_COOKIE).is_none());

    let cookie = attrs[0];
    let (st, v) = page(&s, cookie, Method::GET, "/v1/kiosk/config", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = page(
        &s,
        "keygate_session=kg_x_y",
        Method::GET,
        "/v1/kiosk/config",
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    // A kiosk session is no admin.
    let (st, v) = page(&s, cookie, Method::GET, "/v1/users", None).await;
    assert_forbidden(st, &v, "admin route");
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_a_same_origin_origin() {
    let s = TestServer::start().await;
    let cookie = page_session(&s).await;
    let token = handoff(&s, "r0123456", now() + 300);
    let post = |origin: Option<&str>, sec_fetch_site: Option<&str>| {
        let mut r = s
            .client
            .post(format!("{}/v1/kiosk/handoff", s.base))
            .header(COOKIE, &cookie)
            .json(&json!({ "token": token }));
        if let Some(o) = origin {
            r = r.header(ORIGIN, o);
        }
        if let Some(f) = sec_fetch_site {
            r = r.header("sec-fetch-site", f);
        }
        r.send()
    };
    let r = post(None, None).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "forbidden", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("Origin"));

    let r = post(None, Some("cross-site")).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post(Some("http://evil.example"), None).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "origin_not_allowed", "{v}");

    // None of the refused attempts used the token up.
    let r = post(Some(&s.base), None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = s
        .client
        .delete(format!("{}/v1/kiosk/handoff", s.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "DELETE needs an Origin too"
    );
    // A bearer token needs no Origin.
    let (st, v) = s
        .req(
            Method::DELETE,
            "/v1/kiosk/handoff",
            Some(&s.kiosk.clone()),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
}

#[tokio::test]
async fn a_page_session_acts_only_for_the_handed_off_student() {
    let s = TestServer::start().await;
    s.set_pin("1234").await;
    let cookie = page_session(&s).await;
    let get = Method::GET;
    let post = Method::POST;

    // Nobody signed in: only user-less things.
    let (st, v) = page(&s, &cookie, get.clone(), "/v1/devices", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let v = refused(
        &s,
        &cookie,
        "/v1/enrollments",
        enrollment("r0123456"),
        "unbound enrollment",
    )
    .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no signed-in student"));
    refused(
        &s,
        &cookie,
        "/v1/assertions",
        json!({ "user": "r0123456" }),
        "unbound assertion for a user",
    )
    .await;
    refused(
        &s,
        &cookie,
        "/v1/users/r0123456/phones",
        json!({ "number": "0475 12 34 56" }),
        "unbound phone",
    )
    .await;
    refused(
        &s,
        &cookie,
        "/v1/sms/challenges",
        json!({ "user": "r0123456", "number": "+32475123456" }),
        "unbound SMS challenge",
    )
    .await;
    // "Test my key" names nobody (this key holds no credential yet, so it fails: not 403).
    let (st, v) = page(
        &s,
        &cookie,
        post.clone(),
        "/v1/assertions?wait=true",
        Some(json!({})),
    )
    .await;
    assert_ne!(st, StatusCode::FORBIDDEN, "{v}");
    assert_ne!(st, StatusCode::UNAUTHORIZED, "{v}");

    // Signed in as r0123456: that student only, however the user is spelled in the request.
    sign_in(&s, &cookie, "r0123456").await;
    let v = refused(
        &s,
        &cookie,
        "/v1/enrollments",
        enrollment("r0654321"),
        "enrollment for another user",
    )
    .await;
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("another student"));
    refused(
        &s,
        &cookie,
        "/v1/enrollments",
        json!(["r0654321", "X"]),
        "enrollment as a JSON array",
    )
    .await;
    refused(
        &s,
        &cookie,
        "/v1/assertions",
        json!({ "user": "r0654321" }),
        "assertion for another user",
    )
    .await;
    refused(
        &s,
        &cookie,
        "/v1/users/r0654%33%321/phones",
        json!({ "number": "0475 12 34 56" }),
        "percent-encoded other user",
    )
    .await;
    refused(
        &s,
        &cookie,
        "/v1/sms/challenges",
        json!({ "user": "r0654321", "number": "+32475123456" }),
        "SMS challenge for another user",
    )
    .await;

    let (st, v) = page(
        &s,
        &cookie,
        post.clone(),
        "/v1/enrollments?wait=true",
        Some(enrollment("r0123456")),
    )
    .await;
    assert!(st.is_success(), "{st} {v}");
    assert_eq!(v["state"], "succeeded", "{v}");
    let (st, v) = page(
        &s,
        &cookie,
        post.clone(),
        "/v1/users/r0123456/phones",
        Some(json!({ "number": "0475 12 34 56" })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // The binding belongs to the session, not to the cookie: the same token as a bearer.
    let bearer = token_of(&cookie).to_string();
    let (st, v) = s
        .req(
            post.clone(),
            "/v1/enrollments",
            Some(&bearer),
            Some(enrollment("r0654321")),
        )
        .await;
    assert_forbidden(st, &v, "session token as bearer");
    // Other kiosk tokens keep acting for anyone.
    let (st, v) = s
        .req(
            post.clone(),
            "/v1/enrollments?wait=true",
            Some(&s.kiosk.clone()),
            Some(enrollment("r0654321")),
        )
        .await;
    assert!(st.is_success(), "kiosk bearer: {st} {v}");

    // The next student: a new handoff rebinds.
    sign_in(&s, &cookie, "r0654321").await;
    refused(
        &s,
        &cookie,
        "/v1/users/r0123456/phones",
        json!({ "number": "0475 12 34 57" }),
        "previous student after a new handoff",
    )
    .await;

    // Signing out (the page's reset) unbinds.
    let (st, v) = page(&s, &cookie, Method::DELETE, "/v1/kiosk/handoff", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    refused(
        &s,
        &cookie,
        "/v1/users/r0654321/phones",
        json!({ "number": "0475 12 34 58" }),
        "after sign-out",
    )
    .await;

    // So does a handoff that fails.
    sign_in(&s, &cookie, "r0123456").await;
    let (st, v) = page(
        &s,
        &cookie,
        post.clone(),
        "/v1/kiosk/handoff",
        Some(json!({ "token": "garbage.x" })),
    )
    .await;
    assert_eq!(code(&v), "handoff_invalid", "{st} {v}");
    refused(
        &s,
        &cookie,
        "/v1/users/r0123456/phones",
        json!({ "number": "0475 12 34 59" }),
        "after a failed handoff",
    )
    .await;
}

#[tokio::test]
async fn the_trusted_header_binds_the_session_too() {
    let s = TestServer::start_with("[kiosk]\ntrusted_user_header = \"X-Remote-User\"\n").await;
    let cookie = page_session(&s).await;
    let whoami = |user: Option<&str>| {
        let mut r = s
            .client
            .get(format!("{}/v1/kiosk/whoami", s.base))
            .header(COOKIE, &cookie);
        if let Some(u) = user {
            r = r.header("x-remote-user", u);
        }
        r.send()
    };
    let r = whoami(Some("r0123456")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, v) = page(
        &s,
        &cookie,
        Method::POST,
        "/v1/sms/challenges",
        Some(json!({ "user": "r0654321", "number": "+32475123456" })),
    )
    .await;
    assert_forbidden(st, &v, "other user than the header's");
    let (st, v) = page(
        &s,
        &cookie,
        Method::POST,
        "/v1/users/r0123456/phones",
        Some(json!({ "number": "0475 12 34 56" })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // The proxy says nobody is signed in: the session acts for nobody.
    let r = whoami(None).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (st, v) = page(
        &s,
        &cookie,
        Method::POST,
        "/v1/users/r0123456/phones",
        Some(json!({ "number": "0475 12 34 57" })),
    )
    .await;
    assert_forbidden(st, &v, "after the header went away");
}

#[tokio::test]
async fn page_sessions_expire_server_side() {
    let s = TestServer::start().await;
    let cookie = page_session(&s).await;
    let (st, _) = page(&s, &cookie, Method::GET, "/v1/kiosk/config", None).await;
    assert_eq!(st, StatusCode::OK);

    let id = token_of(&cookie).split('_').nth(1).unwrap().to_string();
    let db = keygate::harness::raw_db(&s.data_dir);
    let exp: i64 = db
        .query_row(
            "SELECT expires_at FROM kiosk_sessions WHERE token_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        (exp - (now() + 12 * 3600)).abs() <= 5,
        "12 h from now: {exp}"
    );
    // Twelve hours later (the cookie's Max-Age would be gone too, but the token is refused
    // whoever presents it).
    db.execute(
        "UPDATE kiosk_sessions SET expires_at = ?2 WHERE token_id = ?1",
        [id.clone(), (now() - 1).to_string()],
    )
    .unwrap();
    let (st, v) = page(&s, &cookie, Method::GET, "/v1/kiosk/config", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let bearer = token_of(&cookie).to_string();
    let (st, v) = s.req(Method::GET, "/v1/devices", Some(&bearer), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    // Other tokens do not expire.
    let (st, _) = s
        .req(Method::GET, "/v1/devices", Some(&s.kiosk.clone()), None)
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn handoffs_are_capped_at_ten_minutes_and_used_once() {
    let s = TestServer::start().await;
    let cookie = page_session(&s).await;
    let try_handoff = |token: String| {
        let cookie = cookie.clone();
        let s = &s;
        async move {
            page(
                s,
                &cookie,
                Method::POST,
                "/v1/kiosk/handoff",
                Some(json!({ "token": token })),
            )
            .await
        }
    };

    let (st, v) = try_handoff(handoff(&s, "r0123456", now() + 3600)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(code(&v), "handoff_invalid", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("too long"));
    let (st, v) = try_handoff(handoff(&s, "r0123456", now() + MAX_HANDOFF_TTL_SECS + 60)).await;
    assert_eq!(code(&v), "handoff_invalid", "{st} {v}");
    let (st, v) = try_handoff(handoff(&s, "r0123456", now() - 1)).await;
    assert_eq!(code(&v), "handoff_invalid", "expired: {st} {v}");

    let token = handoff(&s, "r0123456", now() + MAX_HANDOFF_TTL_SECS - 30);
    let (st, v) = try_handoff(token.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // A replay is refused: on this session, on another one, and with a bearer token.
    let (st, v) = try_handoff(token.clone()).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(code(&v), "handoff_invalid", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already used"));
    let other = page_session(&s).await;
    let (_, v) = page(
        &s,
        &other,
        Method::POST,
        "/v1/kiosk/handoff",
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(code(&v), "handoff_invalid", "{v}");
    let (_, v) = s
        .req(
            Method::POST,
            "/v1/kiosk/handoff",
            Some(&s.kiosk.clone()),
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(code(&v), "handoff_invalid", "{v}");
    // The refused replay left the session acting for nobody.
    let (st, v) = page(
        &s,
        &cookie,
        Method::POST,
        "/v1/users/r0123456/phones",
        Some(json!({ "number": "0475 12 34 56" })),
    )
    .await;
    assert_forbidden(st, &v, "after a replay");
}

#[tokio::test]
async fn a_closed_account_is_told_so_at_the_handoff_and_the_session_acts_for_nobody() {
    let s = TestServer::start().await;
    let cookie = page_session(&s).await;
    sign_in(&s, &cookie, "r0777777").await;
    let (st, v) = page(
        &s,
        &cookie,
        Method::POST,
        "/v1/users/r0777777/phones",
        Some(json!({ "number": "0475 77 77 77" })),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "the student exists now: {v}");
    let (st, v) = s.post("/v1/users/r0777777/close", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // The student left: a new sign-in at the kiosk is answered with the closure.
    let token = handoff(&s, "r0777777", now() + 300);
    let (st, v) = page(
        &s,
        &cookie,
        Method::POST,
        "/v1/kiosk/handoff",
        Some(json!({ "token": token })),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(code(&v), "user_closed", "{v}");
    // ... and the session acts for nobody, not for the student it acted for before.
    let v = refused(
        &s,
        &cookie,
        "/v1/users/r0777777/phones",
        json!({ "number": "0475 77 77 78" }),
        "after a refused handoff",
    )
    .await;
    assert_eq!(code(&v), "forbidden");

    // Reopened by the service desk: the next handoff binds again.
    let (st, v) = s.delete("/v1/users/r0777777/close").await;
    assert!(st.is_success(), "{st} {v}");
    sign_in(&s, &cookie, "r0777777").await;
}
