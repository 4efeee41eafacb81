//! Built-in synthetic tasks with machine-checkable answers and step-by-step expert traces.
//!
//! Every record has the text fields `prompt`, `solution` (the expert trace: steps separated by
//! `"\n"`, final line `#### <answer>`), `answer` and `rejected` (a plausible wrong solution in the
//! same format, for preference pairs). Only characters of the built-in char tokenizer occur.
//!
//! Generation is deterministic for (task, split, size, difficulty, seed). Train and test splits
//! are disjoint by construction: a problem belongs to the test split exactly when a fixed hash
//! of its prompt falls in the test bucket, whatever the seed, so no seed can leak a test problem
//! into training.
//!
//! - `arith`: addition of two `difficulty`-digit numbers. The trace works column by column, least
//!   significant digit first, each line `a+b+carry=sum;partial` where `partial` is the result
//!   digits written so far. A model that does not carry correctly gets almost every problem wrong
//!   once numbers have several digits.
//! - `carry`: the same sums written as a state-passing scratchpad, so that every line is computed
//!   from the line above alone. For
//!   `4821+3757` the trace is `482+375,0:8`, `48+37,0:78`, `4+3,1:578`, `+,0:8578`, `#### 8578`:
//!   each line keeps the digits not yet added, the carry, and the result digits so far. Longer
//!   numbers still mean longer strings to copy.
//! - `chain`: a 3-digit start and `difficulty` single digits to add left to right, solved by
//!   rewriting: each line is the line above with its first two terms added, so every step is
//!   the same local rewrite whatever the problem's size. For `517+3+9+2` the trace is
//!   `520+9+2`, `529+2`, `#### 531`. After an expert prefix of `k` lines the rest of the trace
//!   is exactly the trace of a shorter problem, so a late enough expert prefix brings a long
//!   chain within reach of a model trained on short ones.
//! - `climb`: a 3-digit start and a target; each step adds the number's tens digit, units
//!   digit and one, until the number reaches the target (`difficulty` steps), and the answer is
//!   the number reached. Each worked line is the state `x<target`, computed from the line above
//!   alone, so a longer climb is the same step repeated. The record carries two traces: `steps`,
//!   one step a line (what a base model is trained on), and `solution`, the expert's trace that
//!   writes every second state only (two steps a line): a trace the tiny model can continue
//!   from but not simply imitate. For `517<560` the worked trace is `526<560`, `535<560`, `544<560`,
//!   `553<560`, `#### 562`, and the expert's is `535<560`, `553<560`, `#### 562`. The task of
//!   the BREAD reproduction (README).
//! - `countdown`: `difficulty` numbers (1..=9) in a fixed order and a target; the numbers are
//!   combined left to right with `+`, `-` or `*` (every intermediate value non-negative). Only
//!   problems with exactly one operator sequence reaching the target are generated, so the answer
//!   (the fully parenthesised expression) is unique and checkable by exact match, and
//!   [`check`] also verifies any completion by evaluating it. The trace lists one operation per
//!   line; guessing has success probability about 3^-(difficulty-1).
//!
//! What the tiny model does on these tasks (measurements) is in `NOTES.md`, not here.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::hash::fnv1a;
use crate::record::Record;

/// Marker before the final answer in every solution.
pub const ANSWER_MARKER: &str = "####";

/// One in this many problems belongs to the test split.
const TEST_BUCKETS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Arith,
    Carry,
    Chain,
    Climb,
    Countdown,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaskError {
    #[error("unknown task `{0}` (built-in tasks: {names})", names = post_graph::tasks::names().collect::<Vec<_>>().join(", "))]
    Unknown(String),
    #[error("task size {size} is more than the limit of {max} records", max = post_graph::tasks::MAX_TASK_SIZE)]
    Size { size: usize },
    #[error("task difficulty range {lo}..={hi} is empty")]
    EmptyRange { lo: u32, hi: u32 },
    #[error("task `{task}` supports difficulty {min}..={max}, got {got}")]
    Difficulty {
        task: &'static str,
        min: u32,
        max: u32,
        got: u32,
    },
}

