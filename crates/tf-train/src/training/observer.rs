//! What a training run tells the outside while it works: a hook for progress bars and logs, so
//! the library neither draws on a terminal nor decides where text goes.

/// Hears a run's progress. Every method has a default, so an observer implements what it needs.
pub trait TrainingObserver {
    /// The run begins (or resumes) at `step` of `total_steps`.
    fn started(&mut self, step: usize, total_steps: usize) {
        let _ = (step, total_steps);
    }

    /// An optimizer step finished; `logged` holds the progress line of the steps whose loss is
    /// logged ("loss 2.3145 lr 1.00e-3 1650 tok/s").
    fn stepped(&mut self, step: usize, logged: Option<&str>) {
        let _ = (step, logged);
    }

    /// A line for the user: what was loaded, each validation, the end.
    fn report(&mut self, line: &str) {
        println!("{line}");
    }

    /// The run ended (finished, out of time, or with an error).
    fn finished(&mut self) {}
}

/// Prints each report line on stdout and nothing else: the observer for runs without a
/// terminal, and the default for library users.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrintReports;

impl TrainingObserver for PrintReports {}

/// Says nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl TrainingObserver for Silent {
    fn report(&mut self, _line: &str) {}
}
