//! `file://` URIs <-> paths. Percent-encoding is done by hand: the server needs only file URIs.

/// The path of a `file://` URI; `None` for other schemes.
pub fn to_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("file://")?;
    // `file:///abs` (empty authority) or `file://localhost/abs`.
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        return None;
    }
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = rest
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    let path = String::from_utf8(out).ok()?;
    // Windows drive letters: `/c:/x` -> `c:/x`.
    let p = path.as_bytes();
    if p.len() >= 3 && p[2] == b':' && p[1].is_ascii_alphabetic() {
        return Some(path[1..].to_string());
    }
    Some(path)
}

/// The `file://` URI of an absolute path.
pub fn from_path(path: &str) -> String {
    let mut out = String::from("file://");
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"/-_.~:".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for p in ["/a/b c/é.post", "/tmp/x%y.post", "/plain/path.post"] {
            assert_eq!(to_path(&from_path(p)).as_deref(), Some(p));
        }
        assert_eq!(to_path("untitled:Untitled-1"), None);
        assert_eq!(to_path("file:///c%3A/x.post").as_deref(), Some("c:/x.post"));
    }
}
