//! Atomic file writes: a temporary file in the same directory, synced, then renamed over the
//! old one, so an interrupted program never leaves a half-written file where a good one was.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name() else {
        return Err(Error::invalid(format!(
            "{} names no file to write",
            path.display()
        )));
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    };
    write().map_err(|err| {
        let _ = fs::remove_file(&tmp);
        Error::io("write", path, err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::temp_dir;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = temp_dir("atomic");
        let path = dir.join("file.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "temporary files left behind");
        let err = write_atomic(&dir.join("missing/file.txt"), b"x").unwrap_err();
        assert!(err.to_string().starts_with("cannot write"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
