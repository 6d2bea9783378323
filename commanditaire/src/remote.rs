//! Pushing the workspace's four repositories to remotes, and creating them on GitHub first.
//!
//! Two ways to name the remotes:
//! - a base (`--remote BASE`): repository `R` is pushed to `BASE/R.git`. BASE is any git URL
//!   (`https://host/group`, `ssh://git@host/group`, `git@host:group`, `file:///srv/git/p`) or
//!   a local folder, where a missing bare repository is created (`git init --bare`);
//! - GitHub (`--github-owner OWNER` and `GITHUB_TOKEN`): repository `R` is
//!   `OWNER/<prefix>-R`, created (private) through the GitHub API when missing, and pushed
//!   to the `clone_url` the API reports.
//!
//! Each push sends the current branch of a repository to the same branch of its remote,
//! never forced: a remote that has diverged refuses it, and the refusal is an error.
//!
//! **Invariant:** a token is handed to git only through the credentials callback, and to the
//! GitHub API only through octocrab: it never appears in a URL, a repository's
//! configuration (remotes are anonymous: nothing is written to `.git/config`), a commit, or a
//! message.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use git2::{Cred, CredentialType, PushOptions, RemoteCallbacks, Repository};

use tasks::layout::REPOSITORIES;

use crate::workspace::Workspace;

/// The environment variable holding the GitHub token (never a flag).
pub const GITHUB_TOKEN_ENV: &str = "GITHUB_TOKEN";
/// The environment variable holding a token for an https `--remote` (any host).
pub const REMOTE_TOKEN_ENV: &str = "GIT_REMOTE_TOKEN";
/// The environment variable overriding the GitHub API's base URL.
pub const GITHUB_API_ENV: &str = "GITHUB_API_URL";
/// The GitHub API's base URL by default.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// The shortest time between two background pushes while results arrive.
pub const PUSH_INTERVAL: Duration = Duration::from_secs(10);

/// A secret (a token): shown as `***` by `Debug`, readable only through [`Token::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from a raw value (an environment variable, a file): trimmed; `None` if empty.
    pub fn new(raw: &str) -> Option<Token> {
        let trimmed = raw.trim();
        (!trimmed.is_empty()).then(|| Token(trimmed.to_string()))
    }

    /// Reads a token from environment variable `var`.
    pub fn from_env(var: &str) -> Option<Token> {
        std::env::var(var).ok().and_then(|v| Token::new(&v))
    }

    /// The secret itself, to hand to git or the API (and nowhere else).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The GitHub side: who owns the repositories and what they are called.
#[derive(Debug, Clone)]
pub struct GitHubOptions {
    /// The user or organisation owning the repositories.
    pub owner: String,
    /// Repository `R` is named `<prefix>-R`.
    pub prefix: String,
    /// The API's base URL (`GITHUB_API_URL`, by default [`DEFAULT_GITHUB_API`]).
    pub api_url: String,
    /// The token (`GITHUB_TOKEN`): the API's bearer and the push's password.
    pub token: Token,
}

/// Where the repositories go.
#[derive(Debug, Clone)]
pub enum RemoteOptions {
    /// Repository `R` is pushed to `{base}/R.git`.
    Base {
        /// The base: a git URL or a local folder.
        base: String,
        /// The password for https remotes (`GIT_REMOTE_TOKEN`, or `GITHUB_TOKEN` for
        /// github.com); without it, git's credential helpers are asked.
        token: Option<Token>,
    },
    /// The repositories live on GitHub, created when missing.
    GitHub(GitHubOptions),
}

impl RemoteOptions {
    /// The options from the command line's flags, the tokens from the environment; `None`
    /// when nothing is to be pushed. The GitHub prefix defaults to the workspace folder's name.
    pub fn from_flags(
        base: Option<String>,
        github_owner: Option<String>,
        github_prefix: Option<String>,
        workspace: &Path,
    ) -> Result<Option<RemoteOptions>, RemoteError> {
        match (base, github_owner) {
            (Some(_), Some(_)) => Err(RemoteError::Usage(
                "choose --remote or --github-owner, not both".into(),
            )),
            (None, None) => Ok(None),
            (Some(base), None) => {
                let token = Token::from_env(REMOTE_TOKEN_ENV).or_else(|| {
                    host_of(&base)
                        .is_some_and(|h| h.eq_ignore_ascii_case("github.com"))
                        .then(|| Token::from_env(GITHUB_TOKEN_ENV))
                        .flatten()
                });
                Ok(Some(RemoteOptions::Base { base, token }))
            }
            (None, Some(owner)) => {
                let token = Token::from_env(GITHUB_TOKEN_ENV).ok_or_else(|| {
                    RemoteError::Usage(format!(
                        "--github-owner needs a GitHub token in the {GITHUB_TOKEN_ENV} environment variable"
                    ))
                })?;
                let prefix = match github_prefix {
                    Some(p) => p,
                    None => default_prefix(workspace)?,
                };
                let api_url = std::env::var(GITHUB_API_ENV)
                    .ok()
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| DEFAULT_GITHUB_API.to_string());
                Ok(Some(RemoteOptions::GitHub(GitHubOptions {
                    owner,
                    prefix,
                    api_url,
                    token,
                })))
            }
        }
    }
}

