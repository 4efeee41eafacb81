//! The one table of built-in signatures: every built-in's name, scope, parameters (types, units,
//! ranges, defaults) and documentation. The checker binds calls against it (`builtins::call`,
//! `builtins::transform`; formulas and rewards check their arity against it) and the language
//! server renders hover, completion and signature help from it, types and defaults rendered
//! from [`T`] and [`D`]. A new built-in is one entry here, its behaviour in the checker and the
//! runtime, and its line in spec/language.md.

use super::params::{D, P, R, T, p};

/// Where a built-in can be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Definitions, settings and eval metrics of an experiment.
    Experiment,
    /// Objective formulas.
    Formula,
    /// Reward expressions.
    Reward,
    /// Methods on datasets: `train.shuffle()`.
    Transform,
}

impl Scope {
    pub fn describe(self) -> &'static str {
        match self {
            Scope::Experiment => "built-in",
            Scope::Formula => "formula built-in",
            Scope::Reward => "reward built-in",
            Scope::Transform => "dataset transform",
        }
    }
}

/// A built-in: its signature and documentation.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub scope: Scope,
    pub params: &'static [P],
    /// What the call yields, in words (`model`, `same axis`).
    pub returns: &'static str,
    pub doc: &'static str,
}

impl Builtin {
    /// `sample(model: model, n: count = 1, ...) -> rollout`
    pub fn signature(&self) -> String {
        let ps: Vec<String> = self.params.iter().map(P::render).collect();
        format!("{}({}) -> {}", self.name, ps.join(", "), self.returns)
    }
}

const fn b(
    name: &'static str,
    scope: Scope,
    params: &'static [P],
    returns: &'static str,
    doc: &'static str,
) -> Builtin {
    Builtin {
        name,
        scope,
        params,
        returns,
        doc,
    }
}

use Scope::{Experiment as X, Formula as F, Reward as RW, Transform as TR};

