//! `post lsp`: the language server for `.post` files, a thin layer over the compiler.
//!
//! How a request is answered, step by step:
//! 1. The client's buffers are kept in memory ([`overlay::Overlay`]) and laid over the disk, so the
//!    compiler (which reads files only through `post_compiler::FileSystem`) sees unsaved text,
//!    e.g. a JSONL file open in another tab.
//! 2. After an edit the server waits for ~100 ms of quiet, then recompiles the buffer with
//!    `post_compiler::compile_source` (check only; nothing is loaded or run) and publishes exactly
//!    the compiler's diagnostics. Any request first recompiles a buffer that changed.
//! 3. Hover, completion, navigation, rename, outline, semantic tokens and signature help come from
//!    `post_compiler::ide`, in byte offsets; [`convert`] turns them into LSP positions (UTF-16)
//!    only here, at the edge.
//! 4. The standard library's sources are written to a cache directory ([`stdlib_files`]) so
//!    "go to definition" can open them in any editor.
//! 5. Every handler runs under `catch_unwind`: a bug answers one request with an error and a log
//!    message, and the server keeps serving. Malformed input (bad framing, invalid JSON or
//!    UTF-8, messages of the wrong shape) is logged and skipped by the [`transport`].

pub mod client;
pub mod convert;
pub mod overlay;
pub mod server;
pub mod stdlib_files;
pub mod transport;
pub mod uri;

pub use server::{Config, serve};

/// Serve on stdin/stdout until the client says `exit`. Malformed input is logged and skipped
/// ([`transport`]), never the end of the session.
pub fn run_stdio() -> Result<(), String> {
    transport::run_stdio(Config::from_env())
}
