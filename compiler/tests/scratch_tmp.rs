#[test]
fn scratch() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for f in ["examples/quickstart.post", "stdlib/objectives.post", "stdlib/rewards.post", "stdlib/rollouts.post"] {
        let src = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        let fs = post_compiler::MemoryFs::new().with(f, &src);
        let c = post_compiler::compile(&fs, f);
        for d in &c.diagnostics { println!("{f}: {:?}", d); }
        if let Some(g) = &c.graph { println!("{}", g.to_json()); }
        match post_compiler::format(&src) { Ok(o) => if o != src { println!("FMT DIFF {f}:\n{o}"); }, Err(e) => println!("fmt err {e:?}") }
    }
}
