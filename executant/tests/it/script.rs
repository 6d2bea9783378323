//! Code on demand: scripts come only from allowlisted repositories, within a time and size
//! budget, with one lock per repository and a bounded cache.

use std::path::Path;
use std::time::{Duration, Instant};

use executant::script::{FetchLimits, ScriptCache, ScriptError, MAX_CACHED_REPOS};
use tasks::model::{ExecSpec, ScriptRef};
use tasks::{Outcome, Task, TaskOutput, TaskSpec};

use crate::support::*;

/// A repository at `dir` with `files` committed; returns the commit.
fn repo_with(dir: &Path, files: &[(&str, &[u8])]) -> String {
    let repo = git2::Repository::init(dir).unwrap();
    let mut index = repo.index().unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
        index.add_path(Path::new(name)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("test", "test@example.invalid").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "scripts", &tree, &[])
        .unwrap()
        .to_string()
}

fn script_task(project: &str, index: u32, repo: &Path, commit: &str, path: &str) -> Task {
    Task {
        schema: tasks::SCHEMA_VERSION,
        project: project.into(),
        index,
        timeout_secs: None,
        spec: TaskSpec::Exec(ExecSpec {
            image: "debian:bookworm-slim".into(),
            command: vec!["cat".into(), format!("/task/{path}")],
            script: Some(ScriptRef {
                repo: repo.display().to_string(),
                commit: commit.into(),
                path: path.into(),
            }),
        }),
    }
}

/// The case: a task naming a local repository outside what the executant allows
/// gets a failed result naming that location (not a retry, and not the file's content),
/// while a task from an allowed repository runs its script.
#[tokio::test(flavor = "multi_thread")]
async fn only_allowlisted_repositories_are_fetched() {
    let allowed = tempfile::tempdir_in(script_repos_root()).unwrap();
    let allowed_commit = repo_with(allowed.path(), &[("hello.sh", b"from the allowed repo\n")]);
    // Outside the allowed folder: a repository holding something the task should not see.
    let outside = tempfile::tempdir().unwrap();
    let outside_commit = repo_with(outside.path(), &[("secret.txt", b"do-not-leak\n")]);
    // Inside the allowed folder by name only: `..` leads out of it (both are in the temp
    // folder).
    let dotdot = allowed
        .path()
        .join("../..")
        .join(outside.path().file_name().unwrap());
    assert_eq!(
        dotdot.canonicalize().unwrap(),
        outside.path().canonicalize().unwrap()
    );

    let id = unique_project("exec-script");
    let tasks = vec![
        script_task(&id, 0, allowed.path(), &allowed_commit, "hello.sh"),
        script_task(&id, 1, outside.path(), &outside_commit, "secret.txt"),
        script_task(&id, 2, &dotdot, &outside_commit, "secret.txt"),
    ];
    let executant = InProcess::start(test_config());
    publish_tasks(&id, &tasks).await;
    let (results, _) = collect_results(&id, 3, Duration::from_secs(120)).await;
    executant.stop().await;
    drop_results(&id).await;

    match &results[&0].outcome {
        Outcome::Ok {
            output: TaskOutput::Exec { stdout },
        } => assert_eq!(stdout, "from the allowed repo\n"),
        other => panic!("the allowed script did not run: {other:?}"),
    }
    for (index, repo) in [(1, outside.path().to_path_buf()), (2, dotdot)] {
        let result = &results[&index];
        let Outcome::Failed { reason } = &result.outcome else {
            panic!("task {index} ran: {result:?}");
        };
        assert!(
            reason.contains(&format!("`{}`", repo.display()))
                && reason.contains("--allow-script-repo"),
            "{reason}"
        );
        assert!(!format!("{result:?}").contains("do-not-leak"));
    }
}

