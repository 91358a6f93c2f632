//! Planning a join of two streams: what bounds its state decides which join it is.
//!
//! - **Window join**: the ON condition equates the window bounds (`window_start` or
//!   `window_end`) of two window aggregates of the same window; rows can match until the
//!   window closes.
//! - **Interval join**: the ON condition (or WHERE) bounds one side's event time by the
//!   other's, below and above (`s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' HOUR`); the bounds
//!   are read from the condition, and the condition itself is still evaluated on every pair.
//! - **Updating join**: neither, but the user set a state TTL (`--state-ttl`): INNER only.
//!
//! Anything else would keep every row forever and is refused, with the ways out.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, ExprSchema, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{lit, BinaryExpr, Expr, Join, JoinType, LogicalPlan, Operator};
use velo_udfs::window::interval_millis;

use super::window_columns::{trace_window_column, WindowColumn};
use super::{lower, plan_error, set_event_time, Lowering, ScanLayout, TableFeed};
use crate::error::{Result, VeloError};
use crate::operators::{JoinTime, Pipeline, StreamJoinExec, StreamJoinSpec};
use crate::sql::window::EmitMode;

/// The message for a join of two streams nothing bounds.
const UNBOUNDED_JOIN: &str = "a join of two streams needs a window or a time bound, or it would keep every row forever: \
a window join (both sides GROUP BY the same TUMBLE and ON … AND a.window_start = b.window_start), \
an interval join (ON o.id = s.id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' HOUR, or WITHIN INTERVAL '1' HOUR), \
or opt into an updating INNER join that forgets rows after a while with --state-ttl (e.g. --state-ttl 1h)";

