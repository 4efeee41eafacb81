//! Checking and lowering: names, types, units, ranges, cross-field constraints, then the graph.
//!
//! Definitions are evaluated lazily (with cycle detection) into [`Value`]s by binding call
//! arguments against the signatures in [`builtins`]; rewards lower to `RExpr` in [`reward`] and
//! objective formulas to `Expr` in [`formula`]. The graph is assembled only when no error was
//! found; every error of the file is reported in one run.

pub(crate) mod builtins;
pub(crate) mod formula;
pub(crate) mod params;
mod prerequisite;
pub mod read_scope;
pub(crate) mod reward;
pub(crate) mod signatures;
pub(crate) mod stage;
mod untrainable;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use post_graph::{
    AppliedDefault, Condition, DataNode, DataSource, GRAPH_VERSION, Graph, MetricKind, ModelConfig,
    ModelNode, ModelSource, Optimizer, RExpr, RewardNode, Rollout, RolloutNode, Schedule, Stage,
    Summary, Transform,
};

use crate::FileSystem;
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;
use crate::suggest;
use crate::syntax::ast::*;
use builtins::T;

/// Units a number can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Steps,
    Tokens,
    Prompts,
    Sequences,
    Completions,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s {
            "step" | "steps" => Unit::Steps,
            "token" | "tokens" => Unit::Tokens,
            "prompt" | "prompts" => Unit::Prompts,
            "sequence" | "sequences" => Unit::Sequences,
            "completion" | "completions" => Unit::Completions,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Steps => "steps",
            Unit::Tokens => "tokens",
            Unit::Prompts => "prompts",
            Unit::Sequences => "sequences",
            Unit::Completions => "completions",
        }
    }
}

/// A dataset value: its source, transforms and what is known about its record fields.
#[derive(Debug, Clone)]
pub struct DataVal {
    pub name: Option<String>,
    pub source: DataSource,
    pub transforms: Vec<Transform>,
    /// Record fields, when known (tasks: fixed list; JSONL: mapped or read from the file).
    pub fields: Option<BTreeSet<String>>,
    /// A rough upper bound of a prompt's length in tokens (context-length check).
    pub prompt_tokens: usize,
}

#[derive(Debug, Clone)]
pub struct RolloutVal {
    pub name: Option<String>,
    pub rollout: Rollout,
}

/// An objective applied to arguments (not yet lowered: lowering needs the stage).
#[derive(Debug, Clone)]
pub struct ObjVal {
    pub def: usize,
    pub args: Vec<(Option<Ident>, Expr)>,
    pub module: usize,
    pub span: Span,
}

/// What an expression evaluates to at check time.
#[derive(Debug, Clone)]
pub enum Value {
    Num(f64),
    Quantity(f64, Unit),
    Str(String),
    Bool(bool),
    Sym(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Range(f64, f64),
    Schedule(Schedule),
    Model(String),
    ModelSrc(ModelSource),
    Data(Box<DataVal>),
    Field(String, String),
    Reward(String),
    Rollout(Box<RolloutVal>),
    Replay(Box<RolloutVal>, usize),
    Objective(Box<ObjVal>),
    Optimizer(Optimizer),
    Metric(MetricKind, Box<RolloutVal>),
    Summary(Summary),
    Condition(Condition),
}

impl Value {
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Num(_) => "a number",
            Value::Quantity(..) => "a number with a unit",
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Sym(_) => "a name",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Range(..) => "a range `a -> b`",
            Value::Schedule(_) => "a schedule",
            Value::Model(_) | Value::ModelSrc(_) => "a model",
            Value::Data(_) => "a dataset",
            Value::Field(..) => "a dataset field",
            Value::Reward(_) => "a reward",
            Value::Rollout(_) => "a rollout",
            Value::Replay(..) => "a replay buffer",
            Value::Objective(_) => "an objective",
            Value::Optimizer(_) => "an optimizer",
            Value::Metric(..) => "a metric",
            Value::Summary(_) => "an analysis summary",
            Value::Condition(_) => "a condition",
        }
    }
}

/// The help line of a type mismatch: what to write instead of `found` where `expected` goes.
fn type_help(expected: &str, found: &Value) -> String {
    match found {
        Value::Quantity(x, u) if !expected.starts_with("a number of ") => {
            format!(
                "write `{}` without `{}`, or pass {expected}",
                builtins::fmt_num(*x),
                u.name()
            )
        }
        Value::Num(x) if expected.starts_with("a number of ") => {
            format!(
                "add the unit: {expected}, e.g. `{} {}`",
                builtins::fmt_num(*x),
                expected.rsplit(' ').next().unwrap_or_default()
            )
        }
        Value::Str(s) if !expected.contains("string") => {
            format!("`\"{s}\"` is quoted text; this position takes {expected}")
        }
        Value::Model(_) | Value::ModelSrc(_) if expected.contains("dataset") => {
            "pass a dataset (`data train = task(...)` or `jsonl(...)`), not a model".to_string()
        }
        Value::Reward(_) if expected.contains("number") => {
            "a reward is applied to samples by a rollout or objective; it has no value of its own here".to_string()
        }
        _ => format!("replace {} with {expected}", found.describe()),
    }
}

/// A lowered reward and the record fields it reads (with their spans).
pub type LoweredReward = (RExpr, Vec<(String, Span)>);

pub(crate) struct DefInfo<'a> {
    pub def: &'a Def,
    pub module: usize,
}

pub(crate) struct Module {
    /// `main` for the checked file, `std.objectives` etc. for the standard library.
    #[allow(dead_code)]
    pub name: String,
    pub scope: HashMap<String, usize>,
}

/// Names that are neither definitions nor builtins but are known to the stdlib: hint to import.
fn import_hint(name: &str) -> Option<String> {
    crate::stdlib::module_defining(name)
        .map(|m| format!("`{name}` is in the standard library: add `use {m}.{{{name}}}`"))
}