/// A fetch over the size cap is refused (the task's failure, naming the limit), and the
/// partial clone is not kept.
#[tokio::test]
async fn fetches_over_the_size_cap_are_refused() {
    let root = tempfile::tempdir_in(script_repos_root()).unwrap();
    let repo = root.path().join("big");
    std::fs::create_dir_all(&repo).unwrap();
    // Incompressible bytes, so the pack is as large as the file.
    let mut big = vec![0u8; 256 * 1024];
    getrandom(&mut big);
    let commit = repo_with(&repo, &[("big.bin", &big), ("small.sh", b"echo hi\n")]);
    let scripts = tempfile::tempdir().unwrap();
    let cache = ScriptCache::in_dir(
        scripts.path(),
        vec![repo.display().to_string()],
        FetchLimits {
            timeout: Duration::from_secs(30),
            max_bytes: 64 * 1024,
        },
    );
    let script = ScriptRef {
        repo: repo.display().to_string(),
        commit,
        path: "small.sh".into(),
    };
    match cache.materialize(&script).await {
        Err(ScriptError::Refused(reason)) => {
            assert!(reason.contains("limit of 65536 bytes"), "{reason}")
        }
        other => panic!(
            "expected a refusal, got {:?}",
            other.map(|d| d.path().to_owned())
        ),
    }
    assert_eq!(cache.cached(), 0, "the partial clone is removed");
}

/// A remote that accepts the connection and never answers: its fetch ends at the timeout,
/// and meanwhile scripts from another repository are fetched at once (one lock per
/// repository, not one for the executant). Past MAX_CACHED_REPOS repositories, the least
/// recently used clones are removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_remote_times_out_without_blocking_other_repositories() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("git://{}/tasks.git", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        // Accept, then say nothing until the test ends.
        let conn = silent.accept();
        std::thread::sleep(Duration::from_secs(4));
        drop(conn);
    });
    let root = tempfile::tempdir_in(script_repos_root()).unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let cache = std::sync::Arc::new(ScriptCache::in_dir(
        scripts.path(),
        vec![silent_url.clone(), format!("{}/**", root.path().display())],
        FetchLimits {
            timeout: Duration::from_secs(2),
            max_bytes: 1024 * 1024,
        },
    ));
    let slow = {
        let cache = cache.clone();
        let script = ScriptRef {
            repo: silent_url.clone(),
            commit: "0123456789012345678901234567890123456789".into(),
            path: "s.sh".into(),
        };
        tokio::spawn(async move {
            let start = Instant::now();
            let result = cache.materialize(&script).await.map(|_| ());
            (result, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fast = Vec::new();
    for i in 0..MAX_CACHED_REPOS + 2 {
        let repo = root.path().join(format!("r{i}"));
        std::fs::create_dir_all(&repo).unwrap();
        let commit = repo_with(&repo, &[("s.sh", format!("echo {i}\n").as_bytes())]);
        let start = Instant::now();
        let dir = cache
            .materialize(&ScriptRef {
                repo: repo.display().to_string(),
                commit,
                path: "s.sh".into(),
            })
            .await
            .unwrap();
        fast.push(start.elapsed());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("s.sh")).unwrap(),
            format!("echo {i}\n")
        );
    }
    assert!(
        !slow.is_finished(),
        "the slow fetch was still under way while the others ran"
    );
    let slowest = fast.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(1),
        "a local fetch waited {slowest:?} behind the slow remote"
    );
    let (result, took) = slow.await.unwrap();
    eprintln!(
        "{} local fetches during the silent remote's fetch: slowest {slowest:?}; the silent \
         one ended after {took:?}",
        fast.len()
    );
    match result {
        Err(ScriptError::Fetch(reason)) => {
            assert!(
                reason.contains("longer than") || reason.contains("timed out"),
                "{reason}"
            )
        }
        other => panic!("expected a fetch timeout, got {other:?}"),
    }
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "the slow fetch ended after {took:?}"
    );
    assert!(
        cache.cached() <= MAX_CACHED_REPOS,
        "{} clones cached",
        cache.cached()
    );
    held.join().unwrap();
}

fn getrandom(buf: &mut [u8]) {
    // xorshift: enough to defeat compression, no extra dependency.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}
