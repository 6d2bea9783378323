//! Code on demand: fetching a task's script from its project's tasks repository at the pinned
//! commit, into a folder that is mounted read-only in the task's container.
//!
//! Only repositories the operator named are fetched ([`repo_allowed`], `--allow-script-repo`);
//! a fetch is bounded in time and size ([`FetchLimits`]); each repository has its own lock,
//! so one slow remote holds up only the tasks that need it; the cache of clones is pruned to
//! the most recently used [`MAX_CACHED_REPOS`].

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tasks::model::ScriptRef;

mod allowlist;

pub use allowlist::{refusal, repo_allowed, valid_entry};

/// How many repository clones the cache keeps (least recently used ones are removed).
pub const MAX_CACHED_REPOS: usize = 8;

/// The bounds of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// How long one fetch may take.
    pub timeout: Duration,
    /// How many bytes a fetch may bring in (and the largest script file).
    pub max_bytes: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            timeout: Duration::from_secs(60),
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a task's script could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The task asked for something this executant will not do (a repository off the
    /// allowlist, a fetch or file over the size cap): the task fails with the reason.
    #[error("{0}")]
    Refused(String),
    /// Fetching failed for a reason outside the task (the remote unreachable or too slow, a
    /// local error): the task may run again.
    #[error("{0}")]
    Fetch(String),
}

/// Clones of tasks repositories, one lock per repository, pruned to the most recently used.
pub struct ScriptCache {
    /// The folder each task's script folder is created in (bind-mounted from there).
    dir: PathBuf,
    root: tempfile::TempDir,
    allowlist: Vec<String>,
    limits: FetchLimits,
    repos: Mutex<HashMap<String, Arc<Repo>>>,
}

/// One cached clone: its lock, and when it was last used.
struct Repo {
    lock: tokio::sync::Mutex<()>,
    used: Mutex<Instant>,
}

