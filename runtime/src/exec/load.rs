//! Loading, before the first step: datasets (read, transformed, every training sequence and
//! eval prompt tokenized and checked against the context), models (presets, Hugging Face
//! directories, prerequisites' outputs, frozen copies) and the memory plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarMap;
use post_graph::{ModelSource, StageKind};

use super::plan::{Plan, SlotKind};
use super::unk::UnkTally;
use super::{Context, Refusal, RunError, RunOptions};
use crate::data::{self, Dataset, Record};
use crate::generate::GEN_CHUNK;
use crate::hash::sub_seed;
use crate::memory;
use crate::model::Transformer;
use crate::tokenizer::Tokenizer;

/// Every model of the run, by name.
pub struct Models {
    /// Current weights of every model (trained ones and copies).
    pub models: BTreeMap<String, Transformer>,
    /// The trainable variables of the trained (non-copy) models.
    pub trainable: BTreeMap<String, VarMap>,
}

/// Build every model; returns them and the tokenizer.
pub fn build_models(
    plan: &Plan,
    opts: &RunOptions,
    device: &Device,
    log: &mut dyn FnMut(&str),
) -> Result<(Models, Tokenizer), RunError> {
    let graph = plan.graph;
    let base_dir = &opts.base_dir;
    let mut models = BTreeMap::new();
    let mut trainable = BTreeMap::new();
    let mut tokenizer: Option<Tokenizer> = None;
    for m in &graph.models {
        let (model, varmap) = match &m.source {
            ModelSource::Preset {
                preset,
                config,
                init,
                trained,
            } => {
                let (model, varmap) = Transformer::init_random(
                    config,
                    Default::default(),
                    sub_seed(graph.seed, &format!("model/{}", m.name)),
                    DType::F32,
                    device,
                )
                .ctx(|| format!("model `{}` (preset {preset})", m.name))?;
                let init_dir = match trained {
                    Some(t) => match opts.prerequisite_dirs.get(&t.prerequisite) {
                        Some(run) => Some(run.join("models").join(&t.model)),
                        None if opts.dry_run => {
                            log(&format!(
                                "model `{}`: prerequisite `{}` is not built yet (`post run` builds it first); checked with random weights",
                                m.name, t.prerequisite
                            ));
                            None
                        }
                        None => {
                            let file = graph
                                .prerequisite(&t.prerequisite)
                                .map_or("?", |p| p.file.as_str());
                            return Err(RunError::refused(
                                Refusal::MissingPath,
                                format!(
                                    "model `{}` starts from model `{}` of experiment `{}` ({file}), which has not been built: `post run` builds it first",
                                    m.name, t.model, t.prerequisite
                                ),
                            ));
                        }
                    },
                    None => init.as_ref().map(|dir| resolve_path(&opts.base_dir, dir)),
                };
                if let Some(dir) = init_dir {
                    check_model_dir(&m.name, &dir, false)?;
                    crate::hf::load_weights_into(&dir, config, &varmap, DType::F32, device)
                        .map_err(|e| {
                            RunError::refused(
                                Refusal::ModelContents,
                                format!("model `{}`: initial weights: {e}", m.name),
                            )
                        })?;
                }
                let char_tok = Tokenizer::builtin_char();
                if config.vocab_size < char_tok.vocab_size() {
                    return Err(RunError::refused(
                        Refusal::VocabularyTooSmall,
                        format!(
                            "model `{}`: vocabulary {} is smaller than the built-in tokenizer's {}",
                            m.name,
                            config.vocab_size,
                            char_tok.vocab_size()
                        ),
                    ));
                }
                tokenizer.get_or_insert(char_tok);
                (model, varmap)
            }
            ModelSource::HuggingFace { path } => {
                let dir = resolve_path(base_dir, path);
                check_model_dir(&m.name, &dir, true)?;
                let hf = crate::hf::load(&dir, DType::F32, device).map_err(|e| {
                    RunError::refused(Refusal::ModelContents, format!("model `{}`: {e}", m.name))
                })?;
                if let Some(t) = hf.tokenizer {
                    tokenizer.get_or_insert(t);
                }
                (hf.model, hf.varmap)
            }
            // Built below, once their source exists.
            _ => continue,
        };
        models.insert(m.name.clone(), model);
        trainable.insert(m.name.clone(), varmap);
    }
    for c in &plan.copies {
        let model = models[c.root]
            .frozen_copy()
            .ctx(|| format!("frozen copy `{}`", c.name))?;
        models.insert(c.name.to_string(), model);
    }
    let tokenizer = tokenizer.ok_or_else(|| {
        RunError::refused(
            Refusal::ModelContents,
            "no tokenizer: Hugging Face models need a tokenizer.json in their directory",
        )
    })?;
    Ok((Models { models, trainable }, tokenizer))
}

