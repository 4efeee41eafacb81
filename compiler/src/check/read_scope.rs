//! Which paths a `.post` file may read: what lies under its own directory and under the
//! directories the command line grants (`--allow-read DIR`, [`crate::FileSystem::allowed_roots`]).
//! Paths are compared after the file system has resolved `..` and symbolic links
//! ([`crate::FileSystem::canonicalize`]), so neither `../../etc/passwd` nor a symlink inside the
//! directory that points out of it reads anything else: what a run reads can end up in the
//! weights it exports.

use super::Checker;
use crate::FileSystem;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;

/// A path split into components with `.` removed and `..` folded into the component before it
/// (leading `..` of a relative path stay), plus whether it is absolute.
fn components(path: &str) -> (bool, Vec<&str>) {
    let absolute = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                // `/..` is `/`; a relative path keeps its leading `..`.
                _ if absolute => {}
                _ => out.push(".."),
            },
            c => out.push(c),
        }
    }
    (absolute, out)
}

/// `path` with `.` and `..` resolved by text alone (no symbolic links followed).
pub fn lexical(path: &str) -> String {
    let (absolute, c) = components(path);
    match (absolute, c.is_empty()) {
        (true, _) => format!("/{}", c.join("/")),
        (false, true) => ".".to_string(),
        (false, false) => c.join("/"),
    }
}

/// Whether `path` is `root` or lies below it (both already canonical or lexical).
pub fn within(path: &str, root: &str) -> bool {
    let (pa, p) = components(path);
    let (ra, r) = components(root);
    pa == ra && p.len() >= r.len() && p[..r.len()] == r[..] && !p[r.len()..].contains(&"..")
}

/// The canonical form of `path` given a way to canonicalize paths that exist: the longest
/// existing ancestor canonicalized, the missing rest appended (a file that does not exist yet
/// is still placed where it would be, so a missing file is reported as missing, not as
/// outside). `None` when not even the first ancestor resolves.
pub fn canonicalize_with(path: &str, existing: impl Fn(&str) -> Option<String>) -> Option<String> {
    let norm = lexical(path);
    let mut head = norm.as_str();
    let mut rest: Vec<&str> = Vec::new();
    loop {
        if let Some(c) = existing(if head.is_empty() { "." } else { head }) {
            rest.reverse();
            return Some(if rest.is_empty() {
                c
            } else {
                format!("{}/{}", c.trim_end_matches('/'), rest.join("/"))
            });
        }
        match head.rfind('/') {
            Some(0) if head.len() > 1 => {
                rest.push(&head[1..]);
                head = "/";
            }
            Some(i) if i > 0 => {
                rest.push(&head[i + 1..]);
                head = &head[..i];
            }
            _ if !head.is_empty() && head != "/" && head != "." => {
                rest.push(head);
                head = "";
            }
            _ => return None,
        }
    }
}

/// Whether `resolved` (a path as the run will open it) lies under `own_dir` or a directory
/// `fs` grants; otherwise `Err` with where it resolves to. The checker's E0506 and `post run`
/// of a graph JSON both ask this.
pub fn permitted(fs: &dyn FileSystem, resolved: &str, own_dir: &str) -> Result<(), String> {
    let canon = |p: &str| fs.canonicalize(p).unwrap_or_else(|| lexical(p));
    let target = canon(resolved);
    let own = if own_dir.is_empty() { "." } else { own_dir };
    let granted = fs.allowed_roots();
    let mut roots = std::iter::once(own).chain(granted.iter().map(String::as_str));
    if roots.any(|r| within(&target, &canon(r))) {
        Ok(())
    } else {
        Err(target)
    }
}

impl Checker<'_> {
    /// `p` as written in the file, resolved against the file's directory, if the file may read
    /// it; otherwise E0506 at `span` and `None`.
    pub fn read_path(&mut self, p: &str, span: Span) -> Option<String> {
        let resolved = self.resolve_path(p);
        let Err(target) = permitted(self.fs, &resolved, &self.base_dir) else {
            return Some(resolved);
        };
        let own = if self.base_dir.is_empty() {
            ".".to_string()
        } else {
            self.base_dir.clone()
        };
        let shown = if target == lexical(&resolved) {
            format!("`{resolved}`")
        } else {
            format!("`{resolved}` (resolves to `{target}`)")
        };
        self.err(
            Diagnostic::error(
                Code::E0506,
                format!("{shown} is outside the directories this file may read"),
                span,
                "outside the file's directory",
            )
            .with_help(format!(
                "a file reads under its own directory (`{own}`); grant another with `--allow-read DIR` (post check / run / compile)"
            )),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_folds_dots() {
        assert_eq!(lexical("a/./b/../c"), "a/c");
        assert_eq!(lexical("../../etc/passwd"), "../../etc/passwd");
        assert_eq!(lexical("a/../../x"), "../x");
        assert_eq!(lexical("/a/../../x"), "/x");
        assert_eq!(lexical("./"), ".");
        assert_eq!(lexical(""), ".");
    }

    #[test]
    fn within_respects_components() {
        assert!(within("ex/data/x.jsonl", "ex"));
        assert!(within("ex", "ex"));
        assert!(!within("example/x", "ex"));
        assert!(!within("ex/../x", "ex"));
        assert!(within("data/x", "."));
        assert!(!within("../x", "."));
        assert!(within("../up/x", "../up"));
        assert!(!within("/etc/passwd", "."));
        assert!(!within("x", "/home"));
        assert!(within("/home/u/x", "/home/u/"));
    }

    #[test]
    fn canonicalize_appends_what_does_not_exist() {
        let existing = |p: &str| match p {
            "." => Some("/cwd".to_string()),
            "ex" => Some("/cwd/ex".to_string()),
            "ex/link" => Some("/etc".to_string()),
            "/" => Some("/".to_string()),
            _ => None,
        };
        assert_eq!(
            canonicalize_with("ex/data/new.jsonl", existing).as_deref(),
            Some("/cwd/ex/data/new.jsonl")
        );
        assert_eq!(
            canonicalize_with("ex/link/passwd", existing).as_deref(),
            Some("/etc/passwd")
        );
        assert_eq!(
            canonicalize_with("missing", existing).as_deref(),
            Some("/cwd/missing")
        );
        assert_eq!(
            canonicalize_with("/nope/x", existing).as_deref(),
            Some("/nope/x")
        );
    }
}
