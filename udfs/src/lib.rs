//! SQL functions VeloStream adds to DataFusion's built-ins.
//!
//! Owns the functions' semantics and their registration ([`register_all`]); the engine calls it
//! once per session: `JSON_VALUE(json, path)`, `timestamp()` (the processing time) and the
//! window functions `TUMBLE`, `HOP`, `SESSION`.

pub mod json_value;
pub mod processing_time;
pub mod window;

use datafusion::execution::FunctionRegistry;

/// Registers every VeloStream function with `registry` (a `SessionContext` or `SessionState`).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> datafusion::error::Result<()> {
    registry.register_udf(std::sync::Arc::new(json_value::json_value_udf()))?;
    registry.register_udf(std::sync::Arc::new(processing_time::processing_time_udf()))?;
    for f in [
        window::WindowFunction::Tumble,
        window::WindowFunction::Hop,
        window::WindowFunction::Session,
    ] {
        registry.register_udf(std::sync::Arc::new(window::window_udf(f)))?;
    }
    Ok(())
}
