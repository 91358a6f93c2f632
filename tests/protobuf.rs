//! Protobuf in and out against the real broker, with interop proven by Google's Python
//! protobuf library, and a JSON → Avro → Protobuf → JSON round trip through `velo-sql`.

mod common;

use common::*;

const PROTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/trades.proto");
const AVSC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/trades.avsc");
const TOOL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/protobuf_tool.py"
);
const MESSAGE: &str = "velostream.examples.Trade";
const COLUMNS: &str = "symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, side VARCHAR, note VARCHAR, ts TIMESTAMP";

const RECORDS: [&str; 5] = [
    r#"{"symbol":"NEG","price":"-0.5000","quantity":3,"side":"SELL","note":null,"ts":1704067200000}"#,
    r#"{"symbol":"TINY","price":"-0.0001","quantity":1,"side":"BUY","note":"tick","ts":1704067200001}"#,
    r#"{"symbol":"ZERO","price":"0.0000","quantity":0,"side":"BUY","note":null,"ts":1704067200002}"#,
    r#"{"symbol":"MAX","price":"99999999999999.9999","quantity":1,"side":"SELL","note":null,"ts":1704067200003}"#,
    r#"{"symbol":"AAPL","price":"150.2567","quantity":100,"side":"BUY","note":"x\"y","ts":1704067200004}"#,
];

