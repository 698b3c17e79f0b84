//! A million stored SMS flows, made fast: the rows a real flow writes (challenge, outbox row,
//! send-log line, two audit lines; a phone and its user for each student's first flow), written
//! through the store's own write methods (`Tx::sms_add_phone_with_challenge`,
//! `Tx::sms_insert_challenge`, `Tx::sms_outbox_update`, `Tx::sms_verified`) a thousand flows per
//! atomic unit, back-dated on the store's clock over `span` and swept to history after every
//! simulated day with the store's own sweep, as the daemon's sweeper would have done meanwhile.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::base::clock::{Clock, SystemClock};
use keygate::sms::code::{Code, CodeKeys};
use keygate::store::{
    HotWindows, NewAudit, NewOutbox, OutboxRecord, SendLog, SmsChallengeRecord, Store,
};

use super::sms::BenchClock;

/// How the stored flows were made; printed by the benches.
pub struct Filled {
    pub flows: u64,
    pub students: u64,
    pub span_days: f64,
    pub secs: f64,
    /// Rows in the hot tables and in history once the fill's last sweep ran.
    pub hot_challenges: i64,
    pub history_challenges: i64,
    pub audit_lines: i64,
    pub db_bytes: u64,
    /// The students' verified phones: (user, phone id, number).
    pub phones: Vec<(String, String, String)>,
}

