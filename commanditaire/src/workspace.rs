//! The workspace: four git repositories (`tasks`, `tracking`, `results`, `config`) in one
//! folder, each readable with plain git.
//!
//! The layout of a project's records in them is [`tasks::layout`]; one file per batch of
//! results, so each commit adds a small file and history grows linearly.
//!
//! Each repository is created on branch `main`; [`crate::remote`] pushes that branch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::{Repository, Signature};

pub use tasks::layout::REPOSITORIES;

/// What went wrong with the workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// A folder that should be a repository is something else.
    #[error("{0} exists but is not a git repository; move it away or choose another --workspace")]
    NotARepository(PathBuf),
    /// A git operation failed.
    #[error("git {op} in {repo}: {source}")]
    Git {
        /// What was attempted.
        op: &'static str,
        /// The repository.
        repo: PathBuf,
        /// What git2 said.
        source: git2::Error,
    },
    /// A file that must be new (a batch of results) is already in the repository.
    #[error("{path} already exists in {repo}: a recorded file is never replaced")]
    Exists {
        /// The repository.
        repo: PathBuf,
        /// The file, relative to the repository.
        path: String,
    },
    /// A file could not be written (a full disk lands here).
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The workspace folder.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    /// For each numbered sequence (repository and folders), the commit this process last
    /// made in it and the number it used: while that commit is still HEAD, the next number
    /// follows without listing the folders again (their size grows with the project).
    numbers: Arc<Mutex<HashMap<String, (git2::Oid, u64)>>>,
}

