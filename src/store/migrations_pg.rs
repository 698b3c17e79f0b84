//! The campus store's schema (PostgreSQL). The SQLite migrations in `migrations.rs` are the
//! history of the embedded store; a campus store starts from the baseline below, which is
//! the SQLite schema at [`BASELINE`] in PostgreSQL's types (INTEGER -> BIGINT, BLOB ->
//! BYTEA, the triggers as PL/pgSQL), and every later migration is written in both dialects
//! (a test holds the two lists in step).
//!
//! Two daemons starting at once migrate one after the other: the migration runs under a
//! session advisory lock, and the second finds the version already there.

use super::db::{Connection, Result};

/// The SQLite schema version the PostgreSQL baseline reproduces.
pub(super) const BASELINE: i64 = 14;

/// The session advisory lock held while migrating ("kgmigrat").
const MIGRATION_LOCK: i64 = 0x6b67_6d69_6772_6174;

/// PostgreSQL migrations after the baseline, by the version they bring the schema to.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (BASELINE, BASELINE_SQL),
    (
        15,
        "CREATE INDEX credentials_inventory ON credentials (aaguid, created_at, id);",
    ),
    (
        16,
        "ALTER TABLE ceremonies ADD COLUMN node TEXT; \
         ALTER TABLE ceremonies_history ADD COLUMN node TEXT; \
         ALTER TABLE sms_outbox ADD COLUMN claimed_by TEXT; \
         ALTER TABLE sms_outbox_history ADD COLUMN claimed_by TEXT;",
    ),
    (
        17,
        "ALTER TABLE entra_passkeys ADD COLUMN state TEXT NOT NULL DEFAULT 'active' \
         CHECK (state IN ('active', 'lost')); \
         ALTER TABLE entra_passkeys ADD COLUMN state_reason TEXT; \
         CREATE INDEX entra_passkeys_inventory ON entra_passkeys (aaguid, created_at, credential_id);",
    ),
    (
        18,
        "CREATE TABLE sms_send_minutes (scope TEXT NOT NULL, minute BIGINT NOT NULL, \
         sends BIGINT NOT NULL, PRIMARY KEY (scope, minute)); \
         CREATE INDEX sms_send_minutes_age ON sms_send_minutes (minute);",
    ),
];

pub(super) fn current_version(c: &Connection) -> Result<i64> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS keygate_schema (id BIGINT PRIMARY KEY CHECK (id = 1), \
         version BIGINT NOT NULL)",
    )?;
    let v: Option<i64> =
        c.query_row("SELECT max(version) FROM keygate_schema", [], |r| r.get(0))?;
    Ok(v.unwrap_or(0))
}

pub(super) fn run(c: &Connection) -> Result<()> {
    c.execute_batch(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
    let out = apply(c);
    let unlocked = c.execute_batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
    out.and(unlocked)
}

fn apply(c: &Connection) -> Result<()> {
    let current = current_version(c)?;
    for &(version, sql) in MIGRATIONS {
        if version <= current {
            continue;
        }
        c.begin_write()?;
        let applied = (|| {
            c.execute_batch(sql)?;
            c.execute(
                "INSERT INTO keygate_schema (id, version) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                [version],
            )?;
            c.commit()
        })();
        if let Err(e) = applied {
            if !c.is_autocommit() {
                let _ = c.rollback();
            }
            return Err(e);
        }
    }
    Ok(())
}

const BASELINE_SQL: &str = r#"
CREATE TABLE users (
              name TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        user_handle BYTEA NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    , closed_at TEXT, closed_by TEXT);
CREATE TABLE credentials (
              id BYTEA PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        rp_credential TEXT NOT NULL,
        public_key_cose BYTEA NOT NULL,
        counter BIGINT NOT NULL CHECK (counter >= 0),
        aaguid TEXT,
        attestation_format TEXT NOT NULL,
        attested BIGINT NOT NULL,
        discoverable BIGINT NOT NULL,
        user_verified BIGINT NOT NULL,
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
    , created_by TEXT);
CREATE TABLE audit (
              seq BIGINT PRIMARY KEY,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        user_name TEXT,
        credential_id TEXT,
        ceremony_id TEXT,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL
    , prev_hash BYTEA, hash BYTEA);
CREATE INDEX audit_user ON audit(user_name, seq);
CREATE TABLE phones (
              id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        e164 TEXT NOT NULL,
        label TEXT,
        verified BIGINT NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        verified_at TEXT, entra_state TEXT
        CHECK (entra_state IN ('pending', 'synced', 'failed')), entra_method_id TEXT, entra_error TEXT,
        UNIQUE (user_name, e164)
    );
CREATE TABLE sms_challenges (
              id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        phone_id TEXT,
        e164 TEXT NOT NULL,
        purpose TEXT NOT NULL CHECK (purpose IN ('verify_phone', 'sign_in')),
        locale TEXT NOT NULL,
        code_mac BYTEA NOT NULL,
        code_enc BYTEA,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        resends BIGINT NOT NULL DEFAULT 0,
        last_sent_at BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'verified', 'failed', 'cancelled')),
        delivery_status TEXT NOT NULL DEFAULT 'queued',
        idempotency_key TEXT, idempotency_hash BYTEA, created_by TEXT,
        UNIQUE (user_name, idempotency_key)
    );
