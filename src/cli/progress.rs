//! What long operator commands show. On a terminal: a spinner or a bar on stderr while they
//! work (`indicatif`), then one sentence on stdout. Piped: no progress at all, and the result
//! as one JSON line, so scripts read it without scraping text.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// A spinner or a bar; hidden unless stderr is a terminal.
pub struct Progress(ProgressBar);

impl Progress {
    /// Work of unknown length.
    pub fn spinner(message: impl Into<Cow<'static, str>>) -> Self {
        let bar = Self::hidden_unless_terminal(ProgressBar::new_spinner());
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress(bar)
    }

    /// `len` steps.
    pub fn bar(len: u64, message: impl Into<Cow<'static, str>>) -> Self {
        let bar = Self::hidden_unless_terminal(ProgressBar::new(len));
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta} left)")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message);
        Progress(bar)
    }

    fn hidden_unless_terminal(bar: ProgressBar) -> ProgressBar {
        if !std::io::stderr().is_terminal() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar
    }

    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    /// Removes the spinner or bar (the result follows on stdout).
    pub fn done(self) {
        self.0.finish_and_clear();
    }
}

/// Prints a command's result: `human` on a terminal, `json` (one line) when piped.
pub fn report(human: impl std::fmt::Display, json: Value) {
    if std::io::stdout().is_terminal() {
        println!("{human}");
    } else {
        println!("{json}");
    }
}