pub(crate) struct Checker<'a> {
    pub fs: &'a dyn FileSystem,
    pub base_dir: String,
    pub diags: Vec<Diagnostic>,
    pub modules: Vec<Module>,
    pub defs: Vec<DefInfo<'a>>,
    values: HashMap<usize, Option<Value>>,
    active: Vec<usize>,
    pub rewards_lowered: HashMap<usize, Option<LoweredReward>>,
    reward_active: Vec<usize>,
    // Graph parts, in registration order.
    pub models: Vec<ModelNode>,
    pub datasets: Vec<DataNode>,
    pub data_info: HashMap<String, DataVal>,
    pub rewards: Vec<RewardNode>,
    pub reward_fields: HashMap<String, Vec<(String, Span)>>,
    pub rollouts: Vec<RolloutNode>,
    /// Name -> index into `rollouts`, and the indices of unnamed (deduplicated) rollouts.
    rollout_index: HashMap<String, usize>,
    anon_rollouts: Vec<usize>,
    reward_names: std::collections::HashSet<String>,
    pub defaults: Vec<AppliedDefault>,
    /// Stage names and kinds, known before any definition is evaluated (`selected(s2l)`).
    pub stage_kinds: Vec<(String, BlockKind)>,
    anon: usize,
    /// The module id of the checked file.
    pub user_module: usize,
    /// While set, diagnostics are re-pointed here (see [`Checker::at_site`]).
    remap: Option<Span>,
    /// Experiments this one builds on (`trained(...)`), in first-use order.
    pub prerequisites: Vec<post_graph::Prerequisite>,
    /// The files being compiled, outermost first, this one last (a `trained(...)` circle is
    /// an error, not a hang).
    pub file_stack: Vec<String>,
}

/// E0201 for a call whose callee is not a name; `help` says what each context can call.
pub(crate) fn not_callable(span: Span, help: &str) -> Diagnostic {
    Diagnostic::error(Code::E0201, "this cannot be called", span, "not a function").with_help(help)
}

pub fn check(file: &File, fs: &dyn FileSystem, path: &str) -> (Option<Graph>, Vec<Diagnostic>) {
    check_nested(file, fs, path, &[])
}

/// [`check`] a file reached through `trained(...)` from the files in `outer`.
pub fn check_nested(
    file: &File,
    fs: &dyn FileSystem,
    path: &str,
    outer: &[String],
) -> (Option<Graph>, Vec<Diagnostic>) {
    let (graph, diags, _) = check_with_facts(file, fs, path, outer);
    (graph, diags)
}

/// What the checker learned about the file's definitions, for the editor.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Per dataset definition of the file (by the span of its name): its record fields, where
    /// the checker knows them (a task's fixed fields, a JSONL file's mapped or shared keys,
    /// fields a transform adds).
    pub data_fields: Vec<(Span, BTreeSet<String>)>,
}

/// [`check_nested`], also returning the [`Facts`] the checker computed.
pub fn check_with_facts(
    file: &File,
    fs: &dyn FileSystem,
    path: &str,
    outer: &[String],
) -> (Option<Graph>, Vec<Diagnostic>, Facts) {
    let mut file_stack = outer.to_vec();
    file_stack.push(path.to_string());
    let base_dir = match path.rfind('/') {
        Some(i) => path[..i].to_string(),
        None => String::new(),
    };
    let mut c = Checker {
        fs,
        base_dir,
        diags: Vec::new(),
        modules: Vec::new(),
        defs: Vec::new(),
        values: HashMap::new(),
        active: Vec::new(),
        rewards_lowered: HashMap::new(),
        reward_active: Vec::new(),
        models: Vec::new(),
        datasets: Vec::new(),
        data_info: HashMap::new(),
        rewards: Vec::new(),
        reward_fields: HashMap::new(),
        rollouts: Vec::new(),
        rollout_index: HashMap::new(),
        anon_rollouts: Vec::new(),
        reward_names: std::collections::HashSet::new(),
        defaults: Vec::new(),
        stage_kinds: Vec::new(),
        anon: 0,
        user_module: usize::MAX,
        remap: None,
        prerequisites: Vec::new(),
        file_stack,
    };
    let graph = c.run(file);
    let mut facts = Facts::default();
    for (id, v) in &c.values {
        let info = &c.defs[*id];
        if info.module != c.user_module {
            continue;
        }
        if let Some(Value::Data(d)) = v
            && let Some(fields) = &d.fields
        {
            facts.data_fields.push((info.def.name.span, fields.clone()));
        }
    }
    facts.data_fields.sort_by_key(|(s, _)| s.start);
    let mut seen = std::collections::HashSet::new();
    let diags = c
        .diags
        .into_iter()
        .filter(|d| seen.insert((d.code, d.primary.span, d.message.clone())))
        .collect();
    (graph, diags, facts)
}

impl<'a> Checker<'a> {
    pub fn err(&mut self, mut d: Diagnostic) {
        // Errors found inside standard-library definitions point at the user's call.
        if let Some(site) = self.remap {
            d.primary.span = site;
            d.secondary.clear();
        }
        self.diags.push(d);
    }

    /// Run `f` with diagnostics re-pointed at `site` when `module` is not the user's file.
    pub fn at_site<R>(&mut self, module: usize, site: Span, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.remap;
        if module != self.user_module && self.remap.is_none() {
            self.remap = Some(site);
        }
        let out = f(self);
        self.remap = saved;
        out
    }

    pub fn default_applied(&mut self, path: &str, value: String, origin: &str) {
        self.defaults.push(AppliedDefault {
            path: path.to_string(),
            value,
            origin: origin.to_string(),
        });
    }

