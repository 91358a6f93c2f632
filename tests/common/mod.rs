//! Shared helpers of the integration tests: the real broker (started by the project's script
//! unless `KAFKA_BROKERS` names one), topics, producing and consuming, and running `velo-sql`.

#![allow(dead_code)]

pub mod server;
pub mod tls;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The broker's bootstrap address; starts the local broker once if `KAFKA_BROKERS` is unset.
pub fn brokers() -> &'static str {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS.get_or_init(|| {
        if let Ok(b) = std::env::var("KAFKA_BROKERS") {
            if !b.is_empty() {
                return b;
            }
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka-broker.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg("start")
            .status()
            .expect("run scripts/kafka-broker.sh");
        assert!(status.success(), "scripts/kafka-broker.sh start failed");
        "127.0.0.1:9092".to_string()
    })
}

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

fn config() -> ClientConfig {
    config_at(brokers())
}

fn config_at(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    if let Some(properties) = client_properties().lock().unwrap().get(brokers) {
        for (k, v) in properties {
            c.set(k, v);
        }
    }
    c
}

type PropertiesByBroker = std::collections::HashMap<String, Vec<(String, String)>>;

fn client_properties() -> &'static std::sync::Mutex<PropertiesByBroker> {
    static PROPERTIES: OnceLock<std::sync::Mutex<PropertiesByBroker>> = OnceLock::new();
    PROPERTIES.get_or_init(Default::default)
}

/// Makes the helpers' clients of the broker at `brokers` use these librdkafka properties
/// (e.g. TLS settings for a broker that only speaks TLS).
pub fn use_client_properties(brokers: &str, properties: &[(&str, &str)]) {
    client_properties().lock().unwrap().insert(
        brokers.to_string(),
        properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
}

/// Creates `topic` with `partitions` partitions and waits until its metadata is visible.
pub fn create_topic(topic: &str, partitions: i32) {
    create_topic_at(brokers(), topic, partitions)
}

/// [`create_topic`] on the broker at `brokers`.
pub fn create_topic_at(brokers: &str, topic: &str, partitions: i32) {
    let config = || config_at(brokers);
    let admin: AdminClient<DefaultClientContext> = config().create().expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create_topics");
    for r in results {
        r.expect("topic created");
    }
    let consumer: BaseConsumer = config().create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .unwrap();
        if md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.partitions().len() == partitions as usize)
        {
            return;
        }
        assert!(Instant::now() < deadline, "topic {topic} did not appear");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes `topic` and waits until the broker no longer lists it.
pub fn delete_topic(topic: &str) {
    let admin: AdminClient<DefaultClientContext> = config().create().expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for r in rt
        .block_on(admin.delete_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("delete_topics")
    {
        r.expect("topic deleted");
    }
    let consumer: BaseConsumer = config().create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .unwrap()
        .topics()
        .iter()
        .any(|t| t.name() == topic)
    {
        assert!(Instant::now() < deadline, "topic {topic} is still listed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct Rec {
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<(String, String)>,
    pub partition: Option<i32>,
    pub timestamp: Option<i64>,
}

impl Rec {
    pub fn value(v: impl Into<String>) -> Self {
        Rec {
            value: Some(v.into()),
            ..Default::default()
        }
    }
    pub fn key(mut self, k: impl Into<String>) -> Self {
        self.key = Some(k.into());
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }
    pub fn timestamp(mut self, ts: i64) -> Self {
        self.timestamp = Some(ts);
        self
    }
}

/// Produces `records` to `topic` and waits for every acknowledgement.
pub fn produce(topic: &str, records: &[Rec]) {
    produce_at(brokers(), topic, records)
}

/// [`produce`] to the broker at `brokers`.
pub fn produce_at(brokers: &str, topic: &str, records: &[Rec]) {
    let producer: BaseProducer = config_at(brokers).set("linger.ms", "0").create().unwrap();
    for r in records {
        let mut rec: BaseRecord<'_, str, str> = BaseRecord::to(topic);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_str());
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v.as_str());
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if let Some(ts) = r.timestamp {
            rec = rec.timestamp(ts);
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (k, v) in &r.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_str()),
                });
            }
            rec = rec.headers(h);
        }
        producer.send(rec).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub key: Option<String>,
    pub value: String,
    pub headers: BTreeMap<String, String>,
    pub partition: i32,
    pub offset: i64,
}