/// Why a remote could not be prepared or pushed to.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The flags or the environment do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The GitHub API refused or failed.
    #[error("GitHub API at {api}: {what}: {reason}")]
    GitHub {
        /// The API's base URL.
        api: String,
        /// What was attempted.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A local bare repository could not be created.
    #[error("creating the bare repository {path}: {reason}")]
    Init {
        /// Where.
        path: PathBuf,
        /// What git2 said.
        reason: String,
    },
    /// The remote refused to update a branch (it has diverged, it is protected, ...).
    #[error("pushing {repo} to {url}: the remote refused the push of {refname}: {reason}")]
    Rejected {
        /// The workspace repository.
        repo: &'static str,
        /// The remote (credentials redacted).
        url: String,
        /// The branch.
        refname: String,
        /// The remote's reason.
        reason: String,
    },
    /// The remote refused the credentials (asked once each, never again and again).
    #[error("pushing {repo} to {url}: the remote refused the credentials ({tried}); check the token or key and its rights")]
    Auth {
        /// The workspace repository.
        repo: &'static str,
        /// The remote (credentials redacted).
        url: String,
        /// What was offered.
        tried: String,
    },
    /// Any other failure of the push (the network, a missing remote repository, ...).
    #[error("pushing {repo} to {url}: {reason}")]
    Push {
        /// The workspace repository.
        repo: &'static str,
        /// The remote (credentials redacted).
        url: String,
        /// What git2 said.
        reason: String,
    },
    /// A workspace repository could not be read.
    #[error("reading {repo} to push it: {reason}")]
    Local {
        /// The workspace repository.
        repo: &'static str,
        /// What git2 said.
        reason: String,
    },
}

/// One repository's remote: where it goes and how to authenticate.
#[derive(Debug, Clone)]
pub struct Target {
    /// The workspace repository (one of [`REPOSITORIES`]).
    pub repo: &'static str,
    /// The remote URL (may be a local path); never written to the repository's config.
    pub url: String,
    /// A local bare repository to create when missing.
    pub local: Option<PathBuf>,
    /// The https password, if any.
    pub token: Option<Token>,
}

/// The targets under a base: `{base}/{repo}.git`.
pub fn base_targets(base: &str, token: Option<Token>) -> Vec<Target> {
    let base = base.trim_end_matches('/');
    REPOSITORIES
        .iter()
        .map(|&repo| {
            let url = format!("{base}/{repo}.git");
            let local = local_path(&url);
            Target {
                repo,
                url,
                local,
                token: token.clone(),
            }
        })
        .collect()
}

/// Pushes every repository to its target, one after the other; the first failure stops.
pub fn push_all(ws: &Workspace, targets: &[Target]) -> Result<(), RemoteError> {
    for target in targets {
        push_one(ws, target)?;
    }
    Ok(())
}

