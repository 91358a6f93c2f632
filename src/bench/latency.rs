//! `velo-sql bench nexmark --latency`: how long a record takes from being produced to its
//! result being consumed, through the broker and a continuous job.
//!
//! A `stream` job (the low-latency profile's micro-batching) reads an input topic and writes
//! each bid's row, with the record's Kafka timestamp (its CreateTime, set by the producer when
//! it sends), to an output topic. Bids are produced at `--rate` per second; a consumer of the
//! output takes, for every row, now − that timestamp. Rows that come out before the job has
//! joined its group and answered the first record (the warm-up) are left out. Millisecond
//! resolution (Kafka timestamps are milliseconds).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use velo_connectors::generator::nexmark::{self, JsonDialect};
use velo_connectors::kafka::{delete_topic, poll_wait, KafkaConnection};

use super::nexmark::NexmarkArgs;
use super::{parse_count, spec_of};
use crate::error::{Result, VeloError};
use crate::job::spec::JobHooks;

/// The low-latency profile's micro-batching (batch size, flush interval in ms, eager batches).
fn low_latency_profile() -> (usize, u64, bool) {
    let (_, batch, flush, _, eager) = crate::server::config::PROFILES
        .iter()
        .find(|p| p.0 == "low-latency")
        .expect("the low-latency profile exists");
    (*batch, *flush, *eager)
}

