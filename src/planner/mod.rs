//! Planning: SQL statement → DataFusion logical plan (optimised once) → a [`Pipeline`] of
//! streaming operators plus the layout of the input batches it expects.
//!
//! DataFusion resolves names, coerces types and optimises; this module walks the optimised
//! plan and turns each node into an operator, or refuses the query with a message that says
//! why a stream cannot run it. Streams are registered as tables that are never scanned by
//! DataFusion: the runtime feeds the pipeline with decoded batches instead.

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::DataFusionError;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::MemTable;
use datafusion::execution::context::{SessionConfig, SessionContext, SessionState};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Aggregate, Expr, ExprSchemable, FetchType, JoinType, LogicalPlan, SkipType, SortExpr, Window,
    WindowFrame, WindowFrameBound, WindowFrameUnits,
};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_planner::create_window_expr;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use velo_connectors::record::is_metadata_column;
use velo_udfs::window::{interval_millis, WindowFunction};

use crate::catalog::{Catalog, StreamDef};
use crate::error::{Result, SqlLocation, VeloError};
use crate::operators::{
    AggregateSpec, ConstantExec, FilterExec, FixedWindows, FrameNeeds, Grouping, LimitExec,
    LookupJoinExec, LookupKind, OverFunction, OverWindowExec, Pipeline, ProjectionExec,
    SessionWindowExec, SlidingAggregate, SlidingFrame, SlidingKind, SortExec, SortKey, SortMode,
    StreamOperator, StreamSide, WindowAggregateExec,
};
use crate::sql::window::{apply_window, EmitMode, WindowClause, WindowKind};

mod stream_join;
mod window_columns;

/// A DataFusion session configured for VeloStream, with its extra functions.
pub fn new_session() -> Result<SessionContext> {
    new_session_with_memory_limit(None)
}

/// [`new_session`] whose DataFusion memory pool holds at most `limit` bytes (what DataFusion
/// itself runs — e.g. loading a join's table side — fails cleanly past it).
pub fn new_session_with_memory_limit(limit: Option<u64>) -> Result<SessionContext> {
    let mut config = SessionConfig::new();
    let options = config.options_mut();
    options.sql_parser.map_string_types_to_utf8view = false;
    options.sql_parser.collect_spans = true;
    // `1000.01` in SQL is an exact DECIMAL, never an f64.
    options.sql_parser.parse_float_as_decimal = true;
    options.execution.target_partitions = 1;
    let mut ctx = match limit {
        Some(bytes) => {
            let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
                .with_memory_limit(bytes as usize, 1.0)
                .build_arc()?;
            SessionContext::new_with_config_rt(config, runtime)
        }
        None => SessionContext::new_with_config(config),
    };
    // This rule turns an INNER join whose right columns are unused above it into a semi
    // join (Nexmark q5 joins with the window's maximum only to filter). A join of streams
    // runs INNER, LEFT, RIGHT and FULL joins; the INNER join it was gives the same rows.
    ctx.remove_optimizer_rule("eliminate_join");
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
    /// The column (of `schema`) whose event time drives the watermark, when the query uses
    /// event time on this input.
    pub event_time: Option<String>,
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
    /// The inputs, in the order of the pipeline's input numbers (one per stream read).
    pub scans: Vec<ScanLayout>,
    pub pipeline: Pipeline,
    pub output_schema: SchemaRef,
    /// The optimised logical plan, for `--explain` and logs.
    pub logical_plan: String,
    /// Output columns that are GROUP BY keys of an updating aggregate (the natural message key
    /// of its changes).
    pub group_key_columns: Vec<String>,
    /// Tables whose topic updates the runtime must feed to the pipeline.
    pub table_feeds: Vec<TableFeed>,
}

/// What to plan: the query, its window clause and emit mode (from [`crate::sql::Script`]).
/// (`--limit` is the runner's: it caps a run, not the query.)
#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    pub statement: Option<Statement>,
    pub window: Option<WindowClause>,
    pub emit: Option<EmitMode>,
    /// `JOIN … WITHIN <duration>`.
    pub within: Option<crate::sql::within::JoinWithin>,
    /// True when the input ends by itself (`execute`): a GROUP BY without a window then gives
    /// its final rows at the end instead of a stream of changes.
    pub bounded: bool,
    /// Lets a join of two streams without a window or a time bound run as an updating join
    /// that keeps each row this many milliseconds (`--state-ttl`).
    pub state_ttl_ms: Option<i64>,
    /// The query's start time (`now()`), when given: copies of one query planned for several
    /// worker lanes must agree on it. `None`: the time of planning.
    pub start_time: Option<chrono::DateTime<chrono::Utc>>,
    /// A copy of the query planned for a further worker lane: its lookup joins' tables are
    /// left empty (not computed again), for the copy shares the first lane's
    /// ([`crate::operators::Pipeline::share_with`]). Set by the lanes' planning only.
    pub(crate) lane_copy: bool,
}