CREATE TABLE sms_outbox (
              id TEXT PRIMARY KEY,
        challenge_id TEXT NOT NULL REFERENCES sms_challenges(id),
        created_at BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'dropped')),
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        provider TEXT,
        provider_message_id TEXT,
        last_error TEXT,
        sent_at BIGINT
    );
CREATE INDEX sms_outbox_due ON sms_outbox (state, next_attempt_at);
CREATE INDEX sms_outbox_provider_id ON sms_outbox (provider, provider_message_id);
CREATE TABLE sms_sends (
              e164 TEXT NOT NULL,
        country_code BIGINT NOT NULL,
        at BIGINT NOT NULL
    );
CREATE INDEX sms_sends_at ON sms_sends (at);
CREATE INDEX sms_sends_number ON sms_sends (e164, at);
CREATE TABLE sms_user_state (
              user_name TEXT PRIMARY KEY,
        consecutive_failures BIGINT NOT NULL DEFAULT 0,
        locked_until BIGINT NOT NULL DEFAULT 0
    );
CREATE TABLE kiosk_codes (
              code_hash BYTEA PRIMARY KEY,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT
    );
CREATE TABLE kiosk_handoffs_used (
              token_hash BYTEA PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
CREATE INDEX sms_challenges_code_kept ON sms_challenges (expires_at) WHERE code_enc IS NOT NULL;
CREATE UNIQUE INDEX sms_challenges_idempotency ON sms_challenges (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
CREATE TABLE entra_passkeys (
              credential_id BYTEA PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name),
        upn TEXT NOT NULL,
        method_id TEXT NOT NULL,
        rp_id TEXT NOT NULL,
        entra_user_id BYTEA NOT NULL,
        public_key_cose BYTEA NOT NULL,
        counter BIGINT NOT NULL CHECK (counter >= 0),
        aaguid TEXT,
        model TEXT,
        attestation_level TEXT,
        display_name TEXT NOT NULL,
        cred_protect BIGINT,
        hmac_secret BIGINT NOT NULL,
        user_verified BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT,
        last_used_at TEXT
    );
CREATE INDEX entra_passkeys_user ON entra_passkeys (user_name);
CREATE INDEX entra_passkeys_method ON entra_passkeys (method_id);
CREATE INDEX sms_challenges_pending_phone ON sms_challenges (phone_id) WHERE state = 'pending';
CREATE INDEX kiosk_handoffs_used_expiry ON kiosk_handoffs_used (expires_at);
CREATE INDEX sms_challenges_created ON sms_challenges (created_at);
CREATE INDEX sms_outbox_challenge ON sms_outbox (challenge_id);
CREATE INDEX ceremonies_updated ON ceremonies (updated_at);
CREATE TABLE sms_challenges_history(
        id TEXT,
        user_name TEXT,
        phone_id TEXT,
        e164 TEXT,
        purpose TEXT,
        locale TEXT,
        code_mac BYTEA,
        code_enc BYTEA,
        created_at BIGINT,
        expires_at BIGINT,
        attempts BIGINT,
        resends BIGINT,
        last_sent_at BIGINT,
        state TEXT,
        delivery_status TEXT,
        idempotency_key TEXT,
        idempotency_hash BYTEA,
        created_by TEXT
);
CREATE INDEX sms_challenges_history_created ON sms_challenges_history (created_at);
CREATE TABLE sms_outbox_history(
        id TEXT,
        challenge_id TEXT,
        created_at BIGINT,
        state TEXT,
        attempts BIGINT,
        next_attempt_at BIGINT,
        provider TEXT,
        provider_message_id TEXT,
        last_error TEXT,
        sent_at BIGINT
);
CREATE INDEX sms_outbox_history_challenge ON sms_outbox_history (challenge_id);
CREATE TABLE sms_sends_history(
        e164 TEXT,
        country_code BIGINT,
        at BIGINT
);
CREATE INDEX sms_sends_history_at ON sms_sends_history (at);
CREATE TABLE ceremonies_history(
        id TEXT,
        kind TEXT,
        user_name TEXT,
        state TEXT,
        error_code TEXT,
        created_at TEXT,
        updated_at TEXT,
        expires_at TEXT,
        created_by TEXT
);
CREATE INDEX ceremonies_history_updated ON ceremonies_history (updated_at);
CREATE TABLE audit_anchor (
              seq BIGINT PRIMARY KEY,
        prev_hash BYTEA NOT NULL,
        at TEXT NOT NULL
    );
CREATE TABLE audit_signed_head (
              id BIGINT PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        signature BYTEA NOT NULL,
        at TEXT NOT NULL
    );
CREATE TABLE tokens (
              id TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('kiosk', 'admin', 'metrics')),
        hash BYTEA NOT NULL,
        label TEXT,
        created_at TEXT NOT NULL,
        revoked BIGINT NOT NULL DEFAULT 0
    );
