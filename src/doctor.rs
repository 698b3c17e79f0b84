//! `keygate doctor`: tells an operator exactly why a security key is or is not usable here: no
//! hidraw node, not a FIDO device, permission denied (and which group to join or which udev
//! rule to install), busy in another process, no libudev.
//!
//! The parsing (HID report descriptors, uevent files, /etc/group) is pure and unit-tested; the
//! rest reads sysfs, tries to open each FIDO node the way the HID adapter will, and looks in
//! /proc for other processes holding it open (Linux hidraw has no exclusive open and never
//! answers EBUSY, so "busy" can only be seen there).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// HID usage page of FIDO authenticators (FIDO CTAP 2.1 §11.2.8.1).
pub const FIDO_USAGE_PAGE: u16 = 0xF1D0;
/// Where the rule file goes (see `udev/` and the README).
pub const RULE_FILE: &str = "70-keygate-fido.rules";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Problem,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// True when nothing stands between keygate and a plugged FIDO key.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Problem)
    }
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => "✔",
                Status::Warning => "!",
                Status::Problem => "✘",
            };
            writeln!(f, "{mark} {}: {}", c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "    → {fix}")?;
            }
        }
        write!(
            f,
            "{}",
            if self.ok() {
                "keygate can use the FIDO keys above."
            } else {
                "keygate cannot use a key yet: see ✘ above."
            }
        )
    }
}

/// Usage pages declared in a HID report descriptor (HID 1.11 §6.2.2: short items; a Usage
/// Page is a global item with tag 0, prefix 0x05/0x06/0x07 for 1/2/4 data bytes).
pub fn usage_pages(descriptor: &[u8]) -> Vec<u16> {
    let mut pages = Vec::new();
    let mut i = 0;
    while i < descriptor.len() {
        let prefix = descriptor[i];
        if prefix == 0xFE {
            // Long item: size byte, tag byte, data.
            let size = *descriptor.get(i + 1).unwrap_or(&0) as usize;
            i += 3 + size;
            continue;
        }
        let size = match prefix & 0x03 {
            3 => 4,
            n => n as usize,
        };
        let data = descriptor.get(i + 1..i + 1 + size).unwrap_or(&[]);
        if prefix & 0xFC == 0x04 && !data.is_empty() {
            let mut v: u32 = 0;
            for (k, b) in data.iter().enumerate() {
                v |= (*b as u32) << (8 * k);
            }
            pages.push(v as u16);
        }
        i += 1 + size;
    }
    pages
}

/// `HID_ID=0003:00001050:00000407` and `HID_NAME=...` from a hidraw device's uevent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HidIdentity {
    pub bus: u16,
    pub vendor: u16,
    pub product: u16,
    pub name: String,
}

pub fn parse_uevent(text: &str) -> HidIdentity {
    let mut id = HidIdentity::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("HID_ID=") {
            let parts: Vec<&str> = v.split(':').collect();
            if parts.len() == 3 {
                id.bus = u16::from_str_radix(parts[0], 16).unwrap_or(0);
                id.vendor = u32::from_str_radix(parts[1], 16).unwrap_or(0) as u16;
                id.product = u32::from_str_radix(parts[2], 16).unwrap_or(0) as u16;
            }
        } else if let Some(v) = line.strip_prefix("HID_NAME=") {
            id.name = v.to_string();
        }
    }
    id
}

/// The name of group `gid` in an /etc/group text.
pub fn group_name(etc_group: &str, gid: u32) -> Option<String> {
    etc_group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse::<u32>().ok() == Some(gid)).then(|| f[0].to_string())
    })
}

fn libudev_present() -> bool {
    [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/usr/lib",
        "/lib",
    ]
    .iter()
    .any(|d| Path::new(d).join("libudev.so.1").exists())
}

fn rule_installed() -> Option<PathBuf> {
    [
        "/etc/udev/rules.d",
        "/usr/lib/udev/rules.d",
        "/lib/udev/rules.d",
    ]
    .iter()
    .map(|d| Path::new(d).join(RULE_FILE))
    .find(|p| p.exists())
}

/// A process that has a device node open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/<pid>/comm`, or `?` when unreadable.
    pub comm: String,
}

