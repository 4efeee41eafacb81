//! The stdio transport: `Content-Length` framed JSON-RPC in, messages to the server out.
//!
//! `lsp_server`'s own stdio reader ends the connection at the first malformed message (bad
//! header, invalid JSON or UTF-8, a lone surrogate escape) and allocates whatever
//! `Content-Length` claims, so one bad byte from a client stopped the server. This reader never
//! gives up: a frame it cannot use becomes a [`BAD_MESSAGE`] notification to the server, which
//! logs it (and answers it when it carried a request id), and reading goes on at the next
//! `Content-Length` header.

use std::io::{self, BufRead, Read, Write};
use std::thread;

use lsp_server::{Connection, Message, Notification};
use serde_json::{Value, json};

/// The notification the transport sends the server about a frame it could not use:
/// params `{ "message": string, "id"?: number | string }`.
pub const BAD_MESSAGE: &str = "$/post/badMessage";

/// Largest message body accepted (a whole buffer travels in one `didOpen`); a longer one is
/// skipped rather than allocated.
pub const MAX_BODY: usize = 256 << 20;

/// Longest header line read before it is treated as garbage.
const MAX_HEADER_LINE: u64 = 4096;

/// One frame read from the client.
#[derive(Debug)]
pub enum Frame {
    Message(Message),
    /// Unusable input: why, and the request id when one could be recovered.
    Bad(String, Option<Value>),
    Eof,
}

/// Serve on stdin/stdout through this transport until the client says `exit`.
pub fn run_stdio(config: crate::Config) -> Result<(), String> {
    let (server_side, transport_side) = Connection::memory();
    let Connection {
        sender: to_server,
        receiver: from_server,
    } = transport_side;
    let writer = thread::Builder::new()
        .name("post-lsp-writer".into())
        .spawn(move || -> io::Result<()> {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            for m in from_server {
                m.write(&mut out)?;
            }
            out.flush()
        })
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    // The reader is not joined: after `exit` it may still be blocked reading stdin, and the
    // process ends anyway.
    thread::Builder::new()
        .name("post-lsp-reader".into())
        .spawn(move || {
            let stdin = io::stdin();
            let mut input = stdin.lock();
            loop {
                let m = match read_frame(&mut input) {
                    Ok(Frame::Eof) | Err(_) => break,
                    Ok(Frame::Message(m)) => m,
                    Ok(Frame::Bad(why, id)) => bad_message(why, id),
                };
                let exit = matches!(&m, Message::Notification(n) if n.method == "exit");
                if to_server.send(m).is_err() || exit {
                    break;
                }
            }
        })
        .map_err(|e| format!("cannot start the reader thread: {e}"))?;
    let result = crate::serve(server_side, config);
    writer
        .join()
        .map_err(|_| "the writer thread panicked".to_string())?
        .map_err(|e| format!("cannot write to the client: {e}"))?;
    result
}

fn bad_message(why: String, id: Option<Value>) -> Message {
    let mut params = json!({ "message": why });
    if let Some(id) = id {
        params["id"] = id;
    }
    Notification::new(BAD_MESSAGE.into(), params).into()
}

/// Read one frame. Only an I/O error or the end of input ends the stream; anything else that
/// is wrong is a [`Frame::Bad`], after which the next call resumes at the next header.
pub fn read_frame(r: &mut impl BufRead) -> io::Result<Frame> {
    let mut length: Option<Result<usize, String>> = None;
    let mut saw_header = false;
    loop {
        let mut raw = Vec::new();
        let n = r
            .by_ref()
            .take(MAX_HEADER_LINE)
            .read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Ok(Frame::Eof);
        }
        if raw.last() != Some(&b'\n') && n as u64 == MAX_HEADER_LINE {
            // A very long line: garbage (say, the tail of a body longer than its header said).
            // Skip to its end without keeping it.
            skip_line(r)?;
            return Ok(Frame::Bad("a header line is too long".into(), None));
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if saw_header {
                break;
            }
            // Blank lines between frames are tolerated.
            continue;
        }
        // Resynchronise after a bad frame: a header may follow garbage on the same line.
        let header = match find_ignore_case(line, "content-length:") {
            Some(i) => &line[i..],
            None => line,
        };
        let Some((name, value)) = header.split_once(':') else {
            return Ok(Frame::Bad(
                format!("expected a header, got {:?}", clip(line)),
                None,
            ));
        };
        saw_header = true;
        if name.trim().eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("invalid Content-Length {:?}", clip(value.trim()))),
            );
        }
    }
    let len = match length {
        None => return Ok(Frame::Bad("a message without Content-Length".into(), None)),
        Some(Err(e)) => return Ok(Frame::Bad(e, None)),
        Some(Ok(n)) if n > MAX_BODY => {
            return Ok(Frame::Bad(
                format!("Content-Length {n} is over the limit of {MAX_BODY} bytes"),
                None,
            ));
        }
        Some(Ok(n)) => n,
    };
    let mut body = Vec::new();
    r.by_ref().take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Ok(Frame::Eof);
    }
    Ok(decode(&body))
}

