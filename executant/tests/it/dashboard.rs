//! The Grafana dashboard (`deploy/grafana/taskplatform.json`) is well-formed and every
//! metric its queries name exists: the executant's in its registry, broker-api's in its
//! metrics module.

use std::collections::BTreeSet;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/grafana/taskplatform.json"
);
const BROKER_API_METRICS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../broker-api/src/metrics.rs");

/// The metric names (`executant_*`, `broker_api_*`) a PromQL expression names, with the
/// histogram series suffixes taken off.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("executant_") || rest.starts_with("broker_api_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.push(family.to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_dashboard_is_valid_json_on_metrics_that_exist() {
    let text = std::fs::read_to_string(DASHBOARD).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "taskplatform");
    let executant_families: BTreeSet<String> = executant::metrics::Metrics::new()
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let broker_api_source = std::fs::read_to_string(BROKER_API_METRICS).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "repeated id: {panel}"
        );
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no platform metric in {expr}");
            for name in names {
                let exists = if name.starts_with("executant_") {
                    executant_families.contains(&name)
                } else {
                    broker_api_source.contains(&format!("\"{name}\""))
                };
                assert!(exists, "{name} (in {expr}) is not a metric");
                used.insert(name);
            }
        }
    }
    // Every executant metric is on the dashboard.
    let unused: Vec<_> = executant_families.difference(&used).collect();
    assert!(unused.is_empty(), "not on the dashboard: {unused:?}");
}
