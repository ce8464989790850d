//! Checksums of the weights files: each `X.bpk` is written with an `X.bpk.sha256` beside it
//! (`sha256sum`'s format, so `sha256sum -c` checks it too), and read back only if it still
//! matches, so that a damaged file is an error naming it rather than a model that loads with
//! wrong weights. Files written before checksums existed load as they are.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{self, Error, Result};
use crate::store::atomic::stage;

/// The SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Where the checksum of `path` is kept: `path` with `.sha256` appended.
pub fn checksum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Writes `bytes` to `path` and its checksum beside it. Both are staged before either replaces
/// the old file, so a full disk or a write error leaves the old pair as it was. The new checksum
/// file also records the old file's checksum (`# previous HASH`) and replaces it first, so a
/// program killed between the two renames leaves a pair that still verifies.
pub fn write_with_checksum(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut text = format!("{}  {name}\n", sha256_hex(bytes));
    if let Some(old) = recorded(&checksum_path(path)).and_then(|hashes| hashes.into_iter().next()) {
        text.push_str(&format!("# previous {old}\n"));
    }
    let weights = stage(path, bytes)?;
    let checksum = stage(&checksum_path(path), text.as_bytes())?;
    checksum.commit()?;
    weights.commit()
}

/// The hashes a checksum file records: the current one first, then the previous one.
fn recorded(sidecar: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(sidecar).ok()?;
    let mut lines = text.lines();
    let current = lines.next()?.split_whitespace().next()?.to_string();
    let previous = lines.find_map(|line| line.strip_prefix("# previous ").map(str::trim));
    Some(
        [Some(current), previous.map(str::to_string)]
            .into_iter()
            .flatten()
            .collect(),
    )
}

/// Reads `path`, refusing it when it no longer matches its recorded checksum.
pub fn read_verified(path: &Path) -> Result<Vec<u8>> {
    let bytes = error::read(path)?;
    let sidecar = checksum_path(path);
    if !sidecar.is_file() {
        return Ok(bytes); // written before checksums were recorded
    }
    let text = error::read_to_string(&sidecar)?;
    let hashes = recorded(&sidecar).unwrap_or_default();
    let is_hash = |h: &String| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    if hashes.is_empty() || !hashes.iter().all(is_hash) {
        return Err(Error::format(
            &sidecar,
            "is not a SHA-256 checksum",
            text.trim(),
        ));
    }
    let expected = &hashes[0];
    let actual = sha256_hex(&bytes);
    // The previous file's hash is accepted too: what a kill between the two renames leaves.
    if !hashes.iter().any(|h| actual.eq_ignore_ascii_case(h)) {
        return Err(Error::format(
            path,
            "does not match its checksum",
            format!(
                "{} records {expected}, the file hashes to {actual}: it was damaged or its write \
                 interrupted (a run's checkpoints/ keep other copies of its weights)",
                sidecar.display()
            ),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::temp_dir;

    #[test]
    fn the_digest_is_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_flipped_byte_is_an_error_naming_the_file_and_an_unchecked_file_loads() {
        let dir = temp_dir("checksum");
        let path = dir.join("model.bpk");
        write_with_checksum(&path, b"weights").unwrap();
        assert_eq!(read_verified(&path).unwrap(), b"weights");
        let sidecar = std::fs::read_to_string(checksum_path(&path)).unwrap();
        assert!(sidecar.ends_with("  model.bpk\n"), "{sidecar}");

        std::fs::write(&path, b"weightz").unwrap();
        let err = read_verified(&path).unwrap_err().to_string();
        assert!(
            err.contains("model.bpk does not match its checksum"),
            "{err}"
        );

        // A second write records the first as previous; a kill between the renames leaves the
        // old file with the new checksum file, which still verifies.
        write_with_checksum(&path, b"weights").unwrap();
        write_with_checksum(&path, b"weights, later").unwrap();
        std::fs::write(&path, b"weights").unwrap();
        assert_eq!(read_verified(&path).unwrap(), b"weights");
        let sidecar = std::fs::read_to_string(checksum_path(&path)).unwrap();
        let previous = format!("# previous {}", sha256_hex(b"weights"));
        assert!(sidecar.contains(&previous), "{sidecar}");

        std::fs::remove_file(checksum_path(&path)).unwrap();
        std::fs::write(&path, b"weightz").unwrap();
        assert_eq!(
            read_verified(&path).unwrap(),
            b"weightz",
            "no checksum: as it is"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
