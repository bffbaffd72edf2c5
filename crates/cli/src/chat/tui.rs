//! The full-screen terminal UI (ratatui + crossterm): a header with the
//! current room, whether it is private, the user's role and its topic; a
//! message pane with UTC timestamps and each message's `#seq` (what
//! `/reply`, `/edit`, `/delete` and `/react` take), where a message that
//! is edited, deleted or reacted to is redrawn in place, and member and
//! topic events are lines of their own with their seq; a room list with
//! unread messages and mentions; a status bar (user, connection state,
//! room, who is typing) and an input line.
//!
//! Keys: Enter sends, ←/→/Home/End/Backspace/Delete edit (Ctrl-A, Ctrl-E,
//! Ctrl-U, Ctrl-W too), ↑/↓ recall earlier lines, PgUp/PgDn scroll the pane
//! (Esc jumps back to the bottom), Ctrl-C (or Ctrl-D on an empty line) quits.

use std::collections::VecDeque;
use std::io::Stdout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::{Frame, Terminal};
use tokio::sync::mpsc;

use super::format::{clock, escape, quote, reactions, room_traits};
use super::session::{Action, Frontend};
use super::state::{ChatState, Conn, Output, room_label, typing_text};

/// Entries kept in the message pane (the oldest are dropped first).
const PANE_LIMIT: usize = 5000;

/// What the message pane shows, the input line, and how far it is scrolled.
#[derive(Debug, Default)]
pub struct View {
    entries: VecDeque<Output>,
    pub input: InputLine,
    /// Rows scrolled up from the bottom.
    scroll: usize,
    /// Height of the pane at the last draw (the PgUp/PgDn step).
    page: usize,
}

impl View {
    pub fn push(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                // A changed message is redrawn where it is, if the pane
                // still shows it.
                Output::Changed { what, shown } => {
                    let (room, seq) = (&shown.message.room, shown.message.seq);
                    let at = self.entries.iter().rposition(|e| {
                        matches!(e, Output::Message(s) if s.message.room == *room && s.message.seq == seq)
                    });
                    match at {
                        Some(i) => self.entries[i] = Output::Message(shown),
                        None => self.entries.push_back(Output::Changed { what, shown }),
                    }
                }
                o => self.entries.push_back(o),
            }
        }
        while self.entries.len() > PANE_LIMIT {
            self.entries.pop_front();
        }
    }

    /// Handles a key press.
    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let step = self.page.saturating_sub(1).max(1);
        match key.code {
            KeyCode::Char('c') if ctrl => return Some(Action::Quit),
            KeyCode::Char('d') if ctrl && self.input.is_empty() => return Some(Action::Quit),
            KeyCode::Char('d') if ctrl => self.input.delete(),
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char('u') if ctrl => self.input.kill_to_start(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char(c) if !ctrl => self.input.insert(c),
            KeyCode::Enter => {
                let line = self.input.submit();
                self.scroll = 0;
                return (!line.trim().is_empty()).then_some(Action::Submit(line));
            }
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::Up => self.input.older(),
            KeyCode::Down => self.input.newer(),
            KeyCode::PageUp => self.scroll += step,
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(step),
            KeyCode::Esc => self.scroll = 0,
            _ => {}
        }
        None
    }

    /// Draws the whole screen.
    pub fn render(&mut self, frame: &mut Frame, state: &ChatState, now: Instant) {
        let [head, pane, rooms, bar, input] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        frame.render_widget(
            Paragraph::new(header(state)).style(Style::default().bg(Color::Blue).fg(Color::White)),
            head,
        );
        self.page = pane.height as usize;
        let rows = self.rows(pane.width as usize, pane.height as usize, &state.me);
        frame.render_widget(Paragraph::new(rows), pane);
        frame.render_widget(Paragraph::new(room_list(state)), rooms);

        frame.render_widget(
            Paragraph::new(status_bar(state, now, self.scroll > 0))
                .style(Style::default().bg(Color::DarkGray).fg(Color::White)),
            bar,
        );

        let label = state
            .target
            .as_ref()
            .map_or_else(|| "(no room)".to_string(), |t| t.label());
        let prompt = format!("{label}> ");
        let prompt_width = Span::raw(prompt.as_str()).width();
        let room_for_text = (input.width as usize).saturating_sub(prompt_width + 1);
        let (shown, cursor_x) = input_view(&self.input.chars, self.input.cursor, room_for_text);
        frame.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(prompt, Style::default().add_modifier(Modifier::BOLD)),
                Span::raw(shown),
            ])),
            input,
        );
        let x = input.x as usize
            + (prompt_width + cursor_x).min(input.width.saturating_sub(1) as usize);
        frame.set_cursor_position((x as u16, input.y));
    }

    /// The rows of the pane: the newest entries, wrapped to `width`, with the
    /// scroll offset applied (and clamped to what there is).
    fn rows(&mut self, width: usize, height: usize, me: &str) -> Vec<Line<'static>> {
        if width == 0 || height == 0 {
            return Vec::new();
        }
        let need = height + self.scroll;
        let mut newest_first: Vec<Line<'static>> = Vec::new();
        let mut reached_top = true;
        for entry in self.entries.iter().rev() {
            if newest_first.len() >= need {
                reached_top = false;
                break;
            }
            let lines = wrap(entry_spans(entry, me), width);
            newest_first.extend(lines.into_iter().rev());
        }
        if reached_top {
            self.scroll = self.scroll.min(newest_first.len().saturating_sub(height));
        }
        let end = (self.scroll + height).min(newest_first.len());
        let start = self.scroll.min(end);
        let mut rows: Vec<Line<'static>> = newest_first.drain(start..end).collect();
        rows.reverse();
        rows
    }
}

