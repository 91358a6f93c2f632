//! Kafka over TLS for real: a throwaway CA made with `openssl`, the broker (`nisshi --cert
//! --key`, whose listener then speaks only TLS) with a certificate it signed, and `execute`,
//! `stream` and a server job reaching it with the CA — by flags, by the
//! `KAFKA_*` variables and by the server's configuration file. A wrong CA, or no TLS at all, fails naming
//! the problem; the secrets given never appear in output, logs or answers.
//!
//! SASL: the local broker has no SASL, so SASL is proven by the configuration mapping's unit
//! tests (`src/server/kafka_config.rs`) and by the refusal below naming the SASL handshake.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{call, deploy, eventually, json, start_server_with};
use common::tls::Certificates;
use common::*;

/// `nisshi` serving only TLS on a free port, stopped when dropped.
struct TlsBroker {
    child: Child,
    address: String,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_tls_broker(certs: &Certificates) -> TlsBroker {
    // The shared broker's script installs the binary.
    brokers();
    let port = free_port();
    let listener = format!("tcp://127.0.0.1:{port}");
    let child = Command::new("nisshi")
        .args(["broker", "--storage-engine", "memory://nisshi/"])
        .args([
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
        ])
        .args(["--group-initial-rebalance-delay", "0s"])
        .arg("--cert")
        .arg(certs.path("broker.pem"))
        .arg("--key")
        .arg(certs.path("broker.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nisshi (scripts/kafka-broker.sh install)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nisshi did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let address = format!("127.0.0.1:{port}");
    let ca = certs.path("ca.pem").display().to_string();
    use_client_properties(
        &address,
        &[("security.protocol", "ssl"), ("ssl.ca.location", &ca)],
    );
    TlsBroker { child, address }
}

const ROWS: [&str; 3] = [
    r#"{"id":1,"amount":"5.25"}"#,
    r#"{"id":2,"amount":"50.00"}"#,
    r#"{"id":3,"amount":"120.10"}"#,
];

fn topic_with_rows(broker: &TlsBroker, prefix: &str) -> String {
    let topic = unique_topic(prefix);
    create_topic_at(&broker.address, &topic, 1);
    produce_at(
        &broker.address,
        &topic,
        &ROWS.iter().map(|r| Rec::value(*r)).collect::<Vec<_>>(),
    );
    topic
}

fn values(records: Vec<Consumed>) -> Vec<String> {
    records.into_iter().map(|c| c.value).collect()
}

fn consume_at(address: &str, topic: &str, expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = values(consume_now_at(address, topic));
        if got.len() >= expected || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ca_flags(ca: &Path) -> Vec<String> {
    vec![
        "--kafka-property".into(),
        "security.protocol=ssl".into(),
        "--kafka-property".into(),
        format!("ssl.ca.location={}", ca.display()),
    ]
}

#[test]
fn execute_and_stream_reach_a_tls_only_broker_with_its_ca() {
    let certs = Certificates::new();
    let broker = start_tls_broker(&certs);
    let input = topic_with_rows(&broker, "tls-in");
    let query = format!("SELECT id, amount FROM \"{input}\" WHERE amount > 10");
    let columns = "id BIGINT, amount DECIMAL(10,2)";
    // By flags.
    let mut args = vec![
        "execute",
        "--brokers",
        &broker.address,
        "--topic",
        &input,
        "--schema",
        columns,
        "--query",
        &query,
        "--format",
        "json-lines",
    ];
    let flags = ca_flags(&certs.path("ca.pem"));
    args.extend(flags.iter().map(String::as_str));
    let out = run_ok(&args);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            r#"{"id":2,"amount":"50.00"}"#,
            r#"{"id":3,"amount":"120.10"}"#
        ]
    );
    // By the environment, continuously, into a topic of the same broker.
    let output = unique_topic("tls-out");
    create_topic_at(&broker.address, &output, 1);
    let ca = certs.path("ca.pem").display().to_string();
    let running = spawn_with(
        &[
            "stream",
            "--brokers",
            &broker.address,
            "--topic",
            &input,
            "--schema",
            columns,
            "--query",
            &query,
            "--output-topic",
            &output,
            "--no-state",
        ],
        &[
            ("KAFKA_SECURITY_PROTOCOL", "SSL"),
            ("KAFKA_SSL_CA_LOCATION", &ca),
        ],
    );
    let got = consume_at(&broker.address, &output, 2);
    running.terminate();
    assert_eq!(
        got,
        [
            r#"{"id":2,"amount":"50.00"}"#,
            r#"{"id":3,"amount":"120.10"}"#
        ]
    );
}

#[test]
fn a_wrong_ca_or_no_tls_fails_naming_the_problem() {
    let certs = Certificates::new();
    let broker = start_tls_broker(&certs);
    let input = topic_with_rows(&broker, "tls-bad");
    let query = format!("SELECT * FROM \"{input}\"");
    let base = [
        "execute",
        "--brokers",
        &broker.address,
        "--topic",
        &input,
        "--query",
        &query,
        "--timeout",
        "3s",
    ];
    let mut wrong_ca = base.to_vec();
    let flags = ca_flags(&certs.path("other.pem"));
    wrong_ca.extend(flags.iter().map(String::as_str));
    let out = run(&wrong_ca);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("not reachable"), "{e}");
    assert!(e.contains("certificate verify failed"), "{e}");
    // No TLS at all: the hint names security.protocol.
    let out = run(&base);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("security.protocol"), "{e}");
    // SASL against a broker without it: the SASL handshake is named, the password is not.
    let mut sasl = base.to_vec();
    let ca = format!("ssl.ca.location={}", certs.path("ca.pem").display());
    sasl.extend([
        "--kafka-property",
        "security.protocol=sasl_ssl",
        "--kafka-property",
        &ca,
        "--kafka-property",
        "sasl.mechanisms=SCRAM-SHA-512",
        "--kafka-property",
        "sasl.username=alice",
        "--kafka-property",
        "sasl.password=hunter2-secret",
    ]);
    let out = run_with(&sasl, &[("RUST_LOG", "debug")]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("SASL"), "{e}");
    assert!(
        !e.contains("hunter2-secret") && !stdout(&out).contains("hunter2-secret"),
        "{e}"
    );
}

