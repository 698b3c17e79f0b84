//! The ground floor every layer stands on: the injected [`clock::Clock`], row ids, the one
//! user-name rule, the lock helper and the error contract each layer's enum implements.
//! Contract: nothing here imports from the rest of keygate.

pub mod allocator;
pub mod clock;
pub mod error;
pub mod fs;
pub mod ids;
pub mod sync;
pub mod text;
pub mod user;