/// Every built-in with its signature and documentation.
pub const BUILTINS: &[Builtin] = &[
    b(
        "preset",
        X,
        &[p("name", T::Str, D::Req).doc("`tiny` or `20m`"), p("init", T::Str, D::Opt).doc("a checkpoint directory to start from"), p("sliding_window", T::Tokens, D::Opt).doc("sliding-window attention (as Mistral's): each token attends to itself and the window - 1 tokens before it, in every layer")],
        "model",
        "A built-in model architecture, randomly initialised from the experiment seed. `tiny`: vocab 64 (char tokenizer), hidden 128, 4 layers, context 512. `20m`: vocab 8192, hidden 384, 8 layers, context 1024.",
    ),
    b(
        "hf",
        X,
        &[p("path", T::Str, D::Req).doc("a directory with config.json, model.safetensors and tokenizer.json")],
        "model",
        "A Hugging Face model loaded from a local directory.",
    ),
    b(
        "frozen",
        X,
        &[p("model", T::Model, D::Req).doc("the model to copy")],
        "model",
        "A frozen copy of another model, taken before training starts (the usual reference model).",
    ),
    b(
        "snapshot",
        X,
        &[p("model", T::Model, D::Req).doc("the model to copy")],
        "model",
        "A copy of another model taken when the stage that uses it starts.",
    ),
    b(
        "lagged",
        X,
        &[p("model", T::Model, D::Req).doc("the model to follow"), p("every", T::Steps, D::Req).doc("refresh interval")],
        "model",
        "A copy of another model refreshed every N steps (a lagged reference).",
    ),
    b(
        "trained",
        X,
        &[p("file", T::Str, D::Req).doc("another experiment's `.post` file, relative to this one"), p("model", T::Str, D::Req).doc("the name of a model in that experiment")],
        "model",
        "A model as another experiment trains it: the same architecture, starting from the weights that experiment exports. `post run` runs the other experiment first when its output is missing or stale (cached under `<runs>/prereq/<experiment>-<graph hash>`); `post check` checks it too.",
    ),
    b(
        "task",
        X,
        &[p("name", T::Str, D::Req).doc("`arith`, `carry`, `chain`, `climb` or `countdown`"), p("split", T::Sym(&["train", "test"]), D::Sym("train")).doc("which split to generate"), p("size", T::Count, D::Num(1000.0)).doc("number of records"), p("difficulty", T::Count, D::Num(1.0)).doc("arith, carry: digits (1..=18); chain: digits added (1..=11); climb: steps (1..=20); countdown: numbers (2..=8)"), p("min_difficulty", T::Count, D::Opt).doc("with a value, each problem's difficulty is drawn from min_difficulty..=difficulty")],
        "data",
        "A built-in synthetic task. Records have the fields `prompt`, `solution` (the expert's step-by-step trace ending in `#### <answer>`), `steps` (the same trace one step a line: denser than `solution` only for `climb`), `answer` and `rejected`.",
    ),
    b(
        "jsonl",
        X,
        &[p("path", T::Str, D::Req).doc("the file, relative to the .post file")],
        "data",
        "Records read from a JSON Lines file. Named arguments map record fields to JSON keys: `jsonl(\"gsm8k.jsonl\", prompt = \"question\", solution = \"answer\")`; without them every key of the first records is a field.",
    ),
    b(
        "selected",
        X,
        &[p("stage", T::FieldName, D::Req).doc("the name of a `select` stage")],
        "data",
        "The examples chosen by a `select` (S2L) stage that runs earlier.",
    ),
    b(
        "sample",
        X,
        &[p("model", T::Model, D::Req).doc("the policy to sample from"), p("n", T::Count, D::Num(1.0)).doc("completions per prompt (the group size)"), p("temperature", T::Num(R::NonNeg), D::Num(1.0)).doc("softmax temperature; 0 is greedy"), p("top_k", T::Int, D::Num(0.0)).doc("keep the k most likely tokens; 0 keeps all"), p("top_p", T::Num(R::Frac), D::Num(1.0)).doc("nucleus sampling mass"), p("max_tokens", T::Tokens, D::Tokens(128)).doc("completion length limit"), p("stop", T::StrList, D::Empty).doc("stop strings")],
        "rollout",
        "Sample completions from a model.",
    ),
    b(
        "greedy",
        X,
        &[p("model", T::Model, D::Req).doc("the model to decode"), p("n", T::Count, D::Num(1.0)).doc("completions per prompt"), p("max_tokens", T::Tokens, D::Tokens(128)).doc("completion length limit"), p("stop", T::StrList, D::Empty).doc("stop strings")],
        "rollout",
        "Greedy (argmax) decoding.",
    ),
    b(
        "branched",
        X,
        &[p("base", T::Sampling, D::Req).doc("a `sample(...)` rollout"), p("reward", T::Reward, D::Req).doc("decides success"), p("success_threshold", T::Num(R::Any), D::Num(0.5)).doc("a completion succeeds when its reward is above this"), p("expert", T::FieldName, D::Sym("solution")).doc("the record field holding the expert trace"), p("step_delimiter", T::Str, D::Str("\n")).doc("splits the expert trace into steps"), p("search", T::Sym(&["binary", "linear"]), D::Sym("binary")).doc("how the shortest successful prefix is searched"), p("remember", T::Bool, D::Bool(true)).doc("keep each example's prefix length between steps"), p("anchor", T::Sym(&["none", "original", "boundary"]), D::Sym("none")).doc("what fills a branched group whose every continuation succeeded: nothing (no update), the original failed rollouts, or the failures of the longest failing prefix")],
        "rollout",
        "BREAD: when a whole group fails, restart it from the shortest prefix of the expert trace that lets the policy succeed (per-example adaptive state).",
    ),
    b(
        "guided",
        X,
        &[p("base", T::Sampling, D::Req).doc("a `sample(...)` rollout"), p("baseline", T::Model, D::Req).doc("the model whose value estimates guide decoding"), p("reward", T::Reward, D::Req).doc("the reward the guide estimates"), p("k", T::Count, D::Num(10.0)).doc("candidate tokens scored per step"), p("alpha", T::Num(R::Any), D::Num(1.0)).doc("weight of the value estimate"), p("lookahead", T::Tokens, D::Tokens(16)).doc("rollout length used for each estimate")],
        "rollout",
        "Transfer-Q style guided decoding: re-rank the top-k next tokens by an estimated value.",
    ),
    b(
        "verifier_stopped",
        X,
        &[p("base", T::Sampling, D::Req).doc("a `sample(...)` rollout"), p("verifier", T::Model, D::Req).doc("scores each step"), p("verifier_ref", T::Model, D::Req).doc("the verifier's reference"), p("step_delimiter", T::Str, D::Str("\n")).doc("separates steps"), p("tau", T::Num(R::Pos), D::Num(0.01)).doc("stop when the verifier's log-ratio falls below this"), p("max_steps", T::Count, D::Num(8.0)).doc("step limit")],
        "rollout",
        "Multi-step decoding that stops when a verifier judges the steps no longer improve.",
    ),
    b(
        "replay",
        X,
        &[p("rollout", T::Rollout, D::Req).doc("the rollout whose samples are stored"), p("capacity", T::Count, D::Num(1024.0)).doc("buffer size")],
        "replay buffer",
        "A replay buffer of past samples of a rollout (off-policy objectives read `old_logp`).",
    ),
    b(
        "adamw",
        X,
        &[p("lr", T::Sched(R::Pos), D::Req).doc("learning rate"), p("beta1", T::Num(R::Prob), D::Num(0.9)), p("beta2", T::Num(R::Prob), D::Num(0.999)), p("eps", T::Num(R::Pos), D::Num(1e-8)), p("weight_decay", T::Num(R::NonNeg), D::Num(0.0)).doc("decoupled weight decay")],
        "optimizer",
        "AdamW with decoupled weight decay.",
    ),
    b(
        "sgd",
        X,
        &[p("lr", T::Sched(R::Pos), D::Req).doc("learning rate"), p("momentum", T::Num(R::NonNeg), D::Num(0.0))],
        "optimizer",
        "Stochastic gradient descent.",
    ),
    b(
        "constant",
        X,
        &[p("value", T::Num(R::Any), D::Req), p("warmup", T::Steps, D::Steps(0)).doc("linear warm-up from 0")],
        "schedule",
        "A constant schedule.",
    ),
    b(
        "linear",
        X,
        &[p("range", T::Range, D::Req).doc("start and end values"), p("warmup", T::Steps, D::Steps(0)).doc("linear warm-up from 0")],
        "schedule",
        "Linear interpolation from `a` to `b` over the stage.",
    ),
    b(
        "cosine",
        X,
        &[p("range", T::Range, D::Req).doc("start and end values"), p("warmup", T::Steps, D::Steps(0)).doc("linear warm-up from 0")],
        "schedule",
        "Cosine decay from `a` to `b` over the stage.",
    ),
    b(
        "warmup",
        X,
        &[p("value", T::Num(R::Any), D::Req), p("steps", T::Steps, D::Req).doc("warm-up length")],
        "schedule",
        "Linear warm-up from 0 to `value`, then constant.",
    ),
    b(
        "accuracy",
        X,
        &[p("reward", T::Reward, D::Req).doc("the success predicate"), p("rollout", T::Rollout, D::Req).doc("how completions are drawn")],
        "metric",
        "Mean reward of the rollout's completions (with a 0/1 reward: the accuracy).",
    ),
    b(
        "mean_reward",
        X,
        &[p("reward", T::Reward, D::Req), p("rollout", T::Rollout, D::Req)],
        "metric",
        "Mean reward of the rollout's completions.",
    ),
    b(
        "mean_length",
        X,
        &[p("rollout", T::Rollout, D::Req)],
        "metric",
        "Mean completion length in tokens.",
    ),
    b(
        "pass_at",
        X,
        &[p("k", T::Count, D::Req), p("reward", T::Reward, D::Req), p("rollout", T::Rollout, D::Req).doc("must draw at least k samples")],
        "metric",
        "pass@k: the probability that one of k samples succeeds (unbiased estimator).",
    ),
    b(
        "intrinsic_dim",
        X,
        &[],
        "summary",
        "Intrinsic dimension of the captured activations, per layer.",
    ),
    b(
        "density_peaks",
        X,
        &[p("labels", T::FieldName, D::Req).doc("the record field with cluster labels")],
        "summary",
        "Density-peak clustering of the captured activations.",
    ),
    b(
        "context_attention",
        X,
        &[p("context", T::FieldName, D::Sym("context")).doc("the field holding the context")],
        "summary",
        "Attention mass the model puts on the context.",
    ),
    b(
        "attends_to_context",
        X,
        &[p("model", T::Model, D::Req), p("threshold", T::Num(R::Prob), D::Num(0.5))],
        "condition",
        "True for examples on which the model attends to the context more than the threshold.",
    ),
    b(
        "logp",
        F,
        &[p("y", T::Seqs, D::Req).doc("a sequence set: a dataset field (`train.solution`) or a rollout")],
        "token",
        "Log-probability of each token of `y` under the policy.",
    ),
    b(
        "ref_logp",
        F,
        &[p("y", T::Seqs, D::Req).doc("a sequence set: a dataset field (`train.solution`) or a rollout")],
        "token",
        "Log-probability of each token of `y` under the reference model (needs one).",
    ),
    b(
        "old_logp",
        F,
        &[p("y", T::Seqs, D::Req).doc("a sequence set: a dataset field (`train.solution`) or a rollout")],
        "token",
        "Log-probability of each token of `y` under the policy that sampled it.",
    ),
    b(
        "mask",
        F,
        &[p("y", T::Seqs, D::Req).doc("a sequence set: a dataset field (`train.solution`) or a rollout")],
        "token",
        "1 on completion tokens, 0 on prompt and padding.",
    ),
    b(
        "length",
        F,
        &[p("y", T::Seqs, D::Req).doc("a sequence set: a dataset field (`train.solution`) or a rollout")],
        "seq",
        "Number of completion tokens of each sequence.",
    ),
    b(
        "max_tokens",
        F,
        &[p("y", T::Seqs, D::Req).doc("a sequence set: a dataset field (`train.solution`) or a rollout")],
        "scalar",
        "The generation limit of the rollout that produced `y`.",
    ),
    b(
        "num_seqs",
        F,
        &[p("y", T::Seqs, D::Req).doc("a sequence set: a dataset field (`train.solution`) or a rollout")],
        "scalar",
        "Number of sequences in the batch.",
    ),
    b(
        "group_size",
        F,
        &[p("y", T::Seqs, D::Req).doc("a sequence set: a dataset field (`train.solution`) or a rollout")],
        "scalar",
        "Completions per prompt of the rollout that produced `y`.",
    ),
    b(
        "exp",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise e^x.",
    ),
    b(
        "log",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise natural logarithm.",
    ),
    b(
        "log1p",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise log(1 + x).",
    ),
    b(
        "sigmoid",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise 1 / (1 + e^-x).",
    ),
    b(
        "log_sigmoid",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise log(sigmoid(x)), computed stably.",
    ),
    b(
        "relu",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise max(x, 0).",
    ),
    b(
        "abs",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Absolute value (also in rewards).",
    ),
    b(
        "sqrt",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise square root.",
    ),
    b(
        "square",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise x².",
    ),
    b(
        "tanh",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "Elementwise hyperbolic tangent.",
    ),
    b(
        "detach",
        F,
        &[p("x", T::Formula, D::Req)],
        "same axis",
        "The value without its gradient (stop-gradient).",
    ),
    b(
        "min",
        F,
        &[p("a", T::Formula, D::Req), p("b", T::Formula, D::Req)],
        "widest axis",
        "Elementwise minimum (also in rewards).",
    ),
    b(
        "max",
        F,
        &[p("a", T::Formula, D::Req), p("b", T::Formula, D::Req)],
        "widest axis",
        "Elementwise maximum (also in rewards).",
    ),
    b(
        "clip",
        F,
        &[p("x", T::Formula, D::Req), p("lo", T::Formula, D::Req), p("hi", T::Formula, D::Req)],
        "widest axis",
        "min(max(x, lo), hi).",
    ),
    b(
        "where",
        F,
        &[p("cond", T::Formula, D::Req), p("then", T::Formula, D::Req), p("otherwise", T::Formula, D::Req)],
        "widest axis",
        "Elementwise choice: `then` where `cond` is non-zero, else `otherwise`.",
    ),
    b(
        "sum_tokens",
        F,
        &[p("x", T::Formula, D::Req)],
        "seq",
        "Sum over the tokens of each sequence (token -> seq).",
    ),
    b(
        "mean_tokens",
        F,
        &[p("x", T::Formula, D::Req)],
        "seq",
        "Mean over the completion tokens of each sequence (token -> seq).",
    ),
    b(
        "group_mean",
        F,
        &[p("x", T::Formula, D::Req)],
        "seq",
        "Mean over each prompt's group of completions, broadcast back (seq -> seq).",
    ),
    b(
        "group_std",
        F,
        &[p("x", T::Formula, D::Req)],
        "seq",
        "Standard deviation over each prompt's group, broadcast back (seq -> seq).",
    ),
    b(
        "batch_mean",
        F,
        &[p("x", T::Formula, D::Req)],
        "seq",
        "Mean over the batch, broadcast back (seq -> seq).",
    ),
    b(
        "batch_std",
        F,
        &[p("x", T::Formula, D::Req)],
        "seq",
        "Standard deviation over the batch, broadcast back (seq -> seq).",
    ),
    b(
        "mean_seqs",
        F,
        &[p("x", T::Formula, D::Req)],
        "scalar",
        "Mean over the sequences (seq -> scalar).",
    ),
    b(
        "sum_seqs",
        F,
        &[p("x", T::Formula, D::Req)],
        "scalar",
        "Sum over the sequences (seq -> scalar).",
    ),
    b(
        "mean_all_tokens",
        F,
        &[p("x", T::Formula, D::Req)],
        "scalar",
        "Mean over every completion token of the batch (token -> scalar).",
    ),
    b(
        "sum_all_tokens",
        F,
        &[p("x", T::Formula, D::Req)],
        "scalar",
        "Sum over every completion token of the batch (token -> scalar).",
    ),
    b(
        "number",
        RW,
        &[p("text", T::Str, D::Req)],
        "num",
        "The first number in the text (NaN-free: a text without one gives 0 and fails comparisons).",
    ),
    b(
        "answer",
        RW,
        &[p("text", T::Str, D::Req), p("marker", T::Str, D::Str("####")).doc("the answer follows the last marker")],
        "str",
        "The text after the last marker, trimmed.",
    ),
    b(
        "extract",
        RW,
        &[p("text", T::Str, D::Req), p("pattern", T::Str, D::Req).doc("a regular expression")],
        "str",
        "The first match of the pattern (its first group if it has one).",
    ),
    b(
        "matches",
        RW,
        &[p("text", T::Str, D::Req), p("pattern", T::Str, D::Req).doc("a regular expression")],
        "bool",
        "Whether the pattern matches somewhere in the text.",
    ),
    b(
        "len",
        RW,
        &[p("text", T::Str, D::Req)],
        "num",
        "Length of the text in characters.",
    ),
    b(
        "contains",
        RW,
        &[p("text", T::Str, D::Req), p("part", T::Str, D::Req)],
        "bool",
        "Whether `part` occurs in the text.",
    ),
    b(
        "starts_with",
        RW,
        &[p("text", T::Str, D::Req), p("part", T::Str, D::Req)],
        "bool",
        "Whether the text starts with `part`.",
    ),
    b(
        "ends_with",
        RW,
        &[p("text", T::Str, D::Req), p("part", T::Str, D::Req)],
        "bool",
        "Whether the text ends with `part`.",
    ),
    b(
        "trim",
        RW,
        &[p("text", T::Str, D::Req)],
        "str",
        "The text without leading and trailing whitespace.",
    ),
    b(
        "lower",
        RW,
        &[p("text", T::Str, D::Req)],
        "str",
        "The text in lower case.",
    ),
    b(
        "climb_valid",
        RW,
        &[p("prompt", T::Str, D::Req).doc("a `climb` prompt, `start<target`"), p("text", T::Str, D::Req).doc("the solution"), p("max_jump", T::Num(R::Any), D::Req).doc("steps a line may advance (an expert's sparser lines)")],
        "bool",
        "Whether the text climbs: each line `x<target` is 1 to `max_jump` steps above the line before (the start first) and below the target, and `#### answer` is the next step, at or above it. `exact_answer` alone also passes a lucky guess near the target.",
    ),
    b(
        "template",
        TR,
        &[p("text", T::Str, D::Req).doc("with `{field}` holes"), p("into", T::FieldName, D::Sym("prompt")).doc("the field written")],
        "data",
        "Render each record through a template into a field.",
    ),
    b(
        "drop_prompt",
        TR,
        &[],
        "data",
        "Train on the solution alone (QFFT).",
    ),
    b(
        "append_indicator",
        TR,
        &[p("token", T::Str, D::Req).doc("appended to the prompt"), p("when", T::Cond, D::Req)],
        "data",
        "Append an indicator token to the prompts of the records where the condition holds.",
    ),
    b(
        "shard",
        TR,
        &[p("index", T::Int, D::Req), p("count", T::Count, D::Req)],
        "data",
        "Keep shard `index` of `count` equal shards.",
    ),
    b(
        "filter",
        TR,
        &[p("when", T::Cond, D::Req).doc("a reward used as a predicate")],
        "data",
        "Keep the records where the predicate holds.",
    ),
    b(
        "take",
        TR,
        &[p("n", T::Count, D::Req)],
        "data",
        "Keep the first n records.",
    ),
    b(
        "select",
        TR,
        &[p("n", T::Count, D::Req)],
        "data",
        "Keep the first n records (alias of `take`).",
    ),
    b(
        "shuffle",
        TR,
        &[],
        "data",
        "Shuffle the records with the experiment seed.",
    ),
];

