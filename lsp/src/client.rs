//! A minimal LSP client over a child process's stdio: what the end-to-end tests and
//! `post bench lsp` use to drive a real `post lsp`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Client {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    next_id: i64,
    /// Notifications received while waiting for something else.
    pub notifications: Vec<Value>,
    pub timeout: Duration,
}

/// Read one `Content-Length` framed message.
fn read_message(r: &mut impl BufRead) -> Option<Value> {
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length:") {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let mut buf = vec![0u8; len?];
    r.read_exact(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

impl Client {
    /// Start the server and complete the `initialize` handshake.
    pub fn spawn(mut cmd: Command, init_options: Value) -> Result<Client, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            while let Some(m) = read_message(&mut r) {
                if tx.send(m).is_err() {
                    break;
                }
            }
        });
        let mut c = Client {
            child,
            stdin,
            rx,
            next_id: 1,
            notifications: Vec::new(),
            timeout: Duration::from_secs(30),
        };
        let init = c.request(
            "initialize",
            json!({ "processId": null, "rootUri": null, "capabilities": {}, "initializationOptions": init_options }),
        )?;
        if init.get("error").is_some() {
            return Err(format!("initialize failed: {init}"));
        }
        c.notify("initialized", json!({}))?;
        Ok(c)
    }

    pub fn send(&mut self, msg: &Value) -> Result<(), String> {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{}", body.len(), body)
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("cannot write to the server: {e}"))
    }

    /// Write raw bytes to the server, framing and all (tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stdin
            .write_all(bytes)
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("cannot write to the server: {e}"))
    }

    pub fn notify(&mut self, method: &str, params: Value) -> Result<(), String> {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
    }

    fn recv(&mut self, deadline: Instant) -> Result<Value, String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait) {
            Ok(m) => Ok(m),
            Err(RecvTimeoutError::Timeout) => Err("timed out waiting for the server".into()),
            Err(RecvTimeoutError::Disconnected) => Err("the server closed its output".into()),
        }
    }

    /// Send a request and wait for its response (the whole message: `result` or `error`).
    pub fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let m = self.recv(deadline)?;
            if m.get("id") == Some(&json!(id)) && m.get("method").is_none() {
                return Ok(m);
            }
            if m.get("method").is_some() && m.get("id").is_none() {
                self.notifications.push(m);
            }
        }
    }

    /// Wait for the response to request `id` (one sent with [`Client::send_raw`]).
    pub fn wait_for_response(&mut self, id: i64) -> Result<Value, String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let m = self.recv(deadline)?;
            if m.get("id") == Some(&json!(id)) && m.get("method").is_none() {
                return Ok(m);
            }
            if m.get("method").is_some() && m.get("id").is_none() {
                self.notifications.push(m);
            }
        }
    }

    /// Wait for a notification of `method` that satisfies `pred` (earlier ones count too).
    pub fn wait_for(
        &mut self,
        method: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        if let Some(i) = self
            .notifications
            .iter()
            .position(|n| n["method"] == method && pred(&n["params"]))
        {
            return Ok(self.notifications.remove(i));
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let m = self.recv(deadline)?;
            if m["method"] == method && pred(&m["params"]) {
                return Ok(m);
            }
            if m.get("method").is_some() {
                self.notifications.push(m);
            }
        }
    }

    /// `shutdown`, `exit`, and the server's exit status.
    pub fn shutdown(mut self) -> Result<std::process::ExitStatus, String> {
        self.request("shutdown", Value::Null)?;
        self.notify("exit", Value::Null)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(s) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("the server did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // A client dropped early (a failed test) must not leave the server running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
