//! `ORDER BY`: on a bounded input ([`SortMode::WholeInput`]) every row is held and the sorted
//! result emitted when the input ends (the watermark reaches [`Watermark::END`]); on a stream
//! ([`SortMode::EachEmission`]) the rows of each batch an upstream window emits — the windows
//! closing at one watermark — are sorted as they pass, since a stream's whole input never
//! ends.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::{StreamOperator, Watermark};
use crate::error::Result;

/// When sorted rows are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortMode {
    /// All rows at the end of the input (`execute`).
    WholeInput,
    /// Each batch as it arrives (the rows of the windows closed by one watermark).
    EachEmission,
}

/// One `ORDER BY` key: the expression and its direction.
pub struct SortKey {
    pub expr: Arc<dyn PhysicalExpr>,
    pub descending: bool,
    pub nulls_first: bool,
}

/// Sorts rows by [`SortKey`]s, keeping at most `fetch` of them when given (`ORDER BY … LIMIT`).
pub struct SortExec {
    keys: Vec<SortKey>,
    fetch: Option<usize>,
    mode: SortMode,
    schema: SchemaRef,
    /// Rows held until the input ends ([`SortMode::WholeInput`]).
    held: Vec<RecordBatch>,
}

impl SortExec {
    pub fn new(
        keys: Vec<SortKey>,
        fetch: Option<usize>,
        mode: SortMode,
        schema: SchemaRef,
    ) -> Self {
        Self {
            keys,
            fetch,
            mode,
            schema,
            held: Vec::new(),
        }
    }

    fn sort(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.num_rows() <= 1 {
            return Ok(batch.clone());
        }
        let columns = self
            .keys
            .iter()
            .map(|k| {
                Ok(SortColumn {
                    values: k.expr.evaluate(batch)?.into_array(batch.num_rows())?,
                    options: Some(arrow::compute::SortOptions {
                        descending: k.descending,
                        nulls_first: k.nulls_first,
                    }),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let indices = lexsort_to_indices(&columns, self.fetch)?;
        Ok(take_record_batch(batch, &indices)?)
    }

    /// Keeps the held rows small under a `fetch`: only the first `fetch` can be emitted.
    fn compact(&mut self) -> Result<()> {
        if let Some(fetch) = self.fetch {
            let rows: usize = self.held.iter().map(|b| b.num_rows()).sum();
            if rows > fetch.saturating_mul(2).max(8192) {
                let all = concat_batches(&self.schema, &self.held)?;
                self.held = vec![self.sort(&all)?];
            }
        }
        Ok(())
    }
}

impl StreamOperator for SortExec {
    fn name(&self) -> &'static str {
        "SortExec"
    }

    fn holds_input(&self) -> bool {
        self.mode == SortMode::WholeInput
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        match self.mode {
            SortMode::EachEmission => Ok(vec![self.sort(&batch)?]),
            SortMode::WholeInput => {
                self.held.push(batch);
                self.compact()?;
                Ok(Vec::new())
            }
        }
    }

    fn on_watermark(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        if watermark != Watermark::END || self.held.is_empty() {
            return Ok(Vec::new());
        }
        let all = concat_batches(&self.schema, &std::mem::take(&mut self.held))?;
        Ok(vec![self.sort(&all)?])
    }

    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(self.held.clone())
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<()> {
        self.held = state.to_vec();
        Ok(())
    }

    fn metrics(&self) -> super::OperatorMetrics {
        super::OperatorMetrics {
            state_rows: self.held.iter().map(|b| b.num_rows() as u64).sum(),
            state_bytes: self
                .held
                .iter()
                .map(|b| b.get_array_memory_size() as u64)
                .sum(),
            ..Default::default()
        }
    }
}
