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

/// Files larger than this are refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

impl FileSystem for OsFs {
    fn read_to_string(&self, path: &str) -> Result<String, FsError> {
        let p = Path::new(path);
        let meta = std::fs::metadata(p).map_err(io_error)?;
        if meta.is_dir() {
            return Err(FsError::IsDirectory);
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(FsError::Other(format!(
                "file is larger than {MAX_FILE_BYTES} bytes"
            )));
        }
        let bytes = std::fs::read(p).map_err(io_error)?;
        String::from_utf8(bytes).map_err(|e| FsError::InvalidUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
        })
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

    fn read_head(&self, path: &str, max_lines: usize) -> Result<Vec<String>, FsError> {
        use std::io::BufRead;
        let f = std::fs::File::open(path).map_err(io_error)?;
        let mut out = Vec::new();
        // Bounded: a JSONL check never reads more than the first lines (each at most 1 MiB).
        for line in std::io::BufReader::new(f).lines().take(max_lines) {
            let line = line.map_err(io_error)?;
            if line.len() > 1 << 20 {
                return Err(FsError::Other("a record line is longer than 1 MiB".into()));
            }
            out.push(line);
        }
        Ok(out)
    }
}

fn io_error(e: std::io::Error) -> FsError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FsError::NotFound,
        std::io::ErrorKind::IsADirectory => FsError::IsDirectory,
        std::io::ErrorKind::InvalidData => FsError::InvalidUtf8 { valid_up_to: 0 },
        _ => FsError::Other(e.to_string()),
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
