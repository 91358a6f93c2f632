//! The Kafka source read directly against the real broker: every record handed out once, in
//! its partition's order, with its key, headers and timestamp; batches that end by their bytes;
//! a group whose members come and go while records flow (nothing lost); a member reading
//! ahead that commits what it holds before a rebalance takes its partitions (nothing read
//! twice).

mod common;

use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use common::*;
use velo_connectors::kafka::{KafkaConnection, KafkaSource, ReadMode, StartOffset};
use velo_connectors::prefetch::Prefetch;
use velo_connectors::record::{Payload, SourceBatch};
use velo_connectors::source::{Positions, Source};

/// One record as a source handed it out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    partition: i32,
    offset: i64,
    value: String,
    key: Option<String>,
    headers: Vec<(String, Option<String>)>,
    timestamp: Option<i64>,
}

fn rows(batch: &SourceBatch) -> Vec<Row> {
    let Payload::Encoded(payloads) = &batch.payload else {
        panic!("a Kafka source yields encoded payloads");
    };
    let meta = &batch.meta;
    (0..batch.len())
        .map(|i| {
            let headers = meta.headers.value(i);
            let names = headers.column(0).as_string::<i32>();
            let values = headers.column(1).as_string::<i32>();
            Row {
                partition: meta.partition.value(i),
                offset: meta.offset.value(i),
                value: String::from_utf8_lossy(payloads.value(i)).into_owned(),
                key: (!meta.key.is_null(i))
                    .then(|| String::from_utf8_lossy(meta.key.value(i)).into_owned()),
                headers: (0..names.len())
                    .map(|h| {
                        (
                            names.value(h).to_string(),
                            (!values.is_null(h)).then(|| values.value(h).to_string()),
                        )
                    })
                    .collect(),
                timestamp: (!meta.timestamp.is_null(i)).then(|| meta.timestamp.value(i)),
            }
        })
        .collect()
}

fn connection() -> KafkaConnection {
    KafkaConnection::new(brokers(), Duration::from_secs(10))
}

/// The records produced to partition `p`: every seventh without key and headers.
fn records_of(p: i32, n: i64) -> Vec<(Rec, Row)> {
    (0..n)
        .map(|i| {
            let value = format!("p{p}-{i:04}-{}", "x".repeat(180));
            let timestamp = 1_700_000_000_000 + i * 1000 + i64::from(p);
            let mut rec = Rec::value(value.clone()).partition(p).timestamp(timestamp);
            let mut row = Row {
                partition: p,
                offset: i,
                value,
                key: None,
                headers: Vec::new(),
                timestamp: Some(timestamp),
            };
            if i % 7 != 0 {
                rec = rec
                    .key(format!("k{i}"))
                    .header("n", &i.to_string())
                    .header("p", "x");
                row.key = Some(format!("k{i}"));
                row.headers = vec![
                    ("n".into(), Some(i.to_string())),
                    ("p".into(), Some("x".into())),
                ];
            }
            (rec, row)
        })
        .collect()
}

#[test]
fn a_bounded_read_hands_out_every_record_once_in_order_when_its_batches_end_by_bytes() {
    let topic = unique_topic("bounded-bytes");
    create_topic(&topic, 3);
    let mut expected = Vec::new();
    let mut recs = Vec::new();
    for p in 0..3 {
        for (rec, row) in records_of(p, 150) {
            recs.push(rec);
            expected.push(row);
        }
    }
    produce(&topic, &recs);
    let mode = ReadMode::Snapshot {
        start: StartOffset::Earliest,
        partition: None,
        group_id: None,
    };
    // About ten records' payloads and keys.
    let cap = 2_000;
    let mut source = KafkaSource::open(&connection(), &topic, mode)
        .unwrap()
        .max_batch_bytes(cap);
    let mut read = Vec::new();
    let mut batches = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(batch) = source.poll_batch(1000, Duration::from_millis(500)).unwrap() {
        assert!(Instant::now() < deadline, "the read does not end");
        let batch = rows(&batch);
        let bytes: usize = batch
            .iter()
            .map(|r| r.value.len() + r.key.as_ref().map_or(0, String::len))
            .sum();
        let last = batch.last().map_or(0, |r| r.value.len() + 10);
        assert!(
            bytes < cap + last,
            "a batch of {bytes} bytes, over the cap of {cap} by more than its last record"
        );
        batches += 1;
        read.extend(batch);
    }
    // Ten or eleven records each.
    assert!(batches >= 40, "only {batches} batches");
    let by_partition = |rows: &[Row], p: i32| -> Vec<Row> {
        rows.iter().filter(|r| r.partition == p).cloned().collect()
    };
    assert_eq!(read.len(), expected.len());
    for p in 0..3 {
        // In the partition's order, each once, exactly as produced.
        assert_eq!(by_partition(&read, p), by_partition(&expected, p));
    }
}

