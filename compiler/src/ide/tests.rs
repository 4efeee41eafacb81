//! Unit tests of the IDE queries, on in-memory text (`$0` marks the cursor).

use super::complete::filter_prefix;
use super::*;
use crate::MemoryFs;

fn cursor(src: &str) -> (String, u32) {
    let at = src.find("$0").expect("a $0 cursor");
    (src.replacen("$0", "", 1), at as u32)
}

fn labels(src: &str) -> Vec<String> {
    let (text, at) = cursor(src);
    let a = Analysis::new(&text, "main.post");
    let items = filter_prefix(&a.source, a.completions(&MemoryFs::new(), at));
    items.into_iter().map(|c| c.label).collect()
}

#[test]
fn dataset_dot_offers_fields_and_transforms() {
    let l = labels("experiment e {\n  data t = task(\"arith\")\n  data u = t.$0\n}\n");
    for want in ["prompt", "solution", "answer", "rejected", "template", "shuffle", "take"] {
        assert!(l.iter().any(|x| x == want), "missing {want} in {l:?}");
    }
}

#[test]
fn jsonl_fields_come_from_the_first_records() {
    let fs = MemoryFs::new().with("dir/data/qa.jsonl", "{\"q\": 1, \"a\": 2}\n{\"q\": 3, \"a\": 4, \"x\": 5}\n");
    let (text, at) = cursor("experiment e {\n  data qa = jsonl(\"data/qa.jsonl\")\n  data t = qa.$0template(\"{q}\")\n}\n");
    let a = Analysis::new(&text, "dir/main.post");
    let l: Vec<String> = a.completions(&fs, at).into_iter().map(|c| c.label).collect();
    for want in ["q", "a", "template", "shuffle"] {
        assert!(l.iter().any(|x| x == want), "missing {want} in {l:?}");
    }
    assert!(!l.iter().any(|x| x == "x"), "x is not in every record: {l:?}");
}
