//! Fixture loading shared by the compiler's integration tests: the examples, the stdlib and the
//! example data files are read once from the repository into a [`MemoryFs`], so the compiler
//! under test does no IO.
#![allow(clippy::disallowed_methods, dead_code)]

use post_compiler::MemoryFs;

pub fn root() -> String {
    format!("{}/..", env!("CARGO_MANIFEST_DIR"))
}

/// (repository-relative path, text) of every `*.post` file under `dir`, sorted.
pub fn post_files(dir: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let full = format!("{}/{dir}", root());
    for e in std::fs::read_dir(&full).expect("fixture directory exists") {
        let p = e.expect("readable entry").path();
        if p.extension().is_some_and(|x| x == "post") {
            let name = format!(
                "{dir}/{}",
                p.file_name().expect("a file name").to_string_lossy()
            );
            let text = std::fs::read_to_string(&p).expect("fixture is UTF-8");
            out.push((name, text));
        }
    }
    out.sort();
    out
}

/// A file system holding the examples, the stdlib and the example data.
pub fn fixture_fs() -> MemoryFs {
    let mut fs = MemoryFs::new();
    for dir in ["examples", "stdlib"] {
        for (n, t) in post_files(dir) {
            fs.insert(&n, &t);
        }
    }
    let data = format!("{}/examples/data", root());
    for e in std::fs::read_dir(&data).expect("examples/data exists") {
        let p = e.expect("readable entry").path();
        let name = format!(
            "examples/data/{}",
            p.file_name().expect("a file name").to_string_lossy()
        );
        fs.insert(&name, &std::fs::read_to_string(&p).expect("data is UTF-8"));
    }
    fs
}
