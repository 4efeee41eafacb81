//! The file system the compiler sees inside the server: open buffers laid over the disk.

use std::collections::HashMap;
use std::path::Path;

use post_compiler::{FileSystem, FsError};

/// Open buffers by path, in front of the real files.
pub struct Overlay<'a> {
    pub buffers: &'a HashMap<String, String>,
}

impl FileSystem for Overlay<'_> {
    fn read_to_string(&self, path: &str) -> Result<String, FsError> {
        if let Some(t) = self.buffers.get(path) {
            return Ok(t.clone());
        }
        post_compiler::os::text(post_graph::files::read_regular(
            Path::new(path),
            post_graph::files::MAX_SOURCE_BYTES,
        ))
    }

    fn is_file(&self, path: &str) -> bool {
        self.buffers.contains_key(path) || Path::new(path).is_file()
    }

    fn is_dir(&self, path: &str) -> bool {
        Path::new(path).is_dir()
    }

    fn exists(&self, path: &str) -> bool {
        self.buffers.contains_key(path) || Path::new(path).exists()
    }

    fn file_len(&self, path: &str) -> Option<u64> {
        match self.buffers.get(path) {
            Some(t) => Some(t.len() as u64),
            None => std::fs::metadata(path).ok().map(|m| m.len()),
        }
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
        post_graph::files::read_head(Path::new(path), max_lines)
            .map_err(post_compiler::os::fs_error)
    }
}