#[test]
fn a_server_job_reads_and_writes_through_tls_set_in_the_config_file() {
    let certs = Certificates::new();
    let broker = start_tls_broker(&certs);
    let input = topic_with_rows(&broker, "tls-job-in");
    let output = unique_topic("tls-job-out");
    create_topic_at(&broker.address, &output, 1);
    // The guide's layout: security_protocol, an ssl: section, a key password by variable
    // (a secret that must not leak), flat tuning keys.
    let yaml = format!(
        "kafka:\n  brokers: \"{}\"\n  group_prefix: \"{}-\"\n  security_protocol: SSL\n  \
         ssl:\n    ca_location: \"{}\"\n    key_password_env: TEST_KEY_PASSWORD\n  \
         linger_ms: 1\n  fetch_max_wait_ms: 100\n",
        broker.address,
        unique_topic("tls-group"),
        certs.path("ca.pem").display()
    );
    let server = start_server_with(
        &yaml,
        &[
            ("TEST_KEY_PASSWORD", "hunter2-secret"),
            // The environment wins over the file: point it at this broker too.
            ("KAFKA_BROKERS", &broker.address),
        ],
    );
    let (status, body) = call("GET", &format!("{}/health/kafka", server.url), None, None);
    assert_eq!(status, 200, "{body}");
    let app = format!(
        "CREATE STREAM orders (id BIGINT, amount DECIMAL(10,2)) WITH ('topic' = '{input}');\n\
         CREATE STREAM large AS SELECT id, amount FROM orders WHERE amount > 10 \
         WITH ('sink.topic' = '{output}');\n"
    );
    deploy(&server, &app);
    let got = consume_at(&broker.address, &output, 2);
    assert_eq!(
        got,
        [
            r#"{"id":2,"amount":"50.00"}"#,
            r#"{"id":3,"amount":"120.10"}"#
        ]
    );
    // The secret is in none of the answers.
    for path in [
        "/jobs",
        "/jobs/large",
        "/jobs/large/logs",
        "/metrics/kafka",
        "/health/kafka",
    ] {
        let (_, body) = call("GET", &format!("{}{path}", server.url), None, None);
        assert!(!body.contains("hunter2-secret"), "{path}: {body}");
    }
    let jobs = eventually("the job listed", || {
        let (_, body) = call("GET", &format!("{}/jobs", server.url), None, None);
        let v = json(&body);
        (v["jobs"].as_array()?.len() == 1).then_some(v)
    });
    assert_eq!(jobs["jobs"][0]["job_id"], "large");
}
