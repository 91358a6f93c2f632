//! `SELECT *` over a stream means its payload columns, not the metadata columns (`_key`,
//! `_offset`, …), which are there when named. This rewrites `*` and `t.*` into explicit
//! column lists before DataFusion sees the query. Wildcards with modifiers (`EXCLUDE`, …) and
//! wildcards over subqueries are left to DataFusion.

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, Query, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    Statement, TableFactor, TableWithJoins,
};

/// Rewrites the wildcards of `statement`. `payload_columns(table)` gives a stream's payload
/// column names, or `None` for names that are not streams.
pub fn expand_wildcards(
    statement: &mut Statement,
    payload_columns: &dyn Fn(&str) -> Option<Vec<String>>,
) {
    if let Statement::Query(query) = statement {
        expand_query(query, payload_columns);
    }
}

fn expand_query(query: &mut Query, payload_columns: &dyn Fn(&str) -> Option<Vec<String>>) {
    if let Some(with) = query.with.as_mut() {
        for cte in &mut with.cte_tables {
            expand_query(&mut cte.query, payload_columns);
        }
    }
    expand_set_expr(&mut query.body, payload_columns);
}

fn expand_set_expr(body: &mut SetExpr, payload_columns: &dyn Fn(&str) -> Option<Vec<String>>) {
    match body {
        SetExpr::Select(select) => {
            let mut relations: Vec<&mut TableFactor> = Vec::new();
            for TableWithJoins { relation, joins } in &mut select.from {
                relations.push(relation);
                relations.extend(joins.iter_mut().map(|j| &mut j.relation));
            }
            // Streams in FROM: (name used to qualify columns, payload columns).
            let mut tables: Vec<(Ident, Option<Vec<String>>)> = Vec::new();
            for relation in relations {
                match relation {
                    TableFactor::Table { name, alias, .. } => {
                        let table = last_part(name);
                        let qualifier = alias
                            .as_ref()
                            .map(|a| a.name.clone())
                            .unwrap_or_else(|| table.clone());
                        tables.push((qualifier, payload_columns(&table.value)));
                    }
                    TableFactor::Derived {
                        subquery, alias, ..
                    } => {
                        expand_query(subquery, payload_columns);
                        let qualifier = alias
                            .as_ref()
                            .map(|a| a.name.clone())
                            .unwrap_or_else(|| Ident::new(""));
                        tables.push((qualifier, None));
                    }
                    _ => tables.push((Ident::new(""), None)),
                }
            }
            let mut projection = Vec::with_capacity(select.projection.len());
            for item in select.projection.drain(..) {
                match &item {
                    SelectItem::Wildcard(options)
                        if is_plain(options) && tables.iter().all(|(_, c)| c.is_some()) =>
                    {
                        let qualify = tables.len() > 1;
                        for (qualifier, columns) in &tables {
                            push_columns(
                                &mut projection,
                                qualify.then_some(qualifier),
                                columns.as_deref().unwrap_or_default(),
                            );
                        }
                    }
                    SelectItem::QualifiedWildcard(
                        SelectItemQualifiedWildcardKind::ObjectName(name),
                        options,
                    ) if is_plain(options) => {
                        let wanted = last_part(name);
                        match tables.iter().find(|(q, _)| q.value == wanted.value) {
                            Some((qualifier, Some(columns))) => {
                                push_columns(&mut projection, Some(qualifier), columns)
                            }
                            _ => projection.push(item),
                        }
                    }
                    _ => projection.push(item),
                }
            }
            select.projection = projection;
        }
        SetExpr::Query(query) => expand_query(query, payload_columns),
        SetExpr::SetOperation { left, right, .. } => {
            expand_set_expr(left, payload_columns);
            expand_set_expr(right, payload_columns);
        }
        _ => {}
    }
}

fn is_plain(options: &datafusion::sql::sqlparser::ast::WildcardAdditionalOptions) -> bool {
    options.opt_ilike.is_none()
        && options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none()
}

fn last_part(name: &ObjectName) -> Ident {
    name.0
        .last()
        .and_then(|p| p.as_ident().cloned())
        .unwrap_or_else(|| Ident::new(name.to_string()))
}

fn push_columns(projection: &mut Vec<SelectItem>, qualifier: Option<&Ident>, columns: &[String]) {
    for column in columns {
        let ident = Ident::with_quote('"', column.clone());
        projection.push(SelectItem::UnnamedExpr(match qualifier {
            Some(q) => Expr::CompoundIdentifier(vec![q.clone(), ident]),
            None => Expr::Identifier(ident),
        }));
    }
}
