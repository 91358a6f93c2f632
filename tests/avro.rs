//! Avro in and out against the real broker, with interop proven by Python's fastavro: it
//! writes datums we decode and reads the datums we write, decimals compared digit for digit.

mod common;

use common::*;

const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/trades.avsc");
const TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/avro_tool.py");

/// Decimal edge cases: between −1 and 0, zero, the largest DECIMAL(18,4), a typical price.
const RECORDS: [&str; 5] = [
    r#"{"symbol":"NEG","price":"-0.5000","quantity":3,"side":"SELL","note":null,"ts":1704067200000}"#,
    r#"{"symbol":"TINY","price":"-0.0001","quantity":1,"side":"BUY","note":"tick","ts":1704067200001}"#,
    r#"{"symbol":"ZERO","price":"0.0000","quantity":0,"side":"BUY","note":null,"ts":1704067200002}"#,
    r#"{"symbol":"MAX","price":"99999999999999.9999","quantity":1,"side":"SELL","note":null,"ts":1704067200003}"#,
    r#"{"symbol":"AAPL","price":"150.2567","quantity":100,"side":"BUY","note":"x\"y","ts":1704067200004}"#,
];

/// Runs the fastavro tool; `input` lines in, lines out.
fn fastavro(mode: &str, schema: &str, input: &[String]) -> Vec<String> {
    python_tool(TOOL, &[mode, schema], input)
}

fn avro_topic_written_by_fastavro() -> String {
    let topic = unique_topic("avro-in");
    create_topic(&topic, 1);
    let lines: Vec<String> = RECORDS.iter().map(|r| r.to_string()).collect();
    let datums: Vec<Vec<u8>> = fastavro("write", SCHEMA_FILE, &lines)
        .iter()
        .map(|h| unhex(h))
        .collect();
    produce_bytes(&topic, &datums);
    topic
}

