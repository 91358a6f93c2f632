//! `velo-sql stream` against the real broker: continuous output to stdout and to a topic,
//! graceful stop on SIGTERM, and resuming from committed offsets without loss or duplicates.

mod common;

use common::*;

fn numbers(topic: &str, range: std::ops::Range<i64>, partitions: i32) {
    let records: Vec<Rec> = range
        .map(|n| {
            Rec::value(format!(r#"{{"n":{n},"price":"{n}.25"}}"#))
                .key(format!("k{n}"))
                .partition((n % partitions as i64) as i32)
        })
        .collect();
    produce(topic, &records);
}

/// A `stream` job printing `n` of every record of `topic` as JSON lines, in `group`.
fn numbers_job<'a>(topic: &'a str, group: &'a str) -> [&'a str; 11] {
    [
        "stream",
        "--query",
        "SELECT n FROM numbers",
        "--topic",
        topic,
        "--schema",
        "n BIGINT",
        "--format",
        "json-lines",
        "--group-id",
        group,
    ]
}

/// The `n` of a line `{"n":…}`.
fn n_of(line: &str) -> i64 {
    line.trim_start_matches(r#"{"n":"#)
        .trim_end_matches('}')
        .parse()
        .unwrap()
}

#[test]
fn stream_prints_rows_as_they_arrive_and_stops_at_the_limit() {
    let topic = unique_topic("live");
    create_topic(&topic, 1);
    numbers(&topic, 0..3, 1);
    let job = spawn(&[
        "stream",
        "--query",
        "SELECT n, price * 2 AS double_price FROM live WHERE n <> 1",
        "--input-topic",
        &topic,
        "--schema",
        "n BIGINT, price DECIMAL(10,2)",
        "--format",
        "json-lines",
        "--limit",
        "4",
        "--group-id",
        &unique_topic("g"),
    ]);
    let first = job.take_lines(2);
    assert_eq!(
        first,
        vec![
            r#"{"n":0,"double_price":"0.50"}"#,
            r#"{"n":2,"double_price":"4.50"}"#
        ]
    );
    // Records produced while the job runs flow through too.
    numbers(&topic, 3..10, 1);
    let (code, rest) = job.wait();
    assert_eq!(code, 0);
    assert_eq!(
        rest,
        vec![
            r#"{"n":3,"double_price":"6.50"}"#,
            r#"{"n":4,"double_price":"8.50"}"#
        ]
    );
}

#[test]
fn stream_writes_one_keyed_message_per_row_and_dead_letters_bad_records() {
    let topic = unique_topic("src");
    let out = unique_topic("dst");
    let dlq = unique_topic("dlq");
    create_topic(&topic, 1);
    create_topic(&out, 1);
    create_topic(&dlq, 1);
    let job = spawn(&[
        "stream",
        "--query",
        "SELECT n, price FROM src WHERE n >= 1",
        "--topic",
        &topic,
        "--schema",
        "n BIGINT, price DECIMAL(10,2)",
        "--output",
        "kafka",
        "--output-topic",
        &out,
        "--output-key",
        "n",
        "--dlq-topic",
        &dlq,
        "--group-id",
        &unique_topic("g"),
    ]);
    numbers(&topic, 0..3, 1);
    produce(&topic, &[Rec::value("not json").key("bad")]);
    let got: Vec<(Option<String>, String)> = consume_keyed(&out, 2);
    assert_eq!(
        got,
        vec![
            (Some("1".into()), r#"{"n":1,"price":"1.25"}"#.into()),
            (Some("2".into()), r#"{"n":2,"price":"2.25"}"#.into()),
        ]
    );
    let dead = consume(&dlq, 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value, "not json");
    assert_eq!(dead[0].key.as_deref(), Some("bad"));
    assert_eq!(dead[0].headers["velo.source.offset"], "3");
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_restarted_job_resumes_from_committed_offsets_without_loss_or_duplicates() {
    let topic = unique_topic("resume");
    create_topic(&topic, 2);
    let group = unique_topic("resume-group");
    let args = numbers_job(&topic, &group);
    numbers(&topic, 0..10, 2);
    let first = spawn(&args);
    let mut seen = first.take_lines(10);
    let (code, rest) = first.terminate();
    assert_eq!(code, 0, "a graceful stop exits 0");
    seen.extend(rest);

    numbers(&topic, 10..20, 2);
    let second = spawn(&args);
    seen.extend(second.take_lines(10));
    // Give the second run time to (wrongly) repeat anything before stopping it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, rest) = second.terminate();
    assert_eq!(code, 0);
    seen.extend(rest);

    let mut ns: Vec<i64> = seen.iter().map(|l| n_of(l)).collect();
    ns.sort();
    assert_eq!(
        ns,
        (0..20).collect::<Vec<_>>(),
        "every record exactly once across the restart"
    );
}

#[test]
fn a_decimal_with_more_digits_than_its_column_is_dead_lettered_or_rounded_when_asked() {
    let topic = unique_topic("dec-in");
    let dlq = unique_topic("dec-dlq");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    produce(
        &topic,
        &[
            Rec::value(r#"{"id":1,"p":"150.25678"}"#),
            Rec::value(r#"{"id":2,"p":150.25675}"#),
            Rec::value(r#"{"id":3,"p":"150.2567"}"#),
            Rec::value(r#"{"id":4,"p":123456789012345}"#),
        ],
    );
    let query = "SELECT id, p FROM t";
    let schema = "id BIGINT, p DECIMAL(18,4)";
    let out = run_ok(&[
        "execute",
        "--query",
        query,
        "--topic",
        &topic,
        "--schema",
        schema,
        "--format",
        "json-lines",
        "--dlq-topic",
        &dlq,
    ]);
    assert_eq!(
        out, "{\"id\":3,\"p\":\"150.2567\"}\n",
        "no digit is dropped silently"
    );
    let dead = consume(&dlq, 3);
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|d| (d.value.as_str(), d.headers["velo.error"].as_str()))
        .collect();
    assert_eq!(reasons[0].0, r#"{"id":1,"p":"150.25678"}"#);
    assert!(
        reasons[0]
            .1
            .contains("column 'p': 150.25678 has 5 decimal places, DECIMAL(18,4) keeps 4"),
        "{reasons:?}"
    );
    assert!(
        reasons[1]
            .1
            .contains("column 'p': 150.25675 has 5 decimal places"),
        "{reasons:?}"
    );
    assert!(
        reasons[2]
            .1
            .contains("column 'p': 123456789012345 does not fit DECIMAL(18,4)"),
        "{reasons:?}"
    );
    // Opted into rounding: half-even rounds both ties to the even digit; overflow stays bad.
    let out = run_ok(&[
        "execute",
        "--query",
        query,
        "--topic",
        &topic,
        "--schema",
        schema,
        "--format",
        "json-lines",
        "--decimal-rounding",
        "half-even",
    ]);
    assert_eq!(
        out,
        "{\"id\":1,\"p\":\"150.2568\"}\n{\"id\":2,\"p\":\"150.2568\"}\n{\"id\":3,\"p\":\"150.2567\"}\n"
    );
    let out = run_ok(&[
        "execute", "--query",
        &format!("CREATE STREAM t (id BIGINT, p DECIMAL(18,3)) WITH ('topic' = '{topic}', 'decimal.rounding' = 'half-up'); SELECT id, p FROM t"),
        "--format", "json-lines",
    ]);
    assert_eq!(
        out,
        "{\"id\":1,\"p\":\"150.257\"}\n{\"id\":2,\"p\":\"150.257\"}\n{\"id\":3,\"p\":\"150.257\"}\n{\"id\":4,\"p\":\"123456789012345.000\"}\n",
        "a stream's own option"
    );
}

#[test]
fn stream_partition_reads_one_partition_and_resumes_from_its_committed_offset() {
    let topic = unique_topic("one-partition");
    create_topic(&topic, 2);
    numbers(&topic, 0..6, 2); // even n on partition 0, odd on partition 1
    let group = unique_topic("one-partition-g");
    let args = |limit: &'static str| {
        vec![
            "stream".to_string(),
            "--query".into(),
            "SELECT n, _partition AS p FROM t".into(),
            "--topic".into(),
            topic.clone(),
            "--schema".into(),
            "n BIGINT, price DECIMAL(10,2)".into(),
            "--partition".into(),
            "1".into(),
            "--group-id".into(),
            group.clone(),
            "--format".into(),
            "json-lines".into(),
            "--limit".into(),
            limit.into(),
        ]
    };
    let run_lines = |limit| {
        let args = args(limit);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(&args)
    };
    assert_eq!(
        run_lines("3"),
        "{\"n\":1,\"p\":1}\n{\"n\":3,\"p\":1}\n{\"n\":5,\"p\":1}\n"
    );
    // The group's offset for partition 1 was committed: a second run starts after it.
    numbers(&topic, 6..10, 2);
    assert_eq!(run_lines("2"), "{\"n\":7,\"p\":1}\n{\"n\":9,\"p\":1}\n");
}

/// With `--eager-batches` a record runs as soon as nothing more is buffered: with a flush
/// interval of ten minutes, a lone record still comes out (`take_lines` gives up after 30 s).
#[test]
fn an_eager_batch_runs_without_waiting_out_the_flush_interval() {
    let topic = unique_topic("eager");
    create_topic(&topic, 1);
    numbers(&topic, 0..1, 1);
    let job = spawn(&[
        "stream",
        "--query",
        "SELECT n FROM eager",
        "--input-topic",
        &topic,
        "--schema",
        "n BIGINT, price DECIMAL(10,2)",
        "--format",
        "json-lines",
        "--flush-interval-ms",
        "600000",
        "--eager-batches",
        "--limit",
        "3",
        "--group-id",
        &unique_topic("g"),
    ]);
    assert_eq!(job.take_lines(1), vec![r#"{"n":0}"#]);
    // Records produced later run in their own batches, without waiting either; the third row
    // reaches --limit and ends the job (a SIGTERM would wait for the poll, up to the interval).
    numbers(&topic, 1..3, 1);
    let (code, rest) = job.wait();
    assert_eq!(code, 0);
    assert_eq!(rest, vec![r#"{"n":1}"#, r#"{"n":2}"#]);
}

#[test]
fn handed_over_output_is_sent_without_waiting_out_the_producers_linger() {
    use velo_connectors::kafka::{KafkaConnection, KafkaProducer};
    let topic = unique_topic("send-queued");
    create_topic(&topic, 1);
    let mut connection = KafkaConnection::new(brokers(), std::time::Duration::from_secs(10));
    // A linger far longer than this test waits (10 s): only the producer's own sending thread
    // can have sent the rows in time.
    connection.producer_properties = vec![
        ("linger.ms".into(), "60000".into()),
        ("message.timeout.ms".into(), "120000".into()),
    ];
    let mut producer = KafkaProducer::new(&connection).unwrap();
    // The first row waits for the topic's metadata (a flush waits for that too); from then on,
    // as in a running job, rows go to a partition the producer knows.
    producer.send(&topic, None, b"first", None).unwrap();
    producer.flush().unwrap();
    for n in 0..3 {
        producer
            .send(&topic, None, format!("row {n}").as_bytes(), None)
            .unwrap();
    }
    // Not acknowledged yet: the call hands over and returns at once.
    assert!(!producer.send_queued().unwrap());
    // As the job does between micro-batches: handing over again until everything is
    // acknowledged, which the 60 s linger alone would not do within 10 s.
    let mut acknowledged = false;
    for _ in 0..1000 {
        acknowledged = producer.send_queued().unwrap();
        if acknowledged {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(acknowledged);
    let values: Vec<String> = consume(&topic, 4).into_iter().map(|c| c.value).collect();
    assert_eq!(values, ["first", "row 0", "row 1", "row 2"]);
    delete_topic(&topic);
}

#[test]
fn an_eager_job_commits_its_last_batch_while_no_records_come() {
    let (input, output) = (
        unique_topic("eager-idle-in"),
        unique_topic("eager-idle-out"),
    );
    create_topic(&input, 1);
    create_topic(&output, 1);
    let group = unique_topic("eager-idle");
    let job = spawn(&[
        "stream",
        "--query",
        "SELECT n FROM source",
        "--input-topic",
        &input,
        "--schema",
        "n BIGINT, price DECIMAL(10,2)",
        "--output",
        "kafka",
        "--output-topic",
        &output,
        "--format",
        "json",
        "--flush-interval-ms",
        "50",
        "--eager-batches",
        // No checkpoints, which would commit too.
        "--no-state",
        "--group-id",
        &group,
    ]);
    numbers(&input, 0..5, 1);
    let values: Vec<String> = consume(&output, 5).into_iter().map(|c| c.value).collect();
    assert_eq!(values.len(), 5, "{values:?}");
    // No more records come: the offsets of the last batch are committed all the same, once
    // its output is acknowledged.
    let mut committed = None;
    for _ in 0..100 {
        committed = committed_offset(&group, &input, 0);
        if committed == Some(5) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(committed, Some(5));
    let (code, _) = job.terminate();
    assert_eq!(code, 0);
    delete_topic(&input);
    delete_topic(&output);
}

/// Two jobs of one group while records flow: the second joins (the group rebalances), the
/// first stops gracefully (it rebalances again). Each reads ahead of what it processes; a
/// member gives up partitions only after committing what it has processed, so every record
/// comes out once, by one member or the other.
#[test]
fn group_members_joining_and_leaving_while_records_flow_print_every_record_once() {
    let topic = unique_topic("members");
    create_topic(&topic, 4);
    let group = unique_topic("members-group");
    let args = numbers_job(&topic, &group);
    numbers(&topic, 0..1000, 4);
    let first = spawn(&args);
    let mut seen = first.take_lines(1000);
    let second = spawn(&args);
    // Records keep coming while the group shares the partitions (a member learns of the
    // rebalance within its 3 s heartbeat).
    for round in 1..6 {
        numbers(&topic, round * 1000..(round + 1) * 1000, 4);
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
    let (code, rest) = first.terminate();
    assert_eq!(code, 0, "a graceful stop exits 0");
    seen.extend(rest);
    let by_first = seen.len();
    // The second member takes every partition and reads the rest.
    numbers(&topic, 6000..7000, 4);
    seen.extend(second.take_lines(7000 - by_first));
    // Time to (wrongly) print anything twice before stopping it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, rest) = second.terminate();
    assert_eq!(code, 0);
    seen.extend(rest);
    let mut ns: Vec<i64> = seen.iter().map(|l| n_of(l)).collect();
    ns.sort();
    let twice = repeated(&ns);
    assert!(
        twice.is_empty(),
        "{} records printed twice ({by_first} by the first member): {twice:?}",
        twice.len()
    );
    assert_eq!(ns, (0..7000).collect::<Vec<_>>(), "every record once");
}
