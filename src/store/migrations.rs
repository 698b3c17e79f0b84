//! Schema migrations, applied in order inside one transaction each; `user_version` records
//! the last applied one. Never edit a released migration: append a new one.

use super::db::{Backend, Connection};

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: core schema
    r#"
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        user_handle BLOB NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE credentials (
        id BLOB PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        rp_credential TEXT NOT NULL,
        public_key_cose BLOB NOT NULL,
        counter INTEGER NOT NULL CHECK (counter >= 0),
        aaguid TEXT,
        attestation_format TEXT NOT NULL,
        attested INTEGER NOT NULL,
        discoverable INTEGER NOT NULL,
        user_verified INTEGER NOT NULL,
        nickname TEXT,
        model TEXT,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        state TEXT NOT NULL CHECK (state IN ('active', 'quarantined', 'revoked')),
        state_reason TEXT
    );
    CREATE INDEX credentials_user ON credentials(user_name);
    CREATE TABLE ceremonies (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('enrollment', 'assertion')),
        user_name TEXT,
        state TEXT NOT NULL,
        error_code TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        user_name TEXT,
        credential_id TEXT,
        ceremony_id TEXT,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_user ON audit(user_name, seq);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('kiosk', 'admin')),
        hash BLOB NOT NULL,
        label TEXT,
        created_at TEXT NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE phones (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        e164 TEXT NOT NULL,
        label TEXT,
        verified INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        verified_at TEXT,
        UNIQUE (user_name, e164)
    );
    "#,
    // 2: the SMS factor. Times are Unix milliseconds from the SMS layer's clock (a fake clock
    // in tests). Codes are kept only as a keyed hash (`code_mac`) plus, while the challenge
    // lives, encrypted (`code_enc`) so that "Resend code" can send the same code; `code_enc`
    // is wiped when the challenge ends. The outbox holds no message text: it is rebuilt from
    // the challenge when sent.
    r#"
    CREATE TABLE sms_challenges (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        phone_id TEXT,
        e164 TEXT NOT NULL,
        purpose TEXT NOT NULL CHECK (purpose IN ('verify_phone', 'sign_in')),
        locale TEXT NOT NULL,
        code_mac BLOB NOT NULL,
        code_enc BLOB,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        resends INTEGER NOT NULL DEFAULT 0,
        last_sent_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'verified', 'failed', 'cancelled')),
        delivery_status TEXT NOT NULL DEFAULT 'queued',
        idempotency_key TEXT,
        UNIQUE (user_name, idempotency_key)
    );
    CREATE INDEX sms_challenges_user ON sms_challenges (user_name);
    CREATE TABLE sms_outbox (
        id TEXT PRIMARY KEY,
        challenge_id TEXT NOT NULL REFERENCES sms_challenges(id),
        created_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'dropped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        provider TEXT,
        provider_message_id TEXT,
        last_error TEXT,
        sent_at INTEGER
    );
    CREATE INDEX sms_outbox_due ON sms_outbox (state, next_attempt_at);
    CREATE INDEX sms_outbox_provider_id ON sms_outbox (provider, provider_message_id);
    CREATE TABLE sms_sends (
        e164 TEXT NOT NULL,
        country_code INTEGER NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX sms_sends_at ON sms_sends (at);
    CREATE INDEX sms_sends_number ON sms_sends (e164, at);
    CREATE TABLE sms_user_state (
        user_name TEXT PRIMARY KEY,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER NOT NULL DEFAULT 0
    );
    "#,
    // 3: one-time kiosk session codes (`keygate kiosk-url`), stored as SHA-256.
    r#"
    CREATE TABLE kiosk_codes (
        code_hash BLOB PRIMARY KEY,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT
    );
    "#,
    // 4: kiosk page sessions (one per kiosk-url use): server-side expiry and the student the
    // session is bound to; and the SHA-256 of used sign-in handoffs, kept until their exp.
    // Times in Unix seconds.
    r#"
    CREATE TABLE kiosk_sessions (
        token_id TEXT PRIMARY KEY REFERENCES tokens(id),
        created_at TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        bound_user TEXT,
        bound_display_name TEXT,
        bound_at TEXT
    );
    CREATE TABLE kiosk_handoffs_used (
        token_hash BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL
    );
    "#,
    // 5: SMS. `idempotency_hash`: SHA-256 of the normalised request an Idempotency-Key was
    // first used with (a reuse with another request is a conflict; NULL on older rows). The
    // partial index holds only challenges that still keep an encrypted code, so the periodic
    // sweep that wipes ended challenges' codes reads live rows only.
    r#"
    ALTER TABLE sms_challenges ADD COLUMN idempotency_hash BLOB;
    CREATE INDEX sms_challenges_code_kept ON sms_challenges (expires_at) WHERE code_enc IS NOT NULL;
    "#,
    // 6: `sms_challenges_user` duplicates the prefix of the UNIQUE (user_name,
    // idempotency_key) index; each challenge paid for both.
    r#"
    DROP INDEX sms_challenges_user;
    "#,
    // 7: who made a ceremony or a challenge (`token:<id>`): only that caller (or an admin) may
    // read, verify, resend, cancel or follow it. Idempotency-Keys are scoped per caller: the
    // stored key is `<created_by> U+001F <key>`, unique on its own; older rows (scoped per
    // user) keep theirs under a `legacy` prefix so no two collide.
    r#"
    ALTER TABLE ceremonies ADD COLUMN created_by TEXT;
    ALTER TABLE sms_challenges ADD COLUMN created_by TEXT;
    UPDATE sms_challenges SET idempotency_key = 'legacy' || char(31) || user_name || char(31) || idempotency_key
        WHERE idempotency_key IS NOT NULL;
    CREATE UNIQUE INDEX sms_challenges_idempotency ON sms_challenges (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    "#,
    // 8: Microsoft Entra ID. `entra_passkeys`: a key enrolled into a user's Entra account
    // (Graph's method id, the credential's public key and counter for local verification, what
    // Entra reported about it). Phones carry their Entra sync state (`pending` while the
    // mobile method is being added, `synced` with Graph's method id, `failed` with the code).
    r#"
    CREATE TABLE entra_passkeys (
        credential_id BLOB PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        upn TEXT NOT NULL,
        method_id TEXT NOT NULL,
        rp_id TEXT NOT NULL,
        entra_user_id BLOB NOT NULL,
        public_key_cose BLOB NOT NULL,
        counter INTEGER NOT NULL CHECK (counter >= 0),
        aaguid TEXT,
        model TEXT,
        attestation_level TEXT,
        display_name TEXT NOT NULL,
        cred_protect INTEGER,
        hmac_secret INTEGER NOT NULL,
        user_verified INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT,
        last_used_at TEXT
    );
    CREATE INDEX entra_passkeys_user ON entra_passkeys (user_name);
    CREATE INDEX entra_passkeys_method ON entra_passkeys (method_id);
    ALTER TABLE phones ADD COLUMN entra_state TEXT
        CHECK (entra_state IN ('pending', 'synced', 'failed'));
    ALTER TABLE phones ADD COLUMN entra_method_id TEXT;
    ALTER TABLE phones ADD COLUMN entra_error TEXT;
    "#,
    // 9: indexes for the hot path's last full scans (found by `store::query_plans`): removing a
    // phone ended its live challenges by reading every challenge ever stored (the partial
    // index holds pending ones only), and every sign-in handoff forgot the expired used ones
    // by reading the whole table.
    // History tables: rows that only matter for a window (ended challenges with their outbox
    // messages, send-log lines past every budget window, finished ceremonies) move there on
    // the store's sweep (`sweep.rs`), so the hot tables stay the size of their windows; how
    // long history is kept is retention's business. Each has its hot table's columns in the
    // same order (the sweep copies `SELECT *`; a test keeps them equal): a migration that adds
    // a column to a hot table adds it to its history table too. The sweep finds its rows by
    // age (`sms_challenges_created`, `ceremonies_updated`) and a challenge's outbox rows by
    // `sms_outbox_challenge`, which the foreign key needs anyway to delete a challenge
    // without reading the whole outbox.
    r#"
    CREATE INDEX sms_challenges_pending_phone ON sms_challenges (phone_id) WHERE state = 'pending';
    CREATE INDEX kiosk_handoffs_used_expiry ON kiosk_handoffs_used (expires_at);
    CREATE INDEX sms_challenges_created ON sms_challenges (created_at);
    CREATE INDEX sms_outbox_challenge ON sms_outbox (challenge_id);
    CREATE INDEX ceremonies_updated ON ceremonies (updated_at);
    CREATE TABLE sms_challenges_history AS SELECT * FROM sms_challenges WHERE 0;
    CREATE INDEX sms_challenges_history_created ON sms_challenges_history (created_at);
    CREATE TABLE sms_outbox_history AS SELECT * FROM sms_outbox WHERE 0;
    CREATE INDEX sms_outbox_history_challenge ON sms_outbox_history (challenge_id);
    CREATE TABLE sms_sends_history AS SELECT * FROM sms_sends WHERE 0;
    CREATE INDEX sms_sends_history_at ON sms_sends_history (at);
    CREATE TABLE ceremonies_history AS SELECT * FROM ceremonies WHERE 0;
    CREATE INDEX ceremonies_history_updated ON ceremonies_history (updated_at);
    "#,
    // 10: the audit log's hash chain (`audit_chain.rs`): each entry's `prev_hash` and `hash`.
    // Its Rust step (`audit_writer::chain_existing`, see RUST_STEPS) chains the entries already
    // there in seq order and re-creates the triggers dropped here: UPDATE still refused, DELETE
    // only by the retention purge below the newest anchor. `audit_anchor`: where verification
    // starts once a purge removed a prefix (the first kept seq and its predecessor's hash).
    // `audit_signed_head`: the head as signed every `HEAD_EVERY` entries.
    r#"
    DROP TRIGGER audit_no_update;
    DROP TRIGGER audit_no_delete;
    ALTER TABLE audit ADD COLUMN prev_hash BLOB;
    ALTER TABLE audit ADD COLUMN hash BLOB;
    CREATE TABLE audit_anchor (
        seq INTEGER PRIMARY KEY,
        prev_hash BLOB NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE audit_signed_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        signature BLOB NOT NULL,
        at TEXT NOT NULL
    );
    "#,
    // 11: the `metrics` role (a scraper's token: `GET /metrics` only). SQLite cannot change a
    // CHECK, so `tokens` is rebuilt, and `kiosk_sessions` with it: it references `tokens`,
    // and dropping a referenced table fails while foreign keys are on (as they are here,
    // inside the migration's transaction, where the pragma cannot be changed). The renames
    // carry the reference over to the new `tokens`.
    r#"
    CREATE TABLE tokens_v10 (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('kiosk', 'admin', 'metrics')),
        hash BLOB NOT NULL,
        label TEXT,
        created_at TEXT NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO tokens_v10 (id, role, hash, label, created_at, revoked)
        SELECT id, role, hash, label, created_at, revoked FROM tokens;
    CREATE TABLE kiosk_sessions_v10 (
        token_id TEXT PRIMARY KEY REFERENCES tokens_v10(id),
        created_at TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        bound_user TEXT,
        bound_display_name TEXT,
        bound_at TEXT
    );
    INSERT INTO kiosk_sessions_v10
        (token_id, created_at, expires_at, bound_user, bound_display_name, bound_at)
        SELECT token_id, created_at, expires_at, bound_user, bound_display_name, bound_at
        FROM kiosk_sessions;
    DROP TABLE kiosk_sessions;
    DROP TABLE tokens;
    ALTER TABLE tokens_v10 RENAME TO tokens;
    ALTER TABLE kiosk_sessions_v10 RENAME TO kiosk_sessions;
    "#,
    // 12: the SMS fraud guard (`[sms.fraud]`). `sms_fraud_counts`: messages and verified codes
    // per E.164 prefix per time bucket (Unix ms of the bucket's start), pruned by age as
    // messages are counted; `sms_fraud_blocks`: one row per prefix ever blocked, in force while
    // `blocked_until` is ahead; `sms_monthly_usage`: messages reserved per calendar month (UTC,
    // `YYYY-MM`), and when the month's cap was reached (audited once).
    r#"
    CREATE TABLE sms_fraud_counts (
        prefix TEXT NOT NULL,
        bucket_start INTEGER NOT NULL,
        sends INTEGER NOT NULL DEFAULT 0 CHECK (sends >= 0),
        verified INTEGER NOT NULL DEFAULT 0 CHECK (verified >= 0),
        PRIMARY KEY (prefix, bucket_start)
    );
    CREATE INDEX sms_fraud_counts_age ON sms_fraud_counts (bucket_start);
    CREATE TABLE sms_fraud_blocks (
        prefix TEXT PRIMARY KEY,
        blocked_at INTEGER NOT NULL,
        blocked_until INTEGER NOT NULL,
        sends INTEGER NOT NULL,
        verified INTEGER NOT NULL
    );
    CREATE TABLE sms_monthly_usage (
        month TEXT PRIMARY KEY,
        messages INTEGER NOT NULL CHECK (messages >= 0),
        cap_reached_at INTEGER
    );
    "#,
    // 13: account closure (`retention.rs`): when and by whom a user was closed; the purge
    // finds closed users past their grace period by `users_closed` (closed users only). The
    // history tables' purge by age reads their existing time indexes; the outbox history's
    // needs one of its own.
    r#"
    ALTER TABLE users ADD COLUMN closed_at TEXT;
    ALTER TABLE users ADD COLUMN closed_by TEXT;
    CREATE INDEX users_closed ON users (closed_at) WHERE closed_at IS NOT NULL;
    CREATE INDEX sms_outbox_history_created ON sms_outbox_history (created_at);
    CREATE INDEX sms_challenges_history_user ON sms_challenges_history (user_name);
    CREATE INDEX ceremonies_user ON ceremonies (user_name);
    CREATE INDEX ceremonies_history_user ON ceremonies_history (user_name);
    "#,
    // 14: event hooks (`store/hooks.rs`): the fan-out's cursor over the audit log and one
    // delivery row per (hook URL, audit line). Times are Unix milliseconds.
    r#"
    CREATE TABLE hook_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        audit_seq INTEGER NOT NULL
    );
    CREATE TABLE hook_deliveries (
        id TEXT PRIMARY KEY,
        hook_url TEXT NOT NULL,
        event TEXT NOT NULL,
        audit_seq INTEGER NOT NULL,
        payload TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        delivered_at INTEGER,
        UNIQUE (hook_url, audit_seq)
    );
    CREATE INDEX hook_deliveries_due ON hook_deliveries (state, next_attempt_at);
    CREATE INDEX hook_deliveries_audit ON hook_deliveries (audit_seq);
    "#,
    // 15: the key inventory (`inventory.rs`) pages through the credentials grouped by AAGUID,
    // in enrollment order; without this index every page read and sorted the whole table.
    r#"
    CREATE INDEX credentials_inventory ON credentials (aaguid, created_at, id);
    "#,
    // 16: several daemons on one campus store. A ceremony records the daemon (`node`) that
    // runs it, so that a restarted daemon fails only its own interrupted ceremonies; an outbox
    // message records the daemon that claimed it, so that a restarted daemon releases its own
    // claims at once instead of waiting for their lease. The history tables keep the columns
    // of their hot tables (the sweep copies rows whole).
    r#"
    ALTER TABLE ceremonies ADD COLUMN node TEXT;
    ALTER TABLE ceremonies_history ADD COLUMN node TEXT;
    ALTER TABLE sms_outbox ADD COLUMN claimed_by TEXT;
    ALTER TABLE sms_outbox_history ADD COLUMN claimed_by TEXT;
    "#,
    // 17: Entra passkeys in the key inventory (`inventory/`). A passkey reported lost is
    // deleted from the user's Entra account and kept here as `lost` (the service desk's
    // record of what happened to the key); the inventory pages through the passkeys grouped
    // by AAGUID, in enrollment order, like the local credentials (migration 15).
    r#"
    ALTER TABLE entra_passkeys ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'lost'));
    ALTER TABLE entra_passkeys ADD COLUMN state_reason TEXT;
    CREATE INDEX entra_passkeys_inventory ON entra_passkeys (aaguid, created_at, credential_id);
    "#,
    // 18: the hourly SMS budgets of a campus store, counted per minute (`sms_send_minutes`):
    // scope `*` (every send) or a country calling code, the minute's start (Unix ms), its
    // sends. A check reads at most 61 rows per scope, where counting the send log would read
    // every send of the hour. (One daemon on its file keeps these counts in memory.)
    r#"
    CREATE TABLE sms_send_minutes (
        scope TEXT NOT NULL,
        minute INTEGER NOT NULL,
        sends INTEGER NOT NULL,
        PRIMARY KEY (scope, minute)
    );
    CREATE INDEX sms_send_minutes_age ON sms_send_minutes (minute);
    "#,
];