    fn add_module(&mut self, name: &str, items: &'a [Item], is_user: bool) -> usize {
        let id = self.modules.len();
        self.modules.push(Module {
            name: name.to_string(),
            scope: HashMap::new(),
        });
        let mut defs: Vec<&'a Def> = Vec::new();
        for item in items {
            match item {
                Item::Def(d) => defs.push(d),
                Item::Block(b) if b.kind == BlockKind::Experiment && is_user => {
                    for i in &b.items {
                        if let Item::Def(d) = i {
                            defs.push(d);
                        }
                    }
                }
                _ => {}
            }
        }
        for d in defs {
            let def_id = self.defs.len();
            self.defs.push(DefInfo { def: d, module: id });
            if let Some(&prev) = self.modules[id].scope.get(&d.name.name) {
                let prev_span = self.defs[prev].def.name.span;
                self.err(
                    Diagnostic::error(
                        Code::E0102,
                        format!("`{}` is defined more than once", d.name.name),
                        d.name.span,
                        "defined again here",
                    )
                    .with_label(prev_span, "first defined here")
                    .with_help("rename one of the definitions"),
                );
                continue;
            }
            self.modules[id].scope.insert(d.name.name.clone(), def_id);
        }
        id
    }

    fn add_imports(&mut self, module: usize, items: &'a [Item], std_ids: &HashMap<&str, usize>) {
        for item in items {
            let Item::Use(u) = item else { continue };
            let mname = u
                .module
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(".");
            let mspan = u
                .module
                .first()
                .map(|f| f.span.join(u.module.last().map_or(f.span, |l| l.span)))
                .unwrap_or(u.span);
            let Some(&src) = std_ids.get(mname.as_str()) else {
                let names: Vec<&str> = std_ids.keys().copied().collect();
                self.err(
                    Diagnostic::error(
                        Code::E0106,
                        format!("no module named `{mname}`"),
                        mspan,
                        "unknown module",
                    )
                    .with_help(
                        suggest::did_you_mean(&mname, names.iter().copied()).unwrap_or_else(|| {
                            "the modules are std.objectives, std.rewards, std.rollouts".into()
                        }),
                    ),
                );
                continue;
            };
            for n in &u.names {
                match self.modules[src].scope.get(&n.name).copied() {
                    Some(def_id) => {
                        if let Some(&prev) = self.modules[module].scope.get(&n.name) {
                            if prev != def_id {
                                let prev_span = self.defs[prev].def.name.span;
                                let mut d = Diagnostic::error(
                                    Code::E0102,
                                    format!("`{}` is imported and also defined here", n.name),
                                    n.span,
                                    "imported here",
                                )
                                .with_help("remove the import or rename the definition");
                                if self.defs[prev].module == module {
                                    d = d.with_label(prev_span, "defined here");
                                }
                                self.err(d);
                            }
                            continue;
                        }
                        self.modules[module].scope.insert(n.name.clone(), def_id);
                    }
                    None => {
                        let cands: Vec<String> = self.modules[src].scope.keys().cloned().collect();
                        let help = suggest::did_you_mean(&n.name, cands.iter().map(|s| s.as_str()))
                            .unwrap_or_else(|| {
                                let mut c = cands.clone();
                                c.sort();
                                format!("`{mname}` defines: {}", c.join(", "))
                            });
                        self.err(
                            Diagnostic::error(
                                Code::E0106,
                                format!("`{mname}` has no item named `{}`", n.name),
                                n.span,
                                "not found in the module",
                            )
                            .with_help(help),
                        );
                    }
                }
            }
        }
    }

