//! sim routes
