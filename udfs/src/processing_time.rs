//! `timestamp()`: the processing time — when the engine evaluates the row's micro-batch — as a
//! `TIMESTAMP` (milliseconds, UTC). Unlike DataFusion's `now()`, which is fixed when a query is
//! planned, it is read again for every batch of a continuous query (all rows of one batch share
//! it).

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The `timestamp` UDF.
pub fn processing_time_udf() -> ScalarUDF {
    ScalarUDF::from(ProcessingTime {
        signature: Signature::nullary(Volatility::Volatile),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ProcessingTime {
    signature: Signature,
}

impl ScalarUDFImpl for ProcessingTime {
    fn name(&self) -> &str {
        "timestamp"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.is_empty() {
            return plan_err!("timestamp() takes no arguments (it is the processing time)");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
            Some(now),
            None,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[test]
    fn timestamp_is_the_time_the_query_is_evaluated() {
        let ctx = SessionContext::new();
        ctx.register_udf(processing_time_udf());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let millis = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        };
        let before = millis();
        let batches = rt.block_on(async {
            ctx.sql("SELECT timestamp() AS t")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap()
        });
        let after = millis();
        let t = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .unwrap()
            .value(0);
        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
    }
}
