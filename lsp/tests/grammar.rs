//! The VS Code extension's files are valid: the TextMate grammar parses, every regular
//! expression in it compiles (fancy-regex accepts the portable subset of Oniguruma the grammar
//! restricts itself to), and the main patterns match what they are meant to.

use std::path::PathBuf;

use serde_json::Value;

fn editor_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../editors/vscode")
        .join(name)
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(editor_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"))
}

/// Every (json path, regex) in the grammar: `match`, `begin`, `end`, `while` keys.
fn regexes(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{path}.{k}");
                match (k.as_str(), x) {
                    ("match" | "begin" | "end" | "while", Value::String(s)) => {
                        out.push((p, s.clone()))
                    }
                    _ => regexes(x, &p, out),
                }
            }
        }
        Value::Array(xs) => {
            for (i, x) in xs.iter().enumerate() {
                regexes(x, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn grammar() -> Value {
    json("syntaxes/post.tmLanguage.json")
}

/// The named pattern of the repository (its `match`, or its first sub-pattern's).
fn pattern(name: &str) -> fancy_regex::Regex {
    let g = grammar();
    let entry = &g["repository"][name];
    let src = entry["match"]
        .as_str()
        .or_else(|| entry["patterns"][0]["match"].as_str())
        .unwrap_or_else(|| panic!("no pattern `{name}`"));
    fancy_regex::Regex::new(src).expect("compiles")
}

#[test]
fn every_regex_compiles() {
    let g = grammar();
    let mut all = Vec::new();
    regexes(&g, "grammar", &mut all);
    assert!(all.len() > 20, "too few patterns found: {}", all.len());
    let mut bad = Vec::new();
    for (path, re) in &all {
        if let Err(e) = fancy_regex::Regex::new(re) {
            bad.push(format!("{path}: {re:?}: {e}"));
        }
        // Constructs Oniguruma and fancy-regex read differently are kept out.
        for forbidden in ["\\h", "\\H", "(?x)", "\\G", "\\K", "(?~", "\\p{"] {
            if re.contains(forbidden) {
                bad.push(format!("{path}: {re:?} uses non-portable `{forbidden}`"));
            }
        }
    }
    assert!(bad.is_empty(), "invalid patterns:\n{}", bad.join("\n"));
}

#[test]
fn includes_resolve_and_scope_names_match() {
    let g = grammar();
    assert_eq!(g["scopeName"], "source.post");
    let repo = g["repository"].as_object().expect("a repository");
    let mut includes = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(s)) = m.get("include") {
                    out.push(s.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(xs) => xs.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&g, &mut includes);
    for inc in includes {
        let name = inc
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external include {inc}"));
        assert!(repo.contains_key(name), "include {inc} names nothing");
    }
    let pkg = json("package.json");
    let grammar_entry = &pkg["contributes"]["grammars"][0];
    assert_eq!(grammar_entry["scopeName"], "source.post");
    assert_eq!(grammar_entry["language"], "post");
    let lang = &pkg["contributes"]["languages"][0];
    assert_eq!(lang["extensions"][0], ".post");
    let main = pkg["main"].as_str().expect("main");
    assert!(editor_file(main).is_file(), "{main} missing");
    let conf = json("language-configuration.json");
    assert_eq!(conf["comments"]["lineComment"], "//");
    fancy_regex::Regex::new(conf["wordPattern"].as_str().expect("a pattern")).expect("compiles");
    for key in ["increaseIndentPattern", "decreaseIndentPattern"] {
        fancy_regex::Regex::new(conf["indentationRules"][key].as_str().expect("a pattern"))
            .expect("compiles");
    }
}

#[test]
fn patterns_match_the_language() {
    let q = pattern("quantity");
    let c = q
        .captures("batch = 64 prompts")
        .expect("ok")
        .expect("a quantity");
    assert_eq!((&c[1], &c[2]), ("64", "prompts"));
    assert!(q.is_match("max_tokens = 3e2 tokens").expect("ok"));
    assert!(!q.is_match("n = 8").expect("ok"));
    assert!(!q.is_match("n = 8 tokensx").expect("ok"));

    let d = pattern("declaration");
    let c = d
        .captures("  objective chi2(y: seqs) = 1")
        .expect("ok")
        .expect("a declaration");
    assert_eq!((&c[1], &c[2]), ("objective", "chi2"));

    let b = pattern("block");
    let c = b.captures("  stage rl {").expect("ok").expect("a block");
    assert_eq!(&c[2], "rl");

    let n = pattern("named-value");
    let c = n
        .captures("sample(policy, n = 8)")
        .expect("ok")
        .expect("a named argument");
    assert_eq!(&c[1], "n");
    assert!(!n.is_match("a == b").expect("ok"));
    assert!(!n.is_match("x => y").expect("ok"));

    let cm = pattern("comment");
    assert_eq!(
        cm.find("x = 1 // note").expect("ok").map(|m| m.as_str()),
        Some("// note")
    );

    let builtin = pattern("builtin-call");
    assert!(builtin.is_match("adamw(lr = 1e-4)").expect("ok"));
    assert!(!builtin.is_match("adamwx(lr = 1e-4)").expect("ok"));
}

/// Every built-in the compiler documents (a superset of the checker's list, which a compiler
/// test enforces) is highlighted as one.
#[test]
fn builtins_are_highlighted() {
    let builtin = pattern("builtin-call");
    for name in post_compiler::ide::docs::BUILTINS
        .iter()
        .map(|b| b.name)
        .filter(|n| *n != "select")
    {
        let call = format!("{name}(x)");
        assert!(
            builtin.is_match(&call).expect("ok"),
            "`{name}` is not in the grammar's built-ins"
        );
    }
}
