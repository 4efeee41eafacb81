use sha2::{Digest, Sha256};

/// Hex SHA-256 of `text`: stable across platforms and builds.
pub fn content_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
