//! The one way a reward's regular expression is compiled, shared by `post check` and the
//! runtime's reward evaluator so a pattern passes the check exactly when the run accepts it.
//!
//! The sizes are bounded: with the `regex` crate's defaults a counted repetition such as
//! `a{100000}` compiles (slowly: over a minute was measured) into a program of megabytes. Here
//! it is refused at once with a clear message instead.

/// Most bytes the compiled program of one pattern may take.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Most bytes the lazy DFA of one pattern may cache while matching.
pub const REGEX_DFA_SIZE_LIMIT: usize = 4 << 20;

/// Compile `pattern` with the bounded sizes; the error is a one-line message for a diagnostic.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => format!(
                "the pattern is too large once compiled (over {limit} bytes); use smaller repetition counts such as `{{1,100}}`"
            ),
            e => e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_patterns_compile_and_huge_repetitions_are_refused_quickly() {
        assert!(compile_regex(r"####\s*(-?\d+)").is_ok());
        assert!(compile_regex(r"a{1000}").is_ok());
        let start = std::time::Instant::now();
        let e = compile_regex("a{100000}").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = compile_regex(r"(\w{1000}){1000}").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        // Unbounded, the first took over a minute; refused, it is a matter of milliseconds.
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
        assert!(compile_regex("(").unwrap_err().contains("unclosed group"));
    }
}
