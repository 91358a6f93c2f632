//! Files as a stream: JSON lines, CSV (with a header), Parquet or Avro container files, from one
//! file, a directory or a glob (`data/*.jsonl`).
//!
//! Files are read one after the other, in name order. Each file is a partition of the source
//! (numbered by a stable hash of its path, so a checkpoint's positions find it again after a
//! restart whatever other files appeared) whose offsets are its rows; `_topic` is the file's
//! path and `_timestamp` its modification time. JSON lines go to the stream's JSON decoder as
//! they are, so decimals, bad records and their reports are exactly those of a topic; a CSV row
//! becomes a JSON object of its fields (empty = NULL; `true`/`false` for BOOLEAN columns), an
//! Avro record its exact JSON text; Parquet row groups come as Arrow columns.
//!
//! A bounded read takes the files there when it starts; a followed one (`stream`) looks for new
//! files every second and reads each once, when its size and modification time have held
//! still for a scan (a file being copied in is not read half-way). A file that cannot be read (a truncated Parquet
//! footer, a line that is not UTF-8) is reported with its name and row
//! ([`Source::take_errors`]) and the rest goes on.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::record::{Payload, RecordBatchCollector, SourceBatch};
use crate::source::{Positions, Source};
use crate::{ConnectorError, Result};

/// The layout of the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    JsonLines,
    Csv,
    Parquet,
    /// Avro object container files (the writer schema in each file's header).
    Avro,
}

impl FileFormat {
    /// The format a name says: `json`, `jsonl`, `json-lines`, `ndjson`, `csv`, `parquet`,
    /// `avro`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "json" | "jsonl" | "json-lines" | "ndjson" => Some(Self::JsonLines),
            "csv" => Some(Self::Csv),
            "parquet" => Some(Self::Parquet),
            "avro" => Some(Self::Avro),
            _ => None,
        }
    }

    /// The format a file's extension says.
    pub fn of_path(path: &Path) -> Option<Self> {
        Self::parse(path.extension()?.to_str()?)
    }
}

/// Where the files are and how to read them.
#[derive(Debug, Clone)]
pub struct FileSourceSpec {
    /// A file, a directory (its files with the format's extensions, hidden ones left out) or
    /// a glob.
    pub path: String,
    /// `None`: from each file's extension.
    pub format: Option<FileFormat>,
    /// Keep looking for new files (`stream`); else read what is there and end.
    pub follow: bool,
    /// The stream's columns (CSV needs them to tell booleans from text).
    pub schema: Option<SchemaRef>,
}

