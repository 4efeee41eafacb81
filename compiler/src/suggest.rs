//! "Did you mean" suggestions by edit distance.

/// Levenshtein distance over chars, capped work for long strings.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate within a distance that scales with the name's length.
pub fn best<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// A help line "did you mean `x`?" when a close candidate exists.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    best(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// Setting and argument names of the frameworks researchers come from, with post's name for
/// the same thing and where the foreign name is from. A name is suggested only where post's
/// name is a valid argument or setting at that place, so the table may be generous.
pub const FRAMEWORK_NAMES: &[(&str, &str, &str)] = &[
    ("num_generations", "n", "TRL (GRPOConfig)"),
    ("n_samples_per_prompt", "n", "OpenRLHF"),
    ("num_return_sequences", "n", "transformers (generate)"),
    (
        "learning_rate",
        "lr",
        "TRL / transformers (TrainingArguments)",
    ),
    ("actor_learning_rate", "lr", "OpenRLHF"),
    ("max_completion_length", "max_tokens", "TRL"),
    ("max_new_tokens", "max_tokens", "transformers (generate)"),
    ("generate_max_len", "max_tokens", "OpenRLHF"),
    ("max_response_length", "max_tokens", "verl"),
    ("response_length", "max_tokens", "verl"),
    ("per_device_train_batch_size", "batch", "TRL / transformers"),
    ("train_batch_size", "batch", "verl / OpenRLHF"),
    ("rollout_batch_size", "batch", "OpenRLHF"),
    ("epsilon", "eps_low", "TRL (GRPOConfig)"),
    ("epsilon_low", "eps_low", "TRL"),
    ("epsilon_high", "eps_high", "TRL (GRPOConfig)"),
    ("clip_ratio_low", "eps_low", "verl"),
    ("clip_ratio_high", "eps_high", "verl"),
    ("eps_clip", "eps_low", "OpenRLHF"),
    ("loss_type", "aggregate", "TRL (GRPOConfig)"),
    ("loss_agg_mode", "aggregate", "verl"),
    ("kl_coef", "beta", "verl"),
    ("init_kl_coef", "beta", "OpenRLHF"),
    ("max_grad_norm", "grad_clip", "TRL / transformers"),
    (
        "gradient_accumulation_steps",
        "grad_accum",
        "TRL / transformers",
    ),
    ("max_steps", "steps", "TRL / transformers"),
    ("total_training_steps", "steps", "verl"),
    ("save_steps", "checkpoint_every", "TRL / transformers"),
    ("save_total_limit", "keep_checkpoints", "TRL / transformers"),
    ("warmup_steps", "warmup", "TRL / transformers"),
    (
        "num_warmup_steps",
        "warmup",
        "transformers (get_cosine_schedule_with_warmup)",
    ),
    ("adam_beta1", "beta1", "TRL / transformers"),
    ("adam_beta2", "beta2", "TRL / transformers"),
    ("adam_epsilon", "eps", "TRL / transformers"),
];

/// For a name another framework uses, post's name when it is among `candidates`, with the
/// help line that says so: `(post's name, help)`.
pub fn framework_name<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<(&'static str, String)> {
    let (_, ours, from) = FRAMEWORK_NAMES.iter().find(|(f, _, _)| *f == name)?;
    candidates.into_iter().any(|c| c == *ours).then(|| {
        (
            *ours,
            format!("`{name}` is the name in {from}: post calls it `{ours}`"),
        )
    })
}

/// A help line for an unknown argument or setting `name`: another framework's name for one of
/// `candidates`, else the closest candidate. With the first, the rename as a fix.
pub fn unknown_name<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
) -> (Option<String>, Option<&'static str>) {
    if let Some((ours, help)) = framework_name(name, candidates.clone()) {
        return (Some(help), Some(ours));
    }
    (did_you_mean(name, candidates), None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn framework_names_are_suggested_only_where_valid() {
        let (help, fix) = super::unknown_name("num_generations", ["n", "temperature"]);
        assert_eq!(fix, Some("n"));
        assert!(help.unwrap().contains("TRL"));
        let (_, fix) = super::unknown_name("num_generations", ["temperature"]);
        assert_eq!(fix, None);
        // Every foreign name differs from post's, and no foreign name is listed twice.
        let mut seen = std::collections::BTreeSet::new();
        for (f, ours, from) in super::FRAMEWORK_NAMES {
            assert_ne!(f, ours);
            assert!(!from.is_empty());
            assert!(seen.insert(*f), "{f} listed twice");
        }
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(
            super::best("polcy", ["policy", "reference"]),
            Some("policy")
        );
        assert_eq!(super::best("zzz", ["policy"]), None);
        assert_eq!(super::distance("kitten", "sitting"), 3);
    }
}
