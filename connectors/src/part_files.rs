//! Results as part files in a directory: Parquet, JSON lines or CSV, rolled to a new file by
//! rows, bytes or time, optionally in Hive-style folders by columns (`dt=2024-01-01/`).
//!
//! A part file is written under a hidden name (`.part-….inprogress`) and only renamed into
//! place once it is *committed*, so a reader listing the folder never sees a partial file:
//! - with checkpoints (a continuous job), every checkpoint closes the open files (footer
//!   written, fsynced) and records them in its state; they are renamed when the checkpoint is
//!   durable ([`Sink::checkpoint_complete`]). A job restored from checkpoint N renames what N
//!   recorded (in case it stopped before doing so) and deletes every other in-progress file of
//!   this sink: those rows come again from N's offsets, so nothing is lost or repeated.
//! - without checkpoints, a file is committed as soon as it is closed: when it rolls and at the
//!   end of a bounded run; a continuous run without checkpoints (`--no-state`) acknowledges its
//!   input after every micro-batch, so every flush closes and commits the open files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;

use crate::codec::DecimalFormat;
use crate::format::{FormattedWriter, OutputFormat};
use crate::parquet_file::{publish, ParquetOptions};
use crate::sink::{Sink, SinkState};
use crate::{ConnectorError, Result};

/// The value of a Hive partition column that is NULL (Hive's and Spark's spelling).
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// When a part file is closed and a new one started (besides every checkpoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollPolicy {
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub interval: Option<Duration>,
}

/// How a [`PartFileSink`] writes.
#[derive(Debug, Clone)]
pub struct PartFileOptions {
    pub dir: PathBuf,
    /// Parquet, JSON lines or CSV.
    pub format: OutputFormat,
    pub roll: RollPolicy,
    /// Columns whose values name the Hive folders (left out of the files, as Hive does).
    pub partition_by: Vec<String>,
    /// Part files are named `part-<prefix>-<run>-<n>`; the prefix tells this sink's files
    /// apart from other writers' in the same folder (the job's name).
    pub prefix: String,
    pub parquet: ParquetOptions,
    pub decimals: DecimalFormat,
    /// Files are committed with checkpoints (else as soon as they are closed).
    pub with_checkpoints: bool,
    /// A continuous job without checkpoints: its input is acknowledged after every flush, so
    /// every flush closes and commits the open files (else rows acknowledged but still in an
    /// open file would be lost to a crash).
    pub commit_on_flush: bool,
}

/// Counts the bytes going through a writer.
struct Counting<W: Write> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