enum Reader {
    Lines(BufReader<File>),
    Csv {
        records: csv::Reader<File>,
        header: Vec<String>,
        booleans: Vec<bool>,
        /// The record being read (reused).
        record: csv::StringRecord,
    },
    Parquet(ParquetRecordBatchReader),
    Avro(Box<apache_avro::Reader<'static, BufReader<File>>>),
}

/// One read of a row-by-row file.
enum RowRead {
    /// A row's payload is in the buffer.
    Row,
    /// A row that is counted but cannot be used (reported, the file goes on).
    Bad(String),
    /// The file cannot be read further (reported, the rest is skipped).
    Broken(String),
    End,
}

impl Reader {
    /// Reads the next row (row number `next`, 0-based) of a row-by-row file as one JSON
    /// payload into `out` (empty).
    fn read_row(&mut self, out: &mut Vec<u8>, next: i64) -> RowRead {
        match self {
            Reader::Csv {
                records,
                header,
                booleans,
                record,
            } => match records.read_record(record) {
                Ok(false) => RowRead::End,
                // A broken quote or bad UTF-8: the reader cannot resync.
                Err(e) => RowRead::Broken(e.to_string()),
                Ok(true) if record.len() != header.len() => RowRead::Bad(format!(
                    "line {}: {} fields, the header names {}",
                    record.position().map_or(0, |p| p.line()),
                    record.len(),
                    header.len()
                )),
                Ok(true) => {
                    csv_row_as_json(record, header, booleans, out);
                    RowRead::Row
                }
            },
            Reader::Avro(reader) => match reader.next() {
                None => RowRead::End,
                Some(Err(e)) => RowRead::Broken(format!("record {}: {e}", next + 1)),
                // As exact JSON text (decimals as digits), decoded like a topic's JSON.
                Some(Ok(value)) => {
                    match crate::codec::avro::write_value(out, &value, reader.writer_schema()) {
                        Ok(()) => RowRead::Row,
                        Err(why) => RowRead::Bad(format!("record {}: {why}", next + 1)),
                    }
                }
            },
            // Read by `read_json_lines` and as batches.
            Reader::Lines(_) | Reader::Parquet(_) => RowRead::End,
        }
    }
}

struct OpenFile {
    /// The path as text (`_topic`, messages).
    name: String,
    partition: i32,
    reader: Reader,
    /// The next row's number (0-based, data rows only).
    next: i64,
    /// Rows before this were read by an earlier run (from a checkpoint).
    skip_to: i64,
    modified_ms: Option<i64>,
}

/// Reads files as a stream (see the module doc).
pub struct FileSource {
    spec: FileSourceSpec,
    /// Files found and not opened yet, in name order.
    queue: Vec<PathBuf>,
    /// Every file found so far (read, being read or queued).
    seen: BTreeSet<PathBuf>,
    /// Followed folders: files found once, with their size and modification time; a file is
    /// taken when a later scan finds both unchanged (a file still being written waits).
    settling: std::collections::HashMap<PathBuf, (u64, Option<std::time::SystemTime>)>,
    current: Option<OpenFile>,
    /// The partition of the file read last (the one holding the watermark between files).
    last_partition: Option<i32>,
    /// Where each file starts (a restored checkpoint's positions), by partition.
    starts: Positions,
    last_scan: Option<Instant>,
    collector: RecordBatchCollector,
    errors: Vec<String>,
    /// One row's bytes: a CSV or Avro row as JSON, or a JSON line spanning two reads (reused;
    /// not checked as UTF-8 here: the JSON decoder does).
    line: Vec<u8>,
}

/// The columns of an Avro container file: its writer schema's, as a stream of it would have.
pub fn avro_file_columns(path: &Path) -> Result<SchemaRef> {
    let file = File::open(path).map_err(|source| ConnectorError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = apache_avro::Reader::new(BufReader::new(file)).map_err(|e| {
        ConnectorError::Config(format!(
            "{}: not a readable Avro container file: {e}",
            path.display()
        ))
    })?;
    crate::codec::avro::arrow_schema(reader.writer_schema())
}

/// The first file `spec` would read (to learn columns from).
pub fn first_file(spec: &FileSourceSpec) -> Result<Option<PathBuf>> {
    let mut source = FileSource::empty(FileSourceSpec {
        follow: false,
        ..spec.clone()
    });
    source.scan()?;
    Ok(source.queue.first().cloned())
}

/// The partition number of a file: a stable (FNV-1a) hash of its path, non-negative.
pub fn file_partition(path: &Path) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in path.to_string_lossy().as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash & 0x7fff_ffff) as i32
}

impl FileSource {
    fn empty(spec: FileSourceSpec) -> Self {
        Self {
            spec,
            queue: Vec::new(),
            seen: BTreeSet::new(),
            settling: std::collections::HashMap::new(),
            current: None,
            last_partition: None,
            starts: Positions::new(),
            last_scan: None,
            collector: RecordBatchCollector::new(1024),
            errors: Vec::new(),
            line: Vec::new(),
        }
    }

    /// A source over `spec.path`; fails when a bounded read finds no file.
    pub fn open(spec: FileSourceSpec) -> Result<Self> {
        let mut source = Self::empty(spec);
        source.scan()?;
        if source.queue.is_empty() && !source.spec.follow {
            return Err(ConnectorError::Config(format!(
                "no file matches '{}'",
                source.spec.path
            )));
        }
        Ok(source)
    }

    fn format_of(&self, path: &Path) -> Option<FileFormat> {
        self.spec.format.or_else(|| FileFormat::of_path(path))
    }

