//! Named steps of publishing where a test can stop the client, to SIGKILL it exactly there.
//!
//! With `COMMANDITAIRE_FAILPOINT=STEP` in its environment, a client reaching `STEP` prints
//! `failpoint STEP reached` on stderr and stops (its thread parked for good, the
//! connections left open) until it is killed. Without the variable, nothing happens: the
//! check is one environment lookup per step, a few per window published. Only tests set it
//! (`commanditaire/tests/it/killed_publishing.rs`).

/// The environment variable naming the step to stop at.
pub const FAILPOINT_ENV: &str = "COMMANDITAIRE_FAILPOINT";

/// Before the first task of a project is published (the project is recorded).
pub const BEFORE_FIRST_WINDOW: &str = "publish:before-first-window";
/// Inside one publication, after its first window of confirms
/// ([`tasks::amqp::PUBLISH_WINDOW`] tasks) and before the next.
pub const MID_WINDOW: &str = "publish:mid-window";
/// Every task of the project published and confirmed, the `published` marker not yet
/// committed.
pub const BEFORE_PUBLISHED_MARKER: &str = "publish:before-published-marker";

/// Stops here for good if the environment names `step` (see the module's documentation).
pub fn reached(step: &str) {
    if std::env::var_os(FAILPOINT_ENV).is_some_and(|v| v == step) {
        eprintln!("failpoint {step} reached");
        loop {
            std::thread::park();
        }
    }
}