pub fn builtin(name: &str, scope: Scope) -> Option<&'static Builtin> {
    let mut found = None;
    for d in BUILTINS.iter().filter(|d| d.name == name) {
        if d.scope == scope {
            return Some(d);
        }
        // Transforms are only reachable after a dot.
        if found.is_none() && d.scope != Scope::Transform {
            found = Some(d);
        }
    }
    found
}

/// Every name callable at the experiment level, in formulas or in rewards (for suggestions).
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name)
}

/// The built-in `name` of exactly this scope (what the checker binds against).
pub fn exact(name: &str, scope: Scope) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name && b.scope == scope)
}

/// Formula built-ins that rewards call too (their documentation says "also in rewards").
pub const ALSO_IN_REWARDS: &[&str] = &["abs", "min", "max"];

/// The built-in a reward calls by `name`: a reward built-in, or one of [`ALSO_IN_REWARDS`].
pub fn in_reward(name: &str) -> Option<&'static Builtin> {
    exact(name, Scope::Reward).or_else(|| {
        ALSO_IN_REWARDS
            .contains(&name)
            .then(|| exact(name, Scope::Formula))
            .flatten()
    })
}

/// Every built-in a reward can call.
pub fn reward_builtins() -> impl Iterator<Item = &'static Builtin> {
    BUILTINS
        .iter()
        .filter(|b| in_reward(b.name).is_some_and(|r| r.scope == b.scope))
}

