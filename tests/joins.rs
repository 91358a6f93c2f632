//! Stream–table joins through the binary against the real broker: a table kept from a
//! compacted topic (latest value per key, tombstones delete, followed from where its initial
//! read ended), a file table, and the refusal of unbounded stream–stream joins.

mod common;

use common::*;

#[test]
fn a_stream_joins_the_latest_row_per_key_of_a_compacted_topic() {
    let instruments = unique_topic("instruments");
    let trades = unique_topic("jtrades");
    create_topic(&instruments, 1);
    create_topic(&trades, 1);
    produce(
        &instruments,
        &[
            Rec::value(r#"{"symbol":"AAPL","sector":"Tech"}"#).key("AAPL"),
            Rec::value(r#"{"symbol":"MSFT","sector":"Tech"}"#).key("MSFT"),
            Rec::value(r#"{"symbol":"AAPL","sector":"Hardware"}"#).key("AAPL"),
            Rec {
                key: Some("MSFT".into()),
                ..Default::default()
            }, // tombstone: MSFT is gone
        ],
    );
    produce(
        &trades,
        &[
            Rec::value(r#"{"symbol":"AAPL","price":"150.25"}"#),
            Rec::value(r#"{"symbol":"MSFT","price":"410.00"}"#),
            Rec::value(r#"{"symbol":"JPM","price":"195.00"}"#),
        ],
    );
    let sql = |join: &str| {
        format!(
            "CREATE STREAM trades (symbol VARCHAR, price DECIMAL(10,2)) WITH ('topic' = '{trades}');\n\
             CREATE TABLE instruments (symbol VARCHAR, sector VARCHAR) WITH ('topic' = '{instruments}', 'key' = 'symbol');\n\
             SELECT t.symbol, t.price, r.sector FROM trades t {join} instruments r ON t.symbol = r.symbol"
        )
    };
    assert_eq!(
        run_ok(&["execute", "--query", &sql("LEFT JOIN"), "--format", "csv"]),
        "symbol,price,sector\nAAPL,150.25,Hardware\nMSFT,410.00,\nJPM,195.00,\n"
    );
    assert_eq!(
        run_ok(&["execute", "--query", &sql("JOIN"), "--format", "csv"]),
        "symbol,price,sector\nAAPL,150.25,Hardware\n"
    );
}

#[test]
fn a_join_condition_that_cannot_be_evaluated_on_a_row_skips_that_row_and_names_its_record() {
    // `100 / (t.qty - r.lot)` divides by zero for trade 2 (INNER and LEFT alike): that trade
    // is left out — no pair, no row with NULLs — and its record named; the job goes on. It
    // once failed the whole job with "Divide by zero".
    let dir = tempfile::tempdir().unwrap();
    let trades = dir.path().join("trades.jsonl");
    let lots = dir.path().join("lots.csv");
    std::fs::write(
        &trades,
        "{\"id\":1,\"symbol\":\"AAPL\",\"qty\":200}\n\
         {\"id\":2,\"symbol\":\"AAPL\",\"qty\":100}\n\
         {\"id\":3,\"symbol\":\"JPM\",\"qty\":60}\n\
         {\"id\":4,\"symbol\":\"MSFT\",\"qty\":1}\n",
    )
    .unwrap();
    std::fs::write(&lots, "symbol,lot\nAAPL,100\nJPM,50\n").unwrap();
    let sql = |join: &str| {
        format!(
            "CREATE STREAM trades (id BIGINT, symbol VARCHAR, qty BIGINT) WITH ('path' = '{}', 'format' = 'json');\n\
             CREATE TABLE lots (symbol VARCHAR, lot BIGINT) WITH ('path' = '{}', 'format' = 'csv');\n\
             SELECT t.id, r.lot FROM trades t {join} lots r \
             ON t.symbol = r.symbol AND 100 / (t.qty - r.lot) > 5",
            trades.display(),
            lots.display()
        )
    };
    for (join, expected) in [
        ("JOIN", "id,lot\n3,50\n"),
        ("LEFT JOIN", "id,lot\n1,\n3,50\n4,\n"),
    ] {
        let output = run(&["execute", "--query", &sql(join), "--format", "csv"]);
        assert!(output.status.success(), "{join}: {}", stderr(&output));
        assert_eq!(stdout(&output), expected, "{join}");
        let err = stderr(&output);
        let warned: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("WARN"))
            .map(|l| l.split_once("WARN ").unwrap().1)
            .collect();
        assert_eq!(warned.len(), 1, "{join}: {warned:?}");
        let named = format!(
            "skipped the record at file {} row 2: the join's ON condition cannot be evaluated",
            trades.display()
        );
        assert!(warned[0].starts_with(&named), "{join}: {}", warned[0]);
        assert!(
            warned[0].contains("Divide by zero"),
            "{join}: {}",
            warned[0]
        );
    }
}

#[test]
fn a_file_table_enriches_a_continuous_stream() {
    let trades = unique_topic("jlive");
    create_topic(&trades, 1);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("instruments.csv");
    std::fs::write(&csv, "symbol,sector\nAAPL,Tech\nJPM,Finance\n").unwrap();
    let sql = format!(
        "CREATE TABLE instruments (symbol VARCHAR, sector VARCHAR) WITH ('path' = '{}', 'format' = 'csv');\n\
         SELECT t.symbol, r.sector FROM trades t JOIN instruments r ON t.symbol = r.symbol",
        csv.display()
    );
    let job = spawn(&[
        "stream",
        "--query",
        &sql,
        "--topic",
        &trades,
        "--schema",
        "symbol VARCHAR",
        "--format",
        "json-lines",
        "--group-id",
        &unique_topic("g"),
    ]);
    produce(
        &trades,
        &[
            Rec::value(r#"{"symbol":"JPM"}"#),
            Rec::value(r#"{"symbol":"X"}"#),
            Rec::value(r#"{"symbol":"AAPL"}"#),
        ],
    );
    assert_eq!(
        job.take_lines(2),
        vec![
            r#"{"symbol":"JPM","sector":"Finance"}"#,
            r#"{"symbol":"AAPL","sector":"Tech"}"#
        ]
    );
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_join_of_two_unbounded_streams_is_refused_with_a_suggestion() {
    let a = unique_topic("ja");
    create_topic(&a, 1);
    produce(&a, &[Rec::value(r#"{"id":1}"#)]);
    let sql = format!(
        "CREATE STREAM x (id BIGINT) WITH ('topic' = '{a}');\nCREATE STREAM y (id BIGINT) WITH ('topic' = '{a}');\n\
         SELECT x.id FROM x JOIN y ON x.id = y.id"
    );
    run_failing(
        &["execute", "--query", &sql],
        2,
        "a join of two streams needs a window or a time bound",
    );
}

#[test]
fn a_continuous_join_follows_the_table_topic_while_it_runs() {
    let instruments = unique_topic("live-instruments");
    let trades = unique_topic("live-trades");
    create_topic(&instruments, 1);
    create_topic(&trades, 1);
    produce(
        &instruments,
        &[Rec::value(r#"{"symbol":"AAPL","sector":"Tech"}"#).key("AAPL")],
    );
    let sql = format!(
        "CREATE STREAM trades (symbol VARCHAR) WITH ('topic' = '{trades}');\n\
         CREATE TABLE instruments (symbol VARCHAR, sector VARCHAR) WITH ('topic' = '{instruments}', 'key' = 'symbol');\n\
         SELECT t.symbol, r.sector FROM trades t LEFT JOIN instruments r ON t.symbol = r.symbol"
    );
    let job = spawn(&[
        "stream",
        "--query",
        &sql,
        "--format",
        "json-lines",
        "--group-id",
        &unique_topic("g"),
    ]);
    let trade = |s: &str| Rec::value(format!(r#"{{"symbol":"{s}"}}"#));
    produce(&trades, &[trade("AAPL")]);
    assert_eq!(
        job.take_lines(1),
        vec![r#"{"symbol":"AAPL","sector":"Tech"}"#]
    );
    produce(
        &instruments,
        &[
            Rec::value(r#"{"symbol":"AAPL","sector":"Hardware"}"#).key("AAPL"),
            Rec::value(r#"{"symbol":"MSFT","sector":"Cloud"}"#).key("MSFT"),
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    produce(&trades, &[trade("AAPL"), trade("MSFT")]);
    assert_eq!(
        job.take_lines(2),
        vec![
            r#"{"symbol":"AAPL","sector":"Hardware"}"#,
            r#"{"symbol":"MSFT","sector":"Cloud"}"#
        ]
    );
    produce(
        &instruments,
        &[Rec {
            key: Some("MSFT".into()),
            ..Default::default()
        }],
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    produce(&trades, &[trade("MSFT")]);
    assert_eq!(
        job.take_lines(1),
        vec![r#"{"symbol":"MSFT","sector":null}"#]
    );
    let (code, _) = job.terminate();
    assert_eq!(code, 0);
}

/// Trades of 40 symbols enriched with their sector from a followed table topic: the topics,
/// the query, the records and the rows expected.
struct Sectors {
    instruments: String,
    trades: String,
    sql: String,
}

const SECTOR_TRADES: usize = 6_000;
const SECTOR_SYMBOLS: usize = 40;

impl Sectors {
    fn new() -> Self {
        let instruments = unique_topic("lanes-instruments");
        let trades = unique_topic("lanes-trades");
        create_topic(&instruments, 1);
        create_topic(&trades, 1);
        let sql = format!(
            "CREATE STREAM trades (symbol VARCHAR, n BIGINT) WITH ('topic' = '{trades}');\n\
             CREATE TABLE instruments (symbol VARCHAR, sector VARCHAR) WITH ('topic' = '{instruments}', 'key' = 'symbol');\n\
             SELECT t.n, t.symbol, r.sector FROM trades t JOIN instruments r ON t.symbol = r.symbol"
        );
        Sectors {
            instruments,
            trades,
            sql,
        }
    }

    /// Every symbol's table row, in `sector`.
    fn sectors(sector: &str) -> Vec<Rec> {
        (0..SECTOR_SYMBOLS)
            .map(|s| {
                Rec::value(format!(r#"{{"symbol":"S{s}","sector":"{sector}"}}"#))
                    .key(format!("S{s}"))
            })
            .collect()
    }

    fn set_sector(&self, sector: &str) {
        produce(&self.instruments, &Self::sectors(sector));
    }

    fn trade(i: usize) -> Rec {
        Rec::value(format!(r#"{{"symbol":"S{}","n":{i}}}"#, i % SECTOR_SYMBOLS))
    }

    fn joined(i: usize, sector: &str) -> String {
        format!(
            r#"{{"n":{i},"symbol":"S{}","sector":"{sector}"}}"#,
            i % SECTOR_SYMBOLS
        )
    }

    /// Trades `from` to `from + SECTOR_TRADES`.
    fn burst(&self, from: usize) {
        let trades: Vec<Rec> = (from..from + SECTOR_TRADES).map(Self::trade).collect();
        produce(&self.trades, &trades);
    }

    /// The rows of [`Sectors::burst`]`(from)` joined with `sector`.
    fn expected(from: usize, sector: &str) -> Vec<String> {
        (from..from + SECTOR_TRADES)
            .map(|i| Self::joined(i, sector))
            .collect()
    }

    /// `stream` of the query with the group `group`, checkpointing every 200 ms, and `extra`.
    fn args<'a>(&'a self, group: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "stream",
            "--query",
            &self.sql,
            "--format",
            "json-lines",
            "--group-id",
            group,
            "--checkpoint-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        args
    }
}

#[test]
fn every_lane_joins_with_the_table_as_its_topic_changes_it_while_the_job_runs() {
    // Four lanes share one table: bursts of trades are cut into ranges, each joined on its own
    // lane, and a change applied between micro-batches must reach every lane's lookups, before
    // and after a restart from a checkpoint.
    let topics = Sectors::new();
    let group = unique_topic("g-lanes");
    let args = topics.args(&group, &["--parallelism", "4", "--batch-size", "8192"]);
    // A trade of every symbol (numbered from 1 000 000 on), until all come out with
    // `sector`: the whole change is then applied, and the lines taken are the probes'.
    let mut probe = 1_000_000;
    let mut await_sector = |job: &Running, sector: &str| loop {
        let probes: Vec<usize> = (probe..probe + SECTOR_SYMBOLS).collect();
        probe += SECTOR_SYMBOLS;
        let trades: Vec<Rec> = probes.iter().map(|&i| Sectors::trade(i)).collect();
        produce(&topics.trades, &trades);
        let all: Vec<String> = probes.iter().map(|&i| Sectors::joined(i, sector)).collect();
        if job.take_lines(SECTOR_SYMBOLS) == all {
            break;
        }
    };
    let t = SECTOR_TRADES;
    topics.set_sector("Tech");
    let job = spawn(&args);
    await_sector(&job, "Tech");
    topics.burst(0);
    assert_eq!(job.take_lines(t), Sectors::expected(0, "Tech"));
    topics.set_sector("Energy");
    await_sector(&job, "Energy");
    topics.burst(t);
    assert_eq!(job.take_lines(t), Sectors::expected(t, "Energy"));
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, Vec::new()));

    // Restarted: the table, restored on the first lane and caught up with its topic, is
    // shared by every lane, and so are the changes that follow.
    topics.set_sector("Health");
    topics.burst(2 * t);
    let job = spawn(&args);
    assert_eq!(job.take_lines(t), Sectors::expected(2 * t, "Health"));
    topics.set_sector("Utilities");
    await_sector(&job, "Utilities");
    topics.burst(3 * t);
    assert_eq!(job.take_lines(t), Sectors::expected(3 * t, "Utilities"));
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, Vec::new()));
}

#[test]
fn a_restarted_job_joins_its_backlog_with_the_table_changes_written_while_it_was_down() {
    // The table changes while the job is stopped, and a backlog of trades waits: the
    // restarted job restores the table from its checkpoint, and must bring it up to the end of
    // its topic before it joins the first trade (it once joined the first micro-batches with
    // the table as of the checkpoint).
    let topics = Sectors::new();
    let group = unique_topic("g-lanes");
    // The partition assigned (no group to join) and small micro-batches: many are joined in
    // the time a first fetch of the table topic takes.
    let args = topics.args(&group, &["--partition", "0", "--batch-size", "200"]);
    let t = SECTOR_TRADES;
    topics.set_sector("Tech");
    topics.burst(0);
    let job = spawn(&args);
    assert_eq!(job.take_lines(t), Sectors::expected(0, "Tech"));
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, Vec::new()));

    // 20 000 changes, each symbol's last one to Energy: more than one poll of the table
    // topic takes, so joining before all are read shows another sector.
    let changes: Vec<Rec> = (0..499)
        .flat_map(|round| Sectors::sectors(&format!("Interim{round}")))
        .chain(Sectors::sectors("Energy"))
        .collect();
    produce(&topics.instruments, &changes);
    topics.burst(t);
    let job = spawn(&args);
    assert_eq!(job.take_lines(t), Sectors::expected(t, "Energy"));
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, Vec::new()));
}

/// The values `source` yields within `wait`, appended to `out`.
fn followed_values(
    source: &mut velo_connectors::kafka::KafkaSource,
    out: &mut Vec<String>,
    wait: std::time::Duration,
) {
    use velo_connectors::record::Payload;
    use velo_connectors::source::Source;
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        let Some(batch) = source
            .poll_batch(100, std::time::Duration::from_millis(200))
            .unwrap()
        else {
            return;
        };
        let Payload::Encoded(payloads) = &batch.payload else {
            panic!("a Kafka source yields encoded payloads");
        };
        out.extend((0..batch.len()).map(|i| String::from_utf8_lossy(payloads.value(i)).into()));
    }
}

/// What following `topic` from `from` (per partition) reads: until `at_least` values came
/// (or 15 s passed), then half a second more, so that an extra value would show.
fn follow_from(
    topic: &str,
    from: std::collections::BTreeMap<i32, i64>,
    at_least: usize,
) -> Vec<String> {
    use std::time::{Duration, Instant};
    use velo_connectors::kafka::{KafkaConnection, KafkaSource, ReadMode};
    let connection = KafkaConnection::new(brokers(), Duration::from_secs(10));
    let mut follow = KafkaSource::open(&connection, topic, ReadMode::Follow { from }).unwrap();
    let mut followed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while followed.len() < at_least && Instant::now() < deadline {
        followed_values(&mut follow, &mut followed, Duration::from_millis(500));
    }
    followed_values(&mut follow, &mut followed, Duration::from_millis(500));
    followed
}

#[test]
fn following_a_table_topic_reads_a_partition_the_table_never_read_from_its_start() {
    // The table was loaded (or checkpointed) before partition 1 had a position in it, as when
    // a partition is added to the topic while the job is down: its records are changes the
    // table has not seen, and following must read them all (it once started at the end).
    let topic = unique_topic("follow-unread-partition");
    create_topic(&topic, 2);
    produce(
        &topic,
        &[
            Rec::value("a1").key("a").partition(0),
            Rec::value("b1").key("b").partition(1),
            Rec::value("b2").key("b").partition(1),
        ],
    );
    let from = std::collections::BTreeMap::from([(0, 1)]);
    assert_eq!(follow_from(&topic, from, 2), ["b1", "b2"]);
}

#[test]
fn following_a_table_topic_resumes_where_its_snapshot_ended() {
    use std::collections::BTreeMap;
    use std::time::Duration;
    use velo_connectors::kafka::{KafkaConnection, KafkaSource, ReadMode, StartOffset};

    let topic = unique_topic("resume-table");
    create_topic(&topic, 2);
    produce(
        &topic,
        &[
            Rec::value("a1").key("a").partition(0),
            Rec::value("b1").key("b").partition(1),
        ],
    );
    let connection = KafkaConnection::new(brokers(), Duration::from_secs(10));
    let snapshot_mode = ReadMode::Snapshot {
        start: StartOffset::Earliest,
        partition: None,
        group_id: None,
    };
    let mut snapshot = KafkaSource::open(&connection, &topic, snapshot_mode).unwrap();
    let mut loaded = Vec::new();
    followed_values(&mut snapshot, &mut loaded, Duration::from_secs(10));
    loaded.sort();
    assert_eq!(loaded, ["a1", "b1"]);
    assert_eq!(
        snapshot.snapshot_end_offsets(),
        &BTreeMap::from([(0, 1), (1, 1)])
    );
    // An update produced after the snapshot ended and before following starts is not missed.
    produce(&topic, &[Rec::value("a2").key("a").partition(0)]);
    let from = snapshot.snapshot_end_offsets().clone();
    assert_eq!(follow_from(&topic, from, 1), ["a2"]);
}
