//! A campus's worth of keys, made fast: `users` users with `per_user` credentials each, every
//! credential with its enrollment ceremony and one verification ceremony and their audit lines,
//! copied in bulk (SQL, on a connection of the bench's own, the real schema) from the rows one
//! real enrollment + verification of `template` wrote (its credential, ceremonies and audit
//! lines; new ids, user names and handles), back-dated over 100 days ending two days ago; then
//! the store's own sweep moves the finished ceremonies to history, as the daemon's sweeper
//! would have done meanwhile.

use std::path::Path;
use std::time::Instant;

use keygate::store::{HotWindows, Store};

/// Rows 0..n as `n` in a recursive CTE (SQLite's bundled build has no generate_series).
fn series(n: u64) -> String {
    format!("WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n + 1 < {n})")
}

/// The fill's back-dating: `?1` is its start (Unix seconds), `?2` its step per credential.
const AT: &str = "strftime('%Y-%m-%dT%H:%M:%SZ', ?1 + s.n * ?2, 'unixepoch')";

pub async fn fill_ceremonies(
    store: &Store,
    db: &Path,
    template: &str,
    users: u64,
    per_user: u64,
) -> String {
    let started = Instant::now();
    let credentials = users * per_user;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let span = 100 * 86400;
    let start = now - 2 * 86400 - span;
    let step = span as f64 / credentials.max(1) as f64;
    let mut c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    let tx = c.transaction().unwrap();
    let user = |n: &str| format!("'scale' || ({n} / {per_user})");
    tx.execute(
        &format!(
            "{} INSERT INTO users (name, display_name, user_handle, created_at) \
             SELECT 'scale' || s.n, 'Scale ' || s.n, randomblob(16), {AT} FROM s",
            series(users)
        ),
        rusqlite::params![start, step * per_user as f64],
    )
    .unwrap();
    tx.execute(
        &format!(
            "{} INSERT INTO credentials (id, user_name, rp_credential, public_key_cose, counter, \
             aaguid, attestation_format, attested, discoverable, user_verified, nickname, model, \
             created_at, last_used_at, state, state_reason) \
             SELECT randomblob(length(c.id)), {}, c.rp_credential, c.public_key_cose, c.counter, \
             c.aaguid, c.attestation_format, c.attested, c.discoverable, c.user_verified, \
             c.nickname, c.model, {AT}, {AT}, c.state, c.state_reason \
             FROM s, credentials c WHERE c.user_name = ?3",
            series(credentials),
            user("s.n")
        ),
        rusqlite::params![start, step, template],
    )
    .unwrap();
    // Each credential's enrollment and one verification: the template's ceremonies, finished.
    tx.execute(
        &format!(
            "{} INSERT INTO ceremonies (id, kind, user_name, state, error_code, created_at, \
             updated_at, expires_at, created_by) \
             SELECT lower(hex(randomblob(16))), c.kind, {}, c.state, c.error_code, {AT}, {AT}, \
             {AT}, c.created_by FROM s, ceremonies c WHERE c.user_name = ?3",
            series(credentials),
            user("s.n")
        ),
        rusqlite::params![start, step, template],
    )
    .unwrap();
    tx.execute(
        &format!(
            "{} INSERT INTO audit (at, event, user_name, credential_id, ceremony_id, actor, detail) \
             SELECT {AT}, a.event, {}, a.credential_id, a.ceremony_id, a.actor, a.detail \
             FROM s, audit a WHERE a.user_name = ?3 ORDER BY s.n, a.seq",
            series(credentials),
            user("s.n")
        ),
        rusqlite::params![start, step, template],
    )
    .unwrap();
    tx.commit().unwrap();
    let count = |t: &str| -> i64 {
        c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    let (ceremonies, audit) = (count("ceremonies"), count("audit"));
    drop(c);
    super::settle::settle(db);
    store
        .sweep_hot_tables(HotWindows::default())
        .await
        .expect("sweep");
    super::settle::settle(db);
    let c = rusqlite::Connection::open(db).unwrap();
    let hot: i64 = c
        .query_row("SELECT COUNT(*) FROM ceremonies", [], |r| r.get(0))
        .unwrap();
    format!(
        "{users} users, {credentials} credentials, {ceremonies} finished ceremonies and {audit} \
         audit lines copied in bulk from one real enrollment + verification, back-dated over 100 \
         days, in {:.1} s; the store's sweep moved them to history ({hot} ceremonies left hot); \
         database {:.0} MiB",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(db).map(|m| m.len()).unwrap_or(0) as f64 / (1024.0 * 1024.0)
    )
}
