//! `velo-sql bench nexmark` through the binary: every run reads every record of the streams
//! it reads, and its rows out are the answers DataFusion's batch engine gives over the
//! generator's events (decoded by another path).

mod common;
#[allow(dead_code)] // bench uses only the JSON tables of the shared oracle helpers
mod oracle;

use common::*;
use oracle::register_json_table;

/// The `| run | records | … | rows out |` lines of the command's table: (run, records, rows).
fn table(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter(|l| {
            ["| load", "| q", "| count", "| raw"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].into(), cells[2].into(), cells[7].into())
        })
        .collect()
}

/// The generator's first `events` events of one kind (`event_type` 0 person, 1 auction, 2 bid)
/// as flat JSON lines of `fields`, written by `execute` over the generator source (its nested
/// records, not the bench's flat writers).
fn stream_lines(events: u64, kind: u8, record: &str, fields: &[&str]) -> Vec<String> {
    let select: Vec<String> = fields
        .iter()
        .map(|f| format!("{record}['{f}'] AS {f}"))
        .collect();
    let query = format!(
        "SELECT {} FROM nexmark WHERE event_type = {kind}",
        select.join(", ")
    );
    let source = format!("generator:nexmark?count={events}");
    run_ok(&[
        "execute",
        "--source",
        &source,
        "--query",
        &query,
        "--format",
        "json-lines",
    ])
    .lines()
    .map(String::from)
    .collect()
}

