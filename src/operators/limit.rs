//! `LIMIT n [OFFSET m]` on a stream: passes rows until `n` have gone by, then finishes the
//! query. Its state is the number of rows seen, so a restored job does not emit them again.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};

use super::StreamOperator;
use crate::error::{Result, VeloError};

/// Skips `skip` rows, then passes at most `fetch` rows.
pub struct LimitExec {
    skip: u64,
    fetch: Option<u64>,
    seen: u64,
}

impl LimitExec {
    /// A limit skipping `skip` rows and passing `fetch` (all when `None`).
    pub fn new(skip: u64, fetch: Option<u64>) -> Self {
        Self {
            skip,
            fetch,
            seen: 0,
        }
    }

    fn end(&self) -> u64 {
        self.fetch.map_or(u64::MAX, |f| self.skip.saturating_add(f))
    }
}

impl StreamOperator for LimitExec {
    fn name(&self) -> &'static str {
        "LimitExec"
    }

    fn holds_input(&self) -> bool {
        true
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows() as u64;
        let start = self.seen;
        self.seen += rows;
        let from = self.skip.saturating_sub(start).min(rows);
        let to = self.end().saturating_sub(start).min(rows);
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(vec![batch.slice(from as usize, (to - from) as usize)])
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "seen",
            DataType::Int64,
            false,
        )]));
        Ok(vec![RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![self.seen as i64]))],
        )?])
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<()> {
        let seen = state
            .first()
            .filter(|b| b.num_rows() == 1 && b.num_columns() == 1)
            .and_then(|b| {
                b.column(0)
                    .as_primitive_opt::<Int64Type>()
                    .map(|a| a.value(0))
            })
            .ok_or_else(|| {
                VeloError::Execution("LimitExec state must be one row with 'seen'".into())
            })?;
        self.seen = seen as u64;
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.seen >= self.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;

    fn batch(values: std::ops::Range<i32>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from_iter_values(values))]).unwrap()
    }

    fn values(batches: &[RecordBatch]) -> Vec<i32> {
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn limit_with_offset_spans_batches() {
        let mut limit = LimitExec::new(2, Some(3));
        let mut out = limit.process(batch(0..3)).unwrap();
        assert!(!limit.is_finished());
        out.extend(limit.process(batch(3..10)).unwrap());
        assert_eq!(values(&out), vec![2, 3, 4]);
        assert!(limit.is_finished());
    }

    #[test]
    fn a_restored_limit_continues_where_the_snapshot_was_taken() {
        let mut limit = LimitExec::new(0, Some(5));
        let first = limit.process(batch(0..3)).unwrap();
        let state = limit.snapshot().unwrap();
        let mut restored = LimitExec::new(0, Some(5));
        restored.restore(&state).unwrap();
        let rest = restored.process(batch(3..10)).unwrap();
        let mut uninterrupted = LimitExec::new(0, Some(5));
        let mut expected = uninterrupted.process(batch(0..3)).unwrap();
        expected.extend(uninterrupted.process(batch(3..10)).unwrap());
        let mut got = first;
        got.extend(rest);
        assert_eq!(values(&got), values(&expected));
        assert_eq!(values(&got), vec![0, 1, 2, 3, 4]);
    }
}
