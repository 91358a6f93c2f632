//! Turns a [`JobSpec`] into a [`Runner`]: parses and plans the query, resolves every input
//! (declared streams and tables, topics, generators; schemas given, read from Avro/Protobuf
//! files or a registry, or inferred), opens the sources and sinks, and restores the job's last
//! checkpoint when it has one — operators, watermark, the sink's position and the inputs'
//! offsets together, or none of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use sha2::Digest;
use velo_connectors::codec::json::infer_schema;
use velo_connectors::codec::PayloadFormat;
use velo_connectors::exactly_once::ExactlyOnceKafkaSink;
use velo_connectors::file_source::{FileFormat, FileSource, FileSourceSpec};
use velo_connectors::format::OutputFormat;
use velo_connectors::generator::{GeneratorSource, GeneratorSpec};
use velo_connectors::kafka::{DeadLetterQueue, KafkaConnection, KafkaSource, ReadMode};
use velo_connectors::prefetch::Prefetch;
use velo_connectors::record::Payload;
use velo_connectors::sink::{FileSink, KafkaSink, MessageFormat, Sink, TextSink};
use velo_connectors::source::Source;

use super::checkpoint::{self, Acknowledge, Checkpoint, CheckpointStore, Checkpointer, LocalStore};
use super::input::{InputAdapter, JobInput, TableFollower};
use super::lanes::{Exchange, Lane, Lanes, Split};
use super::progress::ErrorKind;
use super::progress::{JobProgress, JobStats};
use super::runner::Runner;
use super::spec::{Delivery, JobHooks, JobSpec, OnError, OutputTarget, ReadSpec};
use crate::catalog::{Catalog, StreamDef, StreamSource};
use crate::error::{Result, VeloError};
use crate::operators::Pipeline;
use crate::planner::{plan_query, referenced_tables, PlannedQuery, QueryRequest, ScanLayout};
use crate::sql::window::{WindowClause, WindowKind};
use crate::sql::{parse_column_list, parse_script};
use crate::watermark::WatermarkTracker;

/// Builds and runs `spec` to its end (a bounded input read, LIMIT reached, or `stop`).
pub async fn run(spec: JobSpec, hooks: JobHooks) -> Result<JobStats> {
    let Some(mut runner) = build(spec, hooks).await? else {
        return Ok(JobStats::default());
    };
    // The job's thread logs inside the caller's span (a server job's `job` span).
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| runner.run()))
        .await
        .map_err(|e| VeloError::Execution(format!("the job thread failed: {e}")))?
}

/// A stream the planned query reads, before it has a source.
pub(crate) struct PlannedInput {
    pub name: String,
    /// Told its event-time column.
    pub adapter: InputAdapter,
    /// The scan column holding event time.
    pub event_time: Option<usize>,
}

/// The further lanes of a query split as `split`, `count` lanes in all: the query planned
/// again for each, as a lane copy (its lookup tables left empty, not computed again), that
/// then shares with `first` (the first lane's pipeline) what their operators only read (a
/// lookup join's table). (`first` is borrowed mutably only so that the future is `Send`: a
/// shared borrow of a pipeline is not.)
pub(crate) async fn plan_lanes(
    ctx: &SessionContext,
    catalog: &Catalog,
    request: &QueryRequest,
    first: &mut Pipeline,
    split: Split,
    count: usize,
    idle_timeout: Duration,
) -> Result<Lanes> {
    let mut lanes = Lanes::default();
    let request = QueryRequest {
        lane_copy: true,
        ..request.clone()
    };
    for _ in 1..count {
        let mut copy = plan_query(ctx, catalog, &request).await?;
        copy.pipeline.share_with(first)?;
        let (inputs, _) = scan_inputs(copy.scans, idle_timeout)?;
        lanes.extra.push(Lane {
            adapters: inputs.into_iter().map(|i| i.adapter).collect(),
            pipeline: copy.pipeline,
        });
    }
    lanes.exchange = match split {
        Split::Exchange(exchange) => Some(exchange),
        Split::Rows => None,
    };
    if count > 1 {
        lanes.pool = Some(super::lanes::lane_pool(count - 1)?);
    }
    Ok(lanes)
}

/// The scans of a planned query as job inputs (without sources yet), and the watermark
/// tracker over them.
pub(crate) fn scan_inputs(
    scans: Vec<ScanLayout>,
    idle_timeout: Duration,
) -> Result<(Vec<PlannedInput>, Option<WatermarkTracker>)> {
    let mut inputs = Vec::new();
    let mut delays = Vec::new();
    for scan in scans {
        let event_time = match &scan.event_time {
            Some(column) => Some(scan.schema.index_of(column).map_err(|_| {
                VeloError::Usage(format!(
                    "the event time of a window must be a column of the stream; '{column}' is not"
                ))
            })?),
            None => None,
        };
        delays.push(scan.stream.watermark_delay_ms);
        let name = scan.stream.name.clone();
        let mut adapter = InputAdapter::new(scan)?;
        if let Some(column) = event_time {
            adapter.set_event_time(column);
        }
        inputs.push(PlannedInput {
            name,
            adapter,
            event_time,
        });
    }
    let watermark = inputs
        .iter()
        .any(|i| i.event_time.is_some())
        .then(|| WatermarkTracker::with_inputs(delays, idle_timeout));
    Ok((inputs, watermark))
}

