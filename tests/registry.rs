//! The Confluent wire format with a schema registry (a small registry speaking the Confluent
//! REST API, started by the test on a free 127.0.0.1 port): Avro and Protobuf in and out,
//! unknown ids and wrong magic bytes dead-lettered, an unreachable registry reported.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use velo_connectors::registry::SchemaRegistry;

const AVSC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/trades.avsc");
const PROTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/trades.proto");
const MESSAGE: &str = "velostream.examples.Trade";
const AVRO_TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/avro_tool.py");
const PROTO_TOOL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/interop/protobuf_tool.py"
);
const REGISTRY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/registry.py");
const COLUMNS: &str = "symbol VARCHAR, price DECIMAL(18,4), quantity BIGINT, side VARCHAR, note VARCHAR, ts TIMESTAMP";

const RECORDS: [&str; 2] = [
    r#"{"symbol":"NEG","price":"-0.5000","quantity":3,"side":"SELL","note":null,"ts":1704067200000}"#,
    r#"{"symbol":"MAX","price":"99999999999999.9999","quantity":1,"side":"BUY","note":"n","ts":1704067200003}"#,
];

struct Registry {
    child: Child,
    url: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn start_registry() -> Registry {
    start_registry_with(&[], "http")
}

fn start_registry_with(args: &[&str], scheme: &str) -> Registry {
    let mut child = Command::new("python3")
        .arg(REGISTRY)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Registry {
        child,
        url: format!("{scheme}://127.0.0.1:{}", line.trim()),
    }
}

fn client(r: &Registry) -> SchemaRegistry {
    SchemaRegistry::new(&r.url, std::time::Duration::from_secs(5))
}

fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[test]
fn avro_in_the_confluent_wire_format_reads_writer_schemas_by_id_and_writes_registered_ids() {
    let registry = start_registry();
    let topic = unique_topic("cf-avro");
    let dlq = unique_topic("cf-avro-dlq");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    let id = client(&registry)
        .register(
            &format!("{topic}-value"),
            &std::fs::read_to_string(AVSC).unwrap(),
            "AVRO",
        )
        .unwrap();
    let datums: Vec<Vec<u8>> = python_tool(AVRO_TOOL, &["write", AVSC], &RECORDS.map(String::from))
        .iter()
        .map(|h| unhex(h))
        .collect();
    let mut wrong_magic = framed(id, &datums[0]);
    wrong_magic[0] = 1;
    produce_bytes(
        &topic,
        &[
            framed(id, &datums[0]),
            framed(999, &datums[0]),
            wrong_magic,
            framed(id, &datums[1]),
        ],
    );
    // No --avro-schema: the columns come from the registry's latest schema of `<topic>-value`.
    let out = run(&[
        "execute",
        "--input-format",
        "avro",
        "--schema-registry",
        &registry.url,
        "--topic",
        &topic,
        "--query",
        "SELECT symbol, price, side FROM trades",
        "--format",
        "csv",
        "--dlq-topic",
        &dlq,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "symbol,price,side\nNEG,-0.5000,SELL\nMAX,99999999999999.9999,BUY\n"
    );
    let dead = consume(&dlq, 2);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].headers["velo.error"], "unknown schema id 999");
    assert!(
        dead[1].headers["velo.error"].contains("wrong magic byte 0x01"),
        "{:?}",
        dead[1].headers
    );

    let out_topic = unique_topic("cf-avro-out");
    create_topic(&out_topic, 1);
    run_ok(&[
        "execute",
        "--input-format",
        "avro",
        "--schema-registry",
        &registry.url,
        "--topic",
        &topic,
        "--query",
        "SELECT * FROM trades",
        "--format",
        "avro",
        "--output",
        "kafka",
        "--output-topic",
        &out_topic,
        "--avro-schema",
        AVSC,
    ]);
    let (out_id, _) = client(&registry)
        .latest(&format!("{out_topic}-value"))
        .unwrap();
    let written = consume_bytes(&out_topic, 2);
    assert_eq!(written.len(), 2);
    for w in &written {
        assert_eq!(
            &w[..5],
            &framed(out_id, &[])[..],
            "magic byte and the registered id"
        );
    }
    let read = python_tool(
        AVRO_TOOL,
        &["read", AVSC],
        &written.iter().map(|w| hex(&w[5..])).collect::<Vec<_>>(),
    );
    let normalized = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap();
    assert_eq!(
        read.iter().map(|l| normalized(l)).collect::<Vec<_>>(),
        RECORDS.iter().map(|l| normalized(l)).collect::<Vec<_>>()
    );
}

