//! The workspace's commits seen from outside: by plain git and by a second client sharing
//! the workspace. A commit skips libgit2's check of the objects a tree names, keeps the
//! index's cache of tree ids, and remembers the last number of a sequence: none of these
//! may leave a repository that git finds broken, a working tree that differs from HEAD, or
//! a numbered file written over another.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use commanditaire::Workspace;

/// Runs plain git in `repo`; returns its standard output, failing the test if git fails.
fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        repo.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("git prints UTF-8")
}

/// What plain git says of a repository: every object sound, nothing uncommitted.
fn assert_sound_and_clean(repo: &Path) {
    git(repo, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(
        git(repo, &["status", "--porcelain"]),
        "",
        "{}",
        repo.display()
    );
}

#[test]
fn two_clients_numbering_one_sequence_at_once_never_reuse_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    // Two handles, as two client processes have: each remembers only its own numbers.
    let first = Workspace::open_or_init(&root).unwrap();
    let second = Workspace::open_or_init(&root).unwrap();
    const EACH: usize = 40;
    let write = |ws: Workspace, who: &'static str| {
        std::thread::spawn(move || {
            let mut paths = Vec::new();
            for i in 0..EACH {
                let (_, path) = ws
                    .commit_numbered(
                        "tracking",
                        &["p/results", "p/retries"],
                        "p/results",
                        "jsonl",
                        format!("{who} {i}\n").into_bytes(),
                        &[],
                        &format!("{who} batch {i}"),
                    )
                    .unwrap();
                paths.push(path);
                // Another kind of commit between two batches moves HEAD too.
                if i % 7 == 0 {
                    ws.commit(
                        "tracking",
                        &[(format!("p/{who}.json"), format!("{i}\n").into_bytes())],
                        "progress",
                    )
                    .unwrap();
                }
            }
            paths
        })
    };
    let a = write(first.clone(), "first");
    let b = write(second.clone(), "second");
    let mut paths = a.join().unwrap();
    paths.extend(b.join().unwrap());
    let unique: BTreeSet<&String> = paths.iter().collect();
    assert_eq!(
        unique.len(),
        2 * EACH,
        "a number was given twice: {paths:?}"
    );
    // Every batch is at HEAD with its own content, numbered 1 to 80 without a gap.
    let listed: BTreeSet<String> = first
        .list_at_head("tracking", "p/results")
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = (1..=2 * EACH).map(|n| format!("{n:06}.jsonl")).collect();
    assert_eq!(listed, expected);
    let mut contents = BTreeSet::new();
    for path in &paths {
        let content = second.read_at_head("tracking", path).unwrap();
        contents.insert(String::from_utf8(content).unwrap());
    }
    assert_eq!(contents.len(), 2 * EACH, "a batch was written over another");
    assert_sound_and_clean(&root.join("tracking"));
}

#[test]
fn after_every_kind_of_commit_git_finds_the_repository_sound_and_clean() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    let ws = Workspace::open_or_init(&root).unwrap();
    // Two projects in one repository, committed in turn: the folders of one must survive
    // the other's commits, through the index's cache of tree ids.
    for round in 0..5 {
        for project in ["a", "b"] {
            let folder = format!("{project}/results");
            ws.commit_numbered(
                "tracking",
                &[folder.as_str()],
                &folder,
                "jsonl",
                format!("{project} {round}\n").into_bytes(),
                &[(
                    format!("{project}/progress.json"),
                    format!("{round}\n").into_bytes(),
                )],
                "batch",
            )
            .unwrap();
        }
    }
    let big = "x".repeat(100_000);
    ws.commit_written(
        "results",
        "a/result.json",
        |out| {
            for _ in 0..20 {
                out.write_all(big.as_bytes())?;
            }
            Ok(())
        },
        "result",
    )
    .unwrap();
    let tree = git(
        &root.join("tracking"),
        &["ls-tree", "-r", "--name-only", "HEAD"],
    );
    for project in ["a", "b"] {
        for n in 1..=5 {
            assert!(
                tree.contains(&format!("{project}/results/{n:06}.jsonl")),
                "{tree}"
            );
        }
        assert!(tree.contains(&format!("{project}/progress.json")), "{tree}");
    }
    // The streamed file is at HEAD whole.
    let result = ws.read_at_head("results", "a/result.json").unwrap();
    assert_eq!(result.len(), 2_000_000);
    assert!(result.iter().all(|&b| b == b'x'));
    for repo in ["tracking", "results"] {
        assert_sound_and_clean(&root.join(repo));
    }
}
