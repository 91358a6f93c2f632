//! Planning: SQL statement → DataFusion logical plan (optimised once) → a [`Pipeline`] of
//! streaming operators plus the layout of the input batches it expects.
//!
//! DataFusion resolves names, coerces types and optimises; this module walks the optimised
//! plan and turns each node into an operator, or refuses the query with a message that says
//! why a stream cannot run it. Streams are registered as tables that are never scanned by
//! DataFusion: the runtime feeds the pipeline with decoded batches instead.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::DataFusionError;
use datafusion::datasource::empty::EmptyTable;
use datafusion::execution::context::{SessionConfig, SessionContext, SessionState};
use datafusion::logical_expr::{FetchType, LogicalPlan, SkipType};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use velo_connectors::record::is_metadata_column;

use crate::catalog::{Catalog, StreamDef};
use crate::error::{Result, SqlLocation, VeloError};
use crate::operators::{FilterExec, LimitExec, Pipeline, ProjectionExec};

/// A DataFusion session configured for VeloStream, with its extra functions.
pub fn new_session() -> Result<SessionContext> {
    let mut config = SessionConfig::new();
    let options = config.options_mut();
    options.sql_parser.map_string_types_to_utf8view = false;
    options.sql_parser.collect_spans = true;
    // `1000.01` in SQL is an exact DECIMAL, never an f64.
    options.sql_parser.parse_float_as_decimal = true;
    options.execution.target_partitions = 1;
    let mut ctx = SessionContext::new_with_config(config);
    velo_udfs::register_all(&mut ctx)?;
    Ok(ctx)
}