/// Lowers a join whose both sides read streams into a [`StreamJoinExec`] at the head of
/// `pipeline` (which must be empty: the join's inputs are its branches).
pub(super) fn lower_stream_join(
    join: &Join,
    cx: &Lowering<'_>,
    feeds: &mut Vec<TableFeed>,
    pipeline: &mut Pipeline,
    scans: &mut Vec<ScanLayout>,
) -> Result<()> {
    if !pipeline.is_empty() {
        return Err(VeloError::Execution(
            "a join of streams must be the first operator of its chain".into(),
        ));
    }
    let preserve = match join.join_type {
        JoinType::Inner => [false, false],
        JoinType::Left => [true, false],
        JoinType::Right => [false, true],
        JoinType::Full => [true, true],
        other => {
            return Err(VeloError::Unsupported(format!(
                "a {other} join of two streams is not supported; use INNER, LEFT, RIGHT or FULL"
            )))
        }
    };
    for side in [&join.left, &join.right] {
        super::refuse_over_updating(side, cx, "a join of two streams")?;
    }
    let state = cx.state;
    let first = scans.len();
    let mut left = Pipeline::default();
    lower(&join.left, cx, feeds, &mut left, scans)?;
    let middle = scans.len();
    let mut right = Pipeline::default();
    lower(&join.right, cx, feeds, &mut right, scans)?;
    let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
    let physical = |e: &Expr, schema: &DFSchema| {
        state
            .create_physical_expr(e.clone(), schema)
            .map_err(plan_error)
    };
    let time = if let Some((left_end, right_end)) = window_join_ends(join)? {
        if cx.request.emit == Some(EmitMode::Changes) {
            return Err(VeloError::Unsupported(
                "a window join joins the final rows of each window; remove EMIT CHANGES".into(),
            ));
        }
        JoinTime::Window {
            left_end: physical(&left_end, left_schema)?,
            right_end: physical(&right_end, right_schema)?,
        }
    } else if let Some(bounds) = interval_bounds(join)? {
        let (lower_ms, upper_ms) = match (bounds.lower, bounds.upper) {
            (Some(l), Some(u)) if l <= u => (l, u),
            (Some(l), Some(u)) => {
                return Err(VeloError::Unsupported(format!(
                    "the join's time bounds leave no room: {} − {} must be at least {l} ms and at most {u} ms",
                    bounds.right, bounds.left
                )))
            }
            _ => {
                let missing = if bounds.lower.is_none() { "lower" } else { "upper" };
                return Err(VeloError::Unsupported(format!(
                    "an interval join needs both bounds, but {} has no {missing} bound relative to {}; \
                     write e.g. {} BETWEEN {} AND {} + INTERVAL '1' HOUR",
                    bounds.right, bounds.left, bounds.right, bounds.left, bounds.left
                )));
            }
        };
        for (column, range) in [
            (&bounds.left, first..middle),
            (&bounds.right, middle..scans.len()),
        ] {
            set_event_time(&mut scans[range.clone()], &column.name)?;
            if scans[range]
                .iter()
                .all(|s| s.event_time.as_deref() != Some(column.name.as_str()))
            {
                return Err(VeloError::Unsupported(format!(
                    "an interval join bounds the streams' event times; '{column}' is not a column read from a stream"
                )));
            }
        }
        JoinTime::Interval {
            left_time: physical(&Expr::Column(bounds.left.clone()), left_schema)?,
            right_time: physical(&Expr::Column(bounds.right.clone()), right_schema)?,
            lower: lower_ms,
            upper: upper_ms,
        }
    } else if let Some(ttl_ms) = cx.request.state_ttl_ms {
        if join.join_type != JoinType::Inner {
            return Err(VeloError::Unsupported(format!(
                "an updating join (--state-ttl) is INNER only: a {} join's rows without a match could only be emitted by retracting them later",
                join.join_type
            )));
        }
        JoinTime::Ttl { ttl_ms }
    } else {
        return Err(VeloError::Unsupported(UNBOUNDED_JOIN.into()));
    };
    let (left_keys, right_keys): (Vec<&Expr>, Vec<&Expr>) =
        join.on.iter().map(|(l, r)| (l, r)).unzip();
    let keys = |exprs: Vec<&Expr>, schema: &DFSchema| {
        exprs
            .into_iter()
            .map(|e| physical(e, schema))
            .collect::<Result<Vec<_>>>()
    };
    let filter = join
        .filter
        .as_ref()
        .map(|f| physical(f, &join.schema))
        .transpose()?;
    pipeline.push(Box::new(StreamJoinExec::new(StreamJoinSpec {
        branches: [left, right],
        keys: [
            keys(left_keys, left_schema)?,
            keys(right_keys, right_schema)?,
        ],
        filter,
        preserve,
        time,
        input_schemas: [
            Arc::new(left_schema.as_arrow().clone()),
            Arc::new(right_schema.as_arrow().clone()),
        ],
        output_schema: Arc::new(join.schema.as_arrow().clone()),
    })?));
    Ok(())
}

/// For a window join, the expressions giving each side's window end.
fn window_join_ends(join: &Join) -> Result<Option<(Expr, Expr)>> {
    let mut found = None;
    for (l, r) in &join.on {
        let trace = |e: &Expr, plan: &LogicalPlan| match e {
            Expr::Column(c) => plan
                .schema()
                .index_of_column(c)
                .ok()
                .and_then(|i| trace_window_column(plan, i)),
            _ => None,
        };
        let (Some(lt), Some(rt)) = (trace(l, &join.left), trace(r, &join.right)) else {
            continue;
        };
        let (
            WindowColumn::Bound {
                end: le,
                size: ls,
                slide: lslide,
            },
            WindowColumn::Bound {
                end: re,
                size: rs,
                slide: rslide,
            },
        ) = (lt, rt)
        else {
            continue;
        };
        if le != re {
            continue;
        }
        if (ls, lslide) != (rs, rslide) {
            return Err(VeloError::Unsupported(format!(
                "a window join needs the same window on both sides; '{l}' and '{r}' come from different windows"
            )));
        }
        let end_of = |e: &Expr, size: Option<i64>| -> Result<Expr> {
            if le {
                return Ok(e.clone());
            }
            let size = size.ok_or_else(|| {
                VeloError::Unsupported(
                    "a window join of session windows must equate window_end too".into(),
                )
            })?;
            Ok(Expr::BinaryExpr(BinaryExpr::new(
                Box::new(e.clone()),
                Operator::Plus,
                Box::new(lit(ScalarValue::new_interval_mdn(0, 0, size * 1_000_000))),
            )))
        };
        // Prefer an equality on window_end (exact for every window kind).
        if found.is_none() || le {
            found = Some((end_of(l, ls)?, end_of(r, rs)?));
        }
    }
    Ok(found)
}