/// The spans of one pane entry, before wrapping.
fn entry_spans(entry: &Output, me: &str) -> Vec<(String, Style)> {
    match entry {
        Output::Message(shown) | Output::Changed { shown, .. } => {
            let m = &shown.message;
            let mut name = Style::default().fg(name_color(&m.from));
            if m.from == me {
                name = name.add_modifier(Modifier::BOLD);
            }
            let dim = Style::default().fg(Color::DarkGray);
            let mut spans = vec![
                (format!("{} ", clock(&m.ts)), dim),
                // The seq, for /reply, /edit, /delete and /react.
                (format!("#{} ", m.seq), dim),
                (
                    format!("[{}] ", escape(&m.room)),
                    Style::default().fg(Color::Blue),
                ),
                (escape(&m.from), name),
                (": ".into(), Style::default()),
            ];
            if m.deleted {
                spans.push(("[deleted]".into(), dim.add_modifier(Modifier::ITALIC)));
            } else {
                spans.push((escape(&m.text), Style::default()));
            }
            if m.edited.is_some() && !m.deleted {
                spans.push((" (edited)".into(), dim));
            }
            if let Some(q) = &shown.quote {
                spans.push((format!(" (↪ {})", quote(q)), dim));
            }
            if let Some(r) = reactions(m) {
                spans.push((format!(" · {r}"), Style::default().fg(Color::Yellow)));
            }
            spans
        }
        Output::Event(e) => {
            let dim = Style::default().fg(Color::DarkGray);
            vec![
                (format!("{} ", clock(&e.ts)), dim),
                (format!("#{} ", e.seq), dim),
                (
                    format!("[{}] ", escape(&e.room)),
                    Style::default().fg(Color::Blue),
                ),
                (
                    format!("* {}", escape(&e.text)),
                    Style::default()
                        .fg(Color::LightMagenta)
                        .add_modifier(Modifier::ITALIC),
                ),
            ]
        }
        Output::Status(s) => vec![(
            format!("* {}", escape(s)),
            Style::default().fg(Color::Yellow),
        )],
    }
}

