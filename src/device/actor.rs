//! Device actor (filled in).
