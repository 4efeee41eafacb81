//! The server loop: document state, debounced recompilation, request dispatch.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types as lt;
use lt::notification::Notification as _;
use lt::request::Request as _;
use post_compiler::ide::complete::CompletionKind;
use post_compiler::ide::outline::{OutlineItem, OutlineKind};
use post_compiler::ide::tokens::{TOKEN_MODIFIERS, TOKEN_TYPES, TokenType};
use post_compiler::ide::{Analysis, FileId, Location};
use post_compiler::syntax::ast::{BlockKind, DefKind};
use post_compiler::{LineIndex, Span};

use crate::convert::{self, Text};
use crate::overlay::Overlay;
use crate::stdlib_files::{StdlibFiles, cache_root};
use crate::uri;

/// Server settings (from the environment and the client's `initializationOptions`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Quiet time after an edit before diagnostics are recomputed.
    pub debounce: Duration,
    /// Where the standard library's sources are written.
    pub cache_root: PathBuf,
    /// Enables the `post/panic` request, which panics inside a handler (tests of recovery).
    pub test_hooks: bool,
}

impl Config {
    pub fn from_env() -> Config {
        Config {
            debounce: Duration::from_millis(100),
            cache_root: cache_root(),
            test_hooks: std::env::var_os("POST_LSP_TEST_HOOKS").is_some_and(|v| v == "1"),
        }
    }
}

struct Doc {
    text: String,
    index: LineIndex,
    version: i32,
    /// When the text last changed, if diagnostics are not up to date.
    dirty_since: Option<Instant>,
    analysis: Arc<Analysis>,
    /// The file's path on disk ("" for non-file URIs).
    path: String,
}

struct Server {
    conn: Connection,
    config: Config,
    docs: HashMap<String, Doc>,
    /// Open buffers by path, for the overlay file system.
    buffers: HashMap<String, String>,
    stdlib: StdlibFiles,
    shutdown: bool,
}

