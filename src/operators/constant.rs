//! A query that reads no stream (`SELECT 1 AS x`, `SELECT * FROM (VALUES …)`): DataFusion
//! computes its rows when it is planned; this operator emits them once, when the (empty)
//! input ends.

use arrow::array::RecordBatch;

use super::{StreamOperator, Watermark};
use crate::error::Result;

/// Emits fixed rows at the end of the input.
pub struct ConstantExec {
    rows: Vec<RecordBatch>,
}

impl ConstantExec {
    pub fn new(rows: Vec<RecordBatch>) -> Self {
        Self { rows }
    }
}

impl StreamOperator for ConstantExec {
    fn name(&self) -> &'static str {
        "ConstantExec"
    }

    fn process(&mut self, _batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// It reads no stream: nothing to split across lanes.
    fn inputs(&self) -> usize {
        0
    }

    fn on_watermark(&mut self, watermark: Watermark) -> Result<Vec<RecordBatch>> {
        if watermark != Watermark::END {
            return Ok(Vec::new());
        }
        Ok(std::mem::take(&mut self.rows))
    }
}