/// Names of the tables a query reads (bare table names, in order of appearance, unique).
pub fn referenced_tables(ctx: &SessionContext, statement: &Statement) -> Result<Vec<String>> {
    let refs = ctx
        .state()
        .resolve_table_references(&DFStatement::Statement(Box::new(statement.clone())))
        .map_err(plan_error)?;
    let mut names: Vec<String> = Vec::new();
    for r in refs {
        let name = r.table().to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// A column of the batches fed to the pipeline: from the decoded payload or from the record
/// metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanColumn {
    Payload(String),
    Metadata(String),
}

/// What the pipeline expects from the input: which stream, and which columns in which order.
#[derive(Debug, Clone)]
pub struct ScanLayout {
    pub stream: StreamDef,
    pub schema: SchemaRef,
    pub columns: Vec<ScanColumn>,
}

impl ScanLayout {
    /// The payload columns the query needs (what the decoder must produce). When the query
    /// needs none, the stream's whole payload schema, so bad records are still found.
    pub fn payload_schema(&self) -> Result<SchemaRef> {
        let full = self.stream.schema.clone().ok_or_else(|| {
            VeloError::Usage(format!("stream '{}' has no schema", self.stream.name))
        })?;
        let needed: Vec<_> = self
            .columns
            .iter()
            .filter_map(|c| match c {
                ScanColumn::Payload(name) => full.field_with_name(name).ok().cloned(),
                ScanColumn::Metadata(_) => None,
            })
            .collect();
        if needed.is_empty() {
            return Ok(full);
        }
        Ok(Arc::new(Schema::new(needed)))
    }
}

/// A query ready to run.
pub struct PlannedQuery {
    pub scan: ScanLayout,
    pub pipeline: Pipeline,
    pub output_schema: SchemaRef,
    /// The optimised logical plan, for `--explain` and logs.
    pub logical_plan: String,
}

/// Plans `statement` against the streams of `catalog` (each must have a schema).
/// `extra_limit` (from `--limit`) caps the number of result rows.
pub async fn plan_query(
    ctx: &SessionContext,
    catalog: &Catalog,
    statement: &Statement,
    extra_limit: Option<u64>,
) -> Result<PlannedQuery> {
    for name in referenced_tables(ctx, statement)? {
        let stream = catalog
            .get(&name)
            .ok_or_else(|| VeloError::Usage(format!("stream '{name}' is not in the catalog")))?;
        if !ctx.table_exist(name.as_str())? {
            ctx.register_table(
                name.as_str(),
                Arc::new(EmptyTable::new(stream.table_schema()?)),
            )?;
        }
    }
    let mut statement = statement.clone();
    crate::sql::wildcard::expand_wildcards(&mut statement, &|name| {
        let schema = catalog.get(name)?.schema.clone()?;
        Some(schema.fields().iter().map(|f| f.name().clone()).collect())
    });
    let state = ctx.state();
    let plan = state
        .statement_to_plan(DFStatement::Statement(Box::new(statement)))
        .await
        .map_err(plan_error)?;
    let plan = state.optimize(&plan).map_err(plan_error)?;
    let mut pipeline = Pipeline::default();
    let mut scan = None;
    lower(&plan, &state, catalog, &mut pipeline, &mut scan)?;
    let scan = scan.ok_or_else(|| {
        VeloError::Unsupported(
            "the query reads no stream (or its WHERE clause is always false)".into(),
        )
    })?;
    if let Some(limit) = extra_limit {
        pipeline.push(Box::new(LimitExec::new(0, Some(limit))));
    }
    let logical_plan = plan.display_indent().to_string();
    Ok(PlannedQuery {
        scan,
        pipeline,
        output_schema: Arc::new(plan.schema().as_arrow().clone()),
        logical_plan,
    })
}

fn lower(
    plan: &LogicalPlan,
    state: &SessionState,
    catalog: &Catalog,
    pipeline: &mut Pipeline,
    scan: &mut Option<ScanLayout>,
) -> Result<()> {
    match plan {
        LogicalPlan::TableScan(table_scan) => {
            if scan.is_some() {
                return Err(VeloError::Unsupported(
                    "the query reads more than one stream; joins are not supported yet".into(),
                ));
            }
            let name = table_scan.table_name.table();
            let stream = catalog.get(name).ok_or_else(|| {
                VeloError::Usage(format!("stream '{name}' is not in the catalog"))
            })?;
            let schema: SchemaRef = Arc::new(table_scan.projected_schema.as_arrow().clone());
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    if is_metadata_column(f.name()) {
                        ScanColumn::Metadata(f.name().clone())
                    } else {
                        ScanColumn::Payload(f.name().clone())
                    }
                })
                .collect();
            *scan = Some(ScanLayout {
                stream: stream.clone(),
                schema,
                columns,
            });
            for filter in &table_scan.filters {
                let predicate = state
                    .create_physical_expr(filter.clone(), &table_scan.projected_schema)
                    .map_err(plan_error)?;
                pipeline.push(Box::new(FilterExec::new(predicate)));
            }
            if let Some(fetch) = table_scan.fetch {
                pipeline.push(Box::new(LimitExec::new(0, Some(fetch as u64))));
            }
            Ok(())
        }
        LogicalPlan::Filter(filter) => {
            lower(&filter.input, state, catalog, pipeline, scan)?;
            let predicate = state
                .create_physical_expr(filter.predicate.clone(), filter.input.schema())
                .map_err(plan_error)?;
            pipeline.push(Box::new(FilterExec::new(predicate)));
            Ok(())
        }
        LogicalPlan::Projection(projection) => {
            lower(&projection.input, state, catalog, pipeline, scan)?;
            let exprs = projection
                .expr
                .iter()
                .map(|e| state.create_physical_expr(e.clone(), projection.input.schema()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(plan_error)?;
            pipeline.push(Box::new(ProjectionExec::new(
                exprs,
                Arc::new(projection.schema.as_arrow().clone()),
            )));
            Ok(())
        }
        LogicalPlan::Limit(limit) => {
            lower(&limit.input, state, catalog, pipeline, scan)?;
            let skip = match limit.get_skip_type().map_err(plan_error)? {
                SkipType::Literal(n) => n as u64,
                SkipType::UnsupportedExpr => {
                    return Err(VeloError::Unsupported(
                        "OFFSET must be a literal number".into(),
                    ))
                }
            };
            let fetch = match limit.get_fetch_type().map_err(plan_error)? {
                FetchType::Literal(n) => n.map(|n| n as u64),
                FetchType::UnsupportedExpr => {
                    return Err(VeloError::Unsupported(
                        "LIMIT must be a literal number".into(),
                    ))
                }
            };
            pipeline.push(Box::new(LimitExec::new(skip, fetch)));
            Ok(())
        }
        LogicalPlan::SubqueryAlias(alias) => lower(&alias.input, state, catalog, pipeline, scan),
        LogicalPlan::Aggregate(_) => Err(VeloError::Unsupported(
            "GROUP BY and aggregate functions are not supported on a stream yet".into(),
        )),
        LogicalPlan::Sort(_) => Err(VeloError::Unsupported(
            "ORDER BY needs the whole input, which a stream never completes; remove ORDER BY"
                .into(),
        )),
        LogicalPlan::Join(_) => Err(VeloError::Unsupported("joins are not supported yet".into())),
        LogicalPlan::Distinct(_) => Err(VeloError::Unsupported(
            "SELECT DISTINCT is not supported on a stream yet".into(),
        )),
        LogicalPlan::Window(_) => Err(VeloError::Unsupported(
            "OVER windows are not supported on a stream yet".into(),
        )),
        other => Err(VeloError::Unsupported(format!(
            "'{}' is not supported on a stream",
            other.display()
        ))),
    }
}

/// A DataFusion planning error as a SQL error, with the location DataFusion recorded.
pub fn plan_error(e: DataFusionError) -> VeloError {
    let location = e.diagnostic().and_then(|d| d.span).and_then(|s| {
        (s.start.line > 0).then_some(SqlLocation {
            line: s.start.line,
            column: s.start.column,
        })
    });
    let mut message = e.strip_backtrace();
    for prefix in ["Error during planning: ", "Schema error: ", "SQL error: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            message = rest.to_string();
        }
    }
    VeloError::sql(message, location)
}
