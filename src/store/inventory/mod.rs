//! The key inventory (`GET /v1/keys`): every key keygate has enrolled a credential on, for its
//! own relying party (`credentials`) or into a user's Microsoft Entra ID account
//! (`entra_passkeys`).
//!
//! What "a key" is: one credential. CTAP2 keys expose no serial number (authenticatorGetInfo
//! has none) and a device id names a USB port, not a key (every key at a kiosk goes into the
//! same port), so nothing keygate records tells two physical keys of one model apart beyond
//! the credentials they hold. An entry is therefore one credential, named by its kind (`local`
//! or `entra`) and its credential id ([`KeyRef`]); entries are listed grouped by AAGUID (keys
//! without one first), each group in enrollment order, the two kinds merged into one order
//! (`page.rs`). What the enrollment saw of the key (the device id it was plugged in as and,
//! for local credentials, its firmware from GetInfo) comes from its enrollment's audit line,
//! where that line records it and still exists (retention may have purged it).
//!
//! The inventory state of a local credential is the credential's, with its revocations told
//! apart by reason: `reset` (`key_reset`, the factory-reset ceremony), `lost` (an admin marked
//! the key lost), `revoked` (any other reason). An Entra passkey is `active` or `lost` (deleted
//! from the user's Entra account when reported lost; `lost.rs`).
//!
//! Files: this one holds the types and the listing, `page.rs` the page statements of both
//! kinds and their merge order, `lost.rs` marking a key lost.

mod lost;
mod page;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Result, Store, StoreError};
use page::{fetch_source, key_row, KeyRow, ENTRA, LOCAL};

/// `state_reason` of a credential whose key was marked lost.
pub const LOST_REASON: &str = "lost";

/// A key's state in the inventory.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    /// Suspected clone: verifications refused until an admin releases it.
    Quarantined,
    /// Revoked for another reason than a reset or a loss (the user, an admin, a closure).
    Revoked,
    /// Revoked because the key was factory-reset (`state_reason: key_reset`).
    Reset,
    /// Reported lost (`PATCH /v1/keys/{id}`): a local credential is revoked, an Entra passkey
    /// deleted from the user's Entra account.
    Lost,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Quarantined => "quarantined",
            KeyState::Revoked => "revoked",
            KeyState::Reset => "reset",
            KeyState::Lost => "lost",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "active" => KeyState::Active,
            "quarantined" => KeyState::Quarantined,
            "revoked" => KeyState::Revoked,
            "reset" => KeyState::Reset,
            "lost" => KeyState::Lost,
            other => return Err(StoreError::Corrupt(format!("key state {other}"))),
        })
    }
}

/// Where a key's credential lives. The order is the listing's among entries at the same
/// (AAGUID, enrollment time, credential id).
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A credential for keygate's own relying party (`credentials`).
    Local,
    /// A passkey enrolled into a user's Microsoft Entra ID account (`entra_passkeys`).
    Entra,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Local => "local",
            KeyKind::Entra => "entra",
        }
    }
}

/// One key of the inventory: its kind and credential id. The two kinds are kept apart because
/// a credential id is the key's to choose: a key could present another's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub kind: KeyKind,
    pub credential_id: Vec<u8>,
}

/// What an Entra passkey's entry says about its place in Entra.
#[derive(Debug, Clone, PartialEq)]
pub struct EntraKeyFacts {
    /// The relying party Graph named (`login.microsoft.com`).
    pub rp_id: String,
    /// The user principal name it was enrolled into.
    pub upn: String,
    /// Graph's fido2AuthenticationMethod id.
    pub method_id: String,
    /// Graph's `attestationLevel` (`attested`, `notAttested`).
    pub attestation_level: Option<String>,
}

/// One key of the inventory (see the module docs: one credential).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub kind: KeyKind,
    /// The credential id (raw bytes).
    pub id: Vec<u8>,
    pub aaguid: Option<Uuid>,
    /// The model name recorded at enrollment (Entra: Graph's, from its metadata).
    pub model: Option<String>,
    /// Local: the attestation chained to a trusted CA; Entra: Graph reports it `attested`.
    pub attested: bool,
    /// Local: the nickname; Entra: the passkey's name in Entra.
    pub nickname: Option<String>,
    /// The user the credential belongs to.
    pub owner: String,
    pub enrolled_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub state: KeyState,
    pub state_reason: Option<String>,
    /// The device id the key was enrolled on (from the enrollment's audit line).
    pub device: Option<String>,
    /// The key's firmware version from GetInfo at enrollment (from the same line).
    pub firmware: Option<String>,
    /// Entra passkeys only.
    pub entra: Option<EntraKeyFacts>,
}

impl KeyRecord {
    pub fn key_ref(&self) -> KeyRef {
        KeyRef {
            kind: self.kind,
            credential_id: self.id.clone(),
        }
    }
}

/// Which keys a listing returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyFilter {
    pub state: Option<KeyState>,
    pub aaguid: Option<Uuid>,
    /// Only keys of this kind (None: both).
    pub kind: Option<KeyKind>,
}

/// The first `want` rows of two lists each in listing order, in listing order.
fn merge(local: Vec<KeyRow>, entra: Vec<KeyRow>, want: usize) -> Vec<KeyRow> {
    let mut out = Vec::with_capacity(want.min(local.len() + entra.len()));
    let (mut a, mut b) = (local.into_iter().peekable(), entra.into_iter().peekable());
    while out.len() < want {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.position() <= y.position(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
    out
}

impl Store {
    /// A page of the inventory: up to `limit` keys matching `filter`, after the key `after`
    /// (the last key of the previous page); and whether more follow. `NotFound` when `after`
    /// names no key.
    pub fn list_keys(
        &self,
        filter: &KeyFilter,
        after: Option<&KeyRef>,
        limit: usize,
    ) -> Result<(Vec<KeyRecord>, bool)> {
        let limit = limit.max(1);
        let want = limit.saturating_add(1);
        self.read(|c| {
            let from = match after {
                None => None,
                Some(r) => Some(key_row(c, r)?.ok_or(StoreError::NotFound)?.position_owned()),
            };
            // Each kind's next `want` rows, then the first `want` of both: one page.
            let of_kind = |source: &page::Source| -> Result<Vec<KeyRow>> {
                let mut rows = Vec::new();
                if filter.kind.is_none_or(|k| k == source.kind) {
                    fetch_source(c, source, filter, from.as_ref(), want, &mut rows)?;
                }
                Ok(rows)
            };
            let local = of_kind(&LOCAL)?;
            let entra = of_kind(&ENTRA)?;
            let mut rows = merge(local, entra, want);
            let more = rows.len() > limit;
            rows.truncate(limit);
            let keys = rows
                .into_iter()
                .map(|r| r.into_record(c))
                .collect::<Result<Vec<_>>>()?;
            Ok((keys, more))
        })
    }

    pub fn get_key(&self, key: &KeyRef) -> Result<Option<KeyRecord>> {
        self.read(|c| key_row(c, key)?.map(|r| r.into_record(c)).transpose())
    }
}