/// Pushes the current branch of one repository to the same branch of its target.
pub fn push_one(ws: &Workspace, target: &Target) -> Result<(), RemoteError> {
    let repo_name = target.repo;
    let local_err = |e: git2::Error| RemoteError::Local {
        repo: repo_name,
        reason: e.message().to_string(),
    };
    let repo = Repository::open(ws.repo_path(repo_name)).map_err(local_err)?;
    let head = match repo.head() {
        Ok(head) => head,
        // Nothing committed yet: nothing to push.
        Err(e) if e.code() == git2::ErrorCode::UnbornBranch => return Ok(()),
        Err(e) => return Err(local_err(e)),
    };
    let refname = head
        .name()
        .ok()
        .filter(|n| n.starts_with("refs/heads/"))
        .ok_or_else(|| local_err(git2::Error::from_str("HEAD is not on a branch")))?
        .to_string();
    if let Some(path) = &target.local {
        ensure_bare(path, &refname)?;
    }
    let shown = redact(&target.url);
    let mut remote = repo
        .remote_anonymous(&target.url)
        .map_err(|e| RemoteError::Push {
            repo: repo_name,
            url: shown.clone(),
            reason: tasks::amqp::redact_urls_in(e.message()),
        })?;

    let auth = Auth::new(target.token.as_ref());
    let rejected: RefCell<Vec<(String, String)>> = RefCell::new(Vec::new());
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(|url, user, allowed| auth.offer(url, user, allowed));
    callbacks.push_update_reference(|name, status| {
        if let Some(reason) = status {
            rejected
                .borrow_mut()
                .push((name.to_string(), reason.to_string()));
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks);
    let pushed = remote.push(&[format!("{refname}:{refname}")], Some(&mut options));
    drop(options);
    if let Err(source) = pushed {
        if auth.exhausted.get() {
            return Err(RemoteError::Auth {
                repo: repo_name,
                url: shown,
                tried: auth.tried.borrow().join(", "),
            });
        }
        // libgit2 reports some refusals (a non-fast-forward) as the push's own error.
        if source.class() == git2::ErrorClass::Reference
            || source.code() == git2::ErrorCode::NotFastForward
        {
            return Err(RemoteError::Rejected {
                repo: repo_name,
                url: shown,
                refname,
                reason: tasks::amqp::redact_urls_in(source.message()),
            });
        }
        return Err(RemoteError::Push {
            repo: repo_name,
            url: shown,
            reason: tasks::amqp::redact_urls_in(source.message()),
        });
    }
    if let Some((refname, reason)) = rejected.into_inner().into_iter().next() {
        return Err(RemoteError::Rejected {
            repo: repo_name,
            url: shown,
            refname,
            reason,
        });
    }
    Ok(())
}

/// Pushes in the background while a project runs, at most every [`PUSH_INTERVAL`], and on
/// demand ([`Pusher::push_now`]). Pushes never overlap.
pub struct Pusher {
    ws: Workspace,
    targets: Arc<Vec<Target>>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Held during a push: the background thread and [`Pusher::push_now`] take turns.
    pushing: Mutex<()>,
}

#[derive(Default)]
struct State {
    requested: bool,
    stop: bool,
}

impl Pusher {
    /// A pusher of `ws` to `targets` ([`base_targets`], or GitHub's after
    /// `github::ensure_repositories`).
    pub fn new(ws: &Workspace, targets: Vec<Target>, interval: Duration) -> Pusher {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            pushing: Mutex::new(()),
        });
        let targets = Arc::new(targets);
        let thread = {
            let (ws, targets, shared) = (ws.clone(), targets.clone(), shared.clone());
            std::thread::Builder::new()
                .name("push".into())
                .spawn(move || background(&ws, &targets, &shared, interval))
                .ok()
        };
        Pusher {
            ws: ws.clone(),
            targets,
            shared,
            thread,
        }
    }

    /// Asks for a push soon, without waiting for it (a failure is logged as a warning; the
    /// next [`Pusher::push_now`] tells).
    pub fn request(&self) {
        self.shared.state.lock().expect("push state").requested = true;
        self.shared.wake.notify_all();
    }

    /// A cheap closure that calls [`Pusher::request`] (for `Tracker::notify_commits`).
    pub fn requester(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || {
            shared.state.lock().expect("push state").requested = true;
            shared.wake.notify_all();
        }
    }

    /// Pushes every repository now and waits for the outcome.
    pub fn push_now(&self) -> Result<(), RemoteError> {
        let _turn = self.shared.pushing.lock().expect("push lock");
        push_all(&self.ws, &self.targets)
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.shared.state.lock().expect("push state").stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn background(ws: &Workspace, targets: &[Target], shared: &Shared, interval: Duration) {
    let mut last: Option<Instant> = None;
    loop {
        {
            let mut state = shared.state.lock().expect("push state");
            loop {
                if state.stop {
                    return;
                }
                let ready = last.is_none_or(|t| t.elapsed() >= interval);
                if state.requested && ready {
                    state.requested = false;
                    break;
                }
                let wait = match last {
                    Some(t) if state.requested => interval.saturating_sub(t.elapsed()),
                    _ => Duration::from_secs(3600),
                };
                state = shared.wake.wait_timeout(state, wait).expect("push state").0;
            }
        }
        let _turn = shared.pushing.lock().expect("push lock");
        if let Err(e) = push_all(ws, targets) {
            tracing::warn!("background push failed (tried again at the end): {e}");
        }
        last = Some(Instant::now());
    }
}

/// Offers each kind of credentials once; a refused one is never offered again (libgit2
/// would otherwise ask again and again).
struct Auth<'a> {
    token: Option<&'a Token>,
    userpass_tried: Cell<bool>,
    ssh_tried: Cell<usize>,
    exhausted: Cell<bool>,
    tried: RefCell<Vec<&'static str>>,
}

impl<'a> Auth<'a> {
    fn new(token: Option<&'a Token>) -> Auth<'a> {
        Auth {
            token,
            userpass_tried: Cell::new(false),
            ssh_tried: Cell::new(0),
            exhausted: Cell::new(false),
            tried: RefCell::new(Vec::new()),
        }
    }

    fn offer(
        &self,
        url: &str,
        user: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = user.unwrap_or("git");
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let keys: Vec<PathBuf> = ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .filter_map(|k| home.as_ref().map(|h| h.join(".ssh").join(k)))
                .filter(|p| p.exists())
                .collect();
            let attempt = self.ssh_tried.get();
            self.ssh_tried.set(attempt + 1);
            if attempt == 0 {
                self.tried.borrow_mut().push("the ssh agent");
                return Cred::ssh_key_from_agent(user);
            }
            if let Some(key) = keys.get(attempt - 1) {
                self.tried.borrow_mut().push("a key in ~/.ssh");
                return Cred::ssh_key(user, None, key, None);
            }
        } else if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && !self.userpass_tried.replace(true)
        {
            if let Some(token) = self.token {
                self.tried.borrow_mut().push("the token");
                return Cred::userpass_plaintext(user.unwrap_or("x-access-token"), token.expose());
            }
            if let Ok(config) = git2::Config::open_default() {
                self.tried.borrow_mut().push("git's credential helper");
                return Cred::credential_helper(&config, url, user);
            }
        }
        self.exhausted.set(true);
        if self.tried.borrow().is_empty() {
            self.tried.borrow_mut().push("no credentials available");
        }
        Err(git2::Error::from_str("no more credentials to offer"))
    }
}

/// Creates a bare repository at `path` (its HEAD on `refname`) unless one is there.
fn ensure_bare(path: &Path, refname: &str) -> Result<(), RemoteError> {
    if Repository::open_bare(path).is_ok() {
        return Ok(());
    }
    let mut init = git2::RepositoryInitOptions::new();
    init.bare(true)
        .mkpath(true)
        .no_reinit(true)
        .initial_head(refname.trim_start_matches("refs/heads/"));
    Repository::init_opts(path, &init)
        .map(drop)
        .map_err(|e| RemoteError::Init {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
}

/// The local folder a URL names (a plain path or a `file://` URL), if it is one.
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if url.contains("://") {
        return None;
    }
    // `user@host:path` (scp-like) is ssh; a colon after the first slash belongs to a path.
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) if colon < slash => None,
        (Some(_), None) => None,
        _ => Some(PathBuf::from(url)),
    }
}