/// A body as a message. Invalid UTF-8 and lone surrogate escapes (`"\ud83d"`, which editors
/// produce when a buffer splits an emoji) become U+FFFD rather than losing the message: a
/// dropped `didChange` would leave the server's copy of the buffer wrong from then on.
pub fn decode(body: &[u8]) -> Frame {
    let text = String::from_utf8_lossy(body);
    let text = repair_surrogates(&text);
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return Frame::Bad(format!("malformed JSON: {e}"), None),
    };
    match serde_json::from_value::<Message>(value.clone()) {
        Ok(m) => Frame::Message(m),
        Err(e) => {
            let id = value
                .get("id")
                .filter(|id| id.is_i64() || id.is_string())
                .cloned();
            Frame::Bad(format!("not a JSON-RPC message: {e}"), id)
        }
    }
}

/// Replace `\uXXXX` escapes of unpaired UTF-16 surrogates with `\ufffd`.
fn repair_surrogates(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("\\u") {
        return text.into();
    }
    let b = text.as_bytes();
    let hex_at = |i: usize| -> Option<u32> {
        let h = text.get(i..i + 4)?;
        u32::from_str_radix(h, 16).ok()
    };
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let Some(unit) = hex_at(i + 2) else {
            i += 2;
            continue;
        };
        let paired_low = || {
            b.get(i + 6) == Some(&b'\\')
                && b.get(i + 7) == Some(&b'u')
                && hex_at(i + 8).is_some_and(|u| (0xDC00..0xE000).contains(&u))
        };
        match unit {
            0xD800..0xDC00 if paired_low() => i += 12,
            0xD800..0xE000 => {
                out.push_str(&text[last..i]);
                out.push_str("\\ufffd");
                i += 6;
                last = i;
            }
            _ => i += 6,
        }
    }
    if last == 0 {
        return text.into();
    }
    out.push_str(&text[last..]);
    out.into()
}

fn skip_line(r: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&c| c == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

fn find_ignore_case(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_lowercase().find(needle)
}

/// At most 80 characters of `s`, for a log line.
fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut r = io::BufReader::new(input);
        let mut out = Vec::new();
        loop {
            match read_frame(&mut r).unwrap() {
                Frame::Eof => return out,
                f => out.push(f),
            }
        }
    }

    fn frame(body: &str) -> Vec<u8> {
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    fn is_message(f: &Frame, method: &str) -> bool {
        matches!(f, Frame::Message(Message::Notification(n)) if n.method == method)
    }

    #[test]
    fn bad_frames_are_reported_and_reading_resumes() {
        let good = r#"{"jsonrpc":"2.0","method":"ok","params":{}}"#;
        let mut input = Vec::new();
        input.extend(frame("{not json"));
        input.extend(frame(good));
        input.extend(b"Content-Length: abc\r\n\r\n{}");
        input.extend(frame(good));
        input.extend(b"Content-Type: x\r\n\r\n");
        input.extend(frame(good));
        input.extend(b"Content-Length: 99999999999999\r\n\r\n");
        input.extend(frame(good));
        input.extend(frame(r#"{"jsonrpc":"2.0","id":7,"method":5}"#));
        input.extend(frame(good));
        let f = frames(&input);
        let kinds: Vec<&str> = f
            .iter()
            .map(|f| match f {
                Frame::Bad(..) => "bad",
                f if is_message(f, "ok") => "ok",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "bad", "ok", "bad", "ok", "bad", "ok", "bad", "ok", "bad", "ok"
            ],
            "{f:?}"
        );
        // The request id of a message that is not JSON-RPC is kept, so it can be answered.
        assert!(
            matches!(&f[8], Frame::Bad(_, Some(id)) if id == 7),
            "{:?}",
            f[8]
        );
    }

    #[test]
    fn lone_surrogates_and_invalid_utf8_become_replacement_characters() {
        let body = br#"{"jsonrpc":"2.0","method":"ok","params":{"t":"a\ud83d b\ude00 \ud83d\ude00 \\ud83d"}}"#;
        let Frame::Message(Message::Notification(n)) = decode(body) else {
            panic!("not decoded");
        };
        assert_eq!(n.params["t"], "a\u{fffd} b\u{fffd} \u{1F600} \\ud83d");
        let mut bytes = br#"{"jsonrpc":"2.0","method":"ok","params":{"t":"x"#.to_vec();
        bytes.extend([0xff, 0xfe]);
        bytes.extend(br#""}}"#);
        let Frame::Message(Message::Notification(n)) = decode(&bytes) else {
            panic!("not decoded");
        };
        assert_eq!(n.params["t"], "x\u{fffd}\u{fffd}");
    }
}
