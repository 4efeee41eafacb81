//! Tokenizers: the built-in character tokenizer and Hugging Face `tokenizer.json`.
//!
//! The built-in tokenizer has 64 ids: 0 `<pad>`, 1 `<bos>`, 2 `<eos>`, 3 `<unk>`, then the
//! characters of [`CHARS`] in order (60 ids used, 4 reserved). Unknown characters encode to
//! `<unk>`; decoding skips the special and reserved ids. It saves as an equivalent Hugging Face
//! `tokenizer.json` (WordLevel over single characters), so saved checkpoints open elsewhere.
//!
//! Hugging Face tokenizers load from a directory: `tokenizer.json`, plus `tokenizer_config.json`
//! for the special tokens and the chat template (or `chat_template.jinja`). The chat template is
//! rendered with minijinja (Jinja2 semantics, `trim_blocks` and `lstrip_blocks` on as in
//! `transformers`, Python string/dict methods through minijinja's pycompat layer,
//! `raise_exception`). Templates that call something else (e.g. `strftime_now`) fail with
//! minijinja's error naming it, never with silently wrong text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use crate::files::write_atomic;

/// The characters of the built-in tokenizer, ids 4.. in this order.
pub const CHARS: &str = "0123456789abcdefghijklmnopqrstuvwxyz +-*/=()<>.,:;?#_[]\n";
/// Vocabulary size of the built-in tokenizer (ids past the characters are reserved).
pub const CHAR_VOCAB_SIZE: usize = 64;
pub const CHAR_PAD: u32 = 0;
pub const CHAR_BOS: u32 = 1;
pub const CHAR_EOS: u32 = 2;
pub const CHAR_UNK: u32 = 3;
const CHAR_SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<unk>"];

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// One chat message for [`Tokenizer::apply_chat_template`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A Hugging Face tokenizer with its resolved special ids and chat template.
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    eos: u32,
    pad: u32,
    bos: Option<u32>,
    chat_template: Option<String>,
    /// `tokenizer_config.json` as read (written back unchanged on save).
    config: Option<Value>,
}

#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// The built-in character tokenizer.
    Char,
    Hf(Box<HfTokenizer>),
}

impl Tokenizer {
    pub fn builtin_char() -> Self {
        Tokenizer::Char
    }

    /// Loads `tokenizer.json` (+ `tokenizer_config.json`, `chat_template.jinja`,
    /// `generation_config.json` / `config.json` for an eos id fallback) from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let tj = dir.join("tokenizer.json");
        if !tj.is_file() {
            return Err(file_err(
                &tj,
                "missing (a Hugging Face tokenizer needs tokenizer.json)",
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&tj).map_err(|e| file_err(&tj, e))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config = read_json_opt(&cfg_path)?;
        let token_id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            let Some(tok) = config.as_ref().and_then(|c| special_token(c, key)) else {
                return Ok(None);
            };
            match inner.token_to_id(&tok) {
                Some(id) => Ok(Some(id)),
                None => Err(file_err(
                    &cfg_path,
                    format!("{key} {tok:?} is not in the vocabulary of tokenizer.json"),
                )),
            }
        };
        let mut eos = token_id("eos_token")?;
        if eos.is_none() {
            for name in ["generation_config.json", "config.json"] {
                let p = dir.join(name);
                if let Some(v) = read_json_opt(&p)? {
                    eos = eos.or_else(|| first_id(v.get("eos_token_id")));
                }
            }
        }
        let eos = eos.ok_or_else(|| {
            file_err(
                &cfg_path,
                "no eos_token (nor eos_token_id in generation_config.json / config.json): \
                 generation could never stop",
            )
        })?;
        let bos = token_id("bos_token")?;
        let pad = token_id("pad_token")?.unwrap_or(eos);
        let mut chat_template = config
            .as_ref()
            .and_then(|c| template_of(c.get("chat_template")));
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.is_file() {
            chat_template = Some(std::fs::read_to_string(&jinja).map_err(|e| file_err(&jinja, e))?);
        }
        Ok(Tokenizer::Hf(Box::new(HfTokenizer {
            inner,
            eos,
            pad,
            bos,
            chat_template,
            config,
        })))
    }

