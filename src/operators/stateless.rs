//! Stateless operators: a WHERE predicate and a SELECT list, each a DataFusion physical
//! expression planned once and evaluated column-at-a-time on every batch.
//!
//! When an expression fails on a batch (a cast of `'five'` to BIGINT, a division by zero), the
//! batch is evaluated again row by row: the rows that fail are dropped and logged, the others go
//! on. A bad row costs one slow batch, never the job.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::StreamOperator;
use crate::error::{Result, VeloError};

/// Keeps the rows for which the predicate is true (NULL counts as false, as in SQL).
pub struct FilterExec {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterExec {
    /// A filter on `predicate`, which must evaluate to a boolean.
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Self { predicate }
    }
}

impl FilterExec {
    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mask = self
            .predicate
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| VeloError::Execution(format!("WHERE {}: {e}", self.predicate)))?;
        if mask.data_type() != &DataType::Boolean {
            return Err(VeloError::Execution(format!(
                "WHERE must be a boolean condition, got {}",
                mask.data_type()
            )));
        }
        Ok(filter_record_batch(batch, mask.as_boolean())?)
    }
}

impl StreamOperator for FilterExec {
    fn name(&self) -> &'static str {
        "FilterExec"
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        row_by_row_on_error(batch, "WHERE", |b| self.apply(b))
    }
}

/// Computes the SELECT list.
pub struct ProjectionExec {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectionExec {
    /// A projection producing `schema` from `exprs` (one per output column).
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Self { exprs, schema }
    }
}

impl StreamOperator for ProjectionExec {
    fn name(&self) -> &'static str {
        "ProjectionExec"
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        row_by_row_on_error(batch, "SELECT", |b| self.apply(b))
    }
}

impl ProjectionExec {
    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .zip(self.schema.fields())
            .map(|(expr, field)| {
                expr.evaluate(batch)
                    .and_then(|v| v.into_array(rows))
                    .map_err(|e| {
                        VeloError::Execution(format!("computing column '{}': {e}", field.name()))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

/// Applies `f` to the batch; if it fails, applies it to each row alone, drops (and logs) the
/// rows that fail, and returns the rest, in order.
fn row_by_row_on_error(
    batch: RecordBatch,
    clause: &str,
    f: impl Fn(&RecordBatch) -> Result<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    match f(&batch) {
        Ok(out) => Ok(vec![out]),
        Err(first) if batch.num_rows() > 1 => {
            tracing::debug!("{clause} failed on a batch ({first}); evaluating row by row");
            let mut out = Vec::new();
            for row in 0..batch.num_rows() {
                match f(&batch.slice(row, 1)) {
                    Ok(b) => out.push(b),
                    Err(e) => tracing::warn!("dropped a row that {clause} cannot evaluate: {e}"),
                }
            }
            let schema = match out.first() {
                Some(b) => b.schema(),
                None => return Ok(Vec::new()),
            };
            Ok(vec![arrow::compute::concat_batches(&schema, &out)?])
        }
        Err(e) => {
            tracing::warn!("dropped a row that {clause} cannot evaluate: {e}");
            Ok(Vec::new())
        }
    }
}
