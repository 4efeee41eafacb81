//! The post compiler front end: `.post` source -> checked, lowered [`post_graph::Graph`].
//!
//! The pipeline, step by step:
//! 1. [`syntax::parse`] turns text into an untyped [`syntax::ast::File`] (pest grammar in
//!    `syntax/post.pest`), recovering at item boundaries so one broken line hides nothing else.
//! 2. [`check`] resolves names (the file, its `use` imports of the embedded standard library in
//!    [`stdlib`]), evaluates definitions against the built-in signatures (types, units, ranges,
//!    unknown keys with "did you mean"), lowers rewards to `RExpr` and objective formulas to
//!    `Expr` (axis-checked), checks cross-field constraints (batch vs group size, reference
//!    models, context length, dataset fields) and assembles the [`post_graph::Graph`], listing
//!    every default it applied.
//! 3. Every phase reports [`Diagnostic`]s (stable codes, byte-offset spans); rendering happens at
//!    the edges (miette in the CLI, LSP in the editor).
//!
//! The core does no IO: files are read through [`FileSystem`] ([`MemoryFs`] in tests, the OS
//! implementation in the CLI). [`format`] is the canonical formatter behind `post fmt`.

pub mod check;
pub mod diagnostic;
pub mod fmt;
pub mod ide;
pub mod os;
pub mod span;
pub mod stdlib;
pub mod suggest;
pub mod syntax;

use std::collections::BTreeMap;

pub use diagnostic::{Code, Diagnostic, Label, Severity};
pub use fmt::format;
pub use span::{LineCol, LineIndex, Span};

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    IsDirectory,
    /// The bytes are not UTF-8; `valid_up_to` is the offset of the first bad byte.
    InvalidUtf8 {
        valid_up_to: usize,
    },
    Other(String),
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsError::NotFound => f.write_str("no such file"),
            FsError::IsDirectory => f.write_str("is a directory, not a file"),
            FsError::InvalidUtf8 { valid_up_to } => {
                write!(
                    f,
                    "not valid UTF-8 (first bad byte at offset {valid_up_to})"
                )
            }
            FsError::Other(m) => f.write_str(m),
        }
    }
}

/// All file access of the compiler goes through this trait.
pub trait FileSystem {
    fn read_to_string(&self, path: &str) -> Result<String, FsError>;
    fn is_file(&self, path: &str) -> bool;
    fn is_dir(&self, path: &str) -> bool;
    /// Whether anything is at `path`: a file, a directory, or a device, pipe or socket (which
    /// are neither, and must not be read as data).
    fn exists(&self, path: &str) -> bool {
        self.is_file(path) || self.is_dir(path)
    }
    /// The size in bytes of the file at `path`, when known.
    fn file_len(&self, _path: &str) -> Option<u64> {
        None
    }
    /// The first `max_lines` lines of a text file (JSONL field checks read only these).
    fn read_head(&self, path: &str, max_lines: usize) -> Result<Vec<String>, FsError> {
        let text = self.read_to_string(path)?;
        Ok(text.lines().take(max_lines).map(str::to_string).collect())
    }
    /// `path` with `..` and symbolic links resolved (absolute), where the file system can tell;
    /// `None` leaves the comparison of read scopes to the path's text
    /// ([`check::read_scope::lexical`]).
    fn canonicalize(&self, _path: &str) -> Option<String> {
        None
    }
    /// Directories the command line lets every file read (`--allow-read DIR`), besides each
    /// file's own directory.
    fn allowed_roots(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An in-memory file system (tests, the language server's unsaved buffers).
#[derive(Debug, Clone, Default)]
pub struct MemoryFs {
    files: BTreeMap<String, String>,
}

impl MemoryFs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, path: &str, text: &str) -> Self {
        self.insert(path, text);
        self
    }

    pub fn insert(&mut self, path: &str, text: &str) {
        self.files.insert(normalize(path), text.to_string());
    }
}

fn normalize(path: &str) -> String {
    path.trim_start_matches("./").to_string()
}

impl FileSystem for MemoryFs {
    fn read_to_string(&self, path: &str) -> Result<String, FsError> {
        let p = normalize(path);
        if let Some(t) = self.files.get(&p) {
            return Ok(t.clone());
        }
        if self.is_dir(path) {
            return Err(FsError::IsDirectory);
        }
        Err(FsError::NotFound)
    }