/// Time bounds found in a join condition: `right − left ∈ [lower, upper]` in milliseconds.
#[derive(Debug)]
struct IntervalBounds {
    left: Column,
    right: Column,
    lower: Option<i64>,
    upper: Option<i64>,
}

/// A time term: a column plus a constant interval.
fn time_term(e: &Expr) -> Option<(Column, i64)> {
    match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::Cast(c) => time_term(&c.expr),
        Expr::TryCast(c) => time_term(&c.expr),
        Expr::BinaryExpr(b) if matches!(b.op, Operator::Plus | Operator::Minus) => {
            let interval = |e: &Expr| match e {
                Expr::Literal(v, _) => interval_millis(v).ok(),
                _ => None,
            };
            let sign = if b.op == Operator::Plus { 1 } else { -1 };
            if let (Some((c, o)), Some(ms)) = (time_term(&b.left), interval(&b.right)) {
                return Some((c, o + sign * ms));
            }
            if b.op == Operator::Plus {
                if let (Some(ms), Some((c, o))) = (interval(&b.left), time_term(&b.right)) {
                    return Some((c, o + ms));
                }
            }
            None
        }
        _ => None,
    }
}

/// Reads `right.t − left.t` bounds from the join's extra conditions.
fn interval_bounds(join: &Join) -> Result<Option<IntervalBounds>> {
    let Some(filter) = &join.filter else {
        return Ok(None);
    };
    let (ls, rs) = (join.left.schema(), join.right.schema());
    let is_time = |c: &Column, schema: &DFSchema| {
        schema.field_from_column(c).is_ok_and(|f| {
            matches!(
                f.data_type(),
                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
            )
        })
    };
    let mut bounds: Option<IntervalBounds> = None;
    // `a op b` with `op` one of <, <=, >, >=.
    let mut add = |a: &Expr, op: Operator, b: &Expr| {
        let (Some((ca, oa)), Some((cb, ob))) = (time_term(a), time_term(b)) else {
            return;
        };
        // Normalise to `right.t − left.t  op  constant`.
        let (right, left, op, constant) = if is_time(&ca, rs) && is_time(&cb, ls) {
            (ca, cb, op, ob - oa)
        } else if is_time(&ca, ls) && is_time(&cb, rs) {
            let flipped = match op {
                Operator::Lt => Operator::Gt,
                Operator::LtEq => Operator::GtEq,
                Operator::Gt => Operator::Lt,
                _ => Operator::LtEq,
            };
            (cb, ca, flipped, oa - ob)
        } else {
            return;
        };
        let b = bounds.get_or_insert_with(|| IntervalBounds {
            left: left.clone(),
            right: right.clone(),
            lower: None,
            upper: None,
        });
        if b.left != left || b.right != right {
            return; // a bound on other columns: still evaluated, not used for state
        }
        match op {
            Operator::Gt | Operator::GtEq => {
                b.lower = Some(b.lower.map_or(constant, |l| l.max(constant)))
            }
            _ => b.upper = Some(b.upper.map_or(constant, |u| u.min(constant))),
        }
    };
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(b)
                if matches!(
                    b.op,
                    Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ) =>
            {
                add(&b.left, b.op, &b.right)
            }
            Expr::Between(b) if !b.negated => {
                add(&b.expr, Operator::GtEq, &b.low);
                add(&b.expr, Operator::LtEq, &b.high);
            }
            _ => {}
        }
    }
    Ok(bounds)
}
