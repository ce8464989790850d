//! Atomic file writes: a temporary file in the same directory, synced, then renamed over the
//! old one, so an interrupted program never leaves a half-written file where a good one was.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    stage(path, bytes)?.commit()
}

/// The new content of a file, written and synced under a temporary name beside it, waiting to
/// replace the file ([`commit`](Self::commit)); dropped uncommitted, it is removed. Staging
/// several files before committing any lets them change together as far as a full disk or a
/// write error goes: those happen while staging, and a commit only renames.
#[derive(Debug)]
pub struct StagedFile {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

/// Writes `bytes` beside `path` under a temporary name, synced, for [`StagedFile::commit`].
pub fn stage(path: &Path, bytes: &[u8]) -> Result<StagedFile> {
    let Some(name) = path.file_name() else {
        return Err(Error::invalid(format!(
            "{} names no file to write",
            path.display()
        )));
    };
    let tmp = directory_of(path).join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let staged = StagedFile {
        tmp,
        path: path.to_path_buf(),
        committed: false,
    };
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&staged.tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|err| Error::io("write", path, err))?;
    Ok(staged)
}

impl StagedFile {
    /// Renames the new content over the file, and makes the rename durable.
    pub fn commit(mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.path)
            .and_then(|()| File::open(directory_of(&self.path))?.sync_all())
            .map_err(|err| Error::io("write", &self.path, err))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The directory a file is in (`.` for a bare name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
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
