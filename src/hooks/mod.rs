//! Event hooks: `[[hooks]]` receivers hear about enrollments, revocations, quarantines,
//! lockouts, resets and SMS provider failovers through signed JSON POSTs.
//!
//! Contract (at least once, nothing lost on kill -9): every hook event is an audit line,
//! committed in the transaction of the fact it records. The worker fans the audit log out into
//! the durable delivery outbox (`store/hooks.rs`; cursor and rows move in one transaction) and
//! POSTs what is due; a delivery is marked delivered only after a 2xx, so a crash mid-POST
//! sends it once more. Receivers deduplicate on the payload's `id`.
//!
//! The body is `{"id", "event", "at", "data"}` ([`events`]: `data` is an allow-list of the audit
//! line's fields: user names yes, PINs, codes and tokens never), signed by [`sign`].
//!
//! Files: `events` (names, audit mapping, payload data), `sign` (HMAC), `worker` (fan-out,
//! delivery, retries).

mod events;
mod sign;
mod worker;

pub use events::{event_data, hook_event, EVENT_NAMES};
pub use sign::{hook_signature, verify_hook_signature};
pub use worker::HookWorker;

use crate::base::error::{ErrorCode, PublicError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building the hooks' HTTP client: {0}")]
    Client(String),
}

impl PublicError for HookError {
    fn code(&self) -> ErrorCode {
        match self {
            HookError::Store(e) => e.code(),
            HookError::Client(_) => ErrorCode::Internal,
        }
    }
    fn public_message(&self) -> String {
        match self {
            HookError::Store(e) => e.public_message(),
            HookError::Client(_) => "internal error".into(),
        }
    }
}