/// DataFusion's batch answers (row counts) to the suite's queries over the generator's first
/// `events` events: each query as the Nexmark suite writes it, windows as `date_bin`, sessions
/// as gaps between a bidder's bids. Another engine than ours, and another decode path.
fn batch_answers(events: u64) -> Vec<(&'static str, u64)> {
    let ctx = datafusion::prelude::SessionContext::new();
    let persons = stream_lines(
        events,
        0,
        "person",
        &["id", "name", "city", "state", "date_time"],
    );
    let auctions = stream_lines(
        events,
        1,
        "auction",
        &["id", "seller", "category", "date_time", "expires"],
    );
    let bids = stream_lines(
        events,
        2,
        "bid",
        &["auction", "bidder", "price", "date_time"],
    );
    register_json_table(
        &ctx,
        "person",
        "id BIGINT, name VARCHAR, city VARCHAR, state VARCHAR, date_time TIMESTAMP",
        &persons,
    );
    register_json_table(
        &ctx,
        "auction",
        "id BIGINT, seller BIGINT, category BIGINT, date_time TIMESTAMP, expires TIMESTAMP",
        &auctions,
    );
    register_json_table(
        &ctx,
        "bid",
        "auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP",
        &bids,
    );
    let bin = |size: &str| {
        format!("date_bin(INTERVAL '{size}', date_time, TIMESTAMP '1970-01-01T00:00:00')")
    };
    // Each bid in the 5 windows of 10 s sliding by 2 s that hold it.
    let hop = format!(
        "SELECT auction, {} - k.back AS starttime, COUNT(*) AS num \
         FROM bid CROSS JOIN (VALUES (INTERVAL '0 seconds'), (INTERVAL '2 seconds'), \
         (INTERVAL '4 seconds'), (INTERVAL '6 seconds'), (INTERVAL '8 seconds')) AS k(back) \
         GROUP BY auction, {} - k.back",
        bin("2 seconds"),
        bin("2 seconds")
    );
    let queries = [
        ("q0", "SELECT * FROM bid".to_string()),
        ("q1", "SELECT * FROM bid".to_string()),
        ("q2", "SELECT * FROM bid WHERE auction % 123 = 0".to_string()),
        (
            "q3",
            "SELECT P.name, A.id FROM auction A JOIN person P ON A.seller = P.id \
             WHERE A.category = 10 AND P.state IN ('OR', 'ID', 'CA')"
                .to_string(),
        ),
        (
            "q4",
            "SELECT Q.category, AVG(Q.final) FROM (SELECT MAX(B.price) AS final, A.category \
             FROM auction A JOIN bid B ON A.id = B.auction \
             WHERE B.date_time BETWEEN A.date_time AND A.expires GROUP BY A.id, A.category) Q \
             GROUP BY Q.category"
                .to_string(),
        ),
        (
            "q5",
            format!(
                "SELECT a.auction FROM ({hop}) a JOIN \
                 (SELECT starttime, MAX(num) AS maxn FROM ({hop}) c GROUP BY starttime) m \
                 ON a.starttime = m.starttime AND a.num >= m.maxn"
            ),
        ),
        (
            "q7",
            format!(
                "SELECT B.auction FROM bid B JOIN \
                 (SELECT MAX(price) AS maxprice, {} + INTERVAL '10 seconds' AS ends FROM bid \
                  GROUP BY {}) B1 ON B.price = B1.maxprice \
                 WHERE B.date_time BETWEEN B1.ends - INTERVAL '10 seconds' AND B1.ends",
                bin("10 seconds"),
                bin("10 seconds")
            ),
        ),
        (
            "q8",
            format!(
                "SELECT P.id FROM (SELECT DISTINCT id, name, {b} AS w FROM person) P \
                 JOIN (SELECT DISTINCT seller, {b} AS w FROM auction) A \
                 ON P.id = A.seller AND P.w = A.w",
                b = bin("10 seconds")
            ),
        ),
        (
            "q11",
            "SELECT * FROM (SELECT date_time - LAG(date_time) OVER (PARTITION BY bidder \
             ORDER BY date_time) AS gap FROM bid) WHERE gap IS NULL OR gap >= INTERVAL '10 seconds'"
                .to_string(),
        ),
        (
            "count10s",
            format!("SELECT DISTINCT auction, {} FROM bid", bin("10 seconds")),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    queries
        .into_iter()
        .map(|(name, sql)| {
            let batches = rt
                .block_on(async { ctx.sql(&sql).await?.collect().await })
                .unwrap_or_else(|e| panic!("{name}: {e}\n{sql}"));
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            (name, rows as u64)
        })
        .collect()
}

#[test]
fn bench_nexmark_runs_every_query_in_process_and_via_the_broker_with_the_right_answers() {
    // 3 s of events: several sliding windows, sessions, and every kind of record.
    let events = 30_000;
    let answers = batch_answers(events);
    for (name, rows) in &answers {
        assert_ne!(*rows, 0, "{name}: the sample must give rows");
    }
    let (persons, auctions, bids) = (events / 50, events * 3 / 50, events * 46 / 50);
    let reads = |name: &str| match name {
        "q3" | "q8" => persons + auctions,
        "q4" => auctions + bids,
        "q5" | "q7" => 2 * bids,
        _ => bids,
    };
    // Two worker lanes: the keyed queries exchange rows between them.
    let out = velo_sql()
        .args([
            "bench",
            "nexmark",
            "--events",
            &events.to_string(),
            "--via-broker",
            "--parallelism",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = stdout(&out);
    // Each stream loaded onto its topic: every record read and written once.
    let mut want: Vec<(String, String, String)> =
        [("person", persons), ("auction", auctions), ("bid", bids)]
            .iter()
            .map(|(stream, n)| {
                (
                    format!("load {stream} onto a topic"),
                    n.to_string(),
                    n.to_string(),
                )
            })
            .collect();
    for (name, rows) in &answers {
        for run in ["in-process (JSON-lines files)", "via broker"] {
            want.push((
                format!("{name} {run}"),
                reads(name).to_string(),
                rows.to_string(),
            ));
        }
    }
    for calls in ["one poll per message", "librdkafka's batch call"] {
        want.push((
            format!("raw consume of the bids ({calls}, nothing decoded)"),
            bids.to_string(),
            "-".into(),
        ));
    }
    assert_eq!(table(&stdout), want, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "Nexmark: {events} events ({persons} persons, {auctions} auctions, {bids} bids;"
        )),
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
    assert_eq!(runs, ["q2 in-process (JSON-lines files)"]);
}

#[test]
fn bench_nexmark_latency_gets_every_result_once_through_a_continuous_job() {
    let bids = stream_lines(300, 2, "bid", &["auction"]).len() as u64;
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