/// What identifies a query's state: its optimised plan (names, types, windows), each input's
/// event time and lateness, and the operators. State is only restored into the same.
fn fingerprint(planned: &PlannedQuery) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(planned.logical_plan.as_bytes());
    for scan in &planned.scans {
        if let StreamSource::Topic(topic) = &scan.stream.source {
            hash.update(topic.as_bytes());
        }
        hash.update(scan.schema.to_string().as_bytes());
        hash.update(format!(
            "{:?}/{}",
            scan.event_time, scan.stream.watermark_delay_ms
        ));
    }
    hash.update(planned.pipeline.describe().join(",").as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the job `spec` describes. `Ok(None)` when there is nothing to run: the only input is
/// an empty topic with no schema (the empty result has been written).
pub async fn build(spec: JobSpec, hooks: JobHooks) -> Result<Option<Runner>> {
    let script = parse_script(&spec.sql)?;
    let statement = script
        .query
        .clone()
        .ok_or_else(|| VeloError::sql("the text holds no SELECT query", None))?;
    let bounded = spec.is_bounded();
    let mut request = QueryRequest::from_script(&script);
    request.bounded = bounded;
    request.state_ttl_ms = spec.state_ttl_ms;
    // One `now()` for the query and every copy of it planned for a worker lane.
    request.start_time = Some(chrono::Utc::now());
    if let (None, Some(seconds)) = (&request.window, spec.window_size_s) {
        request.window = Some(WindowClause {
            kind: WindowKind::Tumbling {
                size: seconds as i64 * 1000,
            },
            time_column: None,
            location: None,
        });
    }
    let conceal = |what: String, e: VeloError| {
        if spec.conceal_file_errors {
            crate::job::sandbox::conceal(&what, e)
        } else {
            e
        }
    };
    let declared = script
        .streams
        .iter()
        .map(|decl| {
            StreamDef::from_decl(decl).map_err(|e| conceal(format!("declaring '{}'", decl.name), e))
        })
        .collect::<Result<Vec<_>>>()?;
    let ctx = crate::planner::new_session_with_memory_limit(spec.runtime.max_state_bytes)?;
    let connection = connection(&spec);
    let Some(catalog) = resolve_inputs(&spec, &connection, &ctx, declared, &statement).await?
    else {
        // An empty topic and no schema: nothing to plan against, and nothing to show.
        let empty: SchemaRef = Arc::new(Schema::empty());
        let mut sink = match hooks.sink {
            Some(factory) => factory(empty, None)?,
            None => open_sink(&spec, &connection, &empty)?,
        };
        sink.finish()?;
        return Ok(None);
    };
    let planned = plan_query(&ctx, &catalog, &request).await?;
    tracing::debug!("plan:\n{}", planned.logical_plan);
    let idle_timeout = Duration::from_millis(spec.idle_timeout_ms.max(1) as u64);
    let fingerprint = fingerprint(&planned);
    let described = describe_query(&spec.sql, &planned);
    let mut spec = spec;
    if spec.name.is_empty() {
        spec.name = default_name(&spec, &planned);
    }
    let PlannedQuery {
        scans,
        mut pipeline,
        output_schema,
        group_key_columns,
        table_feeds,
        ..
    } = planned;

    // The job's state: its last checkpoint (or a savepoint), checked against this query. A
    // job reading only generators keeps none: each run generates afresh.
    // Topics and files can be read again from a position; a generator starts afresh.
    let reads_topics = scans.iter().any(|scan| {
        matches!(
            scan.stream.source,
            StreamSource::Topic(_) | StreamSource::File { .. }
        )
    });
    if bounded || !reads_topics {
        spec.state = None;
    }
    let state = spec.state.clone();
    let state = state.as_ref();
    let mut restored: Option<Checkpoint> = None;
    let mut checkpointer = None;
    if let Some(state) = state {
        let dir = state.job_dir(&spec.name);
        let folder = dir.join("checkpoints");
        if state.ignore_state && folder.exists() {
            let aside = dir.join(format!(
                "checkpoints.ignored-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
            ));
            std::fs::rename(&folder, &aside)
                .map_err(|e| VeloError::State(format!("{}: {e}", folder.display())))?;
            tracing::warn!(
                "--ignore-state: the old checkpoints of job '{}' are in {}",
                spec.name,
                aside.display()
            );
        }
        let store = LocalStore::open(&folder)?;
        let found = match &state.savepoint {
            Some(savepoint) => Some(checkpoint::load_folder(savepoint)?),
            None => checkpoint::load_latest(&store)?,
        };
        let next_id = store.list()?.last().map_or(1, |id| id + 1);
        if let Some(found) = found {
            if found.fingerprint != fingerprint {
                return Err(VeloError::StateMismatch {
                    dir: match &state.savepoint {
                        Some(s) => s.display().to_string(),
                        None => folder.display().to_string(),
                    },
                    old: found.query.clone(),
                    new: described.clone(),
                });
            }
            tracing::info!(
                "job '{}': restoring checkpoint {} ({}, {} state rows)",
                spec.name,
                found.id,
                found.created_at,
                found.state_rows()
            );
            if spec.delivery == Delivery::ExactlyOnce
                && state.savepoint.is_none()
                && found.id + 1 < next_id
            {
                tracing::warn!(
                    "job '{}': newer checkpoints than {} were damaged: results they had written \
                     may appear again on the output topic (exactly-once holds from here on)",
                    spec.name,
                    found.id
                );
            }
            restored = Some(found);
        }
        checkpointer = Some(Checkpointer {
            store: Box::new(store),
            interval: state.checkpoint_interval,
            keep: state.keep.max(1),
            next_id: next_id.max(restored.as_ref().map_or(1, |c| c.id + 1)),
            job: spec.name.clone(),
            fingerprint,
            query: described.clone(),
            acknowledge: Acknowledge::WithCheckpoints,
            last: Instant::now(),
        });
    }
    // Offsets: a checkpoint acknowledged with its offsets is where the inputs start; one that
    // acknowledged per micro-batch left newer offsets in the group.
    let seek_inputs = restored
        .as_ref()
        .is_some_and(|c| c.acknowledge == Acknowledge::WithCheckpoints);

    // The further lanes: the same query planned again for each. A keyed query restored from
    // a checkpoint keeps the checkpoint's lane count (each lane holds its keys' state). A
    // lookup join's table is held once: the copies share the first lane's, whose join alone
    // takes a followed table's changes, between micro-batches.
    let split = Split::of(&pipeline);
    let mut lane_count = spec.runtime.parallelism.max(1);
    if let (Some(Split::Exchange(exchange)), Some(checkpoint)) = (&split, &restored) {
        let saved = checkpoint.lanes.max(1);
        if exchange.by_key() && saved != lane_count {
            tracing::info!(
                "job '{}': runs on {saved} lanes, as its checkpoint was taken (a keyed query's \
                 state is split by key across lanes); --ignore-state starts afresh on \
                 {lane_count}",
                spec.name
            );
            lane_count = saved;
        }
    }
    let lanes = match split.filter(|_| lane_count > 1) {
        Some(split) => {
            plan_lanes(
                &ctx,
                &catalog,
                &request,
                &mut pipeline,
                split,
                lane_count,
                idle_timeout,
            )
            .await?
        }
        None => Lanes::default(),
    };

    let several = scans.len() > 1;
    let (adapters, watermark) = scan_inputs(scans, idle_timeout)?;
    let mut inputs = Vec::new();
    // How often each stream was read by the inputs so far: a stream the query reads twice (a
    // self-join) is two inputs, each with a consumer group of its own.
    let mut references: HashMap<String, usize> = HashMap::new();
    for (
        index,
        PlannedInput {
            name,
            adapter,
            event_time,
        },
    ) in adapters.into_iter().enumerate()
    {
        let reference = {
            let seen = references.entry(name.clone()).or_default();
            *seen += 1;
            *seen
        };
        let stream = catalog.get(&name).expect("planned from the catalog");
        let mut source: Box<dyn Source> = match &stream.source {
            StreamSource::File { path, .. } if stream.is_table => {
                return Err(VeloError::Unsupported(format!(
                    "the query reads only the table '{}' ({}); a query needs a stream to run on",
                    stream.name,
                    path.display()
                )))
            }
            StreamSource::File { path, format } => Box::new(FileSource::open(FileSourceSpec {
                path: path.display().to_string(),
                format: FileFormat::parse(format),
                follow: !bounded,
                schema: stream.schema.clone(),
            })?),
            StreamSource::Generator(generator) => Box::new(GeneratorSource::new(generator.clone())),
            StreamSource::Topic(topic) => {
                let read_mode = match &spec.read {
                    ReadSpec::Bounded {
                        start,
                        partition,
                        group_id,
                    } => ReadMode::Snapshot {
                        start: *start,
                        partition: *partition,
                        group_id: group_id.clone(),
                    },
                    ReadSpec::Continuous { group_id, reset } => ReadMode::Group {
                        group_id: group_id_of(
                            group_id.as_deref(),
                            &stream.name,
                            several,
                            reference,
                        ),
                        reset: *reset,
                        instance_id: spec
                            .kafka
                            .instance_id
                            .as_ref()
                            .map(|id| group_id_of(Some(id), &stream.name, several, reference)),
                        session_timeout: spec.kafka.session_timeout,
                        partition: spec.input.partition,
                    },
                };
                let source = KafkaSource::open(&connection, topic, read_mode)?;
                // Headers are read by the query's `_headers` or go with bad records to the
                // dead-letter topic; else they are not parsed at all.
                let headers_read = adapter.reads_metadata(velo_connectors::record::HEADERS_COLUMN)
                    || spec.dlq_topic.is_some();
                let source = match spec.runtime.eager_batches {
                    true => source.eager(),
                    false => source,
                };
                Box::new(match headers_read {
                    true => source,
                    false => source.without_headers(),
                })
            }
        };
        // Files have no consumer group keeping their positions: the checkpoint's always count.
        let seek = seek_inputs || source.positions_only_in_checkpoints();
        if let (true, Some(checkpoint)) = (seek, &restored) {
            // Inputs are saved in the query's order, which the checkpoint's query shares.
            if let Some(saved) = checkpoint.inputs.get(index).filter(|i| i.stream == name) {
                source.seek(&saved.positions)?;
            }
        }
        // Every input is read one batch ahead on a thread of its own, while the job works on
        // the batch before (see `Prefetch`); not with eager micro-batches (the low-latency
        // profile), which run each record as it comes: a hand-over between threads only adds
        // to their latency.
        if !spec.runtime.eager_batches {
            source = Box::new(Prefetch::new(source));
        }
        inputs.push(JobInput::new(name, source, adapter, event_time));
    }
    // The changes of an updating aggregate are keyed by its group key, unless told otherwise.
    if spec.output.key.is_none() && group_key_columns.len() == 1 {
        spec.output.key = group_key_columns.first().cloned();
    }
    let mut sink = match hooks.sink {
        Some(factory) => {
            let described = match spec.output.target {
                OutputTarget::Stdout => None,
                _ => Some(open_sink(&spec, &connection, &output_schema)?),
            };
            factory(output_schema.clone(), described)?
        }
        None => open_sink(&spec, &connection, &output_schema)?,
    };
    // Results the checkpoint held back for exactly-once output: an exactly-once sink
    // delivers what is not on the topic yet; any other sink (the delivery changed) gets them
    // first thing, at least once.
    let mut held_back = Vec::new();
    if let Some(checkpoint) = &restored {
        let mut state = checkpoint.sink.clone();
        if spec.delivery != Delivery::ExactlyOnce {
            held_back = std::mem::take(&mut state.pending);
        }
        sink.restore(checkpoint.id, state)?;
    }
    let dead_letters = spec
        .dlq_topic
        .as_ref()
        .map(|topic| {
            DeadLetterQueue::new(&connection, topic.clone())
                .map(|dlq| dlq.on_failure(spec.dlq_on_error))
        })
        .transpose()?;
    let late_rows: Option<Box<dyn Sink>> = match &spec.late_topic {
        Some(topic) => Some(Box::new(KafkaSink::new(
            &connection,
            topic.clone(),
            MessageFormat::Json,
            &Arc::new(Schema::empty()),
            None,
            spec.output.decimal_format,
        )?)),
        None => None,
    };
    let stop = match hooks.stop {
        Some(stop) => stop,
        None => {
            let stop = Arc::new(AtomicBool::new(false));
            spawn_signal_handler(stop.clone());
            stop
        }
    };
    let mut table_followers = Vec::new();
    if !bounded {
        for feed in table_feeds {
            let def = catalog.get(&feed.table).expect("planned from the catalog");
            let StreamSource::Topic(topic) = &def.source else {
                continue;
            };
            let saved = restored
                .as_ref()
                .and_then(|c| c.tables.iter().find(|t| t.stream == feed.table))
                .map(|t| t.positions.clone());
            let from = saved.clone().unwrap_or_else(|| def.loaded_up_to.clone());
            table_followers.push(TableFollower {
                table: feed.table.clone(),
                source: Box::new(KafkaSource::open(
                    &connection,
                    topic,
                    ReadMode::Follow { from: from.clone() },
                )?),
                decoder: def.decoder(def.table_schema()?)?,
                feed: feed.feed,
                positions: from,
            });
        }
    }
    let progress = hooks
        .progress
        .unwrap_or_else(|| Arc::new(JobProgress::new(spec.name.clone())));
    let mut runner = Runner::new(
        inputs,
        pipeline,
        sink,
        watermark,
        spec.runtime,
        stop,
        progress,
    );
    runner.on_error =
        match (spec.on_error, &dead_letters) {
            (Some(OnError::DeadLetter), None) => return Err(VeloError::Usage(
                "on_error dead-letter needs a dead-letter topic (--dlq-topic T, or 'dlq.topic')"
                    .into(),
            )),
            (Some(policy), _) => policy,
            (None, Some(_)) => OnError::DeadLetter,
            (None, None) => OnError::Skip,
        };
    runner.dead_letters = dead_letters;
    if !lanes.extra.is_empty() {
        tracing::debug!(
            "job '{}': runs on {} lanes ({})",
            spec.name,
            lanes.extra.len() + 1,
            match (&lanes.exchange, runner.sink.row_encoder()) {
                (Some(e), _) if e.by_key() => "rows exchanged by key",
                (Some(Exchange::Gathered { at }), _)
                    if runner.pipeline.partial_watermark(*at).is_some() =>
                {
                    "micro-batches split by range and aggregated on the lanes, the partial \
                     aggregates merged on the first lane"
                }
                (Some(Exchange::Gathered { .. }), _) => {
                    "micro-batches split by range up to the first stateful operator, which runs \
                     on the first lane"
                }
                (Some(_), _) => "the join's inputs split by range",
                (None, Some(_)) => "micro-batches split by range, rows encoded on the lanes",
                (None, None) => "micro-batches split by range",
            }
        );
    }
    runner.lanes = lanes;
    for table in catalog.iter() {
        runner
            .progress
            .count_errors(ErrorKind::Decode, table.skipped_on_load);
    }
    runner.late_rows = late_rows;
    runner.table_followers = table_followers;
    runner.checkpoints = checkpointer;
    runner.rows_left = spec.limit;
    if let Some(checkpoint) = &restored {
        runner.restore(checkpoint)?;
        runner.carry.splice(0..0, held_back);
    }
    if spec.delivery == Delivery::ExactlyOnce {
        tracing::info!(
            "job '{}': exactly-once output: results are written when each checkpoint completes \
             (every {:?}), tagged for deduplication after a restart",
            spec.name,
            spec.state
                .as_ref()
                .map(|s| s.checkpoint_interval)
                .unwrap_or_default()
        );
    }
    Ok(Some(runner))
}

/// A job's name when the spec gives none: its consumer group when one is given, else
/// `velo-sql-<stream>` per stream read, with `-<topic>` when the topic has another name.
fn default_name(spec: &JobSpec, planned: &PlannedQuery) -> String {
    if let ReadSpec::Continuous {
        group_id: Some(group),
        ..
    } = &spec.read
    {
        return group.clone();
    }
    let parts: Vec<String> = planned
        .scans
        .iter()
        .map(|scan| match &scan.stream.source {
            StreamSource::Topic(topic) if *topic != scan.stream.name => {
                format!("{}-{topic}", scan.stream.name)
            }
            _ => scan.stream.name.clone(),
        })
        .collect();
    format!("velo-sql-{}", parts.join("-"))
}

/// The query as a message shows it: its text (on one line) and the topics it reads.
fn describe_query(sql: &str, planned: &PlannedQuery) -> String {
    let topics: Vec<String> = planned
        .scans
        .iter()
        .map(|scan| match &scan.stream.source {
            StreamSource::Topic(topic) => format!("{} = topic '{topic}'", scan.stream.name),
            StreamSource::Generator(g) => format!("{} = generator '{}'", scan.stream.name, g.name),
            StreamSource::File { path, .. } => {
                format!("{} = file '{}'", scan.stream.name, path.display())
            }
        })
        .collect();
    let mut text = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > 400 {
        text = text.chars().take(400).collect::<String>() + "…";
    }
    format!("{text} [{}]", topics.join(", "))
}

/// The consumer group of a continuous input: the given one (default `velo-sql-<stream>`); a
/// query reading several streams gives each its own, `<group>.<stream>`, so each input's
/// offsets are committed on their own. The second and later `reference` of one stream (a
/// self-join reads it twice) get `.2`, `.3`, … after that: two inputs in one group would
/// split the topic's partitions between them instead of each reading all of them.
pub fn group_id_of(given: Option<&str>, stream: &str, several: bool, reference: usize) -> String {
    let group = match (given, several) {
        (Some(group), false) => group.to_string(),
        (Some(group), true) => format!("{group}.{stream}"),
        (None, _) => format!("velo-sql-{stream}"),
    };
    match reference {
        0 | 1 => group,
        n => format!("{group}.{n}"),
    }
}

fn connection(spec: &JobSpec) -> KafkaConnection {
    let mut connection = KafkaConnection::new(
        spec.kafka.brokers.clone(),
        spec.kafka.timeout.max(Duration::from_secs(1)),
    );
    connection.properties.clone_from(&spec.kafka.properties);
    // A fetch waits on the broker for new records no longer than the job waits to flush a
    // micro-batch (librdkafka's default is 500 ms, and some brokers hold an idle fetch that
    // long even when a record arrives meanwhile): what the job's own properties say wins.
    let wait_ms = spec.runtime.flush_interval.as_millis().clamp(1, 500);
    connection.consumer_properties =
        std::iter::once(("fetch.wait.max.ms".into(), wait_ms.to_string()))
            .chain(spec.kafka.consumer_properties.iter().cloned())
            .collect();
    connection
        .producer_properties
        .clone_from(&spec.kafka.producer_properties);
    connection
}

/// Opens the sink the spec's output describes.
fn open_sink(
    spec: &JobSpec,
    connection: &KafkaConnection,
    schema: &SchemaRef,
) -> Result<Box<dyn Sink>> {
    let output = &spec.output;
    let bounded = spec.is_bounded();
    let container = matches!(output.format, OutputFormat::Parquet | OutputFormat::Avro);
    if output.format == OutputFormat::Protobuf && !matches!(output.target, OutputTarget::Kafka(_))
        || output.format == OutputFormat::Avro && matches!(output.target, OutputTarget::Stdout)
    {
        return Err(VeloError::Usage(format!(
            "--format {} writes binary records: use it with --output kafka (Avro also with \
             --output-file x.avro or --output-dir)",
            output.format
        )));
    }
    if container
        && !matches!(
            output.target,
            OutputTarget::Directory(_) | OutputTarget::Kafka(_)
        )
    {
        use velo_connectors::parquet_file::ContainerFileSink;
        return match &output.target {
            OutputTarget::File(path) if bounded => Ok(match output.format {
                OutputFormat::Avro => Box::new(ContainerFileSink::avro(path, schema)?),
                _ => Box::new(ContainerFileSink::parquet(path, schema, output.parquet)?),
            }),
            OutputTarget::File(_) => Err(VeloError::Usage(format!(
                "a continuous query cannot append to one {} file (it ends with its footer): \
                 write part files with --output-dir DIR",
                output.format
            ))),
            _ => Err(VeloError::Usage(format!(
                "--format {} writes a file: --output-file PATH (or velo-sql export)",
                output.format
            ))),
        };
    }
    if spec.delivery == Delivery::ExactlyOnce && !matches!(output.target, OutputTarget::Kafka(_)) {
        return Err(VeloError::Usage(
            "--delivery exactly-once is for --output kafka (a file output is exactly-once with \
             checkpoints already; stdout cannot take back what it printed)"
                .into(),
        ));
    }
    Ok(match &output.target {
        OutputTarget::Directory(dir) => {
            let options = velo_connectors::part_files::PartFileOptions {
                dir: dir.clone(),
                format: output.format,
                roll: output.roll,
                partition_by: output.partition_by.clone(),
                prefix: if spec.name.is_empty() {
                    "velo".to_string()
                } else {
                    spec.name.clone()
                },
                parquet: output.parquet,
                decimals: output.decimal_format,
                with_checkpoints: !bounded && spec.state.is_some(),
                commit_on_flush: !bounded && spec.state.is_none(),
            };
            Box::new(velo_connectors::part_files::PartFileSink::create(
                options, schema,
            )?)
        }
        OutputTarget::Stdout => Box::new(TextSink::stdout(
            output.format,
            bounded,
            schema.clone(),
            output.decimal_format,
        )),
        // A continuous job without checkpoints appends (nothing erased, at-least-once); with
        // them the file is cut back to the restored checkpoint's length.
        OutputTarget::File(path) if !bounded && spec.state.is_none() => Box::new(FileSink::append(
            path,
            output.format,
            schema.clone(),
            output.decimal_format,
        )?),
        OutputTarget::File(path) => Box::new(FileSink::open(
            path,
            output.format,
            bounded,
            schema.clone(),
            output.decimal_format,
        )?),
        OutputTarget::Kafka(topic) => {
            let format = match output.format {
                OutputFormat::Avro => {
                    let avro = match &output.avro_schema {
                        Some(path) => velo_connectors::codec::avro::load_schema(path)?,
                        None => velo_connectors::codec::avro::derive_schema(schema, "velo_result")?,
                    };
                    let encoder = velo_connectors::codec::avro::AvroEncoder::new(avro, schema)?;
                    MessageFormat::Avro(match registry(spec) {
                        Some(r) => encoder.with_registry(&r, &format!("{topic}-value"))?,
                        None => encoder,
                    })
                }
                OutputFormat::Protobuf => {
                    let message = proto_message(
                        output.proto_file.as_ref(),
                        output.proto_message.as_ref(),
                        "output-",
                    )?;
                    let encoder = velo_connectors::codec::protobuf::ProtobufEncoder::new(message);
                    MessageFormat::Protobuf(match registry(spec) {
                        Some(r) => {
                            let file = output
                                .proto_file
                                .as_ref()
                                .expect("proto_message checked the file");
                            let text = std::fs::read_to_string(file).map_err(|e| {
                                VeloError::Usage(format!("cannot read {}: {e}", file.display()))
                            })?;
                            encoder.with_registry(&r, &format!("{topic}-value"), &text)?
                        }
                        None => encoder,
                    })
                }
                other => MessageFormat::for_output(other)?,
            };
            let sink = KafkaSink::new(
                connection,
                topic.clone(),
                format,
                schema,
                output.key.as_deref(),
                output.decimal_format,
            )?;
            match (spec.delivery, &spec.state) {
                (Delivery::ExactlyOnce, Some(_)) if !bounded => Box::new(
                    ExactlyOnceKafkaSink::new(sink, connection, spec.name.clone())?,
                ),
                (Delivery::ExactlyOnce, _) if !bounded => {
                    return Err(VeloError::Usage(
                        "--delivery exactly-once needs checkpoints: a job reading Kafka topics, \
                         without --no-state"
                            .into(),
                    ))
                }
                _ => Box::new(sink),
            }
        }
    })
}

/// Samples up to 100 records of `topic` and infers a schema; `None` for an empty topic.
fn infer_topic_schema(connection: &KafkaConnection, topic: &str) -> Result<Option<SchemaRef>> {
    let mut source = KafkaSource::snapshot(connection, topic)?;
    let Some(sample) = source.poll_batch(100, Duration::from_secs(5))? else {
        tracing::warn!("topic '{topic}' is empty and no schema was given: the result is empty");
        return Ok(None);
    };
    let Payload::Encoded(payloads) = &sample.payload else {
        return Ok(None);
    };
    let schema = infer_schema(payloads.iter().flatten())?;
    tracing::warn!(
        "no schema declared for topic '{topic}'; inferred from {} records: {}",
        sample.len(),
        schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(Arc::new(schema)))
}

/// The columns of files read as a stream, when none are declared: a Parquet or Avro file's own,
/// or inferred from the first 100 rows of JSON lines / CSV like a topic's.
fn infer_file_schema(path: &str, format: &str) -> Result<SchemaRef> {
    let spec = FileSourceSpec {
        path: path.to_string(),
        format: FileFormat::parse(format),
        follow: false,
        schema: None,
    };
    // Avro container files say their columns in their header.
    if let Some(first) = velo_connectors::file_source::first_file(&spec)? {
        if spec.format.or_else(|| FileFormat::of_path(&first)) == Some(FileFormat::Avro) {
            return Ok(velo_connectors::file_source::avro_file_columns(&first)?);
        }
    }
    let mut source = FileSource::open(spec)?;
    let sample = loop {
        match source.poll_batch(100, Duration::from_secs(1))? {
            Some(batch) if batch.is_empty() => continue,
            Some(batch) => break batch,
            None => {
                return Err(VeloError::Usage(format!(
                    "the files '{path}' hold no rows to infer columns from: declare them"
                )))
            }
        }
    };
    let schema = match &sample.payload {
        // Parquet says its own columns.
        Payload::Decoded(batch) => return Ok(batch.schema()),
        Payload::Encoded(payloads) => Arc::new(infer_schema(payloads.iter().flatten())?),
    };
    tracing::warn!(
        "no columns declared for the files '{path}'; inferred: {}",
        schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(schema)
}

/// The payload columns given for the only input.
fn given_schema(spec: &JobSpec) -> Result<Option<SchemaRef>> {
    let Some(text) = &spec.input.columns else {
        return Ok(None);
    };
    let fields = parse_column_list(text).map_err(|e| match e {
        VeloError::Sql { message, location } => VeloError::Usage(format!(
            "--schema{}: {message}",
            location.map(|l| format!(" at {l}")).unwrap_or_default()
        )),
        other => other,
    })?;
    Ok(Some(Arc::new(Schema::new(fields))))
}

/// Builds the catalog for `statement`: declared streams plus implicit topic streams, each with
/// a schema. Returns `None` when the only input is an empty topic with no schema to infer.
async fn resolve_inputs(
    spec: &JobSpec,
    connection: &KafkaConnection,
    ctx: &datafusion::prelude::SessionContext,
    declared: Vec<StreamDef>,
    statement: &Statement,
) -> Result<Option<Catalog>> {
    let input = &spec.input;
    let mut catalog = Catalog::default();
    for stream in declared {
        catalog.insert(stream);
    }
    let names = referenced_tables(ctx, statement)?;
    // The query's stream inputs: every name but the declared tables.
    let stream_names: Vec<&String> = names
        .iter()
        .filter(|n| !catalog.get(n.as_str()).is_some_and(|s| s.is_table))
        .collect();
    if stream_names.len() > 1
        && (input.topic.is_some() || input.generator.is_some() || input.columns.is_some())
    {
        return Err(VeloError::Usage(
            "--topic, --source and --schema describe a query's only input, but this query reads several; declare each with CREATE STREAM".into(),
        ));
    }
    let mut topics: Option<Vec<String>> = None;
    for name in &names {
        if catalog.get(name).is_none() {
            let stream = match (&input.generator, &input.topic) {
                (Some(source), _) if source.starts_with("file:") => StreamDef {
                    source: StreamSource::File {
                        path: source["file:".len()..].into(),
                        format: input
                            .format
                            .as_deref()
                            .filter(|f| FileFormat::parse(f).is_some())
                            .unwrap_or("")
                            .to_string(),
                    },
                    ..StreamDef::implicit_topic(name, name)
                },
                (Some(source), _) => StreamDef {
                    source: StreamSource::Generator(GeneratorSpec::parse(source)?),
                    ..StreamDef::implicit_topic(name, name)
                },
                (None, Some(topic)) => StreamDef::implicit_topic(name, topic),
                (None, None) => StreamDef::implicit_topic(name, name),
            };
            catalog.insert(stream);
        }
        let target = catalog.get_mut(name).expect("inserted above");
        if target.decimal_rounding.is_none() {
            target.decimal_rounding = spec.decimal_rounding;
        }
        let stream = catalog.get(name).expect("inserted above").clone();
        if let StreamSource::Topic(topic) = &stream.source {
            if topics.is_none() {
                topics = Some(connection.topics()?);
            }
            if !topics.as_ref().is_some_and(|t| t.contains(topic)) {
                if let Some(at) = stream.declared_at {
                    return Err(VeloError::sql(
                        format!(
                            "stream '{name}' reads topic '{topic}', which is not on the broker (set its topic with WITH ('topic' = '…')); topics on the broker: {}",
                            velo_connectors::kafka::names_like(
                                topic,
                                topics.as_deref().unwrap_or_default(),
                            )
                        ),
                        Some(at),
                    ));
                }
                return Err(VeloError::UnknownTable {
                    name: topic.clone(),
                    location: None,
                    declared: list_or_none(
                        &catalog
                            .names()
                            .into_iter()
                            .filter(|n| catalog.get(n).is_some_and(|s| s.declared_at.is_some()))
                            .collect::<Vec<_>>(),
                    ),
                    topics: velo_connectors::kafka::names_like(
                        topic,
                        topics.as_deref().unwrap_or_default(),
                    ),
                });
            }
        }
        if stream_names.len() == 1 && stream_names[0] == name {
            let target = catalog.get_mut(name).expect("inserted above");
            let file_source = matches!(target.source, StreamSource::File { .. });
            match input
                .format
                .as_deref()
                .unwrap_or("json")
                .to_ascii_lowercase()
                .as_str()
            {
                "json" => {}
                // The layout of a file source's files (read as JSON payloads or columns).
                format if file_source && FileFormat::parse(format).is_some() => {}
                "avro" => {
                    let avro = match (&input.avro_schema, registry(spec), &target.source) {
                        (Some(path), _, _) => velo_connectors::codec::avro::load_schema(path)?,
                        (None, Some(registry), StreamSource::Topic(topic)) => {
                            let (_, text) = registry.latest(&format!("{topic}-value"))?;
                            velo_connectors::codec::avro::parse_schema(&text).map_err(|why| {
                                VeloError::Usage(format!(
                                    "the registry's schema for '{topic}-value': {why}"
                                ))
                            })?
                        }
                        _ => return Err(VeloError::Usage(
                            "Avro input needs --avro-schema PATH.avsc (or --schema-registry URL)"
                                .into(),
                        )),
                    };
                    if input.columns.is_none() {
                        target.schema = Some(velo_connectors::codec::avro::arrow_schema(&avro)?);
                    }
                    target.format = PayloadFormat::Avro(Arc::new(avro));
                }
                "protobuf" | "proto" => {
                    let message =
                        proto_message(input.proto_file.as_ref(), input.proto_message.as_ref(), "")?;
                    if input.columns.is_none() {
                        target.schema =
                            Some(velo_connectors::codec::protobuf::arrow_schema(&message));
                    }
                    target.format = PayloadFormat::Protobuf(message);
                }
                other => {
                    return Err(VeloError::Usage(format!(
                        "unknown --input-format '{other}' (json, avro, protobuf)"
                    )))
                }
            }
            if target.registry.is_none() && target.format.name() != "json" {
                target.registry = registry(spec);
            }
            if let Some(column) = &input.event_time_column {
                target.event_time = Some(column.clone());
            }
            if let Some(delay) = input.watermark_delay_ms {
                target.watermark_delay_ms = delay;
            }
        }
        let stream = catalog.get(name).expect("inserted above").clone();
        if stream.is_table {
            let loaded = crate::table::load(&stream, connection).map_err(|e| {
                if spec.conceal_file_errors {
                    crate::job::sandbox::conceal(&format!("loading the table '{name}'"), e)
                } else {
                    e
                }
            })?;
            let target = catalog.get_mut(name).expect("inserted above");
            target.schema = Some(loaded.schema);
            target.rows = Some(Arc::new(loaded.rows));
            target.loaded_up_to = loaded.end_offsets;
            target.skipped_on_load = loaded.skipped;
            continue;
        }
        if stream.schema.is_none() {
            let schema = match (&stream.source, given_schema(spec)?) {
                (_, Some(schema)) => schema,
                (StreamSource::File { path, format }, None) => {
                    infer_file_schema(&path.display().to_string(), format)?
                }
                (StreamSource::Generator(generator), None) => generator.schema(),
                (StreamSource::Topic(topic), None) => {
                    match infer_topic_schema(connection, topic)? {
                        Some(schema) => schema,
                        None => return Ok(None),
                    }
                }
            };
            catalog.get_mut(name).expect("inserted above").schema = Some(schema);
        }
    }
    Ok(Some(catalog))
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// The schema registry of the spec.
fn registry(spec: &JobSpec) -> Option<Arc<velo_connectors::registry::SchemaRegistry>> {
    spec.input.schema_registry.as_ref().map(|url| {
        Arc::new(velo_connectors::registry::SchemaRegistry::new(
            url,
            spec.kafka.timeout.max(Duration::from_secs(1)),
        ))
    })
}

/// The message type named by `--{prefix}proto-file` and `--{prefix}proto-message`.
fn proto_message(
    file: Option<&PathBuf>,
    message: Option<&String>,
    prefix: &str,
) -> Result<prost_reflect::MessageDescriptor> {
    let Some(file) = file else {
        return Err(VeloError::Usage(format!(
            "Protobuf needs --{prefix}proto-file PATH.proto (and --{prefix}proto-message \
             package.Message when the file defines several)"
        )));
    };
    // Without --proto-message: the file's only message.
    Ok(velo_connectors::codec::protobuf::load_message(
        file,
        message.map_or("", String::as_str),
    )?)
}

/// Sets `stop` on SIGINT or SIGTERM; the job then finishes its epoch, flushes, checkpoints,
/// commits and exits 0. A second signal exits at once.
fn spawn_signal_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            for _ in 0..2 {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
                if stop.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
                tracing::info!("stopping: finishing the current micro-batch");
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        }
    });
}
