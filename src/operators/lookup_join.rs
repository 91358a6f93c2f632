//! `LookupJoinExec`: a stream joined with a table (enrichment).
//!
//! The table's rows are held in a hash map on the join key (Arrow row format). Each stream row
//! is joined with the table's rows as they are when the row is processed: INNER emits one row
//! per match and none without; LEFT (stream side preserved) emits NULL table columns when there
//! is no match — never an invented row. NULL keys match nothing. Extra ON conditions are
//! evaluated on each candidate pair.
//!
//! The table is held once per job: the copies of the join on further worker lanes share the
//! first lane's ([`StreamOperator::share_with`]), which alone applies a followed table's
//! changes, between micro-batches, while no lane reads it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::{RowError, StreamOperator};
use crate::error::{Result, VeloError};

/// Which rows a lookup join keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    Inner,
    /// Every stream row, with NULL table columns when nothing matches.
    KeepStream,
}

/// Where the stream's columns go in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSide {
    Left,
    Right,
}

/// A table's rows and their index on the join key.
struct Table {
    rows: RecordBatch,
    index: HashMap<Box<[u8]>, Vec<u32>>,
}

/// A stream–table join.
pub struct LookupJoinExec {
    stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    table_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// When the table follows a topic's updates: its feed number, and the column of the table
    /// holding the table's key.
    live_key: Option<(usize, usize)>,
    /// The table, shared with the copies of this join on the other lanes.
    table: Arc<RwLock<Table>>,
    /// False for a copy sharing another's table: it neither changes, snapshots nor counts it.
    owns_table: bool,
    converter: RowConverter,
    kind: LookupKind,
    side: StreamSide,
    filter: Option<Arc<dyn PhysicalExpr>>,
    output_schema: SchemaRef,
    /// Stream rows whose ON condition failed, since the last drain.
    errors: Vec<RowError>,
}

impl LookupJoinExec {
    /// Builds the hash map of `table` on `table_keys`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table_schema: SchemaRef,
        table_batches: &[RecordBatch],
        table_keys: Vec<Arc<dyn PhysicalExpr>>,
        stream_keys: Vec<Arc<dyn PhysicalExpr>>,
        kind: LookupKind,
        side: StreamSide,
        filter: Option<Arc<dyn PhysicalExpr>>,
        output_schema: SchemaRef,
    ) -> Result<Self> {
        let table = concat_batches(&table_schema, table_batches)?;
        let key_types = table_keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&table_schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(key_types)?;
        let index = build_index(&table, &table_keys, &converter)?;
        Ok(Self {
            stream_keys,
            table_keys,
            live_key: None,
            table: Arc::new(RwLock::new(Table { rows: table, index })),
            owns_table: true,
            converter,
            kind,
            side,
            filter,
            output_schema,
            errors: Vec::new(),
        })
    }

    /// Lets the table follow its topic, fed as `feed`: `key_column` (a column of the table
    /// side) holds the key that upserts replace and tombstones delete.
    pub fn follow_updates(&mut self, feed: usize, key_column: usize) {
        self.live_key = Some((feed, key_column));
    }

    /// The table as it is now: changed only between micro-batches, never while a lane reads.
    fn table(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn assemble(
        &self,
        table: &RecordBatch,
        stream: &RecordBatch,
        stream_idx: &[u32],
        table_idx: &[Option<u32>],
    ) -> Result<RecordBatch> {
        let s = UInt32Array::from(stream_idx.to_vec());
        let t = UInt32Array::from(table_idx.to_vec());
        let stream_cols = stream.columns().iter().map(|c| Ok(take(c, &s, None)?));
        let table_cols = table.columns().iter().map(|c| Ok(take(c, &t, None)?));
        let columns: Vec<ArrayRef> = match self.side {
            StreamSide::Left => stream_cols.chain(table_cols).collect::<Result<_>>()?,
            StreamSide::Right => table_cols.chain(stream_cols).collect::<Result<_>>()?,
        };
        let schema = super::window_aggregate::relaxed(&self.output_schema);
        Ok(RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(stream_idx.len())),
        )?)
    }
}

