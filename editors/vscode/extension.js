// The VS Code client: starts `post lsp` over stdio for .post files.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("post");
  const command = config.get("server.path", "post");
  const serverOptions = {
    run: { command, args: ["lsp"], transport: TransportKind.stdio },
    debug: { command, args: ["lsp"], transport: TransportKind.stdio },
  };
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "post" }],
    initializationOptions: { debounceMs: config.get("server.debounceMs", 100) },
  };
  client = new LanguageClient("post", "post language server", serverOptions, clientOptions);
  context.subscriptions.push(
    vscode.commands.registerCommand("post.restartServer", () => client && client.restart())
  );
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
