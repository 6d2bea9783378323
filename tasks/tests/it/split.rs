use proptest::prelude::*;
use tasks::model::{Outcome, TaskOutput, TaskResult, TaskSpec};
use tasks::nqueens::{count_class, count_completions, MIN_CLASS_N};
use tasks::reassemble::Recorded;
use tasks::split::{class_prefixes, nqueens_prefixes, nqueens_project};
use tasks::{Reassembly, Symmetry};

/// Splits, solves every task as the worker does, reassembles: the total must equal the
/// direct count.
fn split_solve_reassemble(n: u8, depth: u8) -> (u64, usize) {
    let project = nqueens_project("p", n, depth).unwrap();
    let tasks = project.tasks.to_vec();
    let mut reassembly = Reassembly::new(project);
    for task in &tasks {
        let result = tasks::compute::compute(task);
        assert!(
            matches!(result.outcome, Outcome::Ok { .. }),
            "task {:?}: {result:?}",
            task.spec
        );
        assert_eq!(reassembly.record(&result), Recorded::New);
    }
    let result = reassembly.result();
    assert!(result.complete && result.missing.is_empty() && result.failed.is_empty());
    (result.solutions.unwrap(), tasks.len())
}

#[test]
fn every_depth_of_every_board_up_to_12_reassembles_exactly() {
    for (n, expected) in crate::oeis_counts().into_iter().filter(|(n, _)| *n <= 12) {
        for depth in 0..=n {
            let (total, _) = split_solve_reassemble(n, depth);
            assert_eq!(total, expected, "N = {n}, depth = {depth}");
        }
    }
}

#[test]
fn projects_split_by_classes_from_six_columns_and_by_the_mirror_below() {
    for (n, depth) in [(5, 2), (6, 2), (12, 3)] {
        let project = nqueens_project("p", n, depth).unwrap();
        let expected = if n >= MIN_CLASS_N {
            Symmetry::Classes
        } else {
            Symmetry::Mirror
        };
        for task in &project.tasks {
            let TaskSpec::Nqueens {
                symmetry, weight, ..
            } = &task.spec
            else {
                panic!("not an N-queens task")
            };
            assert_eq!(*symmetry, expected, "N = {n}");
            assert_eq!(task.schema, expected.min_schema(), "N = {n}");
            if expected == Symmetry::Classes {
                assert_eq!(*weight, 1, "a class task counts its classes whole");
            }
        }
    }
}

#[test]
fn the_split_by_classes_keeps_the_first_queen_in_the_corner_or_the_left_half() {
    // Depth 1: the corner, then the columns b with b < n-1-b (0 to 5 on 12 and 13 columns).
    for n in [12u8, 13] {
        let mut firsts = Vec::new();
        class_prefixes(n, 1, |prefix| firsts.push(prefix[0]));
        assert_eq!(firsts, (0..=(n - 2) / 2).collect::<Vec<_>>(), "N = {n}");
    }
    // Deeper, the split by classes has fewer tasks than the mirror split, each counting more.
    let classes = nqueens_project("p", 12, 3).unwrap().tasks.len();
    let mirror = nqueens_prefixes(12, 3).count();
    assert!(
        classes < mirror,
        "{classes} class tasks, {mirror} mirror tasks"
    );
}

#[test]
fn every_depth_of_boards_13_to_16_split_by_classes_adds_up_to_oeis() {
    // The engine's side of the split (every prefix's `count_class`, summed), at every depth:
    // one thread per board, the largest first.
    let boards: Vec<(u8, u64)> = crate::oeis_counts()
        .into_iter()
        .filter(|(n, _)| (13..=16).contains(n))
        .rev()
        .collect();
    std::thread::scope(|scope| {
        for &(n, expected) in &boards {
            scope.spawn(move || {
                for depth in 0..=n {
                    let mut total = 0u64;
                    let mut tasks = 0u64;
                    class_prefixes(n, depth, |prefix| {
                        total += count_class(n, prefix).unwrap();
                        tasks += 1;
                    });
                    assert_eq!(total, expected, "N = {n}, depth = {depth} ({tasks} tasks)");
                }
            });
        }
    });
}

#[test]
fn every_depth_of_every_board_up_to_12_split_by_the_mirror_adds_up_to_oeis() {
    // The mirror split: version 1 tasks and boards below six columns.
    for (n, expected) in crate::oeis_counts().into_iter().filter(|(n, _)| *n <= 12) {
        for depth in 0..=n {
            let total: u64 = nqueens_prefixes(n, depth)
                .map(|(prefix, weight)| weight * count_completions(n, &prefix).unwrap())
                .sum();
            assert_eq!(total, expected, "N = {n}, depth = {depth}");
        }
    }
}

