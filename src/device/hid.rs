//! Placeholder until the HID adapter lands (being written in parallel).
use std::sync::Arc;

use super::{Authenticator, DeviceError, DeviceSource};

pub struct HidSource;

impl HidSource {
    pub fn new() -> Self {
        HidSource
    }
}

impl Default for HidSource {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceSource for HidSource {
    fn enumerate(&self) -> Result<Vec<Arc<dyn Authenticator>>, DeviceError> {
        Ok(Vec::new())
    }
}
