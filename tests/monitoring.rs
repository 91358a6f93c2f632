//! Monitoring files, validated here (no Prometheus or Grafana runs on the build machines):
//! `promtool` checks the Prometheus configuration and alert rules, runs the rules' unit tests,
//! and parses every dashboard expression; and a real server, after running jobs (one failing,
//! one restarted), is scraped: every metric the dashboard and the alerts name is in the scrape,
//! and every per-job series carries `job_id` (which no scrape overwrites), never `job`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::server::{call, config_yaml, deploy, eventually, json, start_server};
use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (apt install prometheus; scripts/test.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The `velo_*` metric names in `text` (histogram suffixes folded into their family).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("velo_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let name = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(name.to_string());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` of the dashboard, with its template variable filled in.
fn dashboard_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("grafana/dashboards/velostream.json"))
        .unwrap();
    let dashboard = json(&text);
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.replace("$job", ".*"));
            }
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

#[test]
fn promtool_accepts_the_config_the_rules_their_unit_tests_and_every_dashboard_expression() {
    let monitoring = Path::new(ROOT).join("monitoring");
    promtool(&["check", "config", "prometheus.yml"], &monitoring);
    let rules = promtool(&["check", "rules", "alerts.yml"], &monitoring);
    assert!(rules.contains("SUCCESS: 7 rules found"), "{rules}");
    promtool(&["test", "rules", "alerts.test.yml"], &monitoring);
    // The dashboard's expressions as recording rules: `check rules` parses each.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_expressions().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_expression_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    promtool(&["check", "rules", "dashboard.yml"], dir.path());
}

#[test]
fn grafana_is_provisioned_with_the_datasource_the_dashboard_asks_for() {
    let datasource = std::fs::read_to_string(
        Path::new(ROOT).join("grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    assert!(datasource.contains("type: prometheus"), "{datasource}");
    let provider = std::fs::read_to_string(
        Path::new(ROOT).join("grafana/provisioning/dashboards/velostream.yml"),
    )
    .unwrap();
    assert!(
        provider.contains("path: /var/lib/grafana/dashboards"),
        "{provider}"
    );
    let dashboard = json(
        &std::fs::read_to_string(Path::new(ROOT).join("grafana/dashboards/velostream.json"))
            .unwrap(),
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let source = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .unwrap();
    assert_eq!(source["query"], "prometheus");
    for panel in dashboard["panels"].as_array().unwrap() {
        if let Some(uid) = panel["datasource"]["uid"].as_str() {
            assert_eq!(uid, "${datasource}", "{panel}");
        }
    }
}

#[test]
fn every_metric_the_dashboard_and_alerts_name_is_in_a_real_scrape_labelled_job_id() {
    let topic = unique_topic("mon-in");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[Rec::value(r#"{"id":1}"#), Rec::value(r#"not json"#)],
    );
    let server = start_server(&config_yaml(
        "state:\n  checkpoint_interval_ms: 200\nsql:\n  max_restarts: 0\n",
    ));
    deploy(
        &server,
        &format!(
            "CREATE STREAM s (id BIGINT, ts TIMESTAMP) WITH ('topic' = '{topic}', 'event_time' = 'ts');\n\
             START JOB watched AS SELECT id FROM s;\n\
             CREATE STREAM gone (id BIGINT) WITH ('topic' = '{}');\n\
             START JOB broken AS SELECT id FROM gone;\n",
            unique_topic("mon-missing")
        ),
    );
    eventually("a checkpoint and the bad record", || {
        let (_, body) = call("GET", &format!("{}/jobs/watched", server.url), None, None);
        let s = json(&body);
        (s["checkpoints"].as_u64()? > 0 && s["bad_records"] == 1).then_some(())
    });
    let (status, _) = call(
        "POST",
        &format!("{}/jobs/watched/restart", server.url),
        None,
        None,
    );
    assert_eq!(status, 200);
    let scrape = eventually("every metric scraped", || {
        let (_, text) = call("GET", &format!("{}/metrics", server.url), None, None);
        let names = metric_names(&text);
        (names.contains("velo_job_failures_total")
            && names.contains("velo_job_restarts_total")
            && names.contains("velo_checkpoint_bytes")
            && names.contains("velo_watermark_delay_seconds")
            && names.contains("velo_partition_lag"))
        .then_some(text)
    });
    let scraped = metric_names(&scrape);
    let mut named = BTreeSet::new();
    for expr in dashboard_expressions() {
        named.extend(metric_names(&expr));
    }
    named.extend(metric_names(
        &std::fs::read_to_string(Path::new(ROOT).join("monitoring/alerts.yml")).unwrap(),
    ));
    let missing: Vec<&String> = named.difference(&scraped).collect();
    assert!(
        missing.is_empty(),
        "named but not scraped: {missing:?}\n{scrape}"
    );
    // Per-job series: `job_id`, never `job` (Prometheus would overwrite it with the scrape job).
    for line in scrape.lines().filter(|l| l.starts_with("velo_")) {
        assert!(
            !line.contains("{job=\"") && !line.contains(",job=\""),
            "{line}"
        );
    }
    assert!(
        scrape.contains("velo_records_in_total{job_id=\"watched\"}"),
        "{scrape}"
    );
}
