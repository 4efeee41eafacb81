//! Rewards: evaluates reward and predicate expressions ([`post_graph::RExpr`]) on one sample.
//!
//! A sample is a generated completion plus the text fields of the record it was generated for.
//! Evaluation is pure and total: bad input (an invalid regex the compiler should have caught, a
//! missing field, text where a number is expected) gives NaN or false, never a panic. Booleans
//! count as 0/1 in the final reward; comparisons with NaN are false (and `!=` true).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use post_graph::{RBinary, RExpr, RFunc, RUnary};
use regex::Regex;

use crate::record::Record;

/// One generated sample as a reward sees it.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The generated text (without the prompt, without the end-of-sequence token).
    pub completion: &'a str,
    /// The record's text fields (`prompt`, `answer`, `solution`, ...).
    pub fields: &'a BTreeMap<String, String>,
    /// Length of the completion in tokens.
    pub completion_tokens: usize,
}

/// Why a reward could not be evaluated (reported by [`try_eval_reward`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RewardError {
    #[error("invalid regular expression `{pattern}`: {message}")]
    Regex { pattern: String, message: String },
    #[error("the record has no field `{0}`")]
    MissingField(String),
    #[error("{func} expects {expected} argument(s), got {found}")]
    Arity {
        func: String,
        expected: String,
        found: usize,
    },
}

/// The reward of `sample`: numbers as they are, booleans as 0/1, text parsed as a number.
/// Any evaluation error gives NaN (use [`try_eval_reward`] to see the error).
pub fn eval_reward(expr: &RExpr, sample: &Sample) -> f64 {
    try_eval_reward(expr, sample).unwrap_or(f64::NAN)
}

/// The reward of a completion written for `record`: the one scoring call of rollouts and evals.
pub fn score(expr: &RExpr, completion: &str, completion_tokens: usize, record: &Record) -> f64 {
    eval_reward(
        expr,
        &Sample {
            completion,
            fields: record.fields(),
            completion_tokens,
        },
    )
}

/// A reward as it counts in averages and advantages: NaN (an unparsable completion in the
/// reward language) and infinities count as 0, a failure rather than a poisoned mean.
pub fn counted(reward: f64) -> f64 {
    if reward.is_finite() { reward } else { 0.0 }
}

/// Like [`eval_reward`], reporting why evaluation failed.
pub fn try_eval_reward(expr: &RExpr, sample: &Sample) -> Result<f64, RewardError> {
    Ok(eval(expr, sample)?.as_num())
}

/// Whether the predicate `expr` holds for `sample` (errors count as false).
pub fn eval_predicate(expr: &RExpr, sample: &Sample) -> bool {
    eval(expr, sample).map(|v| v.truthy()).unwrap_or(false)
}

/// Check every regex in `expr` compiles (the compiler checks this too; the runtime re-checks so
/// a hand-written graph fails before the run starts rather than scoring NaN).
pub fn validate(expr: &RExpr) -> Result<(), RewardError> {
    let mut result = Ok(());
    visit(expr, &mut |e| {
        if let RExpr::Call {
            func: RFunc::Extract { pattern } | RFunc::Matches { pattern },
            ..
        } = e
            && result.is_ok()
            && let Err(err) = regex(pattern)
        {
            result = Err(err);
        }
    });
    result
}

fn visit(e: &RExpr, f: &mut dyn FnMut(&RExpr)) {
    f(e);
    match e {
        RExpr::Call { args, .. } => args.iter().for_each(|a| visit(a, f)),
        RExpr::Unary { arg, .. } => visit(arg, f),
        RExpr::Binary { lhs, rhs, .. } => {
            visit(lhs, f);
            visit(rhs, f);
        }
        RExpr::If {
            cond,
            then,
            otherwise,
        } => {
            visit(cond, f);
            visit(then, f);
            visit(otherwise, f);
        }
        _ => {}
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl Value {
    fn as_num(&self) -> f64 {
        match self {
            Value::Num(x) => *x,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Str(s) => s.trim().parse::<f64>().unwrap_or(f64::NAN),
        }
    }

    fn as_str(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Num(x) => format_num(*x),
            Value::Bool(b) => b.to_string(),
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Num(x) => *x != 0.0 && !x.is_nan(),
            Value::Str(s) => !s.is_empty(),
        }
    }
}

/// Integers print without a fractional part so `str(42.0)` compares equal to "42".
fn format_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn regex(pattern: &str) -> Result<Regex, RewardError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = map.get(pattern) {
        return Ok(r.clone());
    }
    // The compiler's check uses the same helper, so a checked pattern always compiles here.
    let r = post_graph::pattern::compile_regex(pattern).map_err(|message| RewardError::Regex {
        pattern: pattern.to_string(),
        message,
    })?;
    map.insert(pattern.to_string(), r.clone());
    Ok(r)
}

