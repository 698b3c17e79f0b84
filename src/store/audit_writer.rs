//! Appending to the audit chain: the writer's cached head, the signed head, the guarded purge
//! and the migration that chains the entries written before the chain existed.
//!
//! Contract: every audit entry is appended by [`append`] on the writing connection, inside
//! the transaction of the change it records. The head (newest seq and hash) is cached in
//! memory ([`AuditChain`]) so that an append reads nothing: it hashes once and inserts once.
//! The cache follows the transaction: the engine reports every transaction's end
//! ([`transaction_ended`]) and every savepoint rolled back ([`snapshot`] / [`restore`]); after
//! a rollback the head is read again at the next append, inside that append's transaction.
//! Another process appending meanwhile (a `keygate` command beside the daemon) takes the seq
//! the cache expected: the insert then fails on the primary key, and the append reads the
//! head and tries again.
//!
//! The chain is installed per thread: for good on the writer thread, for the duration of a
//! [`super::Store::tx`] on its caller's thread. An append on a thread without one reads the
//! head from the database.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::db::{params, Connection, OptionalExtension};

use super::audit::NewAudit;
use super::audit_chain::{
    canonical_json, entry_hash, hash32, EntryFields, HeadKey, StoredEntry, ENTRY_COLUMNS, GENESIS,
    HEAD_EVERY,
};
use super::{exec, fmt_time, prepare, Result, StoreError};
use crate::base::clock::Clock;
use crate::base::sync::lock;

/// The newest entry of the chain (or, before any, where the first one links to).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Head {
    pub seq: i64,
    pub hash: [u8; 32],
}

/// A head with its signature, as stored in `audit_signed_head`.
#[derive(Debug, Clone)]
pub(super) struct SignedHead {
    pub head: Head,
    pub signature: [u8; 32],
    pub at: String,
}

/// What the writer knows beyond the database: the head (None: read it at the next append)
/// and the signed head stored by the open transaction, to be logged once it commits.
#[derive(Debug, Clone, Default)]
pub(super) struct Cached {
    head: Option<Head>,
    announce: Option<SignedHead>,
}

/// The audit chain of one store: its cached head, its head key, its clock and the
/// connection-local permit that lets [`super::Store::purge_audit_before`] past the trigger.
pub(super) struct AuditChain {
    cached: Mutex<Cached>,
    pub(super) key: HeadKey,
    clock: Arc<dyn Clock>,
    purging: Arc<AtomicBool>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<AuditChain>>> = const { RefCell::new(None) };
}

/// The chain installed on this thread.
fn current() -> Option<Arc<AuditChain>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Install `chain` on this thread for good (the writer thread).
pub(super) fn install(chain: Arc<AuditChain>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(chain));
}

/// `chain` installed on this thread until the scope is dropped (then the previous one is back).
pub(super) struct Scope(Option<Arc<AuditChain>>);