#[test]
fn mirror_symmetry_halves_the_tasks() {
    // Without symmetry, depth 1 gives n tasks and depth 2 gives (n-1)(n-2) + 2(n-2)... ; with
    // it, about half.
    assert_eq!(nqueens_prefixes(12, 1).count(), 6);
    assert_eq!(nqueens_prefixes(13, 1).count(), 7);
    let full: usize = (0..12u8)
        .flat_map(|a| (0..12u8).map(move |b| (a, b)))
        .filter(|(a, b)| a != b && a.abs_diff(*b) != 1)
        .count();
    let halved = nqueens_prefixes(12, 2).count();
    assert_eq!(halved * 2, full);
}

#[test]
fn duplicates_count_once_and_missing_tasks_are_named() {
    let project = nqueens_project("p", 8, 2).unwrap();
    let tasks = project.tasks.to_vec();
    let mut reassembly = Reassembly::new(project);
    let first = TaskResult::ok(&tasks[0], TaskOutput::Nqueens { solutions: 3 });
    assert_eq!(reassembly.record(&first), Recorded::New);
    assert_eq!(reassembly.record(&first), Recorded::Duplicate);
    let mut stranger = first.clone();
    stranger.project = "other".into();
    assert_eq!(reassembly.record(&stranger), Recorded::Unknown);
    let result = reassembly.result();
    assert!(!result.complete);
    assert_eq!(result.solutions, Some(tasks[0].spec_weight() * 3));
    assert_eq!(result.missing, (1..tasks.len() as u32).collect::<Vec<_>>());
}

#[test]
fn failed_tasks_are_reported_with_their_reason() {
    let project = nqueens_project("p", 6, 1).unwrap();
    let tasks = project.tasks.to_vec();
    let mut reassembly = Reassembly::new(project);
    for task in &tasks[1..] {
        reassembly.record(&TaskResult::ok(task, TaskOutput::Nqueens { solutions: 0 }));
    }
    assert_eq!(reassembly.failed(), 0);
    reassembly.record(&TaskResult::failed(&tasks[0], "timed out after 5 s"));
    reassembly.record(&TaskResult::failed(&tasks[0], "a duplicate does not count"));
    assert_eq!(reassembly.failed(), 1);
    assert!(reassembly.finished());
    let result = reassembly.result();
    assert!(!result.complete);
    assert_eq!(result.failed.len(), 1);
    assert_eq!(result.failed[0].index, 0);
    assert!(matches!(
        reassembly.result().failed[0].reason.as_str(),
        "timed out after 5 s"
    ));
    let _ = Outcome::Failed {
        reason: String::new(),
    };
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn split_then_reassemble_equals_direct_count(n in 1u8..=12, depth_frac in 0.0f64..=1.0) {
        let depth = (depth_frac * n as f64).round() as u8;
        let (total, _) = split_solve_reassemble(n, depth);
        prop_assert_eq!(total, tasks::nqueens::count_all(n).unwrap());
    }
}

trait Weight {
    fn spec_weight(&self) -> u64;
}

impl Weight for tasks::Task {
    fn spec_weight(&self) -> u64 {
        match &self.spec {
            TaskSpec::Nqueens { weight, .. } => *weight,
            _ => 1,
        }
    }
}

#[test]
fn a_total_that_overflows_is_an_error_not_a_wrong_number() {
    let mut project = nqueens_project("p", 6, 1).unwrap();
    let mut list = project.tasks.to_vec();
    for task in &mut list {
        if let TaskSpec::Nqueens { weight, .. } = &mut task.spec {
            *weight = u64::MAX / 2;
        }
    }
    project.tasks = list.into();
    let tasks = project.tasks.to_vec();
    let mut reassembly = Reassembly::new(project);
    for task in &tasks {
        reassembly.record(&TaskResult::ok(task, TaskOutput::Nqueens { solutions: 3 }));
    }
    let result = reassembly.result();
    assert!(!result.complete, "{result:?}");
    assert_eq!(result.solutions, None, "a wrapped total was given");
    assert!(
        result.failed.iter().any(|f| f.reason.contains("overflows")),
        "{result:?}"
    );
}

#[test]
fn a_retried_failure_is_replaced_by_the_next_outcome() {
    let project = nqueens_project("p", 6, 1).unwrap();
    let tasks = project.tasks.to_vec();
    let mut reassembly = Reassembly::new(project);
    reassembly.record(&TaskResult::failed(&tasks[0], "dead-lettered"));
    reassembly.record(&TaskResult::ok(
        &tasks[1],
        TaskOutput::Nqueens { solutions: 1 },
    ));
    assert_eq!(reassembly.failed_indexes(), vec![0]);
    assert!(!reassembly.retry(1), "a success is never forgotten");
    assert!(reassembly.retry(0));
    assert_eq!(reassembly.failed(), 0);
    assert!(!reassembly.has(0));
    let ok = TaskResult::ok(&tasks[0], TaskOutput::Nqueens { solutions: 2 });
    assert_eq!(reassembly.record(&ok), Recorded::New);
    assert!(reassembly.failed_indexes().is_empty());
}
