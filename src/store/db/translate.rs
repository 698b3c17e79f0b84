//! The store's SQL is written once, in SQLite's dialect; this rewrites a statement for
//! PostgreSQL. It knows exactly the constructs the store uses and nothing more:
//! - `?N` parameters become `$N` (a bare `?` takes the next number);
//! - `keygate_now()` (the store's clock) becomes one more text parameter, bound per call;
//! - `INSERT OR IGNORE` becomes `INSERT ... ON CONFLICT DO NOTHING`;
//! - `rowid` becomes `ctid` (the physical row id: both pick rows in a `DELETE ... IN`);
//! - `json_extract(col, '$.key')` becomes `(col::jsonb ->> 'key')`.
//!
//! Quoted strings and identifiers pass through untouched.

/// A statement rewritten for PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub sql: String,
    /// The statement's parameters as written (the `?N` it uses).
    pub params: usize,
    /// `keygate_now()` appears: bind the time as parameter `params + 1`.
    pub uses_now: bool,
}

const NOW: &str = "keygate_now()";

pub fn to_postgres(sql: &str) -> Translated {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut params = 0usize;
    let mut next_bare = 0usize;
    let mut uses_now = false;
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' {
            let end = quoted_end(b, i);
            out.push_str(&sql[i..end]);
            i = end;
        } else if c == b'?' {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let n = if j > i + 1 {
                sql[i + 1..j].parse().unwrap_or(0)
            } else {
                next_bare += 1;
                next_bare
            };
            params = params.max(n);
            null_safe_comparison(&mut out);
            out.push('$');
            out.push_str(&n.to_string());
            i = j;
        } else if sql[i..].starts_with(NOW) {
            uses_now = true;
            out.push('\u{1}');
            i += NOW.len();
        } else if is_word_start(b, i) && word_at(sql, i, "rowid") {
            out.push_str("ctid");
            i += 5;
        } else if is_word_start(b, i) && word_at(sql, i, "json_extract") {
            match json_extract(&sql[i..]) {
                Some((rewritten, used)) => {
                    out.push_str(&rewritten);
                    i += used;
                }
                None => {
                    out.push_str("json_extract");
                    i += "json_extract".len();
                }
            }
        } else {
            let ch = sql[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    let now_param = format!("${}::text", params + 1);
    let mut sql = out.replace('\u{1}', &now_param);
    if let Some(at) = find_ci(&sql, "INSERT OR IGNORE") {
        sql.replace_range(at..at + "INSERT OR IGNORE".len(), "INSERT");
        match find_ci(&sql, " RETURNING ") {
            Some(r) => sql.insert_str(r, " ON CONFLICT DO NOTHING"),
            None => {
                let end = sql.trim_end().trim_end_matches(';').len();
                sql.insert_str(end, " ON CONFLICT DO NOTHING");
            }
        }
    }
    Translated {
        sql,
        params,
        uses_now,
    }
}

/// SQLite's `a IS ?1` / `a IS NOT ?1` compare with NULL as a value; PostgreSQL's `IS` takes
/// only NULL, TRUE or FALSE after it: `IS NOT DISTINCT FROM` / `IS DISTINCT FROM`.
fn null_safe_comparison(out: &mut String) {
    let trimmed = out.trim_end();
    let upper = trimmed.to_ascii_uppercase();
    for (sqlite, pg) in [
        (" IS NOT", " IS DISTINCT FROM"),
        (" IS", " IS NOT DISTINCT FROM"),
    ] {
        if upper.ends_with(sqlite) {
            let cut = trimmed.len() - sqlite.len();
            out.truncate(cut);
            out.push_str(pg);
            out.push(' ');
            return;
        }
    }
}

/// The index after the quoted string or identifier starting at `start` (a doubled quote
/// inside is part of it).
fn quoted_end(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let mut j = start + 1;
    while j < b.len() {
        if b[j] == q {
            if j + 1 < b.len() && b[j + 1] == q {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_word_start(b: &[u8], i: usize) -> bool {
    i == 0 || !is_ident(b[i - 1])
}

fn word_at(sql: &str, i: usize, word: &str) -> bool {
    sql[i..].starts_with(word)
        && sql
            .as_bytes()
            .get(i + word.len())
            .is_none_or(|&c| !is_ident(c))
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_uppercase().find(needle)
}

/// `json_extract(col, '$.key')` at the start of `s`: its rewrite and the bytes it spans.
fn json_extract(s: &str) -> Option<(String, usize)> {
    let open = "json_extract(".len();
    let close = s.find(')')?;
    let inner = &s[open..close];
    let (col, path) = inner.split_once(',')?;
    let key = path.trim().strip_prefix("'$.")?.strip_suffix('\'')?;
    let col = col.trim();
    if !col.bytes().all(|c| is_ident(c) || c == b'.') || !key.bytes().all(is_ident) {
        return None;
    }
    Some((format!("({col}::jsonb ->> '{key}')"), close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_for_postgres_and_strings_are_left_alone() {
        let t = to_postgres("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?2 OR e = ?1");
        assert_eq!(
            t.sql,
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $2 OR e = $1"
        );
        assert_eq!((t.params, t.uses_now), (2, false));
        let bare = to_postgres("UPDATE t SET a = ?, b = ? WHERE c = 'it''s ?'");
        assert_eq!(bare.sql, "UPDATE t SET a = $1, b = $2 WHERE c = 'it''s ?'");
    }

    #[test]
    fn null_safe_equality_keeps_its_meaning() {
        assert_eq!(
            to_postgres("SELECT 1 FROM c WHERE aaguid IS ?1 AND b IS NOT ?2 AND d IS NULL").sql,
            "SELECT 1 FROM c WHERE aaguid IS NOT DISTINCT FROM $1 AND b IS DISTINCT FROM $2 AND d IS NULL"
        );
    }

    #[test]
    fn the_clock_becomes_the_parameter_after_the_last() {
        let t =
            to_postgres("INSERT INTO x (a, at) VALUES (?1, keygate_now()) RETURNING keygate_now()");
        assert_eq!(
            t.sql,
            "INSERT INTO x (a, at) VALUES ($1, $2::text) RETURNING $2::text"
        );
        assert!(t.uses_now);
        assert_eq!(t.params, 1);
    }

    #[test]
    fn insert_or_ignore_becomes_on_conflict_do_nothing() {
        assert_eq!(
            to_postgres("INSERT OR IGNORE INTO u (a) VALUES (?1)").sql,
            "INSERT INTO u (a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            to_postgres("INSERT OR IGNORE INTO u (a) VALUES (?1) RETURNING a").sql,
            "INSERT INTO u (a) VALUES ($1) ON CONFLICT DO NOTHING RETURNING a"
        );
    }

    #[test]
    fn rowid_and_json_extract_have_postgres_equivalents() {
        assert_eq!(
            to_postgres("DELETE FROM s WHERE rowid IN (SELECT rowid FROM s LIMIT ?1)").sql,
            "DELETE FROM s WHERE ctid IN (SELECT ctid FROM s LIMIT $1)"
        );
        assert_eq!(
            to_postgres("SELECT 1 FROM audit WHERE json_extract(detail, '$.device') = ?1").sql,
            "SELECT 1 FROM audit WHERE (detail::jsonb ->> 'device') = $1"
        );
        assert_eq!(
            to_postgres("SELECT rowids FROM t").sql,
            "SELECT rowids FROM t"
        );
    }
}