/// How a parameter's default reads in the editor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamDefault {
    Required,
    /// May be left out; nothing is applied then.
    Optional,
    Value(String),
}

impl T {
    /// The type as a `.post` author writes it (`prob`, `tokens`, `binary | linear`).
    pub fn name(self) -> String {
        match self {
            T::Num(r) => r.type_name().to_string(),
            T::Int => "int".into(),
            T::Count => "count".into(),
            T::Str => "str".into(),
            T::Bool => "bool".into(),
            T::Tokens => "tokens".into(),
            T::Steps => "steps".into(),
            T::Batch => "prompts | sequences | completions".into(),
            T::ModelSrc | T::Model => "model".into(),
            T::Data => "data".into(),
            T::Reward => "reward".into(),
            T::Rollout | T::Sampling => "rollout".into(),
            T::Sched(r) => format!("{} | schedule", r.type_name()),
            T::Range => "a -> b".into(),
            T::Sym(opts) => opts.join(" | "),
            T::FieldName => "field".into(),
            T::StrList => "[str]".into(),
            T::IntList => "[int]".into(),
            T::Summaries => "[summary]".into(),
            T::Cond => "condition".into(),
            T::Optimizer => "optimizer".into(),
            T::Metric => "metric".into(),
            T::Objective => "objective".into(),
            T::Formula => "formula".into(),
            T::Seqs => "seqs".into(),
        }
    }
}