pub(super) fn enter(chain: &Arc<AuditChain>) -> Scope {
    Scope(CURRENT.with(|c| c.borrow_mut().replace(chain.clone())))
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// The transaction on this thread's chain ended: committed (log the signed head it stored) or
/// rolled back (forget the cached head).
pub(super) fn transaction_ended(committed: bool) {
    let Some(chain) = current() else {
        return;
    };
    let announce = {
        let mut cached = lock(&chain.cached);
        if !committed {
            *cached = Cached::default();
        }
        cached.announce.take()
    };
    if let Some(s) = announce {
        tracing::info!(
            target: "keygate::audit",
            seq = s.head.seq,
            hash = %hex::encode(s.head.hash),
            signature = %hex::encode(s.signature),
            "audit head"
        );
    }
}

/// Another writer may have appended since this thread's chain last looked (a campus store
/// shared by several daemons): read the head again at the next append.
pub(super) fn forget_head() {
    if let Some(chain) = current() {
        lock(&chain.cached).head = None;
    }
}

/// The cache as it is now, to [`restore`] when a savepoint taken now is rolled back.
pub(super) fn snapshot() -> Option<Cached> {
    current().map(|chain| lock(&chain.cached).clone())
}

/// A savepoint was rolled back: the cache goes back to what it was when it was taken.
pub(super) fn restore(snapshot: Option<Cached>) {
    if let (Some(chain), Some(s)) = (current(), snapshot) {
        *lock(&chain.cached) = s;
    }
}

/// Append `a` to the chain inside the open transaction on `c`; returns its seq.
pub(super) fn append(c: &Connection, a: &NewAudit) -> Result<i64> {
    match current() {
        Some(chain) => chain.append(c, a),
        None => {
            let at: String = c.query_row("SELECT keygate_now()", [], |r| r.get(0))?;
            let head = read_head(c)?;
            Ok(insert(c, a, &at, &canonical_json(&a.detail), head)?.seq)
        }
    }
}

/// Whether `e` is an insert refused because its seq is taken.
fn seq_taken(e: &super::db::Error) -> bool {
    e.is_unique_violation()
}

/// Insert `a` as the entry after `head`.
fn insert(
    c: &Connection,
    a: &NewAudit,
    at: &str,
    detail: &str,
    head: Head,
) -> super::db::Result<Head> {
    let fields = EntryFields {
        seq: head.seq + 1,
        at,
        event: &a.event,
        user: a.user.as_deref(),
        credential_id: a.credential_id.as_deref(),
        ceremony_id: a.ceremony_id.as_deref(),
        actor: &a.actor,
        detail,
    };
    let hash = entry_hash(&fields, &head.hash);
    prepare(
        c,
        "INSERT INTO audit (seq, at, event, user_name, credential_id, ceremony_id, actor, detail, \
         prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute_later(params![
        fields.seq,
        at,
        a.event,
        a.user,
        a.credential_id,
        a.ceremony_id,
        a.actor,
        detail,
        &head.hash[..],
        &hash[..]
    ])?;
    Ok(Head {
        seq: fields.seq,
        hash,
    })
}

/// The head as the database has it: the newest entry, else the newest retention anchor's
/// predecessor, else the genesis.
pub(super) fn read_head(c: &Connection) -> Result<Head> {
    let newest = prepare(c, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
        })
        .optional()?;
    if let Some((seq, hash)) = newest {
        let hash = hash32(hash.as_deref()).unwrap_or_else(|| {
            tracing::error!(target: "keygate::audit", seq, "the newest audit entry has no hash");
            GENESIS
        });
        return Ok(Head { seq, hash });
    }
    let anchor = prepare(
        c,
        "SELECT seq, prev_hash FROM audit_anchor ORDER BY seq DESC LIMIT 1",
    )?
    .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
    .optional()?;
    Ok(match anchor {
        Some((seq, prev)) => Head {
            seq: seq - 1,
            hash: hash32(Some(&prev)).unwrap_or(GENESIS),
        },
        None => Head {
            seq: 0,
            hash: GENESIS,
        },
    })
}