/// Which pairs of `pairs` the join's extra ON condition keeps (NULL counts as false, as in SQL).
fn condition(filter: &Arc<dyn PhysicalExpr>, pairs: &RecordBatch) -> Result<BooleanArray> {
    let mask = filter
        .evaluate(pairs)
        .and_then(|v| v.into_array(pairs.num_rows()))
        .map_err(|e| VeloError::Execution(format!("{filter}: {e}")))?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| VeloError::Execution("a join condition must be boolean".into()))?;
    Ok(mask.iter().map(|m| Some(m == Some(true))).collect())
}

fn build_index(
    table: &RecordBatch,
    table_keys: &[Arc<dyn PhysicalExpr>],
    converter: &RowConverter,
) -> Result<HashMap<Box<[u8]>, Vec<u32>>> {
    let key_columns = table_keys
        .iter()
        .map(|k| Ok(k.evaluate(table)?.into_array(table.num_rows())?))
        .collect::<Result<Vec<ArrayRef>>>()?;
    let mut index: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
    if table_keys.is_empty() {
        // No equality: every row is a candidate (see `LookupJoinExec::process`).
        return Ok(index);
    }
    let rows = converter.convert_columns(&key_columns)?;
    for r in 0..table.num_rows() {
        if key_columns.iter().any(|c| c.is_null(r)) {
            continue;
        }
        index
            .entry(rows.row(r).as_ref().into())
            .or_default()
            .push(r as u32);
    }
    Ok(index)
}