/// The processes other than `own_pid` with `node` open, from the `fd/*` symlinks under a
/// /proc-like `proc_root`, sorted by pid. Processes whose fds cannot be read (other users', when
/// not root) or that exit during the scan are left out: the answer is a lower bound.
pub fn holders(proc_root: &Path, node: &Path, own_pid: u32) -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == node));
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_else(|_| "?".into());
            out.push(Holder { pid, comm });
        }
    }
    out.sort_by_key(|h| h.pid);
    out
}

/// The check of a node that opens, given the other processes holding it.
fn opened_check(name: String, what: &str, others: &[Holder]) -> Check {
    if others.is_empty() {
        return Check {
            name,
            status: Status::Ok,
            detail: format!("{what}: usable"),
            fix: None,
        };
    }
    let list: Vec<String> = others
        .iter()
        .map(|h| format!("pid {} ({})", h.pid, h.comm))
        .collect();
    // A warning, not a problem: the node opens, but every process holding it reads the key's
    // replies too, and a ceremony in one collides with one in the other.
    Check {
        name,
        status: Status::Warning,
        detail: format!("{what}: busy in another process: {}", list.join(", ")),
        fix: Some(
            "close the other program using the key (a browser tab asking for it, another keygate \
             or `keygate bench`) before a ceremony"
                .into(),
        ),
    }
}

/// Examine one hidraw node; `None` when it is not a FIDO device.
fn check_node(sys: &Path, dev_dir: &Path, proc_root: &Path) -> Option<Check> {
    let node = sys.file_name()?.to_string_lossy().to_string();
    let descriptor = std::fs::read(sys.join("device/report_descriptor")).ok()?;
    if !usage_pages(&descriptor).contains(&FIDO_USAGE_PAGE) {
        return None;
    }
    let id = parse_uevent(&std::fs::read_to_string(sys.join("device/uevent")).unwrap_or_default());
    let model = crate::device::models::model_name_by_usb(id.vendor, id.product);
    let what = format!(
        "{} ({:04x}:{:04x}{})",
        if id.name.is_empty() {
            "FIDO device"
        } else {
            &id.name
        },
        id.vendor,
        id.product,
        model.map(|m| format!(", {m}")).unwrap_or_default()
    );
    let dev = dev_dir.join(&node);
    let name = format!("/dev/{node}");
    let meta = match std::fs::metadata(&dev) {
        Ok(m) => m,
        Err(_) => {
            return Some(Check {
                name,
                status: Status::Problem,
                detail: format!("{what}: the kernel sees it but there is no device node"),
                fix: Some("make sure devtmpfs and udev are running (systemd-udevd)".into()),
            })
        }
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev);
    Some(match opened {
        Ok(_) => opened_check(name, &what, &holders(proc_root, &dev, std::process::id())),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            permission_denied(name, &what, &meta)
        }
        Err(e) => Check {
            name,
            status: Status::Problem,
            detail: format!("{what}: cannot be opened: {e}"),
            fix: Some("unplug and replug the key".into()),
        },
    })
}

fn permission_denied(name: String, what: &str, meta: &std::fs::Metadata) -> Check {
    use std::os::unix::fs::MetadataExt;
    let group = group_name(
        &std::fs::read_to_string("/etc/group").unwrap_or_default(),
        meta.gid(),
    )
    .unwrap_or_else(|| meta.gid().to_string());
    Check {
        name,
        status: Status::Problem,
        detail: format!(
            "{what}: permission denied (mode {:o}, group `{group}`)",
            meta.mode() & 0o777
        ),
        fix: Some(format!(
            "install udev/{RULE_FILE} into /etc/udev/rules.d/ and run `udevadm control --reload && udevadm trigger` \
             (it gives group `keygate` read/write), then add the service user to that group: `usermod -aG keygate <user>`; \
             or, for a quick test, join group `{group}`"
        )),
    }
}

/// Examine this machine.
pub fn run_doctor() -> DoctorReport {
    run_doctor_in(
        Path::new("/sys/class/hidraw"),
        Path::new("/dev"),
        Path::new("/proc"),
    )
}