    /// Token ids of `text`, without added special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Tokenizer::Char => Ok(text.chars().map(char_id).collect()),
            Tokenizer::Hf(h) => h
                .inner
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| TokenizerError::Tokenizer(e.to_string())),
        }
    }

    /// Prompt ids for generation: `[bos] prompt`. Never empty: a model needs at least one
    /// token to condition on, so the eos id stands in for a missing bos (Hugging Face
    /// tokenizers without one, QFFT's empty prompts).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, String> {
        let mut ids: Vec<u32> = self.bos_id().into_iter().collect();
        ids.extend(self.encode(prompt).map_err(|e| e.to_string())?);
        if ids.is_empty() {
            ids.push(self.eos_id());
        }
        Ok(ids)
    }

    /// Token ids of a training pair, `[bos] prompt completion eos`, and the prompt length (bos
    /// included). Prompt and completion are encoded apart, so the boundary is a token boundary.
    pub fn encode_pair(&self, prompt: &str, completion: &str) -> Result<(Vec<u32>, usize), String> {
        let mut ids: Vec<u32> = self.bos_id().into_iter().collect();
        ids.extend(self.encode(prompt).map_err(|e| e.to_string())?);
        let prompt_len = ids.len();
        ids.extend(self.encode(completion).map_err(|e| e.to_string())?);
        ids.push(self.eos_id());
        Ok((ids, prompt_len))
    }

    /// Text of `ids`, skipping special tokens (and, for the char tokenizer, reserved ids).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match self {
            Tokenizer::Char => Ok(ids.iter().filter_map(|&i| char_of(i)).collect()),
            Tokenizer::Hf(h) => h
                .inner
                .decode(ids, true)
                .map_err(|e| TokenizerError::Tokenizer(e.to_string())),
        }
    }

    pub fn eos_id(&self) -> u32 {
        match self {
            Tokenizer::Char => CHAR_EOS,
            Tokenizer::Hf(h) => h.eos,
        }
    }

    /// The id unknown text encodes to, when the tokenizer has one (`unk_token` in
    /// `tokenizer_config.json` for Hugging Face tokenizers; byte-level ones have none).
    pub fn unk_id(&self) -> Option<u32> {
        match self {
            Tokenizer::Char => Some(CHAR_UNK),
            Tokenizer::Hf(h) => h
                .config
                .as_ref()
                .and_then(|c| special_token(c, "unk_token"))
                .and_then(|t| h.inner.token_to_id(&t)),
        }
    }

    /// Padding id (the eos id for Hugging Face tokenizers without a pad token).
    pub fn pad_id(&self) -> u32 {
        match self {
            Tokenizer::Char => CHAR_PAD,
            Tokenizer::Hf(h) => h.pad,
        }
    }

    pub fn bos_id(&self) -> Option<u32> {
        match self {
            Tokenizer::Char => Some(CHAR_BOS),
            Tokenizer::Hf(h) => h.bos,
        }
    }

    /// Number of ids the tokenizer can produce (including added tokens); a model's vocabulary
    /// must be at least this large.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char => CHAR_VOCAB_SIZE,
            Tokenizer::Hf(h) => h.inner.get_vocab_size(true),
        }
    }

    pub fn chat_template(&self) -> Option<&str> {
        match self {
            Tokenizer::Char => None,
            Tokenizer::Hf(h) => h.chat_template.as_deref(),
        }
    }

    /// Renders the chat template with `messages`, `add_generation_prompt`, `bos_token` and
    /// `eos_token`, as `transformers`' `apply_chat_template(tokenize=False)` does.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let Some(src) = self.chat_template() else {
            return Err(TokenizerError::Template(
                "this tokenizer has no chat template".into(),
            ));
        };
        let token = |id: Option<u32>| -> String {
            match (self, id) {
                (Tokenizer::Hf(h), Some(i)) => h.inner.id_to_token(i).unwrap_or_default(),
                _ => String::new(),
            }
        };
        let mut env = minijinja::Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| TokenizerError::Template(e.to_string()))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let tmpl = env
            .template_from_str(src)
            .map_err(|e| TokenizerError::Template(format!("{e:#}")))?;
        let ctx = minijinja::context! {
            messages => minijinja::value::Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            bos_token => token(self.bos_id()),
            eos_token => token(Some(self.eos_id())),
        };
        tmpl.render(ctx)
            .map_err(|e| TokenizerError::Template(format!("{e:#}")))
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (each atomically).
    pub fn save(&self, dir: &Path) -> Result<(), TokenizerError> {
        let (tokenizer_json, config) = match self {
            Tokenizer::Char => (char_tokenizer_json(), char_tokenizer_config()),
            Tokenizer::Hf(h) => {
                let s = h
                    .inner
                    .to_string(true)
                    .map_err(|e| TokenizerError::Tokenizer(e.to_string()))?;
                let v: Value = serde_json::from_str(&s)
                    .map_err(|e| TokenizerError::Tokenizer(e.to_string()))?;
                let cfg = h.config.clone().unwrap_or_else(|| json!({}));
                (v, cfg)
            }
        };
        write_json_atomic(&dir.join("tokenizer.json"), &tokenizer_json)?;
        write_json_atomic(&dir.join("tokenizer_config.json"), &config)?;
        Ok(())
    }
}

fn char_id(c: char) -> u32 {
    CHARS
        .chars()
        .position(|x| x == c)
        .map_or(CHAR_UNK, |p| p as u32 + 4)
}

fn char_of(id: u32) -> Option<char> {
    if id < 4 {
        return None;
    }
    CHARS.chars().nth(id as usize - 4)
}

/// The built-in tokenizer as a Hugging Face `tokenizer.json`: every character is its own
/// pre-token (regex split, isolated), looked up in a WordLevel vocabulary, decoded by Fuse.
fn char_tokenizer_json() -> Value {
    let mut vocab = BTreeMap::new();
    for (i, s) in CHAR_SPECIALS.iter().enumerate() {
        vocab.insert(s.to_string(), i as u32);
    }
    for (i, c) in CHARS.chars().enumerate() {
        vocab.insert(c.to_string(), i as u32 + 4);
    }
    let added: Vec<Value> = CHAR_SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"},
                          "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

fn char_tokenizer_config() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "model_max_length": 512,
        "clean_up_tokenization_spaces": false
    })
}

