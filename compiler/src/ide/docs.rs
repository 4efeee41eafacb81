//! Documentation the editor shows for the language's fixed vocabulary: keywords, units, the
//! built-in functions (experiment level, formulas, rewards, dataset transforms) and block
//! settings. Standard library items are documented by their own `//` comments in `stdlib/`.
//!
//! The parameter lists mirror the checker's signatures (`check::builtins`, `check::stage`);
//! the `signatures_match_the_checker` test asks the checker itself for each list, so the two
//! cannot drift apart silently.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamDefault {
    Required,
    /// May be left out; nothing is applied then.
    Optional,
    Value(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct ParamDoc {
    pub name: &'static str,
    /// The type as a `.post` author writes it (`prob`, `tokens`, `binary | linear`).
    pub ty: &'static str,
    pub default: ParamDefault,
    pub doc: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct BuiltinDoc {
    pub name: &'static str,
    pub scope: Scope,
    pub params: &'static [ParamDoc],
    pub returns: &'static str,
    pub doc: &'static str,
}

impl BuiltinDoc {
    /// `sample(model: model, n: count = 1, ...) -> rollout`
    pub fn signature(&self) -> String {
        let ps: Vec<String> = self.params.iter().map(ParamDoc::render).collect();
        format!("{}({}) -> {}", self.name, ps.join(", "), self.returns)
    }
}

impl ParamDoc {
    pub fn render(&self) -> String {
        match self.default {
            ParamDefault::Required => format!("{}: {}", self.name, self.ty),
            ParamDefault::Optional => format!("{}?: {}", self.name, self.ty),
            ParamDefault::Value(v) => format!("{}: {} = {}", self.name, self.ty, v),
        }
    }
}

const fn req(name: &'static str, ty: &'static str, doc: &'static str) -> ParamDoc {
    ParamDoc {
        name,
        ty,
        default: ParamDefault::Required,
        doc,
    }
}

const fn opt(name: &'static str, ty: &'static str, doc: &'static str) -> ParamDoc {
    ParamDoc {
        name,
        ty,
        default: ParamDefault::Optional,
        doc,
    }
}

const fn def(name: &'static str, ty: &'static str, v: &'static str, doc: &'static str) -> ParamDoc {
    ParamDoc {
        name,
        ty,
        default: ParamDefault::Value(v),
        doc,
    }
}

const fn b(
    name: &'static str,
    scope: Scope,
    params: &'static [ParamDoc],
    returns: &'static str,
    doc: &'static str,
) -> BuiltinDoc {
    BuiltinDoc {
        name,
        scope,
        params,
        returns,
        doc,
    }
}

use Scope::{Experiment as X, Formula as F, Reward as RW, Transform as TR};

const SEQS: &[ParamDoc] = &[req(
    "y",
    "seqs",
    "a sequence set: a dataset field (`train.solution`) or a rollout",
)];
const X1: &[ParamDoc] = &[req("x", "formula", "")];
const S1: &[ParamDoc] = &[req("text", "str", "")];
const S2: &[ParamDoc] = &[req("text", "str", ""), req("part", "str", "")];

/// Every built-in with its signature and documentation.
pub const BUILTINS: &[BuiltinDoc] = &[
    // Models.
    b(
        "preset",
        X,
        &[
            req("name", "str", "`tiny` or `20m`"),
            opt("init", "str", "a checkpoint directory to start from"),
        ],
        "model",
        "A built-in model architecture, randomly initialised from the experiment seed. `tiny`: vocab 64 (char tokenizer), hidden 128, 4 layers, context 512. `20m`: vocab 8192, hidden 384, 8 layers, context 1024.",
    ),
    b(
        "hf",
        X,
        &[req(
            "path",
            "str",
            "a directory with config.json, model.safetensors and tokenizer.json",
        )],
        "model",
        "A Hugging Face model loaded from a local directory.",
    ),
    b(
        "frozen",
        X,
        &[req("model", "model", "the model to copy")],
        "model",
        "A frozen copy of another model, taken before training starts (the usual reference model).",
    ),
    b(
        "snapshot",
        X,
        &[req("model", "model", "the model to copy")],
        "model",
        "A copy of another model taken when the stage that uses it starts.",
    ),
    b(
        "lagged",
        X,
        &[
            req("model", "model", "the model to follow"),
            req("every", "steps", "refresh interval"),
        ],
        "model",
        "A copy of another model refreshed every N steps (a lagged reference).",
    ),
    // Data.
    b(
        "task",
        X,
        &[
            req(
                "name",
                "str",
                "`arith`, `carry`, `chain`, `climb` or `countdown`",
            ),
            def("split", "train | test", "train", "which split to generate"),
            def("size", "count", "1000", "number of records"),
            def(
                "difficulty",
                "count",
                "1",
                "arith, carry: digits (1..=12); chain: digits added (1..=11); climb: steps (1..=20); countdown: numbers (1..=6)",
            ),
            opt(
                "min_difficulty",
                "count",
                "with a value, each problem's difficulty is drawn from min_difficulty..=difficulty",
            ),
        ],
        "data",
        "A built-in synthetic task. Records have the fields `prompt`, `solution` (the expert's step-by-step trace ending in `#### <answer>`), `steps` (the same trace one step a line: denser than `solution` only for `climb`), `answer` and `rejected`.",
    ),
    b(
        "jsonl",
        X,
        &[req("path", "str", "the file, relative to the .post file")],
        "data",
        "Records read from a JSON Lines file. Named arguments map record fields to JSON keys: `jsonl(\"gsm8k.jsonl\", prompt = \"question\", solution = \"answer\")`; without them every key of the first records is a field.",
    ),
    b(
        "selected",
        X,
        &[req("stage", "field", "the name of a `select` stage")],
        "data",
        "The examples chosen by a `select` (S2L) stage that runs earlier.",
    ),
    // Rollouts.
    b(
        "sample",
        X,
        &[
            req("model", "model", "the policy to sample from"),
            def("n", "count", "1", "completions per prompt (the group size)"),
            def(
                "temperature",
                "nonneg",
                "1",
                "softmax temperature; 0 is greedy",
            ),
            def(
                "top_k",
                "int",
                "0",
                "keep the k most likely tokens; 0 keeps all",
            ),
            def("top_p", "(0, 1]", "1", "nucleus sampling mass"),
            def(
                "max_tokens",
                "tokens",
                "128 tokens",
                "completion length limit",
            ),
            def("stop", "[str]", "[]", "stop strings"),
        ],
        "rollout",
        "Sample completions from a model.",
    ),
    b(
        "greedy",
        X,
        &[
            req("model", "model", "the model to decode"),
            def("n", "count", "1", "completions per prompt"),
            def(
                "max_tokens",
                "tokens",
                "128 tokens",
                "completion length limit",
            ),
            def("stop", "[str]", "[]", "stop strings"),
        ],
        "rollout",
        "Greedy (argmax) decoding.",
    ),
    b(
        "branched",
        X,
        &[
            req("base", "rollout", "a `sample(...)` rollout"),
            req("reward", "reward", "decides success"),
            def(
                "success_threshold",
                "num",
                "0.5",
                "a completion succeeds when its reward is above this",
            ),
            def(
                "expert",
                "field",
                "solution",
                "the record field holding the expert trace",
            ),
            def(
                "step_delimiter",
                "str",
                "\"\\n\"",
                "splits the expert trace into steps",
            ),
            def(
                "search",
                "binary | linear",
                "binary",
                "how the shortest successful prefix is searched",
            ),
            def(
                "remember",
                "bool",
                "true",
                "keep each example's prefix length between steps",
            ),
            def(
                "anchor",
                "none | original | boundary",
                "none",
                "what fills a branched group whose every continuation succeeded: nothing (no update), the original failed rollouts, or the failures of the longest failing prefix",
            ),
        ],
        "rollout",
        "BREAD: when a whole group fails, restart it from the shortest prefix of the expert trace that lets the policy succeed (per-example adaptive state).",
    ),
    b(
        "guided",
        X,
        &[
            req("base", "rollout", "a `sample(...)` rollout"),
            req(
                "baseline",
                "model",
                "the model whose value estimates guide decoding",
            ),
            req("reward", "reward", "the reward the guide estimates"),
            def("k", "count", "10", "candidate tokens scored per step"),
            def("alpha", "num", "1", "weight of the value estimate"),
            def(
                "lookahead",
                "tokens",
                "16 tokens",
                "rollout length used for each estimate",
            ),
        ],
        "rollout",
        "Transfer-Q style guided decoding: re-rank the top-k next tokens by an estimated value.",
    ),
    b(
        "verifier_stopped",
        X,
        &[
            req("base", "rollout", "a `sample(...)` rollout"),
            req("verifier", "model", "scores each step"),
            req("verifier_ref", "model", "the verifier's reference"),
            def("step_delimiter", "str", "\"\\n\"", "separates steps"),
            def(
                "tau",
                "pos",
                "0.01",
                "stop when the verifier's log-ratio falls below this",
            ),
            def("max_steps", "count", "8", "step limit"),
        ],
        "rollout",
        "Multi-step decoding that stops when a verifier judges the steps no longer improve.",
    ),
    b(
        "replay",
        X,
        &[
            req("rollout", "rollout", "the rollout whose samples are stored"),
            def("capacity", "count", "1024", "buffer size"),
        ],
        "replay buffer",
        "A replay buffer of past samples of a rollout (off-policy objectives read `old_logp`).",
    ),
    // Optimizers and schedules.
    b(
        "adamw",
        X,
        &[
            req("lr", "pos | schedule", "learning rate"),
            def("beta1", "prob", "0.9", ""),
            def("beta2", "prob", "0.999", ""),
            def("eps", "pos", "1e-8", ""),
            def("weight_decay", "nonneg", "0", "decoupled weight decay"),
        ],
        "optimizer",
        "AdamW with decoupled weight decay.",
    ),
    b(
        "sgd",
        X,
        &[
            req("lr", "pos | schedule", "learning rate"),
            def("momentum", "nonneg", "0", ""),
        ],
        "optimizer",
        "Stochastic gradient descent.",
    ),
    b(
        "constant",
        X,
        &[
            req("value", "num", ""),
            def("warmup", "steps", "0 steps", "linear warm-up from 0"),
        ],
        "schedule",
        "A constant schedule.",
    ),
    b(
        "linear",
        X,
        &[
            req("range", "a -> b", "start and end values"),
            def("warmup", "steps", "0 steps", "linear warm-up from 0"),
        ],
        "schedule",
        "Linear interpolation from `a` to `b` over the stage.",
    ),
    b(
        "cosine",
        X,
        &[
            req("range", "a -> b", "start and end values"),
            def("warmup", "steps", "0 steps", "linear warm-up from 0"),
        ],
        "schedule",
        "Cosine decay from `a` to `b` over the stage.",
    ),
    b(
        "warmup",
        X,
        &[
            req("value", "num", ""),
            req("steps", "steps", "warm-up length"),
        ],
        "schedule",
        "Linear warm-up from 0 to `value`, then constant.",
    ),
    // Metrics and summaries.
    b(
        "accuracy",
        X,
        &[
            req("reward", "reward", "the success predicate"),
            req("rollout", "rollout", "how completions are drawn"),
        ],
        "metric",
        "Mean reward of the rollout's completions (with a 0/1 reward: the accuracy).",
    ),
    b(
        "mean_reward",
        X,
        &[req("reward", "reward", ""), req("rollout", "rollout", "")],
        "metric",
        "Mean reward of the rollout's completions.",
    ),
    b(
        "mean_length",
        X,
        &[req("rollout", "rollout", "")],
        "metric",
        "Mean completion length in tokens.",
    ),
    b(
        "pass_at",
        X,
        &[
            req("k", "count", ""),
            req("reward", "reward", ""),
            req("rollout", "rollout", "must draw at least k samples"),
        ],
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
        &[req(
            "labels",
            "field",
            "the record field with cluster labels",
        )],
        "summary",
        "Density-peak clustering of the captured activations.",
    ),
    b(
        "context_attention",
        X,
        &[def(
            "context",
            "field",
            "context",
            "the field holding the context",
        )],
        "summary",
        "Attention mass the model puts on the context.",
    ),
    b(
        "attends_to_context",
        X,
        &[
            req("model", "model", ""),
            def("threshold", "prob", "0.5", ""),
        ],
        "condition",
        "True for examples on which the model attends to the context more than the threshold.",
    ),
    // Formula quantities.
    b(
        "logp",
        F,
        SEQS,
        "token",
        "Log-probability of each token of `y` under the policy.",
    ),
    b(
        "ref_logp",
        F,
        SEQS,
        "token",
        "Log-probability of each token of `y` under the reference model (needs one).",
    ),
    b(
        "old_logp",
        F,
        SEQS,
        "token",
        "Log-probability of each token of `y` under the policy that sampled it.",
    ),
    b(
        "mask",
        F,
        SEQS,
        "token",
        "1 on completion tokens, 0 on prompt and padding.",
    ),
    b(
        "length",
        F,
        SEQS,
        "seq",
        "Number of completion tokens of each sequence.",
    ),
    b(
        "max_tokens",
        F,
        SEQS,
        "scalar",
        "The generation limit of the rollout that produced `y`.",
    ),
    b(
        "num_seqs",
        F,
        SEQS,
        "scalar",
        "Number of sequences in the batch.",
    ),
    b(
        "group_size",
        F,
        SEQS,
        "scalar",
        "Completions per prompt of the rollout that produced `y`.",
    ),
    b("exp", F, X1, "same axis", "Elementwise e^x."),
    b("log", F, X1, "same axis", "Elementwise natural logarithm."),
    b("log1p", F, X1, "same axis", "Elementwise log(1 + x)."),
    b("sigmoid", F, X1, "same axis", "Elementwise 1 / (1 + e^-x)."),
    b(
        "log_sigmoid",
        F,
        X1,
        "same axis",
        "Elementwise log(sigmoid(x)), computed stably.",
    ),
    b("relu", F, X1, "same axis", "Elementwise max(x, 0)."),
    b(
        "abs",
        F,
        X1,
        "same axis",
        "Absolute value (also in rewards).",
    ),
    b("sqrt", F, X1, "same axis", "Elementwise square root."),
    b("square", F, X1, "same axis", "Elementwise x²."),
    b(
        "tanh",
        F,
        X1,
        "same axis",
        "Elementwise hyperbolic tangent.",
    ),
    b(
        "detach",
        F,
        X1,
        "same axis",
        "The value without its gradient (stop-gradient).",
    ),
    b(
        "min",
        F,
        &[req("a", "formula", ""), req("b", "formula", "")],
        "widest axis",
        "Elementwise minimum (also in rewards).",
    ),
    b(
        "max",
        F,
        &[req("a", "formula", ""), req("b", "formula", "")],
        "widest axis",
        "Elementwise maximum (also in rewards).",
    ),
    b(
        "clip",
        F,
        &[
            req("x", "formula", ""),
            req("lo", "formula", ""),
            req("hi", "formula", ""),
        ],
        "widest axis",
        "min(max(x, lo), hi).",
    ),
    b(
        "where",
        F,
        &[
            req("cond", "formula", ""),
            req("then", "formula", ""),
            req("otherwise", "formula", ""),
        ],
        "widest axis",
        "Elementwise choice: `then` where `cond` is non-zero, else `otherwise`.",
    ),
    b(
        "sum_tokens",
        F,
        X1,
        "seq",
        "Sum over the tokens of each sequence (token -> seq).",
    ),
    b(
        "mean_tokens",
        F,
        X1,
        "seq",
        "Mean over the completion tokens of each sequence (token -> seq).",
    ),
    b(
        "group_mean",
        F,
        X1,
        "seq",
        "Mean over each prompt's group of completions, broadcast back (seq -> seq).",
    ),
    b(
        "group_std",
        F,
        X1,
        "seq",
        "Standard deviation over each prompt's group, broadcast back (seq -> seq).",
    ),
    b(
        "batch_mean",
        F,
        X1,
        "seq",
        "Mean over the batch, broadcast back (seq -> seq).",
    ),
    b(
        "batch_std",
        F,
        X1,
        "seq",
        "Standard deviation over the batch, broadcast back (seq -> seq).",
    ),
    b(
        "mean_seqs",
        F,
        X1,
        "scalar",
        "Mean over the sequences (seq -> scalar).",
    ),
    b(
        "sum_seqs",
        F,
        X1,
        "scalar",
        "Sum over the sequences (seq -> scalar).",
    ),
    b(
        "mean_all_tokens",
        F,
        X1,
        "scalar",
        "Mean over every completion token of the batch (token -> scalar).",
    ),
    b(
        "sum_all_tokens",
        F,
        X1,
        "scalar",
        "Sum over every completion token of the batch (token -> scalar).",
    ),
    // Rewards.
    b(
        "number",
        RW,
        S1,
        "num",
        "The first number in the text (NaN-free: a text without one gives 0 and fails comparisons).",
    ),
    b(
        "answer",
        RW,
        &[
            req("text", "str", ""),
            def(
                "marker",
                "str",
                "\"####\"",
                "the answer follows the last marker",
            ),
        ],
        "str",
        "The text after the last marker, trimmed.",
    ),
    b(
        "extract",
        RW,
        &[
            req("text", "str", ""),
            req("pattern", "str", "a regular expression"),
        ],
        "str",
        "The first match of the pattern (its first group if it has one).",
    ),
    b(
        "matches",
        RW,
        &[
            req("text", "str", ""),
            req("pattern", "str", "a regular expression"),
        ],
        "bool",
        "Whether the pattern matches somewhere in the text.",
    ),
    b("len", RW, S1, "num", "Length of the text in characters."),
    b(
        "contains",
        RW,
        S2,
        "bool",
        "Whether `part` occurs in the text.",
    ),
    b(
        "starts_with",
        RW,
        S2,
        "bool",
        "Whether the text starts with `part`.",
    ),
    b(
        "ends_with",
        RW,
        S2,
        "bool",
        "Whether the text ends with `part`.",
    ),
    b(
        "trim",
        RW,
        S1,
        "str",
        "The text without leading and trailing whitespace.",
    ),
    b("lower", RW, S1, "str", "The text in lower case."),
    b(
        "climb_valid",
        RW,
        &[
            req("prompt", "str", "a `climb` prompt, `start<target`"),
            req("text", "str", "the solution"),
            req(
                "max_jump",
                "num",
                "steps a line may advance (an expert's sparser lines)",
            ),
        ],
        "bool",
        "Whether the text climbs: each line `x<target` is 1 to `max_jump` steps above the line before (the start first) and below the target, and `#### answer` is the next step, at or above it. `exact_answer` alone also passes a lucky guess near the target.",
    ),
    // Dataset transforms.
    b(
        "template",
        TR,
        &[
            req("text", "str", "with `{field}` holes"),
            def("into", "field", "prompt", "the field written"),
        ],
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
        &[
            req("token", "str", "appended to the prompt"),
            req("when", "condition", ""),
        ],
        "data",
        "Append an indicator token to the prompts of the records where the condition holds.",
    ),
    b(
        "shard",
        TR,
        &[req("index", "int", ""), req("count", "count", "")],
        "data",
        "Keep shard `index` of `count` equal shards.",
    ),
    b(
        "filter",
        TR,
        &[req("when", "reward", "a reward used as a predicate")],
        "data",
        "Keep the records where the predicate holds.",
    ),
    b(
        "take",
        TR,
        &[req("n", "count", "")],
        "data",
        "Keep the first n records.",
    ),
    b(
        "select",
        TR,
        &[req("n", "count", "")],
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

/// Find a built-in: the one of `scope` when the name exists in several scopes.
pub fn builtin(name: &str, scope: Scope) -> Option<&'static BuiltinDoc> {
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

/// A setting of a block.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    pub key: &'static str,
    pub ty: &'static str,
    pub default: ParamDefault,
    pub doc: &'static str,
}

const fn s(
    key: &'static str,
    ty: &'static str,
    default: ParamDefault,
    doc: &'static str,
) -> SettingDoc {
    SettingDoc {
        key,
        ty,
        default,
        doc,
    }
}

use ParamDefault::{Optional as O, Required as Q};

pub const EXPERIMENT_SETTINGS: &[SettingDoc] = &[s(
    "seed",
    "int",
    ParamDefault::Value("0"),
    "Seeds every random choice of the run.",
)];

pub const STAGE_SETTINGS: &[SettingDoc] = &[
    s(
        "model",
        "model",
        ParamDefault::Value("policy"),
        "The model trained (default: the model named `policy`, else the first trainable one).",
    ),
    s(
        "data",
        "data",
        O,
        "The dataset whose prompts the stage trains on (default: the dataset the objective reads).",
    ),
    s("steps", "steps", Q, "Optimizer steps of the stage."),
    s(
        "batch",
        "prompts | sequences | completions",
        Q,
        "Batch size with its unit: `32 prompts`, `64 sequences` or `512 completions`.",
    ),
    s(
        "objective",
        "objective",
        Q,
        "The loss, an objective applied to its arguments: `sft(train.solution)`.",
    ),
    s(
        "rollout",
        "rollout",
        O,
        "The rollout that produces the completions the objective scores.",
    ),
    s(
        "optimizer",
        "optimizer",
        ParamDefault::Value("adamw(lr = 0.0001)"),
        "The optimizer and its learning-rate schedule.",
    ),
    s(
        "reference",
        "model",
        O,
        "The reference model for `ref_logp` (default: the model named `reference`, else a frozen one).",
    ),
    s(
        "grad_clip",
        "pos",
        ParamDefault::Value("1"),
        "Global gradient-norm clip.",
    ),
    s(
        "grad_accum",
        "count",
        ParamDefault::Value("1"),
        "Micro-batches accumulated per step.",
    ),
    s(
        "checkpoint_every",
        "steps",
        ParamDefault::Value("the stage's steps"),
        "Checkpoint interval.",
    ),
];

pub const SELECT_SETTINGS: &[SettingDoc] = &[
    s(
        "proxy",
        "model",
        Q,
        "The small proxy model trained to record loss trajectories (S2L).",
    ),
    s("data", "data", Q, "The candidate examples."),
    s("steps", "steps", Q, "Proxy training steps."),
    s("batch", "sequences", Q, "Proxy batch size."),
    s(
        "optimizer",
        "optimizer",
        ParamDefault::Value("adamw(lr = 0.0001)"),
        "The proxy's optimizer.",
    ),
    s(
        "record_every",
        "steps",
        O,
        "How often per-example losses are recorded.",
    ),
    s("clusters", "count", O, "Number of trajectory clusters."),
    s("budget", "count", Q, "How many examples are selected."),
];

/// Besides `limit`, every line of an eval block names a metric: `accuracy = accuracy(...)`.
pub const EVAL_SETTINGS: &[SettingDoc] = &[s(
    "limit",
    "count",
    O,
    "Evaluate at most this many examples of the dataset (default: all).",
)];

pub const ANALYSIS_SETTINGS: &[SettingDoc] = &[
    s(
        "model",
        "model",
        Q,
        "The model whose activations are captured.",
    ),
    s("data", "data", Q, "The inputs."),
    s("layers", "[int]", O, "Layers to capture (default: all)."),
    s("limit", "count", O, "At most this many examples."),
    s(
        "summaries",
        "[summary]",
        Q,
        "Summaries computed over the activations.",
    ),
];

/// A keyword or unit and what it means.
pub const KEYWORDS: &[(&str, &str)] = &[
    (
        "use",
        "Imports standard library items: `use std.objectives.{sft, grpo}`.",
    ),
    (
        "experiment",
        "The experiment: its seed, definitions and stages (the curriculum, run in order). One per file.",
    ),
    (
        "model",
        "Declares a model: `model policy = preset(\"tiny\")`, `model reference = frozen(policy)`.",
    ),
    (
        "data",
        "Declares a dataset: `data train = task(\"arith\")` or `jsonl(\"file.jsonl\", ...)`, with transforms.",
    ),
    (
        "reward",
        "Declares a reward, a pure expression over one sample: `reward correct(s) = answer(s.completion) == s.answer`.",
    ),
    (
        "objective",
        "Declares an objective: a formula over per-token, per-sequence and per-group quantities, reduced to a scalar loss.",
    ),
    (
        "rollout",
        "Declares a rollout policy: how completions are produced (`sample`, `greedy`, `branched`, ...).",
    ),
    ("const", "Declares a named constant."),
    (
        "stage",
        "A training stage: objective, data, rollout, optimizer, steps and batch. Stages run in order.",
    ),
    (
        "select",
        "A data-selection stage (S2L): trains a proxy, clusters loss trajectories and selects examples for later stages.",
    ),
    (
        "analysis",
        "An analysis stage: captures activations per layer and computes summaries.",
    ),
    (
        "eval",
        "An evaluation block in a stage: `eval every 50 steps on test { accuracy = accuracy(correct, greedy(policy)) }`.",
    ),
    ("every", "How often an eval block runs: `every 50 steps`."),
    ("on", "The dataset an eval block evaluates on."),
    ("if", "`if cond then a else b`."),
    ("then", "`if cond then a else b`."),
    ("else", "`if cond then a else b`."),
    (
        "match",
        "`match option { a => x, b => y }` chooses by a symbol parameter (objective formulas).",
    ),
    ("true", "The boolean true."),
    ("false", "The boolean false."),
];

pub const UNITS: &[(&str, &str)] = &[
    ("steps", "Optimizer steps."),
    ("step", "Optimizer steps."),
    ("tokens", "Tokens of the model's tokenizer."),
    ("token", "Tokens of the model's tokenizer."),
    (
        "prompts",
        "Prompts; with sampling each prompt yields a group of completions.",
    ),
    (
        "prompt",
        "Prompts; with sampling each prompt yields a group of completions.",
    ),
    (
        "sequences",
        "Sequences (prompt + completion) taken from a dataset.",
    ),
    (
        "sequence",
        "Sequences (prompt + completion) taken from a dataset.",
    ),
    (
        "completions",
        "Sampled completions (a multiple of the group size).",
    ),
    (
        "completion",
        "Sampled completions (a multiple of the group size).",
    ),
];

/// Parameter type names of `.post` definitions, with their meaning.
pub const TYPES: &[(&str, &str)] = &[
    ("num", "any finite number"),
    ("pos", "a number > 0"),
    ("nonneg", "a number >= 0"),
    ("prob", "a number strictly between 0 and 1"),
    ("int", "a whole number >= 0"),
    ("count", "a whole number >= 1"),
    ("str", "a string"),
    ("bool", "a boolean"),
    ("tokens", "a number of tokens (unit `tokens`)"),
    ("steps", "a number of steps (unit `steps`)"),
    ("model", "a model"),
    ("data", "a dataset"),
    ("reward", "a reward"),
    ("rollout", "a rollout"),
    ("seqs", "a sequence set: a dataset field or a rollout"),
    ("token", "a formula value with one entry per token"),
    ("seq", "a formula value with one entry per sequence"),
    ("scalar", "a formula value reduced to a scalar"),
];

pub fn keyword(name: &str) -> Option<&'static str> {
    KEYWORDS.iter().find(|(k, _)| *k == name).map(|(_, d)| *d)
}

pub fn unit(name: &str) -> Option<&'static str> {
    UNITS.iter().find(|(k, _)| *k == name).map(|(_, d)| *d)
}

pub fn type_name(name: &str) -> Option<&'static str> {
    TYPES.iter().find(|(k, _)| *k == name).map(|(_, d)| *d)
}

/// Reserved words (never identifiers).
pub const RESERVED: &[&str] = &["if", "then", "else", "match", "true", "false"];

/// Words that introduce a definition.
pub const DEF_KEYWORDS: &[&str] = &["model", "data", "reward", "objective", "rollout", "const"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::builtins::BUILTIN_NAMES;

    #[test]
    fn every_checker_builtin_is_documented() {
        for n in BUILTIN_NAMES {
            assert!(
                BUILTINS.iter().any(|d| d.name == *n),
                "`{n}` has no documentation"
            );
        }
        for t in crate::check::builtins::TYPE_NAMES {
            assert!(type_name(t).is_some(), "type `{t}` has no documentation");
        }
    }
}
