//! SQL functions VeloStream adds to DataFusion's built-ins.
//!
//! Owns the functions' semantics and their registration ([`register_all`]); the engine calls it
//! once per session. Today: `JSON_VALUE(json, path)`.

pub mod json_value;

use datafusion::execution::FunctionRegistry;

/// Registers every VeloStream function with `registry` (a `SessionContext` or `SessionState`).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> datafusion::error::Result<()> {
    registry.register_udf(std::sync::Arc::new(json_value::json_value_udf()))?;
    Ok(())
}
