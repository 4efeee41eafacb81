//! The operating-system [`FileSystem`] of the compiler, and the walk that expands directories
//! into their `*.post` files.

use std::path::Path;

use post_compiler::{FileSystem, FsError};

/// Reads files from disk for the compiler core. `allow_read`: the directories `--allow-read`
/// grants, besides each `.post` file's own.
#[derive(Debug, Clone, Default)]
pub struct OsFs {
    pub allow_read: Vec<String>,
}

impl OsFs {
    pub fn new(allow_read: &[String]) -> Self {
        OsFs {
            allow_read: allow_read.to_vec(),
        }
    }
}

/// A path resolved on disk (`..` and symlinks), for the read-scope comparison.
pub fn canonical_on_disk(path: &str) -> Option<String> {
    post_compiler::check::read_scope::canonicalize_with(path, |p| {
        std::fs::canonicalize(p)
            .ok()
            .map(|c| c.to_string_lossy().into_owned())
    })
}

impl FileSystem for OsFs {
    fn read_to_string(&self, path: &str) -> Result<String, FsError> {
        post_compiler::os::text(post_graph::files::read_regular(
            Path::new(path),
            post_graph::files::MAX_SOURCE_BYTES,
        ))
    }

    fn is_file(&self, path: &str) -> bool {
        Path::new(path).is_file()
    }

    fn is_dir(&self, path: &str) -> bool {
        Path::new(path).is_dir()
    }

    fn canonicalize(&self, path: &str) -> Option<String> {
        canonical_on_disk(path)
    }

    fn allowed_roots(&self) -> Vec<String> {
        self.allow_read.clone()
    }

    fn exists(&self, path: &str) -> bool {
        Path::new(path).exists()
    }

    fn file_len(&self, path: &str) -> Option<u64> {
        std::fs::metadata(path).ok().map(|m| m.len())
    }

    fn read_head(&self, path: &str, max_lines: usize) -> Result<Vec<String>, FsError> {
        post_graph::files::read_head(Path::new(path), max_lines)
            .map_err(post_compiler::os::fs_error)
    }
}

/// Expand the command-line paths: files as given, directories walked for `*.post` (sorted).
/// Returns the files and the paths that do not exist.
pub fn expand(paths: &[String]) -> (Vec<String>, Vec<String>) {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if path.is_dir() {
            let mut found: Vec<String> = walkdir::WalkDir::new(path)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "post")
                })
                .map(|e| e.path().to_string_lossy().into_owned())
                .collect();
            found.sort();
            files.extend(found);
        } else if path.exists() {
            files.push(p.clone());
        } else {
            missing.push(p.clone());
        }
    }
    (files, missing)
}
