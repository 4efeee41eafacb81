//! Reading real files with bounds, shared by every disk-backed reader (the CLI's and the
//! language server's file systems for the compiler, the runtime's data loader): only regular
//! files, of bounded size, so that a path naming `/dev/zero` (read without end), a named pipe
//! (opening one waits for a writer) or a huge file is refused with a message instead of
//! hanging or exhausting memory.

use std::io::{BufRead, BufReader, Error, ErrorKind, Read, Result};
use std::path::Path;

/// Largest `.post` (or other text) file read whole.
pub const MAX_SOURCE_BYTES: u64 = 256 * 1024 * 1024;

/// Longest line [`read_head`] keeps (JSONL records).
pub const MAX_HEAD_LINE_BYTES: usize = 1 << 20;

/// Open `path` for reading when it is a regular file (checked before opening, which for a pipe
/// would block). A directory is an `IsADirectory` error.
fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(Error::new(
            ErrorKind::IsADirectory,
            "is a directory, not a file",
        ));
    }
    if !meta.is_file() {
        return Err(Error::other(
            "not a regular file (a device, pipe or socket)",
        ));
    }
    Ok((std::fs::File::open(path)?, meta.len()))
}

/// The bytes of a regular file of at most `limit` bytes (checked before and while reading, for
/// a file that grows).
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let (f, len) = open_regular(path)?;
    let too_big = || Error::other(format!("file is larger than {limit} bytes"));
    if len > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The first `max_lines` lines of a regular file (without line endings), each at most
/// [`MAX_HEAD_LINE_BYTES`]; a line that is not UTF-8 is an `InvalidData` error.
pub fn read_head(path: &Path, max_lines: usize) -> Result<Vec<String>> {
    let (f, _) = open_regular(path)?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    for _ in 0..max_lines {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take(MAX_HEAD_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > MAX_HEAD_LINE_BYTES {
            return Err(Error::other(format!(
                "a record line is longer than {MAX_HEAD_LINE_BYTES} bytes"
            )));
        }
        out.push(String::from_utf8(line).map_err(|e| Error::new(ErrorKind::InvalidData, e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_large_files_are_refused() {
        if Path::new("/dev/zero").exists() {
            let e = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
            assert!(read_head(Path::new("/dev/zero"), 5).is_err());
        }
        let dir = std::env::temp_dir().join(format!("post-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            read_regular(&dir, 10).unwrap_err().kind(),
            ErrorKind::IsADirectory
        );
        let f = dir.join("a.txt");
        std::fs::write(&f, "one\r\ntwo\nthree").unwrap();
        assert_eq!(read_head(&f, 2).unwrap(), ["one", "two"]);
        assert_eq!(read_head(&f, 9).unwrap(), ["one", "two", "three"]);
        assert!(
            read_regular(&f, 4)
                .unwrap_err()
                .to_string()
                .contains("larger than 4")
        );
        assert_eq!(read_regular(&f, 100).unwrap(), b"one\r\ntwo\nthree");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