#[test]
fn protobuf_in_the_confluent_wire_format_round_trips() {
    let registry = start_registry();
    let dir = tempfile::tempdir().unwrap();
    let descriptors = dir.path().join("trades.pb");
    std::fs::write(
        &descriptors,
        velo_connectors::codec::protobuf::descriptor_set(std::path::Path::new(PROTO)).unwrap(),
    )
    .unwrap();
    let descriptors = descriptors.to_str().unwrap();
    let topic = unique_topic("cf-pb");
    create_topic(&topic, 1);
    let id = client(&registry)
        .register(
            &format!("{topic}-value"),
            &std::fs::read_to_string(PROTO).unwrap(),
            "PROTOBUF",
        )
        .unwrap();
    // Trade is the file's second message: message indexes [1] = 0x02 0x02.
    let messages: Vec<Vec<u8>> = python_tool(
        PROTO_TOOL,
        &["write", descriptors, MESSAGE],
        &RECORDS.map(String::from),
    )
    .iter()
    .map(|h| framed(id, &[[2u8, 2].as_slice(), unhex(h).as_slice()].concat()))
    .collect();
    produce_bytes(&topic, &messages);
    let out_topic = unique_topic("cf-pb-out");
    create_topic(&out_topic, 1);
    let args = [
        "--input-format",
        "protobuf",
        "--proto-file",
        PROTO,
        "--proto-message",
        MESSAGE,
        "--schema",
        COLUMNS,
        "--schema-registry",
        &registry.url,
        "--topic",
        &topic,
    ];
    let out = run_ok(
        &[
            &["execute"],
            &args[..],
            &["--query", "SELECT symbol, price FROM t", "--format", "csv"],
        ]
        .concat(),
    );
    assert_eq!(out, "symbol,price\nNEG,-0.5000\nMAX,99999999999999.9999\n");
    run_ok(
        &[
            &["execute"],
            &args[..],
            &[
                "--query",
                "SELECT * FROM t",
                "--format",
                "protobuf",
                "--output",
                "kafka",
                "--output-topic",
                &out_topic,
            ],
        ]
        .concat(),
    );
    let (out_id, schema) = client(&registry)
        .latest(&format!("{out_topic}-value"))
        .unwrap();
    assert!(
        schema.contains("message Trade"),
        "the .proto text is registered: {schema}"
    );
    let written = consume_bytes(&out_topic, 2);
    for w in &written {
        assert_eq!(&w[..7], &framed(out_id, &[2, 2])[..]);
    }
    let read = python_tool(
        PROTO_TOOL,
        &["read", descriptors, MESSAGE],
        &written.iter().map(|w| hex(&w[7..])).collect::<Vec<_>>(),
    );
    let normalized = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap();
    assert_eq!(
        read.iter().map(|l| normalized(l)).collect::<Vec<_>>(),
        RECORDS.iter().map(|l| normalized(l)).collect::<Vec<_>>()
    );
}

#[test]
fn an_unreachable_registry_is_a_clear_error() {
    let topic = unique_topic("cf-down");
    create_topic(&topic, 1);
    produce_bytes(&topic, &[framed(1, &[2, 6, 65])]);
    run_failing(
        &["execute", "--input-format", "avro", "--avro-schema", AVSC, "--schema-registry", "http://127.0.0.1:1", "--topic", &topic, "--query", "SELECT symbol FROM t"],
        1,
        "schema registry http://127.0.0.1:1 is not reachable: GET http://127.0.0.1:1/schemas/ids/1 (3 attempts)",
    );
}

#[test]
fn a_registry_over_tls_with_basic_auth_is_reached_with_its_ca_and_credentials() {
    let certs = common::tls::Certificates::new();
    let registry = start_registry_with(
        &[
            "--cert",
            certs.path("broker.pem").to_str().unwrap(),
            "--key",
            certs.path("broker.key").to_str().unwrap(),
            "--user",
            "alice:s3cret-pw",
        ],
        "https",
    );
    let ca = certs.path("ca.pem").display().to_string();
    let with_ca = [("SCHEMA_REGISTRY_SSL_CA_LOCATION", ca.as_str())];
    let out_topic = unique_topic("cf-tls-out");
    create_topic(&out_topic, 1);
    // Credentials in the URL; the CA from the environment. The producer registers the schema.
    let with_user = registry.url.replace("https://", "https://alice:s3cret-pw@");
    let write = |url: &str, env: &[(&str, &str)]| {
        run_with(
            &[
                "execute", "--source", "generator:trades?count=3", "--query",
                "SELECT symbol, price, quantity, side, CAST(NULL AS VARCHAR) AS note, ts FROM trades",
                "--format", "avro", "--output", "kafka", "--output-topic", &out_topic,
                "--avro-schema", AVSC, "--schema-registry", url,
            ],
            env,
        )
    };
    let out = write(&with_user, &with_ca);
    assert!(out.status.success(), "{}", stderr(&out));
    // Read back with the credentials from the environment instead.
    let out = run_with(
        &[
            "execute",
            "--input-format",
            "avro",
            "--schema-registry",
            &registry.url,
            "--topic",
            &out_topic,
            "--query",
            "SELECT symbol, price, side FROM trades",
            "--format",
            "csv",
        ],
        &[
            ("SCHEMA_REGISTRY_SSL_CA_LOCATION", ca.as_str()),
            ("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "alice:s3cret-pw"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let generated = run_ok(&[
        "execute",
        "--source",
        "generator:trades?count=3",
        "--query",
        "SELECT symbol, price, side FROM trades",
        "--format",
        "csv",
    ]);
    assert_eq!(stdout(&out), generated);
    // A wrong password: the registry's 401, named; the password shown nowhere.
    let wrong = registry.url.replace("https://", "https://alice:wrong-pw@");
    let out = write(&wrong, &with_ca);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("401"), "{e}");
    assert!(!e.contains("wrong-pw") && !e.contains("s3cret-pw"), "{e}");
    // Without the CA: the certificate is not trusted, and that is what the error says.
    let out = write(&with_user, &[]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert!(!e.contains("s3cret-pw"), "{e}");
}
