//! Event-time progress: the watermark.
//!
//! The watermark is `max event time seen − allowed out-of-orderness`, computed per source
//! partition and taken as the minimum over the source's partitions, so a fast partition cannot
//! close windows a slow one still feeds. A partition the source reads but that has sent nothing
//! yet holds the watermark where it is. A partition silent for longer than the idle timeout stops
//! holding the watermark back. The watermark never goes backwards.
//!
//! A query reading several streams (a join) has one tracker over all their partitions, each
//! input with its own out-of-orderness: the watermark is the minimum over every input, as an
//! operator with two inputs takes the minimum of their watermarks in Flink.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, Int32Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};

use crate::error::Result;

/// Stands for the partitions of an input that has neither partitions nor records yet.
const UNKNOWN_PARTITIONS: i32 = -1;

struct PartitionClock {
    /// Highest event time seen; `None` until the partition sends a timed record.
    max_time: Option<i64>,
    last_seen: Instant,
}

/// What a checkpoint keeps of a [`WatermarkTracker`]: the watermark and each partition's
/// highest event time (idle timers start again on restore).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WatermarkState {
    pub current: Option<i64>,
    /// (input, partition, highest event time seen).
    pub partitions: Vec<(usize, i32, Option<i64>)>,
}

/// Tracks the watermark of a query's inputs.
pub struct WatermarkTracker {
    /// Allowed out-of-orderness of each input.
    delays_ms: Vec<i64>,
    idle_timeout: Duration,
    /// Clocks by (input, partition).
    partitions: HashMap<(usize, i32), PartitionClock>,
    current: Option<i64>,
}

impl WatermarkTracker {
    /// A tracker allowing `delay_ms` of out-of-orderness and ignoring partitions idle for
    /// `idle_timeout`.
    pub fn new(delay_ms: i64, idle_timeout: Duration) -> Self {
        Self::with_inputs(vec![delay_ms], idle_timeout)
    }

    /// A tracker over several inputs, input `i` allowing `delays_ms[i]` of out-of-orderness.
    /// With more than one input, an input holds the watermark until it has partitions or
    /// records (or goes idle), so one input's early records cannot close what the other still
    /// feeds.
    pub fn with_inputs(delays_ms: Vec<i64>, idle_timeout: Duration) -> Self {
        let mut partitions = HashMap::new();
        if delays_ms.len() > 1 {
            let now = Instant::now();
            for input in 0..delays_ms.len() {
                partitions.insert(
                    (input, UNKNOWN_PARTITIONS),
                    PartitionClock {
                        max_time: None,
                        last_seen: now,
                    },
                );
            }
        }
        Self {
            delays_ms,
            idle_timeout,
            partitions,
            current: None,
        }
    }

    /// Records the event times of a batch, row `i` from partition `partitions[i]`.
    pub fn observe(&mut self, partitions: &Int32Array, times: &ArrayRef) -> Result<()> {
        self.observe_input(0, partitions, times)
    }