impl Workspace {
    /// Opens the workspace at `root`, creating the folder and any missing repository.
    pub fn open_or_init(root: &Path) -> Result<Workspace, WorkspaceError> {
        durable_git();
        std::fs::create_dir_all(root).map_err(|source| WorkspaceError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let ws = Workspace {
            root: root.to_path_buf(),
            numbers: Arc::default(),
        };
        ws.locked(|| {
            for name in REPOSITORIES {
                let path = root.join(name);
                if path.exists() {
                    Repository::open(&path)
                        .map_err(|_| WorkspaceError::NotARepository(path.clone()))?;
                } else {
                    std::fs::create_dir_all(&path).map_err(|source| WorkspaceError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    let mut init = git2::RepositoryInitOptions::new();
                    init.initial_head("main");
                    Repository::init_opts(&path, &init).map_err(git("init", &path))?;
                }
            }
            Ok(())
        })?;
        Ok(ws)
    }

    /// Runs `f` holding the workspace's lock (`.lock`, an advisory file lock that the kernel
    /// releases if the process dies), so that clients sharing a workspace never write to a
    /// repository at the same time, and a lock file git left behind is known to be stale.
    fn locked<T>(
        &self,
        f: impl FnOnce() -> Result<T, WorkspaceError>,
    ) -> Result<T, WorkspaceError> {
        let path = self.root.join(".lock");
        let io = |source| WorkspaceError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        let result = f();
        let _ = file.unlock();
        result
    }

    /// The path of repository `name` (one of [`REPOSITORIES`]).
    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The workspace folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `files` (relative paths) into repository `name` and commits them with
    /// `message`; returns the commit id.
    pub fn commit(
        &self,
        name: &str,
        files: &[(String, Vec<u8>)],
        message: &str,
    ) -> Result<git2::Oid, WorkspaceError> {
        self.commit_slices(name, &slices(files), message)
    }

    /// [`Workspace::commit`] of contents held elsewhere, without a copy of them (a
    /// project's task list may be a hundred megabytes).
    pub fn commit_slices(
        &self,
        name: &str,
        files: &[(&str, &[u8])],
        message: &str,
    ) -> Result<git2::Oid, WorkspaceError> {
        self.locked(|| self.commit_locked(name, files, message))
    }

    /// Commits `content` as a new file `folder/NNNNNN.suffix` (with `files`), numbered one
    /// past the highest number in the `sequence` folders (which include `folder`) at HEAD,
    /// read under the workspace lock: two writers never pick the same number, and a
    /// recorded file is never replaced. Returns the commit id and the file's path.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_numbered(
        &self,
        name: &str,
        sequence: &[&str],
        folder: &str,
        suffix: &str,
        content: Vec<u8>,
        files: &[(String, Vec<u8>)],
        message: &str,
    ) -> Result<(git2::Oid, String), WorkspaceError> {
        let key = format!("{name}:{}", sequence.join(","));
        self.locked(|| {
            let head = Repository::open(self.repo_path(name))
                .ok()
                .and_then(|repo| repo.refname_to_id("HEAD").ok());
            let known = self
                .numbers
                .lock()
                .expect("not poisoned")
                .get(&key)
                .copied();
            let (next, listed) = match known {
                // HEAD is this process's last numbered commit: its number was the highest.
                Some((commit, last)) if Some(commit) == head => (last + 1, false),
                _ => {
                    let highest = sequence
                        .iter()
                        .flat_map(|f| self.list_at_head(name, f))
                        .filter_map(|entry| entry.get(..6)?.parse::<u64>().ok())
                        .max()
                        .unwrap_or(0);
                    (highest + 1, true)
                }
            };
            let rel = format!("{folder}/{next:06}.{suffix}");
            if listed && self.read_at_head(name, &rel).is_some() {
                return Err(WorkspaceError::Exists {
                    repo: self.repo_path(name),
                    path: rel,
                });
            }
            let mut all = Vec::with_capacity(files.len() + 1);
            all.push((rel.as_str(), content.as_slice()));
            all.extend(slices(files));
            let oid = self.commit_locked(name, &all, message)?;
            self.numbers
                .lock()
                .expect("not poisoned")
                .insert(key.clone(), (oid, next));
            Ok((oid, rel))
        })
    }

    /// Commits one file whose content `write` produces straight into the working tree, never
    /// whole in memory (a project's `result.json` of a million outputs is tens of megabytes);
    /// git hashes it from the file. Returns the commit id.
    pub fn commit_written(
        &self,
        name: &str,
        rel: &str,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
        message: &str,
    ) -> Result<git2::Oid, WorkspaceError> {
        self.locked(|| {
            let file = create_parent(&self.repo_path(name).join(rel))?;
            let io = |source| WorkspaceError::Io {
                path: file.clone(),
                source,
            };
            let mut out = std::io::BufWriter::new(std::fs::File::create(&file).map_err(io)?);
            write(&mut out)
                .and_then(|()| std::io::Write::flush(&mut out))
                .map_err(io)?;
            drop(out);
            self.commit_paths(name, &[rel], message)
        })
    }

    fn commit_locked(
        &self,
        name: &str,
        files: &[(&str, &[u8])],
        message: &str,
    ) -> Result<git2::Oid, WorkspaceError> {
        let path = self.repo_path(name);
        for (rel, content) in files {
            let file = create_parent(&path.join(rel))?;
            std::fs::write(&file, content).map_err(|source| WorkspaceError::Io {
                path: file.clone(),
                source,
            })?;
        }
        let rels: Vec<&str> = files.iter().map(|(rel, _)| *rel).collect();
        self.commit_paths(name, &rels, message)
    }

    /// Adds the files `rels`, already in the working tree, to the index and commits the
    /// index on HEAD. Only under the workspace lock.
    fn commit_paths(
        &self,
        name: &str,
        rels: &[&str],
        message: &str,
    ) -> Result<git2::Oid, WorkspaceError> {
        let path = self.repo_path(name);
        // Holding the workspace lock, any git lock file can only be left by a client that
        // died mid-commit.
        clear_stale_locks(&path.join(".git"));
        let repo = Repository::open(&path).map_err(git("open", &path))?;
        let mut index = repo.index().map_err(git("index", &path))?;
        for rel in rels {
            index.add_path(Path::new(rel)).map_err(git("add", &path))?;
        }
        // The tree first: writing it fills the index's cache of tree ids, which the index
        // file then keeps, so the next commit writes again only the folders that changed
        // (written the other way round, every folder of every project was hashed anew at
        // each commit).
        let tree_id = index.write_tree().map_err(git("write tree", &path))?;
        index.write().map_err(git("write index", &path))?;
        let tree = repo.find_tree(tree_id).map_err(git("find tree", &path))?;
        let sig = Signature::now("commanditaire", "commanditaire@localhost")
            .map_err(git("signature", &path))?;
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .map_err(git("commit", &path))
    }

    /// Reads a file of repository `name` at HEAD (not the working tree, which may be mid-write).
    pub fn read_at_head(&self, name: &str, rel: &str) -> Option<Vec<u8>> {
        self.read_with(name, rel, <[u8]>::to_vec)
    }

    /// Like [`Workspace::read_at_head`], but hands the content to `f` where git holds it,
    /// without a copy (a project's task list may be tens of megabytes).
    pub fn read_with<T>(&self, name: &str, rel: &str, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let repo = Repository::open(self.repo_path(name)).ok()?;
        let tree = repo.head().ok()?.peel_to_tree().ok()?;
        let entry = tree.get_path(Path::new(rel)).ok()?;
        let blob = repo.find_blob(entry.id()).ok()?;
        Some(f(blob.content()))
    }

    /// Hands the content of file `rel` of repository `name` at HEAD to `f` a piece at a time:
    /// streamed from git's object store where it can be (a loose object, as the client
    /// writes them), whole otherwise (a packed one). A project's task list is thus never
    /// held in memory beside what is made of it. `None` when the file is missing or could
    /// not be read to its end.
    pub fn read_chunks(&self, name: &str, rel: &str, mut f: impl FnMut(&[u8])) -> Option<()> {
        use std::io::Read;
        let repo = Repository::open(self.repo_path(name)).ok()?;
        let tree = repo.head().ok()?.peel_to_tree().ok()?;
        let entry = tree.get_path(Path::new(rel)).ok()?;
        let odb = repo.odb().ok()?;
        if let Ok((mut reader, _, _)) = odb.reader(entry.id()) {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) => return Some(()),
                    Ok(n) => f(&buffer[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
        }
        let blob = repo.find_blob(entry.id()).ok()?;
        f(blob.content());
        Some(())
    }

    /// Lists the names of the entries of folder `rel` of repository `name` at HEAD.
    pub fn list_at_head(&self, name: &str, rel: &str) -> Vec<String> {
        let Ok(repo) = Repository::open(self.repo_path(name)) else {
            return vec![];
        };
        let Some(tree) = repo.head().ok().and_then(|h| h.peel_to_tree().ok()) else {
            return vec![];
        };
        let sub = if rel.is_empty() {
            Some(tree)
        } else {
            tree.get_path(Path::new(rel))
                .ok()
                .and_then(|e| e.to_object(&repo).ok())
                .and_then(|o| o.into_tree().ok())
        };
        sub.map(|t| {
            t.iter()
                .filter_map(|e| e.name().ok().map(String::from))
                .collect()
        })
        .unwrap_or_default()
    }
}

/// Creates the folders above `file`; returns `file`.
fn create_parent(file: &Path) -> Result<PathBuf, WorkspaceError> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|source| WorkspaceError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(file.to_path_buf())
}

/// Files as (path, content) slices.
fn slices(files: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    files
        .iter()
        .map(|(path, content)| (path.as_str(), content.as_slice()))
        .collect()
}

/// Removes the lock files git leaves when it dies mid-write (`index.lock`, `HEAD.lock`,
/// `refs/heads/main.lock`, `packed-refs.lock`, `logs/...lock`, ...). Only to be called
/// under the workspace lock, when no live writer can own one.
fn clear_stale_locks(git_dir: &Path) {
    fn walk(dir: &Path, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                // Objects are written to temporary files, never locked: skip them (large).
                if depth < 6 && entry.file_name() != "objects" {
                    walk(&path, depth + 1);
                }
            } else if path.extension().is_some_and(|e| e == "lock") {
                tracing::warn!(file = %path.display(), "removing a stale git lock");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    walk(git_dir, 0);
}

/// Makes libgit2 fsync what it writes in a repository (objects, index, refs) before a
/// commit returns, so that a result acked after its commit survives a power cut, and skips
/// its check of the objects a new tree names (see below). Global to the process; set once.
#[allow(unsafe_code)] // one FFI call, see SAFETY below
fn durable_git() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        libgit2_sys::init();
        // SAFETY: a documented libgit2 option taking one int; called once, before this
        // process opens any repository.
        let rc = unsafe {
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as std::ffi::c_int,
                1 as std::ffi::c_int,
            )
        };
        debug_assert!(rc >= 0, "GIT_OPT_ENABLE_FSYNC_GITDIR refused");
        // libgit2 checks by default that every entry of a tree it writes names an object
        // present in the repository: one loose-object read per entry of the index at every
        // commit, so a batch cost grew with the batches before it (at 10^6 results, half the
        // tracking time went there). Every object a commit here refers to is either written
        // by that commit (the files it adds, hashed into the repository first) or was
        // already in the tree of HEAD, so the check can find nothing wrong.
        git2::opts::strict_object_creation(false);
    });
}

fn git(op: &'static str, repo: &Path) -> impl FnOnce(git2::Error) -> WorkspaceError {
    let repo = repo.to_path_buf();
    move |source| WorkspaceError::Git { op, repo, source }
}
