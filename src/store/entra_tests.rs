//! Unit tests of the Entra aggregate: passkey records with their user row, ceremony and audit;
//! the counter rule of a verified assertion; deletion; phones' Entra sync state.

use super::*;

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn passkey(id: &[u8], user: &str, method: &str, counter: u32) -> EntraPasskeyRecord {
    EntraPasskeyRecord {
        credential_id: id.to_vec(),
        user: user.into(),
        upn: format!("{user}@student.odisee.be"),
        method_id: method.into(),
        rp_id: "login.microsoft.com".into(),
        entra_user_id: vec![7; 48],
        public_key_cose: vec![0xa5, 1, 2],
        counter,
        aaguid: Some(uuid::Uuid::from_bytes([3; 16])),
        model: Some("YubiKey 5 NFC".into()),
        attestation_level: Some("attested".into()),
        display_name: "YubiKey 5 NFC 2026-12-06".into(),
        cred_protect: Some(1),
        hmac_secret: true,
        user_verified: true,
        created_at: now(),
        created_by: Some("token:t".into()),
        last_used_at: None,
    }
}

fn user(name: &str, handle: u8) -> UserRecord {
    UserRecord {
        name: name.into(),
        display_name: name.to_uppercase(),
        user_handle: vec![handle; 16],
        created_at: now(),
    }
}

fn events(s: &Store) -> Vec<String> {
    s.list_audit(None, None, 100)
        .unwrap()
        .into_iter()
        .map(|a| a.event)
        .collect()
}

