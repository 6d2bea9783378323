//! Results messages: one result, or a batch of one project's results.

use tasks::model::{TaskOutput, TaskResult};
use tasks::results::{batch_json, parse};

fn results(n: usize) -> Vec<TaskResult> {
    let project = tasks::split::nqueens_project("batched", 8, 2).unwrap();
    project
        .tasks
        .iter()
        .take(n)
        .enumerate()
        .map(|(i, task)| {
            TaskResult::ok(
                &task,
                TaskOutput::Nqueens {
                    solutions: i as u64 * 7,
                },
            )
        })
        .collect()
}

#[test]
fn a_message_of_one_result_reads_as_before() {
    let one = results(1).remove(0);
    let read = parse(&one.to_json()).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].result, one);
    assert_eq!(read[0].traceparent, None);
}

#[test]
fn a_batch_reads_back_in_order_with_its_trace_contexts() {
    let all = results(5);
    let tp = |i: usize| {
        i.is_multiple_of(2)
            .then(|| format!("00-{:032x}-{:016x}-01", 7, i + 1))
    };
    let body = batch_json(all.iter().enumerate().map(|(i, r)| (tp(i), r)));
    let read = parse(&body).unwrap();
    assert_eq!(read.len(), all.len());
    for (i, (got, want)) in read.iter().zip(&all).enumerate() {
        assert_eq!(&got.result, want);
        assert_eq!(got.traceparent, tp(i));
    }
    // What a batch is made of: a version and entries each holding a whole result.
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["batch"], 1);
    assert_eq!(
        TaskResult::from_json(value["results"][3]["result"].to_string().as_bytes()).unwrap(),
        all[3]
    );
}

#[test]
fn a_batch_that_cannot_be_read_is_refused_whole() {
    let all = results(3);
    let body = batch_json(all.iter().map(|r| (None, r)));
    let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    value["batch"] = 2.into();
    let err = parse(value.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
    value["batch"] = 1.into();
    value["results"][1]["result"]["schema"] = 9.into();
    let err = parse(value.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("schema"), "{err}");
    value["results"][1]["result"]["schema"] = 1.into();
    value["results"][2]["result"]["project"] = "Not A Project".into();
    let err = parse(value.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("project"), "{err}");
    assert!(parse(br#"{"batch":1,"results":{}}"#).is_err());
    assert_eq!(parse(br#"{"batch":1,"results":[]}"#).unwrap(), vec![]);
}