/// Polls `source` as the runtime does: a batch, then its positions committed.
fn poll_and_commit(source: &mut KafkaSource, seen: &mut Vec<Row>) -> usize {
    let Some(batch) = source.poll_batch(200, Duration::from_millis(100)).unwrap() else {
        return 0;
    };
    let batch = rows(&batch);
    let mut positions = Positions::new();
    for r in &batch {
        positions.insert(r.partition, r.offset + 1);
    }
    source.commit(&positions).unwrap();
    let n = batch.len();
    seen.extend(batch);
    n
}

#[test]
fn group_members_joining_and_leaving_while_records_flow_lose_nothing() {
    let topic = unique_topic("group-flow");
    let group = unique_topic("group-flow-members");
    create_topic(&topic, 4);
    let mode = || ReadMode::Group {
        group_id: group.clone(),
        reset: StartOffset::Earliest,
        partition: None,
        instance_id: None,
        session_timeout: None,
    };
    let mut expected = Vec::new();
    let mut produce_round = |round: i64| {
        let mut recs = Vec::new();
        for p in 0..4 {
            for i in 0..10 {
                let value = format!("r{round}-p{p}-{i}");
                recs.push(Rec::value(value.clone()).partition(p));
                expected.push(value);
            }
        }
        produce(&topic, &recs);
    };
    let mut a_rows = Vec::new();
    let mut b_rows = Vec::new();
    let mut a = KafkaSource::open(&connection(), &topic, mode()).unwrap();
    produce_round(0);
    // A alone, until it has read something.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a_rows.is_empty() {
        assert!(Instant::now() < deadline, "the first member reads nothing");
        poll_and_commit(&mut a, &mut a_rows);
    }
    // B joins; both poll while more records arrive, until both have read some of them.
    let mut b = KafkaSource::open(&connection(), &topic, mode()).unwrap();
    let mut round = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    let a_before = a_rows.len();
    while b_rows.is_empty() || a_rows.len() == a_before {
        assert!(
            Instant::now() < deadline,
            "the group never shared the partitions: {} read by the first member ({a_before} \
             before the second joined), {} by the second",
            a_rows.len(),
            b_rows.len()
        );
        produce_round(round);
        round += 1;
        poll_and_commit(&mut a, &mut a_rows);
        poll_and_commit(&mut b, &mut b_rows);
    }
    // B leaves; A takes every partition again and reads to the end.
    drop(b);
    produce_round(round);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut values: Vec<&String> = a_rows.iter().chain(&b_rows).map(|r| &r.value).collect();
        values.sort();
        values.dedup();
        if values.len() == expected.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records were read",
            values.len(),
            expected.len()
        );
        poll_and_commit(&mut a, &mut a_rows);
    }
    let mut values: Vec<String> = a_rows
        .iter()
        .chain(&b_rows)
        .map(|r| r.value.clone())
        .collect();
    values.sort();
    values.dedup();
    expected.sort();
    assert_eq!(values, expected);
    // Nothing more than what was produced.
    for _ in 0..5 {
        poll_and_commit(&mut a, &mut a_rows);
    }
    assert!(a_rows
        .iter()
        .all(|r| expected.binary_search(&r.value).is_ok()));
}

