//! Issue 16: every outcome says where it came from (`status P --json`, the config
//! repository), and `verify P` checks a finished project's record and re-runs a sample.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn read_head(repo: &Path, rel: &str) -> String {
    let repo = git2::Repository::open(repo).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let entry = tree.get_path(Path::new(rel)).unwrap();
    let blob = repo.find_blob(entry.id()).unwrap();
    String::from_utf8_lossy(blob.content()).into_owned()
}

#[test]
fn every_outcome_names_its_executant_engine_image_worker_and_tasks_commit() {
    let _executant = Executant::start(4);
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client_json(
        ws.path(),
        &["nqueens", "8", "--depth", "1", "--id", "prov-nq"],
    );
    assert_eq!(code, 0, "{json}");
    let (code, status, _) = client_json(ws.path(), &["status", "prov-nq"]);
    assert_eq!(code, 0, "{status}");
    let provenance = &status["provenance"];
    let engine = docker(&["info", "--format", "{{.ID}}"]);
    let image = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "taskplatform/worker:latest",
    ]);
    let tasks_commit = provenance["tasks_commit"].as_str().unwrap().to_string();
    let tasks_repo = git2::Repository::open(ws.path().join("tasks")).unwrap();
    tasks_repo
        .find_commit(git2::Oid::from_str(&tasks_commit).unwrap())
        .expect("the tasks commit exists");
    let outcomes = provenance["outcomes"].as_array().unwrap();
    assert_eq!(
        outcomes.len(),
        4,
        "8 queens at depth 1, mirrored: {provenance}"
    );
    for o in outcomes {
        let p = &o["provenance"];
        assert!(
            p["executant"]
                .as_str()
                .unwrap()
                .starts_with("test-executant-"),
            "{o}"
        );
        assert_eq!(p["engine_id"].as_str(), Some(engine.as_str()), "{o}");
        assert_eq!(p["image"], "taskplatform/worker:latest", "{o}");
        assert_eq!(p["image_digest"].as_str(), Some(image.as_str()), "{o}");
        assert_eq!(p["worker_version"], env!("CARGO_PKG_VERSION"), "{o}");
        assert_eq!(
            p["tasks_commit"].as_str(),
            Some(tasks_commit.as_str()),
            "{o}"
        );
        assert!(p["attempt"].as_u64().unwrap() >= 1, "{o}");
        let started = p["started"].as_str().unwrap();
        let ended = p["ended"].as_str().unwrap();
        assert!(started.len() >= 20 && started <= ended, "{o}");
        assert!(o["digest"].as_str().unwrap().starts_with("sha256:"), "{o}");
    }
    // The config repository records the digest of the image the project ran with.
    let images: serde_json::Value =
        serde_json::from_str(&read_head(&ws.path().join("config"), "prov-nq/images.json")).unwrap();
    assert_eq!(
        images["images"][0]["digest"].as_str(),
        Some(image.as_str()),
        "{images}"
    );
    assert_eq!(
        images["images"][0]["worker_version"],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn verify_passes_an_untouched_project_and_names_an_edited_count() {
    let _executant = Executant::start(4);
    let ws = tempfile::tempdir().unwrap();
    let (code, json, _) = client_json(
        ws.path(),
        &["nqueens", "8", "--depth", "2", "--id", "prov-verify"],
    );
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["solutions"].as_u64(), Some(92));

    // Untouched: the record checks out and three tasks run again agree.
    let (code, found, out) = client_json(
        ws.path(),
        &["verify", "prov-verify", "--sample", "3", "--seed", "42"],
    );
    assert_eq!(code, 0, "{found} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(found["verified"], true, "{found}");
    assert_eq!(found["seed"], 42);
    let reruns = found["reruns"].as_array().unwrap();
    assert_eq!(reruns.len(), 3, "{found}");
    assert!(reruns.iter().all(|r| r["agree"] == true), "{found}");
    // The same seed picks the same tasks.
    let (code, again, _) = client_json(
        ws.path(),
        &["verify", "prov-verify", "--sample", "3", "--seed", "42"],
    );
    assert_eq!(code, 0, "{again}");
    assert_eq!(
        again["reruns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["index"])
            .collect::<Vec<_>>(),
        reruns.iter().map(|r| &r["index"]).collect::<Vec<_>>()
    );

    // Edit one count in a batch of results after the fact, committed with plain git.
    let tracking = ws.path().join("tracking");
    let batch = "prov-verify/results/000001.jsonl";
    let text = read_head(&tracking, batch);
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let edited = lines
        .iter_mut()
        .find(|l| l["output"]["solutions"].as_u64().unwrap_or(0) > 0)
        .expect("a task with completions");
    let index = edited["index"].as_u64().unwrap();
    let count = edited["output"]["solutions"].as_u64().unwrap();
    edited["output"]["solutions"] = (count + 1).into();
    let rewritten: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(tracking.join(batch), rewritten).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&tracking)
            .args(["-c", "user.name=tamperer", "-c", "user.email=t@example.org"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["commit", "-qam", "a better count"]);

    let (code, found, _) = client_json(ws.path(), &["verify", "prov-verify", "--sample", "0"]);
    assert_eq!(code, 4, "{found}");
    assert_eq!(found["verified"], false);
    let mismatches = found["mismatches"].as_array().unwrap();
    assert!(
        mismatches.iter().any(|m| m["index"].as_u64() == Some(index)
            && m["what"]
                .as_str()
                .unwrap()
                .contains("changed after it was recorded")),
        "task {index} is named: {found}"
    );
    assert!(
        mismatches
            .iter()
            .any(|m| m["index"].is_null() && m["what"].as_str().unwrap().contains("result.json")),
        "the result no longer reassembles: {found}"
    );
    // The human output lists the mismatch by task index.
    let out = client(ws.path())
        .args(["verify", "prov-verify", "--sample", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("task {index}: ")), "{stdout}");
}
