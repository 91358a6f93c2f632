//! Joins of two streams through the binary against the real broker: interval joins (INNER,
//! LEFT, FULL; the `WITHIN` shorthand on Kafka timestamps), a window join (Nexmark query 8's
//! shape), an updating join with `--state-ttl`, and a continuous interval join whose outer
//! rows come out once the watermark proves nothing can match them.

mod common;

use common::*;

const T0: i64 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
const MINUTE: i64 = 60_000;

fn orders_and_shipments() -> (String, String) {
    let orders = unique_topic("orders");
    let shipments = unique_topic("shipments");
    create_topic(&orders, 1);
    create_topic(&shipments, 1);
    let order = |id: i64, amount: &str, minute: i64| {
        Rec::value(format!(
            r#"{{"order_id":{id},"amount":"{amount}","ts":{}}}"#,
            T0 + minute * MINUTE
        ))
    };
    produce(
        &orders,
        &[
            order(1, "100.10", 0),
            order(2, "200.20", 5),
            order(3, "300.30", 10),
        ],
    );
    let shipment = |id: i64, carrier: &str, minute: i64| {
        Rec::value(format!(
            r#"{{"order_id":{id},"carrier":"{carrier}","ts":{}}}"#,
            T0 + minute * MINUTE
        ))
    };
    produce(
        &shipments,
        &[
            shipment(1, "DHL", 30),   // within the hour of order 1
            shipment(2, "UPS", 70),   // 65 minutes after order 2: too late
            shipment(3, "DHL", 9),    // before order 3: outside the bounds
            shipment(3, "FedEx", 70), // exactly one hour after order 3: inside (BETWEEN is inclusive)
            shipment(4, "UPS", 20),   // no such order
        ],
    );
    (orders, shipments)
}

fn declarations(orders: &str, shipments: &str) -> String {
    format!(
        "CREATE STREAM orders (order_id BIGINT, amount DECIMAL(10,2), ts TIMESTAMP, \
           WATERMARK FOR ts AS ts - INTERVAL '1' HOUR) WITH ('topic' = '{orders}');\n\
         CREATE STREAM shipments (order_id BIGINT, carrier VARCHAR, ts TIMESTAMP, \
           WATERMARK FOR ts AS ts - INTERVAL '1' HOUR) WITH ('topic' = '{shipments}');\n"
    )
}