#[test]
fn following_a_topic_reads_its_backlog_and_live_records_each_once_in_order() {
    let topic = unique_topic("follow-flow");
    create_topic(&topic, 2);
    let round = |r: i64| -> Vec<Rec> {
        (0..200)
            .map(|i| Rec::value(format!("r{r}-{i}")).partition(i % 2))
            .collect()
    };
    // A backlog fetched before the partitions are forwarded, then records while reading.
    for r in 0..5 {
        produce(&topic, &round(r));
    }
    let from = [(0, 0), (1, 0)].into_iter().collect();
    let mut source = KafkaSource::open(&connection(), &topic, ReadMode::Follow { from }).unwrap();
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut r = 5;
    while read.len() < 15 * 200 {
        assert!(
            Instant::now() < deadline,
            "{} of {} records read",
            read.len(),
            15 * 200
        );
        if r < 15 {
            produce(&topic, &round(r));
            r += 1;
        }
        if let Some(batch) = source.poll_batch(300, Duration::from_millis(50)).unwrap() {
            read.extend(rows(&batch));
        }
    }
    // Nothing more comes.
    for _ in 0..3 {
        if let Some(batch) = source.poll_batch(300, Duration::from_millis(100)).unwrap() {
            read.extend(rows(&batch));
        }
    }
    for p in 0..2 {
        let got: Vec<(i64, String)> = read
            .iter()
            .filter(|row| row.partition == p)
            .map(|row| (row.offset, row.value.clone()))
            .collect();
        let want: Vec<(i64, String)> = (0..15)
            .flat_map(|r| {
                (0..200)
                    .filter(move |i| i % 2 == p as i64)
                    .map(move |i| (r, i))
            })
            .enumerate()
            .map(|(offset, (r, i))| (offset as i64, format!("r{r}-{i}")))
            .collect();
        assert_eq!(got, want, "partition {p}");
    }
}

