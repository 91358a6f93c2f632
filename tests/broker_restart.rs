//! The broker restarting under a running job: the job rides out the outage and resumes, and
//! its output is what an uninterrupted run gives.
//!
//! The shared test broker keeps nothing across a restart (in memory), so this test runs its
//! own: the same `nisshi` broker on S3 storage, served by a local `moto_server` (installed from
//! tests/interop/requirements.txt), so topics, records and group offsets survive the broker
//! process being killed and started again.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An S3 endpoint on `port`, with the bucket `nisshi`.
fn start_s3(port: u16) -> Process {
    let child = Command::new("moto_server")
        .args(["-p", &port.to_string(), "-H", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (pip install -r tests/interop/requirements.txt)");
    wait_for_port(port, "moto_server");
    let status = ureq::put(&format!("http://127.0.0.1:{port}/nisshi"))
        .send_empty()
        .expect("create the bucket")
        .status();
    assert!(status.is_success(), "{status}");
    Process(child)
}

/// `nisshi` on `port`, storing in the S3 endpoint on `s3`.
fn start_broker(port: u16, s3: u16) -> Process {
    let listener = format!("tcp://127.0.0.1:{port}");
    let child = Command::new("nisshi")
        .args([
            "broker",
            "--storage-engine",
            "s3://nisshi/",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
            "--group-initial-rebalance-delay",
            "0s",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{s3}"))
        .env("AWS_ALLOW_HTTP", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nisshi (scripts/kafka-broker.sh install)");
    wait_for_port(port, "nisshi");
    Process(child)
}

#[test]
fn a_job_rides_out_a_broker_restart_and_loses_nothing() {
    // Make sure the broker binary is there (the shared broker's script installs it).
    brokers();
    let s3_port = free_port();
    let port = free_port();
    let _s3 = start_s3(s3_port);
    let mut broker = start_broker(port, s3_port);
    let address = format!("127.0.0.1:{port}");
    let topic = "restart-in";
    let out = "restart-out";
    create_topic_at(&address, topic, 2);
    create_topic_at(&address, out, 1);
    produce_at(
        &address,
        topic,
        &(0..150).map(window_event).collect::<Vec<_>>(),
    );
    let query = "SELECT window_start, k, COUNT(*) AS c, SUM(n) AS total FROM ev \
                 WHERE k <> 'end' GROUP BY k WINDOW TUMBLING(ts, 1m)";
    let group = unique_topic("restart-g");
    let job = spawn_with(
        &[
            "stream",
            "--query",
            query,
            "--topic",
            topic,
            "--schema",
            "k VARCHAR, n BIGINT, ts TIMESTAMP",
            "--output",
            "kafka",
            "--output-topic",
            out,
            "--group-id",
            &group,
            "--checkpoint-interval",
            "300ms",
            "--timeout",
            "30",
        ],
        &[("KAFKA_BROKERS", &address)],
    );
    // Windows 0 and 1 close (6 rows) before the broker goes down.
    let deadline = Instant::now() + Duration::from_secs(30);
    while consume_now_at(&address, out).len() < 6 {
        assert!(
            Instant::now() < deadline,
            "the first windows did not come out"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.0.kill().unwrap();
    broker.0.wait().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _broker = start_broker(port, s3_port);
    produce_at(
        &address,
        topic,
        &(150..300).map(window_event).collect::<Vec<_>>(),
    );
    produce_at(&address, topic, &window_closer());
    let oracle = run_ok_with(
        &[
            "execute",
            "--query",
            query,
            "--topic",
            topic,
            "--schema",
            "k VARCHAR, n BIGINT, ts TIMESTAMP",
            "--format",
            "json-lines",
        ],
        &[("KAFKA_BROKERS", &address)],
    );
    let mut expected: Vec<String> = oracle.lines().map(str::to_string).collect();
    expected.sort();
    assert_eq!(expected.len(), 15, "3 keys in 5 windows");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got: Vec<String>;
    loop {
        got = consume_now_at(&address, out)
            .into_iter()
            .map(|c| c.value)
            .collect();
        got.sort();
        got.dedup();
        if got == expected || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, _) = job.terminate();
    assert_eq!(got, expected, "every window, each complete");
    assert_eq!(code, 0);
}