fn sorted(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines.remove(0);
    lines.sort();
    std::iter::once(header)
        .chain(lines)
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn interval_joins_match_only_rows_within_the_sql_bounds() {
    let (orders, shipments) = orders_and_shipments();
    let query = |join: &str| {
        format!(
            "{}SELECT o.order_id, o.amount, s.order_id AS shipped, s.carrier FROM orders o {join} shipments s \
             ON o.order_id = s.order_id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' HOUR",
            declarations(&orders, &shipments)
        )
    };
    let run = |join: &str| {
        sorted(&run_ok(&[
            "execute",
            "--query",
            &query(join),
            "--format",
            "csv",
        ]))
    };
    assert_eq!(
        run("JOIN"),
        "order_id,amount,shipped,carrier\n1,100.10,1,DHL\n3,300.30,3,FedEx\n"
    );
    assert_eq!(
        run("LEFT JOIN"),
        "order_id,amount,shipped,carrier\n1,100.10,1,DHL\n2,200.20,,\n3,300.30,3,FedEx\n"
    );
    assert_eq!(
        run("FULL JOIN"),
        "order_id,amount,shipped,carrier\n,,2,UPS\n,,3,DHL\n,,4,UPS\n1,100.10,1,DHL\n2,200.20,,\n3,300.30,3,FedEx\n"
    );
}

#[test]
fn within_joins_on_the_kafka_timestamps_of_both_streams() {
    let left = unique_topic("clicks");
    let right = unique_topic("views");
    create_topic(&left, 1);
    create_topic(&right, 1);
    let at = |value: &str, ms: i64| Rec {
        timestamp: Some(T0 + ms),
        ..Rec::value(value)
    };
    produce(
        &left,
        &[
            at(r#"{"user":"ann","page":"a"}"#, 0),
            at(r#"{"user":"bob","page":"b"}"#, 0),
        ],
    );
    produce(
        &right,
        &[
            at(r#"{"user":"ann","ad":"x"}"#, -4_000), // 4 s before: inside
            at(r#"{"user":"ann","ad":"y"}"#, 6_000),  // 6 s after: outside
            at(r#"{"user":"bob","ad":"z"}"#, 5_000),  // exactly 5 s after: inside
        ],
    );
    let sql = format!(
        "CREATE STREAM clicks (user VARCHAR, page VARCHAR) WITH ('topic' = '{left}');\n\
         CREATE STREAM views (user VARCHAR, ad VARCHAR) WITH ('topic' = '{right}');\n\
         SELECT c.user, c.page, v.ad FROM clicks c JOIN views v WITHIN INTERVAL '5' SECOND ON c.user = v.user"
    );
    assert_eq!(
        sorted(&run_ok(&["execute", "--query", &sql, "--format", "csv"])),
        "user,page,ad\nann,a,x\nbob,b,z\n"
    );
}

#[test]
fn a_window_join_pairs_people_with_the_auctions_they_opened_in_the_same_window() {
    // Nexmark query 8's shape: persons who opened an auction in the 10-second window in which
    // they registered.
    let persons = unique_topic("persons");
    let auctions = unique_topic("auctions");
    create_topic(&persons, 1);
    create_topic(&auctions, 1);
    let at = |s: i64| T0 + s * 1000;
    produce(
        &persons,
        &[
            Rec::value(format!(r#"{{"id":1,"name":"ann","ts":{}}}"#, at(1))),
            Rec::value(format!(r#"{{"id":2,"name":"bob","ts":{}}}"#, at(3))),
            Rec::value(format!(r#"{{"id":3,"name":"cy","ts":{}}}"#, at(12))),
        ],
    );
    produce(
        &auctions,
        &[
            Rec::value(format!(r#"{{"seller":1,"ts":{}}}"#, at(4))),
            Rec::value(format!(r#"{{"seller":1,"ts":{}}}"#, at(8))),
            Rec::value(format!(r#"{{"seller":2,"ts":{}}}"#, at(11))), // the next window
            Rec::value(format!(r#"{{"seller":3,"ts":{}}}"#, at(19))),
        ],
    );
    let sql = format!(
        "CREATE STREAM person (id BIGINT, name VARCHAR, ts TIMESTAMP) WITH ('topic' = '{persons}');\n\
         CREATE STREAM auction (seller BIGINT, ts TIMESTAMP) WITH ('topic' = '{auctions}');\n\
         SELECT p.id, p.name, p.starttime, a.opened FROM \
           (SELECT id, name, window_start AS starttime, window_end AS endtime FROM person \
            GROUP BY id, name, TUMBLE(ts, INTERVAL '10' SECOND)) p \
         JOIN \
           (SELECT seller, COUNT(*) AS opened, window_start AS starttime, window_end AS endtime FROM auction \
            GROUP BY seller, TUMBLE(ts, INTERVAL '10' SECOND)) a \
         ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime"
    );
    assert_eq!(
        sorted(&run_ok(&["execute", "--query", &sql, "--format", "csv"])),
        "id,name,starttime,opened\n1,ann,2024-01-01T00:00:00,2\n3,cy,2024-01-01T00:00:10,1\n"
    );
}

#[test]
fn an_updating_join_runs_with_a_state_ttl_and_is_refused_without() {
    let (orders, shipments) = orders_and_shipments();
    let sql = format!(
        "{}SELECT o.order_id, s.carrier FROM orders o JOIN shipments s ON o.order_id = s.order_id",
        declarations(&orders, &shipments)
    );
    run_failing(&["execute", "--query", &sql], 2, "--state-ttl");
    assert_eq!(
        sorted(&run_ok(&[
            "execute",
            "--query",
            &sql,
            "--state-ttl",
            "1h",
            "--format",
            "csv"
        ])),
        "order_id,carrier\n1,DHL\n2,UPS\n3,DHL\n3,FedEx\n"
    );
}

#[test]
fn a_continuous_left_interval_join_emits_unmatched_orders_once_the_watermark_passes() {
    let orders = unique_topic("live-orders");
    let shipments = unique_topic("live-shipments");
    create_topic(&orders, 1);
    create_topic(&shipments, 1);
    let sql = format!(
        "{}SELECT o.order_id, s.carrier FROM orders o LEFT JOIN shipments s \
         ON o.order_id = s.order_id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '10' MINUTE",
        declarations(&orders, &shipments)
    );
    let job = spawn(&[
        "stream",
        "--query",
        &sql,
        "--format",
        "json-lines",
        "--group-id",
        &unique_topic("g"),
        "--flush-interval-ms",
        "100",
        "--idle-timeout",
        "60s",
    ]);
    let at = |id: i64, extra: &str, minute: i64| {
        Rec::value(format!(
            r#"{{"order_id":{id}{extra},"ts":{}}}"#,
            T0 + minute * MINUTE
        ))
    };
    produce(
        &orders,
        &[
            at(1, r#","amount":"1.00""#, 0),
            at(2, r#","amount":"2.00""#, 1),
        ],
    );
    produce(&shipments, &[at(1, r#","carrier":"DHL""#, 3)]);
    // A match comes out as soon as both rows are there.
    assert_eq!(job.take_lines(1), vec![r#"{"order_id":1,"carrier":"DHL"}"#]);
    // Order 2 can still match until the watermark (an hour behind the streams' event time)
    // passes minute 11: time moves on both streams.
    produce(&orders, &[at(3, r#","amount":"3.00""#, 90)]);
    produce(&shipments, &[at(9, r#","carrier":"UPS""#, 90)]);
    assert_eq!(job.take_lines(1), vec![r#"{"order_id":2,"carrier":null}"#]);
    let (code, rest) = job.terminate();
    assert_eq!(code, 0);
    assert!(rest.is_empty(), "order 3 may still match: {rest:?}");
}

#[test]
fn join_state_over_the_memory_limit_fails_the_job_naming_the_join() {
    let (orders, shipments) = orders_and_shipments();
    let sql = format!(
        "{}SELECT o.order_id, s.carrier FROM orders o JOIN shipments s \
         ON o.order_id = s.order_id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' HOUR",
        declarations(&orders, &shipments)
    );
    run_failing(
        &["execute", "--query", &sql, "--max-state-memory", "100B"],
        1,
        "StreamJoinExec",
    );
}

#[test]
fn a_left_join_with_an_empty_stream_keeps_every_row_with_nulls() {
    let orders = unique_topic("lonely-orders");
    let shipments = unique_topic("no-shipments");
    create_topic(&orders, 1);
    create_topic(&shipments, 1);
    produce(
        &orders,
        &[
            Rec::value(format!(r#"{{"order_id":1,"amount":"1.00","ts":{T0}}}"#)),
            Rec::value(format!(r#"{{"order_id":2,"amount":"2.00","ts":{T0}}}"#)),
        ],
    );
    let sql = format!(
        "{}SELECT o.order_id, s.carrier FROM orders o LEFT JOIN shipments s \
         ON o.order_id = s.order_id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' HOUR",
        declarations(&orders, &shipments)
    );
    assert_eq!(
        sorted(&run_ok(&["execute", "--query", &sql, "--format", "csv"])),
        "order_id,carrier\n1,\n2,\n"
    );
}

#[test]
fn a_continuous_self_join_of_the_busiest_keys_reads_every_partition_and_keeps_windows_across_a_stop(
) {
    // Nexmark q5's shape: each key's count per window joined with the window's maximum count.
    // The stream is read twice (two inputs), each by its own consumer group.
    let topic = unique_topic("live-busiest");
    create_topic(&topic, 2);
    let counts = "SELECT k, COUNT(*) AS n, window_start, window_end FROM t \
                  GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)";
    let sql = format!(
        "CREATE STREAM t (k VARCHAR, ts TIMESTAMP) WITH ('topic' = '{topic}');\n\
         SELECT a.k, a.n, a.window_start FROM ({counts}) a \
         JOIN (SELECT MAX(c.n) AS maxn, c.window_start, c.window_end FROM ({counts}) c \
               GROUP BY c.window_start, c.window_end) m \
         ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.n >= m.maxn"
    );
    let group = unique_topic("g");
    let args = [
        "stream",
        "--query",
        &sql,
        "--format",
        "json-lines",
        "--group-id",
        &group,
        "--flush-interval-ms",
        "100",
        "--idle-timeout",
        "60s",
    ];
    let rec = |k: &str, s: u32, partition: i32| {
        Rec::value(format!(r#"{{"k":"{k}","ts":"2024-01-01T00:00:{s:02}Z"}}"#)).partition(partition)
    };
    let job = spawn(&args);
    // Window 0–10 s: a three times (over both partitions), b once.
    produce(
        &topic,
        &[
            rec("a", 1, 0),
            rec("a", 2, 0),
            rec("b", 3, 1),
            rec("a", 4, 1),
        ],
    );
    // Both partitions reach 15 s: the first window closes; c twice in the second.
    produce(&topic, &[rec("c", 15, 0), rec("c", 15, 1)]);
    assert_eq!(
        job.take_lines(1),
        vec![r#"{"k":"a","n":3,"window_start":"2024-01-01T00:00:00"}"#]
    );
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, vec![]));
    // Restarted, both inputs still hold c's two rows of the open window: c (2) beats b (1).
    let job = spawn(&args);
    produce(&topic, &[rec("b", 16, 0), rec("x", 25, 0), rec("x", 25, 1)]);
    assert_eq!(
        job.take_lines(1),
        vec![r#"{"k":"c","n":2,"window_start":"2024-01-01T00:00:10"}"#]
    );
    let (code, rest) = job.terminate();
    assert_eq!((code, rest), (0, vec![]));
}
