//! Stateless operators: a WHERE predicate and a SELECT list, each a DataFusion physical
//! expression planned once and evaluated column-at-a-time on every batch.
//!
//! When an expression fails on a batch (a cast of `'five'` to BIGINT, a division by zero), the
//! batch is evaluated again row by row: the rows that fail are left out and reported
//! ([`StreamOperator::drain_row_errors`]; the job counts them and dead-letters their records),
//! the others go on. A bad row costs one slow batch, never the job.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::{RowError, RowMapping, StreamOperator};
use crate::error::{Result, VeloError};

/// Keeps the rows for which the predicate is true (NULL counts as false, as in SQL).
pub struct FilterExec {
    predicate: Arc<dyn PhysicalExpr>,
    evaluation: Evaluation,
}

impl FilterExec {
    /// A filter on `predicate`, which must evaluate to a boolean.
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Self {
            predicate,
            evaluation: Evaluation::default(),
        }
    }
}

impl FilterExec {
    /// The rows of `batch` the predicate keeps, as a mask.
    fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray> {
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
        // NULL is false.
        let mask = mask.as_boolean();
        Ok(if mask.null_count() > 0 {
            arrow::compute::prep_null_mask_filter(mask)
        } else {
            mask.clone()
        })
    }
}

impl StreamOperator for FilterExec {
    fn name(&self) -> &'static str {
        "FilterExec"
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let mask = match self.mask(&batch) {
            Ok(mask) => mask,
            Err(first) => {
                // Row by row: a row that fails is left out and reported.
                let mut evaluation = std::mem::take(&mut self.evaluation);
                let evaluated = evaluation.row_by_row(&batch, "WHERE", first, |row| {
                    self.mask(row).map(|m| m.value(0))
                });
                self.evaluation = evaluation;
                BooleanArray::from(
                    evaluated
                        .into_iter()
                        .map(|v| v == Some(true))
                        .collect::<Vec<_>>(),
                )
            }
        };
        let out = filter_record_batch(&batch, &mask)?;
        self.evaluation.kept = Some(mask);
        Ok(vec![out])
    }

    fn drain_row_errors(&mut self) -> Vec<RowError> {
        std::mem::take(&mut self.evaluation.errors)
    }

    fn row_wise(&self) -> bool {
        true
    }

    fn row_mapping(&self) -> RowMapping {
        match &self.evaluation.kept {
            Some(mask) => RowMapping::Kept(mask.clone()),
            None => RowMapping::Lost,
        }
    }
}

/// Computes the SELECT list.
pub struct ProjectionExec {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    evaluation: Evaluation,
}

impl ProjectionExec {
    /// A projection producing `schema` from `exprs` (one per output column).
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Self {
            exprs,
            schema,
            evaluation: Evaluation::default(),
        }
    }
}

impl StreamOperator for ProjectionExec {
    fn name(&self) -> &'static str {
        "ProjectionExec"
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        match self.apply(&batch) {
            Ok(out) => {
                self.evaluation.kept = None;
                Ok(vec![out])
            }
            Err(first) => {
                let mut rows = Vec::new();
                let mut evaluation = std::mem::take(&mut self.evaluation);
                let evaluated = evaluation.row_by_row(&batch, "SELECT", first, |row| {
                    rows.push(self.apply(row)?);
                    Ok(())
                });
                self.evaluation = evaluation;
                let kept =
                    BooleanArray::from(evaluated.iter().map(|v| v.is_some()).collect::<Vec<_>>());
                self.evaluation.kept = Some(kept);
                if rows.is_empty() {
                    return Ok(vec![RecordBatch::new_empty(self.schema.clone())]);
                }
                Ok(vec![arrow::compute::concat_batches(&self.schema, &rows)?])
            }
        }
    }

    fn drain_row_errors(&mut self) -> Vec<RowError> {
        std::mem::take(&mut self.evaluation.errors)
    }

    fn row_wise(&self) -> bool {
        true
    }

    fn row_mapping(&self) -> RowMapping {
        match &self.evaluation.kept {
            Some(mask) => RowMapping::Kept(mask.clone()),
            None => RowMapping::Same,
        }
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

/// The row-by-row fallback of an operator whose expression failed on a batch, and what it
/// found.
#[derive(Default)]
struct Evaluation {
    /// Rows that failed since the last drain.
    errors: Vec<RowError>,
    /// The input rows the last output holds (`None`: all of them, for a projection; for a
    /// filter, always set).
    kept: Option<BooleanArray>,
}

impl Evaluation {
    /// Evaluates `f` on each row of `batch` alone; a row that fails is reported (with its
    /// reason and the clause) and gives `None`.
    fn row_by_row<T>(
        &mut self,
        batch: &RecordBatch,
        clause: &str,
        batch_error: VeloError,
        mut f: impl FnMut(&RecordBatch) -> Result<T>,
    ) -> Vec<Option<T>> {
        tracing::debug!("{clause} failed on a batch ({batch_error}); evaluating row by row");
        (0..batch.num_rows())
            .map(|row| {
                let one = batch.slice(row, 1);
                match f(&one) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        let why = match e {
                            VeloError::Execution(message) => message,
                            other => other.to_string(),
                        };
                        self.errors.push(RowError {
                            input_row: row,
                            row: one,
                            reason: format!("{clause} cannot be evaluated: {why}"),
                        });
                        None
                    }
                }
            })
            .collect()
    }
}