impl TaskKind {
    pub fn parse(name: &str) -> Result<TaskKind, TaskError> {
        match name {
            "arith" => Ok(TaskKind::Arith),
            "carry" => Ok(TaskKind::Carry),
            "chain" => Ok(TaskKind::Chain),
            "climb" => Ok(TaskKind::Climb),
            "countdown" => Ok(TaskKind::Countdown),
            other => Err(TaskError::Unknown(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Arith => "arith",
            TaskKind::Carry => "carry",
            TaskKind::Chain => "chain",
            TaskKind::Climb => "climb",
            TaskKind::Countdown => "countdown",
        }
    }

    /// The supported difficulties, from the table the checker reads too.
    fn difficulty_range(self) -> (u32, u32) {
        match post_graph::tasks::spec(self.name()) {
            Some(t) => (t.min_difficulty, t.max_difficulty),
            // Every kind has a table entry (tested below); an empty range refuses everything.
            None => (1, 0),
        }
    }
}

/// Which split a generated problem goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSplit {
    Train,
    Test,
}

impl From<post_graph::Split> for TaskSplit {
    fn from(s: post_graph::Split) -> Self {
        match s {
            post_graph::Split::Train => TaskSplit::Train,
            post_graph::Split::Test => TaskSplit::Test,
        }
    }
}

/// Generate `size` records of `task` (a built-in task name).
pub fn generate(
    task: &str,
    split: TaskSplit,
    size: usize,
    difficulty: u32,
    seed: u64,
) -> Result<Vec<Record>, TaskError> {
    generate_mixed(task, split, size, difficulty..=difficulty, seed)
}

/// Generate `size` records of `task` whose difficulties are drawn uniformly from `difficulty`
/// (a mixture of problem sizes, e.g. to train a base that has seen sums of 1 to 3 digits).
pub fn generate_mixed(
    task: &str,
    split: TaskSplit,
    size: usize,
    difficulty: std::ops::RangeInclusive<u32>,
    seed: u64,
) -> Result<Vec<Record>, TaskError> {
    let kind = TaskKind::parse(task)?;
    // The compiler refuses these too; a hand-written graph must not abort allocating records.
    if size > post_graph::tasks::MAX_TASK_SIZE {
        return Err(TaskError::Size { size });
    }
    let (min, max) = kind.difficulty_range();
    for got in [*difficulty.start(), *difficulty.end()] {
        if got < min || got > max {
            return Err(TaskError::Difficulty {
                task: kind.name(),
                min,
                max,
                got,
            });
        }
    }
    let split_tag = match split {
        TaskSplit::Train => 1u64,
        TaskSplit::Test => 2u64,
    };
    let (lo, hi) = (*difficulty.start(), *difficulty.end());
    if lo > hi {
        return Err(TaskError::EmptyRange { lo, hi });
    }
    // A single difficulty keeps the stream it always had, so existing experiments reproduce.
    let stream = if lo == hi {
        fnv1a(format!("{}/{split_tag}/{hi}", kind.name()).as_bytes())
    } else {
        fnv1a(format!("{}/{split_tag}/{lo}-{hi}", kind.name()).as_bytes())
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stream.rotate_left(17));
    let mut out = Vec::with_capacity(size);
    let mut seen = BTreeSet::new();
    // Small problem spaces (1-digit sums) cannot supply `size` distinct problems; after this
    // many fruitless draws duplicates are accepted rather than looping forever.
    let patience = 200 + 50 * size;
    let mut misses = 0usize;
    while out.len() < size {
        let difficulty = if lo == hi {
            hi
        } else {
            rng.random_range(lo..=hi)
        };
        let problem = match kind {
            TaskKind::Arith => arith_problem(&mut rng, difficulty),
            TaskKind::Carry => carry_problem(&mut rng, difficulty),
            TaskKind::Chain => chain_problem(&mut rng, difficulty),
            TaskKind::Climb => climb_problem(&mut rng, difficulty),
            TaskKind::Countdown => match countdown_problem(&mut rng, difficulty) {
                Some(p) => p,
                None => {
                    misses += 1;
                    if misses > patience * 20 {
                        // Unique-solution problems exist at every supported difficulty (checked
                        // in tests), so this only guards against an infinite loop.
                        break;
                    }
                    continue;
                }
            },
        };
        let in_test = fnv1a(problem.prompt.as_bytes()).is_multiple_of(TEST_BUCKETS);
        if in_test != (split == TaskSplit::Test) {
            continue;
        }
        if !seen.insert(problem.prompt.clone()) && misses < patience {
            misses += 1;
            continue;
        }
        out.push(problem.into_record());
    }
    Ok(out)
}

/// Whether `completion` solves the problem of `record` (a record generated by `task`).
/// The answer is read after the last `####` marker.
pub fn check(task: TaskKind, record: &Record, completion: &str) -> bool {
    let Some(given) = final_answer(completion) else {
        return false;
    };
    match task {
        TaskKind::Arith | TaskKind::Carry | TaskKind::Chain | TaskKind::Climb => {
            record.get("answer").is_some_and(|a| a.trim() == given)
        }
        TaskKind::Countdown => {
            let (Some(prompt), Some(_)) = (record.get("prompt"), record.get("answer")) else {
                return false;
            };
            match parse_countdown_prompt(prompt) {
                Some((numbers, target)) => eval_countdown_answer(given, &numbers) == Some(target),
                None => false,
            }
        }
    }
}

/// The text after the last answer marker, trimmed; None when there is no marker.
pub fn final_answer(completion: &str) -> Option<&str> {
    let idx = completion.rfind(ANSWER_MARKER)?;
    let rest = &completion[idx + ANSWER_MARKER.len()..];
    // The answer is the rest of that line.
    Some(rest.lines().next().unwrap_or("").trim())
}

struct Problem {
    prompt: String,
    solution: String,
    /// The worked trace one step a line, where the expert's `solution` is denser.
    steps: Option<String>,
    answer: String,
    rejected: String,
}

impl Problem {
    fn into_record(self) -> Record {
        let mut r = Record::default();
        r.insert("prompt", self.prompt);
        r.insert("steps", self.steps.unwrap_or_else(|| self.solution.clone()));
        r.insert("solution", self.solution);
        r.insert("answer", self.answer);
        r.insert("rejected", self.rejected);
        r
    }
}

// ---------------------------------------------------------------------------------------------
// arith

fn random_number(rng: &mut ChaCha8Rng, digits: u32) -> u64 {
    if digits == 1 {
        return rng.random_range(0..10);
    }
    let lo = 10u64.pow(digits - 1);
    rng.random_range(lo..lo * 10)
}

fn arith_problem(rng: &mut ChaCha8Rng, digits: u32) -> Problem {
    let a = random_number(rng, digits);
    let b = random_number(rng, digits);
    let prompt = format!("{a}+{b}=?\n");
    let (solution, answer) = arith_trace(a, b, true);
    let (mut rejected, rejected_answer) = arith_trace(a, b, false);
    if rejected_answer == answer {
        // No column carried, so forgetting carries changes nothing: the plausible mistake is
        // then an off-by-one in the last column.
        rejected = arith_off_by_one(a, b);
    }
    Problem {
        prompt,
        solution,
        steps: None,
        answer: answer.to_string(),
        rejected,
    }
}

fn digits_lsb_first(mut n: u64, width: usize) -> Vec<u64> {
    let mut d = Vec::with_capacity(width);
    for _ in 0..width {
        d.push(n % 10);
        n /= 10;
    }
    d
}

/// The column-by-column trace of `a + b`; with `carry == false` carries are dropped (the
/// typical wrong solution).
fn arith_trace(a: u64, b: u64, carry: bool) -> (String, u64) {
    let width = a.max(b).to_string().len();
    let da = digits_lsb_first(a, width);
    let db = digits_lsb_first(b, width);
    let mut lines = Vec::new();
    let mut c = 0u64;
    let mut partial = String::new();
    for (x, y) in da.iter().zip(&db) {
        let s = x + y + c;
        partial.insert(0, char::from(b'0' + (s % 10) as u8));
        lines.push(format!("{x}+{y}+{c}={s};{partial}"));
        c = if carry { s / 10 } else { 0 };
    }
    if c > 0 {
        partial.insert(0, '1');
    }
    let result: u64 = partial.parse().unwrap_or(0);
    lines.push(format!("{ANSWER_MARKER} {result}"));
    (lines.join("\n"), result)
}

fn arith_off_by_one(a: u64, b: u64) -> String {
    let (good, answer) = arith_trace(a, b, true);
    with_answer(&good, answer + 1)
}

/// `solution` with its final answer line replaced by `wrong`: a trace whose steps look right
/// but whose answer is not.
fn with_answer(solution: &str, wrong: u64) -> String {
    let mut lines: Vec<&str> = solution.lines().collect();
    lines.pop();
    let last = format!("{ANSWER_MARKER} {wrong}");
    lines.push(&last);
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// carry

fn carry_problem(rng: &mut ChaCha8Rng, digits: u32) -> Problem {
    let a = random_number(rng, digits);
    let b = random_number(rng, digits);
    let (solution, answer) = carry_trace(a, b, true);
    let (mut rejected, rejected_answer) = carry_trace(a, b, false);
    if rejected_answer == answer {
        rejected = with_answer(&solution, answer + 1);
    }
    Problem {
        prompt: format!("{a}+{b}=?\n"),
        solution,
        steps: None,
        answer: answer.to_string(),
        rejected,
    }
}

/// The state-passing trace of `a + b`: one line per column, `rest_a+rest_b,carry:partial`.
/// With `carry == false` carries are dropped (the typical wrong solution).
fn carry_trace(a: u64, b: u64, carry: bool) -> (String, u64) {
    let sa = a.to_string();
    let sb = b.to_string();
    let width = sa.len().max(sb.len());
    let (pa, pb) = (format!("{sa:0>width$}"), format!("{sb:0>width$}"));
    let (da, db) = (pa.as_bytes(), pb.as_bytes());
    let mut lines = Vec::with_capacity(width + 1);
    let mut c = 0u8;
    let mut partial = String::new();
    for i in (0..width).rev() {
        let s = (da[i] - b'0') + (db[i] - b'0') + c;
        partial.insert(0, char::from(b'0' + s % 10));
        c = if carry { s / 10 } else { 0 };
        lines.push(format!("{}+{},{c}:{partial}", &pa[..i], &pb[..i]));
    }
    if c > 0 {
        partial.insert(0, '1');
    }
    let result: u64 = partial.parse().unwrap_or(0);
    lines.push(format!("{ANSWER_MARKER} {result}"));
    (lines.join("\n"), result)
}

// ---------------------------------------------------------------------------------------------
// chain

fn chain_problem(rng: &mut ChaCha8Rng, terms: u32) -> Problem {
    let start: u64 = rng.random_range(100..900);
    let digits: Vec<u64> = (0..terms).map(|_| rng.random_range(1..10)).collect();
    let (solution, answer) = chain_trace(start, &digits);
    // The plausible mistake: one term skipped.
    let skip = rng.random_range(0..digits.len());
    let mut fewer = digits.clone();
    fewer.remove(skip);
    let wrong: u64 = start + fewer.iter().sum::<u64>();
    let rejected = with_answer(&solution, wrong);
    let terms_text: String = digits.iter().map(|d| format!("+{d}")).collect();
    Problem {
        prompt: format!("{start}{terms_text}=?\n"),
        solution,
        steps: None,
        answer: answer.to_string(),
        rejected,
    }
}

/// The rewriting trace: each line adds the first two terms of the one above.
fn chain_trace(start: u64, digits: &[u64]) -> (String, u64) {
    let mut lines = Vec::with_capacity(digits.len());
    let mut acc = start;
    for (i, d) in digits.iter().enumerate() {
        acc += d;
        let rest: String = digits[i + 1..].iter().map(|d| format!("+{d}")).collect();
        if rest.is_empty() {
            lines.push(format!("{ANSWER_MARKER} {acc}"));
        } else {
            lines.push(format!("{acc}{rest}"));
        }
    }
    (lines.join("\n"), acc)
}

// ---------------------------------------------------------------------------------------------
// climb

/// One climbing step: add the tens digit, the units digit and one.
fn climb_step(x: u64) -> u64 {
    x + (x / 10) % 10 + x % 10 + 1
}

fn climb_problem(rng: &mut ChaCha8Rng, steps: u32) -> Problem {
    loop {
        let start: u64 = rng.random_range(100..1000);
        let mut xs = vec![start];
        for _ in 0..steps {
            xs.push(climb_step(*xs.last().expect("starts non-empty")));
        }
        let answer = xs[steps as usize];
        if answer > 999 {
            continue;
        }
        // The target lies above every value before the last, so exactly `steps` steps reach it.
        let target = rng.random_range(xs[steps as usize - 1] + 1..=answer);
        let (worked, solution, reached) = climb_traces(start, target);
        debug_assert_eq!(reached, answer);
        // The plausible mistake: the state before the last is one short (a forgotten `+1`),
        // and the climb goes on from the wrong value.
        let mut wrong = xs[steps as usize - 1] - 1;
        while wrong < target {
            wrong = climb_step(wrong);
        }
        if wrong == answer {
            wrong = answer + 1;
        }
        let rejected = with_answer(&solution, wrong);
        return Problem {
            prompt: format!("{start}<{target}\n"),
            solution,
            steps: Some(worked),
            answer: answer.to_string(),
            rejected,
        };
    }
}

/// Whether a `climb` solution of `prompt` (`start<target`) is a climb: every line `x<target`
/// lies 1 to `max_jump` steps above the state before it (the start first) and below the
/// target, and the `####` answer is the first state at or above the target, one step on. [`check`] reads the answer only, so a model
/// that stops early and writes a number near the target can pass it by luck (the answer is
/// within one step, at most 19, above the target); this tells such guesses from climbs.
pub fn climb_trace_valid(prompt: &str, text: &str, max_jump: usize) -> bool {
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    let Some((start, target)) = prompt
        .trim()
        .split_once('<')
        .and_then(|(a, b)| Some((parse(a)?, parse(b)?)))
    else {
        return false;
    };
    let mut x = start;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(answer) = line.strip_prefix(ANSWER_MARKER) {
            let next = climb_step(x);
            return parse(answer) == Some(next) && next >= target;
        }
        let Some((value, t)) = line.split_once('<') else {
            return false;
        };
        let (Some(value), Some(t)) = (parse(value), parse(t)) else {
            return false;
        };
        // Steps only climb, so the search stops once past `value` (a huge `max_jump` is cheap).
        let mut y = x;
        let reached = (0..max_jump.max(1)).any(|_| {
            y = climb_step(y);
            y >= value
        }) && y == value;
        if !reached || t != target || value >= target {
            return false;
        }
        x = value;
    }
    false
}

/// The worked trace (one state a line), the expert's trace (every second state) and the answer.
fn climb_traces(start: u64, target: u64) -> (String, String, u64) {
    let mut states = Vec::new();
    let mut x = climb_step(start);
    while x < target {
        states.push(format!("{x}<{target}"));
        x = climb_step(x);
    }
    let finish = |lines: Vec<&String>| {
        let mut lines: Vec<&str> = lines.into_iter().map(String::as_str).collect();
        let last = format!("{ANSWER_MARKER} {x}");
        lines.push(&last);
        lines.join("\n")
    };
    let worked = finish(states.iter().collect());
    let expert = finish(states.iter().skip(1).step_by(2).collect());
    (worked, expert, x)
}

// ---------------------------------------------------------------------------------------------
// countdown

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    const ALL: [Op; 3] = [Op::Add, Op::Sub, Op::Mul];

    fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }

    /// None when the result would be negative (not allowed) or overflow.
    fn apply(self, x: i64, y: i64) -> Option<i64> {
        let r = match self {
            Op::Add => x.checked_add(y)?,
            Op::Sub => x.checked_sub(y)?,
            Op::Mul => x.checked_mul(y)?,
        };
        (r >= 0).then_some(r)
    }
}

fn eval_ops(numbers: &[i64], ops: &[Op]) -> Option<i64> {
    let mut acc = *numbers.first()?;
    for (op, n) in ops.iter().zip(&numbers[1..]) {
        acc = op.apply(acc, *n)?;
    }
    Some(acc)
}

fn all_op_sequences(len: usize) -> Vec<Vec<Op>> {
    let mut seqs = vec![Vec::new()];
    for _ in 0..len {
        seqs = seqs
            .into_iter()
            .flat_map(|s| {
                Op::ALL.iter().map(move |op| {
                    let mut t = s.clone();
                    t.push(*op);
                    t
                })
            })
            .collect();
    }
    seqs
}

fn countdown_expression(numbers: &[i64], ops: &[Op]) -> String {
    let mut expr = numbers.first().map(|n| n.to_string()).unwrap_or_default();
    for (i, (op, n)) in ops.iter().zip(&numbers[1..]).enumerate() {
        // The last operation needs no parentheses around the whole.
        expr = if i == 0 {
            format!("{expr}{}{n}", op.symbol())
        } else {
            format!("({expr}){}{n}", op.symbol())
        };
    }
    expr
}

