//! `manifest.json`: the SHA-256 and size of every other file of a checkpoint, written last
//! (inside the temporary directory, before the rename), so a checkpoint whose manifest verifies
//! holds exactly the bytes that were written. A flipped byte, a truncated or missing file, or a
//! file that was not written by the saver all fail verification.
//!
//! The manifest does not hash itself: a change to it that still parses to the same entries
//! leaves every file verified, so it is harmless; any other change names a file whose hash or
//! size no longer matches, or fails to parse.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CheckpointError, io_err};
use crate::output::write_atomic;

/// The manifest's file name inside a checkpoint directory.
pub const MANIFEST: &str = "manifest.json";

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    /// Path relative to the checkpoint directory, with `/` separators.
    files: BTreeMap<String, Entry>,
}

/// SHA-256 (hex) and size of `path`, streamed.
fn hash_file(path: &Path) -> Result<Entry, CheckpointError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Entry { sha256, bytes })
}

/// Every regular file under `dir` except the manifest, by relative path.
fn files_under(dir: &Path) -> Result<BTreeMap<String, PathBuf>, CheckpointError> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| io_err(&d, e))? {
            let p = entry.map_err(|e| io_err(&d, e))?.path();
            if p.is_dir() {
                pending.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(dir)
                .map_err(|e| io_err(&p, e))?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if rel != MANIFEST {
                out.insert(rel, p);
            }
        }
    }
    Ok(out)
}

/// Hash every file of `dir` and write its manifest (atomically, fsynced). Called by the saver
/// after every other file is written and synced.
pub fn write(dir: &Path) -> Result<(), CheckpointError> {
    let mut files = BTreeMap::new();
    for (rel, p) in files_under(dir)? {
        files.insert(rel, hash_file(&p)?);
    }
    let text = serde_json::to_string_pretty(&Manifest { files })
        .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
    write_atomic(&dir.join(MANIFEST), text.as_bytes()).map_err(|e| io_err(dir, e))
}

/// Check every file of `dir` against its manifest: the same set of files, each with the
/// recorded size and SHA-256. The error names the first file that differs.
pub fn verify(dir: &Path) -> Result<(), CheckpointError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::Invalid(format!(
                "{} is missing (the checkpoint is incomplete, or older than checksummed checkpoints)",
                path.display()
            )));
        }
        Err(e) => return Err(io_err(&path, e)),
    };
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| io_err(&path, e))?;
    let present = files_under(dir)?;
    for rel in manifest.files.keys() {
        if !present.contains_key(rel) {
            return Err(CheckpointError::Invalid(format!(
                "{}: `{rel}` is listed in the manifest but missing",
                dir.display()
            )));
        }
    }
    for (rel, p) in &present {
        let Some(want) = manifest.files.get(rel) else {
            return Err(CheckpointError::Invalid(format!(
                "{}: `{rel}` is not in the manifest",
                dir.display()
            )));
        };
        let got = hash_file(p)?;
        if got.bytes != want.bytes {
            return Err(CheckpointError::Invalid(format!(
                "{}: {} bytes, the manifest records {}",
                p.display(),
                got.bytes,
                want.bytes
            )));
        }
        if got.sha256 != want.sha256 {
            return Err(CheckpointError::Invalid(format!(
                "{}: checksum mismatch (the file changed after it was written)",
                p.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("post-manifest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("policy")).unwrap();
        std::fs::write(d.join("state.json"), b"{\"a\": 1}").unwrap();
        std::fs::write(d.join("policy/model.safetensors"), [7u8; 300]).unwrap();
        write(&d).unwrap();
        d
    }

    #[test]
    fn an_untouched_checkpoint_verifies() {
        let d = dir("ok");
        verify(&d).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_flipped_byte_names_the_file() {
        let d = dir("flip");
        let p = d.join("policy/model.safetensors");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[123] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
        let err = verify(&d).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("checksum"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_extra_truncated_files_and_a_missing_manifest_fail() {
        let d = dir("set");
        std::fs::write(d.join("extra.txt"), b"x").unwrap();
        assert!(
            verify(&d)
                .unwrap_err()
                .to_string()
                .contains("not in the manifest")
        );
        std::fs::remove_file(d.join("extra.txt")).unwrap();
        std::fs::write(d.join("state.json"), b"{\"a\":").unwrap();
        assert!(verify(&d).unwrap_err().to_string().contains("bytes"));
        std::fs::remove_file(d.join("state.json")).unwrap();
        assert!(verify(&d).unwrap_err().to_string().contains("missing"));
        std::fs::remove_file(d.join(MANIFEST)).unwrap();
        assert!(
            verify(&d)
                .unwrap_err()
                .to_string()
                .contains("manifest.json is missing")
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_flipped_byte_in_the_manifest_fails() {
        let d = dir("manifest");
        let p = d.join(MANIFEST);
        let text = std::fs::read_to_string(&p).unwrap();
        // The first hex digit of the first checksum.
        let at = text.find("\"sha256\": \"").unwrap() + 11;
        let mut bytes = text.into_bytes();
        bytes[at] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
        assert!(verify(&d).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