/// The measuring consumer's `fetch.wait.max.ms` (see [`measure`]).
fn reader_fetch_wait_ms() -> u64 {
    std::env::var("KAFKA_FETCH_MAX_WAIT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(5, |ms| ms.clamp(1, 5))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn kafka_error(what: &str, e: impl std::fmt::Display) -> VeloError {
    VeloError::Execution(format!("{what}: {e}"))
}

/// Runs a latency measurement as `args` say and prints its `percentiles`.
pub async fn run(args: &NexmarkArgs, columns: &str, percentiles: &[f64]) -> Result<()> {
    let events = parse_count("--events", &args.events)?;
    let rate = args.rate.max(1);
    let (batch, flush, eager) = low_latency_profile();
    let eager = eager || args.eager_batches;
    let id = std::process::id();
    let (input, output) = (
        format!("velo-bench-latency-in-{id}"),
        format!("velo-bench-latency-out-{id}"),
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "0")
        .create()
        .map_err(|e| kafka_error("creating the producer", e))?;
    // The bids among the generator's first `--events` events, made before the clock starts.
    let bids: Vec<Vec<u8>> = super::nexmark::bids_of(events)
        .map(|bid| {
            let mut json = Vec::with_capacity(256);
            nexmark::write_bid_object(&bid, JsonDialect::RisingWave, &mut json);
            json
        })
        .collect();
    if bids.len() < 2 {
        return Err(VeloError::Usage(format!(
            "--events {events} holds {} bids; a latency run needs at least 2",
            bids.len()
        )));
    }
    // The input topic exists before the job subscribes: one record that is not measured.
    producer
        .send(BaseRecord::<(), [u8]>::to(&input).payload(&bids[0]))
        .map_err(|(e, _)| kafka_error("producing", e))?;
    producer
        .flush(Duration::from_secs(10))
        .map_err(|e| kafka_error("producing", e))?;
    let argv: Vec<String> = [
        "velo-sql",
        "stream",
        "--topic",
        &input,
        "--brokers",
        &args.brokers,
        "--schema",
        columns,
        "--query",
        "SELECT auction, bidder, price, CAST(_timestamp AS BIGINT) AS produced_ms FROM bid",
        "--output",
        "kafka",
        "--output-topic",
        &output,
        "--format",
        "json",
        "--no-state",
        "--group-id",
        &format!("velo-bench-latency-{id}"),
        "--batch-size",
        &batch.to_string(),
        "--flush-interval-ms",
        &flush.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(eager.then(|| "--eager-batches".to_string()))
    .collect();
    let spec = spec_of(&argv)?;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(crate::job::progress::JobProgress::new("bench-latency"));
    let hooks = JobHooks {
        stop: Some(stop.clone()),
        progress: Some(progress.clone()),
        ..JobHooks::default()
    };
    let job = tokio::spawn(crate::job::run(spec, hooks));
    let brokers = args.brokers.clone();
    let out_topic = output.clone();
    let measured = tokio::task::spawn_blocking(move || {
        measure(&producer, &brokers, &input, &out_topic, &bids[1..], rate)
    })
    .await
    .map_err(|e| VeloError::Execution(format!("the latency run: {e}")))?;
    stop.store(true, Ordering::Relaxed);
    let stats = job
        .await
        .map_err(|e| VeloError::Execution(format!("the job: {e}")))?;
    let connection = KafkaConnection::new(args.brokers.clone(), Duration::from_secs(10));
    for topic in [format!("velo-bench-latency-in-{id}"), output] {
        if let Err(e) = delete_topic(&connection, &topic).await {
            tracing::warn!("the benchmark's topic is left on the broker: {e}");
        }
    }
    stats?;
    let (mut latencies, mut legs, sent) = measured?;
    latencies.sort_unstable();
    let at = |p: f64| percentile(&latencies, p);
    println!(
        "Nexmark latency: {sent} bids at {rate}/s through the broker, q0 as a continuous job \
         (low-latency profile: {batch} records per batch, {flush} ms flush interval{})",
        if eager { ", eager batches" } else { "" }
    );
    println!();
    let named: Vec<String> = percentiles.iter().map(|p| format!("p{p}")).collect();
    println!("| results measured | {} | max |", named.join(" | "));
    println!("|---|{}---|", "---|".repeat(percentiles.len()));
    let values: Vec<String> = percentiles
        .iter()
        .map(|&p| format!("{} ms", at(p)))
        .collect();
    println!(
        "| {} | {} | {} ms |",
        latencies.len(),
        values.join(" | "),
        latencies.last().copied().unwrap_or(0)
    );
    if let Some(inside) = progress.latency_percentiles_at(percentiles) {
        let shown: Vec<String> = named
            .iter()
            .zip(inside)
            .map(|(p, v)| format!("{p} {v:.1} ms"))
            .collect();
        println!();
        println!(
            "of which inside the job (a micro-batch's poll → its output flushed): {}",
            shown.join(", ")
        );
    }
    // Each result's Kafka timestamp is when the job produced it: the two legs around it.
    for (leg, what) in [
        (&mut legs.0, "bid produced → the job produced its result"),
        (&mut legs.1, "the job produced its result → result consumed"),
    ] {
        leg.sort_unstable();
        let shown: Vec<String> = named
            .iter()
            .zip(percentiles)
            .map(|(name, &p)| format!("{name} {} ms", percentile(leg, p)))
            .collect();
        println!("{what}: {}", shown.join(", "));
    }
    Ok(())
}

/// The `p`th percentile of `sorted` (nearest rank; `sorted` is not empty).
fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// The latencies of each result's two legs, in ms: its bid produced → the job produced it
/// (the result's Kafka timestamp), and that → the result consumed.
type Legs = (Vec<i64>, Vec<i64>);

/// Produces `bids` at `rate` per second once the job answers, consuming its results as they
/// come; the latency (ms) of every result of a bid produced after the warm-up, its two legs,
/// and how many bids were produced.
fn measure(
    producer: &BaseProducer,
    brokers: &str,
    input: &str,
    output: &str,
    bids: &[Vec<u8>],
    rate: u64,
) -> Result<(Vec<i64>, Legs, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{output}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // The measuring consumer waits on the broker as long as the job's does
        // (`KAFKA_FETCH_MAX_WAIT_MS`), at most 5 ms: a waiting fetch of the local broker is
        // answered only when its wait is out, and that wait is not the job's latency. Asking
        // every millisecond at 2 000 records/s loads the broker this shares the two cores with.
        .set("fetch.wait.max.ms", reader_fetch_wait_ms().to_string())
        .create()
        .map_err(|e| kafka_error("creating the consumer", e))?;
    // Warm-up: the job has joined its group and answered once when a result arrives.
    let started = Instant::now();
    let mut subscribed = false;
    let mut answered = false;
    while !answered {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(VeloError::Execution(
                "the job gave no result within 60 s of starting".into(),
            ));
        }
        if !subscribed {
            // The output topic exists once the job has written to it.
            subscribed = consumer
                .fetch_metadata(Some(output), Duration::from_secs(1))
                .is_ok_and(|m| m.topics().iter().any(|t| !t.partitions().is_empty()));
            if subscribed {
                consumer
                    .subscribe(&[output])
                    .map_err(|e| kafka_error("subscribing", e))?;
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        answered = matches!(consumer.poll(Duration::from_millis(100)), Some(Ok(_)));
    }
    let from = now_ms();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let begin = Instant::now();
    let mut latencies = Vec::with_capacity(bids.len());
    let mut legs: Legs = (
        Vec::with_capacity(bids.len()),
        Vec::with_capacity(bids.len()),
    );
    let mut take = |message: &rdkafka::message::BorrowedMessage<'_>, latencies: &mut Vec<i64>| {
        let received = now_ms();
        let produced = message
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|row| row["produced_ms"].as_i64());
        if let Some(produced) = produced.filter(|&p| p >= from) {
            latencies.push(received - produced);
            let sent = message.timestamp().to_millis().unwrap_or(received);
            legs.0.push(sent - produced);
            legs.1.push(received - sent);
        }
    };
    for (i, bid) in bids.iter().enumerate() {
        let due = begin + interval * i as u32;
        // Results are taken while waiting for the next send: all that have come, then a wait
        // for more until it is due (one result per wait would fall behind at high rates).
        loop {
            while let Some(Ok(message)) = consumer.poll(Duration::ZERO) {
                take(&message, &mut latencies);
            }
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Below a millisecond this thread sleeps: a poll would spin (see `poll_wait`),
            // taking a core from the broker and the job.
            let wait = poll_wait(left);
            if wait.is_zero() {
                std::thread::sleep(left);
            } else if let Some(Ok(message)) = consumer.poll(wait) {
                take(&message, &mut latencies);
            }
        }
        producer
            .send(BaseRecord::<(), [u8]>::to(input).payload(bid))
            .map_err(|(e, _)| kafka_error("producing", e))?;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(10))
        .map_err(|e| kafka_error("producing", e))?;
    // The rest of the results, until 5 s pass without one.
    let mut quiet = Instant::now();
    while latencies.len() < bids.len() && quiet.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            take(&message, &mut latencies);
            quiet = Instant::now();
        }
    }
    if latencies.len() != bids.len() {
        return Err(VeloError::Execution(format!(
            "{} of {} results arrived",
            latencies.len(),
            bids.len()
        )));
    }
    Ok((latencies, legs, bids.len()))
}