    /// Adds the files that appeared since the last scan to the queue.
    fn scan(&mut self) -> Result<()> {
        self.last_scan = Some(Instant::now());
        let pattern = &self.spec.path;
        let mut found: Vec<PathBuf> = if pattern.contains(['*', '?', '[']) {
            glob::glob(pattern)
                .map_err(|e| ConnectorError::Config(format!("file pattern '{pattern}': {e}")))?
                .flatten()
                .filter(|p| p.is_file())
                .collect()
        } else {
            let path = Path::new(pattern);
            if path.is_dir() {
                std::fs::read_dir(path)
                    .map_err(|source| ConnectorError::File {
                        path: path.to_path_buf(),
                        source,
                    })?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.is_file()
                            && !p
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                            && self.format_of(p).is_some()
                    })
                    .collect()
            } else if path.is_file() {
                vec![path.to_path_buf()]
            } else {
                Vec::new()
            }
        };
        found.retain(|p| !self.seen.contains(p));
        if self.spec.follow {
            // Only files whose size and modification time held still since the last scan.
            let now: std::collections::HashMap<PathBuf, (u64, Option<std::time::SystemTime>)> =
                found
                    .iter()
                    .filter_map(|p| {
                        let meta = std::fs::metadata(p).ok()?;
                        Some((p.clone(), (meta.len(), meta.modified().ok())))
                    })
                    .collect();
            found.retain(|p| {
                self.settling
                    .get(p)
                    .is_some_and(|before| now.get(p) == Some(before))
            });
            self.settling = now;
        }
        found.sort();
        for path in found {
            self.seen.insert(path.clone());
            self.queue.push(path);
        }
        Ok(())
    }

    fn open_file(&mut self, path: PathBuf) -> Result<Option<OpenFile>> {
        // Always with a '/', so positions read as a file's (see `RecordPosition`).
        let name = if path.components().count() > 1 {
            path.display().to_string()
        } else {
            format!("./{}", path.display())
        };
        let Some(format) = self.format_of(&path) else {
            self.errors.push(format!(
                "file {name}: no format (name it .jsonl, .csv or .parquet, or give the format)"
            ));
            return Ok(None);
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.errors.push(format!("file {name}: {e}"));
                return Ok(None);
            }
        };
        let modified_ms = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64);
        let reader = match format {
            FileFormat::JsonLines => Reader::Lines(BufReader::with_capacity(1 << 20, file)),
            FileFormat::Csv => {
                let mut records = csv::ReaderBuilder::new().flexible(true).from_reader(file);
                let header: Vec<String> = match records.headers() {
                    Ok(h) => h
                        .iter()
                        .enumerate()
                        // A UTF-8 byte-order mark is not part of the first name.
                        .map(|(i, name)| match i {
                            0 => name.trim_start_matches('\u{feff}').to_string(),
                            _ => name.to_string(),
                        })
                        .collect(),
                    Err(e) => {
                        self.errors.push(format!("file {name}: the header: {e}"));
                        return Ok(None);
                    }
                };
                let booleans = header
                    .iter()
                    .map(|h| {
                        self.spec.schema.as_ref().is_some_and(|s| {
                            s.field_with_name(h)
                                .is_ok_and(|f| f.data_type() == &DataType::Boolean)
                        })
                    })
                    .collect();
                Reader::Csv {
                    records,
                    header,
                    booleans,
                    record: csv::StringRecord::new(),
                }
            }
            FileFormat::Avro => match apache_avro::Reader::new(BufReader::new(file)) {
                Ok(reader) => Reader::Avro(Box::new(reader)),
                Err(e) => {
                    self.errors.push(format!(
                        "file {name}: not a readable Avro container file: {e}"
                    ));
                    return Ok(None);
                }
            },
            FileFormat::Parquet => {
                match ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| {
                    // A file without a column the stream has is reported, not half-read.
                    if let Some(missing) = self.spec.schema.as_ref().and_then(|s| {
                        s.fields()
                            .iter()
                            .find(|f| b.schema().field_with_name(f.name()).is_err())
                    }) {
                        return Err(parquet::errors::ParquetError::General(format!(
                            "it has no column '{}' (its columns: {})",
                            missing.name(),
                            b.schema()
                                .fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                    b.with_batch_size(8192).build()
                }) {
                    Ok(reader) => Reader::Parquet(reader),
                    Err(e) => {
                        self.errors
                            .push(format!("file {name}: not a readable Parquet file: {e}"));
                        return Ok(None);
                    }
                }
            }
        };
        // The file's identity: its canonical path, however the pattern spelled it.
        let partition = file_partition(&std::fs::canonicalize(&path).unwrap_or(path.clone()));
        Ok(Some(OpenFile {
            skip_to: self.starts.get(&partition).copied().unwrap_or(0),
            name,
            partition,
            reader,
            next: 0,
            modified_ms,
        }))
    }

    /// Reads up to `max` rows of the current file; true when the file has ended.
    fn read_rows(&mut self, max: usize) -> Result<(Option<SourceBatch>, bool)> {
        let file = self.current.as_mut().expect("a file is open");
        if let Reader::Parquet(reader) = &mut file.reader {
            loop {
                match reader.next() {
                    None => return Ok((None, true)),
                    Some(Err(e)) => {
                        self.errors.push(format!(
                            "file {}: row {}: {e} (the rest of the file is skipped)",
                            file.name, file.next
                        ));
                        return Ok((None, true));
                    }
                    Some(Ok(batch)) => {
                        let first = file.next;
                        file.next += batch.num_rows() as i64;
                        if file.next <= file.skip_to {
                            continue;
                        }
                        let from = (file.skip_to - first).max(0) as usize;
                        let batch = batch.slice(from, batch.num_rows() - from);
                        return Ok((Some(decoded(file, first + from as i64, batch)), false));
                    }
                }
            }
        }
        if let OpenFile {
            reader: Reader::Lines(lines),
            name,
            partition,
            next,
            skip_to,
            modified_ms,
        } = file
        {
            let place = LinePlace {
                name,
                partition: *partition,
                next,
                skip_to: *skip_to,
                modified_ms: *modified_ms,
            };
            let ended = read_json_lines(lines, &mut self.line, place, &mut self.collector, max)
                .unwrap_or_else(|why| {
                    self.errors.push(format!(
                        "file {}: {why} (the rest of the file is skipped)",
                        file.name
                    ));
                    true
                });
            return Ok((self.take_collected(), ended));
        }
        // Row by row: CSV and Avro rows as JSON text.
        let mut ended = false;
        while self.collector.len() < max {
            self.line.clear();
            let read = file.reader.read_row(&mut self.line, file.next);
            match read {
                RowRead::End => {
                    ended = true;
                    break;
                }
                RowRead::Broken(why) => {
                    self.errors.push(format!(
                        "file {}: {why} (the rest of the file is skipped)",
                        file.name
                    ));
                    ended = true;
                    break;
                }
                RowRead::Row | RowRead::Bad(_) => {}
            }
            let row = file.next;
            file.next += 1;
            if row < file.skip_to {
                continue;
            }
            match read {
                RowRead::Bad(why) => self.errors.push(format!("file {}: {why}", file.name)),
                _ => self.collector.push(
                    Some(&self.line),
                    None,
                    &file.name,
                    file.partition,
                    row,
                    file.modified_ms,
                    std::iter::empty(),
                ),
            }
        }
        Ok((self.take_collected(), ended))
    }

    fn take_collected(&mut self) -> Option<SourceBatch> {
        (!self.collector.is_empty()).then(|| self.collector.finish())
    }
}

/// Where the JSON lines being read come from and which row is next.
struct LinePlace<'a> {
    name: &'a str,
    partition: i32,
    next: &'a mut i64,
    skip_to: i64,
    modified_ms: Option<i64>,
}

