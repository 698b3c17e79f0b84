//! Unit tests of the inventory: paging through both kinds in one order, the filters, marking
//! lost, and the page statements' plans.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use time::OffsetDateTime;
use uuid::Uuid;

use super::page::{page_sql, After, ENTRA, LOCAL};
use super::*;
use crate::store::{CredentialRecord, CredentialState, EntraPasskeyRecord, NewAudit, UserRecord};

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

async fn enroll(s: &Store, id: u8, user: &str, aaguid: Option<Uuid>, secs: i64) {
    let u = s.upsert_user(user, user, &[id; 16]).await.unwrap();
    s.insert_ceremony(
        &crate::store::CeremonyRecord {
            id: format!("c{id}"),
            kind: "enrollment".into(),
            user: Some(user.into()),
            state: "pending".into(),
            error_code: None,
            created_at: at(secs),
            updated_at: at(secs),
            expires_at: at(secs),
            created_by: None,
        },
        &NewAudit::new("ceremony.started", "test"),
    )
    .await
    .unwrap();
    let cred = CredentialRecord {
        id: vec![id],
        user: user.into(),
        rp_credential: "{}".into(),
        public_key_cose: vec![1],
        counter: 0,
        aaguid,
        attestation_format: "packed".into(),
        attested: true,
        discoverable: false,
        user_verified: true,
        nickname: None,
        model: Some("Model".into()),
        created_at: at(secs),
        last_used_at: None,
        state: CredentialState::Active,
        state_reason: None,
    };
    let audit = NewAudit::new("credential.enrolled", "test")
        .user(user)
        .credential(&URL_SAFE_NO_PAD.encode([id]))
        .detail(serde_json::json!({ "device": format!("sim:{id}"), "firmware": "65538" }));
    s.insert_credential(&u, &cred, &format!("c{id}"), &audit)
        .await
        .unwrap();
}

fn local(id: u8) -> KeyRef {
    KeyRef {
        kind: KeyKind::Local,
        credential_id: vec![id],
    }
}

fn entra(id: u8) -> KeyRef {
    KeyRef {
        kind: KeyKind::Entra,
        credential_id: vec![id],
    }
}

/// Store an Entra passkey `[id]` of `user` (AAGUID `aaguid`, enrolled at `secs`) with its
/// `entra.passkey_registered` line.
async fn enroll_entra(s: &Store, id: u8, user: &str, aaguid: Option<Uuid>, secs: i64) {
    let rec = EntraPasskeyRecord {
        credential_id: vec![id],
        user: user.into(),
        upn: format!("{user}@student.example"),
        method_id: format!("m{id}"),
        rp_id: "login.microsoft.com".into(),
        entra_user_id: vec![7; 16],
        public_key_cose: vec![1],
        counter: 0,
        aaguid,
        model: Some("Entra Model".into()),
        attestation_level: Some("attested".into()),
        display_name: format!("Key {id}"),
        cred_protect: Some(1),
        hmac_secret: true,
        user_verified: true,
        created_at: at(secs),
        created_by: None,
        last_used_at: None,
    };
    let u = UserRecord {
        name: user.into(),
        display_name: user.into(),
        // Apart from the local users' handles (`enroll`: `[id; 16]`).
        user_handle: vec![id | 0x80; 16],
        created_at: at(secs),
    };
    let audit = NewAudit::new("entra.passkey_registered", "test")
        .user(user)
        .credential(&URL_SAFE_NO_PAD.encode([id]))
        .detail(serde_json::json!({ "device": format!("sim:{id}") }));
    s.insert_entra_passkey(&u, &rec, &format!("e{id}"), &audit)
        .await
        .unwrap();
}

/// Every page of `filter` at `size`, walked by cursor: (kind, id) in listed order.
fn walk(s: &Store, filter: &KeyFilter, size: usize) -> Vec<(KeyKind, u8)> {
    let mut seen = Vec::new();
    let mut after: Option<KeyRef> = None;
    loop {
        let (page, more) = s.list_keys(filter, after.as_ref(), size).unwrap();
        assert!(page.len() <= size);
        seen.extend(page.iter().map(|k| (k.kind, k.id[0])));
        if !more {
            return seen;
        }
        after = Some(page.last().unwrap().key_ref());
    }
}