/// Refuse a model directory (or initial weights) that lacks a file the loader needs.
fn check_model_dir(model: &str, dir: &Path, needs_config: bool) -> Result<(), RunError> {
    let what = if needs_config {
        "model directory"
    } else {
        "initial weights"
    };
    if !dir.is_dir() {
        return Err(RunError::refused(
            Refusal::MissingPath,
            format!("model `{model}`: {what} {} does not exist", dir.display()),
        ));
    }
    let tokenizer = post_graph::hf_files::TOKENIZER;
    let missing = post_graph::hf_files::missing(needs_config, |f| dir.join(f).is_file()).or_else(
        // A model is tokenized with its own tokenizer, never silently with another's.
        || (needs_config && !dir.join(tokenizer).is_file()).then(|| tokenizer.to_string()),
    );
    match missing {
        Some(file) => Err(RunError::refused(
            Refusal::MissingPath,
            format!("model `{model}`: {what} {} has no {file}", dir.display()),
        )),
        None => Ok(()),
    }
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() { p } else { base.join(p) }
}

/// Load every dataset a stage trains or evaluates on.
pub fn load_datasets(plan: &Plan, base_dir: &Path) -> Result<BTreeMap<String, Dataset>, RunError> {
    let graph = plan.graph;
    let predicate = |expr: &post_graph::RExpr, r: &Record| -> Result<f64, String> {
        crate::rewards::try_eval_reward(
            expr,
            &crate::rewards::Sample {
                completion: "",
                fields: r.fields(),
                completion_tokens: 0,
            },
        )
        .map_err(|e| e.to_string())
    };
    let mut out = BTreeMap::new();
    for node in &graph.datasets {
        // Selected datasets appear once their selection stage has run; no stage of this
        // runtime produces one, and validation refuses such stages, so skip unless used.
        let used = graph.stages.iter().any(|s| match &s.kind {
            StageKind::Train(t) => {
                t.data == node.name || t.evals.iter().any(|e| e.data == node.name)
            }
            _ => false,
        });
        if !used {
            continue;
        }
        let ds = data::load(node, base_dir, graph.seed, &predicate)?;
        out.insert(node.name.clone(), ds);
    }
    Ok(out)
}

/// Encoded sequences of data slots, by (stage index, slot name): one `(ids, prompt length)`
/// per record of the stage's dataset.
pub type Encoded = BTreeMap<(usize, String), Vec<(Vec<u32>, usize)>>;

/// What [`encode_and_check`] found.
pub struct Lengths {
    /// Every data slot's sequences, encoded once.
    pub encoded: Encoded,
    /// The longest training sequence.
    pub max_seq: usize,
    /// The longest generation (prompt + new tokens), at most the context.
    pub max_gen: usize,
    /// What to tell before training without refusing (a little `<unk>` in a dataset).
    pub warnings: Vec<String>,
}

