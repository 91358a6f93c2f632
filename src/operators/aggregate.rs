//! The aggregate functions of a windowed GROUP BY, as DataFusion plans them: each one's
//! argument expressions (plus its ORDER BY expressions, for order-sensitive aggregates such as
//! FIRST_VALUE), its FILTER, and factories for its accumulators. Shared by the window
//! operators.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::logical_expr::{Accumulator, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

use crate::error::{Result, VeloError};

/// One aggregate of the SELECT list.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    pub function: Arc<AggregateFunctionExpr>,
    /// Argument expressions, then ORDER BY expressions.
    pub inputs: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl AggregateSpec {
    /// An aggregate from DataFusion's physical planning.
    pub fn new(
        function: Arc<AggregateFunctionExpr>,
        filter: Option<Arc<dyn PhysicalExpr>>,
    ) -> Self {
        let mut inputs = function.expressions();
        inputs.extend(function.order_bys().iter().map(|o| Arc::clone(&o.expr)));
        Self {
            function,
            inputs,
            filter,
        }
    }

    /// An accumulator for many groups (DataFusion's specialised one where there is one).
    pub fn groups_accumulator(&self) -> Result<Box<dyn GroupsAccumulator>> {
        if self.function.groups_accumulator_supported() {
            return Ok(self.function.create_groups_accumulator()?);
        }
        let function = Arc::clone(&self.function);
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            function.create_accumulator()
        })))
    }

    /// An accumulator for one group.
    pub fn accumulator(&self) -> Result<Box<dyn Accumulator>> {
        Ok(self.function.create_accumulator()?)
    }

    /// The aggregate's input columns and filter for `batch`.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<(Vec<ArrayRef>, Option<BooleanArray>)> {
        let rows = batch.num_rows();
        let values = self
            .inputs
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(rows)?))
            .collect::<Result<Vec<_>>>()
            .map_err(|e: VeloError| {
                VeloError::Execution(format!("arguments of {}: {e}", self.function.name()))
            })?;
        let filter = match &self.filter {
            Some(f) => Some(f.evaluate(batch)?.into_array(rows)?.as_boolean().clone()),
            None => None,
        };
        Ok((values, filter))
    }
}
