//! Binding parameters to a rusqlite statement.

use super::{Result, ValueRef};

struct Bound<'a>(ValueRef<'a>);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(self.0.into()))
    }
}

/// Bind `values` to `s` by position (`?1` is the first); a count that does not match the
/// statement's parameters is refused, as rusqlite does.
pub(super) fn bind(s: &mut rusqlite::Statement<'_>, values: &[ValueRef<'_>]) -> Result<()> {
    let expected = s.parameter_count();
    if values.len() != expected {
        return Err(rusqlite::Error::InvalidParameterCount(values.len(), expected).into());
    }
    for (i, v) in values.iter().enumerate() {
        s.raw_bind_parameter(i + 1, Bound(*v))?;
    }
    Ok(())
}