/// A special token's text from `tokenizer_config.json`: a string or `{"content": ...}`.
fn special_token(cfg: &Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` of which `default` is used.
fn template_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
        Value::Array(a) => a.first().and_then(|x| first_id(Some(x))),
        _ => None,
    }
}

fn read_json_opt(path: &Path) -> Result<Option<Value>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let s = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    serde_json::from_str(&s)
        .map(Some)
        .map_err(|e| file_err(path, format!("invalid JSON: {e}")))
}

/// Writes pretty JSON to a temporary sibling, then renames it over `path`.
pub(crate) fn write_json_atomic(path: &Path, v: &Value) -> Result<(), TokenizerError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| file_err(path, e))?;
    write_atomic(path, s.as_bytes()).map_err(|e| file_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("post-tok-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir is writable");
        d
    }

    #[test]
    fn char_ids_follow_the_brief() -> Result<(), TokenizerError> {
        let t = Tokenizer::builtin_char();
        // The brief counts 19 symbols after the letters, but its list (followed here, in order)
        // has 20 including the newline: 60 ids used, 4 reserved.
        assert_eq!(CHARS.chars().count(), 56);
        assert_eq!(t.encode("0")?, vec![4]);
        assert_eq!(t.encode("a")?, vec![14]);
        assert_eq!(t.encode(" ")?, vec![40]);
        assert_eq!(t.encode("\n")?, vec![59]);
        assert_eq!(t.encode("A!")?, vec![CHAR_UNK, CHAR_UNK]);
        let s = "12+34=46\n#### 46";
        assert_eq!(t.decode(&t.encode(s)?)?, s);
        // Special and reserved ids decode to nothing.
        assert_eq!(t.decode(&[1, 14, 2, 0, 63, 3])?, "a");
        assert_eq!(
            (t.eos_id(), t.pad_id(), t.bos_id(), t.vocab_size()),
            (2, 0, Some(1), 64)
        );
        Ok(())
    }

    #[test]
    fn char_tokenizer_saves_as_an_equivalent_hf_tokenizer() -> Result<(), TokenizerError> {
        let dir = tempdir("char");
        Tokenizer::builtin_char().save(&dir)?;
        let hf = Tokenizer::from_dir(&dir)?;
        let c = Tokenizer::builtin_char();
        let text = format!("{CHARS}A{CHARS}?! x");
        assert_eq!(hf.encode(&text)?, c.encode(&text)?);
        let ids: Vec<u32> = (0..64).collect();
        assert_eq!(hf.decode(&ids)?, c.decode(&ids)?);
        assert_eq!((hf.eos_id(), hf.pad_id(), hf.bos_id()), (2, 0, Some(1)));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn chat_template_renders_and_errors_clearly() -> Result<(), TokenizerError> {
        let dir = tempdir("chat");
        Tokenizer::builtin_char().save(&dir)?;
        let cfg_path = dir.join("tokenizer_config.json");
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("just written"))
                .expect("valid JSON");
        // The shape of Qwen2's template: loop, conditionals, string methods, generation prompt.
        cfg["chat_template"] = json!(
            "{% for m in messages %}{% if m.role == 'system' %}[s]{{ m.content.strip() }}\n\
             {% else %}[{{ m.role }}]{{ m.content }}{{ eos_token }}\n{% endif %}{% endfor %}\
             {% if add_generation_prompt %}[assistant]{% endif %}"
        );
        write_json_atomic(&cfg_path, &cfg)?;
        let t = Tokenizer::from_dir(&dir)?;
        let msgs = vec![
            ChatMessage {
                role: "system".into(),
                content: " be brief ".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "1+1".into(),
            },
        ];
        assert_eq!(
            t.apply_chat_template(&msgs, true)?,
            "[s]be brief\n[user]1+1<eos>\n[assistant]"
        );
        cfg["chat_template"] = json!("{{ raise_exception('no system role') }}");
        write_json_atomic(&cfg_path, &cfg)?;
        let t = Tokenizer::from_dir(&dir)?;
        let err = t
            .apply_chat_template(&msgs, false)
            .expect_err("template raises");
        assert!(err.to_string().contains("no system role"), "{err}");
        cfg["chat_template"] = json!("{{ strftime_now('%Y') }}");
        write_json_atomic(&cfg_path, &cfg)?;
        let t = Tokenizer::from_dir(&dir)?;
        assert!(t.apply_chat_template(&msgs, false).is_err());
        assert!(
            Tokenizer::builtin_char()
                .apply_chat_template(&msgs, false)
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn missing_or_bad_files_are_named() {
        let dir = tempdir("bad");
        let err = Tokenizer::from_dir(&dir).expect_err("no tokenizer.json");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
        std::fs::write(dir.join("tokenizer.json"), "{not json").expect("writable");
        let err = Tokenizer::from_dir(&dir).expect_err("bad json");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
