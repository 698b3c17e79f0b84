//! The key inventory (`GET /v1/keys`): every key keygate has enrolled a credential on.
//!
//! What "a key" is: one credential. CTAP2 keys expose no serial number (authenticatorGetInfo
//! has none) and a device id names a USB port, not a key (every key at a kiosk goes into the
//! same port), so nothing keygate records tells two physical keys of one model apart beyond
//! the credentials they hold. An entry is therefore one credential, its key id the
//! credential id; entries are listed grouped by AAGUID (keys without one first), each group in
//! enrollment order. What the enrollment saw of the key (the device id it was plugged in as and
//! its firmware from GetInfo) comes from its `credential.enrolled` audit line, where that line
//! records it and still exists (retention may have purged it).
//!
//! The inventory state is the credential's, with its revocations told apart by reason:
//! `reset` (`key_reset`, the factory-reset ceremony), `lost` (an admin marked the key lost),
//! `revoked` (any other reason).

use super::db::{params, Connection, OptionalExtension, Row};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::audit::insert_audit;
use super::{exec, parse_opt_time, parse_time, prepare, row, NewAudit, Result, Store, StoreError};

/// `state_reason` of a credential whose key was marked lost.
pub const LOST_REASON: &str = "lost";

/// A key's state in the inventory.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    /// Suspected clone: verifications refused until an admin releases it.
    Quarantined,
    /// Revoked for another reason than a reset or a loss (the user, an admin, a closure).
    Revoked,
    /// Revoked because the key was factory-reset (`state_reason: key_reset`).
    Reset,
    /// Revoked because the key was reported lost (`PATCH /v1/keys/{id}`).
    Lost,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Quarantined => "quarantined",
            KeyState::Revoked => "revoked",
            KeyState::Reset => "reset",
            KeyState::Lost => "lost",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => KeyState::Active,
            "quarantined" => KeyState::Quarantined,
            "revoked" => KeyState::Revoked,
            "reset" => KeyState::Reset,
            "lost" => KeyState::Lost,
            other => return Err(StoreError::Corrupt(format!("key state {other}"))),
        })
    }
}

/// The inventory state of a `credentials` row, in SQL (one definition for reading and for
/// filtering).
const STATE_SQL: &str = "CASE WHEN state = 'revoked' AND state_reason = 'lost' THEN 'lost' \
    WHEN state = 'revoked' AND state_reason = 'key_reset' THEN 'reset' ELSE state END";

/// One key of the inventory (see the module docs: one credential).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// The credential id (raw bytes); the key id is its base64url.
    pub id: Vec<u8>,
    pub aaguid: Option<Uuid>,
    /// The model name recorded at enrollment.
    pub model: Option<String>,
    pub attested: bool,
    pub nickname: Option<String>,
    /// The user the credential belongs to.
    pub owner: String,
    pub enrolled_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub state: KeyState,
    pub state_reason: Option<String>,
    /// The device id the key was enrolled on (from the enrollment's audit line).
    pub device: Option<String>,
    /// The key's firmware version from GetInfo at enrollment (from the same line).
    pub firmware: Option<String>,
}

/// Which keys a listing returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyFilter {
    pub state: Option<KeyState>,
    pub aaguid: Option<Uuid>,
}

const KEY_COLS: &str = "id, aaguid, model, attested, nickname, user_name, created_at, \
    last_used_at, state_reason";

struct KeyRow {
    id: Vec<u8>,
    aaguid: Option<String>,
    model: Option<String>,
    attested: bool,
    nickname: Option<String>,
    owner: String,
    created_at: String,
    last_used_at: Option<String>,
    state_reason: Option<String>,
    state: String,
}

fn key_from_row(r: &Row<'_>) -> super::db::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get(0)?,
        aaguid: r.get(1)?,
        model: r.get(2)?,
        attested: r.get(3)?,
        nickname: r.get(4)?,
        owner: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
        state_reason: r.get(8)?,
        state: r.get(9)?,
    })
}

impl KeyRow {
    /// The record, with what the enrollment's audit line says about the key.
    fn into_record(self, c: &Connection) -> Result<KeyRecord> {
        let (device, firmware) = enrollment_facts(c, &self.owner, &self.id)?;
        Ok(KeyRecord {
            aaguid: self
                .aaguid
                .map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()?,
            id: self.id,
            model: self.model,
            attested: self.attested,
            nickname: self.nickname,
            owner: self.owner,
            enrolled_at: parse_time(&self.created_at)?,
            last_used_at: parse_opt_time(self.last_used_at)?,
            state: KeyState::parse(&self.state)?,
            state_reason: self.state_reason,
            device,
            firmware,
        })
    }
}

