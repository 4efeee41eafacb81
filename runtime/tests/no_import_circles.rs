//! No two modules import each other, anywhere in the house (runtime, kernels, compiler, graph).
//!
//! Every `.rs` file is a module (`lib.rs` the crate root, `a/mod.rs` and `a.rs` module `a`).
//! Its imports are the `crate::...` and `super::...` paths it names (in `use` items, brace
//! groups included, and inline paths), resolved to the deepest module file they reach; an
//! inline `mod tests { use super::*; }` refers to its own file. The test fails on any pair of
//! files importing each other, and on any pair of top-level modules (a module with everything
//! below it) whose files import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Known circles awaiting a fix (none now). Each entry must still be a circle, so the list
/// cannot go stale: delete an entry when its fix lands.
const PENDING: &[(&str, &str, &str)] = &[];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file
        .strip_prefix(root)
        .expect("under the root")
        .with_extension("");
    let mut segs: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segs.len() == 1 && (segs[0] == "lib" || segs[0] == "main") {
        segs.clear();
    } else if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    segs
}

/// The source without comments and string/char literals (their contents are not paths).
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r'
            && matches!(b.get(i + 1), Some('"') | Some('#'))
            && !ident(b.get(i.wrapping_sub(1)))
        {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|h| b.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else if c == '\'' && b.get(i + 1) == Some(&'\\') {
            while i + 1 < b.len() && b[i + 1] != '\'' {
                i += 1;
            }
            i += 2;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// The paths (`crate::...` / `super::...`, as segment lists including the leading keyword)
/// in `code`, with the depth of inline modules they sit in.
fn paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    // Inline module nesting: brace depths at which an inline `mod x {` opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == '}' {
            if inline.last() == Some(&depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if ident(Some(&c)) && !ident(b.get(i.wrapping_sub(1))) {
            let start = i;
            while ident(b.get(i)) {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            if word == "mod" {
                // `mod name {` opens an inline module; `mod name;` declares a file.
                let mut j = i;
                while j < b.len() && (b[j].is_whitespace() || ident(Some(&b[j]))) {
                    j += 1;
                }
                if b.get(j) == Some(&'{') {
                    inline.push(depth + 1);
                }
            } else if (word == "crate" || word == "super") && b.get(i) == Some(&':') {
                let (mut found, end) = path_from(&b, start);
                for p in found.drain(..) {
                    out.push((p, inline.len()));
                }
                i = end;
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Every full path starting at `start` (brace groups expand to one path per item), and the
/// index after it.
fn path_from(b: &[char], start: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = start;
    loop {
        let s = i;
        while ident(b.get(i)) {
            i += 1;
        }
        if s == i {
            break;
        }
        prefix.push(b[s..i].iter().collect::<String>());
        if b.get(i) == Some(&':') && b.get(i + 1) == Some(&':') {
            i += 2;
            while b.get(i).is_some_and(|c| c.is_whitespace()) {
                i += 1;
            }
            if b.get(i) == Some(&'{') {
                // A group: each item is a path relative to `prefix`.
                let mut all = Vec::new();
                i += 1;
                loop {
                    while b.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                        i += 1;
                    }
                    match b.get(i) {
                        None => return (all, i),
                        Some('}') => return (all, i + 1),
                        Some(_) => {}
                    }
                    let (items, end) = path_from(b, i);
                    if end == i {
                        i += 1; // `*`, `self` handled as the prefix itself
                        all.push(prefix.clone());
                        continue;
                    }
                    for it in items {
                        let mut p = prefix.clone();
                        p.extend(it.into_iter().filter(|s| s != "self"));
                        all.push(p);
                    }
                    // Skip `as name`.
                    i = end;
                    while b.get(i).is_some_and(|c| *c != ',' && *c != '}') {
                        i += 1;
                    }
                }
            }
            continue;
        }
        break;
    }
    (vec![prefix], i)
}

/// The module file a path from `from` (inside `inline` inline modules) reaches.
fn resolve(
    from: &Module,
    inline: usize,
    path: &[String],
    modules: &BTreeSet<Module>,
) -> Option<Module> {
    let mut base: Module;
    let mut rest = path;
    if rest.first().is_some_and(|s| s == "crate") {
        base = Vec::new();
        rest = &rest[1..];
    } else {
        base = from.clone();
        // The first `inline` supers leave inline modules of this same file.
        let mut skip = inline;
        while rest.first().is_some_and(|s| s == "super") {
            if skip > 0 {
                skip -= 1;
            } else {
                base.pop()?;
            }
            rest = &rest[1..];
        }
    }
    let mut best = base.clone();
    for s in rest {
        base.push(s.clone());
        if modules.contains(&base) {
            best = base.clone();
        } else {
            break;
        }
    }
    Some(best)
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// The circles of one crate: pairs of files, and pairs of top-level modules.
fn circles(root: &Path) -> Vec<(String, String)> {
    let mut list = Vec::new();
    files(root, &mut list);
    let modules: BTreeSet<Module> = list.iter().map(|f| module_of(root, f)).collect();
    let mut edges: BTreeSet<(Module, Module)> = BTreeSet::new();
    for f in &list {
        let from = module_of(root, f);
        let code = code_only(&std::fs::read_to_string(f).expect("readable source"));
        for (p, inline) in paths(&code) {
            if let Some(to) = resolve(&from, inline, &p, &modules)
                && to != from
            {
                edges.insert((from.clone(), to));
            }
        }
    }
    let mut out = BTreeSet::new();
    for (a, b) in &edges {
        if a < b && edges.contains(&(b.clone(), a.clone())) {
            out.insert((name(a), name(b)));
        }
    }
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in &edges {
        if let (Some(x), Some(y)) = (a.first(), b.first())
            && x != y
        {
            top.entry(x.clone()).or_default().insert(y.clone());
        }
    }
    for (x, ys) in &top {
        for y in ys {
            if x < y && top.get(y).is_some_and(|z| z.contains(x)) {
                out.insert((x.clone(), y.clone()));
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn no_two_modules_import_each_other() {
    let house = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut pending_seen = BTreeSet::new();
    for krate in ["runtime", "kernels", "compiler", "graph"] {
        for (a, b) in circles(&house.join(krate).join("src")) {
            if PENDING.contains(&(krate, a.as_str(), b.as_str())) {
                pending_seen.insert((krate, a.clone(), b.clone()));
            } else {
                found.push(format!("{krate}: `{a}` and `{b}` import each other"));
            }
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
    for (k, a, b) in PENDING {
        assert!(
            pending_seen.contains(&(*k, a.to_string(), b.to_string())),
            "{k}: `{a}` and `{b}` no longer import each other: remove them from PENDING"
        );
    }
}

#[test]
fn the_scanner_sees_a_circle() {
    let dir = std::env::temp_dir().join(format!("post-circles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a; mod b;").unwrap();
    std::fs::write(
        dir.join("a/mod.rs"),
        "mod inner;\nuse crate::{b::{self, f}, x};\n// use crate::c::g;\n",
    )
    .unwrap();
    std::fs::write(dir.join("a/inner.rs"), "fn g() { super::h() }").unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "pub fn f() { let s = \"crate::c\"; crate::a::inner::g(); }\n#[cfg(test)]\nmod tests { use super::*; }",
    )
    .unwrap();
    std::fs::write(dir.join("c.rs"), "use crate::b::f;").unwrap();
    let found = circles(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found, vec![("a".to_string(), "b".to_string())]);
}
