//! Schema migrations, applied in order inside one transaction each; `user_version` records
//! the last applied one. Never edit a released migration: append a new one.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
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
];

pub fn run(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= current {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}
