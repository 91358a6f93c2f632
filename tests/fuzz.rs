//! Property tests that throw random and mutated bytes at everything that reads outside input:
//! the JSON, Avro and Protobuf decoders, the Confluent framing, the SQL front end and planner,
//! the configuration loader and the application-file parser. Each input either decodes or is
//! reported: no panic, no process-sized allocation.
//!
//! `PROPTEST_CASES` sets the cases per property (default 256 here); `scripts/fuzz.sh` runs them
//! for a given time.

use std::sync::Arc;

use arrow::array::BinaryArray;
use arrow::datatypes::{DataType, Field, Schema};
use proptest::prelude::*;
use velo_connectors::codec::avro::{parse_schema, AvroDecoder};
use velo_connectors::codec::json::JsonDecoder;
use velo_connectors::codec::protobuf::{load_message, ProtobufDecoder};

/// `sample` with `edits` applied: each (position, byte, kind) flips, inserts or cuts there.
fn mutate(sample: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = sample.to_vec();
    for &(at, byte, kind) in edits {
        let at = if bytes.is_empty() {
            0
        } else {
            at % bytes.len()
        };
        match kind % 4 {
            0 if !bytes.is_empty() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => bytes.truncate(at),
            _ if !bytes.is_empty() => {
                bytes.remove(at);
            }
            _ => bytes.push(byte),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const TRADE_JSON: &str =
    r#"{"symbol":"AAPL","price":"150.2567","qty":100,"tags":["a"],"ts":"2024-01-01T00:00:00Z"}"#;

fn trade_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("price", DataType::Decimal128(18, 4), true),
        Field::new("qty", DataType::Int64, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new(
            "ts",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
            true,
        ),
    ]))
}

const AVRO_SCHEMA: &str = r#"{"type":"record","name":"T","fields":[
  {"name":"symbol","type":"string"},
  {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":4}},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"attrs","type":{"type":"map","values":"long"}},
  {"name":"note","type":["null","string"]}]}"#;

/// A valid datum of [`AVRO_SCHEMA`].
fn avro_sample() -> Vec<u8> {
    // "AAPL", bytes 0x17 0x57 0x67 (1 529 703 × 10^-4), ["x"], {"k": 3}, null
    let mut d = vec![8];
    d.extend_from_slice(b"AAPL");
    d.extend_from_slice(&[6, 0x17, 0x57, 0x67]);
    d.extend_from_slice(&[2, 2, b'x', 0]);
    d.extend_from_slice(&[2, 2, b'k', 6, 0]);
    d.push(0);
    d
}

/// Decodes `random`, `mutated` and the valid `sample` together: each decodes or is reported,
/// and the valid one always comes through.
fn decodes_or_reports(
    decode: impl FnOnce(&BinaryArray) -> velo_connectors::Result<velo_connectors::codec::Decoded>,
    random: &[u8],
    mutated: &[u8],
    sample: &[u8],
) -> Result<(), TestCaseError> {
    let payloads = BinaryArray::from_iter_values([random, mutated, sample]);
    let decoded = decode(&payloads).unwrap();
    prop_assert_eq!(decoded.batch.num_rows() + decoded.failures.len(), 3);
    prop_assert!(decoded.batch.num_rows() >= 1);
    Ok(())
}

fn proto() -> prost_reflect::MessageDescriptor {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/trades.proto");
    load_message(&path, "velostream.examples.Trade").unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_records_decode_or_are_reported(bytes in prop::collection::vec(any::<u8>(), 0..600), edit in edits()) {
        let mut decoder = JsonDecoder::new(trade_schema()).unwrap();
        let mutated = mutate(TRADE_JSON.as_bytes(), &edit);
        decodes_or_reports(|p| decoder.decode(p), &bytes, &mutated, TRADE_JSON.as_bytes())?;
    }

    #[test]
    fn avro_datums_decode_or_are_reported(bytes in prop::collection::vec(any::<u8>(), 0..600), edit in edits()) {
        let schema = parse_schema(AVRO_SCHEMA).unwrap();
        let columns = velo_connectors::codec::avro::arrow_schema(&schema).unwrap();
        let mut decoder = AvroDecoder::new(schema, columns).unwrap();
        let sample = avro_sample();
        let mutated = mutate(&sample, &edit);
        decodes_or_reports(|p| decoder.decode(p), &bytes, &mutated, &sample)?;
    }

    #[test]
    fn protobuf_messages_decode_or_are_reported(bytes in prop::collection::vec(any::<u8>(), 0..600), edit in edits()) {
        let message = proto();
        let columns = velo_connectors::codec::protobuf::arrow_schema(&message);
        let mut decoder = ProtobufDecoder::new(message.clone(), columns).unwrap();
        let mut sample = prost_reflect::DynamicMessage::new(message);
        sample.set_field_by_name("symbol", prost_reflect::Value::String("AAPL".into()));
        sample.set_field_by_name("quantity", prost_reflect::Value::I64(7));
        let sample = prost_reflect::prost::Message::encode_to_vec(&sample);
        let mutated = mutate(&sample, &edit);
        decodes_or_reports(|p| decoder.decode(p), &bytes, &mutated, &sample)?;
    }

    #[test]
    fn confluent_frames_split_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok((_, rest)) = velo_connectors::registry::split_frame(&bytes) {
            prop_assert!(rest.len() + 5 == bytes.len());
            let _ = velo_connectors::registry::skip_message_indexes(rest);
        }
    }

    #[test]
    fn sql_text_parses_and_plans_or_is_refused(text in "\\PC{0,200}", edit in edits()) {
        const VALID: &str = "CREATE STREAM t (k VARCHAR, v DECIMAL(10,2), ts TIMESTAMP);\n\
            SELECT k, SUM(v) AS s FROM t WHERE v > '1.5' AND k LIKE 'a%' GROUP BY k WINDOW TUMBLING(ts, 5s)";
        let _ = velostream::sql::parse_script(&text);
        let mutated = String::from_utf8_lossy(&mutate(VALID.as_bytes(), &edit)).into_owned();
        if let Ok(mut replay) = velostream::replay::Replay::plan(&mutated) {
            let _ = replay.push(&[br#"{"k":"a","v":"2.50","ts":1000}"#]);
            let _ = replay.finish();
        }
    }

    #[test]
    fn configs_load_or_name_what_is_wrong(text in "\\PC{0,300}", edit in edits()) {
        const VALID: &str = "kafka:\n  brokers: \"b:9092\"\nserver:\n  port: 8080\n  cors_origins: [\"*\"]\nsql:\n  max_jobs: 3\nstate:\n  checkpoint_interval_ms: 500\n";
        for candidate in [text.clone(), String::from_utf8_lossy(&mutate(VALID.as_bytes(), &edit)).into_owned()] {
            if let Ok(config) = velostream::server::config::Config::from_yaml(&candidate) {
                let _ = config.validate();
            }
        }
    }

    #[test]
    fn application_files_parse_or_name_the_place(text in "\\PC{0,300}", edit in edits()) {
        const VALID: &str = "CREATE STREAM o (id BIGINT) WITH ('topic' = 'o');\n-- JOB: j\nSTART JOB j AS SELECT id FROM o WITH ('sink.topic' = 'x');";
        let _ = velostream::server::app::parse_application(&text);
        let mutated = String::from_utf8_lossy(&mutate(VALID.as_bytes(), &edit)).into_owned();
        let _ = velostream::server::app::parse_application(&mutated);
    }
}