impl Consumed {
    fn of(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        Consumed {
            key: m.key().map(|k| text(Some(k))),
            value: text(m.payload()),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), text(h.value)))
                        .collect()
                })
                .unwrap_or_default(),
            partition: m.partition(),
            offset: m.offset(),
        }
    }
}

/// Reads every record of `topic` from the beginning until `expected` records arrived (or the
/// time runs out), then waits a little longer to catch unexpected extra ones.
pub fn consume(topic: &str, expected: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = config()
        .set("group.id", unique_topic("test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut extra_until: Option<Instant> = None;
    while Instant::now() < deadline && extra_until.is_none_or(|t| Instant::now() < t) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(Consumed::of(&m));
        }
        if out.len() >= expected && extra_until.is_none() {
            extra_until = Some(Instant::now() + Duration::from_millis(500));
        }
    }
    out.sort_by_key(|c| (c.partition, c.offset));
    out
}

/// The offset `group` has committed for `partition` of `topic`, if any.
pub fn committed_offset(group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = config().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    match committed.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Every record of `topic` up to the end of each partition now, in (partition, offset) order.
pub fn consume_now(topic: &str) -> Vec<Consumed> {
    consume_now_at(brokers(), topic)
}

/// [`consume_now`] from the broker at `brokers`.
pub fn consume_now_at(brokers: &str, topic: &str) -> Vec<Consumed> {
    let consumer: BaseConsumer = config_at(brokers)
        .set("group.id", unique_topic("test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut left = BTreeMap::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .unwrap();
            if low < high {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .unwrap();
                left.insert(p.id(), high);
            }
        }
    }
    let mut out = Vec::new();
    if left.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !left.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{topic}: partitions {left:?} not read to the end"
        );
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if left
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            left.remove(&m.partition());
        }
        out.push(Consumed::of(&m));
    }
    out.sort_by_key(|c| (c.partition, c.offset));
    out
}

/// The (key, value) pairs of `topic`, as [`consume`] reads them.
pub fn consume_keyed(topic: &str, expected: usize) -> Vec<(Option<String>, String)> {
    consume(topic, expected)
        .into_iter()
        .map(|c| (c.key, c.value))
        .collect()
}

/// The `velo-sql` binary.
pub fn velo_sql() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_velo-sql"));
    c.env("KAFKA_BROKERS", brokers())
        .env("RUST_LOG", "warn")
        .env("VELO_STATE_DIR", state_root());
    c
}

/// The state folder of this test process's jobs: fresh per run, so no test restores state an
/// earlier run (against an earlier broker) left behind.
pub fn state_root() -> &'static std::path::Path {
    static ROOT: OnceLock<std::path::PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("velo-test-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        root
    })
}

/// Runs `velo-sql ARGS` to completion (killed after 60 s).
pub fn run(args: &[&str]) -> Output {
    run_with(args, &[])
}

/// [`run`] with extra environment variables.
pub fn run_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    finish(velo_sql(), args, env)
}

/// The `velo-sql-multi` binary, set up as [`velo_sql`].
pub fn velo_sql_multi() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_velo-sql-multi"));
    c.env("KAFKA_BROKERS", brokers())
        .env("RUST_LOG", "warn")
        .env("VELO_STATE_DIR", state_root())
        .env_remove("VELO_HOST");
    c
}

/// Runs `velo-sql-multi ARGS` to completion (killed after 60 s).
pub fn run_multi(args: &[&str]) -> Output {
    finish(velo_sql_multi(), args, &[])
}