/// The capabilities announced to the client.
fn capabilities() -> lt::ServerCapabilities {
    lt::ServerCapabilities {
        position_encoding: Some(lt::PositionEncodingKind::UTF16),
        text_document_sync: Some(lt::TextDocumentSyncCapability::Options(
            lt::TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(lt::TextDocumentSyncKind::INCREMENTAL),
                save: Some(lt::TextDocumentSyncSaveOptions::Supported(true)),
                ..Default::default()
            },
        )),
        hover_provider: Some(lt::HoverProviderCapability::Simple(true)),
        completion_provider: Some(lt::CompletionOptions {
            trigger_characters: Some(vec![".".into(), "(".into(), ",".into(), "{".into()]),
            ..Default::default()
        }),
        signature_help_provider: Some(lt::SignatureHelpOptions {
            trigger_characters: Some(vec!["(".into(), ",".into()]),
            retrigger_characters: Some(vec!["=".into()]),
            ..Default::default()
        }),
        definition_provider: Some(lt::OneOf::Left(true)),
        references_provider: Some(lt::OneOf::Left(true)),
        rename_provider: Some(lt::OneOf::Right(lt::RenameOptions {
            prepare_provider: Some(true),
            work_done_progress_options: Default::default(),
        })),
        document_symbol_provider: Some(lt::OneOf::Left(true)),
        document_formatting_provider: Some(lt::OneOf::Left(true)),
        code_action_provider: Some(lt::CodeActionProviderCapability::Simple(true)),
        semantic_tokens_provider: Some(
            lt::SemanticTokensServerCapabilities::SemanticTokensOptions(
                lt::SemanticTokensOptions {
                    legend: lt::SemanticTokensLegend {
                        token_types: TOKEN_TYPES
                            .iter()
                            .map(|t| lt::SemanticTokenType::new(t))
                            .collect(),
                        token_modifiers: TOKEN_MODIFIERS
                            .iter()
                            .map(|t| lt::SemanticTokenModifier::new(t))
                            .collect(),
                    },
                    full: Some(lt::SemanticTokensFullOptions::Bool(true)),
                    range: None,
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

/// Run the server on a connection until `exit`.
pub fn serve(conn: Connection, mut config: Config) -> Result<(), String> {
    let caps = serde_json::to_value(capabilities()).map_err(|e| e.to_string())?;
    let Some(init) = initialize(&conn, caps) else {
        return Ok(());
    };
    // `initializationOptions.debounceMs` tunes the quiet time (0: diagnostics right away).
    if let Some(ms) = init
        .get("initializationOptions")
        .and_then(|o| o.get("debounceMs"))
        .and_then(|v| v.as_u64())
    {
        config.debounce = Duration::from_millis(ms);
    }
    let stdlib = StdlibFiles::new(&config.cache_root);
    let mut server = Server {
        conn,
        config,
        docs: HashMap::new(),
        buffers: HashMap::new(),
        stdlib,
        shutdown: false,
    };
    server.run()
}

/// The `initialize` handshake, tolerant of anything before it: other requests are refused
/// (`ServerNotInitialized`), notifications and malformed input ignored. `None` when the client
/// leaves (or says `exit`) first. `initialized` is not waited for: it is an ordinary
/// notification of the main loop, so a client that sends something else first is still served.
fn initialize(conn: &Connection, caps: serde_json::Value) -> Option<serde_json::Value> {
    loop {
        match conn.receiver.recv().ok()? {
            Message::Request(req) if req.method == lt::request::Initialize::METHOD => {
                let result = serde_json::json!({ "capabilities": caps });
                let _ = conn.sender.send(Response::new_ok(req.id, result).into());
                return Some(req.params);
            }
            Message::Request(req) => {
                let _ = conn.sender.send(
                    Response::new_err(
                        req.id,
                        ErrorCode::ServerNotInitialized as i32,
                        "the server is not initialized yet".into(),
                    )
                    .into(),
                );
            }
            Message::Notification(n) if n.method == lt::notification::Exit::METHOD => return None,
            Message::Notification(_) | Message::Response(_) => {}
        }
    }
}

impl Server {
    fn run(&mut self) -> Result<(), String> {
        loop {
            let next = self
                .docs
                .values()
                .filter_map(|d| d.dirty_since)
                .min()
                .map(|t| (t + self.config.debounce).saturating_duration_since(Instant::now()));
            let msg = match next {
                Some(wait) => match self.conn.receiver.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(e) if e.is_timeout() => {
                        self.refresh_due();
                        continue;
                    }
                    Err(_) => return Ok(()),
                },
                None => match self.conn.receiver.recv() {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                },
            };
            match msg {
                Message::Request(req) => {
                    if req.method == lt::request::Shutdown::METHOD {
                        self.shutdown = true;
                        self.send(Response::new_ok(req.id, ()).into());
                        continue;
                    }
                    if self.shutdown {
                        self.send(
                            Response::new_err(
                                req.id,
                                ErrorCode::InvalidRequest as i32,
                                "the server is shutting down".into(),
                            )
                            .into(),
                        );
                        continue;
                    }
                    self.request(req);
                }
                Message::Notification(n) => {
                    if n.method == lt::notification::Exit::METHOD {
                        return Ok(());
                    }
                    if n.method == crate::transport::BAD_MESSAGE {
                        self.bad_message(&n.params);
                        continue;
                    }
                    self.notification(n);
                }
                Message::Response(_) => {}
            }
        }
    }

    /// Input the transport could not use: logged, and answered when it carried a request id
    /// (the client would otherwise wait for that answer forever).
    fn bad_message(&self, params: &serde_json::Value) {
        let why = params["message"].as_str().unwrap_or("malformed message");
        self.log(
            lt::MessageType::WARNING,
            format!("post lsp: ignored malformed input: {why}"),
        );
        let id: Option<lsp_server::RequestId> = match &params["id"] {
            serde_json::Value::Number(n) => n
                .as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .map(Into::into),
            serde_json::Value::String(s) => Some(s.clone().into()),
            _ => None,
        };
        if let Some(id) = id {
            self.send(
                Response::new_err(id, ErrorCode::InvalidRequest as i32, why.to_string()).into(),
            );
        }
    }

    fn send(&self, m: Message) {
        // A closed channel means the client is gone; the loop ends at the next receive.
        let _ = self.conn.sender.send(m);
    }

    fn log(&self, typ: lt::MessageType, message: String) {
        let params = lt::LogMessageParams { typ, message };
        self.send(Notification::new(lt::notification::LogMessage::METHOD.into(), params).into());
    }

    // ---------------------------------------------------------------------------------------
    // Documents.

    fn notification(&mut self, n: Notification) {
        let method = n.method.clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| self.handle_notification(n)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.log(lt::MessageType::WARNING, format!("{method}: {e}")),
            Err(p) => self.log(
                lt::MessageType::ERROR,
                format!("post lsp: internal error in {method}: {}", panic_text(&p)),
            ),
        }
    }

    fn handle_notification(&mut self, n: Notification) -> Result<(), String> {
        use lt::notification as N;
        match n.method.as_str() {
            N::DidOpenTextDocument::METHOD => {
                let p: lt::DidOpenTextDocumentParams = parse(n.params)?;
                let d = p.text_document;
                self.open(d.uri.as_str(), d.text, d.version);
            }
            N::DidChangeTextDocument::METHOD => {
                let p: lt::DidChangeTextDocumentParams = parse(n.params)?;
                let key = p.text_document.uri.as_str().to_string();
                let doc = self
                    .docs
                    .get_mut(&key)
                    .ok_or_else(|| format!("change to a document that is not open: {key}"))?;
                for c in p.content_changes {
                    match c.range {
                        Some(r) => {
                            let span = Text {
                                text: &doc.text,
                                index: &doc.index,
                            }
                            .span(r);
                            doc.text
                                .replace_range(span.start as usize..span.end as usize, &c.text);
                        }
                        None => doc.text = c.text,
                    }
                    doc.index = LineIndex::new(&doc.text);
                }
                doc.version = p.text_document.version;
                doc.dirty_since = Some(Instant::now());
                if !doc.path.is_empty() {
                    self.buffers.insert(doc.path.clone(), doc.text.clone());
                }
            }
            N::DidCloseTextDocument::METHOD => {
                let p: lt::DidCloseTextDocumentParams = parse(n.params)?;
                if let Some(d) = self.docs.remove(p.text_document.uri.as_str()) {
                    self.buffers.remove(&d.path);
                }
                let params = lt::PublishDiagnosticsParams::new(p.text_document.uri, vec![], None);
                self.send(Notification::new(N::PublishDiagnostics::METHOD.into(), params).into());
            }
            // Saving changes nothing the server does not already know; other buffers whose
            // diagnostics depend on files on disk are rechecked.
            N::DidSaveTextDocument::METHOD => {
                let now = Instant::now();
                for d in self.docs.values_mut() {
                    d.dirty_since.get_or_insert(now);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn open(&mut self, key: &str, text: String, version: i32) {
        let path = uri::to_path(key).unwrap_or_default();
        if !path.is_empty() {
            self.buffers.insert(path.clone(), text.clone());
        }
        let index = LineIndex::new(&text);
        // Replaced by `refresh` below, which parses once for diagnostics and index.
        let analysis = Arc::new(Analysis::new("", &path));
        self.docs.insert(
            key.to_string(),
            Doc {
                text,
                index,
                version,
                dirty_since: None,
                analysis,
                path,
            },
        );
        self.refresh(key);
    }

    fn refresh_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .docs
            .iter()
            .filter(|(_, d)| {
                d.dirty_since
                    .is_some_and(|t| t + self.config.debounce <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.refresh(&k);
        }
    }

    /// Recompile a buffer: new analysis, diagnostics published.
    fn refresh(&mut self, key: &str) {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.compile(key)));
        if let Err(p) = outcome {
            if let Some(d) = self.docs.get_mut(key) {
                d.dirty_since = None;
            }
            self.log(
                lt::MessageType::ERROR,
                format!(
                    "post lsp: internal error while checking {key}: {}",
                    panic_text(&p)
                ),
            );
        }
    }

    fn compile(&mut self, key: &str) {
        let Some(doc) = self.docs.get(key) else {
            return;
        };
        let (text, path, version) = (doc.text.clone(), doc.path.clone(), doc.version);
        let name = if path.is_empty() {
            key.to_string()
        } else {
            path.clone()
        };
        // One parse feeds both the checker (exactly `compile_source`'s diagnostics) and the index.
        let parsed = post_compiler::syntax::parse(&text);
        let diagnostics = {
            let fs = Overlay {
                buffers: &self.buffers,
            };
            post_compiler::ide::diagnostics_of(&fs, &name, &parsed)
        };
        let Some(doc) = self.docs.get_mut(key) else {
            return;
        };
        doc.dirty_since = None;
        if let Ok(uri) = key.parse::<lt::Uri>() {
            let t = Text {
                text: &doc.text,
                index: &doc.index,
            };
            let diagnostics = diagnostics
                .iter()
                .map(|d| convert::diagnostic(&t, &uri, d))
                .collect();
            let params = lt::PublishDiagnosticsParams::new(uri, diagnostics, Some(version));
            self.send(
                Notification::new(lt::notification::PublishDiagnostics::METHOD.into(), params)
                    .into(),
            );
        }
        // Indexed after publishing: diagnostics do not wait for it.
        let analysis = Arc::new(Analysis::from_file(&text, &path, parsed.file));
        if let Some(doc) = self.docs.get_mut(key) {
            doc.analysis = analysis;
        }
    }

    // ---------------------------------------------------------------------------------------
    // Requests.

    fn request(&mut self, req: Request) {
        let id = req.id.clone();
        let method = req.method.clone();
        // Answer from up-to-date state.
        let dirty: Vec<String> = self
            .docs
            .iter()
            .filter(|(_, d)| d.dirty_since.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for k in dirty {
            self.refresh(&k);
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| self.handle_request(req)));
        let response = match outcome {
            Ok(Ok(value)) => Response::new_ok(id, value),
            Ok(Err(e)) => Response::new_err(id, e.code as i32, e.message),
            Err(p) => {
                let text = panic_text(&p);
                self.log(
                    lt::MessageType::ERROR,
                    format!("post lsp: internal error in {method}: {text}"),
                );
                Response::new_err(
                    id,
                    ErrorCode::InternalError as i32,
                    format!("internal error in {method}: {text}"),
                )
            }
        };
        self.send(response.into());
    }

    fn doc(&self, uri: &lt::Uri) -> Result<&Doc, ReqError> {
        self.docs.get(uri.as_str()).ok_or_else(|| ReqError {
            code: ErrorCode::InvalidParams,
            message: format!("document not open: {}", uri.as_str()),
        })
    }

    fn handle_request(&mut self, req: Request) -> Result<serde_json::Value, ReqError> {
        use lt::request as R;
        let v = match req.method.as_str() {
            R::HoverRequest::METHOD => {
                let p: lt::HoverParams = parse(req.params)?;
                let pp = p.text_document_position_params;
                let doc = self.doc(&pp.text_document.uri)?;
                let t = text(doc);
                let hover = doc
                    .analysis
                    .hover(t.offset(pp.position))
                    .map(|h| lt::Hover {
                        contents: lt::HoverContents::Markup(lt::MarkupContent {
                            kind: lt::MarkupKind::Markdown,
                            value: h.markdown,
                        }),
                        range: Some(t.range(h.span)),
                    });
                json(hover)
            }
            R::Completion::METHOD => {
                let p: lt::CompletionParams = parse(req.params)?;
                let pp = p.text_document_position;
                let doc = self.doc(&pp.text_document.uri)?;
                let t = text(doc);
                let fs = Overlay {
                    buffers: &self.buffers,
                };
                let items: Vec<lt::CompletionItem> = doc
                    .analysis
                    .completions(&fs, t.offset(pp.position))
                    .into_iter()
                    .map(|c| completion_item(&t, c))
                    .collect();
                json(lt::CompletionResponse::List(lt::CompletionList {
                    is_incomplete: false,
                    items,
                }))
            }
            R::SignatureHelpRequest::METHOD => {
                let p: lt::SignatureHelpParams = parse(req.params)?;
                let pp = p.text_document_position_params;
                let doc = self.doc(&pp.text_document.uri)?;
                let t = text(doc);
                let help = doc.analysis.signature_help(t.offset(pp.position)).map(|s| {
                    let utf16 =
                        |b: usize| s.label.get(..b).map_or(0, |x| x.encode_utf16().count()) as u32;
                    let params = s
                        .params
                        .iter()
                        .zip(&s.param_docs)
                        .map(|(&(a, b), d)| lt::ParameterInformation {
                            label: lt::ParameterLabel::LabelOffsets([utf16(a), utf16(b)]),
                            documentation: (!d.is_empty())
                                .then(|| lt::Documentation::String(d.clone())),
                        })
                        .collect();
                    lt::SignatureHelp {
                        signatures: vec![lt::SignatureInformation {
                            label: s.label.clone(),
                            documentation: Some(lt::Documentation::MarkupContent(
                                lt::MarkupContent {
                                    kind: lt::MarkupKind::Markdown,
                                    value: s.doc.clone(),
                                },
                            )),
                            parameters: Some(params),
                            active_parameter: s.active.map(|a| a as u32),
                        }],
                        active_signature: Some(0),
                        active_parameter: s.active.map(|a| a as u32),
                    }
                });
                json(help)
            }
            R::GotoDefinition::METHOD => {
                let p: lt::GotoDefinitionParams = parse(req.params)?;
                let pp = p.text_document_position_params;
                let uri = pp.text_document.uri.clone();
                let doc = self.doc(&uri)?;
                let offset = text(doc).offset(pp.position);
                let loc = doc.analysis.definition(offset);
                let loc = match loc {
                    Some(l) => Some(self.location(&uri, l)?),
                    None => None,
                };
                json(loc.map(lt::GotoDefinitionResponse::Scalar))
            }
            R::References::METHOD => {
                let p: lt::ReferenceParams = parse(req.params)?;
                let pp = p.text_document_position;
                let uri = pp.text_document.uri.clone();
                let doc = self.doc(&uri)?;
                let offset = text(doc).offset(pp.position);
                let refs = doc
                    .analysis
                    .references(offset, p.context.include_declaration);
                let mut out = Vec::new();
                for l in refs {
                    out.push(self.location(&uri, l)?);
                }
                json(out)
            }
            R::PrepareRenameRequest::METHOD => {
                let p: lt::TextDocumentPositionParams = parse(req.params)?;
                let doc = self.doc(&p.text_document.uri)?;
                let t = text(doc);
                let span = doc
                    .analysis
                    .prepare_rename(t.offset(p.position))
                    .map_err(failed)?;
                json(lt::PrepareRenameResponse::Range(t.range(span)))
            }
            R::Rename::METHOD => {
                let p: lt::RenameParams = parse(req.params)?;
                let pp = p.text_document_position;
                let doc = self.doc(&pp.text_document.uri)?;
                let t = text(doc);
                let spans = doc
                    .analysis
                    .rename(t.offset(pp.position), &p.new_name)
                    .map_err(failed)?;
                let edits: Vec<lt::TextEdit> = spans
                    .into_iter()
                    .map(|s| lt::TextEdit::new(t.range(s), p.new_name.clone()))
                    .collect();
                // A `WorkspaceEdit` keyed by URI, written as JSON: `lsp_types::Uri` is not a
                // sound hash-map key type (clippy::mutable_key_type).
                serde_json::json!({ "changes": { pp.text_document.uri.as_str(): edits } })
            }
            R::DocumentSymbolRequest::METHOD => {
                let p: lt::DocumentSymbolParams = parse(req.params)?;
                let doc = self.doc(&p.text_document.uri)?;
                let t = text(doc);
                let symbols: Vec<lt::DocumentSymbol> = doc
                    .analysis
                    .outline()
                    .iter()
                    .map(|o| document_symbol(&t, o))
                    .collect();
                json(lt::DocumentSymbolResponse::Nested(symbols))
            }
            R::CodeActionRequest::METHOD => {
                let p: lt::CodeActionParams = parse(req.params)?;
                json(crate::convert::quick_fixes(
                    &p.text_document.uri,
                    &p.context.diagnostics,
                ))
            }
            R::Formatting::METHOD => {
                let p: lt::DocumentFormattingParams = parse(req.params)?;
                let doc = self.doc(&p.text_document.uri)?;
                match post_compiler::format(&doc.text) {
                    Ok(formatted) if formatted == doc.text => json(Vec::<lt::TextEdit>::new()),
                    Ok(formatted) => {
                        let t = text(doc);
                        let all = Span::new(0, doc.text.len());
                        json(vec![lt::TextEdit::new(t.range(all), formatted)])
                    }
                    Err(diags) => {
                        return Err(failed(format!(
                            "cannot format: the file has {} syntax error{}",
                            diags.len(),
                            if diags.len() == 1 { "" } else { "s" }
                        )));
                    }
                }
            }
            R::SemanticTokensFullRequest::METHOD => {
                let p: lt::SemanticTokensParams = parse(req.params)?;
                let doc = self.doc(&p.text_document.uri)?;
                json(lt::SemanticTokensResult::Tokens(semantic_tokens(doc)))
            }
            "post/panic" if self.config.test_hooks => {
                panic!("deliberate panic requested by post/panic (POST_LSP_TEST_HOOKS=1)")
            }
            other => {
                return Err(ReqError {
                    code: ErrorCode::MethodNotFound,
                    message: format!("unsupported request {other}"),
                });
            }
        };
        Ok(v)
    }

    /// An LSP location: in the current buffer, or in a standard library file.
    fn location(&mut self, current: &lt::Uri, l: Location) -> Result<lt::Location, ReqError> {
        match l.file {
            FileId::Main => {
                let doc = self.doc(current)?;
                Ok(lt::Location::new(current.clone(), text(doc).range(l.span)))
            }
            FileId::Std(i) => {
                let path = self.stdlib.path(i).map_err(failed)?;
                let path = path.to_string_lossy().to_string();
                let src = l.file.std_source().unwrap_or("");
                let index = LineIndex::new(src);
                let t = Text {
                    text: src,
                    index: &index,
                };
                let uri: lt::Uri = uri::from_path(&path)
                    .parse()
                    .map_err(|_| failed(format!("cannot make a URI of {path}")))?;
                Ok(lt::Location::new(uri, t.range(l.span)))
            }
        }
    }
}

struct ReqError {
    code: ErrorCode,
    message: String,
}

fn failed(message: String) -> ReqError {
    ReqError {
        code: ErrorCode::RequestFailed,
        message,
    }
}

impl From<String> for ReqError {
    fn from(message: String) -> Self {
        ReqError {
            code: ErrorCode::InvalidParams,
            message,
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("invalid parameters: {e}"))
}

fn json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn text(doc: &Doc) -> Text<'_> {
    Text {
        text: &doc.text,
        index: &doc.index,
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

fn completion_item(t: &Text, c: post_compiler::ide::complete::Completion) -> lt::CompletionItem {
    use lt::CompletionItemKind as K;
    let kind = match c.kind {
        CompletionKind::Keyword => K::KEYWORD,
        CompletionKind::Setting => K::PROPERTY,
        CompletionKind::Param => K::VARIABLE,
        CompletionKind::Field => K::FIELD,
        CompletionKind::Def(_) => K::VARIABLE,
        CompletionKind::Stage => K::MODULE,
        CompletionKind::Builtin => K::FUNCTION,
        CompletionKind::Transform => K::METHOD,
        CompletionKind::Module => K::MODULE,
        CompletionKind::Unit => K::UNIT,
        CompletionKind::Choice => K::ENUM_MEMBER,
        CompletionKind::Type => K::TYPE_PARAMETER,
    };
    let kind = match c.kind {
        CompletionKind::Def(d) => {
            use post_compiler::ide::complete::DefKindOrd as D;
            match d {
                D::Objective | D::Reward => K::FUNCTION,
                D::Rollout => K::CLASS,
                D::Model | D::Data => K::VARIABLE,
                D::Const => K::CONSTANT,
            }
        }
        _ => kind,
    };
    let new_text = c.insert.clone().unwrap_or_else(|| c.label.clone());
    lt::CompletionItem {
        label: c.label.clone(),
        kind: Some(kind),
        detail: c.detail,
        documentation: c.doc.map(|d| {
            lt::Documentation::MarkupContent(lt::MarkupContent {
                kind: lt::MarkupKind::Markdown,
                value: d,
            })
        }),
        sort_text: Some(format!("{}{}", c.rank, c.label)),
        filter_text: Some(c.label.trim_end_matches(" =").to_string()),
        text_edit: Some(lt::CompletionTextEdit::Edit(lt::TextEdit::new(
            t.range(c.replace),
            new_text,
        ))),
        additional_text_edits: c
            .import
            .map(|(span, text)| vec![lt::TextEdit::new(t.range(span), text)]),
        ..Default::default()
    }
}

#[allow(deprecated)] // `DocumentSymbol::deprecated` must still be written.
fn document_symbol(t: &Text, o: &OutlineItem) -> lt::DocumentSymbol {
    use lt::SymbolKind as S;
    let kind = match o.kind {
        OutlineKind::Import => S::NAMESPACE,
        OutlineKind::Experiment => S::MODULE,
        OutlineKind::Stage(BlockKind::Analysis) => S::EVENT,
        OutlineKind::Stage(_) => S::CLASS,
        OutlineKind::Eval => S::EVENT,
        OutlineKind::Def(DefKind::Objective | DefKind::Reward) => S::FUNCTION,
        OutlineKind::Def(DefKind::Rollout) => S::OBJECT,
        OutlineKind::Def(DefKind::Const) => S::CONSTANT,
        OutlineKind::Def(_) => S::VARIABLE,
        OutlineKind::Setting => S::PROPERTY,
    };
    let children: Vec<lt::DocumentSymbol> =
        o.children.iter().map(|c| document_symbol(t, c)).collect();
    lt::DocumentSymbol {
        name: if o.name.is_empty() {
            "?".into()
        } else {
            o.name.clone()
        },
        detail: o.detail.clone(),
        kind,
        tags: None,
        deprecated: None,
        range: t.range(o.span),
        selection_range: t.range(o.selection),
        children: (!children.is_empty()).then_some(children),
    }
}

fn semantic_tokens(doc: &Doc) -> lt::SemanticTokens {
    let t = text(doc);
    let mut data = Vec::new();
    let (mut line, mut col) = (0u32, 0u32);
    for tok in doc.analysis.semantic_tokens() {
        let start = t.position(tok.span.start);
        let end = t.position(tok.span.end);
        // Tokens never span lines (comments and strings end at a newline); guard anyway.
        if end.line != start.line || end.character <= start.character {
            continue;
        }
        let delta_line = start.line - line;
        let delta_start = if delta_line == 0 {
            start.character - col
        } else {
            start.character
        };
        data.push(lt::SemanticToken {
            delta_line,
            delta_start,
            length: end.character - start.character,
            token_type: token_type_index(tok.ty),
            token_modifiers_bitset: tok.modifiers,
        });
        line = start.line;
        col = start.character;
    }
    lt::SemanticTokens {
        result_id: None,
        data,
    }
}

fn token_type_index(t: TokenType) -> u32 {
    match t {
        TokenType::Keyword => 0,
        TokenType::Comment => 1,
        TokenType::String => 2,
        TokenType::Number => 3,
        TokenType::Operator => 4,
        TokenType::Function => 5,
        TokenType::Variable => 6,
        TokenType::Parameter => 7,
        TokenType::Property => 8,
        TokenType::Type => 9,
        TokenType::Namespace => 10,
        TokenType::EnumMember => 11,
    }
}
