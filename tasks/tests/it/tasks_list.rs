//! `Tasks`, a project's tasks held as their canonical JSON lines: it must read, serialize
//! and digest exactly as the `Vec<Task>` it replaced.

use tasks::model::{ExecSpec, ScriptRef};
use tasks::split::nqueens_project;
use tasks::{Project, Task, TaskSpec, Tasks};

/// Tasks of every shape: N-queens by classes and by the mirror, exec with and without a
/// script, with and without a timeout, and text that JSON escapes.
fn assorted() -> Vec<Task> {
    let mut list = nqueens_project("p", 8, 2).unwrap().tasks.to_vec();
    list.extend(nqueens_project("p", 12, 2).unwrap().tasks.iter().take(3));
    list.push(Task {
        schema: 1,
        project: "p".into(),
        index: 0,
        timeout_secs: Some(7),
        spec: TaskSpec::Exec(ExecSpec {
            image: "debian:bookworm-slim".into(),
            command: vec!["sh".into(), "-c".into(), "echo \"é\\n\tü\" >&2".into()],
            script: Some(ScriptRef {
                repo: "/srv/repo.git".into(),
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                path: "run.sh".into(),
            }),
        }),
    });
    for (i, task) in list.iter_mut().enumerate() {
        task.index = i as u32;
    }
    list
}

#[test]
fn a_list_reads_back_every_task_it_was_given_in_order() {
    let list = assorted();
    let tasks = Tasks::from(list.clone());
    assert_eq!(tasks.len(), list.len());
    assert!(!tasks.is_empty() && Tasks::new().is_empty());
    for (i, task) in list.iter().enumerate() {
        assert_eq!(tasks.get(i).as_ref(), Some(task), "position {i}");
        assert_eq!(
            tasks.json(i),
            Some(task.to_json().as_slice()),
            "position {i}"
        );
        assert_eq!(tasks.digest(i), Some(task.digest()), "position {i}");
    }
    assert_eq!(tasks.get(list.len()), None);
    assert_eq!(tasks.json(list.len()), None);
    assert_eq!(tasks.iter().collect::<Vec<_>>(), list);
    assert_eq!(tasks.iter().rev().collect::<Vec<_>>(), {
        let mut rev = list.clone();
        rev.reverse();
        rev
    });
    assert_eq!(tasks.iter().nth(3).as_ref(), Some(&list[3]));
    assert_eq!(tasks.iter().len(), list.len());
    assert_eq!(tasks.to_vec(), list);
    assert_eq!((&tasks).into_iter().count(), list.len());
    assert_eq!(format!("{tasks:?}"), format!("{list:?}"));
}

#[test]
fn its_bytes_are_the_task_list_file_one_canonical_line_per_task() {
    let list = assorted();
    let tasks: Tasks = list.iter().cloned().collect();
    let mut expected = Vec::new();
    for task in &list {
        expected.extend_from_slice(&task.to_json());
        expected.push(b'\n');
    }
    assert_eq!(tasks.jsonl(), expected.as_slice());
    assert_eq!(Tasks::new().jsonl(), b"");
}

#[test]
fn it_serializes_and_deserializes_exactly_as_a_vec_of_tasks() {
    let list = assorted();
    let tasks = Tasks::from(list.as_slice());
    let as_vec = serde_json::to_string(&list).unwrap();
    assert_eq!(serde_json::to_string(&tasks).unwrap(), as_vec);
    assert_eq!(
        serde_json::to_string_pretty(&tasks).unwrap(),
        serde_json::to_string_pretty(&list).unwrap()
    );
    let back: Tasks = serde_json::from_str(&as_vec).unwrap();
    assert_eq!(back, tasks);
    assert!(serde_json::from_str::<Tasks>("{\"a\":1}").is_err());
    assert!(serde_json::from_str::<Tasks>("[{\"schema\":1}]").is_err());
    // A whole project too, whatever the whitespace it was written with.
    let project = nqueens_project("p", 6, 2).unwrap();
    let text = serde_json::to_string_pretty(&project).unwrap();
    let read: Project = serde_json::from_str(&text).unwrap();
    assert_eq!(read, project);
    assert_eq!(read.tasks.jsonl(), project.tasks.jsonl());
}

#[test]
fn subsets_and_retain_keep_the_chosen_tasks_in_order() {
    let list = assorted();
    let tasks = Tasks::from(list.clone());
    let odd = tasks.subset(|i| i % 2 == 1);
    let expected: Vec<Task> = list.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(odd.to_vec(), expected);
    assert_eq!(odd, Tasks::from(expected.clone()));
    let mut kept = tasks.clone();
    kept.retain(|t| t.index % 2 == 1);
    assert_eq!(kept, odd);
    assert!(tasks.subset(|_| false).is_empty());
    assert_eq!(tasks.subset(|_| true), tasks);
}

#[test]
fn a_project_of_specs_given_one_at_a_time_equals_one_given_as_a_vec() {
    let spec = |i: usize| {
        TaskSpec::Exec(ExecSpec {
            image: "debian:bookworm-slim".into(),
            command: vec!["echo".into(), format!("task {i}")],
            script: None,
        })
    };
    let streamed = Project::from_specs("s", (0..50).map(spec)).unwrap();
    let collected = Project::from_specs("s", (0..50).map(spec).collect::<Vec<_>>()).unwrap();
    assert_eq!(streamed, collected);
    assert_eq!(streamed.tasks.len(), 50);
    for (i, task) in streamed.tasks.iter().enumerate() {
        assert_eq!(task.index as usize, i);
        assert_eq!(task.project, "s");
        assert_eq!(task.spec, spec(i));
    }
    // Validation still sees every task.
    let bad = (0..3).map(|i| match i {
        2 => TaskSpec::Exec(ExecSpec {
            image: " ".into(),
            command: vec!["true".into()],
            script: None,
        }),
        _ => spec(i),
    });
    let err = Project::from_specs("s", bad).unwrap_err();
    assert!(err.to_string().contains("tasks[2].image"), "{err}");
}