/// The device id and firmware the `credential.enrolled` line of `id` records, if any. Reads
/// the owner's audit lines only (`audit_user`).
fn enrollment_facts(
    c: &Connection,
    owner: &str,
    id: &[u8],
) -> Result<(Option<String>, Option<String>)> {
    let facts = row(
        c,
        "SELECT CAST(json_extract(detail, '$.device') AS TEXT), \
         CAST(json_extract(detail, '$.firmware') AS TEXT) FROM audit \
         WHERE user_name = ?1 AND event = 'credential.enrolled' AND credential_id = ?2 \
         ORDER BY seq LIMIT 1",
        params![owner, URL_SAFE_NO_PAD.encode(id)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    Ok(facts.unwrap_or((None, None)))
}

fn key_row(c: &Connection, id: &[u8]) -> Result<Option<KeyRow>> {
    Ok(row(
        c,
        &format!("SELECT {KEY_COLS}, {STATE_SQL} FROM credentials WHERE id = ?1"),
        params![id],
        key_from_row,
    )
    .optional()?)
}

/// Where a page starts: after this key, in (AAGUID group, enrollment time, id) order.
struct Position {
    aaguid: Option<String>,
    created_at: String,
    id: Vec<u8>,
}

/// The statement of one [`fetch`]: keys of one AAGUID group (`aaguid IS ?1`, NULL: keys
/// without one), or with `later_groups` of the groups after `?1`; after the position
/// (`?2`, `?3`) when `from`; of the state `?4` when `state`; at most `?5`. Each walks
/// `credentials_inventory` in its order.
fn page_sql(later_groups: bool, from: bool, state: bool) -> String {
    let mut clauses = vec![if later_groups {
        "aaguid > ?1"
    } else {
        "aaguid IS ?1"
    }
    .to_string()];
    if from {
        clauses.push("(created_at, id) > (?2, ?3)".into());
    }
    if state {
        clauses.push(format!("({STATE_SQL}) = ?4"));
    }
    let order = if later_groups {
        "aaguid, created_at, id"
    } else {
        "created_at, id"
    };
    format!(
        "SELECT {KEY_COLS}, {STATE_SQL} FROM credentials WHERE {} ORDER BY {order} LIMIT ?5",
        clauses.join(" AND ")
    )
}

/// Up to `limit` keys of the group `group` after `from` (or from its start), or with
/// `later_groups` of the groups after it (see [`page_sql`]), appended to `out`.
fn fetch(
    c: &Connection,
    group: Option<&str>,
    later_groups: bool,
    from: Option<&Position>,
    state: Option<KeyState>,
    limit: usize,
    out: &mut Vec<KeyRow>,
) -> Result<()> {
    let sql = page_sql(later_groups, from.is_some(), state.is_some());
    let mut st = prepare(c, &sql)?;
    let rows = st.query_map(
        params![
            group,
            from.map(|p| p.created_at.as_str()),
            from.map(|p| p.id.as_slice()),
            state.map(KeyState::as_str),
            i64::try_from(limit).unwrap_or(i64::MAX),
        ],
        key_from_row,
    )?;
    for r in rows {
        out.push(r?);
    }
    Ok(())
}

impl Store {
    /// A page of the inventory: up to `limit` keys matching `filter`, after the key `after`
    /// (the last key of the previous page); and whether more follow. `NotFound` when `after`
    /// names no key.
    pub fn list_keys(
        &self,
        filter: &KeyFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KeyRecord>, bool)> {
        let limit = limit.max(1);
        let want = limit.saturating_add(1);
        self.read(|c| {
            let from = match after {
                None => None,
                Some(id) => {
                    let r = key_row(c, id)?.ok_or(StoreError::NotFound)?;
                    Some(Position {
                        aaguid: r.aaguid,
                        created_at: r.created_at,
                        id: r.id,
                    })
                }
            };
            let mut rows = Vec::new();
            match filter.aaguid.map(|a| a.to_string()) {
                Some(wanted) => {
                    // A cursor from another group: before it, the whole group; after, nothing.
                    let start = match &from {
                        None => Some(None),
                        Some(p) => match p.aaguid.as_deref().cmp(&Some(wanted.as_str())) {
                            std::cmp::Ordering::Less => Some(None),
                            std::cmp::Ordering::Equal => Some(Some(p)),
                            std::cmp::Ordering::Greater => None,
                        },
                    };
                    if let Some(start) = start {
                        fetch(
                            c,
                            Some(&wanted),
                            false,
                            start,
                            filter.state,
                            want,
                            &mut rows,
                        )?;
                    }
                }
                None => {
                    let group = from.as_ref().and_then(|p| p.aaguid.clone());
                    fetch(
                        c,
                        group.as_deref(),
                        false,
                        from.as_ref(),
                        filter.state,
                        want,
                        &mut rows,
                    )?;
                    if rows.len() < want {
                        // Every AAGUID sorts above '' (keys without one came first).
                        let above = group.unwrap_or_default();
                        let rest = want - rows.len();
                        fetch(c, Some(&above), true, None, filter.state, rest, &mut rows)?;
                    }
                }
            }
            let more = rows.len() > limit;
            rows.truncate(limit);
            let keys = rows
                .into_iter()
                .map(|r| r.into_record(c))
                .collect::<Result<Vec<_>>>()?;
            Ok((keys, more))
        })
    }

    pub fn get_key(&self, id: &[u8]) -> Result<Option<KeyRecord>> {
        self.read(|c| key_row(c, id)?.map(|r| r.into_record(c)).transpose())
    }

    /// Mark the key `id` lost: its credential is revoked (`state_reason: lost`, whatever its
    /// state was) and a `credential.revoked` line (reason `lost`, the previous state) audited
    /// as `actor`, in one transaction. Idempotent: a key already lost is left as it is and
    /// nothing is audited. Returns the key and whether it changed; `NotFound` for no such key.
    pub async fn mark_key_lost(&self, id: &[u8], actor: &str) -> Result<(KeyRecord, bool)> {
        let id = id.to_vec();
        let actor = actor.to_string();
        self.write(move |c| {
            let before = key_row(c, &id)?.ok_or(StoreError::NotFound)?;
            let previous = KeyState::parse(&before.state)?;
            if previous == KeyState::Lost {
                return Ok((before.into_record(c)?, false));
            }
            exec(
                c,
                "UPDATE credentials SET state = 'revoked', state_reason = ?2 WHERE id = ?1",
                params![id, LOST_REASON],
            )?;
            insert_audit(
                c,
                &NewAudit::new("credential.revoked", &actor)
                    .user(&before.owner)
                    .credential(&URL_SAFE_NO_PAD.encode(&id))
                    .detail(serde_json::json!({
                        "reason": LOST_REASON,
                        "previous_state": previous.as_str(),
                        "previous_reason": before.state_reason,
                    })),
            )?;
            let after = key_row(c, &id)?.ok_or(StoreError::NotFound)?;
            Ok((after.into_record(c)?, true))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CredentialRecord, CredentialState};

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
            let mut after: Option<Vec<u8>> = None;
            loop {
                let (page, more) = s
                    .list_keys(&KeyFilter::default(), after.as_deref(), size)
                    .unwrap();
                assert!(page.len() <= size);
                seen.extend(ids(&page));
                if !more {
                    break;
                }
                after = Some(page.last().unwrap().id.clone());
            }
            assert_eq!(seen, expected, "page size {size}");
        }
        let only_a = KeyFilter {
            aaguid: Some(a),
            ..Default::default()
        };
        let (page, more) = s.list_keys(&only_a, None, 10).unwrap();
        assert_eq!((ids(&page), more), (vec![4, 7, 2], false));
        let (page, _) = s.list_keys(&only_a, Some(&[4]), 10).unwrap();
        assert_eq!(ids(&page), vec![7, 2]);
        // A cursor in an earlier group starts the group; one in a later group ends it.
        assert_eq!(
            ids(&s.list_keys(&only_a, Some(&[3]), 10).unwrap().0),
            vec![4, 7, 2]
        );
        assert!(s.list_keys(&only_a, Some(&[1]), 10).unwrap().0.is_empty());
        assert!(matches!(
            s.list_keys(&only_a, Some(&[99]), 10),
            Err(StoreError::NotFound)
        ));
        let k = s.get_key(&[2]).unwrap().unwrap();
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
        s.revoke_credentials_of_reset_key("sim:2", None, &NewAudit::new("device.reset", "t"))
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

    /// Every page statement searches `credentials_inventory`, none sorts in a temporary tree.
    #[test]
    fn pages_search_the_inventory_index() {
        let s = Store::open_in_memory().unwrap();
        let guard = s.conn();
        let c = guard.sqlite().expect("an in-memory SQLite store");
        for later in [false, true] {
            for from in [false, true] {
                for state in [false, true] {
                    let sql = page_sql(later, from, state);
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
                            .any(|l| l.starts_with("SEARCH credentials USING")
                                && l.contains("INDEX credentials_inventory")),
                        "{sql}: {lines:?}"
                    );
                    assert!(
                        !lines.iter().any(|l| l.contains("TEMP B-TREE")),
                        "{lines:?}"
                    );
                }
            }
        }
    }
}
