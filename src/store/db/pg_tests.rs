//! The transaction contract of the PostgreSQL connection on a real server (the test cluster):
//! pipelined statements, savepoints, and commits of transactions a statement failed in.

use super::{params, Connection, Error};
use crate::harness::pg;

fn fresh() -> Connection {
    let cluster = pg::cluster();
    let c = cluster.connect(&cluster.new_database());
    c.execute_batch("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .unwrap();
    c
}

fn count(c: &Connection) -> i64 {
    c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn pipelined_writes_are_seen_by_the_next_read_and_committed() {
    let c = fresh();
    let sent_before = super::statements_sent();
    c.begin_write().unwrap();
    for id in 0..3i64 {
        c.prepare_cached("INSERT INTO t (id, v) VALUES (?1, ?2)")
            .unwrap()
            .execute_later(params![id, "x"])
            .unwrap();
    }
    assert_eq!(count(&c), 3, "a read after pipelined writes sees them");
    // BEGIN and the campus lock, three inserts, the count (other tests may add theirs).
    assert!(super::statements_sent() - sent_before >= 6);
    c.commit().unwrap();
    assert_eq!(count(&c), 3);
}

#[test]
fn a_failed_pipelined_write_fails_the_commit_and_keeps_nothing() {
    let c = fresh();
    c.begin_write().unwrap();
    let mut insert = c
        .prepare_cached("INSERT INTO t (id, v) VALUES (?1, ?2)")
        .unwrap();
    insert.execute_later(params![1i64, "a"]).unwrap();
    // The same key again: refused by the server, but only seen with the next statement.
    insert.execute_later(params![1i64, "b"]).unwrap();
    c.execute_batch("SAVEPOINT u").unwrap();
    c.execute_batch("ROLLBACK TO u; RELEASE u").unwrap();
    let commit = c.commit();
    assert!(
        commit.is_err(),
        "the commit must fail, not roll back silently"
    );
    assert!(c.is_autocommit());
    assert_eq!(count(&c), 0, "nothing of the failed transaction is kept");
}

#[test]
fn a_failure_undone_by_rollback_to_lets_the_rest_commit() {
    let c = fresh();
    c.begin_write().unwrap();
    c.execute(
        "INSERT INTO t (id, v) VALUES (?1, ?2)",
        params![1i64, "kept"],
    )
    .unwrap();
    c.execute_batch("SAVEPOINT unit").unwrap();
    let dup = c.execute(
        "INSERT INTO t (id, v) VALUES (?1, ?2)",
        params![1i64, "dup"],
    );
    assert!(
        matches!(dup, Err(ref e) if e.is_unique_violation()),
        "{dup:?}"
    );
    c.execute_batch("ROLLBACK TO unit; RELEASE unit").unwrap();
    c.commit().unwrap();
    let v: String = c
        .query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "kept");
}

#[test]
fn a_failure_nobody_undid_fails_the_commit() {
    let c = fresh();
    c.begin_write().unwrap();
    c.execute("INSERT INTO t (id, v) VALUES (?1, ?2)", params![1i64, "a"])
        .unwrap();
    let dup = c.execute("INSERT INTO t (id, v) VALUES (?1, ?2)", params![1i64, "b"]);
    assert!(dup.is_err());
    match c.commit() {
        Err(Error::Pg { code, .. }) => assert_eq!(code, "25P02"),
        other => panic!("expected a failed commit, got {other:?}"),
    }
    assert_eq!(count(&c), 0);
}

#[test]
fn the_writer_connection_works_from_inside_a_runtime_too() {
    let c = writer_on(&pg::cluster().new_database());
    let outside: i64 = c.query_row("SELECT 1", [], |r| r.get(0)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inside: i64 = rt.block_on(async { c.query_row("SELECT 2", [], |r| r.get(0)).unwrap() });
    assert_eq!((outside, inside), (1, 2));
    drop(rt);
    // Dropped inside a runtime: must not block or panic.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move { drop(c) });
}

/// Every backend of database `name` but the caller's own ends (as in a server restart).
fn terminate_others(name: &str) {
    pg::cluster()
        .connect(name)
        .execute_batch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
}

fn writer_on(name: &str) -> Connection {
    let target =
        super::PgTarget::parse(&pg::cluster().url(name), std::time::Duration::from_secs(30))
            .unwrap();
    let now: super::NowFn = std::sync::Arc::new(|| "2026-01-01T00:00:00Z".to_string());
    Connection::postgres_writer(std::sync::Arc::new(target), now)
}

#[test]
fn a_connection_lost_inside_a_transaction_never_lets_the_rest_commit_alone() {
    let cluster = pg::cluster();
    let name = cluster.new_database();
    let c = writer_on(&name);
    c.execute_batch("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .unwrap();
    let insert = |id: i64| c.execute("INSERT INTO t (id, v) VALUES (?1, 'x')", params![id]);
    c.begin_write().unwrap();
    insert(1).unwrap();
    terminate_others(&name);
    assert!(insert(2).is_err(), "the connection is gone");
    // No reconnect inside the transaction: these would commit one by one without 1.
    assert!(insert(3).is_err(), "still inside the lost transaction");
    assert!(matches!(c.commit(), Err(Error::Unavailable(_))));
    // The next transaction opens a new connection.
    c.begin_write().unwrap();
    insert(4).unwrap();
    c.commit().unwrap();
    let ids: Vec<i64> = c
        .prepare("SELECT id FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, vec![4]);
}

#[test]
fn a_writer_connection_closed_while_idle_is_replaced_without_failing_a_transaction() {
    let cluster = pg::cluster();
    let name = cluster.new_database();
    let c = writer_on(&name);
    c.execute_batch("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
        .unwrap();
    terminate_others(&name);
    std::thread::sleep(std::time::Duration::from_millis(200));
    c.begin_write().unwrap();
    c.execute("INSERT INTO t (id, v) VALUES (?1, 'x')", params![1i64])
        .unwrap();
    c.commit().unwrap();
    assert_eq!(count(&c), 1);
}