#[test]
fn a_header_name_that_is_not_utf8_reads_as_a_replacement_character_instead_of_failing_the_read() {
    use rdkafka::bindings::{
        rd_kafka_produceva, rd_kafka_vtype_t as V, rd_kafka_vu_s__bindgen_ty_1 as U,
        rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 as Mem,
        rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_2 as Header, rd_kafka_vu_t,
    };
    use rdkafka::producer::{BaseProducer, Producer};
    use rdkafka::ClientConfig;

    let topic = unique_topic("bad-header-name");
    create_topic(&topic, 1);
    // The Rust and Python clients only write UTF-8 header names; librdkafka takes any bytes.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let topic_name = std::ffi::CString::new(topic.clone()).unwrap();
    let payload: &'static [u8] = br#"{"n":1}"#;
    let name: &'static [u8] = b"\xff\xfename\0";
    let value: &'static [u8] = b"v";
    let fields = [
        rd_kafka_vu_t {
            vtype: V::RD_KAFKA_VTYPE_TOPIC,
            u: U {
                cstr: topic_name.as_ptr(),
            },
        },
        rd_kafka_vu_t {
            vtype: V::RD_KAFKA_VTYPE_VALUE,
            u: U {
                mem: Mem {
                    ptr: payload.as_ptr() as *mut _,
                    size: payload.len(),
                },
            },
        },
        rd_kafka_vu_t {
            vtype: V::RD_KAFKA_VTYPE_HEADER,
            u: U {
                header: Header {
                    name: name.as_ptr().cast(),
                    val: value.as_ptr().cast(),
                    size: 1,
                },
            },
        },
    ];
    let error = unsafe {
        rd_kafka_produceva(
            producer.client().native_ptr(),
            fields.as_ptr(),
            fields.len(),
        )
    };
    assert!(error.is_null(), "librdkafka refused the record");
    producer.flush(Duration::from_secs(10)).unwrap();
    produce(&topic, &[Rec::value(r#"{"n":2}"#).header("ok", "yes")]);

    let mode = ReadMode::Snapshot {
        start: StartOffset::Earliest,
        partition: None,
        group_id: None,
    };
    let mut source = KafkaSource::open(&connection(), &topic, mode).unwrap();
    let mut read = Vec::new();
    while let Some(batch) = source.poll_batch(100, Duration::from_millis(500)).unwrap() {
        read.extend(rows(&batch));
    }
    let headers: Vec<_> = read
        .iter()
        .map(|r| (r.value.as_str(), &r.headers))
        .collect();
    assert_eq!(
        headers,
        [
            (
                r#"{"n":1}"#,
                &vec![("\u{FFFD}".to_string(), Some("v".to_string()))]
            ),
            (
                r#"{"n":2}"#,
                &vec![("ok".to_string(), Some("yes".to_string()))]
            ),
        ]
    );
}

/// The values of a prefetched source's batch (empty when it waited in vain), and its
/// positions: the next offset per partition.
fn taken(batch: Option<SourceBatch>, seen: &mut Vec<Row>, positions: &mut Positions) {
    for row in batch.iter().flat_map(rows) {
        positions.insert(row.partition, row.offset + 1);
        seen.push(row);
    }
}

/// A member of `group` reading `topic` from its start, heartbeating every 2 s (it learns of a
/// rebalance within 2 s).
fn group_member(topic: &str, group: &str) -> KafkaSource {
    let mode = ReadMode::Group {
        group_id: group.to_string(),
        reset: StartOffset::Earliest,
        partition: None,
        instance_id: None,
        session_timeout: Some(Duration::from_secs(6)),
    };
    KafkaSource::open(&connection(), topic, mode).unwrap()
}

/// The partitions of its topic assigned to `s` now, in order.
fn assigned(s: &KafkaSource) -> Vec<i32> {
    let mut partitions = s.assigned_partitions().unwrap_or_default();
    partitions.sort_unstable();
    partitions
}

/// Has `poll` poll both members of a group of a two-partition topic until each holds one
/// partition.
fn until_split(
    a: &mut KafkaSource,
    b: &mut KafkaSource,
    mut poll: impl FnMut(&mut KafkaSource, &mut KafkaSource),
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while assigned(a).len() != 1 || assigned(b).len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the group did not split its partitions"
        );
        poll(a, b);
    }
}

#[test]
fn a_member_reading_ahead_commits_the_batch_it_holds_before_a_rebalance_takes_partitions() {
    let topic = unique_topic("prefetch-rebalance");
    let group = unique_topic("prefetch-rebalance-members");
    create_topic(&topic, 4);
    let member = || Prefetch::new(Box::new(group_member(&topic, &group)));
    let round = |r: usize| -> Vec<Rec> {
        (0..100)
            .map(|i| Rec::value(format!("r{r}-{i:03}")).partition(i % 4))
            .collect()
    };
    produce(&topic, &round(0));
    // A takes the first round (every partition's records) and holds it: not finished, not
    // committed, while its reading thread polls on.
    let mut a = member();
    let (mut a_rows, mut a_positions) = (Vec::new(), Positions::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while a_rows.len() < 100 {
        assert!(Instant::now() < deadline, "A read {} of 100", a_rows.len());
        taken(
            a.poll_batch(100, Duration::from_secs(1)).unwrap(),
            &mut a_rows,
            &mut a_positions,
        );
    }
    // B joins and reads (committing each batch) on a thread of its own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let b = {
        let (stop, mut b) = (stop.clone(), member());
        std::thread::spawn(move || {
            let (mut seen, mut positions) = (Vec::new(), Positions::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                taken(
                    b.poll_batch(100, Duration::from_millis(100)).unwrap(),
                    &mut seen,
                    &mut positions,
                );
                b.commit(&positions).unwrap();
            }
            seen
        })
    };
    // Twice A's heartbeat interval (2 s): the rebalance has reached A's reading thread, and
    // waits there for A's job, which finishes its batch only now.
    std::thread::sleep(Duration::from_secs(4));
    a.commit(&a_positions).unwrap();
    // A reads on (its share of the second round) while B does.
    produce(&topic, &round(1));
    let deadline = Instant::now() + Duration::from_secs(60);
    while a_rows.len() < 150 {
        assert!(Instant::now() < deadline, "A read {} of 150", a_rows.len());
        taken(
            a.poll_batch(100, Duration::from_millis(100)).unwrap(),
            &mut a_rows,
            &mut a_positions,
        );
        a.commit(&a_positions).unwrap();
    }
    // B's share of the second round, and time to (wrongly) read the first round again.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let b_rows = b.join().unwrap();
    let mut values: Vec<&str> = a_rows.iter().chain(&b_rows).map(|r| &*r.value).collect();
    values.sort();
    let twice = repeated(&values);
    assert!(
        twice.is_empty(),
        "{} records read by both members (A read {}, B {}): {twice:?}",
        twice.len(),
        a_rows.len(),
        b_rows.len()
    );
    let mut want: Vec<String> = round(0)
        .into_iter()
        .chain(round(1))
        .map(|r| r.value.unwrap())
        .collect();
    want.sort();
    assert_eq!(values, want, "every record once");
}

#[test]
fn a_partition_given_back_is_never_committed_below_where_the_member_holding_it_meanwhile_left_it() {
    // A job keeps the position it reached in a partition the group takes away. When the
    // partition comes back before the job reads more of it, committing that position rewound
    // the offset the other member had committed meanwhile.
    let topic = unique_topic("given-back");
    let group = unique_topic("given-back-members");
    create_topic(&topic, 2);
    let member = || group_member(&topic, &group);
    let round = |r: usize| -> Vec<Rec> {
        (0..40)
            .map(|i| Rec::value(format!("r{r}-{i:02}")).partition(i % 2))
            .collect()
    };
    produce(&topic, &round(0));
    // A reads the first round of both partitions (20 records each) and commits it.
    let mut a = member();
    let (mut a_rows, mut a_positions) = (Vec::new(), Positions::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while a_rows.len() < 40 {
        assert!(Instant::now() < deadline, "A read {} of 40", a_rows.len());
        taken(
            a.poll_batch(100, Duration::from_millis(200)).unwrap(),
            &mut a_rows,
            &mut a_positions,
        );
    }
    a.commit(&a_positions).unwrap();
    // B joins: each member gets one partition.
    let mut b = member();
    let (mut b_rows, mut b_positions) = (Vec::new(), Positions::new());
    until_split(&mut a, &mut b, |a, b| {
        taken(
            a.poll_batch(100, Duration::from_millis(100)).unwrap(),
            &mut a_rows,
            &mut a_positions,
        );
        taken(
            b.poll_batch(100, Duration::from_millis(100)).unwrap(),
            &mut b_rows,
            &mut b_positions,
        );
    });
    let p = assigned(&b)[0];
    // B reads its partition's share of a second round and commits it: offset 40.
    produce(&topic, &round(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    while b_positions.get(&p) != Some(&40) {
        assert!(
            Instant::now() < deadline,
            "B read to {:?}",
            b_positions.get(&p)
        );
        taken(
            b.poll_batch(100, Duration::from_millis(100)).unwrap(),
            &mut b_rows,
            &mut b_positions,
        );
        taken(
            a.poll_batch(100, Duration::from_millis(100)).unwrap(),
            &mut a_rows,
            &mut a_positions,
        );
    }
    b.commit(&b_positions).unwrap();
    assert_eq!(committed_offset(&group, &topic, p), Some(40));
    // B leaves; A gets the partition back while its positions still say 20 for it.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(30);
    while assigned(&a) != [0, 1] {
        assert!(
            Instant::now() < deadline,
            "A did not get both partitions back"
        );
        taken(
            a.poll_batch(100, Duration::from_millis(100)).unwrap(),
            &mut a_rows,
            &mut a_positions,
        );
    }
    assert_eq!(
        a_positions.get(&p),
        Some(&20),
        "A has read nothing new of it"
    );
    a.commit(&a_positions).unwrap();
    assert_eq!(
        committed_offset(&group, &topic, p),
        Some(40),
        "A's commit must not rewind partition {p} to its old position"
    );
    // And A reads on from there: nothing read twice.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        taken(
            a.poll_batch(100, Duration::from_millis(100)).unwrap(),
            &mut a_rows,
            &mut a_positions,
        );
    }
    let mut values: Vec<&str> = a_rows.iter().chain(&b_rows).map(|r| &*r.value).collect();
    values.sort();
    assert_eq!(repeated(&values), Vec::<&str>::new());
    assert_eq!(values.len(), 80, "every record once");
}

#[test]
fn a_job_restored_from_an_older_checkpoint_keeps_reading_from_its_own_position_when_a_rebalance_gives_a_partition_back(
) {
    // A job that falls back to an older checkpoint starts below the group's committed offsets.
    // A rebalance before its first commit used to start the partitions it got back at those
    // committed offsets: the records between where it had read to and them were skipped,
    // though its restored state lacks them.
    let topic = unique_topic("restored-given-back");
    let group = unique_topic("restored-given-back-members");
    create_topic(&topic, 2);
    let member = || group_member(&topic, &group);
    let poll = |s: &mut KafkaSource, seen: &mut Vec<Row>, positions: &mut Positions| {
        taken(
            s.poll_batch(5, Duration::from_millis(100)).unwrap(),
            seen,
            positions,
        )
    };
    let records: Vec<Rec> = (0..2_000)
        .map(|i| Rec::value(format!("{i:04}")).partition(i % 2))
        .collect();
    produce(&topic, &records);
    // The group has committed offset 800 of each partition (a later checkpoint's, now
    // damaged).
    let mut earlier = member();
    let (mut seen, mut positions) = (Vec::new(), Positions::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while positions.values().filter(|&&o| o >= 800).count() < 2 {
        assert!(Instant::now() < deadline, "read to {positions:?}");
        taken(
            earlier.poll_batch(500, Duration::from_millis(100)).unwrap(),
            &mut seen,
            &mut positions,
        );
    }
    earlier
        .commit(&Positions::from([(0, 800), (1, 800)]))
        .unwrap();
    drop(earlier);
    // A restores the older checkpoint (offset 20 of each partition) and reads 10 records, 5 a
    // batch, committing nothing.
    let mut a = member();
    a.seek(&Positions::from([(0, 20), (1, 20)])).unwrap();
    let (mut a_rows, mut a_positions) = (Vec::new(), Positions::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while a_rows.len() < 10 {
        assert!(Instant::now() < deadline, "A read {} of 10", a_rows.len());
        poll(&mut a, &mut a_rows, &mut a_positions);
    }
    // B joins (each member gets a partition), then leaves without committing; A gets both
    // partitions back.
    let mut b = member();
    let (mut b_rows, mut b_positions) = (Vec::new(), Positions::new());
    until_split(&mut a, &mut b, |a, b| {
        poll(a, &mut a_rows, &mut a_positions);
        poll(b, &mut b_rows, &mut b_positions);
    });
    // The rebalance came while A was still below the group's commit: the case in question.
    assert!(
        a_positions.values().all(|&o| o < 800),
        "A read to {a_positions:?}"
    );
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(60);
    while a_positions.values().filter(|&&o| o == 1_000).count() < 2 {
        assert!(Instant::now() < deadline, "A read to {a_positions:?}");
        poll(&mut a, &mut a_rows, &mut a_positions);
    }
    // Every record from offset 20 of each partition on, each once: a record read twice would
    // be counted twice by the restored state, a record skipped not at all.
    for p in 0..2 {
        let offsets: Vec<i64> = a_rows
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (20..1_000).collect::<Vec<_>>(), "partition {p}");
    }
}
