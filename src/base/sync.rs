//! Locks shared by the layers.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, taking over a lock that a panicking holder poisoned. Contract for every mutex
/// locked this way: its data is consistent between any two statements of a holder (a holder
/// never leaves a half-made change behind a point that can panic), so the data a panic left
/// is still valid. SQLite connections qualify: an open transaction rolls back on drop.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