/// The host of a URL (`https://host/...`, `ssh://user@host/...`, `user@host:path`).
fn host_of(url: &str) -> Option<&str> {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None if local_path(url).is_none() => url,
        None => return None,
    };
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

/// A URL as it may be shown: any password in it replaced by `***`.
pub fn redact(url: &str) -> String {
    tasks::amqp::redact_url(url)
}

fn default_prefix(workspace: &Path) -> Result<String, RemoteError> {
    let absolute = std::path::absolute(workspace).unwrap_or_else(|_| workspace.to_path_buf());
    absolute
        .file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .ok_or_else(|| {
            RemoteError::Usage(format!(
                "cannot name GitHub repositories after {}: give --github-prefix",
                workspace.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_sorted_into_local_and_remote() {
        let table = [
            ("/srv/git/p/tasks.git", Some("/srv/git/p/tasks.git"), None),
            ("rel/dir/tasks.git", Some("rel/dir/tasks.git"), None),
            ("file:///srv/p/tasks.git", Some("/srv/p/tasks.git"), None),
            ("https://github.com/me/tasks.git", None, Some("github.com")),
            (
                "https://u:pw@git.example/g/t.git",
                None,
                Some("git.example"),
            ),
            ("ssh://git@host:22/g/t.git", None, Some("host")),
            ("git@github.com:me/tasks.git", None, Some("github.com")),
        ];
        for (url, local, host) in table {
            assert_eq!(local_path(url), local.map(PathBuf::from), "{url}");
            assert_eq!(host_of(url), host, "{url}");
        }
    }

    #[test]
    fn base_targets_follow_the_convention() {
        let urls: Vec<String> = base_targets("https://host/group/", None)
            .into_iter()
            .map(|t| t.url)
            .collect();
        assert_eq!(
            urls,
            [
                "https://host/group/tasks.git",
                "https://host/group/tracking.git",
                "https://host/group/results.git",
                "https://host/group/config.git"
            ]
        );
    }

    #[test]
    fn tokens_are_trimmed_and_never_shown() {
        let t = Token::new(" ghp_secret\n").unwrap();
        assert_eq!(t.expose(), "ghp_secret");
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert!(Token::new(" \n").is_none());
    }
}
