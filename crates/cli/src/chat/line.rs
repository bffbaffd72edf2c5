//! Line mode: typed lines from stdin, one line per message or status on
//! stdout (the format is documented in [`super`]).

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use super::format::{event_line, message_line, status_line};
use super::session::{Action, Frontend};
use super::state::{ChatState, Output};

/// Writes outputs to stdout, one line each.
pub struct Lines<W: Write> {
    out: W,
}

impl<W: Write> Lines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

/// The line of an output.
pub fn render(out: &Output) -> String {
    match out {
        Output::Message(shown) => message_line(shown),
        // A status line, so that message lines stay once per seq.
        Output::Changed { what, shown } => status_line(&format!("{what}: {}", message_line(shown))),
        Output::Event(e) => event_line(e),
        Output::Status(s) => status_line(s),
    }
}

impl<W: Write> Frontend for Lines<W> {
    type Input = String;
    const TICK: Option<Duration> = None;

    fn show(&mut self, _state: &ChatState, out: Vec<Output>) -> anyhow::Result<()> {
        for o in &out {
            writeln!(self.out, "{}", render(o)).context("writing to stdout")?;
        }
        self.out.flush().context("writing to stdout")
    }

    fn input(&mut self, _state: &ChatState, line: String) -> anyhow::Result<Option<Action>> {
        Ok(Some(Action::Submit(line)))
    }

    fn tick(&mut self, _state: &ChatState) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Reads stdin line by line on a thread of its own (a blocking read would
/// hold up the async runtime); the channel closes at EOF or on a read error.
/// Invalid UTF-8 is replaced, not fatal.
pub fn stdin_lines() -> anyhow::Result<mpsc::UnboundedReceiver<String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("parley-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .context("starting the stdin reader")?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use parley_client::protocol::Message;

    use super::*;

    #[test]
    fn shows_one_line_per_output() {
        let mut lines = Lines::new(Vec::new());
        let state = ChatState::new("alice", None);
        let m = Message {
            room: "general".into(),
            seq: 3,
            from: "bob".into(),
            text: "hi\nthere".into(),
            ts: "2026-11-22T21:00:00.123Z".into(),
            nonce: None,
            ..Default::default()
        };
        lines
            .show(
                &state,
                vec![Output::Status("joined general".into()), Output::message(m)],
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(lines.out).unwrap(),
            "* joined general\n[general] #3 bob: hi\\nthere\n"
        );
    }
}
