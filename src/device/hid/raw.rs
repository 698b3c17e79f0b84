//! keygate's own handle on a key's hidraw node (hidapi), for the CTAPHID requests
//! ctap-hid-fido2 cannot send, and the kernel's name of the device behind a node.

use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

use super::exchange::ReportIo;
use crate::device::ctaphid::REPORT;
use crate::device::DeviceError;

/// A second hidapi handle on the device at `path`. Input reports reach every open handle of
/// a hidraw node, so while this one talks the library's handle must be closed (see
/// `hid/reset.rs`), or its queue fills with this handle's answers.
pub struct RawHid {
    dev: hidapi::HidDevice,
}

impl RawHid {
    pub fn open(path: &str) -> Result<Self, DeviceError> {
        let api = hidapi::HidApi::new()
            .map_err(|e| DeviceError::Io(format!("hidapi failed to initialise: {e}")))?;
        let c_path = CString::new(path)
            .map_err(|_| DeviceError::Io(format!("invalid device path {path:?}")))?;
        let dev = api
            .open_path(&c_path)
            .map_err(|e| DeviceError::Io(format!("cannot open {path}: {e}")))?;
        Ok(RawHid { dev })
    }
}

impl ReportIo for RawHid {
    fn write_report(&mut self, report: &[u8; REPORT]) -> Result<(), DeviceError> {
        // hidapi wants the report number first: 0, FIDO devices have a single report.
        let mut out = [0u8; REPORT + 1];
        out[1..].copy_from_slice(report);
        match self.dev.write(&out) {
            Ok(_) => Ok(()),
            // What a write to a node whose device is gone fails with.
            Err(_) => Err(DeviceError::Removed),
        }
    }

    fn read_report(&mut self, timeout: Duration) -> Result<Option<[u8; REPORT]>, DeviceError> {
        let mut buf = [0u8; REPORT];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        match self.dev.read_timeout(&mut buf, ms) {
            Ok(0) => Ok(None),
            // hidraw hands reports without a report number (unnumbered reports).
            Ok(_) => Ok(Some(buf)),
            // hidapi's poll reports a device that went away as an error.
            Err(_) => Err(DeviceError::Removed),
        }
    }
}

/// The kernel's name of the HID device behind hidraw node `path`, e.g. `0003:1050:0407.0012`:
/// its last field numbers every HID device the kernel creates, so a key replugged between two
/// enumerations that got the same `/dev/hidrawN` back has a new name. `None` off Linux.
pub fn kernel_device_name(path: &str) -> Option<String> {
    let node = Path::new(path).file_name()?.to_str()?;
    if !node.starts_with("hidraw") {
        return None;
    }
    let link = std::fs::read_link(format!("/sys/class/hidraw/{node}/device")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}