fn countdown_trace(numbers: &[i64], ops: &[Op]) -> Option<String> {
    let mut lines = Vec::new();
    let mut acc = *numbers.first()?;
    for (op, n) in ops.iter().zip(&numbers[1..]) {
        let next = op.apply(acc, *n)?;
        lines.push(format!("{acc}{}{n}={next}", op.symbol()));
        acc = next;
    }
    lines.push(format!(
        "{ANSWER_MARKER} {}",
        countdown_expression(numbers, ops)
    ));
    Some(lines.join("\n"))
}

fn countdown_problem(rng: &mut ChaCha8Rng, count: u32) -> Option<Problem> {
    let numbers: Vec<i64> = (0..count).map(|_| rng.random_range(1..10)).collect();
    let ops: Vec<Op> = (1..count)
        .map(|_| Op::ALL[rng.random_range(0..Op::ALL.len())])
        .collect();
    let target = eval_ops(&numbers, &ops)?;
    let candidates = all_op_sequences(ops.len());
    let hits = candidates
        .iter()
        .filter(|s| eval_ops(&numbers, s) == Some(target))
        .count();
    if hits != 1 {
        return None;
    }
    // The rejected solution: a valid-looking computation that misses the target, the one whose
    // result is closest to it (the most plausible near miss).
    let wrong = candidates
        .iter()
        .filter_map(|s| eval_ops(&numbers, s).map(|v| (s, v)))
        .filter(|(_, v)| *v != target)
        .min_by_key(|(_, v)| (v - target).abs())?;
    let nums_text: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
    Some(Problem {
        prompt: format!("{} -> {target}\n", nums_text.join(" ")),
        solution: countdown_trace(&numbers, &ops)?,
        steps: None,
        answer: countdown_expression(&numbers, &ops),
        rejected: countdown_trace(&numbers, wrong.0)?,
    })
}

