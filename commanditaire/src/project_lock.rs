//! One follower per project and workspace: an advisory lock on
//! `<workspace>/.projects/<project>.lock`, held while a client records, publishes or follows
//! the project, and released by the kernel if the client dies. The file says who holds it.
//!
//! Followers on other machines (another copy of the workspace) are kept out by the broker
//! instead: the follower's consumer on `results.<project>` is exclusive.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Why the project's lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another client holds it.
    #[error("project {project} is already being followed by {holder}; wait for it to finish or stop it, then `commanditaire resume {project}`")]
    Held {
        /// The project.
        project: String,
        /// Who holds it, as it wrote itself down (pid, host, since when).
        holder: String,
    },
    /// The id cannot name a lock file (it would not name a project either).
    #[error("project id {id:?}: {reason}")]
    InvalidId {
        /// The id given.
        id: String,
        /// Why it is not one.
        reason: String,
    },
    /// The lock file could not be used.
    #[error("project lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The lock on one project, held until dropped.
#[derive(Debug)]
pub struct ProjectLock {
    _file: File,
}

impl ProjectLock {
    /// Takes the lock of `project` in the workspace at `root`, or says who holds it.
    pub fn acquire(root: &std::path::Path, project: &str) -> Result<ProjectLock, LockError> {
        // The id becomes a file name: never a path.
        tasks::model::validate_project_id(project).map_err(|e| LockError::InvalidId {
            id: project.to_string(),
            reason: e.to_string(),
        })?;
        let dir = root.join(".projects");
        let path = dir.join(format!("{project}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    project: project.to_string(),
                    holder: read_holder(&path),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // One write of a fixed-size record, never a truncation first: a client reading
        // the file meanwhile sees the previous holder or this one, never nothing.
        let me = format!(
            "commanditaire pid {} on {} since {}",
            std::process::id(),
            hostname(),
            crate::tracking::now_rfc3339()
        );
        let record = format!("{me:<HOLDER_BYTES$}\n");
        file.write_all_at(record.as_bytes(), 0).map_err(io)?;
        Ok(ProjectLock { _file: file })
    }
}

/// Who follows `project` in the workspace at `root` on this machine, as its lock file says,
/// if that client still runs; found without touching the lock (a client starting at that
/// moment is never refused because of it). The recorded process must exist and hold the lock
/// file open; a holder on another host is taken at its word.
pub fn live_holder(root: &std::path::Path, project: &str) -> Option<String> {
    let path = root.join(".projects").join(format!("{project}.lock"));
    let record = std::fs::read_to_string(&path).ok()?;
    let record = record.trim();
    let mut words = record.split_whitespace();
    let pid: u32 = words.nth(2)?.parse().ok()?;
    let host = words.nth(1)?;
    if host != hostname() {
        return Some(record.to_string());
    }
    let path = std::fs::canonicalize(&path).ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
        .then(|| record.to_string())
}

/// The size of the holder record (padded with spaces).
const HOLDER_BYTES: usize = 255;

/// Who holds a lock, as written in its file; a lock file just created may still be empty
/// for a moment, so an empty read is tried again briefly.
fn read_holder(path: &std::path::Path) -> String {
    for _ in 0..20 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let text = text.trim();
        if !text.is_empty() {
            return text.to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    "another client".into()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".into())
}
