//! Killed with -9 at random moments while records flow, and restarted with the same group,
//! a job's output holds every result of an uninterrupted run (the oracle: `execute` over the
//! same input): at-least-once loses nothing, exactly-once also repeats nothing. For a stateless
//! filter, a tumbling window, session windows, an interval join and an updating aggregate.
//!
//! `VELO_KILLS` sets the kills per scenario (default 4; `scripts/kill-soak.sh` runs many more).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

/// A small deterministic generator for kill moments (seeded from the clock, printed).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        println!("seed {seed}");
        Rng(seed | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn kills() -> usize {
    std::env::var("VELO_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(4)
}

/// 2024-01-01T00:00:00Z plus `ms` milliseconds, ISO-8601.
fn iso(ms: i64) -> String {
    let (s, ms) = (ms / 1000, ms % 1000);
    let (m, s) = (s / 60, s % 60);
    format!("2024-01-01T{:02}:{:02}:{:02}.{ms:03}Z", m / 60, m % 60, s)
}

/// An event of stream `ev`: record `i` of key `k`, at `ms`.
fn event(i: i64, ms: i64) -> Rec {
    let k = ["a", "b", "c", "d"][(i % 4) as usize];
    Rec::value(format!(
        r#"{{"id":{i},"k":"{k}","v":{},"ts":"{}"}}"#,
        i * 7 % 101,
        iso(ms)
    ))
    .partition((i % 2) as i32)
}

fn closer(ms: i64) -> Vec<Rec> {
    (0..2)
        .map(|p| {
            Rec::value(format!(r#"{{"id":-1,"k":"end","v":0,"ts":"{}"}}"#, iso(ms))).partition(p)
        })
        .collect()
}

/// What to compare.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// The output rows against the oracle's: as sets (at-least-once) or multisets.
    Rows,
    /// The last message per key against the oracle's final rows (an updating aggregate).
    LatestPerKey,
}

struct Scenario {
    name: &'static str,
    /// `CREATE STREAM` declarations (topics filled in) and the query.
    sql: String,
    /// Records per topic, produced in chunks while the job is killed and restarted.
    feeds: Vec<(String, Vec<Rec>)>,
    /// Records that let every window close (not part of the result).
    closers: Vec<(String, Vec<Rec>)>,
    compare: Compare,
    /// More flags for the job.
    extra: Vec<&'static str>,
}

fn topic_pair(name: &str) -> String {
    let topic = unique_topic(name);
    create_topic(&topic, 2);
    topic
}

fn events_scenario(name: &'static str, select: &str, gaps: bool, compare: Compare) -> Scenario {
    events_scenario_of(name, select, gaps, compare, 1200)
}

fn events_scenario_of(
    name: &'static str,
    select: &str,
    gaps: bool,
    compare: Compare,
    events: i64,
) -> Scenario {
    let topic = topic_pair(&name.replace(' ', "-"));
    let records: Vec<Rec> = (0..events)
        .map(|i| {
            // Session scenario: a 5 s silence after every 100 records.
            let ms = i * 50 + if gaps { (i / 100) * 5000 } else { 0 };
            event(i, ms)
        })
        .collect();
    Scenario {
        name,
        sql: format!(
            "CREATE STREAM ev (id BIGINT, k VARCHAR, v BIGINT, ts TIMESTAMP) WITH ('topic' = '{topic}');\n{select}"
        ),
        feeds: vec![(topic.clone(), records)],
        closers: vec![(topic, closer(10_000_000))],
        compare,
        extra: Vec::new(),
    }
}

fn join_scenario() -> Scenario {
    let orders = topic_pair("rc-orders");
    let shipments = topic_pair("rc-ships");
    let order = |i: i64| {
        Rec::value(format!(r#"{{"id":{i},"ts":"{}"}}"#, iso(i * 100))).partition((i % 2) as i32)
    };
    let shipment = |i: i64| {
        Rec::value(format!(
            r#"{{"id":{i},"carrier":"c{}","ts":"{}"}}"#,
            i % 5,
            iso(i * 100 + 30_000)
        ))
        .partition((i % 2) as i32)
    };
    Scenario {
        name: "interval join",
        sql: format!(
            "CREATE STREAM orders (id BIGINT, ts TIMESTAMP) WITH ('topic' = '{orders}');\n\
             CREATE STREAM shipments (id BIGINT, carrier VARCHAR, ts TIMESTAMP) WITH ('topic' = '{shipments}');\n\
             SELECT o.id, s.carrier FROM orders o JOIN shipments s \
             ON o.id = s.id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' MINUTE"
        ),
        feeds: vec![
            (orders, (0..600).map(order).collect()),
            // Every third order is never shipped.
            (shipments, (0..600).filter(|i| i % 3 != 0).map(shipment).collect()),
        ],
        closers: vec![],
        compare: Compare::Rows,
        extra: Vec::new(),
    }
}

/// Every message of `topic` now (to the end of each partition).
fn read_all(topic: &str) -> Vec<Consumed> {
    consume_now(topic)
}

fn run_scenario(scenario: Scenario, delivery: &str) {
    let mut rng = Rng::new();
    let out = unique_topic("rc-out");
    create_topic(&out, 2);
    let group = unique_topic("rc-g");
    let args: Vec<String> = [
        "stream",
        "--query",
        &scenario.sql,
        "--output",
        "kafka",
        "--output-topic",
        &out,
        "--format",
        "json",
        "--group-id",
        &group,
        "--group-instance-id",
        &group,
        "--checkpoint-interval",
        "300ms",
        "--delivery",
        delivery,
        "--flush-interval-ms",
        "50",
    ]
    .iter()
    .chain(&scenario.extra)
    .map(|s| s.to_string())
    .collect();
    let argv = || args.iter().map(String::as_str).collect::<Vec<_>>();
    // Records flow while the job is killed and restarted: production lasts about as long as
    // the kills do.
    let feeds = scenario.feeds.clone();
    let pause = Duration::from_millis((kills() as u64 * 900 / 24).max(100));
    let producer = std::thread::spawn(move || {
        let chunks = 24;
        for c in 0..chunks {
            for (topic, records) in &feeds {
                let size = records.len().div_ceil(chunks);
                let chunk: Vec<Rec> = records.iter().skip(c * size).take(size).cloned().collect();
                if !chunk.is_empty() {
                    produce(topic, &chunk);
                }
            }
            std::thread::sleep(pause);
        }
    });
    let mut job = spawn(&argv());
    let mut killed = 0;
    for _ in 0..kills() {
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        job.child.kill().unwrap();
        job.child.wait().unwrap();
        killed += 1;
        job = spawn(&argv());
    }
    producer.join().unwrap();
    for (topic, records) in &scenario.closers {
        produce(topic, records);
    }
    let expected = oracle(&scenario);
    // Wait until the output holds every expected row (or give up after a minute).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got;
    loop {
        got = read_all(&out);
        let have = summarize(&got, scenario.compare);
        if expected.keys().all(|row| have.contains_key(row)) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, _) = job.terminate();
    assert_eq!(code, 0, "{}: the last run ends cleanly", scenario.name);
    got = read_all(&out);
    let have = summarize(&got, scenario.compare);
    let lost: Vec<&String> = expected.keys().filter(|r| !have.contains_key(*r)).collect();
    let wrong: Vec<&String> = have.keys().filter(|r| !expected.contains_key(*r)).collect();
    let repeated: usize = have
        .iter()
        .map(|(row, n)| n.saturating_sub(*expected.get(row).unwrap_or(&0)))
        .sum();
    println!(
        "{} ({delivery}): {killed} kills, {} results expected, {} messages, {} lost, {} wrong, {repeated} repeated",
        scenario.name,
        expected.values().sum::<usize>(),
        got.len(),
        lost.len(),
        wrong.len()
    );
    assert!(lost.is_empty(), "{}: lost {lost:?}", scenario.name);
    assert!(
        wrong.is_empty(),
        "{}: rows no uninterrupted run gives: {wrong:?}",
        scenario.name
    );
    if delivery == "exactly-once" {
        assert_eq!(repeated, 0, "{}: results written twice", scenario.name);
    }
}

/// The rows of the output as a multiset (`Rows`), or the last value per key (`LatestPerKey`).
fn summarize(messages: &[Consumed], compare: Compare) -> BTreeMap<String, usize> {
    let mut rows = BTreeMap::new();
    match compare {
        Compare::Rows => {
            for m in messages {
                *rows.entry(m.value.clone()).or_insert(0) += 1;
            }
        }
        Compare::LatestPerKey => {
            let mut latest: BTreeMap<String, &Consumed> = BTreeMap::new();
            for m in messages {
                latest.insert(m.key.clone().unwrap_or_default(), m);
            }
            for m in latest.values() {
                rows.insert(m.value.clone(), 1);
            }
        }
    }
    rows
}

/// The uninterrupted run's rows: `execute` over the whole input, the closers left out.
fn oracle(scenario: &Scenario) -> BTreeMap<String, usize> {
    let out = run_ok(&[
        "execute",
        "--query",
        &scenario.sql,
        "--format",
        "json-lines",
    ]);
    let mut rows = BTreeMap::new();
    for line in out.lines().filter(|l| !l.contains(r#""k":"end""#)) {
        *rows.entry(line.to_string()).or_insert(0) += 1;
    }
    assert!(
        rows.len() >= 4,
        "{}: a meaningful oracle: {rows:?}",
        scenario.name
    );
    rows
}

fn filter() -> Scenario {
    events_scenario(
        "stateless filter",
        "SELECT id, k, v FROM ev WHERE v % 3 <> 0",
        false,
        Compare::Rows,
    )
}

/// A backlog big enough that micro-batches are split across four worker lanes.
fn filter_on_lanes() -> Scenario {
    in_large_batches_on_four_lanes(
        events_scenario_of(
            "stateless filter on four lanes",
            "SELECT id, k, v FROM ev WHERE v % 3 <> 0",
            false,
            Compare::Rows,
            30_000,
        ),
        "8192",
    )
}

fn tumbling() -> Scenario {
    events_scenario(
        "tumbling window",
        "SELECT window_start, k, COUNT(*) AS n, SUM(v) AS total FROM ev WHERE k <> 'end' \
         GROUP BY k WINDOW TUMBLING(ts, 5s)",
        false,
        Compare::Rows,
    )
}

fn sessions() -> Scenario {
    events_scenario(
        "session window",
        "SELECT k, window_start, window_end, COUNT(*) AS n FROM ev WHERE k <> 'end' \
         GROUP BY k, SESSION(ts, INTERVAL '2' SECOND)",
        true,
        Compare::Rows,
    )
}

/// Nexmark q5's shape: each key's total per window joined with the window's largest total
/// (a cascaded window, a window join, the stream read twice).
/// Each key's total per 5 s window.
const TOTALS: &str = "SELECT k, SUM(v) AS total, window_start, window_end FROM ev \
                      WHERE k <> 'end' GROUP BY k, TUMBLE(ts, INTERVAL '5' SECOND)";

/// The top total of each window: an aggregate over a keyed window's rows.
fn top_per_window() -> Scenario {
    events_scenario(
        "top total per window",
        &format!(
            "SELECT c.window_start, MAX(c.total) AS top, COUNT(*) AS keys FROM ({TOTALS}) c \
             GROUP BY c.window_start, c.window_end"
        ),
        false,
        Compare::Rows,
    )
}

/// Nexmark q7's shape: the events at the top value of their 5 s window (an interval join of
/// the raw events, row-wise, with a global aggregate), over `events` events.
fn top_events(events: i64) -> Scenario {
    events_scenario_of(
        "top events",
        "SELECT e.id, e.v, m.top FROM ev e JOIN \
           (SELECT MAX(v) AS top, window_end AS ts FROM ev WHERE k <> 'end' \
            GROUP BY TUMBLE(ts, INTERVAL '5' SECOND)) m \
         ON e.v = m.top WHERE e.ts BETWEEN m.ts - INTERVAL '5' SECOND AND m.ts",
        false,
        Compare::Rows,
        events,
    )
}

fn busiest_per_window() -> Scenario {
    let totals = TOTALS;
    events_scenario(
        "busiest key per window",
        &format!(
            "SELECT a.k, a.total, a.window_start FROM ({totals}) a \
             JOIN (SELECT MAX(c.total) AS top, c.window_start, c.window_end FROM ({totals}) c \
                   GROUP BY c.window_start, c.window_end) m \
             ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.total >= m.top"
        ),
        false,
        Compare::Rows,
    )
}

/// Window functions over each key's rows: a 3-row moving sum and a row number, whose
/// history and counters are state.
fn over_rows() -> Scenario {
    events_scenario(
        "over window",
        "SELECT id, k, v, \
           SUM(v) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s3, \
           ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts) AS rn \
         FROM ev WHERE k <> 'end'",
        false,
        Compare::Rows,
    )
}

/// Events enriched from a table topic (filled once, before the job starts, so that the oracle
/// reads the same table) and counted per label and window: the followed table is state of the
/// first lane, shared by every lane's lookups.
fn enriched_windows() -> Scenario {
    let labels = unique_topic("rc-labels");
    create_topic(&labels, 1);
    let label =
        |k: &str, label: &str| Rec::value(format!(r#"{{"k":"{k}","label":"{label}"}}"#)).key(k);
    produce(
        &labels,
        &[
            label("a", "low"),
            label("b", "high"),
            label("c", "low"),
            label("d", "high"),
        ],
    );
    in_large_batches_on_four_lanes(
    events_scenario_of(
            "enriched windows",
            &format!(
                "CREATE TABLE labels (k VARCHAR, label VARCHAR) WITH ('topic' = '{labels}', 'key' = 'k');\n\
                 SELECT l.label, COUNT(*) AS n, SUM(e.v) AS total, window_start \
                 FROM ev e JOIN labels l ON e.k = l.k WHERE e.k <> 'end' \
                 GROUP BY l.label, TUMBLE(e.ts, INTERVAL '2' SECOND)"
            ),
            false,
            Compare::Rows,
            6_000,
        ),
        "4096",
    )
}

/// One total per window over every key, in micro-batches large enough to be decoded on four
/// lanes: the window's state lives on the first lane alone.
fn global_windows_on_lanes() -> Scenario {
    in_large_batches_on_four_lanes(
        events_scenario_of(
            "global windows on four lanes",
            "SELECT COUNT(*) AS n, SUM(v) AS total, window_start FROM ev WHERE k <> 'end' \
             GROUP BY TUMBLE(ts, INTERVAL '2' SECOND)",
            false,
            Compare::Rows,
            6_000,
        ),
        "4096",
    )
}

fn updating() -> Scenario {
    events_scenario(
        "updating aggregate",
        "SELECT k, COUNT(*) AS n, SUM(v) AS total FROM ev WHERE k <> 'end' GROUP BY k",
        false,
        Compare::LatestPerKey,
    )
}

#[test]
fn a_stateless_filter_killed_at_random_loses_nothing() {
    run_scenario(filter(), "at-least-once");
}

#[test]
fn a_stateless_filter_killed_at_random_writes_each_result_once_with_exactly_once() {
    run_scenario(filter(), "exactly-once");
}

#[test]
fn a_stateless_filter_on_four_lanes_killed_at_random_loses_nothing() {
    run_scenario(filter_on_lanes(), "at-least-once");
}

#[test]
fn a_stateless_filter_on_four_lanes_killed_at_random_writes_each_result_once_with_exactly_once() {
    run_scenario(filter_on_lanes(), "exactly-once");
}

/// `scenario` on four lanes, read in micro-batches of up to `batch` records: a backlog's
/// batches are large enough to be cut into ranges for the lanes.
fn in_large_batches_on_four_lanes(mut scenario: Scenario, batch: &'static str) -> Scenario {
    scenario.extra = vec!["--parallelism", "4", "--batch-size", batch];
    scenario
}

/// `scenario` on four lanes: rows change lanes by key, each lane's state is checkpointed.
fn on_four_lanes(mut scenario: Scenario) -> Scenario {
    scenario.extra = vec!["--parallelism", "4"];
    scenario
}

#[test]
fn a_stateless_filter_with_eager_batches_killed_at_random_loses_nothing() {
    // Eager batches commit once the output is delivered, not at the end of each batch.
    let mut scenario = filter();
    scenario.extra = vec!["--eager-batches"];
    run_scenario(scenario, "at-least-once");
}

#[test]
fn a_tumbling_window_on_four_lanes_killed_at_random_writes_each_result_once_with_exactly_once() {
    run_scenario(on_four_lanes(tumbling()), "exactly-once");
}

#[test]
fn session_windows_on_four_lanes_killed_at_random_lose_nothing_and_repeat_nothing() {
    run_scenario(on_four_lanes(sessions()), "exactly-once");
}

#[test]
fn an_updating_aggregate_on_four_lanes_killed_at_random_ends_with_every_keys_exact_total() {
    run_scenario(on_four_lanes(updating()), "at-least-once");
}

#[test]
fn a_tumbling_window_killed_at_random_loses_nothing() {
    run_scenario(tumbling(), "at-least-once");
}

#[test]
fn a_tumbling_window_killed_at_random_writes_each_result_once_with_exactly_once() {
    run_scenario(tumbling(), "exactly-once");
}

#[test]
fn session_windows_killed_at_random_lose_nothing_and_repeat_nothing_with_exactly_once() {
    run_scenario(sessions(), "exactly-once");
}

#[test]
fn an_interval_join_killed_at_random_loses_nothing_and_repeats_nothing_with_exactly_once() {
    run_scenario(join_scenario(), "exactly-once");
}

#[test]
fn an_interval_join_on_four_lanes_killed_at_random_loses_nothing_and_repeats_nothing() {
    // Each lane's copy of the join holds its keys' rows; every lane's is checkpointed.
    run_scenario(on_four_lanes(join_scenario()), "exactly-once");
}

#[test]
fn an_updating_aggregate_killed_at_random_ends_with_every_keys_exact_total() {
    run_scenario(updating(), "at-least-once");
}

#[test]
fn the_busiest_key_per_window_killed_at_random_loses_nothing_and_repeats_nothing_with_exactly_once()
{
    run_scenario(busiest_per_window(), "exactly-once");
}

#[test]
fn the_busiest_key_per_window_on_four_lanes_killed_at_random_loses_nothing_and_repeats_nothing() {
    // A window join whose sides' windows are split by key over the lanes; the maximum per
    // window, the join and their state live on the first lane.
    run_scenario(on_four_lanes(busiest_per_window()), "exactly-once");
}

#[test]
fn the_top_events_per_window_on_four_lanes_killed_at_random_lose_nothing_and_repeat_nothing() {
    // The raw events are decoded on the lanes, and in batches of up to 4 096 the maximum is
    // aggregated on them too, its partial maxima merged on the first lane; the maximum, the
    // join and their state live on the first lane.
    run_scenario(
        in_large_batches_on_four_lanes(top_events(6_000), "4096"),
        "exactly-once",
    );
}

#[test]
fn global_windows_on_four_lanes_killed_at_random_lose_nothing_and_repeat_nothing() {
    run_scenario(global_windows_on_lanes(), "exactly-once");
}

#[test]
fn windows_over_events_enriched_from_a_table_on_four_lanes_killed_at_random_lose_nothing_and_repeat_nothing(
) {
    // Every lane's lookups read one table, restored from the checkpoint on the first lane.
    run_scenario(enriched_windows(), "exactly-once");
}

#[test]
fn an_over_window_killed_at_random_loses_nothing_and_repeats_nothing_with_exactly_once() {
    run_scenario(over_rows(), "exactly-once");
}

#[test]
fn an_aggregate_over_windows_split_on_four_lanes_killed_at_random_loses_nothing_and_repeats_nothing(
) {
    // The windows are split by key over the lanes; the aggregate over them runs on the first
    // lane, its state checkpointed with the lanes'.
    run_scenario(on_four_lanes(top_per_window()), "exactly-once");
}

#[test]
fn an_over_window_on_four_lanes_killed_at_random_loses_nothing_and_repeats_nothing() {
    // Each lane holds its keys' partitions (kept rows, row numbers); every lane's is
    // checkpointed, and what the lanes release is merged into event-time order.
    run_scenario(on_four_lanes(over_rows()), "exactly-once");
}