/// Runs `command ARGS` to completion (killed after 60 s). Its output is read while it runs,
/// so a large one never blocks it on a full pipe.
fn finish(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = command
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start velo-sql");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = finished.recv().unwrap().unwrap();
            panic!(
                "{command:?} {args:?} did not finish in 60 s; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `velo-sql` and asserts it exits 0; returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    run_ok_with(args, &[])
}

/// [`run_ok`] with extra environment variables.
pub fn run_ok_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_with(args, env);
    assert!(
        out.status.success(),
        "velo-sql {args:?} failed ({:?}):\n{}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `velo-sql ARGS`, asserts the exit code and that stderr contains `needle`; returns the
/// output.
pub fn run_failing(args: &[&str], code: i32, needle: &str) -> Output {
    let out = run(args);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    assert!(
        stderr(&out).contains(needle),
        "{args:?}: expected '{needle}' in:\n{}",
        stderr(&out)
    );
    out
}

/// Runs `velo-sql ARGS` until its first line of output, then stops it with SIGTERM; returns
/// that line and everything it wrote to stderr.
pub fn first_line_then_stop(args: &[&str]) -> (String, String) {
    let mut child = velo_sql()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start velo-sql");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        line.trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Event `n` of the window tests' stream `k VARCHAR, n BIGINT, ts TIMESTAMP`: key `k<n % 3>`,
/// at second `n` of 2024-01-01, on partition `n % 2`.
pub fn window_event(n: i64) -> Rec {
    Rec::value(format!(
        r#"{{"k":"k{}","n":{n},"ts":"2024-01-01T00:{:02}:{:02}Z"}}"#,
        n % 3,
        n / 60 % 60,
        n % 60
    ))
    .partition((n % 2) as i32)
}

/// Records (key `end`, five hours on) that close every window of [`window_event`]s on both
/// partitions.
pub fn window_closer() -> Vec<Rec> {
    (0..2)
        .map(|p| Rec::value(r#"{"k":"end","n":0,"ts":"2024-01-01T05:00:00Z"}"#).partition(p))
        .collect()
}

/// A running `velo-sql` whose stdout lines arrive on a channel.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

/// Starts `velo-sql ARGS` in the background.
pub fn spawn(args: &[&str]) -> Running {
    spawn_with(args, &[])
}

/// Starts `velo-sql ARGS` in the background with extra environment variables.
pub fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = velo_sql()
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start velo-sql");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running { child, lines: rx }
}

impl Drop for Running {
    /// A test that fails half-way must not leave `velo-sql` running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Waits for `n` lines of output (at most 30 s).
    pub fn take_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => panic!("only {} of {n} lines arrived: {out:?}", out.len()),
            }
        }
        out
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code and any remaining lines.
    pub fn terminate(self) -> (i32, Vec<String>) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait()
    }

    /// Waits for the process to exit (at most 30 s); returns the exit code and the lines not
    /// taken yet.
    pub fn wait(mut self) -> (i32, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                self.child.kill().ok();
                panic!("velo-sql did not finish within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        let rest: Vec<String> = self.lines.try_iter().collect();
        (status.code().unwrap_or(-1), rest)
    }
}

/// Runs a Python helper of `tests/interop` with `args`; `input` lines on stdin, stdout lines
/// back. Fails with a hint when the Python packages are missing.
pub fn python_tool(script: &str, args: &[&str], input: &[String]) -> Vec<String> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.join("\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed (pip install -r tests/interop/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string.
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Produces raw binary payloads.
pub fn produce_bytes(topic: &str, payloads: &[Vec<u8>]) {
    let producer: BaseProducer = config().create().unwrap();
    for p in payloads {
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).payload(p.as_slice()))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// The raw payloads of `topic` (at most 20 s for `n` of them).
pub fn consume_bytes(topic: &str, n: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = config()
        .set("group.id", unique_topic("bytes-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

/// The values of `sorted` that occur more than once (once each per repeat).
pub fn repeated<T: PartialEq + Clone>(sorted: &[T]) -> Vec<T> {
    sorted
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0].clone())
        .collect()
}
