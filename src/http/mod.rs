//! http layer.