impl ScriptCache {
    /// An empty cache in a temporary folder of `dir` (created if missing); task script
    /// folders are created in `dir` too. Only `allowlist`'s repositories are fetched
    /// ([`repo_allowed`]), within `limits`.
    #[allow(unsafe_code)] // libgit2's global timeouts, see SAFETY below
    pub fn in_dir(dir: impl Into<PathBuf>, allowlist: Vec<String>, limits: FetchLimits) -> Self {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the scripts folder {}: {e}", dir.display()));
        // A remote that accepts the connection and then sends nothing never calls the
        // progress callback: libgit2's own socket timeouts bound that wait (process-wide).
        let millis = limits.timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: these set two integers in libgit2's global options; no other thread is
        // reading them concurrently in a way that could observe a torn value.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis);
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis);
        }
        ScriptCache {
            root: tempfile::Builder::new()
                .prefix("executant-scripts-")
                .tempdir_in(&dir)
                .unwrap_or_else(|e| panic!("creating a folder in {}: {e}", dir.display())),
            dir,
            allowlist,
            limits,
            repos: Mutex::new(HashMap::new()),
        }
    }

    /// Writes the script's file, as committed, into a new folder readable by the task user.
    pub async fn materialize(&self, script: &ScriptRef) -> Result<tempfile::TempDir, ScriptError> {
        if !repo_allowed(&self.allowlist, &script.repo) {
            return Err(ScriptError::Refused(refusal(&script.repo)));
        }
        let key = cache_key(&script.repo);
        let repo = self.repo(&key);
        let _guard = repo.lock.lock().await;
        *lock(&repo.used) = Instant::now();
        let clone_dir = self.root.path().join(&key);
        let (script, dir, limits) = (script.clone(), self.dir.clone(), self.limits);
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let work = tokio::task::spawn_blocking(move || {
            materialize_blocking(&script, &clone_dir, &dir, limits, &cancelled)
        });
        // The fetch checks the deadline itself as data arrives; this bounds a remote that
        // sends nothing at all.
        let result = match tokio::time::timeout(limits.timeout + Duration::from_secs(1), work).await
        {
            Ok(joined) => joined.map_err(|e| ScriptError::Fetch(e.to_string()))?,
            Err(_) => {
                cancel.store(true, Ordering::SeqCst);
                Err(ScriptError::Fetch(format!(
                    "fetching the script took longer than {:?}",
                    limits.timeout
                )))
            }
        };
        drop(_guard);
        self.prune(&key);
        result
    }

    fn repo(&self, key: &str) -> Arc<Repo> {
        lock(&self.repos)
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Repo {
                    lock: tokio::sync::Mutex::new(()),
                    used: Mutex::new(Instant::now()),
                })
            })
            .clone()
    }

    /// Removes the least recently used clones beyond [`MAX_CACHED_REPOS`] (never one in use,
    /// never `keep`).
    fn prune(&self, keep: &str) {
        let mut repos = lock(&self.repos);
        while repos.len() > MAX_CACHED_REPOS {
            let oldest = repos
                .iter()
                .filter(|(key, repo)| *key != keep && repo.lock.try_lock().is_ok())
                .min_by_key(|(_, repo)| *lock(&repo.used))
                .map(|(key, _)| key.clone());
            let Some(key) = oldest else { return };
            repos.remove(&key);
            let _ = std::fs::remove_dir_all(self.root.path().join(&key));
        }
    }

    /// How many clones the cache holds.
    pub fn cached(&self) -> usize {
        lock(&self.repos)
            .keys()
            .filter(|key| self.root.path().join(key).exists())
            .count()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache_key(repo: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    repo.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn materialize_blocking(
    script: &ScriptRef,
    clone_dir: &Path,
    dir: &Path,
    limits: FetchLimits,
    cancel: &AtomicBool,
) -> Result<tempfile::TempDir, ScriptError> {
    let fetch = |e: git2::Error| ScriptError::Fetch(e.message().to_string());
    let repo = if clone_dir.exists() {
        git2::Repository::open_bare(clone_dir).map_err(fetch)?
    } else {
        git2::Repository::init_bare(clone_dir).map_err(fetch)?
    };
    let oid = git2::Oid::from_str(&script.commit).map_err(fetch)?;
    if repo.find_commit(oid).is_err() {
        if let Err(e) = fetch_bounded(&repo, script, limits, cancel) {
            // A fetch cut short leaves a partial clone: start afresh next time.
            drop(repo);
            let _ = std::fs::remove_dir_all(clone_dir);
            return Err(e);
        }
    }
    let commit = repo.find_commit(oid).map_err(|_| {
        ScriptError::Fetch(format!(
            "commit {} is not in {}",
            script.commit, script.repo
        ))
    })?;
    let tree = commit.tree().map_err(fetch)?;
    let entry = tree.get_path(Path::new(&script.path)).map_err(|_| {
        ScriptError::Fetch(format!(
            "{} does not exist at commit {}",
            script.path, script.commit
        ))
    })?;
    let blob = repo
        .find_blob(entry.id())
        .map_err(|_| ScriptError::Fetch(format!("{} is not a file", script.path)))?;
    if blob.size() as u64 > limits.max_bytes {
        return Err(ScriptError::Refused(format!(
            "script {} is {} bytes, over this executant's limit of {} bytes",
            script.path,
            blob.size(),
            limits.max_bytes
        )));
    }
    let local = |e: std::io::Error| ScriptError::Fetch(e.to_string());
    let dir = tempfile::Builder::new()
        .prefix("task-script-")
        .tempdir_in(dir)
        .map_err(local)?;
    let file: PathBuf = dir.path().join(&script.path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(local)?;
    }
    std::fs::write(&file, blob.content()).map_err(local)?;
    // The task runs as nobody: everything must be world-readable, nothing writable.
    for path in walk(dir.path()) {
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(local)?;
    }
    Ok(dir)
}

/// Fetches the repository's branches, aborting past the deadline, past the size cap, or
/// when cancelled.
fn fetch_bounded(
    repo: &git2::Repository,
    script: &ScriptRef,
    limits: FetchLimits,
    cancel: &AtomicBool,
) -> Result<(), ScriptError> {
    let deadline = Instant::now() + limits.timeout;
    let too_big = AtomicBool::new(false);
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.transfer_progress(|progress| {
        if progress.received_bytes() as u64 > limits.max_bytes {
            too_big.store(true, Ordering::SeqCst);
            return false;
        }
        Instant::now() < deadline && !cancel.load(Ordering::SeqCst)
    });
    let mut options = git2::FetchOptions::new();
    options.remote_callbacks(callbacks);
    let mut remote = repo
        .remote_anonymous(&script.repo)
        .map_err(|e| ScriptError::Fetch(format!("{}: {}", script.repo, e.message())))?;
    let fetched = remote.fetch(
        &["+refs/heads/*:refs/remotes/origin/*"],
        Some(&mut options),
        None,
    );
    drop(remote);
    if too_big.load(Ordering::SeqCst) {
        return Err(too_large(&script.repo, limits));
    }
    if let Err(e) = fetched {
        if Instant::now() >= deadline {
            return Err(ScriptError::Fetch(format!(
                "fetching {} took longer than {:?}",
                script.repo, limits.timeout
            )));
        }
        return Err(ScriptError::Fetch(format!(
            "fetching {}: {}",
            script.repo,
            e.message()
        )));
    }
    // A local fetch may copy objects without counting them as received: measure the clone.
    if dir_size(repo.path()) > limits.max_bytes {
        return Err(too_large(&script.repo, limits));
    }
    Ok(())
}

fn too_large(repo: &str, limits: FetchLimits) -> ScriptError {
    ScriptError::Refused(format!(
        "script repository `{repo}` is over this executant's fetch limit of {} bytes",
        limits.max_bytes
    ))
}

fn dir_size(root: &Path) -> u64 {
    walk(root)
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            if let Ok(entries) = std::fs::read_dir(&out[i]) {
                out.extend(entries.flatten().map(|e| e.path()));
            }
        }
        i += 1;
    }
    out
}
