//! Values between PostgreSQL's binary forms and SQLite's storage classes.

use tokio_postgres::types::{IsNull, Type};

use super::{Error, Result, ValueRef};

/// A column of a PostgreSQL row in SQLite's storage classes.
pub fn column(row: &tokio_postgres::Row, i: usize) -> Result<ValueRef<'_>> {
    let raw: Option<Raw<'_>> = row
        .try_get(i)
        .map_err(|e| Error::FromSql(format!("column {i}: {e}")))?;
    let Some(Raw(ty, b)) = raw else {
        return Ok(ValueRef::Null);
    };
    let int = |n: usize| -> Result<i64> {
        let bytes = b
            .get(..n)
            .ok_or_else(|| Error::FromSql(format!("short {ty} value")))?;
        Ok(match n {
            2 => i16::from_be_bytes([bytes[0], bytes[1]]) as i64,
            4 => i32::from_be_bytes(bytes.try_into().expect("4 bytes")) as i64,
            _ => i64::from_be_bytes(bytes.try_into().expect("8 bytes")),
        })
    };
    Ok(match ty {
        Type::INT8 => ValueRef::Integer(int(8)?),
        Type::INT4 | Type::OID => ValueRef::Integer(int(4)?),
        Type::INT2 => ValueRef::Integer(int(2)?),
        Type::BOOL => ValueRef::Integer((b.first() == Some(&1)) as i64),
        Type::FLOAT8 => ValueRef::Real(f64::from_bits(int(8)? as u64)),
        Type::FLOAT4 => ValueRef::Real(f32::from_bits(int(4)? as u32) as f64),
        Type::NUMERIC => numeric(b)?,
        Type::BYTEA => ValueRef::Blob(b),
        _ => ValueRef::Text(b),
    })
}

/// A `numeric` in PostgreSQL's binary form (what `sum()` of a bigint answers): an integer
/// when it has no fraction, else a real.
fn numeric(b: &[u8]) -> Result<ValueRef<'static>> {
    let short = || Error::FromSql("short numeric value".into());
    let word = |i: usize| -> Result<i16> {
        let s = b.get(i..i + 2).ok_or_else(short)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(2)?, word(4)? as u16, word(6)?);
    if sign == 0xC000 {
        return Ok(ValueRef::Real(f64::NAN));
    }
    let mut value = 0f64;
    for d in 0..ndigits.max(0) as usize {
        let digit = word(8 + 2 * d)? as f64;
        value += digit * 10000f64.powi(weight as i32 - d as i32);
    }
    if sign == 0x4000 {
        value = -value;
    }
    Ok(if dscale == 0 && value.abs() < 9.0e15 {
        ValueRef::Integer(value as i64)
    } else {
        ValueRef::Real(value)
    })
}

/// Any column, as its type and raw binary bytes.
struct Raw<'a>(Type, &'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(ty.clone(), raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A parameter, written as whatever type PostgreSQL inferred for its place (the store's SQL
/// does not say: an integer may be bound where `bigint`, `integer` or `boolean` is wanted).
#[derive(Debug)]
pub(super) struct PgValue(pub(super) super::Value);

impl tokio_postgres::types::ToSql for PgValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use super::Value as V;
        match (&self.0, ty) {
            (V::Null, _) => Ok(IsNull::Yes),
            (V::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            (V::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (V::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (V::Integer(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (V::Integer(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (V::Integer(i), _) => i.to_string().as_str().to_sql(&Type::TEXT, out),
            (V::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (V::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (V::Real(f), _) => f.to_string().as_str().to_sql(&Type::TEXT, out),
            (V::Text(t), &Type::BYTEA) => t.as_bytes().to_sql(ty, out),
            (V::Text(t), &Type::INT8) => t.parse::<i64>()?.to_sql(ty, out),
            (V::Text(t), _) => t.as_str().to_sql(&Type::TEXT, out),
            (V::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (V::Blob(b), _) => std::str::from_utf8(b)?.to_sql(&Type::TEXT, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}
