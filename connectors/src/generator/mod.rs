//! Built-in generator sources: `trades` (a market data feed with exact decimal prices) and
//! `nexmark` (the Nexmark benchmark's auction events, see [`nexmark`]).
//!
//! Named on the command line as `generator:NAME[?option=value&…]`. Options: `count=N` (stop
//! after N events; default unbounded), `rate=N` (events per second of wall-clock time to pace at;
//! default unpaced for bounded runs, 1000/s for unbounded ones), `seed=N` (trades only).
//! Event time: `trades` starts at 2024-01-01T00:00:00Z and advances 10 ms per trade when
//! bounded; when unbounded it starts at the wall clock and advances `1/rate` s per trade (the
//! time each trade is due); `nexmark` follows GENERATOR.md.

pub mod java_random;
pub mod nexmark;
pub mod trades;

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::record::{Payload, RecordBatchCollector, SourceBatch};
use crate::source::Source;
use crate::{ConnectorError, Result};

/// A deterministic producer of events by sequence number.
pub trait Generator: Send {
    /// Schema of generated batches.
    fn schema(&self) -> SchemaRef;
    /// Events `first..first + count` as a batch, and each event's time in ms.
    fn generate(&mut self, first: u64, count: usize) -> (RecordBatch, Vec<i64>);
}

/// Parsed `generator:NAME?…` specification.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorSpec {
    pub name: String,
    pub count: Option<u64>,
    pub rate: Option<u64>,
    pub seed: u64,
}

impl GeneratorSpec {
    /// The generator names known.
    pub const NAMES: &'static [&'static str] = &["trades", "nexmark"];

    /// Parses `generator:trades?count=1000&rate=100` (the `generator:` prefix is optional).
    pub fn parse(text: &str) -> Result<Self> {
        let body = text.strip_prefix("generator:").unwrap_or(text);
        let (name, query) = body.split_once('?').unwrap_or((body, ""));
        if !Self::NAMES.contains(&name) {
            return Err(ConnectorError::Config(format!(
                "unknown generator '{name}' (known: {})",
                Self::NAMES.join(", ")
            )));
        }
        let mut spec = GeneratorSpec {
            name: name.to_string(),
            count: None,
            rate: None,
            seed: 42,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = value.parse::<u64>().map_err(|_| {
                ConnectorError::Config(format!(
                    "generator option '{key}' needs a non-negative number, got '{value}'"
                ))
            })?;
            match key {
                "count" => spec.count = Some(number),
                "rate" => spec.rate = Some(number.max(1)),
                "seed" => spec.seed = number,
                other => {
                    return Err(ConnectorError::Config(format!(
                        "unknown generator option '{other}' (known: count, rate, seed)"
                    )))
                }
            }
        }
        Ok(spec)
    }

    /// The schema the generator produces.
    pub fn schema(&self) -> SchemaRef {
        self.generator().schema()
    }

    /// The pacing rate of an unbounded run (`rate`, default 1000/s); `None` when bounded.
    fn wall_clock_rate(&self) -> Option<u64> {
        self.count.is_none().then(|| self.rate.unwrap_or(1000))
    }

    fn generator(&self) -> Box<dyn Generator> {
        match self.name.as_str() {
            "nexmark" => Box::new(NexmarkGenerator(nexmark::NexmarkConfig::default())),
            _ => Box::new(trades::TradesGenerator::new(
                self.seed,
                self.wall_clock_rate(),
            )),
        }
    }
}

struct NexmarkGenerator(nexmark::NexmarkConfig);

impl Generator for NexmarkGenerator {
    fn schema(&self) -> SchemaRef {
        nexmark::schema()
    }
    fn generate(&mut self, first: u64, count: usize) -> (RecordBatch, Vec<i64>) {
        let batch = nexmark::batch(&self.0, first as i64, count);
        let times = (0..count as i64)
            .map(|i| self.0.timestamp_ms(first as i64 + i))
            .collect();
        (batch, times)
    }
}

/// A [`Source`] over a [`Generator`].
pub struct GeneratorSource {
    spec: GeneratorSpec,
    generator: Box<dyn Generator>,
    next: u64,
    started: Option<Instant>,
    /// The first event of this run.
    first: Option<u64>,
    rate: Option<u64>,
    topic: String,
}

impl GeneratorSource {
    /// A source for `spec`.
    pub fn new(spec: GeneratorSpec) -> Self {
        let rate = spec.rate.or(spec.wall_clock_rate());
        Self {
            generator: spec.generator(),
            topic: format!("generator:{}", spec.name),
            spec,
            next: 0,
            started: None,
            first: None,
            rate,
        }
    }
}

impl Source for GeneratorSource {
    fn poll_batch(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<SourceBatch>> {
        let started = *self.started.get_or_insert_with(Instant::now);
        // Pacing counts the events of this run (a restored source starts past 0).
        let first = *self.first.get_or_insert(self.next);
        let mut want = max_records as u64;
        if let Some(count) = self.spec.count {
            if self.next >= count {
                return Ok(None);
            }
            want = want.min(count - self.next);
        }
        if let Some(rate) = self.rate {
            // Pace: emit what the rate allows by the end of this poll, waiting for it.
            let until = started.elapsed() + max_wait;
            let allowed = (until.as_secs_f64() * rate as f64) as u64;
            want = want.min(allowed.saturating_sub(self.next - first));
            let due = Duration::from_secs_f64((self.next - first + want) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait.min(max_wait));
            }
        }
        let (batch, times) = self.generator.generate(self.next, want as usize);
        let meta = RecordBatchCollector::generated_meta(&self.topic, self.next as i64, &times);
        self.next += want;
        Ok(Some(SourceBatch {
            payload: Payload::Decoded(batch),
            meta,
        }))
    }

    /// Generated events are numbered: partition 0's position is the next event's number.
    fn seek(&mut self, positions: &crate::source::Positions) -> Result<()> {
        if let Some(&next) = positions.get(&0) {
            self.next = next.max(0) as u64;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.topic.clone()
    }

    fn is_bounded(&self) -> bool {
        self.spec.count.is_some()
    }

    fn assigned_partitions(&self) -> Option<Vec<i32>> {
        Some(vec![0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_options_and_reject_unknown_ones() {
        let spec = GeneratorSpec::parse("generator:trades?count=10&rate=5").unwrap();
        assert_eq!(spec.count, Some(10));
        assert_eq!(spec.rate, Some(5));
        assert!(GeneratorSpec::parse("generator:nope")
            .unwrap_err()
            .to_string()
            .contains("unknown generator 'nope'"));
        assert!(GeneratorSpec::parse("trades?speed=1")
            .unwrap_err()
            .to_string()
            .contains("unknown generator option 'speed'"));
    }

    #[test]
    fn a_bounded_generator_stops_after_count() {
        let mut source = GeneratorSource::new(GeneratorSpec::parse("trades?count=25").unwrap());
        let mut total = 0;
        while let Some(batch) = source.poll_batch(10, Duration::from_millis(10)).unwrap() {
            total += batch.len();
        }
        assert_eq!(total, 25);
    }
}
