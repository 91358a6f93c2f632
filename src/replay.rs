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
    /// Per input (in pipeline input order): the stream's name, its adapter and event-time
    /// column.
    inputs: Vec<(String, InputAdapter, Option<usize>)>,
    pipeline: Pipeline,
    watermark: Option<WatermarkTracker>,
    next_offset: i64,
    /// Records rejected so far (bad JSON, wrong types).
    pub bad_records: usize,
}

impl Replay {
    /// Plans `sql`.
    pub fn plan(sql: &str) -> Result<Self> {
        Self::plan_with(sql, |_| {})
    }

    /// Plans `sql`, letting `configure` change the request first (e.g. a state TTL).
    pub fn plan_with(sql: &str, configure: impl FnOnce(&mut QueryRequest)) -> Result<Self> {
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
        if !script.streams.iter().any(|s| !s.is_table) {
            return Err(VeloError::Usage(
                "declare the input with CREATE STREAM".into(),
            ));
        }
        let ctx = new_session()?;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let mut request = QueryRequest::from_script(&script);
        configure(&mut request);
        let planned = runtime.block_on(plan_query(&ctx, &catalog, &request))?;
        let mut inputs = Vec::new();
        let mut delays = Vec::new();
        for scan in planned.scans {
            let event_time = match &scan.event_time {
                Some(column) => Some(scan.schema.index_of(column)?),
                None => None,
            };
            delays.push(scan.stream.watermark_delay_ms);
            let name = scan.stream.name.clone();
            let mut adapter = InputAdapter::new(scan)?;
            if let Some(index) = event_time {
                adapter.set_event_time(index);
            }
            inputs.push((name, adapter, event_time));
        }
        let watermark = inputs
            .iter()
            .any(|(_, _, t)| t.is_some())
            .then(|| WatermarkTracker::with_inputs(delays, Duration::from_secs(86_400)));
        Ok(Self {
            inputs,
            pipeline: planned.pipeline,
            watermark,
            next_offset: 0,
            bad_records: 0,
        })
    }

    /// Runs one micro-batch of payloads of the (first) input; returns what the query emitted.
    pub fn push(&mut self, payloads: &[&[u8]]) -> Result<Vec<RecordBatch>> {
        let batch = self.collect(0, payloads);
        self.push_input(0, &batch)
    }

    /// Runs one micro-batch of payloads of the stream `stream` (a query reading several).
    pub fn push_to(&mut self, stream: &str, payloads: &[&[u8]]) -> Result<Vec<RecordBatch>> {
        let input = self
            .inputs
            .iter()
            .position(|(name, _, _)| name == stream)
            .ok_or_else(|| VeloError::Usage(format!("the query does not read '{stream}'")))?;
        let batch = self.collect(input, payloads);
        self.push_input(input, &batch)
    }

    fn collect(&mut self, input: usize, payloads: &[&[u8]]) -> SourceBatch {
        let mut collector = RecordBatchCollector::new(payloads.len());
        for payload in payloads {
            let offset = self.next_offset;
            self.next_offset += 1;
            collector.push(
                Some(payload),
                Some(b"k"),
                &self.inputs[input].0,
                0,
                offset,
                Some(1_700_000_000_000 + offset),
                std::iter::empty(),
            );
        }
        collector.finish()
    }

    /// Runs one micro-batch of input `input` (in the order the pipeline numbers its inputs), as
    /// a source hands it over (encoded or already decoded).
    pub fn push_input(&mut self, input: usize, batch: &SourceBatch) -> Result<Vec<RecordBatch>> {
        let mut bad = Vec::new();
        let (_, adapter, event_time) = &mut self.inputs[input];
        let (scan, partitions) = adapter.adapt_with_partitions(batch, &mut bad)?;
        self.bad_records += bad.len();
        if let (Some(column), Some(tracker)) = (*event_time, self.watermark.as_mut()) {
            tracker.observe_input(input, &partitions, scan.column(column))?;
        }
        let mut out = self.pipeline.process_input(input, scan)?;
        if let Some(watermark) = self.watermark.as_mut().and_then(|t| t.current()) {
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

    /// The operators' counters and state size now.
    pub fn metrics(&self) -> crate::operators::OperatorMetrics {
        self.pipeline.metrics()
    }

    /// The offset the next pushed record gets.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
}