/// The header: the room talked in, whether it is private and the user's
/// role there, and its topic (`#plans (private, you are owner) — lunch`).
fn header(state: &ChatState) -> Line<'static> {
    let Some(target) = &state.target else {
        return Line::from(" (no room: /join ROOM, /create NAME or /dm USER)");
    };
    let room = target.room();
    let label = match target {
        super::state::Target::Room(room) => format!("#{room}"),
        dm => dm.label(),
    };
    let mut spans = vec![Span::styled(
        format!(" {}", escape(&label)),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    let traits = room_traits(state.is_private(room), state.my_role(room));
    if !traits.is_empty() {
        spans.push(Span::raw(format!(" ({traits})")));
    }
    if let Some(topic) = state.topic(room) {
        spans.push(Span::raw(" — "));
        spans.push(Span::styled(
            escape(topic),
            Style::default().add_modifier(Modifier::ITALIC),
        ));
    }
    Line::from(spans)
}

/// A stable colour per user name.
fn name_color(name: &str) -> Color {
    const COLORS: [Color; 6] = [
        Color::Cyan,
        Color::Green,
        Color::Magenta,
        Color::LightRed,
        Color::LightBlue,
        Color::LightYellow,
    ];
    let hash = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    COLORS[hash as usize % COLORS.len()]
}

/// The room list: every joined room with its unread messages and mentions
/// (`random 3 (1@)`), the current one bold.
fn room_list(state: &ChatState) -> Line<'static> {
    let current = state.target.as_ref().map(|t| t.label());
    let mut spans = vec![Span::styled(
        "rooms: ",
        Style::default().fg(Color::DarkGray),
    )];
    for (i, (label, unread)) in state.room_list().into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        let mut style = Style::default();
        if current.as_deref() == Some(label.as_str()) {
            style = style.add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
        } else if unread.mentions > 0 {
            style = style.fg(Color::LightRed);
        } else if unread.unread > 0 {
            style = style.fg(Color::White).add_modifier(Modifier::BOLD);
        } else {
            style = style.fg(Color::DarkGray);
        }
        spans.push(Span::styled(escape(&room_label(&label, unread)), style));
    }
    Line::from(spans)
}

/// The status bar: user, connection state, target, typing, scroll state.
fn status_bar(state: &ChatState, now: Instant, scrolled: bool) -> Line<'static> {
    let sep = || Span::raw(" │ ");
    let mut spans = vec![
        Span::styled(
            format!(" {} ", state.me),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        sep(),
    ];
    spans.push(match &state.conn {
        Conn::Connecting => Span::styled("◌ connecting…", Style::default().fg(Color::Yellow)),
        Conn::Online { node } => Span::styled(
            format!("● online ({node})"),
            Style::default().fg(Color::LightGreen),
        ),
        Conn::Reconnecting { reason } => Span::styled(
            format!("◌ reconnecting… ({})", escape(reason)),
            Style::default().fg(Color::LightRed),
        ),
    });
    spans.push(sep());
    match &state.target {
        Some(target) => {
            spans.push(Span::raw(target.label()));
            let typing = state.typing(target.room(), now);
            if let Some(text) = typing_text(&typing) {
                spans.push(sep());
                spans.push(Span::styled(
                    text,
                    Style::default().add_modifier(Modifier::ITALIC),
                ));
            }
        }
        None => spans.push(Span::raw("(no room: /join ROOM)")),
    }
    if state.pending() > 0 {
        spans.push(sep());
        spans.push(Span::raw(format!("sending {}…", state.pending())));
    }
    if scrolled {
        spans.push(sep());
        spans.push(Span::raw("scrolled up (PgDn, Esc)"));
    }
    Line::from(spans)
}

/// The display width of a character (control characters are escaped before
/// they get here).
fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    Span::raw(&*c.encode_utf8(&mut buf)).width()
}