    fn is_file(&self, path: &str) -> bool {
        self.files.contains_key(&normalize(path))
    }

    fn is_dir(&self, path: &str) -> bool {
        let p = normalize(path);
        let prefix = format!("{}/", p.trim_end_matches('/'));
        self.files.keys().any(|k| k.starts_with(&prefix))
    }
}

/// The result of compiling one file.
#[derive(Debug, Clone)]
pub struct Compilation {
    pub path: String,
    /// The source text (empty when it could not be read).
    pub source: String,
    /// The lowered graph: present when the file has an experiment and no errors.
    pub graph: Option<post_graph::Graph>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Compilation {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The defaults the compiler applied, as `path = value  (origin)` lines.
    pub fn defaults_report(&self) -> Vec<String> {
        self.graph
            .as_ref()
            .map(|g| {
                g.defaults_applied
                    .iter()
                    .map(|d| format!("{} = {}  ({})", d.path, d.value, d.origin))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Read, parse, check and lower the file at `path`.
pub fn compile(fs: &dyn FileSystem, path: &str) -> Compilation {
    compile_nested(fs, path, &[])
}

/// [`compile`] a prerequisite reached through `trained(...)` from the files in `outer`.
pub fn compile_nested(fs: &dyn FileSystem, path: &str, outer: &[String]) -> Compilation {
    match fs.read_to_string(path) {
        Ok(source) => compile_source_nested(fs, path, source, outer),
        Err(e) => {
            let (code, msg, help) = match &e {
                FsError::InvalidUtf8 { .. } => (
                    Code::E0002,
                    format!("`{path}` is {e}"),
                    "save the file as UTF-8 text",
                ),
                _ => (
                    Code::E0003,
                    format!("cannot read `{path}`: {e}"),
                    "check that the path exists and is a readable file",
                ),
            };
            let span = match e {
                FsError::InvalidUtf8 { valid_up_to } => Span::new(valid_up_to, valid_up_to),
                _ => Span::default(),
            };
            Compilation {
                path: path.to_string(),
                source: String::new(),
                graph: None,
                diagnostics: vec![Diagnostic::error(code, msg, span, "here").with_help(help)],
            }
        }
    }
}

/// Check and lower source text already in memory (the language server's buffers). `path`
/// names the file in diagnostics and anchors relative data paths.
pub fn compile_source(fs: &dyn FileSystem, path: &str, source: String) -> Compilation {
    compile_source_nested(fs, path, source, &[])
}

fn compile_source_nested(
    fs: &dyn FileSystem,
    path: &str,
    source: String,
    outer: &[String],
) -> Compilation {
    let parsed = syntax::parse(&source);
    let (graph, diagnostics) = diagnose(fs, path, &parsed, outer);
    Compilation {
        path: path.to_string(),
        source,
        graph,
        diagnostics,
    }
}

/// The diagnostics of parsed source: its syntax errors and the checker's, sorted by position
/// then code, with the graph when there is no error. [`compile_source`] and the language server
/// (`ide::diagnostics_of`) both report through this one function.
pub fn diagnose(
    fs: &dyn FileSystem,
    path: &str,
    parsed: &syntax::Parsed,
    outer: &[String],
) -> (Option<post_graph::Graph>, Vec<Diagnostic>) {
    let mut diagnostics: Vec<Diagnostic> =
        parsed.errors.iter().map(|e| e.to_diagnostic()).collect();
    let (graph, check_diags) = check::check_nested(&parsed.file, fs, path, outer);
    diagnostics.extend(check_diags);
    diagnostics.sort_by_key(|d| (d.primary.span.start, d.code));
    let graph = graph.filter(|_| !diagnostics.iter().any(Diagnostic::is_error));
    diagnostic::cap(&mut diagnostics);
    (graph, diagnostics)
}
