//! `post lsp`: the language server, speaking LSP over stdin/stdout (see the post-lsp crate).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Accepted for editors that pass it; stdio is the only transport.
    #[arg(long)]
    pub stdio: bool,
}

pub fn run(_args: Args) -> ExitCode {
    match post_lsp::run_stdio() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("post lsp: {e}");
            ExitCode::FAILURE
        }
    }
}
