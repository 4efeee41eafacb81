//! Text the tokenizer cannot encode: every encoded training sequence and eval prompt is
//! counted for the tokenizer's `<unk>` id, per dataset, before step 1. Above [`REFUSE_SHARE`]
//! of a dataset's tokens the run is refused (the model would train on placeholders, e.g.
//! capital letters through the built-in lower-case tokenizer); any `<unk>` at all is reported
//! as a warning. Both name the first record that has one and, for the built-in tokenizer, the
//! characters it lacks.

use std::collections::BTreeMap;

use crate::tokenizer::{CHARS, Tokenizer};

/// The share of a dataset's tokens that may be `<unk>` before the run is refused.
pub const REFUSE_SHARE: f64 = 0.01;

#[derive(Debug, Default, Clone)]
struct Count {
    tokens: u64,
    unk: u64,
    /// (record index, 0-based; the text) of the first record with an `<unk>`.
    first: Option<(usize, String)>,
}

/// `<unk>` counts per dataset.
#[derive(Debug, Default)]
pub struct UnkTally {
    unk_id: Option<u32>,
    by_dataset: BTreeMap<String, Count>,
}

/// What the tally found for the datasets.
#[derive(Debug, Default, PartialEq)]
pub struct UnkReport {
    /// One message per dataset above [`REFUSE_SHARE`].
    pub refuse: Vec<String>,
    /// One message per dataset with any `<unk>` below it.
    pub warn: Vec<String>,
}

impl UnkTally {
    pub fn new(tok: &Tokenizer) -> Self {
        UnkTally {
            unk_id: tok.unk_id(),
            by_dataset: BTreeMap::new(),
        }
    }

    /// Count the encoding `ids` of record `index` of `dataset`, made from `text`.
    pub fn add(&mut self, dataset: &str, index: usize, ids: &[u32], text: impl FnOnce() -> String) {
        let Some(unk) = self.unk_id else {
            return;
        };
        let c = self.by_dataset.entry(dataset.to_string()).or_default();
        let n = ids.iter().filter(|&&i| i == unk).count() as u64;
        c.tokens += ids.len() as u64;
        c.unk += n;
        if n > 0 && c.first.is_none() {
            c.first = Some((index, text()));
        }
    }

    /// The messages, `describe(dataset, index)` naming a record ("record 3 of data/x.jsonl").
    pub fn report(&self, builtin: bool, describe: impl Fn(&str, usize) -> String) -> UnkReport {
        let mut out = UnkReport::default();
        for (name, c) in &self.by_dataset {
            let Some((index, text)) = &c.first else {
                continue;
            };
            let share = c.unk as f64 / c.tokens.max(1) as f64;
            let lacking = if builtin {
                let mut missing: Vec<char> = Vec::new();
                for ch in text.chars() {
                    if !CHARS.contains(ch) && !missing.contains(&ch) {
                        missing.push(ch);
                    }
                }
                let shown: Vec<String> = missing.iter().take(8).map(|c| format!("{c:?}")).collect();
                format!(
                    "; the built-in tokenizer has no {} (it knows lower-case letters, digits and `{}`)",
                    shown.join(", "),
                    CHARS
                        .trim_start_matches(|c: char| c.is_ascii_alphanumeric())
                        .escape_debug()
                )
            } else {
                String::new()
            };
            let msg = format!(
                "dataset `{name}`: {} of {} tokens ({:.2}%) are `<unk>`, first in {}{lacking}",
                c.unk,
                c.tokens,
                100.0 * share,
                describe(name, *index)
            );
            if share > REFUSE_SHARE {
                out.refuse.push(format!(
                    "{msg}: training on it would learn placeholders. Fix the text (e.g. lower-case it) or use a model with a tokenizer that covers it"
                ));
            } else {
                out.warn.push(format!("warning: {msg}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(texts: &[&str]) -> UnkTally {
        let tok = Tokenizer::builtin_char();
        let mut t = UnkTally::new(&tok);
        for (i, s) in texts.iter().enumerate() {
            let ids = tok.encode(s).unwrap();
            t.add("train", i, &ids, || s.to_string());
        }
        t
    }

    #[test]
    fn clean_text_reports_nothing() {
        let r = tally(&["1+2=3", "abc"]).report(true, |_, i| format!("record {}", i + 1));
        assert_eq!(r, UnkReport::default());
    }

    #[test]
    fn capitals_are_refused_naming_the_first_record_and_characters() {
        let r = tally(&["1+2=3", "What is 2+3?", "Hello"])
            .report(true, |_, i| format!("record {}", i + 1));
        assert!(r.warn.is_empty());
        let m = &r.refuse[0];
        assert!(
            m.contains("record 2") && m.contains("'W'") && m.contains("2 of 22 tokens"),
            "{m}"
        );
    }

    #[test]
    fn a_rare_unknown_character_is_a_warning() {
        let long = "1".repeat(300);
        let r = tally(&[&long, "x!"]).report(true, |_, i| format!("record {}", i + 1));
        assert!(r.refuse.is_empty());
        assert!(
            r.warn[0].starts_with("warning: dataset `train`: 1 of 302"),
            "{:?}",
            r.warn
        );
        assert!(r.warn[0].contains("'!'"), "{:?}", r.warn);
    }
}