fn ids(keys: &[KeyRecord]) -> Vec<u8> {
    keys.iter().map(|k| k.id[0]).collect()
}

/// Pages walk the groups (no AAGUID first, then by AAGUID) in enrollment order, whatever
/// the page size; the filters and a cursor from another group keep to that order.
#[tokio::test]
async fn pages_walk_the_groups_in_order() {
    let s = Store::open_in_memory().unwrap();
    let a: Uuid = "2fc0579f-8113-47ea-b116-bb5a8db9202a".parse().unwrap();
    let b: Uuid = "ee882879-721c-4913-9775-3dfcce97072a".parse().unwrap();
    // (id, aaguid, enrolled second): insertion order differs from the listing order.
    let plan = [
        (1, Some(b), 5),
        (2, Some(a), 9),
        (3, None, 7),
        (4, Some(a), 1),
        (5, Some(b), 2),
        (6, None, 3),
        (7, Some(a), 4),
    ];
    for (id, aaguid, secs) in plan {
        enroll(&s, id, &format!("u{id}"), aaguid, secs).await;
    }
    let expected = vec![6, 3, 4, 7, 2, 5, 1];
    for size in 1..=8 {
        let mut seen = Vec::new();
        let mut after: Option<KeyRef> = None;
        loop {
            let (page, more) = s
                .list_keys(&KeyFilter::default(), after.as_ref(), size)
                .unwrap();
            assert!(page.len() <= size);
            seen.extend(ids(&page));
            if !more {
                break;
            }
            after = Some(page.last().unwrap().key_ref());
        }
        assert_eq!(seen, expected, "page size {size}");
    }
    let only_a = KeyFilter {
        aaguid: Some(a),
        ..Default::default()
    };
    let (page, more) = s.list_keys(&only_a, None, 10).unwrap();
    assert_eq!((ids(&page), more), (vec![4, 7, 2], false));
    let (page, _) = s.list_keys(&only_a, Some(&local(4)), 10).unwrap();
    assert_eq!(ids(&page), vec![7, 2]);
    // A cursor in an earlier group starts the group; one in a later group ends it.
    assert_eq!(
        ids(&s.list_keys(&only_a, Some(&local(3)), 10).unwrap().0),
        vec![4, 7, 2]
    );
    assert!(s
        .list_keys(&only_a, Some(&local(1)), 10)
        .unwrap()
        .0
        .is_empty());
    assert!(matches!(
        s.list_keys(&only_a, Some(&local(99)), 10),
        Err(StoreError::NotFound)
    ));
    let k = s.get_key(&local(2)).unwrap().unwrap();
    assert_eq!(k.device.as_deref(), Some("sim:2"));
    assert_eq!(k.firmware.as_deref(), Some("65538"));
    assert_eq!((k.owner.as_str(), k.aaguid), ("u2", Some(a)));
}

