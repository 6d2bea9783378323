//! Pushing the workspace to remotes: local bare repositories, a refusing remote, credentials
//! asked once, and the GitHub flow against a fake of the GitHub REST API (only the API is
//! faked: the pushes are real, to the local bare repositories the fake reports as clone URLs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::support::*;

const REPOS: [&str; 4] = ["tasks", "tracking", "results", "config"];

#[test]
fn local_bare_repositories_receive_every_repository() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let base = dir.path().join("remotes/myproj");
    let (code, json, out) = client_json(
        &ws,
        &[
            "--remote",
            base.to_str().unwrap(),
            "nqueens",
            "8",
            "--local",
            "--id",
            "pushed-8",
        ],
    );
    assert_eq!(code, 0, "{json} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json["solutions"], 92);
    for repo in REPOS {
        assert_same_main(&ws.join(repo), &base.join(format!("{repo}.git")));
        // The remote was anonymous: nothing about it in the repository's configuration.
        let config = std::fs::read_to_string(ws.join(repo).join(".git/config")).unwrap();
        assert!(!config.contains("remote"), "{repo}: {config}");
    }
    let bare = git2::Repository::open_bare(base.join("tracking.git")).unwrap();
    assert_eq!(bare.head().unwrap().name().ok(), Some("refs/heads/main"));
    let last = bare.head().unwrap().peel_to_commit().unwrap();
    assert!(
        last.summary()
            .ok()
            .flatten()
            .is_some_and(|s| s.starts_with("Project pushed-8 complete")),
        "{:?}",
        last.summary()
    );

    // A second project pushes on top (a fast-forward), through the environment variable.
    let out = client(&ws)
        .env("GIT_REMOTE_BASE", &base)
        .args(["--json", "nqueens", "6", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    for repo in REPOS {
        assert_same_main(&ws.join(repo), &base.join(format!("{repo}.git")));
    }
}

#[test]
fn a_refused_push_is_an_error_naming_the_repo_and_the_local_recording_stays() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let base = dir.path().join("remotes");
    // The remote tracking repository has a history of its own: the push is not a
    // fast-forward and is refused.
    let bare = git2::Repository::init_opts(
        base.join("tracking.git"),
        git2::RepositoryInitOptions::new()
            .bare(true)
            .initial_head("main"),
    )
    .unwrap();
    let tree = bare
        .find_tree(bare.treebuilder(None).unwrap().write().unwrap())
        .unwrap();
    let sig = git2::Signature::now("someone", "someone@elsewhere").unwrap();
    let theirs = bare
        .commit(Some("refs/heads/main"), &sig, &sig, "theirs", &tree, &[])
        .unwrap();

    let out = client(&ws)
        .args(["--remote", base.to_str().unwrap()])
        .args(["nqueens", "8", "--local", "--id", "refused-8"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pushing tracking to") && err.contains("refused the push of refs/heads/main"),
        "{err}"
    );
    assert!(
        err.contains("is recorded in") && err.contains("nothing is lost"),
        "{err}"
    );
    // Nothing lost: the project is in the workspace, and the remote kept its own history.
    assert!(git_log(&ws.join("tasks"))[0].starts_with("Project refused-8"));
    assert!(git_log(&ws.join("tracking"))[0].contains("started"));
    assert_eq!(
        bare.refname_to_id("refs/heads/main").unwrap(),
        theirs,
        "the refused push changed the remote"
    );
}

#[test]
fn credentials_are_offered_once_then_the_push_fails() {
    // A git server over http that refuses every credential.
    let fake = Fake::start(Vec::new(), "me", None);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = client(&dir.path().join("ws"))
        .env("GIT_REMOTE_TOKEN", "bad-token-123\n")
        .args(["--remote", &format!("{}/git/team", fake.url)])
        .args(["nqueens", "6", "--local"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(err.contains("pushing tasks to"), "{err}");
    assert!(!err.contains("bad-token-123"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let git_requests = fake.requests_to("/git/");
    assert!(
        (1..=4).contains(&git_requests.len()),
        "the credentials were asked for again and again: {git_requests:?}"
    );
    // The token was offered (once, as the password), never written anywhere.
    assert!(git_requests.iter().any(|r| r.auth.starts_with("Basic ")));
    assert_no_secret(&dir.path().join("ws"), "bad-token-123", &[]);
}

#[test]
fn github_repositories_are_created_when_missing_and_the_token_stays_secret() {
    const TOKEN: &str = "ghp_FAKE0123456789abcdefSECRET";
    for (owner, create_route) in [("alice", "/user/repos"), ("acme", "/orgs/acme/repos")] {
        let dir = tempfile::tempdir().unwrap();
        let bares = dir.path().join("github");
        // `proj-config` already exists on "GitHub"; the three others are missing.
        init_bare(&bares.join(format!("{owner}/proj-config.git")));
        let fake = Fake::start(vec![format!("{owner}/proj-config")], "alice", Some(bares));
        let ws = dir.path().join("ws");
        let out = client(&ws)
            .env("GITHUB_TOKEN", format!("{TOKEN}\n"))
            .env("GITHUB_API_URL", &fake.url)
            .env("RUST_LOG", "debug")
            .args(["--github-owner", owner, "--github-prefix", "proj"])
            .args(["--json", "nqueens", "8", "--local", "--id", "gh-8"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{owner}: {stderr}");
        assert!(stdout.contains("\"solutions\":92"), "{stdout}");

        let requests = fake.requests();
        let lookups: BTreeSet<String> = requests
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/repos/"))
            .map(|r| r.path.clone())
            .collect();
        let expected: BTreeSet<String> = REPOS
            .iter()
            .map(|r| format!("/repos/{owner}/proj-{r}"))
            .collect();
        assert_eq!(lookups, expected, "{owner}");
        let created: Vec<&Request> = requests.iter().filter(|r| r.method == "POST").collect();
        let names: Vec<&str> = created
            .iter()
            .map(|r| r.body["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["proj-tasks", "proj-tracking", "proj-results"],
            "{owner}: only the missing ones are created"
        );
        for r in &created {
            assert_eq!(r.path, create_route, "{owner}");
            assert_eq!(r.body["private"], true, "{owner}: private by default");
        }
        for r in &requests {
            assert_eq!(
                r.auth,
                format!("Bearer {TOKEN}"),
                "{owner}: {} {} (the token is trimmed and always sent)",
                r.method,
                r.path
            );
        }
        // The pushes went to the clone URLs GitHub reported.
        for repo in REPOS {
            let bare = dir.path().join(format!("github/{owner}/proj-{repo}.git"));
            assert_same_main(&ws.join(repo), &bare);
        }
        assert_no_secret(&ws, TOKEN, &[&stdout, &stderr]);
        assert_no_secret(&dir.path().join("github"), TOKEN, &[]);
    }
}

#[test]
fn github_errors_are_actionable_and_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = client(&dir.path().join("ws"))
        .env_remove("GITHUB_TOKEN")
        .args(["--github-owner", "alice", "nqueens", "6", "--local"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GITHUB_TOKEN"));

    // The API refuses the token: nothing is pushed, the message says why.
    let fake = Fake::start(Vec::new(), "alice", None);
    fake.state.lock().unwrap().refuse_all = true;
    let out = client(&dir.path().join("ws"))
        .env("GITHUB_TOKEN", "ghp_revoked")
        .env("GITHUB_API_URL", &fake.url)
        .args(["--github-owner", "alice", "nqueens", "6", "--local"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("invalid or expired"), "{err}");
    assert!(!err.contains("ghp_revoked"), "{err}");

    // The secret does not show in --help, even when set.
    let help = client(&dir.path().join("ws"))
        .env("GITHUB_TOKEN", "ghp_in_env")
        .env("GIT_REMOTE_BASE", "https://u:pw-in-env@host/g")
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--remote"), "{help}");
    assert!(
        !help.contains("ghp_in_env") && !help.contains("pw-in-env"),
        "{help}"
    );
}

/// The broker path pushes too: the remote ends with the complete project.
#[test]
fn a_project_through_the_broker_is_pushed_when_complete() {
    let _executant = Executant::start(1);
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let base = dir.path().join("remotes");
    let (code, json, _) = client_json(
        &ws,
        &[
            "--remote",
            base.to_str().unwrap(),
            "exec",
            "--id",
            "pushed-echo",
            "--count",
            "3",
            "--",
            "echo",
            "task {index}",
        ],
    );
    assert_eq!(code, 0, "{json}");
    for repo in REPOS {
        assert_same_main(&ws.join(repo), &base.join(format!("{repo}.git")));
    }
    let results = git_log(&base.join("results.git"));
    assert!(
        results[0].contains("pushed-echo result: 3/3"),
        "{results:?}"
    );
}

/// The branch `main` of `bare` is the commit HEAD of `local`.
fn assert_same_main(local: &Path, bare: &Path) {
    let local_repo = git2::Repository::open(local).unwrap();
    let head = local_repo.head().unwrap();
    assert_eq!(
        head.name().ok(),
        Some("refs/heads/main"),
        "{}",
        local.display()
    );
    let bare_repo = git2::Repository::open_bare(bare)
        .unwrap_or_else(|e| panic!("{} is not a bare repository: {e}", bare.display()));
    assert_eq!(
        bare_repo.refname_to_id("refs/heads/main").unwrap(),
        head.target().unwrap(),
        "{} and {} differ",
        local.display(),
        bare.display()
    );
}

/// `secret` is in no output given, no file under `root` (`.git/config` included), and no
/// commit message, tree entry or blob of any repository under `root`, in all its history.
fn assert_no_secret(root: &Path, secret: &str, outputs: &[&str]) {
    for output in outputs {
        assert!(
            !output.contains(secret),
            "the secret is in the output: {output}"
        );
    }
    let mut stack = vec![root.to_path_buf()];
    let mut repos = Vec::new();
    while let Some(dir) = stack.pop() {
        if let Ok(repo) = git2::Repository::open(&dir) {
            repos.push(repo);
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "the secret is in {}",
                    path.display()
                );
            }
        }
    }
    assert!(!repos.is_empty(), "no repository under {}", root.display());
    for repo in repos {
        // Every object, reachable or not: commits, trees and blobs are compressed on disk.
        let odb = repo.odb().unwrap();
        odb.foreach(|oid| {
            let object = odb.read(*oid).unwrap();
            assert!(
                !contains(object.data(), secret.as_bytes()),
                "the secret is in object {oid} ({:?}) of {:?}",
                object.kind(),
                repo.path()
            );
            true
        })
        .unwrap();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn init_bare(path: &Path) {
    git2::Repository::init_opts(
        path,
        git2::RepositoryInitOptions::new()
            .bare(true)
            .mkpath(true)
            .initial_head("main"),
    )
    .unwrap();
}

/// One request the fake received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    auth: String,
    body: Value,
}

#[derive(Default)]
struct FakeState {
    /// `owner/name` of the repositories that exist.
    existing: BTreeSet<String>,
    login: String,
    /// Where the bare repositories live (`<dir>/<owner>/<name>.git`).
    bares: Option<PathBuf>,
    refuse_all: bool,
    requests: Vec<Request>,
}

type Shared = Arc<Mutex<FakeState>>;

/// A fake GitHub REST API (the endpoints octocrab calls here) and an http git endpoint that
/// refuses every credential, recording every request.
struct Fake {
    url: String,
    state: Shared,
    _runtime: tokio::runtime::Runtime,
}

impl Fake {
    fn start(existing: Vec<String>, login: &str, bares: Option<PathBuf>) -> Fake {
        let state: Shared = Arc::new(Mutex::new(FakeState {
            existing: existing.into_iter().collect(),
            login: login.to_string(),
            bares,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/user", get(user))
            .route("/repos/{owner}/{repo}", get(lookup))
            .route("/user/repos", post(create_for_user))
            .route("/orgs/{org}/repos", post(create_for_org))
            .route("/git/{*rest}", any(refuse_credentials))
            .with_state(state.clone());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake {
            url,
            state,
            _runtime: runtime,
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    fn requests_to(&self, prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

fn record(state: &Shared, method: &str, path: String, headers: &HeaderMap, body: Value) -> bool {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut state = state.lock().unwrap();
    state.requests.push(Request {
        method: method.into(),
        path,
        auth,
        body,
    });
    !state.refuse_all
}

fn unauthorized() -> (StatusCode, Json<Value>) {
    (
        StatusCode::UNAUTHORIZED,
        Json(
            json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest" }),
        ),
    )
}

async fn user(State(state): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    if !record(&state, "GET", "/user".into(), &headers, Value::Null) {
        return unauthorized();
    }
    let login = state.lock().unwrap().login.clone();
    (StatusCode::OK, Json(account(&login)))
}

/// A user as the API shows one (every field octocrab's `Author` requires).
fn account(login: &str) -> Value {
    let api = format!("https://api.github.invalid/users/{login}");
    json!({
        "login": login, "id": 1, "node_id": "U_fake", "type": "User", "site_admin": false,
        "avatar_url": "https://avatars.github.invalid/u/1", "gravatar_id": "",
        "url": api, "html_url": format!("https://github.invalid/{login}"),
        "followers_url": format!("{api}/followers"), "following_url": format!("{api}/following"),
        "gists_url": format!("{api}/gists"), "starred_url": format!("{api}/starred"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"), "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events"),
        "received_events_url": format!("{api}/received_events"),
    })
}

async fn lookup(
    State(state): State<Shared>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let path = format!("/repos/{owner}/{repo}");
    if !record(&state, "GET", path, &headers, Value::Null) {
        return unauthorized();
    }
    let state = state.lock().unwrap();
    if state.existing.contains(&format!("{owner}/{repo}")) {
        (StatusCode::OK, Json(repository(&state, &owner, &repo)))
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(
                json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest/repos/repos#get-a-repository", "status": "404" }),
            ),
        )
    }
}

async fn create_for_user(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let owner = state.lock().unwrap().login.clone();
    create(state, "/user/repos".into(), owner, headers, body)
}

async fn create_for_org(
    State(state): State<Shared>,
    UrlPath(org): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    create(state, format!("/orgs/{org}/repos"), org, headers, body)
}

fn create(
    state: Shared,
    path: String,
    owner: String,
    headers: HeaderMap,
    body: Value,
) -> (StatusCode, Json<Value>) {
    if !record(&state, "POST", path, &headers, body.clone()) {
        return unauthorized();
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    let mut state = state.lock().unwrap();
    if !state.existing.insert(format!("{owner}/{name}")) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({ "message": "Repository creation failed.", "errors": [{ "message": "name already exists on this account" }] }),
            ),
        );
    }
    // Like GitHub, creating the repository makes an empty one to push to.
    if let Some(bares) = &state.bares {
        init_bare(&bares.join(format!("{owner}/{name}.git")));
    }
    (StatusCode::CREATED, Json(repository(&state, &owner, &name)))
}

/// A plausible repository body; its `clone_url` is the local bare repository.
fn repository(state: &FakeState, owner: &str, name: &str) -> Value {
    let clone_url = match &state.bares {
        Some(bares) => format!(
            "file://{}",
            bares.join(format!("{owner}/{name}.git")).display()
        ),
        None => format!("https://github.invalid/{owner}/{name}.git"),
    };
    json!({
        "id": 4242,
        "node_id": "R_kgDOfake",
        "name": name,
        "full_name": format!("{owner}/{name}"),
        "private": true,
        "owner": account(owner),
        "html_url": format!("https://github.invalid/{owner}/{name}"),
        "url": format!("https://api.github.invalid/repos/{owner}/{name}"),
        "clone_url": clone_url,
        "ssh_url": format!("git@github.invalid:{owner}/{name}.git"),
        "default_branch": "main",
        "visibility": "private",
    })
}

async fn refuse_credentials(
    State(state): State<Shared>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    record(&state, "GIT", format!("/git/{rest}"), &headers, Value::Null);
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Basic realm=\"git\"")],
        "bad credentials",
    )
}