enum PartWriter {
    Parquet(ArrowWriter<File>),
    Avro(apache_avro::Writer<'static, Counting<BufWriter<File>>>),
    Text(FormattedWriter<Counting<BufWriter<File>>>),
}

struct OpenPart {
    temp: PathBuf,
    path: PathBuf,
    writer: PartWriter,
    rows: u64,
    opened: Instant,
}

impl OpenPart {
    fn bytes(&self) -> u64 {
        match &self.writer {
            PartWriter::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            PartWriter::Avro(w) => w.get_ref().bytes,
            PartWriter::Text(w) => w.get_ref().bytes,
        }
    }
}

/// Result rows as part files in a directory (see the module doc).
pub struct PartFileSink {
    options: PartFileOptions,
    /// The schema of the files (the result's columns less the partition columns).
    file_schema: SchemaRef,
    /// Indices of the partition columns in the result, and of the others.
    partition_columns: Vec<usize>,
    file_columns: Vec<usize>,
    /// Open files by partition folder (`""` without partitions).
    open: BTreeMap<String, OpenPart>,
    /// Closed files awaiting their commit: (temporary name, final name).
    closed: Vec<(PathBuf, PathBuf)>,
    /// Files recorded by each checkpoint, renamed when it completes.
    by_checkpoint: BTreeMap<u64, Vec<(PathBuf, PathBuf)>>,
    run: String,
    next: u64,
    rows: u64,
    /// Files committed so far.
    committed: u64,
    /// The schema and encoder of Avro container part files.
    avro: Option<crate::avro_file::AvroContainerFormat>,
    /// False until the folder is cleaned of in-progress files of an earlier run: by
    /// [`Sink::restore`] (which keeps its checkpoint's), or before the first write.
    settled: bool,
}

impl PartFileSink {
    /// A sink writing `schema`-shaped results under `options.dir` (created when missing).
    /// In-progress files an earlier run of this sink left are removed before the first write
    /// (their rows come again), except those the restored checkpoint committed.
    pub fn create(options: PartFileOptions, schema: &SchemaRef) -> Result<Self> {
        if !matches!(
            options.format,
            OutputFormat::Parquet
                | OutputFormat::Avro
                | OutputFormat::JsonLines
                | OutputFormat::Csv
        ) {
            return Err(ConnectorError::Config(format!(
                "--output-dir writes parquet, avro, json-lines or csv part files, not {}",
                options.format
            )));
        }
        let mut partition_columns = Vec::new();
        for name in &options.partition_by {
            let index = schema.index_of(name).map_err(|_| {
                ConnectorError::Config(format!(
                    "--partition-by {name}: the result has no such column (it has {})",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            partition_columns.push(index);
        }
        let file_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !partition_columns.contains(i))
            .collect();
        let file_schema = Arc::new(Schema::new(
            file_columns
                .iter()
                .map(|&i| schema.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        std::fs::create_dir_all(&options.dir).map_err(|source| ConnectorError::File {
            path: options.dir.clone(),
            source,
        })?;
        let avro = match options.format {
            OutputFormat::Avro => Some(crate::avro_file::AvroContainerFormat::new(&file_schema)?),
            _ => None,
        };
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string();
        Ok(Self {
            options,
            file_schema,
            partition_columns,
            file_columns,
            open: BTreeMap::new(),
            closed: Vec::new(),
            by_checkpoint: BTreeMap::new(),
            run,
            next: 0,
            rows: 0,
            committed: 0,
            avro,
            settled: false,
        })
    }

    fn settle(&mut self) -> Result<()> {
        if !self.settled {
            self.remove_in_progress(&[])?;
            self.settled = true;
        }
        Ok(())
    }

    /// Files committed so far.
    pub fn files_committed(&self) -> u64 {
        self.committed
    }

    fn extension(&self) -> &'static str {
        match self.options.format {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Avro => "avro",
            OutputFormat::Csv => "csv",
            _ => "jsonl",
        }
    }

    fn file_error(path: &Path) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
        move |source| ConnectorError::File {
            path: path.to_path_buf(),
            source,
        }
    }

    fn open_part(&mut self, folder: &str) -> Result<OpenPart> {
        let dir = self.options.dir.join(folder);
        std::fs::create_dir_all(&dir).map_err(Self::file_error(&dir))?;
        let name = format!(
            "part-{}-{}-{:05}.{}",
            self.options.prefix,
            self.run,
            self.next,
            self.extension()
        );
        self.next += 1;
        let path = dir.join(&name);
        let temp = dir.join(format!(".{name}.inprogress"));
        let file = File::create(&temp).map_err(Self::file_error(&temp))?;
        let writer = match self.options.format {
            OutputFormat::Parquet => {
                PartWriter::Parquet(self.options.parquet.writer(file, &self.file_schema)?)
            }
            OutputFormat::Avro => {
                PartWriter::Avro(self.avro.as_ref().expect("made for avro output").writer(
                    Counting {
                        inner: BufWriter::new(file),
                        bytes: 0,
                    },
                ))
            }
            format => PartWriter::Text(FormattedWriter::new(
                Counting {
                    inner: BufWriter::new(file),
                    bytes: 0,
                },
                format,
                false,
                self.file_schema.clone(),
                self.options.decimals,
            )),
        };
        Ok(OpenPart {
            temp,
            path,
            writer,
            rows: 0,
            opened: Instant::now(),
        })
    }

    /// Closes the part of `folder`: footer written, fsynced; it then awaits its commit.
    fn close(&mut self, folder: &str) -> Result<()> {
        let Some(part) = self.open.remove(folder) else {
            return Ok(());
        };
        let temp = part.temp.clone();
        let error = Self::file_error(&temp);
        let file = match part.writer {
            PartWriter::Parquet(w) => w.into_inner().map_err(|e| {
                ConnectorError::Config(format!("writing {}: {e}", part.temp.display()))
            })?,
            PartWriter::Text(mut w) => {
                w.finish()?;
                w.into_inner()
                    .inner
                    .into_inner()
                    .map_err(|e| error(e.into_error()))?
            }
            PartWriter::Avro(w) => w
                .into_inner()
                .map_err(|e| ConnectorError::Config(format!("writing {}: {e}", temp.display())))?
                .inner
                .into_inner()
                .map_err(|e| error(e.into_error()))?,
        };
        file.sync_all().map_err(&error)?;
        self.closed.push((part.temp, part.path));
        Ok(())
    }

    fn close_all(&mut self) -> Result<()> {
        let folders: Vec<String> = self.open.keys().cloned().collect();
        for folder in folders {
            self.close(&folder)?;
        }
        Ok(())
    }

    fn commit(&mut self, files: Vec<(PathBuf, PathBuf)>) -> Result<()> {
        for (temp, path) in files {
            if temp.exists() {
                publish(&temp, &path)?;
            } else if !path.exists() {
                // Neither written nor committed: its rows are gone, say so rather than count it.
                return Err(ConnectorError::Config(format!(
                    "the part file {} (committed by a checkpoint) is missing, and so is its \
                     in-progress copy {}: was the folder changed outside the job?",
                    path.display(),
                    temp.display()
                )));
            }
            self.committed += 1;
        }
        Ok(())
    }

    /// True when `name` is an in-progress file of this sink: `.part-<prefix>-<run>-<n>.<ext>
    /// .inprogress` exactly (a job whose name extends this one's is not matched).
    fn is_own_in_progress(&self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(&format!(".part-{}-", self.options.prefix))
            .and_then(|r| r.strip_suffix(&format!(".{}.inprogress", self.extension())))
        else {
            return false;
        };
        let mut parts = rest.split('-');
        let digits = |p: Option<&str>| {
            p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        digits(parts.next()) && digits(parts.next()) && parts.next().is_none()
    }

    /// This sink's committed files named after (`run`, `next`) — newer than a checkpoint that
    /// recorded them — but `known`.
    fn committed_since(&self, run: &str, next: u64, known: &[PathBuf]) -> Vec<PathBuf> {
        let prefix = format!("part-{}-", self.options.prefix);
        let suffix = format!(".{}", self.extension());
        let mut newer = Vec::new();
        let mut stack = vec![self.options.dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((file_run, n)) = name
                    .strip_prefix(&prefix)
                    .and_then(|r| r.strip_suffix(&suffix))
                    .and_then(|r| r.split_once('-'))
                else {
                    continue;
                };
                let (Ok(file_run_n), Ok(run_n), Ok(n)) = (
                    file_run.parse::<u128>(),
                    run.parse::<u128>(),
                    n.parse::<u64>(),
                ) else {
                    continue;
                };
                if (file_run_n > run_n || (file_run_n == run_n && n >= next))
                    && !known.contains(&path)
                {
                    newer.push(path);
                }
            }
        }
        newer.sort();
        newer
    }

    /// Removes this sink's in-progress files under the folder, but `keep`.
    fn remove_in_progress(&self, keep: &[PathBuf]) -> Result<()> {
        let keep: Vec<PathBuf> = keep
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let mut stack = vec![self.options.dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    stack.push(path);
                } else if self.is_own_in_progress(&name)
                    && !keep.contains(&std::fs::canonicalize(&path).unwrap_or(path.clone()))
                {
                    std::fs::remove_file(&path).map_err(Self::file_error(&path))?;
                }
            }
        }
        Ok(())
    }

    /// The Hive folder of each run of equal partition values of `batch` (sorted by them),
    /// with the rows of the run.
    fn split(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        let files = batch.project(&self.file_columns)?;
        if self.partition_columns.is_empty() {
            return Ok(vec![(String::new(), files)]);
        }
        let n = batch.num_rows();
        // Sorted by the partition values, then by position (so each file keeps arrival order).
        let mut keys: Vec<SortColumn> = self
            .partition_columns
            .iter()
            .map(|&i| SortColumn {
                values: batch.column(i).clone(),
                options: None,
            })
            .collect();
        keys.push(SortColumn {
            values: Arc::new(UInt32Array::from_iter_values(0..n as u32)) as ArrayRef,
            options: None,
        });
        let order = lexsort_to_indices(&keys, None)?;
        let sorted_keys: Vec<ArrayRef> = self
            .partition_columns
            .iter()
            .map(|&i| arrow::compute::take(batch.column(i), &order, None))
            .collect::<std::result::Result<_, _>>()?;
        let files = take_record_batch(&files, &order)?;
        let ranges = arrow::compute::partition(&sorted_keys)?.ranges();
        let options = FormatOptions::default();
        let formatters: Vec<ArrayFormatter> = sorted_keys
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &options))
            .collect::<std::result::Result<_, _>>()?;
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let folder = self
                .options
                .partition_by
                .iter()
                .zip(&sorted_keys)
                .zip(&formatters)
                .map(|((name, column), format)| {
                    let null = column
                        .logical_nulls()
                        .is_some_and(|n| n.is_null(range.start));
                    let text = format.value(range.start).to_string();
                    // NULL and the empty string are Hive's default partition, as Spark writes.
                    let value = if null || text.is_empty() {
                        HIVE_NULL.to_string()
                    } else {
                        hive_escape(&text)
                    };
                    format!("{name}={value}")
                })
                .collect::<Vec<_>>()
                .join("/");
            out.push((folder, files.slice(range.start, range.end - range.start)));
        }
        Ok(out)
    }

