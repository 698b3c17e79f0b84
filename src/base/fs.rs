//! Files keygate writes into its data dir. Contract: every one is created 0600 whatever the
//! process umask (secrets live in them: the SMS code key, the handoff key, the simulated keys'
//! master secrets and PIN hashes, the simulated CA's private key), and key files are durable
//! once the call returns: the data is fsynced and so is the directory entry naming it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Owner read/write only.
pub const PRIVATE_MODE: u32 = 0o600;

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Create `path` (which must not exist) with `data`, 0600, durably.
pub fn write_new_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))?;
    f.write_all(data)?;
    f.sync_all()?;
    sync_parent(path)
}

/// Replace `path` with `data` atomically (a reader sees the old or the new content, never a
/// mix; a crash leaves one of the two), 0600, durably.
pub fn replace_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE_MODE)
            .open(&tmp)?;
        // An old tmp file left by a crash keeps its mode through `open`; set it.
        f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Open `path` for appending, creating it 0600.
pub fn append_private(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE_MODE)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))?;
    Ok(f)
}

/// Make an existing file 0600 (files made by an older keygate under a loose umask).
pub fn make_private(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn every_writer_makes_0600_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let a = dir.path().join("a.key");
        write_new_private(&a, b"secret").unwrap();
        assert_eq!(mode(&a), 0o600);
        assert!(write_new_private(&a, b"again").is_err(), "never overwrites");
        let b = dir.path().join("b.json");
        std::fs::write(b.with_extension("tmp"), b"stale").unwrap();
        make_private(&b.with_extension("tmp")).unwrap();
        std::fs::set_permissions(
            b.with_extension("tmp"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        replace_private(&b, b"{}").unwrap();
        assert_eq!(mode(&b), 0o600);
        assert_eq!(std::fs::read(&b).unwrap(), b"{}");
        let c = dir.path().join("c.jsonl");
        drop(append_private(&c).unwrap());
        assert_eq!(mode(&c), 0o600);
    }
}
