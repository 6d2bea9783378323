use tasks::model::{Task, TaskError, TaskResult};

/// Each fixture in `tests/data/invalid/` must be rejected with an error naming `expect`.
fn check_rejected(json: &str, expect: &str) {
    let err = Task::from_json(json.as_bytes())
        .expect_err(json)
        .to_string();
    assert!(
        err.contains(expect),
        "error for {json}: {err:?} does not name {expect:?}"
    );
}

#[test]
fn malformed_tasks_name_the_problem() {
    let cases = [
        ("{", "malformed JSON"),
        ("[]", "schema"),
        (
            r#"{"schema":3,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[],"weight":1}"#,
            "schema version 3",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[],"weight":1,"symmetry":"classes"}"#,
            "symmetry",
        ),
        (
            r#"{"schema":2,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[],"weight":1,"symmetry":"rotations"}"#,
            "unknown variant `rotations`",
        ),
        (
            r#"{"schema":2,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[5],"weight":1,"symmetry":"classes"}"#,
            "prefix[0]",
        ),
        (
            r#"{"schema":2,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[2,0],"weight":1,"symmetry":"classes"}"#,
            "prefix[1]",
        ),
        (
            r#"{"schema":2,"project":"p","index":0,"kind":"nqueens","n":5,"prefix":[],"weight":1,"symmetry":"classes"}"#,
            "`n`",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"nqueens","prefix":[],"weight":1}"#,
            "`n`",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"chess","n":8}"#,
            "unknown variant `chess`",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"nqueens","n":40,"prefix":[],"weight":1}"#,
            "`n`",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[0,1],"weight":1}"#,
            "prefix[1]",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[],"weight":0}"#,
            "weight",
        ),
        (
            r#"{"schema":1,"project":"Bad Name","index":0,"kind":"nqueens","n":8,"prefix":[],"weight":1}"#,
            "project",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"","command":["echo"]}"#,
            "image",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"x","command":[]}"#,
            "command",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"x","command":["sh"],"script":{"repo":"r","commit":"abc","path":"a.sh"}}"#,
            "script.commit",
        ),
        (
            r#"{"schema":1,"project":"p","index":0,"kind":"exec","image":"x","command":["sh"],"script":{"repo":"r","commit":"0123456789012345678901234567890123456789","path":"../etc/passwd"}}"#,
            "script.path",
        ),
        (
            r#"{"schema":1,"project":"p","index":-1,"kind":"nqueens","n":8,"prefix":[],"weight":1}"#,
            "malformed JSON",
        ),
    ];
    for (json, expect) in cases {
        check_rejected(json, expect);
    }
}

#[test]
fn tasks_and_results_round_trip() {
    let json = r#"{"schema":1,"project":"demo","index":3,"kind":"exec","image":"debian:bookworm-slim","command":["echo","hi"]}"#;
    let task = Task::from_json(json.as_bytes()).unwrap();
    assert_eq!(task.id(), "demo/3");
    assert_eq!(Task::from_json(&task.to_json()).unwrap(), task);
    let result = TaskResult::failed(&task, "exit code 2");
    assert_eq!(TaskResult::from_json(&result.to_json()).unwrap(), result);
    let err = TaskResult::from_json(b"{\"schema\":1}").unwrap_err();
    assert!(matches!(err, TaskError::Json(_)), "{err}");
}

/// A task written by a version 1 client (the mirror split) still runs and counts, its result
/// is written in version 1, and the task's JSON is unchanged by a round trip.
#[test]
fn version_1_prefix_tasks_still_run_and_count() {
    let json =
        r#"{"schema":1,"project":"p","index":3,"kind":"nqueens","n":8,"prefix":[1],"weight":2}"#;
    let task = Task::from_json(json.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(task.to_json()).unwrap(), json);
    let result = tasks::compute::compute(&task);
    assert_eq!(result.schema, 1);
    assert_eq!(
        result.outcome,
        tasks::Outcome::Ok {
            output: tasks::TaskOutput::Nqueens {
                solutions: tasks::nqueens::count_completions(8, &[1]).unwrap()
            }
        }
    );
    // 8 queens: 4 solutions with the first queen on column 1 (weight 2: column 6's too).
    assert_eq!(
        result.outcome,
        tasks::Outcome::Ok {
            output: tasks::TaskOutput::Nqueens { solutions: 8 }
        }
    );
    let parsed = TaskResult::from_json(&result.to_json()).unwrap();
    assert_eq!(parsed.schema, 1);
}

/// A task split by classes is version 2, says so in its JSON, and counts whole classes.
#[test]
fn version_2_class_tasks_count_their_classes() {
    let json = r#"{"schema":2,"project":"p","index":0,"kind":"nqueens","n":8,"prefix":[],"weight":1,"symmetry":"classes"}"#;
    let task = Task::from_json(json.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(task.to_json()).unwrap(), json);
    assert_eq!(task.spec.min_schema(), 2);
    let result = tasks::compute::compute(&task);
    assert_eq!(result.schema, 2);
    assert_eq!(
        result.outcome,
        tasks::Outcome::Ok {
            output: tasks::TaskOutput::Nqueens {
                solutions: tasks::nqueens::known_count(8).unwrap()
            }
        }
    );
}

/// The published JSON Schemas (`tasks/schema/`) are the ones the model generates; run with
/// `UPDATE_SCHEMAS=1` to rewrite them after changing the model.
#[test]
fn published_json_schemas_match_the_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    for (file, schema) in [
        ("task.schema.json", tasks::model::task_schema()),
        ("result.schema.json", tasks::model::result_schema()),
    ] {
        let path = dir.join(file);
        let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let published = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SCHEMAS=1)", path.display()));
        assert_eq!(
            published, text,
            "{file} is stale: run the tests with UPDATE_SCHEMAS=1"
        );
    }
    let task = serde_json::to_string(&tasks::model::task_schema()).unwrap();
    for needle in ["\"nqueens\"", "\"exec\"", "\"prefix\"", "\"schema\""] {
        assert!(task.contains(needle), "the task schema lacks {needle}");
    }
}

/// Issue 16: a result names its task by digest; records written before digests and
/// provenance existed still read (the new fields are optional, the schema version stays).
#[test]
fn digests_name_the_exact_task_and_old_records_still_read() {
    let project = tasks::split::nqueens_project("p", 8, 2).unwrap();
    let list = project.tasks.to_vec();
    let (a, b) = (&list[0], &list[1]);
    assert!(a.digest().starts_with("sha256:") && a.digest().len() == 7 + 64);
    assert_eq!(a.digest(), a.clone().digest());
    assert_ne!(a.digest(), b.digest());
    let mut longer = a.clone();
    longer.timeout_secs = Some(5);
    assert_ne!(
        a.digest(),
        longer.digest(),
        "any field of the task changes it"
    );
    assert_eq!(TaskResult::failed(a, "x").digest, Some(a.digest()));

    let old = br#"{"schema":1,"project":"p","index":3,"status":"ok","output":{"kind":"nqueens","solutions":4},"duration_ms":7,"executor":"e"}"#;
    let read = TaskResult::from_json(old).unwrap();
    assert_eq!((read.digest, read.provenance), (None, None));

    let mut with = TaskResult::failed(a, "x");
    with.provenance = Some(Box::new(tasks::provenance::Provenance {
        executant: "e".into(),
        image_digest: Some("sha256:00".into()),
        started: "2026-01-01T00:00:00Z".into(),
        ended: "2026-01-01T00:00:01Z".into(),
        attempt: 2,
        ..Default::default()
    }));
    assert_eq!(TaskResult::from_json(&with.to_json()).unwrap(), with);
}