fn descriptors(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("trades.pb");
    std::fs::write(
        &path,
        velo_connectors::codec::protobuf::descriptor_set(std::path::Path::new(PROTO)).unwrap(),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn python(mode: &str, descriptors: &str, input: &[String]) -> Vec<String> {
    python_tool(TOOL, &[mode, descriptors, MESSAGE], input)
}

fn normalized(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(l).unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn protobuf_written_by_python_decodes_to_exact_decimals() {
    let dir = tempfile::tempdir().unwrap();
    let messages: Vec<Vec<u8>> = python("write", &descriptors(&dir), &RECORDS.map(String::from))
        .iter()
        .map(|h| unhex(h))
        .collect();
    let topic = unique_topic("pb-in");
    create_topic(&topic, 1);
    produce_bytes(&topic, &messages);
    let out = run_ok(&[
        "execute",
        "--input-format",
        "protobuf",
        "--proto-file",
        PROTO,
        "--proto-message",
        MESSAGE,
        "--schema",
        COLUMNS,
        "--topic",
        &topic,
        "--query",
        "SELECT symbol, price, price * quantity AS notional, side, note, ts FROM trades",
        "--format",
        "csv",
    ]);
    assert_eq!(
        out,
        "symbol,price,notional,side,note,ts\n\
         NEG,-0.5000,-1.5000,SELL,,2024-01-01T00:00:00\n\
         TINY,-0.0001,-0.0001,BUY,tick,2024-01-01T00:00:00.001\n\
         ZERO,0.0000,0.0000,BUY,,2024-01-01T00:00:00.002\n\
         MAX,99999999999999.9999,99999999999999.9999,SELL,,2024-01-01T00:00:00.003\n\
         AAPL,150.2567,15025.6700,BUY,\"x\"\"y\",2024-01-01T00:00:00.004\n"
    );
    // Without declared columns, the decimal message is DECIMAL(38,10) and the timestamp ns.
    let out = run_ok(&[
        "execute",
        "--input-format",
        "protobuf",
        "--proto-file",
        PROTO,
        "--proto-message",
        MESSAGE,
        "--topic",
        &topic,
        "--query",
        "SELECT price FROM trades LIMIT 1",
        "--format",
        "csv",
    ]);
    assert_eq!(out, "price\n-0.5000000000\n");
}

#[test]
fn protobuf_we_write_is_read_by_python_digit_for_digit() {
    let dir = tempfile::tempdir().unwrap();
    let json_topic = unique_topic("pb-json");
    let out_topic = unique_topic("pb-out");
    create_topic(&json_topic, 1);
    create_topic(&out_topic, 1);
    produce(
        &json_topic,
        &RECORDS.iter().map(|r| Rec::value(*r)).collect::<Vec<_>>(),
    );
    run_ok(&[
        "execute",
        "--topic",
        &json_topic,
        "--query",
        "SELECT * FROM trades",
        "--schema",
        COLUMNS,
        "--format",
        "protobuf",
        "--output",
        "kafka",
        "--output-topic",
        &out_topic,
        "--proto-file",
        PROTO,
        "--proto-message",
        MESSAGE,
    ]);
    let messages: Vec<String> = consume_bytes(&out_topic, RECORDS.len())
        .iter()
        .map(|m| hex(m))
        .collect();
    let read = python("read", &descriptors(&dir), &messages);
    assert_eq!(normalized(&read), normalized(&RECORDS.map(String::from)));
}

#[test]
fn a_json_avro_protobuf_json_round_trip_changes_no_value() {
    let json_topic = unique_topic("rt3-json");
    let avro_topic = unique_topic("rt3-avro");
    let proto_topic = unique_topic("rt3-proto");
    for t in [&json_topic, &avro_topic, &proto_topic] {
        create_topic(t, 1);
    }
    produce(
        &json_topic,
        &RECORDS.iter().map(|r| Rec::value(*r)).collect::<Vec<_>>(),
    );
    let direct = run_ok(&[
        "execute",
        "--topic",
        &json_topic,
        "--query",
        "SELECT * FROM t",
        "--schema",
        COLUMNS,
        "--format",
        "json-lines",
    ]);
    run_ok(&[
        "execute",
        "--topic",
        &json_topic,
        "--query",
        "SELECT * FROM t",
        "--schema",
        COLUMNS,
        "--format",
        "avro",
        "--output",
        "kafka",
        "--output-topic",
        &avro_topic,
        "--avro-schema",
        AVSC,
    ]);
    run_ok(&[
        "execute",
        "--topic",
        &avro_topic,
        "--input-format",
        "avro",
        "--avro-schema",
        AVSC,
        "--query",
        "SELECT * FROM t",
        "--format",
        "protobuf",
        "--output",
        "kafka",
        "--output-topic",
        &proto_topic,
        "--output-proto-file",
        PROTO,
        "--output-proto-message",
        MESSAGE,
    ]);
    let back = run_ok(&[
        "execute",
        "--topic",
        &proto_topic,
        "--input-format",
        "protobuf",
        "--proto-file",
        PROTO,
        "--proto-message",
        MESSAGE,
        "--schema",
        COLUMNS,
        "--query",
        "SELECT * FROM t",
        "--format",
        "json-lines",
    ]);
    assert_eq!(back, direct);
    assert_eq!(direct.lines().count(), RECORDS.len());
}

#[test]
fn bad_protobuf_records_are_dead_lettered_and_unknown_messages_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = unhex(&python("write", &descriptors(&dir), &[RECORDS[4].to_string()])[0]);
    let topic = unique_topic("pb-bad");
    let dlq = unique_topic("pb-dlq");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    produce_bytes(&topic, &[good.clone(), vec![0x0a, 0x7f, b'x'], good]);
    let out = run(&[
        "execute",
        "--input-format",
        "protobuf",
        "--proto-file",
        PROTO,
        "--proto-message",
        MESSAGE,
        "--schema",
        COLUMNS,
        "--topic",
        &topic,
        "--query",
        "SELECT symbol FROM t",
        "--format",
        "csv",
        "--dlq-topic",
        &dlq,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "symbol\nAAPL\nAAPL\n");
    let dead = consume(&dlq, 1);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].headers["velo.error"].starts_with("invalid Protobuf"),
        "{:?}",
        dead[0].headers
    );
    run_failing(
        &[
            "execute",
            "--input-format",
            "protobuf",
            "--proto-file",
            PROTO,
            "--proto-message",
            "Nope",
            "--topic",
            &topic,
            "--query",
            "SELECT 1 FROM t",
        ],
        2,
        "no message 'Nope' (messages: velostream.examples.Decimal, velostream.examples.Trade)",
    );
}

#[test]
fn a_stream_declared_with_format_protobuf_uses_its_proto_file() {
    let dir = tempfile::tempdir().unwrap();
    let messages: Vec<Vec<u8>> = python("write", &descriptors(&dir), &RECORDS.map(String::from))
        .iter()
        .map(|h| unhex(h))
        .collect();
    let topic = unique_topic("pb-decl");
    create_topic(&topic, 1);
    produce_bytes(&topic, &messages);
    let sql = format!(
        "CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4)) WITH ('topic' = '{topic}', 'format' = 'protobuf', \
         'protobuf.file' = '{PROTO}', 'protobuf.message' = '{MESSAGE}');\nSELECT symbol, price FROM trades WHERE price < 0"
    );
    assert_eq!(
        run_ok(&["execute", "--query", &sql, "--format", "csv"]),
        "symbol,price\nNEG,-0.5000\nTINY,-0.0001\n"
    );
}