/// Collects JSON lines into `collector` until it holds `max` records; true when the file has
/// ended. Lines are taken straight from the reader's buffer (found with SIMD `memchr`) and
/// copied once, into the payload column; only a line that spans two buffer fills goes through
/// `spill`. Blank lines are not rows. An error names the line it stopped at.
fn read_json_lines(
    lines: &mut BufReader<File>,
    spill: &mut Vec<u8>,
    place: LinePlace<'_>,
    collector: &mut RecordBatchCollector,
    max: usize,
) -> std::result::Result<bool, String> {
    let LinePlace {
        name,
        partition,
        next,
        skip_to,
        modified_ms,
    } = place;
    let take = |line: &[u8], next: &mut i64, collector: &mut RecordBatchCollector| {
        let mut line = line;
        while let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let row = *next;
        *next += 1;
        if row >= skip_to {
            let meta = std::iter::empty();
            collector.push(Some(line), None, name, partition, row, modified_ms, meta);
        }
    };
    while collector.len() < max {
        let buffer = match lines.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) => {
                spill.clear();
                return Err(format!("line {}: {e}", *next + 1));
            }
        };
        if buffer.is_empty() {
            // The last line may have no newline.
            take(spill, next, collector);
            spill.clear();
            return Ok(true);
        }
        let used = match memchr::memchr(b'\n', buffer) {
            Some(end) if spill.is_empty() => {
                take(&buffer[..end], next, collector);
                end + 1
            }
            Some(end) => {
                spill.extend_from_slice(&buffer[..end]);
                take(spill, next, collector);
                spill.clear();
                end + 1
            }
            None => {
                spill.extend_from_slice(buffer);
                buffer.len()
            }
        };
        lines.consume(used);
    }
    Ok(false)
}

