//! `velo-sql-multi`: every command of the deployment guide's multi-job CLI, with its flags as the
//! guide writes them, against a running server (a real socket) and a real broker.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::server::{call, config_yaml, eventually, json, start_server, Server};
use common::*;

fn ok(args: &[&str]) -> String {
    let out = run_multi(args);
    assert!(
        out.status.success(),
        "velo-sql-multi {args:?} failed ({:?}):\n{}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

const ORDERS: [&str; 3] = [
    r#"{"id":1,"amount":"5.25"}"#,
    r#"{"id":2,"amount":"50.00"}"#,
    r#"{"id":3,"amount":"120.10"}"#,
];

/// An application file with two jobs over a fresh `orders` topic holding [`ORDERS`].
fn application(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let orders = unique_topic("multi-orders");
    create_topic(&orders, 1);
    produce(
        &orders,
        &ORDERS.iter().map(|r| Rec::value(*r)).collect::<Vec<_>>(),
    );
    let app = dir.join("trading_jobs.sql");
    std::fs::write(
        &app,
        format!(
            "CREATE STREAM orders (id BIGINT, amount DECIMAL(10,2)) WITH ('topic' = '{orders}');\n\
             START JOB large AS SELECT id, amount FROM orders WHERE amount > 10 \
             WITH ('sink.topic' = '{}');\n\
             START JOB all_orders AS SELECT id, amount FROM orders WITH ('sink.topic' = '{}');\n",
            unique_topic("multi-large"),
            unique_topic("multi-all")
        ),
    )
    .unwrap();
    (app, orders)
}

fn status_of(server: &Server, job: &str) -> String {
    let (_, body) = call("GET", &format!("{}/jobs/{job}", server.url), None, None);
    json(&body)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_for_status(server: &Server, job: &str, want: &str) {
    eventually(&format!("{job} {want}"), || {
        (status_of(server, job) == want).then_some(())
    });
}

#[test]
fn every_multi_job_command_works_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (app, orders) = application(dir.path());
    let server = start_server(&config_yaml(""));
    let url = server.url.as_str();
    let app = app.to_str().unwrap();
    // Unique per run: a group's members from an earlier run hold its partitions for a while.
    let groups = format!("{}_trading_consumers_", unique_topic("multi"));
    // deploy-app, with the guide's flags.
    let ids = ok(&[
        "deploy-app",
        "--file",
        app,
        "--brokers",
        brokers(),
        "--default-topic",
        &orders,
        "--continuous",
        "--job-prefix",
        "trading_",
        "--group-prefix",
        &groups,
        "--max-jobs",
        "5",
        "--restart-policy",
        "on-failure",
        "--server",
        url,
    ]);
    assert_eq!(
        ids.lines().collect::<Vec<_>>(),
        ["trading_large", "trading_all_orders"]
    );
    wait_for_status(&server, "trading_large", "running");
    wait_for_status(&server, "trading_all_orders", "running");

    // list-jobs: JSON objects with job_id (the guide's jq reads .[].job_id), sorted.
    let listed = json(&ok(&[
        "list-jobs",
        "--status",
        "all",
        "--format",
        "json",
        "--sort-by",
        "name",
        "--server",
        url,
    ]));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["trading_all_orders", "trading_large"]);
    assert_eq!(listed[0]["status"], "running");
    let table = ok(&[
        "list-jobs",
        "--status",
        "running",
        "--format",
        "table",
        "--server",
        url,
    ]);
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");

    // job-status: one object with status and error.
    let status = json(&ok(&[
        "job-status",
        "--job-id",
        "trading_large",
        "--format",
        "json",
        "--server",
        url,
    ]));
    assert_eq!(status["status"], "running");
    assert!(status["error"].is_null(), "{status}");
    assert_eq!(status["consumer_group"], format!("{groups}trading_large"));

    // stream-job: the job's rows, plain and with metadata.
    let rows = eventually("the large orders", || {
        let out = ok(&[
            "stream-job",
            "--job-id",
            "trading_large",
            "--output",
            "stdout",
            "--format",
            "json-lines",
            "--tail",
            "10",
            "--server",
            url,
        ]);
        (out.lines().count() == 2).then_some(out)
    });
    assert_eq!(
        rows.lines().collect::<Vec<_>>(),
        [
            r#"{"id":2,"amount":"50.00"}"#,
            r#"{"id":3,"amount":"120.10"}"#
        ]
    );
    let tagged = ok(&[
        "stream-job",
        "--job-id",
        "trading_large",
        "--output",
        "stdout",
        "--format",
        "json-lines",
        "--include-metadata",
        "--tail",
        "1",
        "--server",
        url,
    ]);
    assert_eq!(
        tagged.trim(),
        r#"{"job_id":"trading_large","result":{"id":3,"amount":"120.10"}}"#
    );

    // stream-all, filtered by name.
    eventually("all orders out", || {
        let (_, body) = call("GET", &format!("{url}/jobs/trading_all_orders"), None, None);
        (json(&body)["records_out"] == 3).then_some(())
    });
    let all = json(&ok(&[
        "stream-all",
        "--output",
        "stdout",
        "--format",
        "json",
        "--filter",
        "job_name=trading_all*",
        "--server",
        url,
    ]));
    assert_eq!(all, json(&format!("[{}]", ORDERS.join(","))));

    // execute over job_results.
    let answer = ok(&[
        "execute", "--query",
        "SELECT job_id, status, result FROM job_results WHERE job_id = 'trading_large' ORDER BY result",
        "--output", "stdout", "--format", "json-pretty", "--timeout", "30s", "--limit", "10",
        "--server", url,
    ]);
    assert_eq!(
        json(&answer),
        json(
            r#"[{"job_id":"trading_large","status":"running","result":"{\"id\":2,\"amount\":\"50.00\"}"},
                {"job_id":"trading_large","status":"running","result":"{\"id\":3,\"amount\":\"120.10\"}"}]"#
        )
    );
    assert!(answer.contains("\n  "), "pretty: {answer}");

    // job-logs: --tail, --grep (a regular expression), --since.
    let logs = ok(&[
        "job-logs",
        "--job-id",
        "trading_large",
        "--tail",
        "20",
        "--grep",
        "started|stopped",
        "--server",
        url,
    ]);
    assert!(
        !logs.is_empty() && logs.lines().all(|l| l.contains("started")),
        "{logs}"
    );
    let none = ok(&[
        "job-logs",
        "--job-id",
        "trading_large",
        "--since",
        "2999-01-01T00:00:00Z",
        "--server",
        url,
    ]);
    assert_eq!(none, "");
    let recent = ok(&[
        "job-logs",
        "--job-id",
        "trading_large",
        "--since",
        "1h",
        "--server",
        url,
    ]);
    assert!(recent.contains("started"), "{recent}");

    // The lifecycle commands.
    ok(&["pause-job", "--job-id", "trading_large", "--server", url]);
    wait_for_status(&server, "trading_large", "paused");
    ok(&["resume-job", "--job-id", "trading_large", "--server", url]);
    wait_for_status(&server, "trading_large", "running");
    ok(&["stop-job", "--job-id", "trading_large", "--server", url]);
    wait_for_status(&server, "trading_large", "stopped");
    ok(&["start-job", "--job-id", "trading_large", "--server", url]);
    wait_for_status(&server, "trading_large", "running");
    ok(&["restart-job", "--job-id", "trading_large", "--server", url]);
    wait_for_status(&server, "trading_large", "running");
    let stopped = ok(&["stop-all-jobs", "--graceful", "--server", url]);
    assert_eq!(stopped.lines().count(), 2, "{stopped}");
    wait_for_status(&server, "trading_large", "stopped");
    wait_for_status(&server, "trading_all_orders", "stopped");
    let started = ok(&["start-all-jobs", "--server", url]);
    assert_eq!(started.lines().count(), 2, "{started}");
    wait_for_status(&server, "trading_all_orders", "running");

    // export-job-config / remove-job / import-job-config.
    let config = dir.path().join("large_config.json");
    let config = config.to_str().unwrap();
    ok(&[
        "export-job-config",
        "--job-id",
        "trading_large",
        "--output",
        config,
        "--server",
        url,
    ]);
    ok(&["remove-job", "--job-id", "trading_large", "--server", url]);
    let (code, _) = call("GET", &format!("{url}/jobs/trading_large"), None, None);
    assert_eq!(code, 404);
    let imported = ok(&["import-job-config", "--input", config, "--server", url]);
    assert_eq!(imported.trim(), "trading_large");
    wait_for_status(&server, "trading_large", "running");

    // export-state here, import-state into a second server.
    let state = dir.path().join("velo-state.json");
    let state = state.to_str().unwrap();
    ok(&["export-state", "--output", state, "--server", url]);
    let other = start_server(&config_yaml(""));
    let moved = ok(&["import-state", "--input", state, "--server", &other.url]);
    let mut moved: Vec<&str> = moved.lines().collect();
    moved.sort();
    assert_eq!(moved, ["trading_all_orders", "trading_large"]);

    // A job that is not there: the server's 404, named.
    let out = run_multi(&["job-status", "--job-id", "nope", "--server", url]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}

#[test]
fn deploy_app_continuous_without_a_server_runs_the_jobs_here_behind_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (app, orders) = application(dir.path());
    let mut child = Killed(
        velo_sql_multi()
            .args([
                "deploy-app",
                "--file",
                app.to_str().unwrap(),
                "--brokers",
                brokers(),
            ])
            .args(["--default-topic", &orders, "--continuous", "--port", "0"])
            .args(["--group-prefix", &unique_topic("multi-here")])
            .env("VELO_STATE_DIR", dir.path().join("state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("velo-sql server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    let listed = eventually("both jobs running", || {
        let out = run_multi(&["list-jobs", "--format", "json", "--server", &url]);
        let v = json(&stdout(&out));
        let running = v
            .as_array()?
            .iter()
            .filter(|j| j["status"] == "running")
            .count();
        (running == 2).then_some(v)
    });
    assert_eq!(listed.as_array().unwrap().len(), 2);
    eventually("the large orders out", || {
        let (_, body) = call("GET", &format!("{url}/jobs/large"), None, None);
        (json(&body)["records_out"] == 2).then_some(())
    });
    // Followed: the recent rows, then new ones as they arrive.
    let mut follower = Killed(
        velo_sql_multi()
            .args(["stream-job", "--job-id", "large", "--output", "stdout"])
            .args([
                "--format",
                "json-lines",
                "--follow",
                "--tail",
                "10",
                "--server",
                &url,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = BufReader::new(follower.0.stdout.take().unwrap()).lines();
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        received
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a followed row within 30 s")
    };
    let mut seen = vec![next(), next()];
    produce(&orders, &[Rec::value(r#"{"id":4,"amount":"999.99"}"#)]);
    seen.push(next());
    assert_eq!(
        seen,
        [
            r#"{"id":2,"amount":"50.00"}"#,
            r#"{"id":3,"amount":"120.10"}"#,
            r#"{"id":4,"amount":"999.99"}"#
        ]
    );
}

/// A child process killed when dropped (also when the test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn validate_schema_reads_avro_protobuf_and_column_lists_and_the_security_check_refuses_float_money()
{
    let dir = tempfile::tempdir().unwrap();
    let avsc = dir.path().join("orders.avsc");
    std::fs::write(
        &avsc,
        r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},
            {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}}]}"#,
    )
    .unwrap();
    let out = ok(&[
        "validate-schema",
        "--file",
        avsc.to_str().unwrap(),
        "--security-check",
    ]);
    assert_eq!(
        out,
        format!(
            "{}: valid, 2 column(s)\n  id BIGINT NOT NULL\n  amount DECIMAL(18,4) NOT NULL\n",
            avsc.display()
        )
    );
    let proto = dir.path().join("trade.proto");
    std::fs::write(
        &proto,
        "syntax = \"proto3\";\nmessage Trade { string symbol = 1; double price = 2; }\n",
    )
    .unwrap();
    let out = ok(&["validate-schema", "--file", proto.to_str().unwrap()]);
    assert!(out.contains("valid, 2 column(s)"), "{out}");
    let refused = run_multi(&[
        "validate-schema",
        "--file",
        proto.to_str().unwrap(),
        "--security-check",
    ]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("'price' looks like money"),
        "{}",
        stderr(&refused)
    );
    let columns = dir.path().join("orders.sql");
    std::fs::write(&columns, "id BIGINT, amount DECIMAL(10,2)").unwrap();
    let out = ok(&["validate-schema", "--file", columns.to_str().unwrap()]);
    assert!(out.contains("amount DECIMAL(10,2)"), "{out}");
    let broken = dir.path().join("broken.avsc");
    std::fs::write(
        &broken,
        r#"{"type":"record","name":"X","fields":[{"name":"a"}]}"#,
    )
    .unwrap();
    let out = run_multi(&["validate-schema", "--file", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an Avro schema"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn benchmark_throughput_runs_nexmark_in_process_and_via_the_broker_with_the_right_answers() {
    // `bench nexmark` fails the command when a run's records in or rows out differ from the
    // answer computed from the generated events, so success means every count was right.
    let out = ok(&[
        "benchmark",
        "--test-type",
        "throughput",
        "--data-size",
        "5K",
        "--query",
        "q2",
        "--via-broker",
        "--parallelism",
        "2",
        "--batch-size",
        "1000",
    ]);
    assert!(
        out.starts_with(
            "Nexmark: 5000 events (100 persons, 300 auctions, 4600 bids; 1 MB of JSON), 1000 \
             records per batch, 2 worker lanes\n"
        ),
        "{out}"
    );
    let runs: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| run"))
        .map(|l| l.split(" | ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        runs,
        [
            "| load person onto a topic",
            "| load auction onto a topic",
            "| load bid onto a topic",
            "| q2 in-process (JSON-lines files)",
            "| q2 via broker",
            "| raw consume of the bids (one poll per message, nothing decoded)",
            "| raw consume of the bids (librdkafka's batch call, nothing decoded)"
        ],
        "{out}"
    );
}

#[test]
fn benchmark_latency_measures_every_bid_through_the_broker_at_the_guides_percentiles() {
    let out = ok(&[
        "benchmark",
        "--test-type",
        "latency",
        "--duration",
        "1",
        "--target-rps",
        "400",
        "--percentiles",
        "50,90,99.9",
    ]);
    // One second at 400/s: at least 400 bids, every one measured once (a missing or doubled
    // result fails the run).
    let head = out
        .lines()
        .find(|l| l.starts_with("Nexmark latency: "))
        .unwrap_or_else(|| panic!("{out}"));
    let bids: usize = head["Nexmark latency: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(bids >= 400, "{out}");
    assert!(head.contains(" bids at 400/s"), "{out}");
    assert!(
        out.contains("| results measured | p50 | p90 | p99.9 | max |"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with(&format!("| {bids} | "))),
        "{out}"
    );
}

#[test]
fn benchmark_names_a_percentile_list_it_cannot_read() {
    let out = run_multi(&[
        "benchmark",
        "--test-type",
        "latency",
        "--percentiles",
        "50,ninety",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: --percentiles '50,ninety' is not a list of percentiles like 50,95,99\n"
    );
}

#[test]
fn benchmark_runs_each_trades_test_type_and_prints_records_per_second() {
    for (test_type, extra) in [
        ("query_performance", vec!["--concurrent-queries", "4"]),
        ("memory_stress", vec!["--memory-limit", "512MB"]),
        ("scalability", vec!["--concurrent-jobs", "2"]),
    ] {
        let mut args = vec![
            "benchmark",
            "--test-type",
            test_type,
            "--data-size",
            "5K",
            "--duration",
            "30",
        ];
        args.extend(extra);
        let out = ok(&args);
        assert!(
            out.starts_with(&format!("benchmark {test_type} (5000 records per run)")),
            "{out}"
        );
        // Every run read every generated record.
        let runs: Vec<&str> = out
            .lines()
            .skip(1)
            .filter(|l| l.contains(" records ") && !l.starts_with("total:"))
            .collect();
        assert!(!runs.is_empty(), "{out}");
        for run in runs {
            assert!(run.contains(" 5000 records"), "{out}");
        }
        assert!(out.contains("records/CPU-s"), "{out}");
        if test_type == "query_performance" {
            assert!(out.contains("p50=") && out.contains("p99="), "{out}");
        }
    }
}