    fn roll_due(&self, part: &OpenPart) -> bool {
        let roll = &self.options.roll;
        roll.rows.is_some_and(|r| part.rows >= r)
            || roll.bytes.is_some_and(|b| part.bytes() >= b)
            || roll.interval.is_some_and(|i| part.opened.elapsed() >= i)
    }
}

/// A partition value as a folder name: the characters Hive escapes (`/`, `=`, `%`, `#`, …)
/// and control characters percent-encoded.
fn hive_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(
            c,
            '/' | '\\'
                | '='
                | '%'
                | ':'
                | '*'
                | '?'
                | '"'
                | '<'
                | '>'
                | '|'
                | '#'
                | '\''
                | '['
                | ']'
                | '{'
                | '}'
                | '^'
        ) || c.is_control()
        {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Sink for PartFileSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.settle()?;
        for (folder, rows) in self.split(batch)? {
            // A file takes at most `roll.rows` rows: a batch crossing the limit is cut there.
            let mut start = 0;
            while start < rows.num_rows() {
                if !self.open.contains_key(&folder) {
                    let part = self.open_part(&folder)?;
                    self.open.insert(folder.clone(), part);
                }
                let part = self.open.get_mut(&folder).expect("opened above");
                let room = self
                    .options
                    .roll
                    .rows
                    .map_or(u64::MAX, |r| r.saturating_sub(part.rows).max(1));
                let take = (rows.num_rows() - start).min(room.min(usize::MAX as u64) as usize);
                let chunk = rows.slice(start, take);
                match &mut part.writer {
                    PartWriter::Parquet(w) => w.write(&chunk).map_err(|e| {
                        ConnectorError::Config(format!("writing {}: {e}", part.temp.display()))
                    })?,
                    PartWriter::Text(w) => w.write(&chunk)?,
                    PartWriter::Avro(w) => self
                        .avro
                        .as_ref()
                        .expect("made for avro output")
                        .write(w, &chunk)?,
                }
                part.rows += take as u64;
                self.rows += take as u64;
                start += take;
                if self.roll_due(self.open.get(&folder).expect("open")) {
                    self.close(&folder)?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.settle()?;
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, part)| self.roll_due(part))
            .map(|(folder, _)| folder.clone())
            .collect();
        for folder in due {
            self.close(&folder)?;
        }
        for part in self.open.values_mut() {
            if let PartWriter::Text(w) = &mut part.writer {
                w.get_mut().flush().map_err(|e| ConnectorError::File {
                    path: part.temp.clone(),
                    source: e,
                })?;
            }
        }
        if self.options.commit_on_flush {
            self.close_all()?;
        }
        if !self.options.with_checkpoints {
            // Nothing to wait for: what is closed is committed.
            let closed = std::mem::take(&mut self.closed);
            self.commit(closed)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.close_all()?;
        if !self.options.with_checkpoints {
            let closed = std::mem::take(&mut self.closed);
            self.commit(closed)?;
        }
        Ok(())
    }

    fn rows_written(&self) -> u64 {
        self.rows
    }

    fn delivers_with_checkpoints(&self) -> bool {
        self.options.with_checkpoints
    }

    fn checkpoint(&mut self, id: u64) -> Result<SinkState> {
        self.close_all()?;
        let files = std::mem::take(&mut self.closed);
        let listed: Vec<serde_json::Value> = files
            .iter()
            .map(|(temp, path)| {
                serde_json::json!({
                    "temp": temp.display().to_string(),
                    "path": path.display().to_string(),
                })
            })
            .collect();
        self.by_checkpoint.insert(id, files);
        Ok(SinkState {
            position: serde_json::json!({
                "dir": self.options.dir.display().to_string(),
                "files": listed,
                // Every file named after these is newer than this checkpoint.
                "run": self.run,
                "next": self.next,
            }),
            pending: Vec::new(),
        })
    }

    fn checkpoint_complete(&mut self, id: u64) -> Result<()> {
        let done: Vec<u64> = self.by_checkpoint.range(..=id).map(|(k, _)| *k).collect();
        for k in done {
            let files = self.by_checkpoint.remove(&k).unwrap_or_default();
            self.commit(files)?;
        }
        Ok(())
    }

    fn restore(&mut self, _id: u64, state: SinkState) -> Result<()> {
        let files: Vec<(PathBuf, PathBuf)> = state
            .position
            .get("files")
            .and_then(|f| f.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|f| {
                        Some((
                            PathBuf::from(f.get("temp")?.as_str()?),
                            PathBuf::from(f.get("path")?.as_str()?),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The restored checkpoint is durable: its files are committed (again, if the run that
        // wrote it had already renamed them); every other in-progress file goes.
        let keep: Vec<PathBuf> = files.iter().map(|(t, _)| t.clone()).collect();
        self.remove_in_progress(&keep)?;
        self.settled = true;
        let mine: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
        self.commit(files)?;
        // Files committed after this checkpoint (it is older than the newest: a damaged one was
        // skipped, or a savepoint) hold rows that will be written again: say which.
        let saved_run = state
            .position
            .get("run")
            .and_then(|r| r.as_str())
            .unwrap_or("");
        let saved_next = state
            .position
            .get("next")
            .and_then(|n| n.as_u64())
            .unwrap_or(0);
        let newer = self.committed_since(saved_run, saved_next, &mine);
        if !newer.is_empty() {
            tracing::warn!(
                "{} part file(s) in {} were committed after the checkpoint this job restores \
                 (e.g. {}): their rows are written again; remove them for each row once",
                newer.len(),
                self.options.dir.display(),
                newer[0].display()
            );
        }
        Ok(())
    }
}

impl Drop for PartFileSink {
    /// Files still open when the sink goes away (the job failed) are removed, unless a
    /// checkpoint may still need them (they are cleaned up when the job is restored).
    fn drop(&mut self) {
        for part in self.open.values() {
            let _ = std::fs::remove_file(&part.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn sink(dir: &Path, prefix: &str) -> PartFileSink {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        PartFileSink::create(
            PartFileOptions {
                dir: dir.to_path_buf(),
                format: OutputFormat::Parquet,
                roll: RollPolicy::default(),
                partition_by: Vec::new(),
                prefix: prefix.to_string(),
                parquet: ParquetOptions::default(),
                decimals: DecimalFormat::String,
                with_checkpoints: true,
                commit_on_flush: false,
            },
            &schema,
        )
        .unwrap()
    }

    #[test]
    fn a_sink_cleans_up_only_its_own_in_progress_files() {
        let dir = std::env::temp_dir().join(format!("velo-parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mine = sink(&dir, "velo-sql-orders");
        assert!(mine.is_own_in_progress(".part-velo-sql-orders-1796-00003.parquet.inprogress"));
        // Another job whose name starts with this one's.
        assert!(!mine
            .is_own_in_progress(".part-velo-sql-orders-customers-1796-00003.parquet.inprogress"));
        assert!(!mine.is_own_in_progress("part-velo-sql-orders-1796-00003.parquet"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_committed_after_a_checkpoint_are_found_for_a_warning() {
        let dir = std::env::temp_dir().join(format!("velo-parts-newer-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("k=1")).unwrap();
        for name in [
            "part-p-100-00001.parquet",
            "k=1/part-p-100-00003.parquet",
            "part-p-200-00000.parquet",
            "part-p-other-300-00000.parquet",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let sink = sink(&dir, "p");
        assert_eq!(
            sink.committed_since("100", 2, &[]),
            [
                dir.join("k=1/part-p-100-00003.parquet"),
                dir.join("part-p-200-00000.parquet")
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hive_folder_names_escape_what_hive_escapes() {
        assert_eq!(hive_escape("2024-01-01"), "2024-01-01");
        assert_eq!(hive_escape("a/b=c#d%"), "a%2Fb%3Dc%23d%25");
        assert_eq!(hive_escape("x\ny"), "x%0Ay");
    }
}