/// Lost is set once (audited once) from any state; the state filter tells the kinds of
/// revocation apart.
#[tokio::test]
async fn a_lost_key_is_revoked_once_and_filtered_by_state() {
    let s = Store::open_in_memory().unwrap();
    for id in 1..=3 {
        enroll(&s, id, &format!("u{id}"), None, i64::from(id)).await;
    }
    s.revoke_credentials_of_reset_key("sim:2", vec![vec![2]], &NewAudit::new("device.reset", "t"))
        .await
        .unwrap();
    let (k, changed) = s.mark_key_lost(&[1], "token:admin").await.unwrap();
    assert!(changed);
    assert_eq!(
        (k.state, k.state_reason.as_deref()),
        (KeyState::Lost, Some("lost"))
    );
    let (_, changed) = s.mark_key_lost(&[1], "token:admin").await.unwrap();
    assert!(!changed);
    let lines = s.list_audit(Some("u1"), None, 100).unwrap();
    let lost: Vec<_> = lines
        .iter()
        .filter(|l| l.event == "credential.revoked")
        .collect();
    assert_eq!(lost.len(), 1, "{lines:?}");
    assert_eq!(lost[0].detail["previous_state"], "active");
    assert_eq!(lost[0].actor, "token:admin");
    assert!(matches!(
        s.mark_key_lost(&[9], "t").await,
        Err(StoreError::NotFound)
    ));
    let of = |state| {
        let f = KeyFilter {
            state: Some(state),
            ..Default::default()
        };
        ids(&s.list_keys(&f, None, 10).unwrap().0)
    };
    assert_eq!(of(KeyState::Lost), vec![1]);
    assert_eq!(of(KeyState::Reset), vec![2]);
    assert_eq!(of(KeyState::Active), vec![3]);
    assert!(of(KeyState::Revoked).is_empty());
    // A reset key later reported lost is lost (the audit keeps the reset).
    let (k, _) = s.mark_key_lost(&[2], "t").await.unwrap();
    assert_eq!(k.state, KeyState::Lost);
}

/// Every page statement of both kinds searches its kind's inventory index, none sorts in a
/// temporary tree.
#[test]
fn pages_search_the_inventory_indexes() {
    let s = Store::open_in_memory().unwrap();
    let guard = s.conn();
    let c = guard.sqlite().expect("an in-memory SQLite store");
    for (source, table, index) in [
        (&LOCAL, "credentials", "credentials_inventory"),
        (&ENTRA, "entra_passkeys", "entra_passkeys_inventory"),
    ] {
        for later in [false, true] {
            for after in [After::Start, After::Past, After::AtOrPast] {
                for state in [false, true] {
                    let sql = page_sql(source, later, after, state);
                    let mut plan = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                    // Unbound parameters are NULL: the plan does not depend on them.
                    let mut rows = plan.raw_query();
                    let mut lines: Vec<String> = Vec::new();
                    while let Some(r) = rows.next().unwrap() {
                        lines.push(r.get(3).unwrap());
                    }
                    assert!(
                        lines
                            .iter()
                            .any(|l| l.starts_with(&format!("SEARCH {table} USING"))
                                && l.contains(&format!("INDEX {index}"))),
                        "{sql}: {lines:?}"
                    );
                    assert!(
                        !lines
                            .iter()
                            .any(|l| l.contains("TEMP B-TREE") || l.starts_with("SCAN")),
                        "{sql}: {lines:?}"
                    );
                }
            }
        }
    }
}

