//! Issue 16, item 3: `--replicas N`, each task run on N different executants and counted
//! when they agree. One executant here runs a test-only worker image that makes every
//! N-queens count wrong; two others are honest.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// The test-only lying worker image: the real worker, each count it prints with a `1` put
/// in front (0 becomes 10, 4 becomes 14). Built from the worker image on the spot; the real
/// worker image has no such switch.
const LIAR_IMAGE: &str = "taskplatform/worker-liar:test";

fn build_liar_image() {
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM taskplatform/worker:latest\n\
         COPY liar.sh /usr/local/bin/liar\n\
         ENTRYPOINT [\"/usr/local/bin/liar\"]\n\
         CMD [\"serve\"]\n",
    )
    .unwrap();
    let script = context.path().join("liar.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         # Test only: the real worker, every N-queens count made wrong.\n\
         /usr/local/bin/worker \"$@\" | sed -u 's/\"solutions\":/\"solutions\":1/g'\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &script,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", LIAR_IMAGE])
        .arg(context.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "docker build of the liar: {out:?}");
}

/// Every line of every file of `folder` in the repository at HEAD.
fn lines_under(repo: &Path, folder: &str) -> Vec<serde_json::Value> {
    let repo = git2::Repository::open(repo).unwrap();
    let tree = repo.head().unwrap().peel_to_tree().unwrap();
    let Ok(entry) = tree.get_path(Path::new(folder)) else {
        return Vec::new();
    };
    let folder = repo.find_tree(entry.id()).unwrap();
    let mut lines = Vec::new();
    for file in folder.iter() {
        let blob = repo.find_blob(file.id()).unwrap();
        for line in String::from_utf8_lossy(blob.content()).lines() {
            lines.push(serde_json::from_str(line).unwrap());
        }
    }
    lines
}

