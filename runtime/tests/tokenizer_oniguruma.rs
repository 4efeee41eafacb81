//! Every tokenizer post writes opens in Hugging Face's Python `tokenizers`, whose regexes are
//! Oniguruma's, not the `fancy-regex` dialect the Rust crate is built with here. Without Python,
//! this test compiles each regex of the written `tokenizer.json` with Oniguruma itself (the `onig`
//! crate, the library the Python wheel links) and checks it splits text exactly as `fancy-regex`
//! does; then the written file, loaded by the Rust `tokenizers` crate, encodes as post does. The
//! README's "Hugging Face round trip" gives the command that checks it with `transformers`.

use post_runtime::tokenizer::Tokenizer;
use serde_json::Value;

/// Every `{"Regex": pattern}` in a tokenizer.json (normalizers, pre-tokenizers, decoders).
fn regexes(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("Regex", Value::String(p)) => out.push(p.clone()),
                    _ => regexes(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| regexes(x, out)),
        _ => {}
    }
}

fn onig_spans(re: &onig::Regex, text: &str) -> Vec<(usize, usize)> {
    re.find_iter(text).collect()
}

fn fancy_spans(re: &fancy_regex::Regex, text: &str) -> Vec<(usize, usize)> {
    re.find_iter(text)
        .map(|m| {
            let m = m.expect("fancy-regex matches");
            (m.start(), m.end())
        })
        .collect()
}

const TEXTS: &[&str] = &[
    "12+34=46\n#### 46",
    "Q: what is 7*8?\nA: 56",
    "  spaces\t\ttabs\r\nand lines\n\n",
    "unicode é ü 😀 漢字 and symbols []{}()|\\^$.*+?",
    "",
];

#[test]
fn the_oniguruma_dialect_is_the_one_that_fails_on_the_old_pattern() {
    // The pattern the built-in tokenizer once wrote: fine for fancy-regex, refused by
    // Oniguruma ("undefined group option"), which is why Python could not open it. If this
    // stopped failing the test below would prove nothing.
    assert!(fancy_regex::Regex::new("(?s).").is_ok());
    assert!(onig::Regex::new("(?s).").is_err());
}

#[test]
fn written_tokenizers_split_the_same_in_oniguruma() {
    let dir = std::env::temp_dir().join(format!("post-onig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let post = Tokenizer::builtin_char();
    post.save(&dir).expect("save tokenizer");
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokenizer.json")).expect("tokenizer.json"),
    )
    .expect("JSON");
    let mut patterns = Vec::new();
    regexes(&json, &mut patterns);
    assert!(
        !patterns.is_empty(),
        "the built-in tokenizer splits by a regex"
    );
    for p in &patterns {
        let o = onig::Regex::new(p).unwrap_or_else(|e| panic!("Oniguruma refuses {p:?}: {e}"));
        let f = fancy_regex::Regex::new(p).expect("fancy-regex compiles it");
        for t in TEXTS {
            assert_eq!(onig_spans(&o, t), fancy_spans(&f, t), "{p:?} on {t:?}");
        }
    }
    let hf = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("loads");
    for t in TEXTS {
        let ids = hf.encode(*t, false).expect("encodes").get_ids().to_vec();
        assert_eq!(ids, post.encode(t).expect("post encodes"), "{t:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
