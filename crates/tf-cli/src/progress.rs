//! Progress bars on the terminal (indicatif): the training observer, and a bar for batched
//! work such as translating a file. Hidden when stderr is not a terminal, so logs stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use tf_train::training::observer::TrainingObserver;

/// A bar of `len` units on stderr, or a hidden one when stderr is not a terminal.
pub fn bar(len: u64) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar
}

/// Shows a training run as a bar with the latest loss, and prints its reports above the bar.
pub struct TrainingProgress {
    bar: ProgressBar,
}

impl TrainingProgress {
    /// A bar for a run whose length is not known yet.
    pub fn new() -> Self {
        Self { bar: bar(0) }
    }
}

impl TrainingObserver for TrainingProgress {
    fn started(&mut self, step: usize, total_steps: usize) {
        self.bar.set_length(total_steps as u64);
        self.bar.set_position(step as u64);
    }

    fn stepped(&mut self, step: usize, logged: Option<&str>) {
        self.bar.set_position(step as u64);
        if let Some(line) = logged {
            self.bar.set_message(line.to_string());
        }
    }

    fn report(&mut self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    fn finished(&mut self) {
        self.bar.finish_and_clear();
    }
}
