//! What a disk-backed [`FileSystem`](crate::FileSystem) (the CLI's, the language server's)
//! returns: the bounded readers of [`post_graph::files`] (regular files only, of bounded size),
//! with their I/O errors as [`FsError`]. The reading itself happens outside the compiler core.

use crate::FsError;

pub use post_graph::files::{MAX_HEAD_LINE_BYTES, MAX_SOURCE_BYTES};

/// An I/O error as the compiler reports it.
pub fn fs_error(e: std::io::Error) -> FsError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FsError::NotFound,
        std::io::ErrorKind::IsADirectory => FsError::IsDirectory,
        std::io::ErrorKind::InvalidData => FsError::InvalidUtf8 { valid_up_to: 0 },
        _ => FsError::Other(e.to_string()),
    }
}

/// The text of a file read whole ([`post_graph::files::read_regular`]).
pub fn text(read: std::io::Result<Vec<u8>>) -> Result<String, FsError> {
    String::from_utf8(read.map_err(fs_error)?).map_err(|e| FsError::InvalidUtf8 {
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}