impl AuditChain {
    pub(super) fn new(key: HeadKey, clock: Arc<dyn Clock>) -> AuditChain {
        AuditChain {
            cached: Mutex::new(Cached::default()),
            key,
            clock,
            purging: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Register `keygate_audit_purging()` on the writing SQLite connection: true only while
    /// [`AuditChain::purging`] runs, so the delete trigger lets only that purge through.
    pub(super) fn register(&self, c: &rusqlite::Connection) -> Result<()> {
        let purging = self.purging.clone();
        c.create_scalar_function(
            "keygate_audit_purging",
            0,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8,
            move |_| Ok(purging.load(Ordering::SeqCst)),
        )?;
        Ok(())
    }

    /// Read the head at open and check the newest entry against its hash (a mismatch is
    /// logged; `keygate audit verify` tells the whole story). Appends chain onto it.
    pub(super) fn open_head(&self, c: &Connection) -> Result<()> {
        let head = read_head(c)?;
        let newest = c
            .query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM audit WHERE seq = ?1"),
                params![head.seq],
                StoredEntry::read,
            )
            .optional()?;
        if let Some(e) = newest {
            let intact = hash32(e.prev_hash.as_deref())
                .is_some_and(|p| entry_hash(&e.fields(head.seq), &p) == head.hash);
            if !intact {
                tracing::error!(
                    target: "keygate::audit",
                    seq = head.seq,
                    "the newest audit entry does not match its hash: run `keygate audit verify`"
                );
            }
        }
        lock(&self.cached).head = Some(head);
        Ok(())
    }

    fn append(&self, c: &Connection, a: &NewAudit) -> Result<i64> {
        let detail = canonical_json(&a.detail);
        let at = fmt_time(self.clock.now());
        let mut cached = lock(&self.cached);
        let head = match cached.head {
            Some(h) => h,
            None => read_head(c)?,
        };
        let new = match insert(c, a, &at, &detail, head) {
            Ok(new) => new,
            Err(e) if seq_taken(&e) => insert(c, a, &at, &detail, read_head(c)?)?,
            Err(e) => return Err(e.into()),
        };
        cached.head = Some(new);
        if new.seq % HEAD_EVERY == 0 {
            let signed = SignedHead {
                head: new,
                signature: self.key.sign(new.seq, &new.hash),
                at,
            };
            exec(
                c,
                "INSERT INTO audit_signed_head (id, seq, hash, signature, at) \
                 VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, \
                 hash = excluded.hash, signature = excluded.signature, at = excluded.at",
                params![new.seq, &new.hash[..], &signed.signature[..], signed.at],
            )?;
            cached.announce = Some(signed);
        }
        Ok(new.seq)
    }

    /// Run `f` (the purge's DELETE) with the delete trigger's permit; the permit ends with it,
    /// whatever `f` does.
    pub(super) fn purging<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Permit<'a>(&'a AtomicBool);
        impl Drop for Permit<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        self.purging.store(true, Ordering::SeqCst);
        let _permit = Permit(&self.purging);
        f()
    }
}

/// The triggers of the chained audit log: no entry is ever updated; an entry is deleted only
/// by the purge (its permit set on the writing connection) and only below the newest
/// retention anchor, which the purge records first in the same transaction. Anchors
/// themselves are never changed.
const TRIGGERS: &str = r#"
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        WHEN NOT keygate_audit_purging()
            OR OLD.seq >= coalesce((SELECT max(seq) FROM audit_anchor), 0)
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TRIGGER audit_anchor_no_update BEFORE UPDATE ON audit_anchor
        BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only'); END;
    CREATE TRIGGER audit_anchor_no_delete BEFORE DELETE ON audit_anchor
        BEGIN SELECT RAISE(ABORT, 'audit anchors are append-only'); END;
"#;

/// Entries chained per round of the migration.
const CHAIN_ROUND: i64 = 1000;

/// Migration step (after the SQL that adds the columns and drops the old triggers): chain
/// the existing entries in seq order from the genesis (or, when the oldest is not seq 1, from
/// an anchor recorded for it), then create the triggers.
pub(super) fn chain_existing(c: &Connection) -> super::db::Result<()> {
    let first: Option<i64> = c.query_row("SELECT min(seq) FROM audit", [], |r| r.get(0))?;
    if let Some(first) = first.filter(|&s| s != 1) {
        c.execute(
            "INSERT INTO audit_anchor (seq, prev_hash, at) VALUES (?1, ?2, keygate_now())",
            params![first, &GENESIS[..]],
        )?;
    }
    let mut prev = GENESIS;
    let mut after = i64::MIN;
    loop {
        let rows: Vec<StoredEntry> = {
            let mut st = c.prepare(&format!(
                "SELECT {ENTRY_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = st.query_map(params![after, CHAIN_ROUND], StoredEntry::read)?;
            rows.collect::<super::db::Result<_>>()?
        };
        let Some(last) = rows.last() else {
            break;
        };
        after = last.seq;
        for e in &rows {
            let hash = entry_hash(&e.fields(e.seq), &prev);
            c.execute(
                "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                params![&prev[..], &hash[..], e.seq],
            )?;
            prev = hash;
        }
    }
    c.execute_batch(TRIGGERS)
}

/// `Err` for a purge that would cut the chain where it does not link (it would hide what
/// `keygate audit verify` should report).
pub(super) fn broken_link(seq: i64) -> StoreError {
    StoreError::Conflict(format!(
        "the audit chain does not link at seq {seq}; run `keygate audit verify`"
    ))
}