impl Filled {
    pub fn describe(&self) -> String {
        format!(
            "{} flows of {} students stored in {:.1} s through the store's own write methods \
             (1000 flows per atomic unit: challenge + outbox row + send-log line + 2 audit lines, \
             sent then verified; each student's first flow registers the phone), back-dated over \
             {:.0} days ending 2 h ago and swept to history after every simulated day by the \
             store's sweep: {} challenges hot, {} in history, {} audit lines, database {:.0} MiB",
            self.flows,
            self.students,
            self.secs,
            self.span_days,
            self.hot_challenges,
            self.history_challenges,
            self.audit_lines,
            self.db_bytes as f64 / (1024.0 * 1024.0)
        )
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;
const FLOWS_PER_UNIT: u64 = 1000;

/// One simulated flow's ids and times.
struct FlowRows {
    ch: SmsChallengeRecord,
    outbox: OutboxRecord,
    send: SendLog,
    created: NewAudit,
    verified: NewAudit,
}

fn flow_rows(keys: &CodeKeys, student: u64, phone_id: Option<String>, at: i64) -> FlowRows {
    let id = keygate::store::new_row_id();
    let code = Code::generate();
    let user = format!("student{student}");
    let e164 = format!("+32476{student:06}");
    let purpose = if phone_id.is_some() {
        "sign_in"
    } else {
        "verify_phone"
    };
    let masked = format!("+32 476 •• •• {:02}", student % 100);
    let actor = "token:fill-kiosk";
    let ch = SmsChallengeRecord {
        id: id.clone(),
        user: user.clone(),
        phone_id,
        e164: e164.clone(),
        purpose: purpose.into(),
        locale: "nl".into(),
        code_mac: keys.mac(&id, &code),
        code_enc: Some(keys.encrypt(&id, &code)),
        created_at: at,
        expires_at: at + 300_000,
        attempts: 0,
        resends: 0,
        last_sent_at: at,
        state: "pending".into(),
        delivery_status: "queued".into(),
        idempotency_key: None,
        idempotency_hash: None,
        created_by: Some(actor.into()),
    };
    let detail = serde_json::json!({ "challenge": id, "purpose": purpose, "to": masked });
    let outbox_id = keygate::store::new_row_id();
    FlowRows {
        outbox: OutboxRecord {
            id: outbox_id.clone(),
            challenge_id: id.clone(),
            created_at: at,
            state: "sent".into(),
            attempts: 1,
            next_attempt_at: at,
            provider: Some("webhook".into()),
            provider_message_id: Some(format!("mock-{outbox_id}")),
            last_error: None,
            sent_at: Some(at + 400),
        },
        send: SendLog {
            e164,
            country_code: 32,
            at,
        },
        created: NewAudit::new("sms.challenge_created", actor)
            .user(&user)
            .detail(detail.clone()),
        verified: NewAudit::new("sms.verified", actor)
            .user(&user)
            .detail(detail),
        ch,
    }
}

/// Where the filled store keeps its data, for the fill's closing counts.
pub enum FillTarget<'a> {
    /// The SQLite file.
    Sqlite(&'a Path),
    /// A database of the test cluster (`keygate::harness::pg`), by name.
    Postgres(&'a str),
}

/// Store `flows` flows of `students` students (each one's first flow registers their phone)
/// through `store` (the database at `db`), whose clock is `clock`, spread evenly over `span`
/// ending 2 hours ago.
pub async fn fill_sms(
    store: &Store,
    db: FillTarget<'_>,
    clock: &Arc<BenchClock>,
    flows: u64,
    students: u64,
    span: Duration,
) -> Filled {
    let started = Instant::now();
    let keys = Arc::new(CodeKeys::from_secret(&rand_secret()));
    let end = SystemClock.now_ms() - 2 * 3600 * 1000;
    let span_ms = span.as_millis() as i64;
    let start = end - span_ms;
    let step = span_ms / flows.max(1) as i64;
    let mut phones: Arc<Vec<String>> = Arc::new(Vec::new());
    let mut next_sweep = start + DAY_MS;
    let mut f = 0u64;
    while f < flows {
        let n = FLOWS_PER_UNIT.min(flows - f);
        let first = f;
        // Students register in the first flows; their phone ids come back from the unit.
        let known = phones.clone();
        let known_len = known.len();
        let (keys, clock2) = (keys.clone(), clock.clone());
        let new_phones: Vec<String> = store
            .atomic(move |tx| -> keygate::store::Result<Vec<String>> {
                let mut added = Vec::new();
                for i in first..first + n {
                    let at = start + i as i64 * step;
                    let student = i % students;
                    let phone = known
                        .get(student as usize)
                        .or_else(|| added.get((student as usize).wrapping_sub(known_len)))
                        .cloned();
                    let rows = flow_rows(&keys, student, phone.clone(), at);
                    clock2.pin(at);
                    let phone_id = match phone {
                        Some(id) => {
                            tx.sms_insert_challenge(
                                &rows.ch,
                                &NewOutbox::due(rows.outbox.id.clone()),
                                &rows.send,
                                &rows.created,
                            )?;
                            id
                        }
                        None => {
                            let p = tx.sms_add_phone_with_challenge(
                                &rows.send.e164,
                                None,
                                &NewAudit::new("sms.phone_added", "token:fill-kiosk")
                                    .user(&rows.ch.user),
                                &rows.ch,
                                &NewOutbox::due(rows.outbox.id.clone()),
                                &rows.send,
                                &rows.created,
                            )?;
                            added.push(p.id.clone());
                            p.id
                        }
                    };
                    clock2.pin(at + 400);
                    tx.sms_outbox_update(&rows.outbox, Some("sent"))?;
                    clock2.pin(at + 20_000);
                    // The challenge as stored (the phone it went to): no read back, so a
                    // campus store gets the unit's writes pipelined.
                    let ch = SmsChallengeRecord {
                        phone_id: Some(phone_id),
                        ..rows.ch
                    };
                    tx.sms_verified(&ch, &rows.verified)?;
                }
                Ok(added)
            })
            .await
            .expect("fill unit");
        if !new_phones.is_empty() {
            let mut all = Vec::clone(&phones);
            all.extend(new_phones);
            phones = Arc::new(all);
        }
        f += n;
        let now = start + f as i64 * step;
        if now >= next_sweep || f == flows {
            clock.pin(now);
            store
                .sweep_hot_tables(HotWindows::default())
                .await
                .expect("sweep");
            next_sweep = now + DAY_MS;
        }
    }
    clock.release();
    store
        .sweep_hot_tables(HotWindows::default())
        .await
        .expect("sweep");
    let secs = started.elapsed().as_secs_f64();
    let (hot, history, audit, db_bytes) = match db {
        FillTarget::Sqlite(path) => {
            super::settle::settle(path);
            counts(path)
        }
        FillTarget::Postgres(name) => pg_counts(name),
    };
    Filled {
        flows,
        students,
        span_days: span.as_secs_f64() / 86400.0,
        secs,
        hot_challenges: hot,
        history_challenges: history,
        audit_lines: audit,
        db_bytes,
        phones: phones
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("student{i}"), id.clone(), format!("+32476{i:06}")))
            .collect(),
    }
}

fn rand_secret() -> [u8; 32] {
    use rand::RngCore;
    let mut s = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// [`counts`] of a database of the test cluster (its size: `pg_database_size`).
fn pg_counts(name: &str) -> (i64, i64, i64, u64) {
    let c = keygate::harness::pg::cluster().connect(name);
    let n = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    (
        n("SELECT COUNT(*) FROM sms_challenges"),
        n("SELECT COUNT(*) FROM sms_challenges_history"),
        n("SELECT COUNT(*) FROM audit"),
        n("SELECT pg_database_size(current_database())") as u64,
    )
}

/// (hot challenges, challenges in history, audit lines, database file bytes), read on a
/// connection of the bench's own.
fn counts(path: &Path) -> (i64, i64, i64, u64) {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let n = |t: &str| -> i64 {
        c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    (
        n("sms_challenges"),
        n("sms_challenges_history"),
        n("audit"),
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    )
}
