//! Window attributes through a plan: which output columns of a plan are a window, or the
//! `window_start` / `window_end` of one, traced down to the window aggregate that made them.
//!
//! Two planners need it: a join of two streams is a window join when it equates window bounds
//! of both sides, and an aggregate grouped by a window bound (an aggregate over a window
//! aggregate's rows, Nexmark q5's `MaxBids`) closes its groups with that window.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use velo_udfs::window::{interval_millis, WindowFunction};

/// What a column of a plan's output is, seen from a window aggregate below it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum WindowColumn {
    /// The window struct itself (a `TUMBLE(…)` GROUP BY column); `size` when fixed.
    Window { size: Option<i64>, slide: i64 },
    /// `window_start` or `window_end` of such a window.
    Bound {
        end: bool,
        size: Option<i64>,
        slide: i64,
    },
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// Traces column `index` of `plan`'s output down to a window aggregate.
pub(super) fn trace_window_column(plan: &LogicalPlan, index: usize) -> Option<WindowColumn> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => trace_window_column(&a.input, index),
        LogicalPlan::Filter(f) => trace_window_column(&f.input, index),
        LogicalPlan::Projection(p) => trace_expr(strip_alias(p.expr.get(index)?), &p.input),
        LogicalPlan::Aggregate(a) => {
            let group = strip_alias(a.group_expr.get(index)?);
            let window = match group {
                Expr::ScalarFunction(f) => WindowFunction::from_name(f.name()).map(|w| (f, w)),
                _ => None,
            };
            let Some((f, window)) = window else {
                // A GROUP BY on a window bound of the rows below keeps that bound.
                return trace_expr(group, &a.input);
            };
            let millis = |i: usize| match f.args.get(i) {
                Some(Expr::Literal(v, _)) => interval_millis(v).ok(),
                _ => None,
            };
            match window {
                WindowFunction::Tumble => {
                    let size = millis(1)?;
                    Some(WindowColumn::Window {
                        size: Some(size),
                        slide: size,
                    })
                }
                WindowFunction::Hop => Some(WindowColumn::Window {
                    size: Some(millis(2)?),
                    slide: millis(1)?,
                }),
                WindowFunction::Session => Some(WindowColumn::Window {
                    size: None,
                    slide: millis(1)?,
                }),
            }
        }
        _ => None,
    }
}

/// Traces an expression over `input`'s columns down to a window aggregate.
pub(super) fn trace_expr(e: &Expr, input: &LogicalPlan) -> Option<WindowColumn> {
    match e {
        Expr::Column(c) => {
            let index = input.schema().index_of_column(c).ok()?;
            trace_window_column(input, index)
        }
        Expr::ScalarFunction(f) if f.name() == "get_field" => {
            let Some(WindowColumn::Window { size, slide }) = trace_expr(f.args.first()?, input)
            else {
                return None;
            };
            let end = match f.args.get(1)? {
                Expr::Literal(ScalarValue::Utf8(Some(name)), _) => match name.as_str() {
                    "window_start" => false,
                    "window_end" => true,
                    _ => return None,
                },
                _ => return None,
            };
            Some(WindowColumn::Bound { end, size, slide })
        }
        _ => None,
    }
}

/// An aggregate without a window call of its own, grouped by a window bound of the window
/// aggregate below it (`GROUP BY starttime, endtime` over windowed counts): the position of
/// that GROUP BY expression and what to add to its value, in ms, to get the window's end.
/// Such an aggregate sees each window's rows once, when the window closes below, so its
/// groups close with the window too. `window_end` is preferred; `window_start` needs a
/// window of fixed size. A GROUP BY on the window column itself closes with its end too.
pub(super) fn cascaded_window(aggregate: &Aggregate) -> Option<(usize, i64)> {
    let mut found = None;
    for (i, e) in aggregate.group_expr.iter().enumerate() {
        let e = strip_alias(e);
        if matches!(e, Expr::ScalarFunction(f) if WindowFunction::from_name(f.name()).is_some()) {
            return None;
        }
        match trace_expr(e, &aggregate.input) {
            // The window itself (DataFusion plans COUNT(DISTINCT …) per window as a GROUP BY
            // over the window's GROUP BY): the operator reads its `window_end`.
            Some(WindowColumn::Bound { end: true, .. } | WindowColumn::Window { .. }) => {
                return Some((i, 0))
            }
            Some(WindowColumn::Bound {
                end: false,
                size: Some(size),
                ..
            }) if found.is_none() => found = Some((i, size)),
            _ => {}
        }
    }
    found
}