/// A Parquet batch of `file` whose first row is row `first`.
fn decoded(file: &OpenFile, first: i64, batch: RecordBatch) -> SourceBatch {
    let times = vec![file.modified_ms.unwrap_or(0); batch.num_rows()];
    let mut meta = RecordBatchCollector::generated_meta(&file.name, first, &times);
    meta.partition = arrow::array::Int32Array::from(vec![file.partition; batch.num_rows()]);
    SourceBatch {
        payload: Payload::Decoded(batch),
        meta,
    }
}

/// Writes a CSV record as a JSON object of `header`'s names into `out` (cleared first). Empty
/// fields are NULL; BOOLEAN columns' `true`/`false` are JSON booleans; the rest are strings
/// (the decoder parses numbers, decimals and times from them exactly).
fn csv_row_as_json(
    fields: &csv::StringRecord,
    header: &[String],
    booleans: &[bool],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.push(b'{');
    for (i, value) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        crate::codec::text::write_json_string(out, header.get(i).map_or("", String::as_str));
        out.push(b':');
        let boolean = booleans.get(i).copied().unwrap_or(false);
        if value.is_empty() {
            out.extend_from_slice(b"null");
        } else if boolean && value.eq_ignore_ascii_case("true") {
            out.extend_from_slice(b"true");
        } else if boolean && value.eq_ignore_ascii_case("false") {
            out.extend_from_slice(b"false");
        } else {
            crate::codec::text::write_json_string(out, value);
        }
    }
    out.push(b'}');
}

