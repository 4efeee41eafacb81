//! The one non-cryptographic hash of the runtime (FNV-1a, 64 bit): seeds derived from names,
//! the train/test split of built-in tasks. Stable across platforms and releases, since both
//! decide which numbers a run sees.

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A seed for the stream named `tag`, derived from the experiment's `seed`.
pub fn sub_seed(seed: u64, tag: &str) -> u64 {
    seed ^ fnv1a(tag.as_bytes()).rotate_left(29)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
