//! CTAP2 command layer (filled in).