fn parse_countdown_prompt(prompt: &str) -> Option<(Vec<i64>, i64)> {
    let (nums, target) = prompt.trim().split_once("->")?;
    let numbers = nums
        .split_whitespace()
        .map(|n| n.parse().ok())
        .collect::<Option<Vec<i64>>>()?;
    Some((numbers, target.trim().parse().ok()?))
}

/// Evaluate a left-to-right, parenthesised countdown answer such as `((3+5)*2)-1`; it must use
/// exactly `numbers` in order. None when malformed.
fn eval_countdown_answer(answer: &str, numbers: &[i64]) -> Option<i64> {
    let cleaned: String = answer.chars().filter(|c| !matches!(c, '(' | ')')).collect();
    let mut nums = Vec::new();
    let mut ops = Vec::new();
    let mut current = String::new();
    for c in cleaned.chars() {
        match c {
            '0'..='9' => current.push(c),
            '+' | '-' | '*' => {
                nums.push(current.parse::<i64>().ok()?);
                current.clear();
                ops.push(match c {
                    '+' => Op::Add,
                    '-' => Op::Sub,
                    _ => Op::Mul,
                });
            }
            ' ' => {}
            _ => return None,
        }
    }
    nums.push(current.parse::<i64>().ok()?);
    if nums != numbers {
        return None;
    }
    // Parentheses must express left-to-right order: the canonical rendering must match.
    if countdown_expression(&nums, &ops) != answer.replace(' ', "") {
        return None;
    }
    eval_ops(&nums, &ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHARSET: &str = "0123456789abcdefghijklmnopqrstuvwxyz +-*/=()<>.,:;?#_[]\n";

    fn only_charset(r: &Record) -> bool {
        r.fields()
            .values()
            .all(|v| v.chars().all(|c| CHARSET.contains(c)))
    }

    #[test]
    fn arith_trace_carries() {
        let (trace, answer) = arith_trace(57, 68, true);
        assert_eq!(answer, 125);
        assert_eq!(trace, "7+8+0=15;5\n5+6+1=12;25\n#### 125");
        let (_, wrong) = arith_trace(57, 68, false);
        assert_eq!(wrong, 15);
    }

    #[test]
    fn chain_trace_rewrites() {
        let (trace, answer) = chain_trace(517, &[3, 9, 2]);
        assert_eq!(answer, 531);
        assert_eq!(trace, "520+9+2\n529+2\n#### 531");
        assert_eq!(chain_trace(898, &[1]).0, "#### 899");
    }

    #[test]
    fn climb_states_one_step_a_line_and_the_expert_two() {
        for steps in [1u32, 2, 5, 16] {
            for r in generate("climb", TaskSplit::Train, 50, steps, 3).unwrap() {
                let prompt = r.get("prompt").unwrap();
                let (start, target) = prompt.trim().split_once('<').unwrap();
                let (mut x, target): (u64, u64) = (start.parse().unwrap(), target.parse().unwrap());
                let worked: Vec<&str> = r.get("steps").unwrap().lines().collect();
                assert_eq!(worked.len(), steps as usize, "{r:?}");
                for line in &worked[..worked.len() - 1] {
                    x = climb_step(x);
                    assert!(x < target, "{r:?}");
                    assert_eq!(*line, format!("{x}<{target}"));
                }
                x = climb_step(x);
                assert!(x >= target && x <= 999, "{r:?}");
                assert_eq!(r.get("answer").unwrap(), x.to_string());
                // The expert keeps every second state and the same answer line.
                let expert: Vec<&str> = r.get("solution").unwrap().lines().collect();
                let every_other: Vec<&str> = worked
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .copied()
                    .filter(|l| !l.starts_with('#'))
                    .collect();
                assert_eq!(&expert[..expert.len() - 1], every_other.as_slice(), "{r:?}");
                assert_eq!(expert.last(), worked.last());
            }
        }
        assert_eq!(climb_step(517), 517 + 1 + 7 + 1);
        let (worked, expert, answer) = climb_traces(517, 560);
        assert_eq!(worked, "526<560\n535<560\n544<560\n553<560\n#### 562");
        assert_eq!(expert, "535<560\n553<560\n#### 562");
        assert_eq!(answer, 562);
        assert_eq!(climb_traces(517, 526).1, "#### 526");
        let r = "517<560\n";
        assert!(climb_trace_valid(r, &worked, 1));
        assert!(!climb_trace_valid(r, &expert, 1), "two steps a line");
        assert!(climb_trace_valid(r, &expert, 2));
        // A guess: the right answer after stopping early.
        assert!(!climb_trace_valid(r, "526<560\n535<560\n#### 562", 2));
        assert!(!climb_trace_valid(
            r,
            "526<560\n535<560\n544<560\n553<560",
            1
        ));
        assert!(!climb_trace_valid(
            r,
            "526<560\n535<561\n544<560\n553<560\n#### 562",
            1
        ));
    }

    #[test]
    fn carry_trace_passes_state() {
        let (trace, answer) = carry_trace(4821, 3757, true);
        assert_eq!(answer, 8578);
        assert_eq!(
            trace,
            "482+375,0:8\n48+37,0:78\n4+3,1:578\n+,0:8578\n#### 8578"
        );
        let (trace, answer) = carry_trace(95, 17, true);
        assert_eq!(answer, 112);
        assert_eq!(trace, "9+1,1:2\n+,1:12\n#### 112");
        let (_, wrong) = carry_trace(95, 17, false);
        assert_eq!(wrong, 2);
    }

    #[test]
    fn deterministic_disjoint_and_checkable() {
        for (task, d) in [
            ("arith", 1),
            ("arith", 3),
            ("carry", 1),
            ("carry", 4),
            ("chain", 1),
            ("chain", 6),
            ("climb", 1),
            ("climb", 16),
            ("countdown", 2),
            ("countdown", 4),
        ] {
            let a = generate(task, TaskSplit::Train, 200, d, 7).unwrap();
            let b = generate(task, TaskSplit::Train, 200, d, 7).unwrap();
            assert_eq!(a, b);
            let c = generate(task, TaskSplit::Train, 200, d, 8).unwrap();
            assert_ne!(a, c);
            let test = generate(task, TaskSplit::Test, 100, d, 7).unwrap();
            let train_prompts: BTreeSet<_> = a.iter().map(|r| r.get("prompt")).collect();
            assert!(
                test.iter()
                    .all(|r| !train_prompts.contains(&r.get("prompt")))
            );
            let kind = TaskKind::parse(task).unwrap();
            for r in a.iter().chain(&test) {
                assert!(only_charset(r), "{r:?}");
                let sol = r.get("solution").unwrap();
                let rej = r.get("rejected").unwrap();
                assert!(check(kind, r, sol), "{r:?}");
                assert!(check(kind, r, r.get("steps").unwrap()), "{r:?}");
                assert!(!check(kind, r, rej), "{r:?}");
                assert_eq!(final_answer(sol), r.get("answer"));
            }
        }
    }

    #[test]
    fn countdown_answers_are_verified_not_matched() {
        let mut r = Record::default();
        r.insert("prompt", "3 5 2 -> 16\n".to_string());
        r.insert("answer", "(3+5)*2".to_string());
        assert!(check(
            TaskKind::Countdown,
            &r,
            "3+5=8\n8*2=16\n#### (3+5)*2"
        ));
        assert!(!check(TaskKind::Countdown, &r, "#### (3+5)+2"));
        assert!(!check(TaskKind::Countdown, &r, "#### 16"));
        assert!(!check(TaskKind::Countdown, &r, "#### (5+3)*2"));
        assert!(!check(TaskKind::Countdown, &r, "no marker"));
    }

    #[test]
    fn bad_difficulty_is_refused() {
        assert!(matches!(
            generate("countdown", TaskSplit::Train, 1, 1, 0),
            Err(TaskError::Difficulty { .. })
        ));
        assert!(matches!(
            generate("sudoku", TaskSplit::Train, 1, 1, 0),
            Err(TaskError::Unknown(_))
        ));
        assert!(
            generate("countdown", TaskSplit::Train, 5, 8, 0)
                .unwrap()
                .len()
                == 5
        );
    }

    /// Every generator has a row in the table the checker reads, and every row a generator.
    #[test]
    fn every_task_kind_is_in_the_shared_table() {
        for spec in post_graph::tasks::TASKS {
            let kind = TaskKind::parse(spec.name).expect("a generator for every table row");
            assert_eq!(
                kind.difficulty_range(),
                (spec.min_difficulty, spec.max_difficulty)
            );
            assert!(generate(spec.name, TaskSplit::Train, 2, spec.max_difficulty, 1).is_ok());
            assert!(matches!(
                generate(spec.name, TaskSplit::Train, 2, spec.max_difficulty + 1, 1),
                Err(TaskError::Difficulty { .. })
            ));
        }
    }
}
