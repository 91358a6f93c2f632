//! Runs a query over records held in memory, micro-batch by micro-batch, exactly as the runtime
//! does it (decode → pipeline → watermark → emit), without a source or a sink. Used by the SQL
//! cases harness, the window oracle tests and benchmarks.

use std::time::Duration;

use arrow::array::RecordBatch;
use velo_connectors::record::{RecordBatchCollector, SourceBatch};

use crate::catalog::{Catalog, StreamDef};
use crate::error::{Result, VeloError};
use crate::operators::{Pipeline, Watermark};
use crate::planner::{new_session, plan_query, QueryRequest};
use crate::runtime::InputAdapter;
use crate::sql::parse_script;
use crate::watermark::WatermarkTracker;

/// A planned query fed by hand. The SQL text must declare its input with `CREATE STREAM` and
/// columns; pushed records are that stream's payloads (partition 0, offsets counting from 0,
/// record timestamps `1_700_000_000_000 + offset`, key `k`).
pub struct Replay {
    stream: String,
    input: InputAdapter,
    pipeline: Pipeline,
    watermark: Option<(usize, WatermarkTracker)>,
    next_offset: i64,
    /// Records rejected so far (bad JSON, wrong types).
    pub bad_records: usize,
}

impl Replay {
    /// Plans `sql`.
    pub fn plan(sql: &str) -> Result<Self> {
        let script = parse_script(sql)?;
        let mut catalog = Catalog::default();
        for decl in &script.streams {
            let mut def = StreamDef::from_decl(decl)?;
            if def.is_table {
                // File tables only: there is no broker here.
                let nowhere = velo_connectors::kafka::KafkaConnection::new(
                    "127.0.0.1:1",
                    Duration::from_secs(1),
                );
                let loaded = crate::table::load(&def, &nowhere)?;
                def.schema = Some(loaded.schema);
                def.rows = Some(std::sync::Arc::new(loaded.rows));
            }
            catalog.insert(def);
        }
        let stream = script
            .streams
            .iter()
            .find(|s| !s.is_table)
            .ok_or_else(|| VeloError::Usage("declare the input with CREATE STREAM".into()))?
            .name
            .clone();
        let ctx = new_session()?;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let planned = runtime.block_on(plan_query(
            &ctx,
            &catalog,
            &QueryRequest::from_script(&script),
        ))?;
        let watermark = match &planned.event_time {
            Some(column) => Some((
                planned.scan.schema.index_of(column)?,
                WatermarkTracker::new(
                    planned.scan.stream.watermark_delay_ms,
                    Duration::from_secs(86_400),
                ),
            )),
            None => None,
        };
        let mut input = InputAdapter::new(planned.scan)?;
        if let Some((index, _)) = &watermark {
            input.set_event_time(*index);
        }
        Ok(Self {
            stream,
            input,
            pipeline: planned.pipeline,
            watermark,
            next_offset: 0,
            bad_records: 0,
        })
    }

    /// Runs one micro-batch of payloads; returns what the query emitted.
    pub fn push(&mut self, payloads: &[&[u8]]) -> Result<Vec<RecordBatch>> {
        let batch = self.collect(payloads);
        self.push_batch(&batch)
    }

    fn collect(&mut self, payloads: &[&[u8]]) -> SourceBatch {
        let mut collector = RecordBatchCollector::new(payloads.len());
        for payload in payloads {
            let offset = self.next_offset;
            self.next_offset += 1;
            collector.push(
                Some(payload),
                Some(b"k"),
                &self.stream,
                0,
                offset,
                Some(1_700_000_000_000 + offset),
                std::iter::empty(),
            );
        }
        collector.finish()
    }

    /// Runs one micro-batch as a source hands it over (encoded or already decoded).
    pub fn push_batch(&mut self, batch: &SourceBatch) -> Result<Vec<RecordBatch>> {
        let mut bad = Vec::new();
        let (scan, partitions) = self.input.adapt_with_partitions(batch, &mut bad)?;
        self.bad_records += bad.len();
        if let Some((column, tracker)) = self.watermark.as_mut() {
            tracker.observe(&partitions, scan.column(*column))?;
        }
        let mut out = self.pipeline.process(scan)?;
        if let Some(watermark) = self.watermark.as_mut().and_then(|(_, t)| t.current()) {
            out.extend(self.pipeline.advance_watermark(Watermark(watermark))?);
        }
        Ok(out)
    }

    /// Ends the input: the watermark goes to +∞ and everything held is emitted.
    pub fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        self.pipeline.advance_watermark(Watermark::END)
    }

    /// True when the query can emit nothing more (a reached LIMIT).
    pub fn is_finished(&self) -> bool {
        self.pipeline.is_finished()
    }

    /// The operators' state.
    pub fn snapshot(&mut self) -> Result<Vec<Vec<RecordBatch>>> {
        self.pipeline.snapshot()
    }

    /// Restores operator state taken by [`Replay::snapshot`] (from a replay of the same SQL)
    /// and continues numbering records at `next_offset`.
    pub fn restore(&mut self, state: &[Vec<RecordBatch>], next_offset: i64) -> Result<()> {
        self.next_offset = next_offset;
        self.pipeline.restore(state)
    }

    /// The offset the next pushed record gets.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
}