#[test]
fn a_lying_executant_is_outvoted_and_reported_and_the_count_stays_exact() {
    // A vhost of its own: no other test's executant may answer these tasks.
    let url = own_vhost("commanditaire-replicas");
    build_liar_image();
    let liar = format!("liar-{}", std::process::id());
    let liar_name = liar.clone();
    // The honest ones with more slots than the liar: a run passed on by an executant it
    // avoids finds a free slot elsewhere sooner (on a loaded machine, it may otherwise be
    // passed on until it runs on an avoided one, and the task gets another run).
    let _liar = Executant::start_on(&url, 4, move |c| {
        c.name = liar_name;
        c.worker_image = LIAR_IMAGE.into();
        c.concurrency = 1;
    });
    let _honest = [
        Executant::start_on(&url, 4, |c| c.concurrency = 4),
        Executant::start_on(&url, 4, |c| c.concurrency = 4),
    ];
    let ws = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = client(ws.path())
        .env("AMQP_URL", &url)
        .args(["--json", "nqueens", "8", "--depth", "2", "--replicas", "2"])
        .args(["--id", "replicas-liar"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {stderr}"));
    eprintln!(
        "replicas-liar: {:?}, {} tasks, {} runs, {} disagreements",
        started.elapsed(),
        json["tasks"],
        json["replicas"]["runs"],
        json["replicas"]["disagreements"]
            .as_array()
            .map_or(0, Vec::len)
    );
    assert_eq!(out.status.code(), Some(0), "{json} {stderr}");
    assert_eq!(json["solutions"].as_u64(), Some(oeis(8)), "{json}");
    assert_eq!(json["replicas"]["n"], 2, "{json}");

    // Every disagreement names the liar's wrong count and counts an honest one.
    let disagreements = json["replicas"]["disagreements"].as_array().unwrap();
    assert!(
        !disagreements.is_empty(),
        "the liar was never caught: {json}"
    );
    for d in disagreements {
        let runs = d["runs"].as_array().unwrap();
        let lie = runs
            .iter()
            .find(|r| r["executant"] == liar.as_str())
            .unwrap_or_else(|| panic!("a disagreement without the liar: {d}"));
        let honest = runs
            .iter()
            .find(|r| r["executant"] != liar.as_str())
            .unwrap_or_else(|| panic!("a disagreement without an honest run: {d}"));
        assert_ne!(lie["output"], honest["output"], "{d}");
        assert_eq!(d["counted"], honest["outcome"], "{d}");
        assert!(
            lie["image_digest"].as_str().unwrap().starts_with("sha256:"),
            "{d}"
        );
        assert_eq!(lie["image"], LIAR_IMAGE, "{d}");
    }

    // Plain git shows every run; the results batches hold only counted outcomes, none of
    // them the liar's, one per task.
    let tracking = ws.path().join("tracking");
    let runs = lines_under(&tracking, "replicas-liar/replicas");
    let tasks = json["tasks"].as_u64().unwrap() as usize;
    assert!(runs.len() >= 2 * tasks, "{} runs", runs.len());
    assert!(runs
        .iter()
        .any(|r| r["provenance"]["executant"] == liar.as_str()));
    let counted = lines_under(&tracking, "replicas-liar/results");
    assert_eq!(counted.len(), tasks);
    assert!(counted
        .iter()
        .all(|r| r["provenance"]["executant"] != liar.as_str()));
    let result: serde_json::Value = serde_json::from_slice(&read_at_head(
        &ws.path().join("results"),
        "replicas-liar/result.json",
    ))
    .unwrap();
    assert_eq!(
        result["replicas"]["disagreements"],
        json["replicas"]["disagreements"]
    );

    // `status --json` reports them too, and verify's offline checks pass the record.
    let status = client(ws.path())
        .env("AMQP_URL", &url)
        .args(["--json", "status", "replicas-liar"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["provenance"]["replicas"]["disagreements"],
        json["replicas"]["disagreements"]
    );
    let verify = client(ws.path())
        .env("AMQP_URL", &url)
        .args(["--json", "verify", "replicas-liar", "--sample", "0"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
}

/// A run of task `index` of `project` by `executant`, counting `solutions`.
fn run_of(
    project: &tasks::Project,
    index: u32,
    executant: &str,
    solutions: u64,
) -> tasks::TaskResult {
    let task = &project.tasks.get(index as usize).unwrap();
    let mut run = tasks::TaskResult::ok(task, tasks::TaskOutput::Nqueens { solutions });
    run.digest = Some(task.digest());
    run.provenance = Some(Box::new(tasks::provenance::Provenance {
        executant: executant.into(),
        attempt: 1,
        ..Default::default()
    }));
    run
}

#[test]
fn a_killed_client_replays_its_recorded_runs_to_the_same_outcomes() {
    use commanditaire::{tracking, BatchPolicy, Tracker, Workspace};
    use tasks::reassemble::Recorded;

    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open_or_init(dir.path()).unwrap();
    let project = tasks::split::nqueens_project("replay", 8, 1).unwrap();
    tracking::record_project(&ws, &project, &serde_json::json!({ "replicas": 2 })).unwrap();
    let mut tracker = Tracker::load(&ws, project.clone(), BatchPolicy::default());
    assert_eq!(tracker.replicas(), 2);
    // Task 0: two executants agree. Task 1: one run so far, the next one asked for.
    assert_eq!(tracker.record(run_of(&project, 0, "a", 4)), Recorded::New);
    assert!(!tracker.has(0));
    assert_eq!(tracker.record(run_of(&project, 0, "b", 4)), Recorded::New);
    assert!(tracker.has(0));
    assert_eq!(tracker.record(run_of(&project, 1, "a", 7)), Recorded::New);
    let wanted = tracker.take_wanted_runs();
    assert_eq!(wanted.len(), 1);
    assert_eq!(
        (wanted[0].0.index, wanted[0].1.clone()),
        (1, vec!["a".to_string()])
    );
    tracker.flush().unwrap();

    // The client is killed; another starts from the record alone.
    let mut again = Tracker::load(&ws, project.clone(), BatchPolicy::default());
    assert!(again.has(0) && !again.has(1));
    // The run already recorded, delivered again, does not count twice.
    assert_eq!(
        again.record(run_of(&project, 1, "a", 7)),
        Recorded::Duplicate
    );
    // Its runs were lost: every undecided task gets one more, avoiding who answered.
    assert_eq!(again.want_runs_again(), project.tasks.len() - 1);
    let wanted = again.take_wanted_runs();
    let task1 = wanted.iter().find(|(t, _)| t.index == 1).unwrap();
    assert_eq!(task1.1, vec!["a".to_string()]);
    // A dissenting run, then a third executant settles it; a late run does not count.
    assert_eq!(again.record(run_of(&project, 1, "liar", 17)), Recorded::New);
    assert!(!again.has(1));
    assert_eq!(again.record(run_of(&project, 1, "c", 7)), Recorded::New);
    assert!(again.has(1));
    assert_eq!(
        again.record(run_of(&project, 1, "d", 7)),
        Recorded::Duplicate
    );
    again.flush().unwrap();
    let report = again.replicas_report().unwrap();
    let disagreements = report["disagreements"].as_array().unwrap();
    assert_eq!(disagreements.len(), 1, "{report}");
    assert_eq!(disagreements[0]["index"], 1);
    assert_eq!(disagreements[0]["counted"], "7 completions");

    // A third client sees the same: 0 and 1 counted, once each, with the first agreeing run.
    let third = Tracker::load(&ws, project.clone(), BatchPolicy::default());
    assert!(third.has(0) && third.has(1) && !third.has(2));
    assert_eq!(third.replicas_report(), Some(report));
    let history = commanditaire::history::History::read(&ws, "replay").unwrap();
    assert_eq!(history.counted.len(), 2);
    assert_eq!(
        history.counted[&1].provenance.as_ref().unwrap().executant,
        "a"
    );
}
