//! Simulated key (filled in).
