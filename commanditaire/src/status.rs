//! What `commanditaire status` says about a project: its progress as recorded, and a state
//! a person can act on (running, stalled, not published, cancelled, complete) with the
//! command that would move it on.

use std::time::Duration;

use serde::Serialize;
use tasks::layout::{self, TRACKING};
use tasks::progress::Progress;

use crate::tracking::{self, LoadError};
use crate::workspace::Workspace;

/// How long a project may go without a new outcome before `status` calls it stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(300);

/// Where a project stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Every task has an outcome and the result is recorded.
    Complete,
    /// The project was cancelled (`commanditaire cancel`).
    Cancelled,
    /// Recorded, but its tasks were never all published (the broker was unreachable, say).
    NotPublished,
    /// Outcomes were recorded recently.
    Running,
    /// No outcome was recorded for longer than the stall threshold.
    Stalled,
}

impl State {
    /// The word `status` prints.
    pub fn word(self) -> &'static str {
        match self {
            State::Complete => "complete",
            State::Cancelled => "cancelled",
            State::NotPublished => "not published",
            State::Running => "running",
            State::Stalled => "stalled",
        }
    }
}

/// One project as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectStatus {
    /// The progress at the last tracking commit.
    #[serde(flatten)]
    pub progress: Progress,
    /// Where it stands.
    pub state: State,
    /// Seconds since the last recorded outcome (or since it was recorded), when known.
    pub idle_secs: Option<u64>,
    /// The client following it on this machine, as it wrote itself down, if one runs.
    pub follower: Option<String>,
    /// What would move it on (a command to run), when something would.
    pub hint: Option<String>,
}

/// What is known of a project besides its progress, gathered from the workspace.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Every task was published once (`tracking/P/published`).
    pub published: bool,
    /// A cancellation is recorded (`tracking/P/cancelled.json`).
    pub cancelled: bool,
    /// The live follower on this machine, if any.
    pub follower: Option<String>,
    /// Time since the progress was last recorded.
    pub idle: Option<Duration>,
}

/// The state of a project and the command that would move it on: a pure function of what
/// the workspace says, so that every rule is in one place.
pub fn judge(
    progress: &Progress,
    facts: &Facts,
    stalled_after: Duration,
) -> (State, Option<String>) {
    let p = &progress.project;
    if progress.complete {
        return (State::Complete, None);
    }
    if facts.cancelled {
        return (State::Cancelled, None);
    }
    if !facts.published {
        let hint = match &facts.follower {
            Some(f) => format!("{f} is publishing it"),
            None => format!("`commanditaire resume {p}` publishes it"),
        };
        return (State::NotPublished, Some(hint));
    }
    let stalled = facts.idle.is_some_and(|idle| idle >= stalled_after);
    match (&facts.follower, stalled) {
        (None, false) => (
            State::Running,
            Some(format!(
                "no client records its results: `commanditaire resume {p}`"
            )),
        ),
        (None, true) => (
            State::Stalled,
            Some(format!("no client follows it: `commanditaire resume {p}`")),
        ),
        (Some(_), false) => (State::Running, None),
        (Some(f), true) => (
            State::Stalled,
            Some(format!(
                "{f} records nothing: start an executant (`executant`) if none consumes `todo`, \
                 or stop that client and `commanditaire resume {p}`"
            )),
        ),
    }
}

/// The status of project `id`, or of every project (`None`), oldest update first.
pub fn status(
    ws: &Workspace,
    id: Option<&str>,
    stalled_after: Duration,
) -> Result<Vec<ProjectStatus>, LoadError> {
    let now = time::OffsetDateTime::now_utc();
    let shown = tracking::progress(ws, id)?;
    Ok(shown
        .into_iter()
        .map(|progress| {
            let p = &progress.project;
            let idle = time::OffsetDateTime::parse(
                &progress.updated,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
            .and_then(|at| Duration::try_from(now - at).ok());
            let facts = Facts {
                published: ws
                    .read_at_head(TRACKING, &layout::published_marker(p))
                    .is_some(),
                cancelled: ws
                    .read_at_head(TRACKING, &layout::cancellation(p))
                    .is_some(),
                follower: crate::project_lock::live_holder(ws.root(), p),
                idle,
            };
            let (state, hint) = judge(&progress, &facts, stalled_after);
            ProjectStatus {
                state,
                idle_secs: idle.map(|d| d.as_secs()),
                follower: facts.follower,
                hint,
                progress,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(complete: bool) -> Progress {
        Progress {
            schema: tasks::SCHEMA_VERSION,
            project: "p".into(),
            spec: tasks::ProjectSpec::Tasks,
            tasks: 4,
            done: 1,
            failed: 0,
            complete,
            updated: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn each_state_and_its_command() {
        let limit = Duration::from_secs(300);
        let idle = |s| Some(Duration::from_secs(s));
        let followed = Some("commanditaire pid 7 on h since t".to_string());
        let cases = [
            (true, Facts::default(), State::Complete, None),
            (
                false,
                Facts {
                    published: true,
                    cancelled: true,
                    ..Facts::default()
                },
                State::Cancelled,
                None,
            ),
            (
                false,
                Facts::default(),
                State::NotPublished,
                Some("`commanditaire resume p` publishes it"),
            ),
            (
                false,
                Facts {
                    published: true,
                    follower: followed.clone(),
                    idle: idle(10),
                    ..Facts::default()
                },
                State::Running,
                None,
            ),
            (
                false,
                Facts {
                    published: true,
                    follower: followed.clone(),
                    idle: idle(1500),
                    ..Facts::default()
                },
                State::Stalled,
                Some("start an executant"),
            ),
            (
                false,
                Facts {
                    published: true,
                    idle: idle(1500),
                    ..Facts::default()
                },
                State::Stalled,
                Some("`commanditaire resume p`"),
            ),
            (
                false,
                Facts {
                    published: true,
                    idle: idle(5),
                    ..Facts::default()
                },
                State::Running,
                Some("`commanditaire resume p`"),
            ),
        ];
        for (complete, facts, state, hint) in cases {
            let (got, got_hint) = judge(&progress(complete), &facts, limit);
            assert_eq!(got, state, "{facts:?}");
            match hint {
                Some(h) => assert!(
                    got_hint.as_deref().unwrap_or("").contains(h),
                    "{got_hint:?}"
                ),
                None => assert_eq!(got_hint, None),
            }
        }
    }
}