/// A migration's step in Rust, run in its transaction after its SQL (by version: keep the
/// number in step when migrations are renumbered).
type RustStep = fn(&Connection) -> super::db::Result<()>;
const RUST_STEPS: &[(i64, RustStep)] = &[(10, super::audit_writer::chain_existing)];

/// The first schema version with the audit chain (`keygate audit verify` needs it).
pub(super) const AUDIT_CHAIN_VERSION: i64 = 10;

/// The schema version of the database on `conn`.
pub(super) fn current_version(conn: &Connection) -> super::db::Result<i64> {
    match conn.backend() {
        Backend::Sqlite => conn.query_row("PRAGMA user_version", [], |r| r.get(0)),
        Backend::Postgres => super::migrations_pg::current_version(conn),
    }
}

/// Bring the database on `conn` to the newest schema, one migration per transaction.
pub fn run(conn: &Connection) -> super::db::Result<()> {
    if conn.backend() == Backend::Postgres {
        return super::migrations_pg::run(conn);
    }
    let current = current_version(conn)?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= current {
            continue;
        }
        conn.begin_write()?;
        let applied = (|| {
            conn.execute_batch(sql)?;
            for (_, step) in RUST_STEPS.iter().filter(|(v, _)| *v == version) {
                step(conn)?;
            }
            conn.execute_batch(&format!("PRAGMA user_version = {version}"))?;
            conn.commit()
        })();
        if let Err(e) = applied {
            let _ = conn.rollback();
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Migration 10 keeps every token and kiosk session, lets `metrics` in, and leaves the
    /// sessions' reference to `tokens` enforced.
    #[test]
    fn the_metrics_role_migration_keeps_tokens_and_sessions() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        for (i, sql) in MIGRATIONS[..9].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO tokens VALUES ('k1', 'kiosk', x'01', 'page', '2026-01-01T00:00:00Z', 0);
             INSERT INTO kiosk_sessions VALUES ('k1', '2026-01-01T00:00:00Z', 99, 'ana', 'Ana', NULL);",
        )
        .unwrap();
        assert!(conn
            .execute_batch("INSERT INTO tokens VALUES ('m0', 'metrics', x'02', NULL, 't', 0)")
            .is_err());
        let conn = Connection::from(conn);
        run(&conn).unwrap();
        let session: (String, String) = conn
            .query_row(
                "SELECT t.role, s.bound_user FROM kiosk_sessions s JOIN tokens t ON t.id = s.token_id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(session, ("kiosk".into(), "ana".into()));
        conn.execute_batch("INSERT INTO tokens VALUES ('m1', 'metrics', x'02', NULL, 't', 0)")
            .unwrap();
        assert!(conn
            .execute_batch("INSERT INTO tokens VALUES ('x1', 'root', x'03', NULL, 't', 0)")
            .is_err());
        assert!(
            conn.execute_batch(
                "INSERT INTO kiosk_sessions VALUES ('nope', 't', 1, NULL, NULL, NULL)"
            )
            .is_err(),
            "the session's token must exist"
        );
    }
}