impl StreamOperator for LookupJoinExec {
    fn name(&self) -> &'static str {
        "LookupJoinExec"
    }

    /// Each stream row is joined with the table as it is: the table changes only between
    /// micro-batches, for every lane's copy at once, so any cut of the stream gives the same
    /// rows in the same order.
    fn row_wise(&self) -> bool {
        true
    }

    fn as_lookup_join(&self) -> Option<&LookupJoinExec> {
        Some(self)
    }

    fn drain_row_errors(&mut self) -> Vec<RowError> {
        std::mem::take(&mut self.errors)
    }

    /// Drops this copy's table for `first`'s: one table (rows and index) per job, whatever
    /// the lane count.
    fn share_with(&mut self, first: &dyn StreamOperator) -> Result<()> {
        let first = first
            .as_lookup_join()
            .filter(|f| f.live_key == self.live_key && f.output_schema == self.output_schema)
            .ok_or_else(|| {
                VeloError::Execution(
                    "a lane's copy of a lookup join was planned otherwise than the first lane's"
                        .into(),
                )
            })?;
        self.table = first.table.clone();
        self.owns_table = false;
        Ok(())
    }

    /// A table following its topic is state: its rows as of the checkpoint, which the job
    /// follows on from the table's checkpointed offsets. A file table is read again at start.
    /// A copy sharing another's table holds none of its own.
    fn snapshot(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(match self.live_key {
            Some(_) if self.owns_table => vec![self.table().rows.clone()],
            _ => Vec::new(),
        })
    }

    fn restore(&mut self, state: &[RecordBatch]) -> Result<()> {
        let fields = self.table().rows.schema().fields().clone();
        match (self.live_key, state) {
            (_, []) => Ok(()),
            (Some(_), [table]) if self.owns_table && table.schema().fields() == &fields => {
                let index = build_index(table, &self.table_keys, &self.converter)?;
                *self.table.write().unwrap_or_else(PoisonError::into_inner) = Table {
                    rows: table.clone(),
                    index,
                };
                Ok(())
            }
            _ => Err(VeloError::State(
                "the checkpoint's lookup table does not match this join's table".into(),
            )),
        }
    }

    fn apply_table_changes(
        &mut self,
        feed: usize,
        upserts: &RecordBatch,
        deletes: &[String],
    ) -> Result<bool> {
        let Some((_, key)) = self.live_key.filter(|(f, _)| *f == feed) else {
            return Ok(false);
        };
        if !self.owns_table {
            return Err(VeloError::Execution(
                "a table's changes go to the first lane's join, whose table the others share"
                    .into(),
            ));
        }
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let schema = table.rows.schema();
        // The update rows, laid out as the table side (columns by name, cast when needed).
        let columns = schema
            .fields()
            .iter()
            .map(|f| match upserts.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                Some(c) => Ok(arrow::compute::cast(c, f.data_type())?),
                None => Ok(arrow::array::new_null_array(
                    f.data_type(),
                    upserts.num_rows(),
                )),
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let upserts = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(upserts.num_rows())),
        )?;
        let as_text = |b: &RecordBatch| -> Result<arrow::array::StringArray> {
            Ok(
                arrow::compute::cast(b.column(key), &arrow::datatypes::DataType::Utf8)?
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .expect("cast to Utf8")
                    .clone(),
            )
        };
        let mut gone: std::collections::HashSet<String> = deletes.iter().cloned().collect();
        gone.extend(as_text(&upserts)?.iter().flatten().map(str::to_string));
        let existing = as_text(&table.rows)?;
        let keep: BooleanArray = existing
            .iter()
            .map(|k| Some(!k.is_some_and(|k| gone.contains(k))))
            .collect();
        let kept = arrow::compute::filter_record_batch(&table.rows, &keep)?;
        let rows = concat_batches(&schema, [&kept, &upserts])?;
        table.index = build_index(&rows, &self.table_keys, &self.converter)?;
        table.rows = rows;
        Ok(true)
    }

    /// The table held for lookups (rows and bytes), counted by the copy that owns it.
    fn metrics(&self) -> super::OperatorMetrics {
        if !self.owns_table {
            return super::OperatorMetrics::default();
        }
        let table = self.table();
        super::OperatorMetrics {
            state_rows: table.rows.num_rows() as u64,
            state_bytes: (table.rows.get_array_memory_size()
                + table.index.keys().map(|k| k.len() + 32).sum::<usize>())
                as u64,
            ..Default::default()
        }
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let shared = self.table.clone();
        let table = &*shared.read().unwrap_or_else(PoisonError::into_inner);
        let rows = batch.num_rows();
        let keys = self
            .stream_keys
            .iter()
            .map(|k| Ok(k.evaluate(&batch)?.into_array(rows)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let mut stream_idx = Vec::with_capacity(rows);
        let mut table_idx = Vec::with_capacity(rows);
        if keys.is_empty() {
            // An ON without an equality (`t.symbol <> l.symbol`): every table row is a
            // candidate, the condition (the filter below) decides.
            let table_rows = table.rows.num_rows() as u32;
            for r in 0..rows as u32 {
                stream_idx.extend(std::iter::repeat_n(r, table_rows as usize));
                table_idx.extend((0..table_rows).map(Some));
            }
        }
        let key_rows = self.converter.convert_columns(&keys)?;
        for r in (0..rows).filter(|_| !keys.is_empty()) {
            let matches = if keys.iter().any(|k| k.is_null(r)) {
                None
            } else {
                table.index.get(key_rows.row(r).as_ref())
            };
            for &t in matches.into_iter().flatten() {
                stream_idx.push(r as u32);
                table_idx.push(Some(t));
            }
        }
        let mut out = self.assemble(&table.rows, &batch, &stream_idx, &table_idx)?;
        // Stream rows whose ON condition could not be evaluated: left out, and reported.
        let mut failed = vec![false; rows];
        if let Some(filter) = &self.filter {
            let keep = match condition(filter, &out) {
                Ok(keep) => keep,
                // Pair by pair: a stream row any of whose pairs fails is left out (all its
                // pairs, and no row with NULLs for it) and reported once.
                Err(_) => BooleanArray::from(
                    (0..out.num_rows())
                        .map(|pair| {
                            let s = stream_idx[pair] as usize;
                            match condition(filter, &out.slice(pair, 1)) {
                                Ok(keep) => keep.value(0),
                                Err(e) => {
                                    if !failed[s] {
                                        failed[s] = true;
                                        self.errors.push(RowError {
                                            input_row: s,
                                            row: batch.slice(s, 1),
                                            reason: format!(
                                                "the join's ON condition cannot be evaluated: {e}"
                                            ),
                                        });
                                    }
                                    false
                                }
                            }
                        })
                        .collect::<Vec<_>>(),
                ),
            };
            let keep: BooleanArray = keep
                .iter()
                .zip(&stream_idx)
                .map(|(k, &s)| Some(k == Some(true) && !failed[s as usize]))
                .collect();
            out = arrow::compute::filter_record_batch(&out, &keep)?;
            let kept: Vec<u32> = stream_idx
                .iter()
                .zip(keep.iter())
                .filter(|(_, k)| *k == Some(true))
                .map(|(s, _)| *s)
                .collect();
            stream_idx = kept;
        }
        if self.kind == LookupKind::KeepStream {
            // Stream rows with no (remaining) match: once, with NULL table columns.
            let mut matched = failed;
            for &s in &stream_idx {
                matched[s as usize] = true;
            }
            let unmatched: Vec<u32> = (0..rows as u32).filter(|&r| !matched[r as usize]).collect();
            if !unmatched.is_empty() {
                let nulls = vec![None; unmatched.len()];
                let extra = self.assemble(&table.rows, &batch, &unmatched, &nulls)?;
                // Keep the stream's order: merge by stream row index.
                let mut order: Vec<(u32, usize, usize)> = stream_idx
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (s, 0, i))
                    .chain(unmatched.iter().enumerate().map(|(i, &s)| (s, 1, i)))
                    .collect();
                order.sort();
                let both = concat_batches(&out.schema(), [&out, &extra])?;
                let offset = out.num_rows();
                let indices = UInt32Array::from(
                    order
                        .iter()
                        .map(|&(_, which, i)| {
                            if which == 0 {
                                i as u32
                            } else {
                                (offset + i) as u32
                            }
                        })
                        .collect::<Vec<_>>(),
                );
                out = arrow::compute::take_record_batch(&both, &indices)?;
            }
        }
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn strings(names: &[&str], rows: &[&[Option<&str>]]) -> RecordBatch {
        let schema = Arc::new(Schema::new(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let columns = (0..names.len())
            .map(|c| Arc::new(rows.iter().map(|r| r[c]).collect::<StringArray>()) as ArrayRef)
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// A followed table (`symbol`, `sector`) joined with a stream of `symbol`s.
    fn join(table: &RecordBatch) -> LookupJoinExec {
        let output = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("symbol", DataType::Utf8, true),
            Field::new("sector", DataType::Utf8, true),
        ]));
        let mut join = LookupJoinExec::new(
            table.schema(),
            std::slice::from_ref(table),
            vec![Arc::new(Column::new("symbol", 0))],
            vec![Arc::new(Column::new("s", 0))],
            LookupKind::KeepStream,
            StreamSide::Left,
            None,
            output,
        )
        .unwrap();
        join.follow_updates(0, 0);
        join
    }

    fn sectors(join: &mut LookupJoinExec, symbols: &[&str]) -> Vec<Option<String>> {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let symbols = Arc::new(StringArray::from(symbols.to_vec()));
        let stream = RecordBatch::try_new(schema, vec![symbols]).unwrap();
        let out = join.process(stream).unwrap();
        out[0]
            .column(2)
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }

    #[test]
    fn copies_sharing_a_table_see_the_first_copys_changes_and_hold_no_table_of_their_own() {
        let table = strings(
            &["symbol", "sector"],
            &[
                &[Some("AAPL"), Some("Tech")],
                &[Some("JPM"), Some("Finance")],
            ],
        );
        let mut first = join(&table);
        let mut copy = join(&table);
        copy.share_with(&first).unwrap();

        let change = strings(&["symbol", "sector"], &[&[Some("AAPL"), Some("Hardware")]]);
        assert!(first
            .apply_table_changes(0, &change, &["JPM".to_string()])
            .unwrap());
        let expected = vec![Some("Hardware".to_string()), None, None];
        assert_eq!(sectors(&mut copy, &["AAPL", "JPM", "MSFT"]), expected);
        assert_eq!(sectors(&mut first, &["AAPL", "JPM", "MSFT"]), expected);

        // The table is counted, checkpointed and changed once: by the first copy.
        assert_eq!(first.metrics().state_rows, 1);
        assert_eq!(copy.metrics(), super::super::OperatorMetrics::default());
        assert_eq!(first.snapshot().unwrap().len(), 1);
        assert!(copy.snapshot().unwrap().is_empty());
        assert!(copy.apply_table_changes(0, &change, &[]).is_err());

        // Restored on the first copy, the table is the copy's too.
        let restored = strings(&["symbol", "sector"], &[&[Some("MSFT"), Some("Cloud")]]);
        first.restore(&[restored]).unwrap();
        assert_eq!(
            sectors(&mut copy, &["AAPL", "MSFT"]),
            vec![None, Some("Cloud".to_string())]
        );
    }
}
