//! Reading lines from the terminal without blocking the async runtime.
//!
//! rustyline blocks its thread while the user types, so the editor lives on a blocking thread
//! of its own (tokio's `spawn_blocking`) and the shell talks to it over two channels: requests
//! (read a line with this prompt, remember this history entry) go in, what the user did comes
//! out. The runtime's worker threads stay free for the connection task meanwhile.
//!
//! History is loaded from and saved to an optional file. A missing or unwritable file is not an
//! error: the shell works the same, it just forgets.

use std::path::PathBuf;
use std::sync::mpsc;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tokio::sync::mpsc as async_mpsc;
use tokio::task::JoinHandle;

/// What the user did at the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its newline.
    Line(String),
    /// Ctrl-C: discard the statement being typed.
    Interrupted,
    /// Ctrl-D, or the end of piped input: leave the shell.
    Eof,
    /// The terminal could not be read; the message says why.
    Failed(String),
}

/// A request to the editor thread.
enum Request {
    ReadLine { prompt: String },
    AddHistory(String),
}

/// The handle to the editor thread.
pub struct LineReader {
    requests: mpsc::Sender<Request>,
    inputs: async_mpsc::UnboundedReceiver<Input>,
    worker: JoinHandle<()>,
}

impl LineReader {
    /// Starts the editor thread, loading history from `history` if given and readable.
    pub fn spawn(history: Option<PathBuf>) -> LineReader {
        let (requests, request_rx) = mpsc::channel();
        let (input_tx, inputs) = async_mpsc::unbounded_channel();
        let worker = tokio::task::spawn_blocking(move || edit(history, request_rx, input_tx));
        LineReader {
            requests,
            inputs,
            worker,
        }
    }

    /// Shows `prompt` and waits for the user's next line or key.
    pub async fn read_line(&mut self, prompt: &str) -> Input {
        let request = Request::ReadLine {
            prompt: prompt.to_string(),
        };
        if self.requests.send(request).is_err() {
            return Input::Failed("the line editor stopped".to_string());
        }
        self.inputs
            .recv()
            .await
            .unwrap_or_else(|| Input::Failed("the line editor stopped".to_string()))
    }

    /// Remembers `entry` in the history, for the arrow keys now and the history file later.
    pub fn add_history(&self, entry: String) {
        // A stopped editor has no history to add to; the next read reports why it stopped.
        let _ = self.requests.send(Request::AddHistory(entry));
    }

    /// Stops the editor thread and waits for it to save the history.
    pub async fn close(self) {
        drop(self.requests);
        // The thread only ends by returning; a panic in it has already been reported.
        let _ = self.worker.await;
    }
}

/// The editor thread's loop: serves requests until the shell drops its sender.
fn edit(
    history: Option<PathBuf>,
    requests: mpsc::Receiver<Request>,
    inputs: async_mpsc::UnboundedSender<Input>,
) {
    let mut editor = match DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            let _ = inputs.send(Input::Failed(format!("cannot open the terminal: {error}")));
            return;
        }
    };
    if let Some(path) = &history {
        // No history yet, or an unreadable file: start empty.
        let _ = editor.load_history(path);
    }
    while let Ok(request) = requests.recv() {
        match request {
            Request::ReadLine { prompt } => {
                let input = read(&mut editor, &prompt);
                if inputs.send(input).is_err() {
                    break;
                }
            }
            Request::AddHistory(entry) => {
                let _ = editor.add_history_entry(entry);
            }
        }
    }
    if let Some(path) = &history {
        // An unwritable home directory only costs the history.
        let _ = editor.save_history(path);
    }
}

/// Reads one line, retrying when a terminal resize interrupts the read.
fn read(editor: &mut DefaultEditor, prompt: &str) -> Input {
    loop {
        return match editor.readline(prompt) {
            Ok(line) => Input::Line(line),
            Err(ReadlineError::Interrupted) => Input::Interrupted,
            Err(ReadlineError::Eof) => Input::Eof,
            Err(ReadlineError::WindowResized) => continue,
            Err(error) => Input::Failed(error.to_string()),
        };
    }
}