    fn run(&mut self, file: &'a File) -> Option<Graph> {
        // Standard library modules first (their ids are stable across files).
        let mut std_ids = HashMap::new();
        let std = crate::stdlib::parsed();
        for (name, f) in std {
            let id = self.add_module(name, &f.items, false);
            std_ids.insert(*name, id);
        }
        for (name, f) in std {
            if let Some(&id) = std_ids.get(name) {
                self.add_imports(id, &f.items, &std_ids);
            }
        }
        // Stdlib diagnostics would be compiler bugs; keep only the user's.
        self.diags.clear();
        let user = self.add_module("main", &file.items, true);
        self.user_module = user;
        self.add_imports(user, &file.items, &std_ids);

        // Placement rules and the experiment.
        let mut experiment: Option<&'a Block> = None;
        for item in &file.items {
            match item {
                Item::Block(b) if b.kind == BlockKind::Experiment => {
                    if let Some(first) = experiment {
                        self.err(
                            Diagnostic::error(
                                Code::E0108,
                                "a file holds at most one experiment",
                                b.name.span,
                                "second experiment",
                            )
                            .with_label(first.name.span, "first experiment")
                            .with_help("put each experiment in its own file"),
                        );
                    } else {
                        experiment = Some(b);
                    }
                }
                Item::Setting(s) => self.err(
                    Diagnostic::error(
                        Code::E0107,
                        format!("setting `{}` outside an experiment", s.key.name),
                        s.key.span,
                        "not allowed at the top level",
                    )
                    .with_help("move it into `experiment name { ... }`"),
                ),
                Item::Eval(e) => self.err(
                    Diagnostic::error(
                        Code::E0107,
                        "`eval` outside a stage",
                        e.span,
                        "not allowed here",
                    )
                    .with_help("put eval blocks inside a `stage`"),
                ),
                Item::Block(b) => self.err(
                    Diagnostic::error(
                        Code::E0107,
                        format!("`{}` outside an experiment", b.kind.keyword()),
                        b.name.span,
                        "not allowed at the top level",
                    )
                    .with_help(format!(
                        "move `{} {} {{ ... }}` inside the `experiment name {{ ... }}` block",
                        b.kind.keyword(),
                        b.name.name
                    )),
                ),
                _ => {}
            }
        }
        if let Some(exp) = experiment {
            let mut stage_names: HashMap<&str, Span> = HashMap::new();
            for item in &exp.items {
                if let Item::Block(b) = item {
                    if let Some(&first) = stage_names.get(b.name.name.as_str()) {
                        self.err(
                            Diagnostic::error(
                                Code::E0102,
                                format!("stage `{}` is defined more than once", b.name.name),
                                b.name.span,
                                "defined again here",
                            )
                            .with_label(first, "first defined here")
                            .with_help(format!(
                                "rename one of the two stages (e.g. `{}_2`), or merge their settings into one",
                                b.name.name
                            )),
                        );
                    } else {
                        stage_names.insert(b.name.name.as_str(), b.name.span);
                        self.stage_kinds.push((b.name.name.clone(), b.kind));
                    }
                }
            }
        }

        // Evaluate every definition of the file (stdlib ones are evaluated when used).
        let user_defs: Vec<usize> = (0..self.defs.len())
            .filter(|&i| self.defs[i].module == user)
            .collect();
        for id in user_defs {
            let def = self.defs[id].def;
            match def.kind {
                DefKind::Objective => formula::check_definition(self, id),
                DefKind::Rollout if def.params.is_some() => {
                    self.check_params(id);
                }
                DefKind::Reward => {
                    if self.lower_reward_def(id).is_some() {
                        self.register_reward(id);
                    }
                }
                _ => {
                    if def.params.is_some() && def.kind != DefKind::Rollout {
                        let span = def.name.span;
                        self.err(
                            Diagnostic::error(
                                Code::E0107,
                                format!(
                                    "a `{}` definition takes no parameters",
                                    def.kind.keyword()
                                ),
                                span,
                                "parameters not allowed",
                            )
                            .with_help("only objectives, rewards and rollouts take parameters"),
                        );
                        continue;
                    }
                    self.def_value(id, def.name.span);
                }
            }
        }

        let exp = experiment?;
        // The experiment's own settings, checked against their table.
        let settings =
            Settings::collect(self, &exp.items, stage::EXPERIMENT_SETTINGS, "experiment");
        let seed_param = stage::experiment_setting("seed");
        let seed = settings.get(seed_param.name).map(|s| {
            self.eval_as(
                user,
                &s.value,
                seed_param.ty,
                &HashMap::new(),
                seed_param.name,
            )
            .and_then(|v| num_of(&v))
            .map_or(0, |v| v as u64)
        });
        let mut stages: Vec<Stage> = Vec::new();
        for item in &exp.items {
            match item {
                Item::Eval(e) => self.err(
                    Diagnostic::error(
                        Code::E0107,
                        "`eval` outside a stage",
                        e.span,
                        "not allowed here",
                    )
                    .with_help("put eval blocks inside a `stage`"),
                ),
                Item::Block(b) => {
                    if let Some(st) = stage::stage(self, user, b, &stages) {
                        stages.push(st);
                    }
                }
                _ => {}
            }
        }
        if stages.is_empty() && !self.diags.iter().any(|d| d.is_error()) {
            self.err(
                Diagnostic::error(
                    Code::E0104,
                    format!("experiment `{}` has no stages", exp.name.name),
                    exp.name.span,
                    "nothing to run",
                )
                .with_help("add `stage name { objective = ..., steps = ..., batch = ... }`"),
            );
        }
        let seed = match seed {
            Some(s) => s,
            None => {
                let (value, text) = seed_param
                    .default
                    .value()
                    .expect("the experiment's seed has a default");
                self.default_applied(seed_param.name, text, "experiment default");
                num_of(&value).map_or(0, |v| v as u64)
            }
        };
        let graph = Graph {
            version: GRAPH_VERSION,
            experiment: exp.name.name.clone(),
            seed,
            models: std::mem::take(&mut self.models),
            datasets: std::mem::take(&mut self.datasets),
            rewards: std::mem::take(&mut self.rewards),
            rollouts: std::mem::take(&mut self.rollouts),
            stages,
            defaults_applied: std::mem::take(&mut self.defaults),
            prerequisites: std::mem::take(&mut self.prerequisites),
        };
        self.warn_unsupported(exp, user, &graph);
        self.warn_untrainable(exp, &graph);
        Some(graph)
    }

    /// W0001 for each feature of `graph` the runtime does not run yet (the list the runtime's
    /// refusal reads), at the stage or dataset that uses it.
    fn warn_unsupported(&mut self, exp: &Block, user: usize, graph: &Graph) {
        use post_graph::support::Site;
        for u in post_graph::support::unsupported(graph) {
            let span = match &u.site {
                Site::Stage(n) => exp.items.iter().find_map(|i| match i {
                    Item::Block(b) if b.name.name == *n => Some(b.name.span),
                    _ => None,
                }),
                Site::Dataset(n) => self
                    .defs
                    .iter()
                    .find(|d| d.module == user && d.def.name.name == *n)
                    .map(|d| d.def.name.span),
            }
            .unwrap_or(exp.name.span);
            self.err(
                Diagnostic::warning(Code::W0001, u.to_string(), span, "`post run` refuses this")
                    .with_help(
                        "`post check` accepts the language; this runtime cannot run it yet, so `post run` stops before step 1",
                    ),
            );
        }
    }

