//! `velo-sql bench nexmark` through the binary: every run reads every bid, and its rows out
//! are the answers SQL gives over the generator (counted here by another path).

mod common;

use common::*;

/// The `| run | records | … | rows out |` lines of the command's table: (run, records, rows).
fn table(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter(|l| ["| q", "| count", "| raw"].iter().any(|p| l.starts_with(p)))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].into(), cells[2].into(), cells[7].into())
        })
        .collect()
}

/// COUNT(*) of the generator's bids where `condition` holds, by `execute` over the generator.
fn bids_where(events: u64, condition: &str) -> String {
    let query = format!("SELECT COUNT(*) AS n FROM nexmark WHERE event_type = 2 AND {condition}");
    let source = format!("generator:nexmark?count={events}");
    let out = run_ok(&[
        "execute", "--source", &source, "--query", &query, "--format", "csv",
    ]);
    out.lines().nth(1).unwrap().to_string()
}

/// The rows `execute` gives for `query` over the generator's first `events` events.
fn rows_over_generator(events: u64, query: &str) -> String {
    let source = format!("generator:nexmark?count={events}");
    let out = run_ok(&[
        "execute", "--source", &source, "--query", query, "--format", "csv",
    ]);
    (out.lines().count() - 1).to_string()
}

#[test]
fn bench_nexmark_runs_every_query_in_process_and_via_the_broker_with_the_right_answers() {
    let events = 5000;
    let bids = bids_where(events, "TRUE");
    let q2 = bids_where(events, "bid['auction'] % 123 = 0");
    assert_ne!(q2, "0", "the sample must select some bids");
    let q11 = rows_over_generator(
        events,
        "SELECT bid['bidder'] AS b, COUNT(*) AS n FROM nexmark WHERE event_type = 2 \
         GROUP BY bid['bidder'], SESSION(date_time, INTERVAL '10' SECOND)",
    );
    let count10s = rows_over_generator(
        events,
        "SELECT bid['auction'] AS a, window_start, COUNT(*) AS n FROM nexmark \
         WHERE event_type = 2 GROUP BY bid['auction'] WINDOW TUMBLING(date_time, 10s)",
    );
    // Two worker lanes: the keyed queries exchange rows between them.
    let out = velo_sql()
        .args([
            "bench",
            "nexmark",
            "--events",
            "5000",
            "--via-broker",
            "--parallelism",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = stdout(&out);
    let row = |run: &str, rows: &str| (run.to_string(), bids.clone(), rows.to_string());
    assert_eq!(
        table(&stdout),
        vec![
            row("q0 in-process (JSON-lines file)", &bids),
            row("q0 via broker", &bids),
            row("q1 in-process (JSON-lines file)", &bids),
            row("q1 via broker", &bids),
            row("q2 in-process (JSON-lines file)", &q2),
            row("q2 via broker", &q2),
            row("q11 in-process (JSON-lines file)", &q11),
            row("q11 via broker", &q11),
            row("count10s in-process (JSON-lines file)", &count10s),
            row("count10s via broker", &count10s),
            row("raw consume (librdkafka, nothing decoded)", "-"),
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("Nexmark: 5000 events, {bids} bids")),
        "{stdout}"
    );
}

#[test]
fn bench_nexmark_runs_one_query_without_a_broker() {
    let out = velo_sql()
        .args(["bench", "nexmark", "--events", "2000", "--query", "q2"])
        .env("KAFKA_BROKERS", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: Vec<String> = table(&stdout(&out)).into_iter().map(|r| r.0).collect();
    assert_eq!(runs, ["q2 in-process (JSON-lines file)"]);
}

#[test]
fn bench_nexmark_latency_gets_every_result_once_through_a_continuous_job() {
    let bids: u64 = bids_where(300, "TRUE").parse().unwrap();
    let args = [
        "bench",
        "nexmark",
        "--latency",
        "--events",
        "300",
        "--rate",
        "500",
    ];
    let out = velo_sql().args(args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = stdout(&out);
    // The first bid only creates the input topic; the others are measured, each once.
    let measured = bids - 1;
    let row = format!("| {measured} | ");
    assert!(stdout.lines().any(|l| l.starts_with(&row)), "{stdout}");
    let head = format!("Nexmark latency: {measured} bids at 500/s");
    assert!(stdout.contains(&head), "{stdout}");
}

#[test]
fn bench_nexmark_names_the_flag_of_a_count_it_cannot_read() {
    let out = velo_sql()
        .args(["bench", "nexmark", "--events", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: --events 'lots' is not a count like 1M\n"
    );
}
