//! The two dialects of the schema describe one schema: every table SQLite has, PostgreSQL has,
//! with the same columns in the same order and the same NOT NULL. The hot-table sweep moves rows
//! to history with `INSERT INTO x_history SELECT * FROM x`, and `keygate store migrate` copies
//! every table column by column: a column added to one dialect only, or in another place, would
//! break both on one backend alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keygate::harness::pg;
use keygate::store::db::{Connection, PgTarget};
use keygate::store::Store;

/// Table -> its columns in order, as (name, NOT NULL).
type Schema = BTreeMap<String, Vec<(String, bool)>>;

fn sqlite_schema(c: &Connection) -> Schema {
    let tables: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let cols: Vec<(String, bool)> = c
                .prepare(&format!("PRAGMA table_info({t})"))
                .unwrap()
                .query_map([], |r| {
                    let name: String = r.get(1)?;
                    let not_null: i64 = r.get(3)?;
                    let in_pk: i64 = r.get(5)?;
                    // SQLite lets a non-INTEGER primary key column hold NULL unless it says
                    // NOT NULL; PostgreSQL implies it. Compare what each enforces.
                    Ok((name, not_null != 0 || in_pk != 0))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (t, cols)
        })
        .collect()
}

fn postgres_schema(c: &Connection) -> Schema {
    let rows: Vec<(String, String, String)> = c
        .prepare(
            "SELECT table_name::text, column_name::text, is_nullable::text \
             FROM information_schema.columns WHERE table_schema = 'public' \
             ORDER BY table_name, ordinal_position",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut schema = Schema::new();
    for (table, column, nullable) in rows {
        schema
            .entry(table)
            .or_default()
            .push((column, nullable == "NO"));
    }
    schema
}

#[test]
fn sqlite_and_postgresql_have_the_same_tables_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("keygate.db")).unwrap();
    drop(sqlite);
    let sqlite = sqlite_schema(&Connection::open_sqlite(&dir.path().join("keygate.db")).unwrap());

    let cluster = pg::cluster();
    let name = cluster.new_database();
    let target = PgTarget::parse(&cluster.url(&name), Duration::from_secs(30)).unwrap();
    let campus = Store::open_postgres(
        Arc::new(target),
        &dir.path().join("campus-audit-head.key"),
        Arc::new(keygate::base::clock::SystemClock),
    )
    .unwrap();
    drop(campus);
    let mut postgres = postgres_schema(&cluster.connect(&name));
    // Only the campus store has these: the schema version (SQLite keeps it in its header) and,
    // once a daemon has started on it, the fingerprints of the keys every kiosk must share.
    assert!(postgres.remove("keygate_schema").is_some());
    postgres.remove("campus_keys");

    let tables = |s: &Schema| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(tables(&sqlite), tables(&postgres), "the same tables");
    assert!(sqlite.len() > 20, "the whole schema was read: {sqlite:?}");
    for (table, columns) in &sqlite {
        assert_eq!(
            columns, &postgres[table],
            "{table}: the same columns, in the same order, with the same NOT NULL"
        );
    }
}
