//! Row ids.

/// A new row id: a UUIDv7 (Unix milliseconds, then 74 bits from the OS CSPRNG). Ids made one
/// after another sort together, so their index gets inserts on its last page instead of a
/// random one (fewer pages written per commit); the random part keeps them unguessable.
pub fn new_row_id() -> String {
    use rand::RngCore;
    let mut random = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &random)
        .into_uuid()
        .to_string()
}