/// Local credentials and Entra passkeys are listed in one order (AAGUID group, enrollment
/// time, id, local before entra), walked by cursors of either kind at every page size; the
/// same credential id in both tables is two keys.
#[tokio::test]
async fn both_kinds_are_merged_into_one_order() {
    let s = Store::open_in_memory().unwrap();
    let a: Uuid = "2fc0579f-8113-47ea-b116-bb5a8db9202a".parse().unwrap();
    let b: Uuid = "ee882879-721c-4913-9775-3dfcce97072a".parse().unwrap();
    enroll(&s, 1, "u1", Some(b), 5).await;
    enroll(&s, 2, "u2", Some(a), 9).await;
    enroll(&s, 3, "u3", None, 7).await;
    enroll(&s, 4, "u4", Some(a), 1).await;
    enroll_entra(&s, 11, "e1", Some(a), 4).await;
    enroll_entra(&s, 12, "e2", None, 2).await;
    enroll_entra(&s, 13, "e3", Some(b), 6).await;
    enroll_entra(&s, 14, "e4", Some(a), 10).await;
    // The same credential id (and time and AAGUID) as local key 4: listed after it.
    enroll_entra(&s, 4, "e5", Some(a), 1).await;
    use KeyKind::{Entra, Local};
    let expected = vec![
        (Entra, 12),
        (Local, 3),
        (Local, 4),
        (Entra, 4),
        (Entra, 11),
        (Local, 2),
        (Entra, 14),
        (Local, 1),
        (Entra, 13),
    ];
    for size in 1..=10 {
        assert_eq!(
            walk(&s, &KeyFilter::default(), size),
            expected,
            "page size {size}"
        );
    }
    let only_a = KeyFilter {
        aaguid: Some(a),
        ..Default::default()
    };
    for size in 1..=4 {
        assert_eq!(
            walk(&s, &only_a, size),
            vec![(Local, 4), (Entra, 4), (Entra, 11), (Local, 2), (Entra, 14)]
        );
    }
    let only_entra = KeyFilter {
        kind: Some(Entra),
        ..Default::default()
    };
    assert_eq!(
        walk(&s, &only_entra, 2),
        vec![
            (Entra, 12),
            (Entra, 4),
            (Entra, 11),
            (Entra, 14),
            (Entra, 13)
        ]
    );
    // A cursor of one kind resumes the other kind's rows too.
    let (page, _) = s
        .list_keys(&KeyFilter::default(), Some(&entra(12)), 2)
        .unwrap();
    assert_eq!(ids(&page), vec![3, 4]);
    assert!(matches!(
        s.list_keys(&KeyFilter::default(), Some(&entra(3)), 2),
        Err(StoreError::NotFound)
    ));
    let k = s.get_key(&entra(11)).unwrap().unwrap();
    assert_eq!((k.kind, k.owner.as_str(), k.aaguid), (Entra, "e1", Some(a)));
    assert_eq!(k.device.as_deref(), Some("sim:11"));
    assert_eq!(k.model.as_deref(), Some("Entra Model"));
    assert_eq!(k.nickname.as_deref(), Some("Key 11"));
    assert!(k.attested);
    let facts = k.entra.unwrap();
    assert_eq!(
        (
            facts.rp_id.as_str(),
            facts.upn.as_str(),
            facts.method_id.as_str()
        ),
        ("login.microsoft.com", "e1@student.example", "m11")
    );
    assert!(s.get_key(&local(11)).unwrap().is_none());
}

/// An Entra passkey marked lost stays listed as `lost` (audited once, with its place in
/// Entra); the state filter finds it and no local key changes.
#[tokio::test]
async fn an_entra_passkey_is_kept_as_lost() {
    let s = Store::open_in_memory().unwrap();
    enroll(&s, 1, "u1", None, 1).await;
    enroll_entra(&s, 1, "e1", None, 2).await;
    enroll_entra(&s, 2, "e2", None, 3).await;
    let (k, changed) = s.mark_entra_key_lost(&[1], "token:desk").await.unwrap();
    assert!(changed);
    assert_eq!(
        (k.kind, k.state, k.state_reason.as_deref()),
        (KeyKind::Entra, KeyState::Lost, Some("lost"))
    );
    let (_, changed) = s.mark_entra_key_lost(&[1], "token:desk").await.unwrap();
    assert!(!changed);
    let lines = s.list_audit(Some("e1"), None, 100).unwrap();
    let lost: Vec<_> = lines
        .iter()
        .filter(|l| l.event == "credential.revoked")
        .collect();
    assert_eq!(lost.len(), 1, "{lines:?}");
    assert_eq!(lost[0].detail["target"], "entra");
    assert_eq!(lost[0].detail["method_id"], "m1");
    assert_eq!(lost[0].detail["upn"], "e1@student.example");
    assert_eq!(lost[0].detail["previous_state"], "active");
    assert_eq!(lost[0].actor, "token:desk");
    // The local credential with the same id is another key, untouched.
    assert_eq!(
        s.get_key(&local(1)).unwrap().unwrap().state,
        KeyState::Active
    );
    let of = |state| {
        let f = KeyFilter {
            state: Some(state),
            ..Default::default()
        };
        walk(&s, &f, 1)
    };
    assert_eq!(of(KeyState::Lost), vec![(KeyKind::Entra, 1)]);
    assert_eq!(
        of(KeyState::Active),
        vec![(KeyKind::Local, 1), (KeyKind::Entra, 2)]
    );
    assert!(matches!(
        s.mark_entra_key_lost(&[9], "t").await,
        Err(StoreError::NotFound)
    ));
}
