//! JSONL loading: one JSON object per line, mapped to record fields.

use std::collections::BTreeMap;
use std::path::Path;

use super::{DataError, Record};

/// Read `path`; `fields` maps record field -> JSON key (an empty map keeps every top-level key).
/// String values are taken as they are; numbers and booleans become their JSON text. Blank lines
/// are skipped. The first bad line is reported with its file and 1-based line number.
pub fn load_jsonl(
    path: &Path,
    fields: &BTreeMap<String, String>,
) -> Result<Vec<Record>, DataError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        file: file.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_err = |message: String| DataError::Line {
            file: file.clone(),
            line: i + 1,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| line_err(format!("malformed JSON: {e}")))?;
        let serde_json::Value::Object(obj) = value else {
            return Err(line_err("expected a JSON object".into()));
        };
        let mut record = BTreeMap::new();
        if fields.is_empty() {
            for (k, v) in &obj {
                if let Some(text) = value_text(v) {
                    record.insert(k.clone(), text);
                }
            }
        } else {
            for (field, key) in fields {
                let v = obj.get(key).ok_or_else(|| {
                    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                    line_err(format!(
                        "missing key `{key}` (for field `{field}`); the line has: {}",
                        keys.join(", ")
                    ))
                })?;
                let text = value_text(v).ok_or_else(|| {
                    line_err(format!(
                        "key `{key}` (for field `{field}`) must be a string, number or boolean"
                    ))
                })?;
                record.insert(field.clone(), text);
            }
        }
        out.push(Record::new(record));
    }
    Ok(out)
}

fn value_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("post-jsonl-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn maps_fields_and_reports_lines() {
        let p = write(
            "ok",
            "{\"q\": \"1+1\", \"a\": 2}\n\n{\"q\": \"2+2\", \"a\": \"4\"}\n",
        );
        let fields = BTreeMap::from([
            ("prompt".to_string(), "q".to_string()),
            ("answer".to_string(), "a".to_string()),
        ]);
        let r = load_jsonl(&p, &fields).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].get("answer"), Some("2"));
        assert_eq!(r[1].get("prompt"), Some("2+2"));

        let p = write(
            "bad",
            "{\"q\": \"1\", \"a\": \"2\"}\n{\"q\": \"1\", \"a\": \n",
        );
        let e = load_jsonl(&p, &fields).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:2: malformed JSON"), "{e}");

        let p = write("missing", "{\"q\": \"1\"}\n");
        let e = load_jsonl(&p, &fields).unwrap_err().to_string();
        assert!(
            e.contains(":1: missing key `a` (for field `answer`)"),
            "{e}"
        );
    }
}
