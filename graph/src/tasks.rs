//! Built-in synthetic tasks (`task("arith", difficulty = 4)`): the single table both the
//! checker (names, fields, difficulty ranges, prompt-length estimates) and the runtime (the
//! generators in `post_runtime::tasks`) read, so `post check` and `post run` cannot disagree
//! about what a task accepts.

/// Most records a built-in task generates (`task(size = ...)`): every record is held in memory,
/// so a size such as `1e12` is refused by `post check` and the runtime rather than aborting the
/// process while the records are generated.
pub const MAX_TASK_SIZE: usize = 10_000_000;

/// One built-in task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    pub name: &'static str,
    /// The smallest and largest difficulty the generator supports (inclusive).
    pub min_difficulty: u32,
    pub max_difficulty: u32,
    /// Why the range is what it is (shown in the diagnostic's help line).
    pub range_reason: &'static str,
    /// One line on what the task is (hover docs, help texts).
    pub doc: &'static str,
}

/// Every built-in task, in a stable order (help texts, completion).
pub const TASKS: &[TaskSpec] = &[
    TaskSpec {
        name: "arith",
        min_difficulty: 1,
        max_difficulty: 18,
        range_reason: "18 digits keep every sum inside 64 bits",
        doc: "addition of two `difficulty`-digit numbers, worked column by column",
    },
    TaskSpec {
        name: "carry",
        min_difficulty: 1,
        max_difficulty: 18,
        range_reason: "18 digits keep every sum inside 64 bits",
        doc: "addition of two `difficulty`-digit numbers, with an explicit carry trace",
    },
    TaskSpec {
        name: "chain",
        min_difficulty: 1,
        max_difficulty: 11,
        range_reason: "899 + 11 * 9 < 1000: every value keeps three digits",
        doc: "a 3-digit start plus `difficulty` single digits, added left to right",
    },
    TaskSpec {
        name: "climb",
        min_difficulty: 1,
        max_difficulty: 20,
        range_reason: "a 3-digit start climbs at most 19 a step, so 20 steps stay below 1000",
        doc: "climb from a 3-digit start to a target, `difficulty` steps of one state a line",
    },
    TaskSpec {
        name: "countdown",
        min_difficulty: 2,
        max_difficulty: 8,
        range_reason: "one number needs no operation; 8 keeps the uniqueness check cheap (3^7 sequences)",
        doc: "`difficulty` numbers in a fixed order and a target to reach with + - *",
    },
];

/// The fields every task record has.
pub const FIELDS: &[&str] = &["prompt", "solution", "steps", "answer", "rejected"];

/// The task called `name`, if it is built in.
pub fn spec(name: &str) -> Option<&'static TaskSpec> {
    TASKS.iter().find(|t| t.name == name)
}

/// The task names, in table order.
pub fn names() -> impl Iterator<Item = &'static str> {
    TASKS.iter().map(|t| t.name)
}

/// An upper estimate of a prompt's length in tokens of the built-in character tokenizer (the
/// checker compares it with the model's context before anything runs).
pub fn prompt_tokens(name: &str, difficulty: usize) -> usize {
    match name {
        // "123+456=" with a little framing.
        "arith" | "chain" => 2 * difficulty + 8,
        // "517<600" and a newline.
        "climb" => 9,
        // "use 3 5 7 to make 24:", a carry trace's header, and similar.
        _ => 4 * difficulty + 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_ranges_non_empty() {
        for (i, t) in TASKS.iter().enumerate() {
            assert!(t.min_difficulty >= 1 && t.min_difficulty <= t.max_difficulty);
            assert!(TASKS[..i].iter().all(|u| u.name != t.name));
        }
        assert_eq!(spec("countdown").map(|t| t.min_difficulty), Some(2));
        assert!(spec("nope").is_none());
    }
}