/// Wraps styled text into lines of at most `width` columns (by character;
/// an entry takes at least one line).
pub fn wrap(spans: Vec<(String, Style)>, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut line: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for (text, style) in spans {
        let mut piece = String::new();
        for c in text.chars() {
            let w = char_width(c);
            if used + w > width && used > 0 {
                if !piece.is_empty() {
                    line.push(Span::styled(std::mem::take(&mut piece), style));
                }
                lines.push(Line::from(std::mem::take(&mut line)));
                used = 0;
            }
            piece.push(c);
            used += w;
        }
        if !piece.is_empty() {
            line.push(Span::styled(piece, style));
        }
    }
    lines.push(Line::from(line));
    lines
}

/// The part of the input shown in `width` columns so that the cursor stays
/// visible; returns it and the cursor's column within it.
pub fn input_view(chars: &[char], cursor: usize, width: usize) -> (String, usize) {
    if width == 0 {
        return (String::new(), 0);
    }
    let cursor = cursor.min(chars.len());
    let widths: Vec<usize> = chars.iter().map(|&c| char_width(c)).collect();
    let mut start = 0;
    let mut before: usize = widths[..cursor].iter().sum();
    while before >= width && start < cursor {
        before -= widths[start];
        start += 1;
    }
    let mut shown = String::new();
    let mut used = 0;
    for (&c, &w) in chars[start..].iter().zip(&widths[start..]) {
        if used + w > width {
            break;
        }
        shown.push(c);
        used += w;
    }
    (shown, before)
}

/// The line being typed, with a cursor and a history of sent lines.
#[derive(Debug, Default)]
pub struct InputLine {
    chars: Vec<char>,
    /// Position in `chars` (0..=len).
    cursor: usize,
    history: Vec<String>,
    /// Index into `history` while browsing it with ↑/↓.
    browsing: Option<usize>,
    /// What was typed before browsing began.
    draft: String,
}

impl InputLine {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    fn set(&mut self, text: &str) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
    }

    pub fn insert(&mut self, c: char) {
        if c.is_control() {
            return;
        }
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    pub fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.chars.len();
    }

    pub fn kill_to_start(&mut self) {
        self.chars.drain(..self.cursor);
        self.cursor = 0;
    }

    /// Deletes the word before the cursor (and the spaces after it).
    pub fn delete_word(&mut self) {
        let mut start = self.cursor;
        while start > 0 && self.chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !self.chars[start - 1].is_whitespace() {
            start -= 1;
        }
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Takes the line (Enter), remembering it for ↑.
    pub fn submit(&mut self) -> String {
        let line = self.text();
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
        }
        self.set("");
        self.browsing = None;
        self.draft.clear();
        line
    }

    /// ↑: the previous line sent.
    pub fn older(&mut self) {
        let index = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text();
                self.history.len() - 1
            }
            Some(i) => i.saturating_sub(1),
        };
        self.browsing = Some(index);
        let line = self.history[index].clone();
        self.set(&line);
    }

    /// ↓: the next line sent, then what was being typed.
    pub fn newer(&mut self) {
        let Some(i) = self.browsing else { return };
        if i + 1 < self.history.len() {
            self.browsing = Some(i + 1);
            let line = self.history[i + 1].clone();
            self.set(&line);
        } else {
            self.browsing = None;
            let draft = std::mem::take(&mut self.draft);
            self.set(&draft);
        }
    }
}

/// Puts the terminal back on drop: main screen, cursor shown, cooked mode.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        let guard = TerminalGuard;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen)
            .context("switching to the alternate screen")?;
        // A panic must not leave the terminal in raw mode.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
    let _ = terminal::disable_raw_mode();
}

/// The TUI front end.
pub struct Tui {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    view: View,
    // Dropped last: the terminal is restored after ratatui is done with it.
    _guard: TerminalGuard,
}

impl Tui {
    pub fn enter() -> anyhow::Result<Self> {
        let guard = TerminalGuard::enter()?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
            .context("opening the terminal")?;
        Ok(Self {
            terminal,
            view: View::default(),
            _guard: guard,
        })
    }