/// [`run_doctor`] over other sysfs, dev and proc roots (tests).
pub fn run_doctor_in(sys_hidraw: &Path, dev_dir: &Path, proc_root: &Path) -> DoctorReport {
    let mut checks = Vec::new();
    checks.push(if libudev_present() {
        Check {
            name: "libudev".into(),
            status: Status::Ok,
            detail: "libudev.so.1 found".into(),
            fix: None,
        }
    } else {
        Check {
            name: "libudev".into(),
            status: Status::Warning,
            detail: "libudev.so.1 not found in the usual places".into(),
            fix: Some("apt-get install libudev1 (and libudev-dev to build keygate)".into()),
        }
    });
    checks.push(match rule_installed() {
        Some(p) => Check { name: "udev rule".into(), status: Status::Ok, detail: format!("{} installed", p.display()), fix: None },
        None => Check {
            name: "udev rule".into(),
            status: Status::Warning,
            detail: format!("{RULE_FILE} is not installed: only the logged-in desktop user can open keys"),
            fix: Some(format!(
                "sudo install -m 644 udev/{RULE_FILE} /etc/udev/rules.d/ && sudo udevadm control --reload && sudo udevadm trigger"
            )),
        },
    });
    let nodes: Vec<PathBuf> = std::fs::read_dir(sys_hidraw)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    if nodes.is_empty() {
        checks.push(Check {
            name: "hidraw".into(),
            status: Status::Problem,
            detail: "no HID raw devices at all".into(),
            fix: Some(
                "plug in a key; if one is plugged in, load the driver: `modprobe hidraw`".into(),
            ),
        });
        return DoctorReport { checks };
    }
    let mut sorted = nodes;
    sorted.sort();
    let keys: Vec<Check> = sorted
        .iter()
        .filter_map(|n| check_node(n, dev_dir, proc_root))
        .collect();
    if keys.is_empty() {
        checks.push(Check {
            name: "FIDO keys".into(),
            status: Status::Problem,
            detail: format!(
                "{} HID device(s), none of them a FIDO key (usage page 0xF1D0)",
                sorted.len()
            ),
            fix: Some(
                "plug in a FIDO2 security key; a U2F-only or OTP-only mode does not count".into(),
            ),
        });
    }
    checks.extend(keys);
    DoctorReport { checks }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report descriptor of a YubiKey 5's FIDO interface (usage page 0xF1D0, usage 1,
    /// 64-byte input and output reports).
    const YUBIKEY_FIDO: &[u8] = &[
        0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x01, 0x09, 0x20, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75,
        0x08, 0x95, 0x40, 0x81, 0x02, 0x09, 0x21, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08, 0x95,
        0x40, 0x91, 0x02, 0xC0,
    ];
    /// A keyboard (usage page 1, then 7 and 8).
    const KEYBOARD: &[u8] = &[
        0x05, 0x01, 0x09, 0x06, 0xA1, 0x01, 0x05, 0x07, 0x19, 0xE0, 0x05, 0x08, 0xC0,
    ];

    #[test]
    fn usage_pages_are_read_from_descriptors() {
        assert_eq!(usage_pages(YUBIKEY_FIDO), vec![0xF1D0]);
        assert_eq!(usage_pages(KEYBOARD), vec![1, 7, 8]);
        assert!(usage_pages(&[]).is_empty());
        // Truncated and long items do not panic.
        assert!(usage_pages(&[0x06, 0xD0]).len() <= 1);
        assert!(usage_pages(&[0xFE, 0x02, 0x10, 0x01]).is_empty());
    }

    #[test]
    fn uevent_and_groups_parse() {
        let id = parse_uevent("DRIVER=hid-generic\nHID_ID=0003:00001050:00000407\nHID_NAME=Yubico YubiKey OTP+FIDO+CCID\n");
        assert_eq!((id.bus, id.vendor, id.product), (3, 0x1050, 0x0407));
        assert_eq!(id.name, "Yubico YubiKey OTP+FIDO+CCID");
        let group = "root:x:0:\nplugdev:x:46:an\nkeygate:x:998:keygate\n";
        assert_eq!(group_name(group, 998).as_deref(), Some("keygate"));
        assert_eq!(group_name(group, 5), None);
    }

    #[test]
    fn a_fake_sysfs_with_a_key_and_a_keyboard() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let dev = root.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        for (node, desc, uevent) in [
            (
                "hidraw0",
                KEYBOARD,
                "HID_ID=0003:0000046D:0000C31C\nHID_NAME=Logitech Keyboard\n",
            ),
            (
                "hidraw1",
                YUBIKEY_FIDO,
                "HID_ID=0003:00001050:00000407\nHID_NAME=Yubico YubiKey\n",
            ),
        ] {
            let d = sys.join(node).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("report_descriptor"), desc).unwrap();
            std::fs::write(d.join("uevent"), uevent).unwrap();
        }
        // No device node for the key: the doctor says so.
        let r = run_doctor_in(&sys, &dev, &root.path().join("proc"));
        let key = r
            .checks
            .iter()
            .find(|c| c.name == "/dev/hidraw1")
            .expect("the key is examined");
        assert_eq!(key.status, Status::Problem);
        assert!(key.detail.contains("no device node"), "{}", key.detail);
        assert!(
            !r.checks.iter().any(|c| c.name == "/dev/hidraw0"),
            "the keyboard is not a key"
        );
        assert!(!r.ok());
        // A node that opens: usable.
        std::fs::write(dev.join("hidraw1"), b"").unwrap();
        let r = run_doctor_in(&sys, &dev, &root.path().join("proc"));
        let key = r.checks.iter().find(|c| c.name == "/dev/hidraw1").unwrap();
        assert_eq!(key.status, Status::Ok, "{}", key.detail);
        assert!(key.detail.contains("1050:0407"));
        assert!(r.to_string().contains("✔ /dev/hidraw1"));
        // Another process has it open: named, with its pid.
        let fd = root.path().join("proc/4242/fd");
        std::fs::create_dir_all(&fd).unwrap();
        std::os::unix::fs::symlink(dev.join("hidraw1"), fd.join("7")).unwrap();
        std::fs::write(root.path().join("proc/4242/comm"), "chromium\n").unwrap();
        let r = run_doctor_in(&sys, &dev, &root.path().join("proc"));
        let key = r.checks.iter().find(|c| c.name == "/dev/hidraw1").unwrap();
        assert_eq!(key.status, Status::Warning, "{}", key.detail);
        assert!(
            key.detail
                .contains("busy in another process: pid 4242 (chromium)"),
            "{}",
            key.detail
        );
        assert!(r.ok(), "a shared node still opens");
        // Nothing at all.
        let empty = root.path().join("none");
        let r = run_doctor_in(&empty, &dev, &root.path().join("proc"));
        assert!(r.to_string().contains("no HID raw devices"));
    }

    #[test]
    fn holders_are_found_in_a_fake_proc() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let proc_root = root.path().join("proc");
        let node = root.path().join("dev/hidraw3");
        let other = root.path().join("dev/hidraw4");
        let process = |pid: &str, comm: Option<&str>, fds: &[(&str, &Path)]| {
            let dir = proc_root.join(pid);
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            if let Some(c) = comm {
                std::fs::write(dir.join("comm"), format!("{c}\n")).unwrap();
            }
            for (n, target) in fds {
                symlink(target, dir.join("fd").join(n)).unwrap();
            }
        };
        let null = Path::new("/dev/null");
        process("812", Some("chromium"), &[("0", null), ("23", &node)]);
        process("97", Some("keygate"), &[("5", &node), ("6", &other)]);
        process("1000", Some("bash"), &[("0", null), ("4", &other)]);
        // Our own process is not "another process".
        process("55", Some("keygate"), &[("3", &node)]);
        // No comm (it exited mid-scan): still reported.
        process("3001", None, &[("9", &node)]);
        // Not a pid, and a pid whose fds cannot be listed (here: `fd` is a file).
        process("self", Some("x"), &[("3", &node)]);
        std::fs::create_dir_all(proc_root.join("77")).unwrap();
        std::fs::write(proc_root.join("77/fd"), b"").unwrap();
        assert_eq!(
            holders(&proc_root, &node, 55),
            vec![
                Holder {
                    pid: 97,
                    comm: "keygate".into()
                },
                Holder {
                    pid: 812,
                    comm: "chromium".into()
                },
                Holder {
                    pid: 3001,
                    comm: "?".into()
                },
            ]
        );
        assert_eq!(
            holders(&proc_root, &other, 55)
                .iter()
                .map(|h| h.pid)
                .collect::<Vec<_>>(),
            vec![97, 1000]
        );
        assert!(holders(&proc_root, Path::new("/dev/hidraw9"), 55).is_empty());
        assert!(holders(&root.path().join("missing"), &node, 55).is_empty());
    }

    #[test]
    fn the_real_proc_shows_our_own_open_node_only_to_others() {
        // This process holds a file open; scanning /proc finds it under our pid, which the
        // doctor skips.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap().join("node");
        let _held = std::fs::File::create(&path).unwrap();
        let me = std::process::id();
        assert!(holders(Path::new("/proc"), &path, me).is_empty());
        assert!(holders(Path::new("/proc"), &path, 0)
            .iter()
            .any(|h| h.pid == me));
    }
}
