//! Stateless operators: a WHERE predicate and a SELECT list, each a DataFusion physical
//! expression planned once and evaluated column-at-a-time on every batch.

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

impl StreamOperator for FilterExec {
    fn name(&self) -> &'static str {
        "FilterExec"
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let mask = self
            .predicate
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| VeloError::Execution(format!("WHERE {}: {e}", self.predicate)))?;
        if mask.data_type() != &DataType::Boolean {
            return Err(VeloError::Execution(format!(
                "WHERE must be a boolean condition, got {}",
                mask.data_type()
            )));
        }
        Ok(vec![filter_record_batch(&batch, mask.as_boolean())?])
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
        let rows = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .zip(self.schema.fields())
            .map(|(expr, field)| {
                expr.evaluate(&batch)
                    .and_then(|v| v.into_array(rows))
                    .map_err(|e| {
                        VeloError::Execution(format!("computing column '{}': {e}", field.name()))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(vec![RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?])
    }
}
