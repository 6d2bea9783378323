//! `--progress-json`: one JSON line per batch of results recorded, then the report.

use crate::support::*;

#[test]
fn progress_json_prints_a_line_per_tracking_batch_then_the_report() {
    let _executant = Executant::start(8);
    let ws = tempfile::tempdir().unwrap();
    let out = client(ws.path())
        .args(["--json", "--progress-json", "nqueens", "11", "--depth", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let (report, batches) = lines.split_last().unwrap();
    assert_eq!(report["solutions"].as_u64(), Some(oeis(11)), "{report}");
    let tasks = report["tasks"]
        .as_u64()
        .unwrap_or_else(|| batches[0]["tasks"].as_u64().unwrap());
    assert!(!batches.is_empty(), "{stdout}");
    let mut done = 0;
    let mut results = 0;
    for batch in batches {
        assert_eq!(batch["event"], "batch", "{batch}");
        assert_eq!(batch["project"], report["project"]);
        assert_eq!(batch["tasks"].as_u64(), Some(tasks));
        assert_eq!(batch["failed"], 0);
        let now = batch["done"].as_u64().unwrap();
        results += batch["results"].as_u64().unwrap();
        assert!(now > done, "{stdout}");
        done = now;
        assert!(batch["elapsed_ms"].is_u64());
    }
    // Each batch's results add up to the tasks done, and the last batch ends the project.
    assert_eq!(results, done);
    assert_eq!(done, tasks);
    // Commits in the tracking repository: one per batch line.
    let log = git_log(&ws.path().join("tracking"));
    let batch_commits = log.iter().filter(|l| l.contains("in this batch")).count();
    assert_eq!(batch_commits, batches.len(), "{log:?}");
}
