// Temporary helper: formats the given files in place when POST_FMT_WRITE is set.
#[test]
fn scratch() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut files: Vec<String> = vec![];
    for dir in ["examples", "stdlib"] {
        for e in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().map_or(false, |x| x == "post") { files.push(format!("{dir}/{}", p.file_name().unwrap().to_string_lossy())); }
        }
    }
    files.sort();
    for f in &files {
        let src = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        let mut fs = post_compiler::MemoryFs::new().with(f, &src);
        for e in std::fs::read_dir(format!("{root}/examples/data")).unwrap() { let p = e.unwrap().path(); let n = format!("examples/data/{}", p.file_name().unwrap().to_string_lossy()); fs.insert(&n, &std::fs::read_to_string(&p).unwrap()); }
        let c = post_compiler::compile(&fs, f);
        for d in &c.diagnostics { println!("{f}: {} {} @{}..{} [{}] help={:?}", d.code, d.message, d.primary.span.start, d.primary.span.end, &src[d.primary.span.start as usize..(d.primary.span.end as usize).min(src.len())], d.help); }
        if std::env::var("SHOW").map_or(false, |s| f.contains(&s)) { if let Some(g) = &c.graph { println!("{}", g.to_json()); println!("{:#?}", c.defaults_report()); } }
        match post_compiler::format(&src) {
            Ok(o) => {
                if o != src { println!("FMT DIFF {f}"); if std::env::var("POST_FMT_WRITE").is_ok() { std::fs::write(format!("{root}/{f}"), &o).unwrap(); } }
                let o2 = post_compiler::format(&o).unwrap();
                if o2 != o { println!("NOT IDEMPOTENT {f}"); }
            }
            Err(e) => println!("fmt err {f} {e:?}"),
        }
    }
}