    fn redraw(&mut self, state: &ChatState) -> anyhow::Result<()> {
        let now = Instant::now();
        let view = &mut self.view;
        self.terminal
            .draw(|frame| view.render(frame, state, now))
            .context("drawing the screen")?;
        Ok(())
    }
}

impl Frontend for Tui {
    type Input = TermEvent;
    const TICK: Option<Duration> = Some(Duration::from_millis(250));

    fn at_end(&self) -> bool {
        self.view.scroll == 0
    }

    fn show(&mut self, state: &ChatState, out: Vec<Output>) -> anyhow::Result<()> {
        self.view.push(out);
        self.redraw(state)
    }

    fn input(&mut self, state: &ChatState, input: TermEvent) -> anyhow::Result<Option<Action>> {
        let action = match input {
            TermEvent::Key(key) if key.kind != KeyEventKind::Release => self.view.key(key),
            TermEvent::Paste(text) => {
                text.chars().for_each(|c| self.view.input.insert(c));
                None
            }
            _ => None,
        };
        self.redraw(state)?;
        Ok(action)
    }

    fn tick(&mut self, state: &ChatState) -> anyhow::Result<()> {
        self.redraw(state)
    }
}

/// Reads terminal events on a thread of its own until `stop` is set (or
/// reading fails, which closes the channel).
pub fn terminal_events(
    stop: Arc<AtomicBool>,
) -> anyhow::Result<mpsc::UnboundedReceiver<TermEvent>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("parley-keys".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => match event::read() {
                        Ok(ev) => {
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                    Err(_) => return,
                }
            }
        })
        .context("starting the keyboard reader")?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use parley_client::protocol::Message;
    use ratatui::backend::TestBackend;

    use super::super::state::Target;
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn typed(view: &mut View, text: &str) {
        for c in text.chars() {
            assert_eq!(view.key(press(KeyCode::Char(c))), None);
        }
    }

    fn text_of(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn editing_the_input_line() {
        let mut view = View::default();
        typed(&mut view, "helo");
        view.key(press(KeyCode::Left));
        typed(&mut view, "l");
        assert_eq!(view.input.text(), "hello");
        view.key(press(KeyCode::Home));
        view.key(press(KeyCode::Delete));
        typed(&mut view, "H");
        view.key(ctrl('e'));
        typed(&mut view, " big world");
        view.key(ctrl('w'));
        assert_eq!(view.input.text(), "Hello big ");
        view.key(press(KeyCode::Backspace));
        assert_eq!(
            view.key(press(KeyCode::Enter)),
            Some(Action::Submit("Hello big".into()))
        );
        assert!(view.input.is_empty());
        // Enter on an empty line does nothing.
        assert_eq!(view.key(press(KeyCode::Enter)), None);
        typed(&mut view, "abc");
        view.key(press(KeyCode::Left));
        view.key(ctrl('u'));
        assert_eq!(view.input.text(), "c");
        assert_eq!(view.key(ctrl('d')), None);
        assert_eq!(view.key(ctrl('c')), Some(Action::Quit));
    }

    #[test]
    fn ctrl_d_quits_on_an_empty_line() {
        let mut view = View::default();
        assert_eq!(view.key(ctrl('d')), Some(Action::Quit));
    }

    #[test]
    fn input_history() {
        let mut input = InputLine::default();
        for line in ["one", "two"] {
            line.chars().for_each(|c| input.insert(c));
            input.submit();
        }
        "dra".chars().for_each(|c| input.insert(c));
        input.older();
        assert_eq!(input.text(), "two");
        input.older();
        input.older();
        assert_eq!(input.text(), "one");
        input.newer();
        assert_eq!(input.text(), "two");
        input.newer();
        assert_eq!(input.text(), "dra");
        input.newer();
        assert_eq!(input.text(), "dra");
    }

    #[test]
    fn wrapping_keeps_styles_and_width() {
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let lines = wrap(
            vec![("abc".into(), bold), ("defgh".into(), Style::default())],
            4,
        );
        assert_eq!(text_of(&lines), ["abcd", "efgh"]);
        assert_eq!(lines[0].spans[0].style, bold);
        assert_eq!(lines[0].spans[1].content, "d");
        // Wide characters count two columns.
        assert_eq!(
            text_of(&wrap(vec![("日本語".into(), bold)], 4)),
            ["日本", "語"]
        );
        assert_eq!(text_of(&wrap(vec![], 4)), [""]);
    }

    #[test]
    fn the_input_view_follows_the_cursor() {
        let chars: Vec<char> = "abcdefghij".chars().collect();
        assert_eq!(input_view(&chars, 0, 20), ("abcdefghij".into(), 0));
        assert_eq!(input_view(&chars, 10, 20), ("abcdefghij".into(), 10));
        assert_eq!(input_view(&chars, 10, 4), ("hij".into(), 3));
        assert_eq!(input_view(&chars, 2, 4), ("abcd".into(), 2));
        assert_eq!(input_view(&chars, 2, 0), (String::new(), 0));
    }

    fn message(seq: u64, from: &str, text: &str) -> Output {
        Output::message(Message {
            room: "general".into(),
            seq,
            from: from.into(),
            text: text.into(),
            ts: "2026-11-22T21:07:09.123Z".into(),
            nonce: None,
            ..Default::default()
        })
    }

    fn screen(view: &mut View, state: &ChatState, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|f| view.render(f, state, Instant::now()))
            .unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn renders_messages_status_and_input() {
        let mut state = ChatState::new("alice", Some(Target::Room("general".into())));
        state.conn = Conn::Online { node: "n1".into() };
        state.apply(
            parley_client::Event::Typing {
                room: "general".into(),
                user: "bob".into(),
            },
            Instant::now(),
        );
        let mut view = View::default();
        view.push(vec![
            Output::Status("joined general".into()),
            message(1, "bob", "hi alice"),
        ]);
        typed(&mut view, "draft");
        let rows = screen(&mut view, &state, 60, 7);
        assert_eq!(rows[0], " #general");
        assert_eq!(rows[1], "* joined general");
        assert_eq!(rows[2], "21:07:09 #1 [general] bob: hi alice");
        assert_eq!(rows[4], "rooms:");
        assert!(rows[5].contains("alice"), "{}", rows[5]);
        assert!(rows[5].contains("● online (n1)"), "{}", rows[5]);
        assert!(rows[5].contains("general"), "{}", rows[5]);
        assert!(rows[5].contains("bob is typing…"), "{}", rows[5]);
        assert_eq!(rows[6], "general> draft");
    }

    #[test]
    fn the_pane_shows_the_newest_rows_and_scrolls() {
        let state = ChatState::new("alice", Some(Target::Room("general".into())));
        let mut view = View::default();
        for i in 1..=10 {
            view.push(vec![Output::Status(format!("line {i}"))]);
        }
        // 7 rows: the header, 3 for the pane, then the room list, the
        // status bar and the input line.
        let rows = screen(&mut view, &state, 60, 7);
        assert_eq!(rows[1..4], ["* line 8", "* line 9", "* line 10"]);
        view.key(press(KeyCode::PageUp));
        let rows = screen(&mut view, &state, 60, 7);
        assert_eq!(rows[1..4], ["* line 6", "* line 7", "* line 8"]);
        assert!(rows[5].contains("scrolled up"));
        // Scrolling stops at the top.
        for _ in 0..20 {
            view.key(press(KeyCode::PageUp));
        }
        let rows = screen(&mut view, &state, 60, 7);
        assert_eq!(rows[1..4], ["* line 1", "* line 2", "* line 3"]);
        view.key(press(KeyCode::Esc));
        let rows = screen(&mut view, &state, 60, 7);
        assert_eq!(rows[3], "* line 10");
    }

    #[test]
    fn changed_messages_are_redrawn_in_place_and_rooms_show_unread() {
        use parley_client::protocol::{Edited, Reaction, RoomEvent};
        let now = Instant::now();
        let mut state = ChatState::new("alice", Some(Target::Room("general".into())));
        let joined = |room: &str, unread, mentions| parley_client::Event::Joined {
            room: room.into(),
            members: vec![],
            last_seq: 9,
            read_seq: 0,
            unread,
            mentions,
            topic: None,
            private: false,
            role: None,
        };
        state.apply(joined("general", 0, 0), now);
        state.apply(joined("random", 3, 1), now);
        let mut view = View::default();
        let Output::Message(m) = message(1, "bob", "hi alice") else {
            unreachable!()
        };
        let out = state.apply(parley_client::Event::Message(m.message.clone()), now);
        view.push(out);
        view.push(vec![Output::Status("after".into())]);
        let edit = RoomEvent::Edited(Edited {
            room: "general".into(),
            seq: 2,
            from: "bob".into(),
            target: 1,
            text: "hi all".into(),
            ts: "t".into(),
            nonce: None,
        });
        view.push(state.apply(parley_client::Event::Change(edit), now));
        let react = RoomEvent::Reaction(Reaction {
            room: "general".into(),
            seq: 3,
            from: "carol".into(),
            target: 1,
            emoji: "👍".into(),
            on: true,
            ts: "t".into(),
            nonce: None,
        });
        view.push(state.apply(parley_client::Event::Change(react), now));
        let rows = screen(&mut view, &state, 70, 7);
        // The emoji is two columns wide: the test screen shows its second
        // cell as a space.
        assert_eq!(
            rows[1],
            "21:07:09 #1 [general] bob: hi all (edited) · 👍  1"
        );
        assert_eq!(rows[2], "* after");
        assert_eq!(rows[4], "rooms: general  random 3 (1@)");
    }

    #[test]
    fn the_header_shows_the_topic_and_member_events_their_seq() {
        use parley_client::protocol::{Member, MemberChange, Role, RoomEvent, Topic};
        let now = Instant::now();
        let mut state = ChatState::new("alice", Some(Target::Room("plans".into())));
        state.apply(
            parley_client::Event::Joined {
                room: "plans".into(),
                members: vec![],
                last_seq: 0,
                read_seq: 0,
                unread: 0,
                mentions: 0,
                topic: None,
                private: true,
                role: Some(Role::Owner),
            },
            now,
        );
        let mut view = View::default();
        let topic = RoomEvent::Topic(Topic {
            room: "plans".into(),
            seq: 1,
            from: "alice".into(),
            topic: "lunch on friday".into(),
            ts: "2026-11-22T21:07:09.123Z".into(),
            nonce: None,
        });
        view.push(state.apply(parley_client::Event::Change(topic), now));
        let promoted = RoomEvent::Member(Member {
            room: "plans".into(),
            seq: 2,
            from: "alice".into(),
            user: "bob".into(),
            change: MemberChange::Role,
            role: Some(Role::Moderator),
            reason: None,
            ts: "2026-11-22T21:07:10.123Z".into(),
            nonce: None,
        });
        view.push(state.apply(parley_client::Event::Change(promoted), now));
        let rows = screen(&mut view, &state, 70, 7);
        assert_eq!(
            rows[0],
            " #plans (private, you are owner) — lunch on friday"
        );
        assert_eq!(
            rows[1],
            "21:07:09 #1 [plans] * alice set the topic: lunch on friday"
        );
        assert_eq!(rows[2], "21:07:10 #2 [plans] * alice made bob moderator");
        // Without a room.
        state.target = None;
        let rows = screen(&mut view, &state, 70, 7);
        assert!(rows[0].contains("no room"), "{}", rows[0]);
    }
}