impl R {
    fn type_name(self) -> &'static str {
        match self {
            R::Any => "num",
            R::Pos => "pos",
            R::NonNeg => "nonneg",
            R::Prob => "prob",
            R::Frac => "(0, 1]",
        }
    }
}

impl P {
    /// The type as written: [`T::name`].
    pub fn ty_text(&self) -> String {
        self.ty.name()
    }

    pub fn default_doc(&self) -> ParamDefault {
        match self.default {
            D::Req => ParamDefault::Required,
            D::Opt => ParamDefault::Optional,
            d => d.text().map_or(ParamDefault::Optional, ParamDefault::Value),
        }
    }

    /// `n: count = 1`, `init?: str`, `model: model`.
    pub fn render(&self) -> String {
        match self.default_doc() {
            ParamDefault::Required => format!("{}: {}", self.name, self.ty_text()),
            ParamDefault::Optional => format!("{}?: {}", self.name, self.ty_text()),
            ParamDefault::Value(v) => format!("{}: {} = {}", self.name, self.ty_text(), v),
        }
    }
}

impl std::fmt::Display for T {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryFs;

    const ARITY: &[&str] = &["E0101", "E0103", "E0104", "E0105"];

    /// The codes of the name and arity errors of a probe.
    fn arity_errors(src: String) -> Vec<String> {
        let c = crate::compile_source(&MemoryFs::new(), "probe.post", src);
        c.diagnostics
            .iter()
            .filter(|d| ARITY.contains(&d.code.as_str()) && !d.message.contains("has no stages"))
            .map(|d| format!("{} {}", d.code, d.message))
            .collect()
    }

