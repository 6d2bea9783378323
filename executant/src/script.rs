//! Code on demand: fetching a task's script from its project's tasks repository at the pinned
//! commit, into a folder that is mounted read-only in the task's container.
//!
//! Only repositories the operator named are fetched ([`repo_allowed`], `--allow-script-repo`);
//! a fetch is bounded in time and size ([`FetchLimits`]); each repository has its own lock,
//! so one slow remote holds up only the tasks that need it; the cache of clones is pruned to
//! the most recently used [`MAX_CACHED_REPOS`].

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tasks::model::ScriptRef;

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

/// Whether `repo` (a task's `script.repo`) is one of the `allowlist`'s locations.
///
/// An entry is a local path, a `file://` URL or another git URL. A task's location matches
/// an entry when they are the same location (paths compared after resolving `.` and `..`
/// and, when they exist, symbolic links; URLs compared as written, trailing `/` ignored), or
/// when the entry ends in `/**` and the location lies under it (a path must still lie under
/// it once its symbolic links are resolved). Relative paths and URLs with `..` never match.
pub fn repo_allowed(allowlist: &[String], repo: &str) -> bool {
    match Location::parse(repo) {
        Some(Location::Path(path)) => allowlist.iter().any(|entry| match entry_of(entry) {
            Some((Location::Path(allowed), tree)) => path_matches(&allowed, tree, &path),
            _ => false,
        }),
        Some(Location::Url(url)) => allowlist.iter().any(|entry| match entry_of(entry) {
            Some((Location::Url(allowed), false)) => allowed == url,
            Some((Location::Url(allowed), true)) => url.starts_with(&format!("{allowed}/")),
            _ => false,
        }),
        None => false,
    }
}

/// A repository location, normalised.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    /// An absolute local path, `.` and `..` resolved lexically.
    Path(PathBuf),
    /// Any other git URL, without a trailing `/`.
    Url(String),
}

impl Location {
    fn parse(text: &str) -> Option<Location> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("file://") {
            return normalize(Path::new(path)).map(Location::Path);
        }
        if text.contains("://") || is_scp_like(text) {
            let url = text.trim_end_matches('/');
            let escapes = url.split(['/', ':']).any(|segment| segment == "..");
            return (!escapes && !url.is_empty()).then(|| Location::Url(url.to_string()));
        }
        normalize(Path::new(text)).map(Location::Path)
    }
}

/// Whether `entry` can be an allowlist entry: an absolute path, a `file://` URL or another
/// git URL, optionally ending in `/**` (a relative path would never match anything).
pub fn valid_entry(entry: &str) -> bool {
    entry_of(entry).is_some()
}

/// An allowlist entry: its location, and whether it allows everything under it (`/**`).
fn entry_of(entry: &str) -> Option<(Location, bool)> {
    match entry.trim().strip_suffix("/**") {
        Some(base) => Location::parse(base).map(|l| (l, true)),
        None => Location::parse(entry).map(|l| (l, false)),
    }
}

/// `user@host:path`, git's short form for ssh (a colon before any slash).
fn is_scp_like(text: &str) -> bool {
    match (text.find(':'), text.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        _ => false,
    }
}

/// An absolute path with `.` and `..` resolved without touching the file system; `None` for
/// a relative path.
fn normalize(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

fn path_matches(allowed: &Path, tree: bool, path: &Path) -> bool {
    // The entry as written and as resolved (an operator may name a path through a link).
    let mut bases = vec![allowed.to_path_buf()];
    if let Ok(real) = allowed.canonicalize() {
        bases.push(real);
    }
    let real = path.canonicalize().ok();
    if tree {
        let under = |p: &Path| bases.iter().any(|b| p.starts_with(b) && p != b);
        // Lexically under the entry, and still under it with links resolved.
        under(path) && real.as_deref().is_none_or(under)
    } else {
        bases
            .iter()
            .any(|b| b == path || real.as_deref() == Some(b.as_path()))
    }
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

/// The failed result's reason for a repository off the allowlist.
pub fn refusal(repo: &str) -> String {
    format!("script repository `{repo}` is not on this executant's allowlist (--allow-script-repo)")
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

#[cfg(test)]
mod tests {
    use super::repo_allowed;

    #[test]
    fn the_allowlist() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let ws = base.join("ws");
        std::fs::create_dir_all(ws.join("tasks")).unwrap();
        std::fs::create_dir_all(base.join("other/tasks")).unwrap();
        let tasks = ws.join("tasks").display().to_string();
        let list = vec![
            tasks.clone(),
            format!("{}/**", base.join("trees").display()),
            "https://git.example.org/team/tasks.git".into(),
            "https://git.example.org/org/**".into(),
        ];
        std::fs::create_dir_all(base.join("trees/a/tasks")).unwrap();
        std::os::unix::fs::symlink(base.join("other"), base.join("trees/out")).unwrap();
        let b = |p: &str| format!("{}/{p}", base.display());
        let table: &[(String, bool)] = &[
            (tasks.clone(), true),
            (format!("{tasks}/"), true),
            (format!("file://{tasks}"), true),
            (b("ws/./tasks"), true),
            (b("ws/x/../tasks"), true),
            (b("ws/tasks/../../other/tasks"), false),
            (b("other/tasks"), false),
            (b("ws"), false),
            (b("ws/tasks/sub"), false),
            ("ws/tasks".into(), false),
            (b("trees/a/tasks"), true),
            (b("trees/not-yet/tasks"), true),
            (b("trees"), false),
            (b("trees/../other/tasks"), false),
            (b("trees/out/tasks"), false),
            ("https://git.example.org/team/tasks.git".into(), true),
            ("https://git.example.org/team/tasks.git/".into(), true),
            ("https://git.example.org/team/other.git".into(), false),
            ("https://git.example.org/org/a.git".into(), true),
            ("https://git.example.org/org/../team/x.git".into(), false),
            ("https://git.example.org/organisation/a.git".into(), false),
            ("git@git.example.org:team/tasks.git".into(), false),
            ("/etc".into(), false),
            ("".into(), false),
        ];
        for (repo, want) in table {
            assert_eq!(repo_allowed(&list, repo), *want, "{repo}");
        }
        assert!(!repo_allowed(&[], &tasks), "nothing is allowed by default");
    }
}