    /// [`WatermarkTracker::observe`] for input `input`.
    pub fn observe_input(
        &mut self,
        input: usize,
        partitions: &Int32Array,
        times: &ArrayRef,
    ) -> Result<()> {
        self.partitions.remove(&(input, UNKNOWN_PARTITIONS));
        let times = cast(times, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let times = times.as_primitive::<TimestampMillisecondType>();
        let now = Instant::now();
        for i in 0..times.len() {
            if times.is_null(i) {
                continue;
            }
            let clock = self
                .partitions
                .entry((input, partitions.value(i)))
                .or_insert(PartitionClock {
                    max_time: None,
                    last_seen: now,
                });
            let time = times.value(i);
            clock.max_time = Some(clock.max_time.map_or(time, |max| max.max(time)));
            clock.last_seen = now;
        }
        Ok(())
    }

    /// Declares the partitions the source reads now: new ones start holding the watermark
    /// (until they send data or go idle), revoked ones stop.
    pub fn set_partitions(&mut self, assigned: &[i32]) {
        self.set_input_partitions(0, assigned)
    }

    /// [`WatermarkTracker::set_partitions`] for input `input`.
    pub fn set_input_partitions(&mut self, input: usize, assigned: &[i32]) {
        let now = Instant::now();
        if assigned.is_empty() {
            // A consumer still joining its group (at start, after a restore, in a rebalance):
            // the input keeps holding the watermark where its partitions held it, or, when it
            // has none yet, with a placeholder (so another input cannot close what it feeds).
            if self.delays_ms.len() > 1 && !self.partitions.keys().any(|(i, _)| *i == input) {
                self.partitions.insert(
                    (input, UNKNOWN_PARTITIONS),
                    PartitionClock {
                        max_time: None,
                        last_seen: now,
                    },
                );
            }
            return;
        }
        self.partitions
            .retain(|(i, p), _| *i != input || assigned.contains(p));
        for &p in assigned {
            self.partitions.entry((input, p)).or_insert(PartitionClock {
                max_time: None,
                last_seen: now,
            });
        }
    }

    /// The tracker's state for a checkpoint.
    pub fn snapshot(&self) -> WatermarkState {
        let mut partitions: Vec<_> = self
            .partitions
            .iter()
            .map(|(&(input, p), c)| (input, p, c.max_time))
            .collect();
        partitions.sort_unstable();
        WatermarkState {
            current: self.current,
            partitions,
        }
    }

    /// Restores a [`WatermarkTracker::snapshot`]: the watermark never goes back behind it, and
    /// each partition keeps its highest event time (as just seen, for the idle timeout).
    pub fn restore(&mut self, state: &WatermarkState) {
        let now = Instant::now();
        self.current = state.current;
        self.partitions.clear();
        for &(input, p, max_time) in &state.partitions {
            self.partitions.insert(
                (input, p),
                PartitionClock {
                    max_time,
                    last_seen: now,
                },
            );
        }
    }

    /// The watermark as last computed by [`WatermarkTracker::current`].
    pub fn last(&self) -> Option<i64> {
        self.current
    }

    /// The watermark now, once every active partition has data; never lower than before.
    pub fn current(&mut self) -> Option<i64> {
        let now = Instant::now();
        let mut active = self
            .partitions
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_seen) < self.idle_timeout)
            .map(|((input, _), c)| {
                let delay = self.delays_ms.get(*input).copied().unwrap_or(0);
                c.max_time.map(|t| t.saturating_sub(delay))
            })
            .peekable();
        let min = if active.peek().is_none() {
            None
        } else {
            // A partition that has sent nothing yet (`None`) makes the minimum `None`.
            active.try_fold(i64::MAX, |min, t| t.map(|t| min.min(t)))
        };
        if let Some(candidate) = min {
            self.current = Some(self.current.map_or(candidate, |c| c.max(candidate)));
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMillisecondArray;
    use std::sync::Arc;

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let mut w = WatermarkTracker::new(5, Duration::from_secs(60));
        assert_eq!(w.current(), None);
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![100, 50, 200]));
        w.observe(&Int32Array::from(vec![0, 1, 0]), &times).unwrap();
        assert_eq!(w.current(), Some(45));
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![10]));
        w.observe(&Int32Array::from(vec![1]), &times).unwrap();
        assert_eq!(w.current(), Some(45), "never backwards");
    }

    #[test]
    fn an_idle_partition_stops_holding_the_watermark_back() {
        let mut w = WatermarkTracker::new(0, Duration::from_millis(20));
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1000, 10]));
        w.observe(&Int32Array::from(vec![0, 1]), &times).unwrap();
        assert_eq!(w.current(), Some(10));
        std::thread::sleep(Duration::from_millis(30));
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![2000]));
        w.observe(&Int32Array::from(vec![0]), &times).unwrap();
        assert_eq!(w.current(), Some(2000));
    }

    #[test]
    fn a_partition_that_has_sent_nothing_yet_holds_the_watermark() {
        let mut w = WatermarkTracker::new(0, Duration::from_millis(50));
        w.set_partitions(&[0, 1]);
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1000]));
        w.observe(&Int32Array::from(vec![0]), &times).unwrap();
        assert_eq!(w.current(), None, "partition 1 has sent nothing");
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![400]));
        w.observe(&Int32Array::from(vec![1]), &times).unwrap();
        assert_eq!(w.current(), Some(400));
        w.set_partitions(&[0]);
        assert_eq!(w.current(), Some(1000), "a revoked partition stops holding");
    }

    #[test]
    fn an_input_holds_the_watermark_until_it_has_partitions_or_records() {
        let mut w = WatermarkTracker::with_inputs(vec![0, 100], Duration::from_secs(60));
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1000]));
        w.observe_input(0, &Int32Array::from(vec![0]), &times)
            .unwrap();
        assert_eq!(w.current(), None, "input 1 has said nothing");
        w.set_input_partitions(1, &[0, 1]);
        assert_eq!(w.current(), None, "input 1's partitions have sent nothing");
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![500, 2000]));
        w.observe_input(1, &Int32Array::from(vec![0, 1]), &times)
            .unwrap();
        assert_eq!(w.current(), Some(400), "input 1's own delay");
    }

    #[test]
    fn a_restored_input_holds_the_watermark_until_its_consumer_is_assigned() {
        let mut w = WatermarkTracker::with_inputs(vec![0, 0], Duration::from_secs(60));
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1000]));
        w.observe_input(0, &Int32Array::from(vec![0]), &times)
            .unwrap();
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![500]));
        w.observe_input(1, &Int32Array::from(vec![0]), &times)
            .unwrap();
        assert_eq!(w.current(), Some(500));
        let mut restored = WatermarkTracker::with_inputs(vec![0, 0], Duration::from_secs(60));
        restored.restore(&w.snapshot());
        // Input 0's consumer has its partitions again, input 1's is still joining its group.
        restored.set_input_partitions(0, &[0]);
        restored.set_input_partitions(1, &[]);
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![9000]));
        restored
            .observe_input(0, &Int32Array::from(vec![0]), &times)
            .unwrap();
        assert_eq!(
            restored.current(),
            Some(500),
            "input 1 still holds it at 500"
        );
    }

    #[test]
    fn a_silent_partition_stops_holding_once_idle() {
        let mut w = WatermarkTracker::new(0, Duration::from_millis(20));
        w.set_partitions(&[0, 1]);
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1000]));
        w.observe(&Int32Array::from(vec![0]), &times).unwrap();
        assert_eq!(w.current(), None);
        std::thread::sleep(Duration::from_millis(30));
        w.observe(&Int32Array::from(vec![0]), &times).unwrap();
        assert_eq!(w.current(), Some(1000));
    }
}