    /// A formula's or reward's call of `b`: its required parameters positionally, those with
    /// a default by name, and `extra` more positional arguments.
    fn expr_call(b: &Builtin, arg: impl Fn(&P) -> &'static str, extra: usize) -> String {
        let mut args: Vec<String> = Vec::new();
        for p in b.params.iter().filter(|p| matches!(p.default, D::Req)) {
            args.push(arg(p).to_string());
        }
        let first = args.first().cloned().unwrap_or_else(|| "1".into());
        args.extend(std::iter::repeat_n(first, extra));
        for p in b.params.iter().filter(|p| !matches!(p.default, D::Req)) {
            args.push(format!("{} = {}", p.name, arg(p)));
        }
        format!("{}({})", b.name, args.join(", "))
    }

    fn formula_probe(call: &str) -> String {
        format!("objective probe(y: seqs) = mean_all_tokens(logp(y)) + 0 * ({call})\n")
    }

    fn reward_probe(call: &str) -> String {
        format!("experiment e {{\n  reward probe(s) = if {call} == {call} then 1 else 0\n}}\n")
    }

    /// Every built-in of every scope in the table: the checker accepts a call with the
    /// documented parameters and refuses one with an argument too many, so a table entry and
    /// the checker cannot disagree on a built-in's arity.
    #[test]
    fn every_builtin_binds_its_documented_parameters() {
        for b in BUILTINS {
            match b.scope {
                Scope::Formula => {
                    let arg = |p: &P| match p.ty {
                        T::Seqs => "y",
                        _ => "logp(y)",
                    };
                    let ok = formula_probe(&expr_call(b, arg, 0));
                    assert_eq!(arity_errors(ok.clone()), Vec::<String>::new(), "{ok}");
                    let bad = formula_probe(&expr_call(b, arg, 1));
                    let errs = arity_errors(bad.clone());
                    assert!(
                        errs.iter().any(|e| e.starts_with("E0105")),
                        "{bad}: {errs:?}"
                    );
                }
                Scope::Reward => {}
                Scope::Experiment | Scope::Transform => {
                    // Named arguments and types are compared in `ide::tests`; here the count.
                    let ones = vec!["\"a\""; b.params.len() + 1].join(", ");
                    let call = match b.scope {
                        Scope::Transform => format!("task(\"arith\").{}({ones})", b.name),
                        _ => format!("{}({ones})", b.name),
                    };
                    let src = format!("experiment e {{\n  data probe = {call}\n}}\n");
                    let errs = arity_errors(src.clone());
                    assert!(
                        errs.iter().any(|e| e.starts_with("E0105")),
                        "{src}: {errs:?}"
                    );
                }
            }
        }
        let mut reward = 0;
        for b in reward_builtins() {
            reward += 1;
            let arg = |p: &P| match p.ty {
                T::Num(_) => "1",
                _ => "\"a\"",
            };
            let ok = reward_probe(&expr_call(b, arg, 0));
            assert_eq!(arity_errors(ok.clone()), Vec::<String>::new(), "{ok}");
            let bad = reward_probe(&expr_call(b, arg, 1));
            let errs = arity_errors(bad.clone());
            assert!(
                errs.iter().any(|e| e.starts_with("E0105")),
                "{bad}: {errs:?}"
            );
        }
        let rw = BUILTINS.iter().filter(|b| b.scope == Scope::Reward).count();
        assert_eq!(reward, rw + ALSO_IN_REWARDS.len());
    }
}