/// The last number in `text`: digits with an optional fraction, negative when a `-` directly
/// precedes it and is not itself preceded by a digit or letter (so "3-5" ends in 5, "x = -5" in
/// -5). NaN when there is none.
pub fn last_number(text: &str) -> f64 {
    let bytes = text.as_bytes();
    let mut end = bytes.len();
    // Scan backwards for the last digit.
    while end > 0 && !bytes[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end == 0 {
        return f64::NAN;
    }
    let mut start = end;
    while start > 0 && bytes[start - 1].is_ascii_digit() {
        start -= 1;
    }
    // A fractional part: digits '.' digits, where we landed on the fraction.
    if start >= 2 && bytes[start - 1] == b'.' && bytes[start - 2].is_ascii_digit() {
        start -= 1;
        while start > 0 && bytes[start - 1].is_ascii_digit() {
            start -= 1;
        }
    }
    if start >= 1 && bytes[start - 1] == b'-' {
        let before = if start >= 2 { bytes[start - 2] } else { b' ' };
        if !before.is_ascii_alphanumeric() && before != b')' {
            start -= 1;
        }
    }
    // Only ASCII bytes were stepped over, so these are char boundaries.
    text.get(start..end)
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// The final answer: the text after the last `marker`, trimmed; "" when the marker is absent.
pub fn answer_after(text: &str, marker: &str) -> String {
    if marker.is_empty() {
        return text.trim().to_string();
    }
    match text.rfind(marker) {
        Some(i) => text[i + marker.len()..].trim().to_string(),
        None => String::new(),
    }
}

fn eval(e: &RExpr, s: &Sample) -> Result<Value, RewardError> {
    Ok(match e {
        RExpr::Num { value } => Value::Num(*value),
        RExpr::Str { value } => Value::Str(value.clone()),
        RExpr::Bool { value } => Value::Bool(*value),
        RExpr::Completion => Value::Str(s.completion.to_string()),
        RExpr::Field { name } => match s.fields.get(name) {
            Some(v) => Value::Str(v.clone()),
            None => return Err(RewardError::MissingField(name.clone())),
        },
        RExpr::CompletionTokens => Value::Num(s.completion_tokens as f64),
        RExpr::Call { func, args } => {
            let vals = args
                .iter()
                .map(|a| eval(a, s))
                .collect::<Result<Vec<_>, _>>()?;
            call(func, &vals)?
        }
        RExpr::Unary { op, arg } => {
            let v = eval(arg, s)?;
            match op {
                RUnary::Neg => Value::Num(-v.as_num()),
                RUnary::Not => Value::Bool(!v.truthy()),
            }
        }
        RExpr::Binary { op, lhs, rhs } => {
            let l = eval(lhs, s)?;
            // And/Or short-circuit: the right side may be undefined when the left decides.
            match op {
                RBinary::And if !l.truthy() => return Ok(Value::Bool(false)),
                RBinary::Or if l.truthy() => return Ok(Value::Bool(true)),
                _ => {}
            }
            let r = eval(rhs, s)?;
            binary(*op, &l, &r)
        }
        RExpr::If {
            cond,
            then,
            otherwise,
        } => {
            if eval(cond, s)?.truthy() {
                eval(then, s)?
            } else {
                eval(otherwise, s)?
            }
        }
    })
}

fn arity(func: &str, expected: &str, ok: bool, found: usize) -> Result<(), RewardError> {
    if ok {
        Ok(())
    } else {
        Err(RewardError::Arity {
            func: func.to_string(),
            expected: expected.to_string(),
            found,
        })
    }
}

fn call(func: &RFunc, args: &[Value]) -> Result<Value, RewardError> {
    let n = args.len();
    let one = |name: &str| -> Result<&Value, RewardError> {
        arity(name, "1", n == 1, n)?;
        Ok(&args[0])
    };
    let two = |name: &str| -> Result<(&Value, &Value), RewardError> {
        arity(name, "2", n == 2, n)?;
        Ok((&args[0], &args[1]))
    };
    Ok(match func {
        RFunc::Number => match one("number")? {
            Value::Num(x) => Value::Num(*x),
            v => Value::Num(last_number(&v.as_str())),
        },
        RFunc::Extract { pattern } => {
            let text = one("extract")?.as_str();
            let re = regex(pattern)?;
            let found = re.captures(&text).and_then(|c| {
                // The first participating capture group, else the whole match.
                c.iter()
                    .skip(1)
                    .flatten()
                    .next()
                    .or_else(|| c.get(0))
                    .map(|m| m.as_str().to_string())
            });
            Value::Str(found.unwrap_or_default())
        }
        RFunc::Matches { pattern } => {
            let text = one("matches")?.as_str();
            Value::Bool(regex(pattern)?.is_match(&text))
        }
        RFunc::Answer { marker } => Value::Str(answer_after(&one("answer")?.as_str(), marker)),
        RFunc::Len => Value::Num(one("len")?.as_str().chars().count() as f64),
        RFunc::ClimbValid => {
            arity("climb_valid", "3", n == 3, n)?;
            let jump = args[2].as_num();
            let jump = if jump.is_finite() && jump >= 1.0 {
                jump as usize
            } else {
                1
            };
            Value::Bool(crate::tasks::climb_trace_valid(
                &args[0].as_str(),
                &args[1].as_str(),
                jump,
            ))
        }
        RFunc::Contains => {
            let (a, b) = two("contains")?;
            Value::Bool(a.as_str().contains(&b.as_str()))
        }
        RFunc::StartsWith => {
            let (a, b) = two("starts_with")?;
            Value::Bool(a.as_str().starts_with(&b.as_str()))
        }
        RFunc::EndsWith => {
            let (a, b) = two("ends_with")?;
            Value::Bool(a.as_str().ends_with(&b.as_str()))
        }
        RFunc::Trim => Value::Str(one("trim")?.as_str().trim().to_string()),
        RFunc::Lower => Value::Str(one("lower")?.as_str().to_lowercase()),
        RFunc::Abs => Value::Num(one("abs")?.as_num().abs()),
        RFunc::Min | RFunc::Max => {
            let name = if matches!(func, RFunc::Min) {
                "min"
            } else {
                "max"
            };
            arity(name, "at least 1", n >= 1, n)?;
            let nums = args.iter().map(Value::as_num);
            // NaN propagates: a missing number must not be silently ignored.
            let folded = nums.fold(None::<f64>, |acc, x| {
                Some(match acc {
                    None => x,
                    Some(a) if a.is_nan() || x.is_nan() => f64::NAN,
                    Some(a) if matches!(func, RFunc::Min) => a.min(x),
                    Some(a) => a.max(x),
                })
            });
            Value::Num(folded.unwrap_or(f64::NAN))
        }
    })
}

/// Equality: two texts compare as text; otherwise numerically (a text that is not a number is
/// unequal to every number). NaN equals nothing.
fn equal(l: &Value, r: &Value) -> bool {
    match (l, r) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => {
            let (a, b) = (l.as_num(), r.as_num());
            a == b
        }
    }
}

fn binary(op: RBinary, l: &Value, r: &Value) -> Value {
    let (a, b) = (|| l.as_num(), || r.as_num());
    match op {
        RBinary::Add => match (l, r) {
            (Value::Str(x), Value::Str(y)) => Value::Str(format!("{x}{y}")),
            _ => Value::Num(a() + b()),
        },
        RBinary::Sub => Value::Num(a() - b()),
        RBinary::Mul => Value::Num(a() * b()),
        RBinary::Div => Value::Num(a() / b()),
        RBinary::Eq => Value::Bool(equal(l, r)),
        RBinary::Ne => Value::Bool(!equal(l, r)),
        // Partial comparisons are false whenever either side is NaN.
        RBinary::Lt => Value::Bool(a() < b()),
        RBinary::Le => Value::Bool(a() <= b()),
        RBinary::Gt => Value::Bool(a() > b()),
        RBinary::Ge => Value::Bool(a() >= b()),
        RBinary::And => Value::Bool(l.truthy() && r.truthy()),
        RBinary::Or => Value::Bool(l.truthy() || r.truthy()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, fields: &'a BTreeMap<String, String>) -> Sample<'a> {
        Sample {
            completion: text,
            fields,
            completion_tokens: text.chars().count(),
        }
    }

    fn call1(func: RFunc, arg: RExpr) -> RExpr {
        RExpr::Call {
            func,
            args: vec![arg],
        }
    }

    #[test]
    fn last_number_reads_signs_and_fractions() {
        assert_eq!(last_number("12+30=42"), 42.0);
        assert_eq!(last_number("3-5"), 5.0);
        assert_eq!(last_number("x = -5"), -5.0);
        assert_eq!(last_number("-7"), -7.0);
        assert_eq!(last_number("pi is 3.25."), 3.25);
        assert!(last_number("no digits").is_nan());
        assert!(last_number("").is_nan());
    }

    #[test]
    fn exact_match_on_answer_marker() {
        let mut fields = BTreeMap::new();
        fields.insert("answer".to_string(), "42".to_string());
        let expr = RExpr::Binary {
            op: RBinary::Eq,
            lhs: Box::new(call1(
                RFunc::Answer {
                    marker: "####".into(),
                },
                RExpr::Completion,
            )),
            rhs: Box::new(RExpr::Field {
                name: "answer".into(),
            }),
        };
        assert_eq!(eval_reward(&expr, &sample("1+41\n#### 42\n", &fields)), 1.0);
        assert_eq!(eval_reward(&expr, &sample("#### 4\n#### 43", &fields)), 0.0);
        assert_eq!(eval_reward(&expr, &sample("42", &fields)), 0.0);
    }

    #[test]
    fn climb_valid_rejects_a_right_answer_reached_by_a_guess() {
        let mut fields = BTreeMap::new();
        fields.insert("prompt".to_string(), "517<560\n".to_string());
        let expr = |jump: f64| RExpr::Call {
            func: RFunc::ClimbValid,
            args: vec![
                RExpr::Field {
                    name: "prompt".into(),
                },
                RExpr::Completion,
                RExpr::Num { value: jump },
            ],
        };
        let climbed = "526<560\n535<560\n544<560\n553<560\n#### 562";
        assert_eq!(eval_reward(&expr(1.0), &sample(climbed, &fields)), 1.0);
        // Two steps a line needs max_jump 2.
        let sparse = "535<560\n553<560\n#### 562";
        assert_eq!(eval_reward(&expr(1.0), &sample(sparse, &fields)), 0.0);
        assert_eq!(eval_reward(&expr(2.0), &sample(sparse, &fields)), 1.0);
        // The right answer after stopping two steps early.
        let guess = "526<560\n535<560\n#### 562";
        assert_eq!(eval_reward(&expr(2.0), &sample(guess, &fields)), 0.0);
        assert_eq!(eval_reward(&expr(2.0), &sample("#### 562", &fields)), 0.0);
    }

    #[test]
    fn regex_extract_and_invalid_patterns() {
        let fields = BTreeMap::new();
        let ex = call1(
            RFunc::Extract {
                pattern: r"answer: (\d+)".into(),
            },
            RExpr::Completion,
        );
        let num = call1(RFunc::Number, ex);
        assert_eq!(eval_reward(&num, &sample("so answer: 17.", &fields)), 17.0);
        assert!(eval_reward(&num, &sample("nothing", &fields)).is_nan());
        let bad = call1(
            RFunc::Matches {
                pattern: "(".into(),
            },
            RExpr::Completion,
        );
        assert!(eval_reward(&bad, &sample("x", &fields)).is_nan());
        assert!(matches!(validate(&bad), Err(RewardError::Regex { .. })));
        assert!(!eval_predicate(&bad, &sample("x", &fields)));
    }

    #[test]
    fn nan_safe_comparisons_and_weighted_sums() {
        let fields = BTreeMap::new();
        let nan = call1(RFunc::Number, RExpr::Completion);
        let cmp = |op| RExpr::Binary {
            op,
            lhs: Box::new(nan.clone()),
            rhs: Box::new(RExpr::Num { value: 1.0 }),
        };
        let s = sample("none", &fields);
        assert_eq!(eval_reward(&cmp(RBinary::Gt), &s), 0.0);
        assert_eq!(eval_reward(&cmp(RBinary::Le), &s), 0.0);
        assert_eq!(eval_reward(&cmp(RBinary::Eq), &s), 0.0);
        assert_eq!(eval_reward(&cmp(RBinary::Ne), &s), 1.0);
        // 0.5 * matches + 0.1 * len
        let w = RExpr::Binary {
            op: RBinary::Add,
            lhs: Box::new(RExpr::Binary {
                op: RBinary::Mul,
                lhs: Box::new(RExpr::Num { value: 0.5 }),
                rhs: Box::new(call1(
                    RFunc::Matches {
                        pattern: "^#".into(),
                    },
                    RExpr::Completion,
                )),
            }),
            rhs: Box::new(RExpr::Binary {
                op: RBinary::Mul,
                lhs: Box::new(RExpr::Num { value: 0.1 }),
                rhs: Box::new(call1(RFunc::Len, RExpr::Completion)),
            }),
        };
        assert!((eval_reward(&w, &sample("#ab", &fields)) - 0.8).abs() < 1e-12);
        let missing = RExpr::Field {
            name: "nope".into(),
        };
        assert!(eval_reward(&missing, &s).is_nan());
    }
}
