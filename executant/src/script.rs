//! Code on demand: fetching a task's script from its project's tasks repository at the pinned
//! commit, into a folder that is mounted read-only in the task's container.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tasks::model::ScriptRef;

/// Clones of tasks repositories, kept for the executant's lifetime.
pub struct ScriptCache {
    /// The folder each task's script folder is created in (bind-mounted from there).
    dir: PathBuf,
    root: tempfile::TempDir,
    lock: tokio::sync::Mutex<()>,
}

impl Default for ScriptCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptCache {
    /// An empty cache in a temporary folder of the system's temp folder.
    pub fn new() -> ScriptCache {
        Self::in_dir(std::env::temp_dir())
    }

    /// An empty cache in a temporary folder of `dir` (created if missing); task script
    /// folders are created in `dir` too.
    pub fn in_dir(dir: impl Into<PathBuf>) -> ScriptCache {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the scripts folder {}: {e}", dir.display()));
        ScriptCache {
            root: tempfile::Builder::new()
                .prefix("executant-scripts-")
                .tempdir_in(&dir)
                .unwrap_or_else(|e| panic!("creating a folder in {}: {e}", dir.display())),
            dir,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Writes the script's file, as committed, into a new folder readable by the task user.
    pub async fn materialize(&self, script: &ScriptRef) -> Result<tempfile::TempDir, String> {
        let _guard = self.lock.lock().await;
        let script = script.clone();
        let clone_dir = self.root.path().join(cache_key(&script.repo));
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || materialize_blocking(&script, &clone_dir, &dir))
            .await
            .map_err(|e| e.to_string())?
    }
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
) -> Result<tempfile::TempDir, String> {
    let repo = if clone_dir.exists() {
        git2::Repository::open_bare(clone_dir).map_err(|e| e.message().to_string())?
    } else {
        git2::Repository::init_bare(clone_dir).map_err(|e| e.message().to_string())?
    };
    let oid = git2::Oid::from_str(&script.commit).map_err(|e| e.message().to_string())?;
    if repo.find_commit(oid).is_err() {
        let mut remote = repo
            .remote_anonymous(&script.repo)
            .map_err(|e| format!("{}: {}", script.repo, e.message()))?;
        remote
            .fetch(&["+refs/heads/*:refs/remotes/origin/*"], None, None)
            .map_err(|e| format!("fetching {}: {}", script.repo, e.message()))?;
    }
    let commit = repo
        .find_commit(oid)
        .map_err(|_| format!("commit {} is not in {}", script.commit, script.repo))?;
    let tree = commit.tree().map_err(|e| e.message().to_string())?;
    let entry = tree
        .get_path(Path::new(&script.path))
        .map_err(|_| format!("{} does not exist at commit {}", script.path, script.commit))?;
    let blob = repo
        .find_blob(entry.id())
        .map_err(|_| format!("{} is not a file", script.path))?;
    let dir = tempfile::Builder::new()
        .prefix("task-script-")
        .tempdir_in(dir)
        .map_err(|e| e.to_string())?;
    let file: PathBuf = dir.path().join(&script.path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&file, blob.content()).map_err(|e| e.to_string())?;
    // The task runs as nobody: everything must be world-readable, nothing writable.
    for path in walk(dir.path()) {
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            if let Ok(entries) = std::fs::read_dir(&out[i]) {
                out.extend(entries.flatten().map(|e| e.path()));
            }
        }
        i += 1;
    }
    out
}
