//! Progress bars for long runs (indicatif). The bar draws on stderr only when stderr is a
//! terminal; per-run result lines go through [`Progress::note`], which prints them above the
//! bar on a terminal and plainly to a log otherwise, so nothing is lost in CI output.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over a known number of steps (runs, probes).
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar for `total` steps of `what`.
    pub fn new(total: u64, what: &str) -> Self {
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, ~{eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        Self(bar)
    }

    /// Names the step now running.
    pub fn step(&self, msg: String) {
        self.0.set_message(msg);
    }

    /// One step done.
    pub fn inc(&self) {
        self.0.inc(1);
    }

    /// Prints a result line to stdout without tearing the bar.
    pub fn out(&self, line: &str) {
        self.0.suspend(|| println!("{line}"));
    }

    /// Prints a line (to stderr) without tearing the bar.
    pub fn note(&self, line: &str) {
        self.0.suspend(|| eprintln!("{line}"));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