    /// Check the parameter list of a parametrised definition (types known, defaults typed).
    fn check_params(&mut self, id: usize) {
        let def = self.defs[id].def;
        let module = self.defs[id].module;
        for p in def.params.iter().flatten() {
            if let Some(ty) = &p.ty {
                let t = builtins::param_type(ty);
                if t.is_none() {
                    let first = &ty[0];
                    self.err(
                        Diagnostic::error(
                            Code::E0101,
                            format!("unknown type `{}`", first.name),
                            first.span,
                            "not a type",
                        )
                        .with_help(
                            suggest::did_you_mean(
                                &first.name,
                                builtins::TYPE_NAMES.iter().copied(),
                            )
                            .unwrap_or_else(|| {
                                format!("the types are {}", builtins::TYPE_NAMES.join(", "))
                            }),
                        ),
                    );
                    continue;
                }
                if let (Some(t), Some(d)) = (t, &p.default)
                    && !matches!(
                        t,
                        builtins::PT::Sym(_) | builtins::PT::Axis(_) | builtins::PT::Seqs
                    )
                {
                    let _ = self.eval_param(module, d, &t, &HashMap::new(), &p.name.name);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Names

    pub fn lookup(&self, module: usize, name: &str) -> Option<usize> {
        self.modules.get(module)?.scope.get(name).copied()
    }

    pub fn unresolved(&mut self, module: usize, name: &str, span: Span, extra: &[&str]) {
        let mut cands: Vec<String> = self.modules[module].scope.keys().cloned().collect();
        cands.extend(extra.iter().map(|s| s.to_string()));
        cands.extend(signatures::names().map(str::to_string));
        let help = suggest::did_you_mean(name, cands.iter().map(|s| s.as_str()))
            .or_else(|| import_hint(name))
            .or_else(|| {
                let std_names: Vec<(&str, &str)> = crate::stdlib::definitions().collect();
                let close = suggest::best(name, std_names.iter().map(|(_, n)| *n))?;
                let (m, _) = std_names.iter().find(|(_, n)| *n == close)?;
                Some(format!(
                    "did you mean `{close}`? it is in the standard library: add `use {m}.{{{close}}}`"
                ))
            })
            .unwrap_or_else(|| {
                format!(
                    "nothing named `{name}` is defined or imported here: define it in the experiment, or import it from the standard library (`use std.objectives.{{...}}`)"
                )
            });
        self.err(
            Diagnostic::error(
                Code::E0101,
                format!("cannot find `{name}`"),
                span,
                "not found in this scope",
            )
            .with_help(help),
        );
    }

    /// The value of a parameterless definition (memoised; cycles are errors).
    pub fn def_value(&mut self, id: usize, use_span: Span) -> Option<Value> {
        if let Some(v) = self.values.get(&id) {
            return v.clone();
        }
        if self.active.contains(&id) {
            let def = self.defs[id].def;
            self.err(
                Diagnostic::error(
                    Code::E0109,
                    format!("`{}` is defined in terms of itself", def.name.name),
                    use_span,
                    "used here while being defined",
                )
                .with_label(def.name.span, "definition")
                .with_help(format!(
                    "`{}` cannot use its own value, directly or through other definitions: write the value out instead",
                    def.name.name
                )),
            );
            return None;
        }
        self.active.push(id);
        let def = self.defs[id].def;
        let module = self.defs[id].module;
        let name = def.name.name.clone();
        let path = format!("{} {}", def.kind.keyword(), name);
        let v = match def.kind {
            DefKind::Const => self.eval(module, &def.value, &HashMap::new(), &path),
            DefKind::Model => {
                let v = self.eval_as(module, &def.value, T::ModelSrc, &HashMap::new(), &path);
                match v {
                    Some(Value::ModelSrc(src)) => {
                        self.models.push(ModelNode {
                            name: name.clone(),
                            source: src,
                        });
                        Some(Value::Model(name))
                    }
                    Some(Value::Model(other)) => {
                        let msg = format!(
                            "`{name}` is another name for model `{other}`; write `frozen({other})` for a frozen copy"
                        );
                        self.err(
                            Diagnostic::error(
                                Code::E0201,
                                msg,
                                def.value.span,
                                "a model name, not a model source",
                            )
                            .with_help(format!(
                                "use `{other}` directly instead of `{name}`, or write `model {name} = frozen({other})`"
                            )),
                        );
                        None
                    }
                    _ => None,
                }
            }
            DefKind::Data => {
                match self.eval_as(module, &def.value, T::Data, &HashMap::new(), &path) {
                    Some(Value::Data(mut d)) => {
                        d.name = Some(name.clone());
                        self.datasets.push(DataNode {
                            name: name.clone(),
                            source: d.source.clone(),
                            transforms: d.transforms.clone(),
                        });
                        self.data_info.insert(name.clone(), (*d).clone());
                        Some(Value::Data(d))
                    }
                    _ => None,
                }
            }
            DefKind::Rollout => {
                match self.eval_as(module, &def.value, T::Rollout, &HashMap::new(), &path) {
                    Some(Value::Rollout(mut r)) => {
                        r.name = Some(name.clone());
                        self.rollout_index.insert(name.clone(), self.rollouts.len());
                        self.rollouts.push(RolloutNode {
                            name: name.clone(),
                            policy: r.rollout.clone(),
                        });
                        Some(Value::Rollout(r))
                    }
                    _ => None,
                }
            }
            DefKind::Reward => {
                if self.lower_reward_def(id).is_some() {
                    self.register_reward(id);
                    Some(Value::Reward(name))
                } else {
                    None
                }
            }
            DefKind::Objective => Some(Value::Objective(Box::new(ObjVal {
                def: id,
                args: vec![],
                module,
                span: use_span,
            }))),
        };
        self.active.pop();
        self.values.insert(id, v.clone());
        v
    }

    pub fn register_reward(&mut self, id: usize) {
        let name = self.defs[id].def.name.name.clone();
        if !self.reward_names.insert(name.clone()) {
            return;
        }
        if let Some(Some((expr, fields))) = self.rewards_lowered.get(&id).cloned() {
            self.rewards.push(RewardNode {
                name: name.clone(),
                expr,
            });
            self.reward_fields.insert(name, fields);
        }
    }

    pub fn lower_reward_def(&mut self, id: usize) -> Option<RExpr> {
        if let Some(v) = self.rewards_lowered.get(&id) {
            return v.as_ref().map(|(e, _)| e.clone());
        }
        if self.reward_active.contains(&id) {
            let def = self.defs[id].def;
            self.err(
                Diagnostic::error(
                    Code::E0109,
                    format!("reward `{}` is defined in terms of itself", def.name.name),
                    def.name.span,
                    "recursive reward",
                )
                .with_help(
                    "a reward cannot call itself, directly or through other rewards: write out the part it needs",
                ),
            );
            return None;
        }
        self.reward_active.push(id);
        let out = reward::lower_def(self, id);
        self.reward_active.pop();
        self.rewards_lowered.insert(id, out.clone());
        out.map(|(e, _)| e)
    }

    pub fn register_rollout(&mut self, r: &RolloutVal, hint: &str) -> String {
        if let Some(n) = &r.name {
            return n.clone();
        }
        if let Some(&i) = self
            .anon_rollouts
            .iter()
            .find(|&&i| self.rollouts[i].policy == r.rollout)
        {
            return self.rollouts[i].name.clone();
        }
        let mut name = hint.to_string();
        while self.rollout_index.contains_key(&name) {
            self.anon += 1;
            name = format!("{hint}_{}", self.anon);
        }
        self.rollout_index.insert(name.clone(), self.rollouts.len());
        self.anon_rollouts.push(self.rollouts.len());
        self.rollouts.push(RolloutNode {
            name: name.clone(),
            policy: r.rollout.clone(),
        });
        name
    }

    pub fn rollout_named(&self, name: &str) -> Option<&RolloutNode> {
        self.rollout_index
            .get(name)
            .and_then(|&i| self.rollouts.get(i))
    }

    /// A path written in the file, resolved against the file's directory (as the runtime
    /// resolves it), for reads through the file system.
    pub fn resolve_path(&self, p: &str) -> String {
        if p.starts_with('/') || self.base_dir.is_empty() {
            p.to_string()
        } else {
            format!("{}/{p}", self.base_dir)
        }
    }

    pub fn register_model(&mut self, src: ModelSource, hint: &str) -> String {
        if let Some(existing) = self.models.iter().find(|n| n.source == src) {
            return existing.name.clone();
        }
        let mut name = hint.to_string();
        while self.models.iter().any(|n| n.name == name) {
            self.anon += 1;
            name = format!("{hint}_{}", self.anon);
        }
        self.models.push(ModelNode {
            name: name.clone(),
            source: src,
        });
        name
    }

    /// The architecture of a model (following frozen/snapshot/lagged links).
    pub fn model_config(&self, name: &str) -> Option<&ModelConfig> {
        let mut cur = self.models.iter().find(|m| m.name == name)?;
        for _ in 0..=self.models.len() {
            match &cur.source {
                ModelSource::Preset { config, .. } => return Some(config),
                ModelSource::HuggingFace { .. } => return None,
                ModelSource::Frozen { of }
                | ModelSource::Snapshot { of }
                | ModelSource::Lagged { of, .. } => {
                    cur = self.models.iter().find(|m| m.name == *of)?;
                }
            }
        }
        None
    }

    // -----------------------------------------------------------------------------------------
    // Evaluation

    pub fn eval(
        &mut self,
        module: usize,
        e: &Expr,
        locals: &HashMap<String, Value>,
        path: &str,
    ) -> Option<Value> {
        match &e.kind {
            ExprKind::Number { value, .. } => Some(Value::Num(*value)),
            ExprKind::Quantity { value, unit, .. } => {
                Some(Value::Quantity(*value, Unit::parse(&unit.name)?))
            }
            ExprKind::Str(s) => Some(Value::Str(s.clone())),
            ExprKind::Bool(b) => Some(Value::Bool(*b)),
            ExprKind::Name(n) => {
                if let Some(v) = locals.get(n) {
                    return Some(v.clone());
                }
                match self.lookup(module, n) {
                    Some(id) => {
                        let def = self.defs[id].def;
                        if def.params.is_some() && def.kind == DefKind::Rollout {
                            self.err(
                                Diagnostic::error(
                                    Code::E0201,
                                    format!("rollout `{n}` takes parameters"),
                                    e.span,
                                    "call it with arguments",
                                )
                                .with_label(def.name.span, "defined here")
                                .with_help(format!(
                                    "write `{n}({})`",
                                    def.params
                                        .as_deref()
                                        .unwrap_or(&[])
                                        .iter()
                                        .map(|p| format!("{} = ...", p.name.name))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )),
                            );
                            return None;
                        }
                        self.def_value(id, e.span)
                    }
                    None => {
                        self.unresolved(module, n, e.span, &[]);
                        None
                    }
                }
            }
            ExprKind::Field { base, field } => {
                let b = self.eval(module, base, locals, path)?;
                match b {
                    Value::Data(d) => {
                        let Some(dname) = d.name.clone() else {
                            self.err(
                                Diagnostic::error(
                                    Code::E0201,
                                    "fields can be read only from a named dataset",
                                    base.span,
                                    "unnamed dataset",
                                )
                                .with_help("declare it: `data name = ...`"),
                            );
                            return None;
                        };
                        self.check_field(&d, &field.name, field.span)?;
                        Some(Value::Field(dname, field.name.clone()))
                    }
                    other => {
                        self.err(
                            Diagnostic::error(
                                Code::E0201,
                                format!("{} has no field `{}`", other.describe(), field.name),
                                field.span,
                                "no such field",
                            )
                            .with_help(
                                "`.field` reads a dataset's field (`train.prompt`); a reward reads its sample's (`s.completion`)",
                            ),
                        );
                        None
                    }
                }
            }
            ExprKind::Call { callee, args } => {
                self.eval_call(module, e, callee, args, locals, path)
            }
            ExprKind::Unary { op, arg } => {
                let v = self.eval(module, arg, locals, path)?;
                match (op, v) {
                    (UnaryOp::Neg, Value::Num(x)) => Some(Value::Num(-x)),
                    (UnaryOp::Not, Value::Bool(b)) => Some(Value::Bool(!b)),
                    (_, v) => {
                        self.type_error(arg.span, "a number", &v);
                        None
                    }
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let l = self.eval(module, lhs, locals, path)?;
                let r = self.eval(module, rhs, locals, path)?;
                let (Value::Num(a), Value::Num(b)) = (&l, &r) else {
                    let (bad, span) = if matches!(l, Value::Num(_)) {
                        (r, rhs.span)
                    } else {
                        (l, lhs.span)
                    };
                    self.type_error(span, "a number", &bad);
                    return None;
                };
                let (a, b) = (*a, *b);
                Some(match op {
                    BinOp::Add => Value::Num(a + b),
                    BinOp::Sub => Value::Num(a - b),
                    BinOp::Mul => Value::Num(a * b),
                    BinOp::Div => Value::Num(a / b),
                    BinOp::Pow => Value::Num(a.powf(b)),
                    BinOp::Eq => Value::Bool(a == b),
                    BinOp::Ne => Value::Bool(a != b),
                    BinOp::Lt => Value::Bool(a < b),
                    BinOp::Le => Value::Bool(a <= b),
                    BinOp::Gt => Value::Bool(a > b),
                    BinOp::Ge => Value::Bool(a >= b),
                    BinOp::And | BinOp::Or => {
                        self.type_error(e.span, "booleans", &Value::Num(a));
                        return None;
                    }
                })
                .filter(|v| !matches!(v, Value::Num(x) if !x.is_finite()))
                .or_else(|| {
                    self.err(
                        Diagnostic::error(
                            Code::E0401,
                            "the result is not a finite number",
                            e.span,
                            "not finite",
                        )
                        .with_help("this overflows or divides by zero: check the operands"),
                    );
                    None
                })
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => match self.eval(module, cond, locals, path)? {
                Value::Bool(true) => self.eval(module, then, locals, path),
                Value::Bool(false) => self.eval(module, otherwise, locals, path),
                v => {
                    self.type_error(cond.span, "a boolean", &v);
                    None
                }
            },
            ExprKind::Match { .. } => {
                self.err(
                    Diagnostic::error(
                        Code::E0201,
                        "`match` is only available in objective formulas",
                        e.span,
                        "not allowed here",
                    )
                    .with_help("write `if cond then a else b` here"),
                );
                None
            }
            ExprKind::Tuple(xs) => {
                let mut out = Vec::new();
                for x in xs {
                    out.push(self.eval(module, x, locals, path)?);
                }
                Some(Value::Tuple(out))
            }
            ExprKind::List(xs) => {
                let mut out = Vec::new();
                let mut ok = true;
                for x in xs {
                    match self.eval(module, x, locals, path) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some(Value::List(out))
            }
            ExprKind::Arrow { from, to } => {
                let a = self.eval_as(module, from, T::Num(builtins::R::Any), locals, path)?;
                let b = self.eval_as(module, to, T::Num(builtins::R::Any), locals, path)?;
                Some(Value::Range(num_of(&a)?, num_of(&b)?))
            }
        }
    }

    pub fn type_error(&mut self, span: Span, expected: &str, found: &Value) {
        self.err(
            Diagnostic::error(
                Code::E0201,
                format!("expected {expected}, found {}", found.describe()),
                span,
                format!("this is {}", found.describe()),
            )
            .with_help(type_help(expected, found)),
        );
    }

    fn eval_call(
        &mut self,
        module: usize,
        e: &Expr,
        callee: &Expr,
        args: &[Arg],
        locals: &HashMap<String, Value>,
        path: &str,
    ) -> Option<Value> {
        match &callee.kind {
            ExprKind::Name(n) => {
                if !locals.contains_key(n)
                    && let Some(id) = self.lookup(module, n)
                {
                    return self.call_def(module, id, e, callee.span, args, locals, path);
                }
                if let Some(r) =
                    builtins::call(self, module, n, callee.span, e.span, args, locals, path)
                {
                    return r;
                }
                self.unresolved(module, n, callee.span, &[]);
                None
            }
            ExprKind::Field { base, field } => {
                let b = self.eval(module, base, locals, path)?;
                match b {
                    Value::Data(d) => {
                        builtins::transform(self, module, *d, field, e.span, args, locals, path)
                    }
                    other => {
                        self.err(Diagnostic::error(
                            Code::E0201,
                            format!("{} has no method `{}`", other.describe(), field.name),
                            field.span,
                            "no such method",
                        ).with_help("methods (transforms) apply to datasets: `.template(...)`, `.shuffle()`, `.take(n)`"));
                        None
                    }
                }
            }
            _ => {
                self.err(not_callable(callee.span, "only a name can be called (a built-in like `sample(...)`, or an objective or rollout definition); remove the parentheses"));
                None
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call_def(
        &mut self,
        module: usize,
        id: usize,
        e: &Expr,
        callee_span: Span,
        args: &[Arg],
        locals: &HashMap<String, Value>,
        path: &str,
    ) -> Option<Value> {
        let def = self.defs[id].def;
        match def.kind {
            DefKind::Objective => {
                // Arguments are bound when the objective is lowered inside a stage; the
                // caller's module resolves them.
                let _ = locals;
                Some(Value::Objective(Box::new(ObjVal {
                    def: id,
                    args: args
                        .iter()
                        .map(|a| (a.name.clone(), a.value.clone()))
                        .collect(),
                    module,
                    span: e.span,
                })))
            }
            DefKind::Rollout if def.params.is_some() => {
                let params = def.params.as_deref().unwrap_or(&[]);
                let def_module = self.defs[id].module;
                let bound = self.bind_params(
                    module,
                    params,
                    def_module,
                    args,
                    e.span,
                    locals,
                    &format!("{path}.{}", def.name.name),
                )?;
                self.at_site(def_module, e.span, |c| {
                    c.eval_as(def_module, &def.value, T::Rollout, &bound, path)
                })
            }
            _ => {
                self.err(
                    Diagnostic::error(
                        Code::E0201,
                        format!(
                            "`{}` is a {}, not a function",
                            def.name.name,
                            def.kind.keyword()
                        ),
                        callee_span,
                        "cannot be called",
                    )
                    .with_label(def.name.span, "defined here")
                    .with_help(format!(
                        "write `{}` without the parentheses and arguments",
                        def.name.name
                    )),
                );
                None
            }
        }
    }

    /// Bind call arguments to the declared parameters of a parametrised rollout.
    #[allow(clippy::too_many_arguments)]
    fn bind_params(
        &mut self,
        module: usize,
        params: &[Param],
        def_module: usize,
        args: &[Arg],
        span: Span,
        locals: &HashMap<String, Value>,
        path: &str,
    ) -> Option<HashMap<String, Value>> {
        let names: Vec<&str> = params.iter().map(|p| p.name.name.as_str()).collect();
        let assigned = builtins::assign_args(self, &names, args, span)?;
        let mut out = HashMap::new();
        let mut ok = true;
        for (i, p) in params.iter().enumerate() {
            let ty =
                p.ty.as_ref()
                    .and_then(|t| builtins::param_type(t))
                    .unwrap_or(builtins::PT::Any);
            let v = match assigned[i] {
                Some(a) => self.eval_param(module, &args[a].value, &ty, locals, &p.name.name),
                None => match &p.default {
                    Some(d) => {
                        self.default_applied(
                            &format!("{path}.{}", p.name.name),
                            crate::fmt::expr_to_string(d),
                            "definition default",
                        );
                        self.eval_param(def_module, d, &ty, &HashMap::new(), &p.name.name)
                    }
                    None => {
                        self.err(
                            Diagnostic::error(
                                Code::E0104,
                                format!("missing argument `{}`", p.name.name),
                                span,
                                "argument missing",
                            )
                            .with_label(p.name.span, "parameter declared here")
                            .with_help(format!(
                                "pass it: `{} = ...`, or give the parameter a default",
                                p.name.name
                            )),
                        );
                        None
                    }
                },
            };
            match v {
                Some(v) => {
                    out.insert(p.name.name.clone(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub fn eval_param(
        &mut self,
        module: usize,
        e: &Expr,
        ty: &builtins::PT,
        locals: &HashMap<String, Value>,
        path: &str,
    ) -> Option<Value> {
        use builtins::PT;
        match ty {
            PT::T(t) => self.eval_as(module, e, *t, locals, path),
            PT::Sym(opts) => builtins::symbol_in(self, e, opts, locals),
            _ => self.eval(module, e, locals, path),
        }
    }

    /// Evaluate and coerce to a type, reporting type, unit and range errors.
    pub fn eval_as(
        &mut self,
        module: usize,
        e: &Expr,
        t: T,
        locals: &HashMap<String, Value>,
        path: &str,
    ) -> Option<Value> {
        if let T::FieldName = t {
            return match &e.kind {
                ExprKind::Name(n) => Some(Value::Sym(n.clone())),
                ExprKind::Str(s) => Some(Value::Sym(s.clone())),
                _ => {
                    self.err(
                        Diagnostic::error(
                            Code::E0201,
                            "expected a field name",
                            e.span,
                            "not a field name",
                        )
                        .with_help("write the field's name, e.g. `solution`"),
                    );
                    None
                }
            };
        }
        let v = self.eval(module, e, locals, path)?;
        builtins::coerce(self, v, t, e.span)
    }

    /// A dataset field exists (when the dataset's fields are known).
    pub fn check_field(&mut self, d: &DataVal, field: &str, span: Span) -> Option<()> {
        if let Some(fields) = &d.fields
            && !fields.contains(field)
        {
            let name = d.name.clone().unwrap_or_default();
            let help = suggest::did_you_mean(field, fields.iter().map(|s| s.as_str()))
                .unwrap_or_else(|| {
                    format!(
                        "its fields are {}",
                        fields
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                });
            self.err(
                Diagnostic::error(
                    Code::E0501,
                    format!("dataset `{name}` has no field `{field}`"),
                    span,
                    "unknown field",
                )
                .with_help(help),
            );
            return None;
        }
        Some(())
    }
}

pub fn num_of(v: &Value) -> Option<f64> {
    match v {
        Value::Num(x) | Value::Quantity(x, _) => Some(*x),
        _ => None,
    }
}

/// Values of settings collected from a block, with duplicate and unknown-key checks.
pub(crate) struct Settings<'e> {
    pub map: BTreeMap<String, &'e Setting>,
}

impl<'e> Settings<'e> {
    pub fn collect(
        c: &mut Checker,
        items: &'e [Item],
        table: &[builtins::P],
        what: &str,
    ) -> Settings<'e> {
        let known: Vec<&str> = table.iter().map(|p| p.name).collect();
        let mut map: BTreeMap<String, &'e Setting> = BTreeMap::new();
        for item in items {
            let Item::Setting(s) = item else { continue };
            if !known.contains(&s.key.name.as_str()) {
                let (help, fix) = suggest::unknown_name(&s.key.name, known.iter().copied());
                c.err(
                    Diagnostic::error(
                        Code::E0103,
                        format!("unknown {what} setting `{}`", s.key.name),
                        s.key.span,
                        "unknown setting",
                    )
                    .with_help(help.unwrap_or_else(|| {
                        format!("the settings of {what} are: {}", known.join(", "))
                    }))
                    .with_fix_opt(s.key.span, fix),
                );
                continue;
            }
            if let Some(prev) = map.get(&s.key.name) {
                let prev_span = prev.key.span;
                c.err(
                    Diagnostic::error(
                        Code::E0105,
                        format!("`{}` is set twice", s.key.name),
                        s.key.span,
                        "set again here",
                    )
                    .with_label(prev_span, "first set here")
                    .with_help(format!("keep one `{} = ...` line", s.key.name)),
                );
                continue;
            }
            map.insert(s.key.name.clone(), s);
        }
        Settings { map }
    }

    pub fn get(&self, key: &str) -> Option<&'e Setting> {
        self.map.get(key).copied()
    }
}
