//! Parquet output: [`ParquetOptions`] (compression, row-group size) and [`ContainerFileSink`],
//! one Parquet (or Avro container) file written under a temporary name and renamed into place
//! when finished, so a reader never sees a file without its footer.
//!
//! Types are kept exactly: `Decimal128(p, s)` is a Parquet DECIMAL(p, s), timestamps keep their
//! unit and time zone, structs, lists and maps are Parquet nested types (arrow-rs's writer,
//! with the Arrow schema embedded so Arrow readers get the same types back).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::sink::Sink;
use crate::{ConnectorError, Result};

/// The compression of Parquet pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetCompression {
    #[default]
    Zstd,
    Snappy,
    None,
}

impl std::str::FromStr for ParquetCompression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" => Ok(Self::Zstd),
            "snappy" => Ok(Self::Snappy),
            "none" | "uncompressed" => Ok(Self::None),
            other => Err(format!(
                "unknown compression '{other}' (expected zstd, snappy or none)"
            )),
        }
    }
}

/// How Parquet files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParquetOptions {
    pub compression: ParquetCompression,
    /// Most rows per row group.
    pub row_group_rows: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        Self {
            compression: ParquetCompression::Zstd,
            row_group_rows: 1024 * 1024,
        }
    }
}

impl ParquetOptions {
    /// `batches` as one Parquet file in memory (an HTTP answer).
    pub fn to_bytes(&self, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
        let mut writer = self.writer(Vec::new(), schema)?;
        let error = |e: ::parquet::errors::ParquetError| {
            ConnectorError::Config(format!("cannot write Parquet: {e}"))
        };
        for batch in batches {
            writer.write(batch).map_err(error)?;
        }
        writer.into_inner().map_err(error)
    }

    fn properties(&self) -> WriterProperties {
        let compression = match self.compression {
            ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::None => Compression::UNCOMPRESSED,
        };
        WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_created_by(format!("velostream {}", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// A writer of `schema` batches into `out` (a file, or memory).
    pub fn writer<W: std::io::Write + Send>(
        &self,
        out: W,
        schema: &SchemaRef,
    ) -> Result<ArrowWriter<W>> {
        ArrowWriter::try_new(out, schema.clone(), Some(self.properties()))
            .map_err(|e| ConnectorError::Config(format!("cannot write Parquet: {e}")))
    }
}

/// The hidden name a file is written under until it is complete: `dir/.name.inprogress`.
pub fn in_progress_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.inprogress"))
}

/// Renames `from` to `to` and makes the rename durable (the folder fsynced).
pub fn publish(from: &Path, to: &Path) -> Result<()> {
    let error = |source| ConnectorError::File {
        path: to.to_path_buf(),
        source,
    };
    std::fs::rename(from, to).map_err(error)?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
    }
    Ok(())
}

enum ContainerWriter {
    Parquet(ArrowWriter<File>),
    Avro(
        Box<crate::avro_file::AvroContainerFormat>,
        apache_avro::Writer<'static, File>,
    ),
}

/// One Parquet or Avro container file of a bounded result (`execute`, `export`).
pub struct ContainerFileSink {
    path: PathBuf,
    temp: PathBuf,
    writer: Option<ContainerWriter>,
    rows: u64,
}

impl ContainerFileSink {
    /// Starts the Parquet file `path` (written as [`in_progress_path`] until [`Sink::finish`]).
    pub fn parquet(path: &Path, schema: &SchemaRef, options: ParquetOptions) -> Result<Self> {
        let (temp, file) = Self::start(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(ContainerWriter::Parquet(options.writer(file, schema)?)),
            temp,
            rows: 0,
        })
    }

    /// Starts the Avro container file `path`, its schema derived from the result's columns.
    pub fn avro(path: &Path, schema: &SchemaRef) -> Result<Self> {
        let format = Box::new(crate::avro_file::AvroContainerFormat::new(schema)?);
        let (temp, file) = Self::start(path)?;
        let writer = format.writer(file);
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(ContainerWriter::Avro(format, writer)),
            temp,
            rows: 0,
        })
    }

    fn start(path: &Path) -> Result<(PathBuf, File)> {
        let temp = in_progress_path(path);
        let file = File::create(&temp).map_err(|source| ConnectorError::File {
            path: temp.clone(),
            source,
        })?;
        Ok((temp, file))
    }

    fn error(&self, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Config(format!("writing {}: {e}", self.path.display()))
    }
}

impl Sink for ContainerFileSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self.writer.as_mut() {
            None => {
                return Err(ConnectorError::Config(format!(
                    "{} is already finished",
                    self.path.display()
                )))
            }
            Some(ContainerWriter::Parquet(writer)) => {
                let written = writer.write(batch);
                written.map_err(|e| self.error(e))?
            }
            Some(ContainerWriter::Avro(format, writer)) => format.write(writer, batch)?,
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let file = match writer {
            ContainerWriter::Parquet(w) => w.into_inner().map_err(|e| self.error(e)),
            ContainerWriter::Avro(_, w) => w.into_inner().map_err(|e| self.error(e)),
        };
        let finished = file
            .and_then(|file| {
                file.sync_all().map_err(|source| ConnectorError::File {
                    path: self.temp.clone(),
                    source,
                })
            })
            .and_then(|()| publish(&self.temp, &self.path));
        if finished.is_err() {
            // No partial file left behind.
            let _ = std::fs::remove_file(&self.temp);
        }
        finished
    }

    fn rows_written(&self) -> u64 {
        self.rows
    }
}

impl Drop for ContainerFileSink {
    /// An unfinished file (the run failed) is removed: no partial file is left behind.
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    #[test]
    fn a_parquet_file_appears_whole_and_reads_back_with_the_same_types() {
        let dir = std::env::temp_dir().join(format!("velo-parquet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Decimal128(18, 4), true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(
                    Decimal128Array::from(vec![Some(1_502_567), None])
                        .with_precision_and_scale(18, 4)
                        .unwrap(),
                ),
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_704_067_200_123), None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let mut sink =
            ContainerFileSink::parquet(&path, &schema, ParquetOptions::default()).unwrap();
        sink.write(&batch).unwrap();
        assert!(!path.exists(), "no file before it is finished");
        assert!(in_progress_path(&path).exists());
        sink.finish().unwrap();
        assert!(path.exists() && !in_progress_path(&path).exists());
        let read: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
        assert_eq!(read, vec![batch]);
        // A sink dropped unfinished leaves nothing.
        let other = dir.join("failed.parquet");
        drop(ContainerFileSink::parquet(&other, &schema, ParquetOptions::default()).unwrap());
        assert!(!other.exists() && !in_progress_path(&other).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