#[tokio::test]
async fn a_passkey_is_stored_with_its_user_and_audit_and_read_back() {
    let s = Store::open_in_memory().unwrap();
    assert!(s.entra_rp_ids().unwrap().is_empty());
    let rec = passkey(b"k1", "s1", "m1", 3);
    s.insert_entra_passkey(
        &user("s1", 1),
        &rec,
        "c1",
        &NewAudit::new("entra.passkey_registered", "t").user("s1"),
    )
    .await
    .unwrap();
    // The user row the enrollment created (as a local enrollment would).
    assert_eq!(s.get_user("s1").unwrap().unwrap().display_name, "S1");
    let back = s.get_entra_passkey(b"k1").unwrap().unwrap();
    assert_eq!(back.method_id, "m1");
    assert_eq!(back.aaguid, rec.aaguid);
    assert_eq!((back.cred_protect, back.hmac_secret), (Some(1), true));
    assert_eq!(s.list_entra_passkeys("s1").unwrap().len(), 1);
    assert!(s.list_entra_passkeys("s2").unwrap().is_empty());
    assert_eq!(
        s.entra_rp_ids().unwrap(),
        vec!["login.microsoft.com".to_string()]
    );
    assert_eq!(events(&s), vec!["entra.passkey_registered"]);
    // The same credential twice is a conflict, and writes nothing.
    let again = s
        .insert_entra_passkey(
            &user("s1", 1),
            &rec,
            "c2",
            &NewAudit::new("entra.passkey_registered", "t"),
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(events(&s).len(), 1);
}

#[tokio::test]
async fn an_assertion_moves_the_counter_up_only_and_a_stale_one_is_refused() {
    let s = Store::open_in_memory().unwrap();
    s.insert_entra_passkey(
        &user("s1", 1),
        &passkey(b"k1", "s1", "m1", 3),
        "c1",
        &NewAudit::new("e", "t"),
    )
    .await
    .unwrap();
    s.record_entra_assertion(
        b"k1",
        4,
        "c2",
        &NewAudit::new("entra.passkey_verified", "t"),
    )
    .await
    .unwrap();
    let r = s.get_entra_passkey(b"k1").unwrap().unwrap();
    assert_eq!(r.counter, 4);
    assert!(r.last_used_at.is_some());
    for stale in [4, 2] {
        let e = s
            .record_entra_assertion(
                b"k1",
                stale,
                "c3",
                &NewAudit::new("entra.passkey_verified", "t"),
            )
            .await;
        assert!(
            matches!(e, Err(StoreError::CounterNotAbove)),
            "{stale}: {e:?}"
        );
    }
    // A key that reports 0 keeps no counter: accepted, the stored one is not moved down.
    s.record_entra_assertion(
        b"k1",
        0,
        "c4",
        &NewAudit::new("entra.passkey_verified", "t"),
    )
    .await
    .unwrap();
    assert_eq!(s.get_entra_passkey(b"k1").unwrap().unwrap().counter, 4);
    let e = s
        .record_entra_assertion(b"nope", 9, "c5", &NewAudit::new("x", "t"))
        .await;
    assert!(matches!(e, Err(StoreError::NotFound)), "{e:?}");
    assert_eq!(
        events(&s)
            .iter()
            .filter(|e| *e == "entra.passkey_verified")
            .count(),
        2
    );
}

#[tokio::test]
async fn deleting_forgets_only_that_users_record_and_always_audits() {
    let s = Store::open_in_memory().unwrap();
    s.insert_entra_passkey(
        &user("s1", 1),
        &passkey(b"k1", "s1", "m1", 0),
        "c1",
        &NewAudit::new("e", "t"),
    )
    .await
    .unwrap();
    let audit =
        NewAudit::new("entra.passkey_deleted", "t").detail(serde_json::json!({"method_id": "m1"}));
    assert!(!s.delete_entra_passkey("s2", "m1", &audit).await.unwrap());
    assert!(s.get_entra_passkey(b"k1").unwrap().is_some());
    assert!(s.delete_entra_passkey("s1", "m1", &audit).await.unwrap());
    assert!(s.get_entra_passkey(b"k1").unwrap().is_none());
    let lines = s.list_audit(None, None, 10).unwrap();
    let removed: Vec<_> = lines
        .iter()
        .filter(|a| a.event == "entra.passkey_deleted")
        .map(|a| a.detail["local_record_removed"].clone())
        .collect();
    assert_eq!(
        removed,
        vec![serde_json::json!(true), serde_json::json!(false)]
    );
}

#[tokio::test]
async fn a_phones_entra_state_is_kept_and_shown() {
    let s = Store::open_in_memory().unwrap();
    s.upsert_user("s1", "S1", &[1; 16]).await.unwrap();
    let phone_id = "p1".to_string();
    let pid = phone_id.clone();
    s.atomic(move |tx| {
        exec(
            tx.0,
            "INSERT INTO phones (id, user_name, e164, verified, created_at) VALUES (?1, 's1', '+32475345678', 1, keygate_now())",
            super::db::params![pid],
        )?;
        tx.set_phone_entra_state(&pid, &PhoneEntraSync { state: "pending".into(), method_id: None, error: None })
    })
    .await
    .unwrap();
    assert_eq!(
        s.phones_pending_entra_sync().unwrap(),
        vec![("p1".into(), "s1".into(), "+32475345678".into())]
    );
    let synced = PhoneEntraSync {
        state: "synced".into(),
        method_id: Some("3179e48a".into()),
        error: None,
    };
    assert!(s
        .set_phone_entra_state(
            &phone_id,
            &synced,
            Some(&NewAudit::new("phone.entra_synced", "t"))
        )
        .await
        .unwrap());
    let phone = s.list_phones("s1").unwrap().remove(0);
    assert_eq!(phone.entra, Some(synced));
    let json = serde_json::to_value(&phone).unwrap();
    assert_eq!(json["entra"]["state"], "synced");
    assert!(s.phones_pending_entra_sync().unwrap().is_empty());
    // A phone removed meanwhile: nothing written, not even the audit line.
    assert!(!s
        .set_phone_entra_state(
            "gone",
            &PhoneEntraSync {
                state: "failed".into(),
                method_id: None,
                error: Some("entra_forbidden".into())
            },
            Some(&NewAudit::new("phone.entra_sync_failed", "t"))
        )
        .await
        .unwrap());
    assert_eq!(events(&s), vec!["phone.entra_synced"]);
    // A phone never synced shows no `entra` member.
    let json = serde_json::to_value(PhoneRecord {
        entra: None,
        ..phone
    })
    .unwrap();
    assert!(json.get("entra").is_none(), "{json}");
}