impl QueryRequest {
    /// The query of a parsed script.
    pub fn from_script(script: &crate::sql::Script) -> Self {
        Self {
            statement: script.query.clone(),
            window: script.window.clone(),
            emit: script.emit,
            within: script.within,
            bounded: true,
            state_ttl_ms: None,
            start_time: None,
            lane_copy: false,
        }
    }
}

/// Plans a query against the streams of `catalog` (each must have a schema).
pub async fn plan_query(
    ctx: &SessionContext,
    catalog: &Catalog,
    request: &QueryRequest,
) -> Result<PlannedQuery> {
    let statement = request
        .statement
        .as_ref()
        .ok_or_else(|| VeloError::sql("the text holds no SELECT query", None))?;
    let tables = referenced_tables(ctx, statement)?;
    for name in &tables {
        let name = name.clone();
        let stream = catalog
            .get(&name)
            .ok_or_else(|| VeloError::Usage(format!("stream '{name}' is not in the catalog")))?;
        if !ctx.table_exist(name.as_str())? {
            let provider: Arc<dyn datafusion::catalog::TableProvider> =
                match (&stream.rows, stream.is_table) {
                    (Some(rows), true) => Arc::new(MemTable::try_new(
                        stream.table_schema()?,
                        vec![rows.as_ref().clone()],
                    )?),
                    _ => Arc::new(EmptyTable::new(stream.table_schema()?)),
                };
            ctx.register_table(name.as_str(), provider)?;
        }
    }
    let mut statement = statement.clone();
    let default_time = || {
        tables
            .first()
            .and_then(|t| catalog.get(t))
            .and_then(|s| s.event_time.clone())
            .unwrap_or_else(|| velo_connectors::record::TIMESTAMP_COLUMN.to_string())
    };
    let event_time = apply_window(&mut statement, request.window.as_ref(), &default_time)?;
    if let Some(within) = &request.within {
        crate::sql::within::apply_within(&mut statement, within, &|stream| {
            catalog
                .get(stream)
                .and_then(|s| s.event_time.clone())
                .unwrap_or_else(|| velo_connectors::record::TIMESTAMP_COLUMN.to_string())
        })?;
    }
    crate::sql::wildcard::expand_wildcards(&mut statement, &|name| {
        let schema = catalog.get(name)?.schema.clone()?;
        Some(schema.fields().iter().map(|f| f.name().clone()).collect())
    });
    let mut state = ctx.state();
    if let Some(start) = request.start_time {
        state.execution_props_mut().query_execution_start_time = Some(start);
    }
    let plan = loop {
        match state
            .statement_to_plan(DFStatement::Statement(Box::new(statement.clone())))
            .await
        {
            Ok(plan) => break plan,
            Err(e) => match missing_column(&e) {
                Some(name) if crate::sql::compat::unquote_as_string(&mut statement, &name) => {
                    tracing::warn!(
                        "\"{name}\" names no column: read as the string '{name}' (double quotes \
                         name a column, single quotes make a string)"
                    );
                }
                _ => return Err(plan_error(e)),
            },
        }
    };
    let plan = state.optimize(&plan).map_err(plan_error)?;
    if !reads_any_table(&plan) {
        // No stream, no table (`SELECT 1 AS x`): a constant query, answered now.
        let rows = ctx
            .execute_logical_plan(plan.clone())
            .await
            .map_err(plan_error)?
            .collect()
            .await?;
        let mut pipeline = Pipeline::default();
        pipeline.push(Box::new(ConstantExec::new(rows)));
        return Ok(PlannedQuery {
            scans: Vec::new(),
            pipeline,
            output_schema: Arc::new(plan.schema().as_arrow().clone()),
            logical_plan: plan.display_indent().to_string(),
            group_key_columns: Vec::new(),
            table_feeds: Vec::new(),
        });
    }
    // The table side of each stream–table join is a finite query: DataFusion runs it now.
    let mut lookups = Lookups::new();
    let mut table_sides = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::Join(join) = node {
            for side in [&join.left, &join.right] {
                if is_table_side(side, catalog) {
                    table_sides.push(side.as_ref().clone());
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    for side in table_sides {
        let key = side.display_indent().to_string();
        let rows = match request.lane_copy {
            true => Vec::new(),
            false => {
                ctx.execute_logical_plan(side)
                    .await
                    .map_err(plan_error)?
                    .collect()
                    .await?
            }
        };
        lookups.insert(key, rows);
    }
    let mut pipeline = Pipeline::default();
    let mut scans = Vec::new();
    let mut table_feeds = Vec::new();
    let cx = Lowering {
        state: &state,
        catalog,
        request,
        lookups: &lookups,
    };
    lower(&plan, &cx, &mut table_feeds, &mut pipeline, &mut scans)?;
    if scans.is_empty() {
        return Err(VeloError::Unsupported(
            "the query reads no stream (or its WHERE clause is always false)".into(),
        ));
    }
    if let ([scan], Some(column)) = (scans.as_mut_slice(), event_time) {
        scan.event_time = Some(column);
    }
    let logical_plan = plan.display_indent().to_string();
    let output_schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    let group_key_columns = updating_group_keys(&plan)
        .into_iter()
        .filter(|k| output_schema.field_with_name(k).is_ok())
        .collect();
    Ok(PlannedQuery {
        scans,
        pipeline,
        output_schema,
        logical_plan,
        group_key_columns,
        table_feeds,
    })
}

/// The column a planning error says does not exist.
fn missing_column(e: &DataFusionError) -> Option<String> {
    match e.find_root() {
        DataFusionError::SchemaError(err, _) => match err.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { field, .. } => {
                Some(field.name.clone())
            }
            _ => None,
        },
        _ => None,
    }
}

/// A table a lookup join keeps current from its topic: the runtime feeds the topic's changes to
/// the pipeline as feed number `feed` (the lookup join holding the table takes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFeed {
    pub table: String,
    pub feed: usize,
}

/// When a join's table side is the plain rows of a topic-backed table with a key (no filter,
/// only column selection and renaming), the table's name and the key's column in the side.
fn followed_table(side: &LogicalPlan, catalog: &Catalog) -> Option<(String, usize)> {
    let mut plain = true;
    let mut table = None;
    let _ = side.apply(|node| {
        match node {
            LogicalPlan::TableScan(scan) if scan.filters.is_empty() && scan.fetch.is_none() => {
                table = Some(scan.table_name.table().to_string())
            }
            LogicalPlan::SubqueryAlias(_) => {}
            LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {}
            _ => plain = false,
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let name = table.filter(|_| plain)?;
    let def = catalog.get(&name)?;
    let key = def
        .key
        .as_ref()
        .filter(|_| matches!(def.source, crate::catalog::StreamSource::Topic(_)))?;
    let index = side.schema().as_arrow().index_of(key).ok()?;
    Some((name, index))
}

/// Rows of the table side of each join, by the side's plan text.
type Lookups = std::collections::HashMap<String, Vec<arrow::array::RecordBatch>>;

/// True when `plan` reads tables only (the build side of a stream–table join).
fn is_table_side(plan: &LogicalPlan, catalog: &Catalog) -> bool {
    let mut tables = 0;
    let mut streams = 0;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if catalog
                .get(scan.table_name.table())
                .is_some_and(|s| s.is_table)
            {
                tables += 1;
            } else {
                streams += 1;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables > 0 && streams == 0
}

/// What lowering reads: the session, the catalog, the request and the table sides of joins.
pub(crate) struct Lowering<'a> {
    state: &'a SessionState,
    catalog: &'a Catalog,
    request: &'a QueryRequest,
    lookups: &'a Lookups,
}

pub(crate) fn lower(
    plan: &LogicalPlan,
    cx: &Lowering<'_>,
    feeds: &mut Vec<TableFeed>,
    pipeline: &mut Pipeline,
    scans: &mut Vec<ScanLayout>,
) -> Result<()> {
    let (state, catalog, request, lookups) = (cx.state, cx.catalog, cx.request, cx.lookups);
    match plan {
        LogicalPlan::TableScan(table_scan) => {
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
            scans.push(ScanLayout {
                stream: stream.clone(),
                schema,
                columns,
                event_time: None,
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
            lower(&filter.input, cx, feeds, pipeline, scans)?;
            let predicate = state
                .create_physical_expr(filter.predicate.clone(), filter.input.schema())
                .map_err(plan_error)?;
            pipeline.push(Box::new(FilterExec::new(predicate)));
            Ok(())
        }
        LogicalPlan::Projection(projection) => {
            lower(&projection.input, cx, feeds, pipeline, scans)?;
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
            lower(&limit.input, cx, feeds, pipeline, scans)?;
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
        LogicalPlan::SubqueryAlias(alias) => lower(&alias.input, cx, feeds, pipeline, scans),
        LogicalPlan::Aggregate(aggregate) => {
            refuse_over_updating(&aggregate.input, cx, "an aggregate")?;
            let first = scans.len();
            lower(&aggregate.input, cx, feeds, pipeline, scans)?;
            if let Some(column) = window_time_column(aggregate) {
                set_event_time(&mut scans[first..], &column)?;
            }
            pipeline.push(window_aggregate(aggregate, state, request)?);
            Ok(())
        }
        LogicalPlan::Sort(sort) => {
            let mode = if request.bounded {
                SortMode::WholeInput
            } else if emits_per_window(&sort.input) && request.emit != Some(EmitMode::Changes) {
                SortMode::EachEmission
            } else {
                return Err(VeloError::Unsupported(
                    "ORDER BY on a stream sorts the rows of each window as it closes, and this \
                     query has no window: its output never ends, so it cannot be sorted. Add a \
                     WINDOW (EMIT FINAL), or run it with execute for a sorted bounded result"
                        .into(),
                ));
            };
            lower(&sort.input, cx, feeds, pipeline, scans)?;
            let keys = sort
                .expr
                .iter()
                .map(|s| {
                    Ok(SortKey {
                        expr: state
                            .create_physical_expr(s.expr.clone(), sort.input.schema())
                            .map_err(plan_error)?,
                        descending: !s.asc,
                        nulls_first: s.nulls_first,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            pipeline.push(Box::new(SortExec::new(
                keys,
                sort.fetch,
                mode,
                Arc::new(sort.input.schema().as_arrow().clone()),
            )));
            Ok(())
        }
        LogicalPlan::Join(join) => {
            let (stream_plan, table_plan, side) = match (
                is_table_side(&join.left, catalog),
                is_table_side(&join.right, catalog),
            ) {
                (false, true) => (&join.left, &join.right, StreamSide::Left),
                (true, false) => (&join.right, &join.left, StreamSide::Right),
                (false, false) => {
                    return stream_join::lower_stream_join(join, cx, feeds, pipeline, scans)
                }
                (true, true) => {
                    return Err(VeloError::Unsupported(
                        "the query joins only tables; a query needs a stream to run on".into(),
                    ))
                }
            };
            let kind = match (join.join_type, side) {
                (JoinType::Inner, _) => LookupKind::Inner,
                (JoinType::Left, StreamSide::Left) | (JoinType::Right, StreamSide::Right) => {
                    LookupKind::KeepStream
                }
                (other, _) => {
                    return Err(VeloError::Unsupported(format!(
                        "a {other} join of a stream and a table is not supported; use INNER, or LEFT JOIN with the stream on the left"
                    )))
                }
            };
            lower(stream_plan, cx, feeds, pipeline, scans)?;
            let rows = lookups
                .get(&table_plan.display_indent().to_string())
                .ok_or_else(|| VeloError::Execution("a join's table side was not loaded".into()))?;
            let (stream_keys, table_keys): (Vec<&Expr>, Vec<&Expr>) = match side {
                StreamSide::Left => join.on.iter().map(|(l, r)| (l, r)).unzip(),
                StreamSide::Right => join.on.iter().map(|(l, r)| (r, l)).unzip(),
            };
            let physical = |exprs: Vec<&Expr>, schema: &DFSchema| {
                exprs
                    .into_iter()
                    .map(|e| {
                        state
                            .create_physical_expr(e.clone(), schema)
                            .map_err(plan_error)
                    })
                    .collect::<Result<Vec<_>>>()
            };
            let filter = join
                .filter
                .as_ref()
                .map(|f| {
                    state
                        .create_physical_expr(f.clone(), &join.schema)
                        .map_err(plan_error)
                })
                .transpose()?;
            let mut join_exec = LookupJoinExec::new(
                Arc::new(table_plan.schema().as_arrow().clone()),
                rows,
                physical(table_keys, table_plan.schema())?,
                physical(stream_keys, stream_plan.schema())?,
                kind,
                side,
                filter,
                Arc::new(join.schema.as_arrow().clone()),
            )?;
            if let Some((table, key_column)) = followed_table(table_plan, catalog) {
                join_exec.follow_updates(feeds.len(), key_column);
                feeds.push(TableFeed {
                    table,
                    feed: feeds.len(),
                });
            }
            pipeline.push(Box::new(join_exec));
            Ok(())
        }
        LogicalPlan::Distinct(_) => Err(VeloError::Unsupported(
            "SELECT DISTINCT is not supported on a stream yet".into(),
        )),
        LogicalPlan::Window(window) => {
            let first = scans.len();
            lower(&window.input, cx, feeds, pipeline, scans)?;
            // The ORDER BY column is the event time (as in Flink): rows are released as the
            // watermark passes it.
            if let Some(column) = over_time_column(window) {
                set_event_time(&mut scans[first..], &column)?;
            }
            pipeline.push(over_window(window, state, cx.request.state_ttl_ms)?);
            Ok(())
        }
        other => Err(VeloError::Unsupported(format!(
            "'{}' is not supported on a stream",
            other.display()
        ))),
    }
}

/// The operator for window functions (`OVER (PARTITION BY … ORDER BY ts …)`).
fn over_window(
    window: &Window,
    state: &SessionState,
    state_ttl_ms: Option<i64>,
) -> Result<Box<dyn StreamOperator>> {
    let input_schema = window.input.schema();
    let mut partition_by: Option<Vec<Expr>> = None;
    let mut order_by: Option<Vec<SortExpr>> = None;
    let mut functions = Vec::new();
    let mut needs = FrameNeeds::default();
    for e in &window.window_expr {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::WindowFunction(wf) = inner else {
            return Err(VeloError::Unsupported(format!(
                "'{e}' is not a window function"
            )));
        };
        let params = &wf.params;
        match (&partition_by, &order_by) {
            (None, None) => {
                partition_by = Some(params.partition_by.clone());
                order_by = Some(params.order_by.clone());
            }
            (Some(p), Some(o)) if *p == params.partition_by && *o == params.order_by => {}
            _ => {
                return Err(VeloError::Unsupported(
                    "all OVER clauses of a query must have the same PARTITION BY and ORDER BY"
                        .into(),
                ))
            }
        }
        let name = wf.fun.name().to_ascii_lowercase();
        let literal_offset = |i: usize| -> Result<usize> {
            match params.args.get(i) {
                None => Ok(1),
                Some(Expr::Literal(v, _)) => v.to_string().parse::<usize>().map_err(|_| {
                    VeloError::Unsupported(format!("{name}'s offset must be a non-negative number"))
                }),
                Some(other) => Err(VeloError::Unsupported(format!(
                    "{name}'s offset must be a literal, not {other}"
                ))),
            }
        };
        let function = match name.as_str() {
            "row_number" => OverFunction::RowNumber,
            "rank" => OverFunction::Rank,
            "dense_rank" => OverFunction::DenseRank,
            "lag" | "lead" => {
                let offset = literal_offset(1)?;
                if name == "lag" {
                    needs.lookback_rows = needs.lookback_rows.max(offset);
                } else {
                    needs.lookahead_rows = needs.lookahead_rows.max(offset);
                }
                evaluated(e, input_schema, state)?
            }
            _ => {
                frame_needs(&params.window_frame, &name, &mut needs)?;
                let function = evaluated(e, input_schema, state)?;
                sliding(wf, &name, &function, input_schema).unwrap_or(function)
            }
        };
        functions.push(function);
    }
    let order_by = order_by.unwrap_or_default();
    let [sort] = order_by.as_slice() else {
        return Err(VeloError::Unsupported(
            "an OVER window on a stream needs ORDER BY <event time>, e.g. OVER (PARTITION BY symbol ORDER BY ts …)".into(),
        ));
    };
    let time_type = sort.expr.get_type(input_schema).map_err(plan_error)?;
    if !sort.asc || !matches!(time_type, DataType::Timestamp(_, _)) {
        return Err(VeloError::Unsupported(format!(
            "an OVER window on a stream is ordered by its event time ascending; '{}' is {time_type}{}",
            sort.expr,
            if sort.asc { "" } else { " DESC" }
        )));
    }
    let time = state
        .create_physical_expr(sort.expr.clone(), input_schema)
        .map_err(plan_error)?;
    let partition_by = partition_by
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            state
                .create_physical_expr(p, input_schema)
                .map_err(plan_error)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Box::new(
        OverWindowExec::new(
            partition_by,
            time,
            functions,
            needs,
            Arc::new(input_schema.as_arrow().clone()),
            Arc::new(window.schema.as_arrow().clone()),
        )?
        .with_state_ttl(state_ttl_ms),
    ))
}

fn evaluated(e: &Expr, input_schema: &DFSchema, state: &SessionState) -> Result<OverFunction> {
    let planning = PhysicalPlanningContext::default();
    Ok(OverFunction::Evaluated(
        create_window_expr(e, input_schema, state.execution_props(), &planning)
            .map_err(plan_error)?,
    ))
}

/// `function` (DataFusion's evaluation of `wf`) as a sliding aggregate computed by the operator
/// itself, when it is one (`SUM`, `COUNT`, `AVG`, `MIN`, `MAX` of one argument, without
/// DISTINCT, FILTER or IGNORE NULLS, over `ROWS BETWEEN n PRECEDING AND CURRENT ROW`) of types
/// it computes exactly as DataFusion does.
fn sliding(
    wf: &datafusion::logical_expr::expr::WindowFunction,
    name: &str,
    function: &OverFunction,
    input_schema: &DFSchema,
) -> Option<OverFunction> {
    let OverFunction::Evaluated(expr) = function else {
        return None;
    };
    let params = &wf.params;
    let frame = &params.window_frame;
    let plain = !params.distinct && params.filter.is_none() && params.null_treatment.is_none();
    let frame = match (&frame.units, &frame.start_bound, &frame.end_bound) {
        (WindowFrameUnits::Rows, WindowFrameBound::Preceding(n), WindowFrameBound::CurrentRow)
            if !n.is_null() =>
        {
            SlidingFrame::Rows(n.to_string().parse::<usize>().ok()?)
        }
        // Over event times in milliseconds and whole milliseconds of interval: the operator's
        // times and interval are then exactly what DataFusion compares.
        (WindowFrameUnits::Range, WindowFrameBound::Preceding(v), WindowFrameBound::CurrentRow) => {
            let [sort] = params.order_by.as_slice() else {
                return None;
            };
            // Days are 86 400 000 ms only where no daylight-saving change moves a day: DataFusion
            // steps by calendar days in the event time's zone.
            let days = match v {
                ScalarValue::IntervalMonthDayNano(Some(i)) => i.days,
                ScalarValue::IntervalDayTime(Some(i)) => i.days,
                _ => return None,
            };
            let in_ms = match sort.expr.get_type(input_schema).ok()? {
                DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, zone) => {
                    days == 0
                        || zone
                            .as_deref()
                            .is_none_or(|z| matches!(z, "UTC" | "+00:00" | "Z"))
                }
                _ => false,
            };
            if !(in_ms && whole_millis(v)) {
                return None;
            }
            let ms = interval_millis(v).ok()?;
            if ms < 0 {
                return None;
            }
            SlidingFrame::Range(ms)
        }
        _ => return None,
    };
    let kind = SlidingKind::of(name)?;
    let [arg] = expr.expressions().try_into().ok()?;
    let arg_type = arg.data_type(input_schema.as_arrow()).ok()?;
    if !plain {
        return None;
    }
    SlidingAggregate::new(kind, arg, &arg_type, frame, expr.clone()).map(OverFunction::Sliding)
}

/// True when the interval `v` is a whole number of milliseconds.
fn whole_millis(v: &ScalarValue) -> bool {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => i.nanoseconds % 1_000_000 == 0,
        _ => true,
    }
}

/// What a frame needs kept around each row; refuses frames a stream cannot bound.
fn frame_needs(frame: &WindowFrame, name: &str, needs: &mut FrameNeeds) -> Result<()> {
    let unbounded = || {
        VeloError::Unsupported(format!(
            "{name}(…) OVER needs a bounded frame on a stream, e.g. ROWS BETWEEN 4 PRECEDING AND CURRENT ROW \
             or RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW (the default frame reaches back to \
             the start of the stream)"
        ))
    };
    let rows = |v: &ScalarValue| -> Result<usize> {
        if v.is_null() {
            return Err(unbounded());
        }
        v.to_string().parse::<usize>().map_err(|_| unbounded())
    };
    match frame.units {
        WindowFrameUnits::Rows => {
            match &frame.start_bound {
                WindowFrameBound::Preceding(v) => {
                    needs.lookback_rows = needs.lookback_rows.max(rows(v)?)
                }
                WindowFrameBound::CurrentRow => {}
                WindowFrameBound::Following(v) => {
                    needs.lookahead_rows = needs.lookahead_rows.max(rows(v)?)
                }
            }
            match &frame.end_bound {
                WindowFrameBound::Following(v) => {
                    needs.lookahead_rows = needs.lookahead_rows.max(rows(v)?)
                }
                WindowFrameBound::CurrentRow => {}
                WindowFrameBound::Preceding(v) => {
                    rows(v)?;
                }
            }
            Ok(())
        }
        WindowFrameUnits::Range => {
            let WindowFrameBound::Preceding(v) = &frame.start_bound else {
                return Err(unbounded());
            };
            if v.is_null() {
                return Err(unbounded());
            }
            let ms = interval_millis(v).map_err(|_| {
                VeloError::Unsupported(format!(
                    "{name}(…) OVER: a RANGE frame on a stream is an INTERVAL of event time"
                ))
            })?;
            if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
                return Err(VeloError::Unsupported(format!(
                    "{name}(…) OVER: a RANGE frame must end at CURRENT ROW on a stream"
                )));
            }
            needs.range = true;
            // A part of a millisecond reaches one more millisecond back.
            needs.lookback_ms = needs.lookback_ms.max(ms + !whole_millis(v) as i64);
            Ok(())
        }
        WindowFrameUnits::Groups => Err(VeloError::Unsupported(format!(
            "{name}(…) OVER: GROUPS frames are not supported on a stream; use ROWS or RANGE"
        ))),
    }
}

/// True when `aggregate` is an updating aggregate: no window call in its GROUP BY (DataFusion
/// may alias one: COUNT(DISTINCT …) is planned as a GROUP BY over a GROUP BY with aliased
/// keys), and no window bound of the rows below (a cascaded window).
fn is_updating(aggregate: &Aggregate) -> bool {
    let windowed = aggregate.group_expr.iter().any(|e| {
        let e = match e {
            Expr::Alias(alias) => alias.expr.as_ref(),
            other => other,
        };
        matches!(e, Expr::ScalarFunction(f) if WindowFunction::from_name(f.name()).is_some())
    });
    !windowed && window_columns::cascaded_window(aggregate).is_none()
}

/// True when `plan` holds an updating aggregate (a GROUP BY whose groups never close) on its
/// stream side; a table side is a batch query DataFusion runs once.
fn holds_updating_aggregate(plan: &LogicalPlan, catalog: &Catalog) -> bool {
    if is_table_side(plan, catalog) {
        return false;
    }
    if matches!(plan, LogicalPlan::Aggregate(a) if is_updating(a)) {
        return true;
    }
    plan.inputs()
        .into_iter()
        .any(|input| holds_updating_aggregate(input, catalog))
}

/// Refuses `what` over the rows of an updating aggregate where that aggregate emits changes
/// (on a stream, or with EMIT CHANGES): each change would count as a new row, and taking the
/// old one back (retraction) is not built.
pub(super) fn refuse_over_updating(
    input: &LogicalPlan,
    cx: &Lowering<'_>,
    what: &str,
) -> Result<()> {
    let changes = !cx.request.bounded || cx.request.emit == Some(EmitMode::Changes);
    if changes && holds_updating_aggregate(input, cx.catalog) {
        return Err(VeloError::Unsupported(format!(
            "{what} over the rows of a GROUP BY without a window cannot run on a stream: that \
             GROUP BY emits a new row for a key every time the key changes, and {what} would \
             count each of them as a new row (taking the old row back is not supported yet; \
             COUNT(DISTINCT …) and other DISTINCT aggregates are planned as such a pair of \
             GROUP BYs). Window the inner GROUP BY (TUMBLE, HOP or SESSION), or run the query \
             with execute, which emits each key's final row once"
        )));
    }
    Ok(())
}

/// Names of the GROUP BY keys of an aggregate without a window in `plan`.
fn updating_group_keys(plan: &LogicalPlan) -> Vec<String> {
    let mut keys = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::Aggregate(a) = node {
            if is_updating(a) {
                keys = a
                    .group_expr
                    .iter()
                    .enumerate()
                    .map(|(i, _)| a.schema.field(i).name().clone())
                    .collect();
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    keys
}

/// The operator for an Aggregate: a window operator when its GROUP BY holds a window call,
/// else an updating aggregate.
fn window_aggregate(
    aggregate: &Aggregate,
    state: &SessionState,
    request: &QueryRequest,
) -> Result<Box<dyn StreamOperator>> {
    let input_schema = aggregate.input.schema();
    let output_schema: SchemaRef = Arc::new(aggregate.schema.as_arrow().clone());
    let mut window = None;
    let mut keys = Vec::new();
    let mut key_fields = Vec::new();
    for (i, e) in aggregate.group_expr.iter().enumerate() {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        if let Expr::ScalarFunction(f) = inner {
            if let Some(kind) = WindowFunction::from_name(f.name()) {
                if window.is_some() {
                    return Err(VeloError::Unsupported(
                        "a GROUP BY can hold one window".into(),
                    ));
                }
                window = Some((i, kind, f.args.clone()));
                continue;
            }
        }
        keys.push(
            state
                .create_physical_expr(e.clone(), input_schema)
                .map_err(plan_error)?,
        );
        key_fields.push(output_schema.field(i).as_ref().clone().with_nullable(true));
    }
    let aggregates = aggregate
        .aggr_expr
        .iter()
        .map(|e| {
            let planning = PhysicalPlanningContext::default();
            let lowered = LoweredAggregateBuilder::new(
                e,
                input_schema,
                input_schema.as_arrow(),
                state.execution_props(),
                &planning,
            )
            .build()
            .map_err(plan_error)?;
            Ok(AggregateSpec::new(lowered.aggregate, lowered.filter))
        })
        .collect::<Result<Vec<_>>>()?;
    let Some((window_position, kind, args)) = window else {
        if let Some((key, offset_ms)) = window_columns::cascaded_window(aggregate) {
            // Grouped by a window bound of the rows below: its groups close with that window.
            if request.emit == Some(EmitMode::Changes) {
                return Err(VeloError::Unsupported(
                    "an aggregate over a window's rows (grouped by their window_start or \
                     window_end) aggregates each window's final rows; with EMIT CHANGES the \
                     window below emits a row per change, which it would count again and again: \
                     remove EMIT CHANGES"
                        .into(),
                ));
            }
            let grouping = Grouping {
                keys,
                key_fields,
                window_position: None,
            };
            return Ok(Box::new(
                WindowAggregateExec::new(
                    None,
                    request.emit.unwrap_or_default(),
                    grouping,
                    aggregates,
                    output_schema,
                )
                .closing_with(key, offset_ms),
            ));
        }
        // An updating aggregate: changes per micro-batch on a stream, final rows when bounded.
        let emit = match request.emit {
            Some(mode) => mode,
            None if request.bounded => EmitMode::Final,
            None => EmitMode::Changes,
        };
        let grouping = Grouping {
            keys,
            key_fields,
            window_position: None,
        };
        return Ok(Box::new(WindowAggregateExec::new(
            None,
            emit,
            grouping,
            aggregates,
            output_schema,
        )));
    };
    let emit = request.emit.unwrap_or_default();
    let millis = |e: &Expr| -> Result<i64> {
        match e {
            Expr::Literal(v, _) => interval_millis(v).map_err(plan_error),
            other => Err(VeloError::sql(
                format!("a window size must be an INTERVAL literal, not {other}"),
                None,
            )),
        }
    };
    let clause = format!("{}(…)", kind.name().to_uppercase());
    let window_kind = match kind {
        WindowFunction::Tumble => WindowKind::Tumbling {
            size: millis(&args[1])?,
        },
        WindowFunction::Hop => WindowKind::Sliding {
            slide: millis(&args[1])?,
            size: millis(&args[2])?,
        },
        WindowFunction::Session => WindowKind::Session {
            gap: millis(&args[1])?,
        },
    };
    crate::sql::window::validate(&window_kind, &clause, None)?;
    // Type coercion may have wrapped a text column in a CAST; the event time must be a
    // timestamp already.
    let time_arg = match &args[0] {
        Expr::Cast(c) => c.expr.as_ref(),
        Expr::TryCast(c) => c.expr.as_ref(),
        other => other,
    };
    let time_type = time_arg.get_type(input_schema).map_err(plan_error)?;
    if !matches!(
        time_type,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    ) {
        return Err(VeloError::sql(
            format!(
                "{clause}: the event time '{}' is {time_type}, not a TIMESTAMP",
                time_arg
            ),
            None,
        ));
    }
    let time = state
        .create_physical_expr(args[0].clone(), input_schema)
        .map_err(plan_error)?;
    let grouping = Grouping {
        keys,
        key_fields,
        window_position: Some(window_position),
    };
    Ok(match window_kind {
        WindowKind::Tumbling { size } => Box::new(WindowAggregateExec::new(
            Some((FixedWindows { size, slide: size }, time)),
            emit,
            grouping,
            aggregates,
            output_schema,
        )),
        WindowKind::Sliding { size, slide } => Box::new(WindowAggregateExec::new(
            Some((FixedWindows { size, slide }, time)),
            emit,
            grouping,
            aggregates,
            output_schema,
        )),
        WindowKind::Session { gap } => Box::new(SessionWindowExec::new(
            gap,
            emit,
            time,
            grouping,
            aggregates,
            output_schema,
        )?),
    })
}

/// The column an OVER window is ordered by (its event time), when it is a column.
fn over_time_column(window: &Window) -> Option<String> {
    window.window_expr.iter().find_map(|e| {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::WindowFunction(wf) = inner else {
            return None;
        };
        match &wf.params.order_by.first()?.expr {
            Expr::Column(c) => Some(c.name.clone()),
            Expr::Cast(c) => match c.expr.as_ref() {
                Expr::Column(c) => Some(c.name.clone()),
                _ => None,
            },
            _ => None,
        }
    })
}

/// The time column of an aggregate's window (`TUMBLE(ts, …)` in GROUP BY), when it is a column.
/// True when `plan` reads a stream or a table somewhere.
fn reads_any_table(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found |= matches!(node, LogicalPlan::TableScan(_));
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// True when `plan`'s rows come out window by window: it holds a windowed aggregate.
fn emits_per_window(plan: &LogicalPlan) -> bool {
    let mut windowed = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::Aggregate(a) = node {
            windowed |=
                window_time_column(a).is_some() || window_columns::cascaded_window(a).is_some();
        }
        Ok(TreeNodeRecursion::Continue)
    });
    windowed
}

fn window_time_column(aggregate: &Aggregate) -> Option<String> {
    aggregate.group_expr.iter().find_map(|e| {
        let inner = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::ScalarFunction(f) = inner else {
            return None;
        };
        WindowFunction::from_name(f.name())?;
        match f.args.first()? {
            Expr::Column(c) => Some(c.name.clone()),
            Expr::Cast(c) => match c.expr.as_ref() {
                Expr::Column(c) => Some(c.name.clone()),
                _ => None,
            },
            _ => None,
        }
    })
}

/// Declares `column` the event time of the one stream in `scans` (the inputs read by one side
/// of a join); does nothing for other shapes. Two different event times for one stream are
/// refused.
pub(crate) fn set_event_time(scans: &mut [ScanLayout], column: &str) -> Result<()> {
    let [scan] = scans else {
        return Ok(());
    };
    if scan.schema.field_with_name(column).is_err() {
        return Ok(());
    }
    match &scan.event_time {
        Some(existing) if existing != column => Err(VeloError::Unsupported(format!(
            "stream '{}' is read with two event times, '{existing}' and '{column}'; use one",
            scan.stream.name
        ))),
        _ => {
            scan.event_time = Some(column.to_string());
            Ok(())
        }
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