/// Tokenize every training sequence and eval prompt once, refusing any that cannot fit the
/// context.
pub fn encode_and_check(
    plan: &Plan,
    datasets: &BTreeMap<String, Dataset>,
    tok: &Tokenizer,
    context: usize,
) -> Result<Lengths, RunError> {
    let mut encoded = Encoded::new();
    let mut max_seq = 2;
    let mut max_gen = 0;
    let mut unk = UnkTally::new(tok);
    for sp in &plan.stages {
        let (name, t) = (sp.name, sp.stage);
        let ds = &datasets[&t.data];
        for slot in &sp.slots {
            let SlotKind::Data { field } = slot.kind else {
                continue;
            };
            let mut seqs = Vec::with_capacity(ds.records.len());
            for (i, r) in ds.records.iter().enumerate() {
                let prompt = r.require("prompt").map_err(|e| {
                    RunError::refused(
                        Refusal::DataContents,
                        format!("stage `{name}`: dataset `{}` record {}: {e}", t.data, i + 1),
                    )
                })?;
                let completion = r.require(field).map_err(|e| {
                    RunError::refused(Refusal::DataContents, format!(
                        "stage `{name}`: slot `{}` reads field `{field}`: dataset `{}` record {}: {e}",
                        slot.name, t.data, i + 1
                    ))
                })?;
                let (ids, prompt_len) = tok.encode_pair(prompt, completion).map_err(|e| {
                    RunError::refused(
                        Refusal::DataContents,
                        format!("dataset `{}` record {}: {e}", t.data, i + 1),
                    )
                })?;
                if ids.len() > context {
                    return Err(RunError::refused(
                        Refusal::DataContents,
                        format!(
                            "dataset `{}` record {}: prompt + {field} is {} tokens, longer than the model's context of {context}",
                            t.data,
                            i + 1,
                            ids.len()
                        ),
                    ));
                }
                max_seq = max_seq.max(ids.len());
                unk.add(&t.data, i, &ids, || format!("{prompt}{completion}"));
                seqs.push((ids, prompt_len));
            }
            encoded.insert((sp.index, slot.name.to_string()), seqs);
        }
        for e in &sp.evals {
            let data = &e.eval.data;
            let ds = &datasets[data];
            let limit = e
                .eval
                .limit
                .unwrap_or(ds.records.len())
                .min(ds.records.len());
            for (i, r) in ds.records[..limit].iter().enumerate() {
                let prompt = r.require("prompt").map_err(|err| {
                    RunError::refused(
                        Refusal::DataContents,
                        format!("eval dataset `{data}` record {}: {err}", i + 1),
                    )
                })?;
                let ids = tok
                    .encode_prompt(prompt)
                    .map_err(|m| RunError::refused(Refusal::DataContents, m))?;
                if ids.len() >= context {
                    return Err(RunError::refused(
                        Refusal::DataContents,
                        format!(
                            "eval dataset `{data}` record {}: the prompt is {} tokens, the model's context is {context}",
                            i + 1,
                            ids.len()
                        ),
                    ));
                }
                unk.add(data, i, &ids, || prompt.to_string());
                for m in &e.metrics {
                    max_gen = max_gen.max(ids.len() + m.sampling.max_tokens);
                }
            }
        }
    }
    let report = unk.report(matches!(tok, Tokenizer::Char), |name, index| {
        let source = match plan.graph.dataset(name).map(|d| &d.source) {
            Some(post_graph::DataSource::Jsonl { path, .. }) => format!(" of {path}"),
            Some(post_graph::DataSource::Task { task, .. }) => format!(" of task `{task}`"),
            _ => String::new(),
        };
        format!("record {}{source}", index + 1)
    });
    if let Some(m) = report.refuse.into_iter().next() {
        return Err(RunError::refused(Refusal::DataContents, m));
    }
    Ok(Lengths {
        encoded,
        max_seq,
        max_gen: max_gen.min(context),
        warnings: report.warn,
    })
}

/// The largest stage's memory estimate; refused when it does not fit `opts.memory_limit` (or
/// what the machine has available).
pub fn plan_memory(
    plan: &Plan,
    models: &Models,
    lengths: &Lengths,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<Option<memory::MemoryEstimate>, RunError> {
    let frozen = plan.copies.len();
    let mut worst: Option<memory::MemoryEstimate> = None;
    for sp in &plan.stages {
        let t = sp.stage;
        let m = &models.models[&t.model];
        let mem = memory::MemoryPlan {
            batch: t.batch.size / t.grad_accum * t.objective.slots.len().max(1),
            seq_len: lengths.max_seq,
            trainable: true,
            frozen_copies: frozen,
            gen_batch: if lengths.max_gen > 0 { GEN_CHUNK } else { 0 },
            gen_len: lengths.max_gen,
            dtype_bytes: 4,
        };
        let e = memory::estimate(m.config(), m.options().attention_bias, &mem);
        if worst.is_none_or(|w| e.total > w.total) {
            worst = Some(e);
        }
    }
    if let Some(e) = worst {
        log(&format!("memory estimate: {e}"));
        let available = opts.memory_limit.or_else(memory::available_memory_bytes);
        if let Some(avail) = available {
            e.check_fits(avail).map_err(RunError::Memory)?;
        }
    }
    Ok(worst)
}