CREATE TABLE kiosk_sessions (
              token_id TEXT PRIMARY KEY REFERENCES tokens(id),
        created_at TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        bound_user TEXT,
        bound_display_name TEXT,
        bound_at TEXT
    );
CREATE TABLE sms_fraud_counts (
              prefix TEXT NOT NULL,
        bucket_start BIGINT NOT NULL,
        sends BIGINT NOT NULL DEFAULT 0 CHECK (sends >= 0),
        verified BIGINT NOT NULL DEFAULT 0 CHECK (verified >= 0),
        PRIMARY KEY (prefix, bucket_start)
    );
CREATE INDEX sms_fraud_counts_age ON sms_fraud_counts (bucket_start);
CREATE TABLE sms_fraud_blocks (
              prefix TEXT PRIMARY KEY,
        blocked_at BIGINT NOT NULL,
        blocked_until BIGINT NOT NULL,
        sends BIGINT NOT NULL,
        verified BIGINT NOT NULL
    );
CREATE TABLE sms_monthly_usage (
              month TEXT PRIMARY KEY,
        messages BIGINT NOT NULL CHECK (messages >= 0),
        cap_reached_at BIGINT
    );
CREATE INDEX users_closed ON users (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX sms_outbox_history_created ON sms_outbox_history (created_at);
CREATE INDEX sms_challenges_history_user ON sms_challenges_history (user_name);
CREATE INDEX ceremonies_user ON ceremonies (user_name);
CREATE INDEX ceremonies_history_user ON ceremonies_history (user_name);
CREATE TABLE hook_cursor (
              id BIGINT PRIMARY KEY CHECK (id = 1),
        audit_seq BIGINT NOT NULL
    );
CREATE TABLE hook_deliveries (
              id TEXT PRIMARY KEY,
        hook_url TEXT NOT NULL,
        event TEXT NOT NULL,
        audit_seq BIGINT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        last_error TEXT,
        delivered_at BIGINT,
        UNIQUE (hook_url, audit_seq)
    );
CREATE INDEX hook_deliveries_due ON hook_deliveries (state, next_attempt_at);
CREATE INDEX hook_deliveries_audit ON hook_deliveries (audit_seq);
-- The audit log is append-only; an entry is deleted only by the purge (which sets
-- keygate.audit_purging for its transaction) and only below the newest retention anchor.
CREATE FUNCTION keygate_audit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit log is append-only';
    END IF;
    IF coalesce(current_setting('keygate.audit_purging', true), '') <> 'on'
        OR OLD.seq >= coalesce((SELECT max(seq) FROM audit_anchor), 0) THEN
        RAISE EXCEPTION 'audit log is append-only';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER audit_guard BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION keygate_audit_guard();
CREATE FUNCTION keygate_audit_anchor_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit anchors are append-only';
END $$;
CREATE TRIGGER audit_anchor_guard BEFORE UPDATE OR DELETE ON audit_anchor
    FOR EACH ROW EXECUTE FUNCTION keygate_audit_anchor_guard();
"#;

#[cfg(test)]
mod tests {
    /// Every SQLite migration after the baseline has its PostgreSQL twin, so both stores end
    /// at the same version.
    #[test]
    fn both_dialects_end_at_the_same_version() {
        let sqlite = super::super::migrations::MIGRATIONS.len() as i64;
        let pg = super::MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        assert_eq!(pg, sqlite, "add the PostgreSQL form of the new migration");
        assert!(super::MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