impl Source for FileSource {
    fn poll_batch(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Option<SourceBatch>> {
        let deadline = Instant::now() + max_wait;
        loop {
            if self.current.is_none() {
                if self.queue.is_empty()
                    && self.spec.follow
                    && self
                        .last_scan
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    self.scan()?;
                }
                if self.queue.is_empty() {
                    if !self.spec.follow {
                        return Ok(None);
                    }
                    // Wait for new files, up to the poll's deadline.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Some(self.collector.finish()));
                    }
                    std::thread::sleep(left.min(Duration::from_millis(100)));
                    continue;
                }
                let path = self.queue.remove(0);
                self.current = self.open_file(path)?;
                if let Some(file) = &self.current {
                    self.last_partition = Some(file.partition);
                }
                continue;
            }
            let (batch, ended) = self.read_rows(max_records.max(1))?;
            if ended {
                self.current = None;
            }
            if let Some(batch) = batch {
                return Ok(Some(batch));
            }
        }
    }

    /// Each file starts at the row its partition's position names (rows before were read).
    fn seek(&mut self, positions: &Positions) -> Result<()> {
        self.starts.clone_from(positions);
        if let Some(file) = self.current.as_mut() {
            file.skip_to = positions.get(&file.partition).copied().unwrap_or(0);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("files '{}'", self.spec.path)
    }

    fn positions_only_in_checkpoints(&self) -> bool {
        true
    }

    fn is_bounded(&self) -> bool {
        !self.spec.follow
    }

    /// The file being read (or, between files, the one read last): finished files no longer
    /// hold the watermark back, as files are read one after the other.
    fn assigned_partitions(&self) -> Option<Vec<i32>> {
        self.current
            .as_ref()
            .map(|f| f.partition)
            .or(self.last_partition)
            .map(|p| vec![p])
    }

    fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("path", &self.spec.path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_json_objects_with_quotes_nulls_and_booleans() {
        let text = "id,name,ok,amount\n7,\"Smith, \"\"J\"\"\nline two\",TRUE,12.50\n8,,false,\n";
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        let booleans = [false, false, true, false];
        let mut out = Vec::new();
        let rows: Vec<String> = reader
            .records()
            .map(|r| {
                csv_row_as_json(&r.unwrap(), &header, &booleans, &mut out);
                String::from_utf8(out.clone()).unwrap()
            })
            .collect();
        assert_eq!(
            rows,
            [
                r#"{"id":"7","name":"Smith, \"J\"\nline two","ok":true,"amount":"12.50"}"#,
                r#"{"id":"8","name":null,"ok":false,"amount":null}"#,
            ]
        );
    }

    #[test]
    fn a_file_keeps_its_partition_whatever_else_appears() {
        let a = file_partition(Path::new("/data/2024-01-01.jsonl"));
        assert_eq!(a, file_partition(Path::new("/data/2024-01-01.jsonl")));
        assert_ne!(a, file_partition(Path::new("/data/2024-01-02.jsonl")));
        assert!(a >= 0);
    }
    /// Reads `text` as a JSON-lines file through a reader buffer of `capacity` bytes, in
    /// batches of at most `max` records; the payloads and row numbers of every batch.
    fn json_lines(
        text: &str,
        capacity: usize,
        max: usize,
        skip_to: i64,
    ) -> Vec<Vec<(String, i64)>> {
        let path = std::env::temp_dir().join(format!(
            "velo-lines-{}-{capacity}.jsonl",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        let mut lines = BufReader::with_capacity(capacity, File::open(&path).unwrap());
        let (mut spill, mut collector, mut next) = (Vec::new(), RecordBatchCollector::new(4), 0);
        let mut batches = Vec::new();
        loop {
            let place = LinePlace {
                name: "f",
                partition: 0,
                next: &mut next,
                skip_to,
                modified_ms: None,
            };
            let ended =
                read_json_lines(&mut lines, &mut spill, place, &mut collector, max).unwrap();
            let batch = collector.finish();
            let Payload::Encoded(payload) = &batch.payload else {
                panic!("encoded")
            };
            batches.push(
                (0..arrow::array::Array::len(payload))
                    .map(|i| {
                        (
                            String::from_utf8(payload.value(i).to_vec()).unwrap(),
                            batch.meta.offset.value(i),
                        )
                    })
                    .collect(),
            );
            if ended {
                break;
            }
        }
        std::fs::remove_file(&path).unwrap();
        batches
    }

    #[test]
    fn json_lines_split_across_buffer_fills_crlf_blank_lines_and_no_final_newline() {
        let text = "{\"a\":1}\r\n\n   \n{\"a\":22222222222}\n{\"b\":\"x y\"}";
        let rows = |batches: Vec<Vec<(String, i64)>>| batches.concat();
        let expected = [
            ("{\"a\":1}".to_string(), 0),
            ("{\"a\":22222222222}".to_string(), 1),
            ("{\"b\":\"x y\"}".to_string(), 2),
        ];
        // Every buffer size from one byte (every line spans fills) to the whole file.
        for capacity in 1..=text.len() + 1 {
            assert_eq!(
                rows(json_lines(text, capacity, 100, 0)),
                expected,
                "capacity {capacity}"
            );
        }
        // Batches stop at `max` and go on where they stopped; rows before `skip_to` are not kept.
        let batches = json_lines(text, 5, 2, 0);
        assert_eq!(batches[0], expected[..2]);
        assert_eq!(rows(batches[1..].to_vec()), expected[2..]);
        assert_eq!(rows(json_lines(text, 5, 100, 2)), expected[2..]);
    }
}