#[test]
fn avro_written_by_fastavro_decodes_to_exact_decimals() {
    let topic = avro_topic_written_by_fastavro();
    let out = run_ok(&[
        "execute",
        "--input-format",
        "avro",
        "--avro-schema",
        SCHEMA_FILE,
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
}

#[test]
fn avro_we_write_is_read_by_fastavro_digit_for_digit() {
    // JSON in, Avro out (the schema file's decimal(18,4)), read back by fastavro.
    let json_topic = unique_topic("avro-json");
    create_topic(&json_topic, 1);
    produce(
        &json_topic,
        &RECORDS.iter().map(|r| Rec::value(*r)).collect::<Vec<_>>(),
    );
    let out_topic = unique_topic("avro-out");
    create_topic(&out_topic, 1);
    run_ok(&[
        "execute", "--topic", &json_topic, "--query", "SELECT * FROM trades",
        "--schema", "symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, side VARCHAR, note VARCHAR, ts TIMESTAMP",
        "--format", "avro", "--output", "kafka", "--output-topic", &out_topic, "--avro-schema", SCHEMA_FILE,
    ]);
    let datums: Vec<String> = consume_bytes(&out_topic, RECORDS.len())
        .iter()
        .map(|d| hex(d))
        .collect();
    let read = fastavro("read", SCHEMA_FILE, &datums);
    let expected: Vec<String> = RECORDS
        .iter()
        .map(|r| {
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(r).unwrap()).unwrap()
        })
        .collect();
    let read: Vec<String> = read
        .iter()
        .map(|r| {
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(r).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(read, expected);
}

#[test]
fn decimals_are_rescaled_to_the_output_schema_and_overflow_drops_the_row() {
    let topic = avro_topic_written_by_fastavro();
    let dir = tempfile::tempdir().unwrap();
    let narrow = dir.path().join("narrow.avsc");
    std::fs::write(
        &narrow,
        r#"{"type":"record","name":"Out","fields":[{"name":"symbol","type":"string"},
            {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":6}}]}"#,
    )
    .unwrap();
    let out_topic = unique_topic("avro-narrow");
    let dlq = unique_topic("avro-narrow-dlq");
    create_topic(&out_topic, 1);
    create_topic(&dlq, 1);
    let run = run_with(
        &[
            "execute",
            "--input-format",
            "avro",
            "--avro-schema",
            SCHEMA_FILE,
            "--topic",
            &topic,
            "--query",
            "SELECT symbol, price FROM trades",
            "--format",
            "avro",
            "--output",
            "kafka",
            "--output-topic",
            &out_topic,
            "--output-avro-schema",
            narrow.to_str().unwrap(),
            "--dlq-topic",
            &dlq,
        ],
        &[("RUST_LOG", "info")],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("encode_errors=1"), "{}", stderr(&run));
    let dead = consume(&dlq, 1);
    assert_eq!(
        dead.len(),
        1,
        "the row that does not fit goes to the dead-letter topic"
    );
    assert_eq!(
        dead[0].value,
        r#"{"symbol":"MAX","price":"99999999999999.9999"}"#
    );
    assert_eq!(dead[0].headers["velo.sink.topic"], out_topic);
    assert!(
        dead[0].headers["velo.error"].contains("99999999999999.9999 does not fit decimal(12, 6)"),
        "{:?}",
        dead[0].headers
    );
    assert!(
        stderr(&run).contains("99999999999999.9999 does not fit decimal(12, 6)"),
        "{}",
        stderr(&run)
    );
    let datums: Vec<String> = consume_bytes(&out_topic, 4)
        .iter()
        .map(|d| hex(d))
        .collect();
    assert_eq!(
        fastavro("read", narrow.to_str().unwrap(), &datums),
        vec![
            r#"{"symbol": "NEG", "price": "-0.500000"}"#,
            r#"{"symbol": "TINY", "price": "-0.000100"}"#,
            r#"{"symbol": "ZERO", "price": "0.000000"}"#,
            r#"{"symbol": "AAPL", "price": "150.256700"}"#,
        ]
    );
}

#[test]
fn bad_avro_records_go_to_the_dead_letter_topic_and_the_rest_decode() {
    let topic = unique_topic("avro-bad");
    let dlq = unique_topic("avro-dlq");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    let good = unhex(&fastavro("write", SCHEMA_FILE, &[RECORDS[4].to_string()])[0]);
    let truncated = good[..good.len() - 4].to_vec();
    let mut bad_enum = good.clone();
    // The enum index follows symbol, price and quantity; find it by re-encoding would be
    // fragile, so corrupt the union branch of `note` instead: the byte after the enum.
    let note_at = good.len() - 1 - 6 - 1 - 4; // ts (6 bytes varint) + "x\"y" (3+1) before the end
    bad_enum[note_at] = 0x08; // union index 4: out of range
    produce_bytes(&topic, &[good.clone(), truncated, bad_enum, good]);
    let out = run(&[
        "execute",
        "--input-format",
        "avro",
        "--avro-schema",
        SCHEMA_FILE,
        "--topic",
        &topic,
        "--query",
        "SELECT symbol, price FROM trades",
        "--format",
        "csv",
        "--dlq-topic",
        &dlq,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "symbol,price\nAAPL,150.2567\nAAPL,150.2567\n");
    let dead = consume(&dlq, 2);
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0].headers["velo.source.offset"], "1");
    assert!(
        dead[0].headers["velo.error"].starts_with("invalid Avro"),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(dead[1].headers["velo.source.offset"], "2");
}

#[test]
fn a_json_avro_json_round_trip_changes_no_value() {
    let json_topic = unique_topic("rt-json");
    let avro_topic = unique_topic("rt-avro");
    create_topic(&json_topic, 1);
    create_topic(&avro_topic, 1);
    produce(
        &json_topic,
        &RECORDS.iter().map(|r| Rec::value(*r)).collect::<Vec<_>>(),
    );
    let schema = "symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, side VARCHAR, note VARCHAR, ts TIMESTAMP";
    let direct = run_ok(&[
        "execute",
        "--topic",
        &json_topic,
        "--query",
        "SELECT * FROM t",
        "--schema",
        schema,
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
        schema,
        "--format",
        "avro",
        "--output",
        "kafka",
        "--output-topic",
        &avro_topic,
        "--avro-schema",
        SCHEMA_FILE,
    ]);
    let back = run_ok(&[
        "execute",
        "--topic",
        &avro_topic,
        "--input-format",
        "avro",
        "--avro-schema",
        SCHEMA_FILE,
        "--query",
        "SELECT * FROM t",
        "--format",
        "json-lines",
    ]);
    assert_eq!(back, direct);
    assert_eq!(direct.lines().count(), RECORDS.len());
}

#[test]
fn a_schema_file_that_does_not_parse_is_a_startup_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.avsc");
    std::fs::write(&bad, "{\"type\": \"record\",\n \"fields\": [}").unwrap();
    let topic = avro_topic_written_by_fastavro();
    let out = run(&[
        "execute",
        "--input-format",
        "avro",
        "--avro-schema",
        bad.to_str().unwrap(),
        "--topic",
        &topic,
        "--query",
        "SELECT 1 FROM t",
    ]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("schema file {}: line 2, column", bad.display())),
        "{err}"
    );
}

#[test]
fn a_stream_declared_with_format_avro_reads_its_schema_file() {
    let topic = avro_topic_written_by_fastavro();
    let sql = format!(
        "CREATE STREAM trades WITH ('topic' = '{topic}', 'format' = 'avro', 'avro.schema.file' = '{SCHEMA_FILE}');\n\
         SELECT symbol, price FROM trades WHERE price > '0'"
    );
    assert_eq!(
        run_ok(&["execute", "--query", &sql, "--format", "csv"]),
        "symbol,price\nMAX,99999999999999.9999\nAAPL,150.2567\n"
    );
}

#[test]
fn stream_with_format_avro_reads_and_writes_avro() {
    let topic = avro_topic_written_by_fastavro();
    let out_topic = unique_topic("avro-both");
    create_topic(&out_topic, 1);
    let job = spawn(&[
        "stream",
        "--topic",
        &topic,
        "--format",
        "avro",
        "--avro-schema",
        SCHEMA_FILE,
        "--query",
        "SELECT * FROM trades WHERE price > '0'",
        "--output",
        "kafka",
        "--output-topic",
        &out_topic,
        "--group-id",
        &unique_topic("g"),
    ]);
    let written: Vec<String> = consume_bytes(&out_topic, 2)
        .iter()
        .map(|d| hex(d))
        .collect();
    let (code, _) = job.terminate();
    assert_eq!(code, 0);
    let read = fastavro("read", SCHEMA_FILE, &written);
    let symbols: Vec<String> = read
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(r).unwrap()["symbol"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(symbols, ["MAX", "AAPL"]);
}
