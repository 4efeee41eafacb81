//! JSONL loading: one JSON object per line, mapped to record fields.

use std::collections::BTreeMap;
use std::path::Path;

use post_graph::MAX_DATA_FILE_BYTES;

use super::{DataError, Record};

/// Read `path`; `fields` maps record field -> JSON key (an empty map keeps every top-level key).
/// String values are taken as they are; numbers and booleans become their JSON text. Blank lines
/// are skipped. The first bad line is reported with its file and 1-based line number.
pub fn load_jsonl(
    path: &Path,
    fields: &BTreeMap<String, String>,
) -> Result<Vec<Record>, DataError> {
    let file = path.display().to_string();
    let text = read_data_file(path, MAX_DATA_FILE_BYTES).map_err(|source| DataError::Io {
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

/// Read a data file as UTF-8 text: only a regular file (`/dev/zero` would be read without end,
/// and opening a named pipe blocks the run), of at most `limit` bytes.
pub fn read_data_file(path: &Path, limit: u64) -> std::io::Result<String> {
    let bytes = post_graph::files::read_regular(path, limit).map_err(|e| {
        if e.kind() == std::io::ErrorKind::IsADirectory {
            std::io::Error::other("it is a directory; data must be a regular JSONL file")
        } else {
            e
        }
    })?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("line {line}: it is not UTF-8 text (invalid byte at offset {at})"),
        )
    })?;
    // A byte-order mark (editors on Windows write one) is not JSON; without this the first
    // record would fail as "expected value at line 1 column 1".
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
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

    #[test]
    fn invalid_utf8_names_its_line_and_a_bom_is_skipped() {
        let dir = std::env::temp_dir().join(format!("post-jsonl-enc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, b"{\"a\": \"x\"}\n{\"a\": \"\xff\"}\n").unwrap();
        let e = read_data_file(&bad, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("offset 18"), "{e}");
        let bom = dir.join("bom.jsonl");
        std::fs::write(&bom, "\u{feff}{\"a\": \"x\"}\n").unwrap();
        assert_eq!(read_data_file(&bom, 1 << 20).unwrap(), "{\"a\": \"x\"}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

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

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let fields = BTreeMap::new();
        // A device would be read without end; refused by its metadata, before it is opened.
        if Path::new("/dev/zero").exists() {
            let e = load_jsonl(Path::new("/dev/zero"), &fields)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("/dev/zero") && e.contains("not a regular file"),
                "{e}"
            );
        }
        let p = write("dir", "{}\n");
        let dir = p.parent().unwrap();
        let e = load_jsonl(dir, &fields).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let e = read_data_file(&p, 2).unwrap_err().to_string();
        assert!(e.contains("larger than 2 bytes"), "{e}");
        assert_eq!(read_data_file(&p, 3).unwrap(), "{}\n");
    }

    /// A named pipe with no writer would block `open` forever; it is refused at once.
    #[cfg(unix)]
    #[test]
    fn a_named_pipe_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("post-jsonl-{}-fifo", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("pipe.jsonl");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo on this machine: nothing to test
        }
        let e = load_jsonl(&fifo, &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
