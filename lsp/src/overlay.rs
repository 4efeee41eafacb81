//! The file system the compiler sees inside the server: open buffers laid over the disk.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};

use post_compiler::{FileSystem, FsError};

/// Open buffers by path, in front of the real files.
pub struct Overlay<'a> {
    pub buffers: &'a HashMap<String, String>,
}

fn io_error(e: std::io::Error) -> FsError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FsError::NotFound,
        std::io::ErrorKind::IsADirectory => FsError::IsDirectory,
        std::io::ErrorKind::InvalidData => FsError::InvalidUtf8 { valid_up_to: 0 },
        _ => FsError::Other(e.to_string()),
    }
}

impl FileSystem for Overlay<'_> {
    fn read_to_string(&self, path: &str) -> Result<String, FsError> {
        if let Some(t) = self.buffers.get(path) {
            return Ok(t.clone());
        }
        if std::path::Path::new(path).is_dir() {
            return Err(FsError::IsDirectory);
        }
        let bytes = std::fs::read(path).map_err(io_error)?;
        String::from_utf8(bytes).map_err(|e| FsError::InvalidUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
        })
    }

    fn is_file(&self, path: &str) -> bool {
        self.buffers.contains_key(path) || std::path::Path::new(path).is_file()
    }

    fn is_dir(&self, path: &str) -> bool {
        std::path::Path::new(path).is_dir()
    }

    /// Resolved on disk, as `post check` resolves it, so the editor reports the same E0506.
    fn canonicalize(&self, path: &str) -> Option<String> {
        post_compiler::check::read_scope::canonicalize_with(path, |p| {
            std::fs::canonicalize(p)
                .ok()
                .map(|c| c.to_string_lossy().into_owned())
        })
    }

    /// Only the first lines are read: dataset files can be large.
    fn read_head(&self, path: &str, max_lines: usize) -> Result<Vec<String>, FsError> {
        if let Some(t) = self.buffers.get(path) {
            return Ok(t.lines().take(max_lines).map(str::to_string).collect());
        }
        let f = std::fs::File::open(path).map_err(io_error)?;
        let mut out = Vec::new();
        for line in BufReader::new(f).lines().take(max_lines) {
            out.push(line.map_err(io_error)?);
        }
        Ok(out)
    }
}
