//! HID adapter (filled in).
