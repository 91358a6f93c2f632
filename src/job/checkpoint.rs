//! Checkpoints: one consistent picture of a job at a micro-batch boundary, and where it is kept.
//!
//! A [`Checkpoint`] holds every operator's state (Arrow batches), the watermark tracker, each
//! input partition's next offset, the table topics' offsets, the sink's position (and the
//! results it holds back), and the results produced past `--limit`. Because nothing is in
//! flight between micro-batches, state and offsets describe the same instant.
//!
//! On disk a checkpoint is a folder `chk-<id>` holding `manifest.json` (everything but the
//! batches, with a length and CRC-32 per file) and one Arrow IPC file per batch. It is written
//! under a temporary name, each file fsynced, then renamed into place, so a checkpoint is either
//! complete or absent; the last few are kept. All I/O goes through [`CheckpointStore`], so the
//! folder can become an object store without touching the job.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use velo_connectors::sink::SinkState;
use velo_connectors::source::Positions;

use crate::error::{Result, VeloError};
use crate::watermark::WatermarkState;

/// The manifest's format name and version.
const FORMAT: &str = "velostream-checkpoint";
const VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";

/// When a job acknowledges (commits) the records it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acknowledge {
    /// After every micro-batch: nothing of a record stays in memory once its batch is done
    /// (a stateless query with output delivered per micro-batch). The group's offsets are then
    /// newer than a checkpoint's, and a restart starts from them.
    PerEpoch,
    /// Only with checkpoints: a record's effect may live in operator state or in results held
    /// back until a checkpoint. A restart starts from the checkpoint's offsets.
    WithCheckpoints,
}

/// One operator's state.
#[derive(Debug, Clone)]
pub struct OperatorState {
    pub name: String,
    pub batches: Vec<RecordBatch>,
}

/// The positions of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputPosition {
    /// The stream's name in the query.
    pub stream: String,
    /// Next offset per partition.
    pub positions: Positions,
}

/// A job at one micro-batch boundary.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub id: u64,
    pub job: String,
    /// Identifies the query and its input schemas: state is only restored into the same.
    pub fingerprint: String,
    /// The query as written, for messages.
    pub query: String,
    pub created_at: String,
    pub acknowledge: Acknowledge,
    /// Every operator's state, lane after lane (see [`crate::job::lanes`]).
    pub operators: Vec<OperatorState>,
    /// How many lanes' states `operators` holds (a keyed query's lanes each hold their keys').
    pub lanes: usize,
    /// With several lanes: how the query was split across them, i.e. which state each lane
    /// holds (`Exchange::describe`). A job splitting the query otherwise cannot take the
    /// lanes' states. `None` in checkpoints from before 2026-12-07.
    pub split: Option<String>,
    pub watermark: Option<WatermarkState>,
    pub inputs: Vec<InputPosition>,
    /// Table topics followed for lookup joins.
    pub tables: Vec<InputPosition>,
    pub sink: SinkState,
    /// Results produced past `--limit`: the next run emits them first.
    pub carry: Vec<RecordBatch>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    id: u64,
    job: String,
    fingerprint: String,
    query: String,
    created_at: String,
    acknowledge: Acknowledge,
    operators: Vec<ManifestOperator>,
    /// Absent in checkpoints from before lanes: one.
    #[serde(default = "one_lane")]
    lanes: usize,
    #[serde(default)]
    split: Option<String>,
    watermark: Option<WatermarkState>,
    inputs: Vec<InputPosition>,
    tables: Vec<InputPosition>,
    sink_position: serde_json::Value,
    sink_files: Vec<String>,
    carry_files: Vec<String>,
    files: BTreeMap<String, FileEntry>,
}

fn one_lane() -> usize {
    1
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestOperator {
    name: String,
    files: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct FileEntry {
    bytes: u64,
    crc32: u32,
}

/// Where checkpoints are kept: whole checkpoints are written, listed, read file by file and
/// deleted. Local disk is [`LocalStore`]; an object store would implement the same.
pub trait CheckpointStore: Send + Sync {
    /// Where the store is, for messages.
    fn describe(&self) -> String;
    /// Ids of the complete checkpoints, ascending.
    fn list(&self) -> Result<Vec<u64>>;
    /// Writes checkpoint `id` made of `files`: afterwards it is listed whole, or not at all.
    fn write(&self, id: u64, files: &[(String, Vec<u8>)]) -> Result<()>;
    /// One file of checkpoint `id`.
    fn read(&self, id: u64, name: &str) -> Result<Vec<u8>>;
    /// Removes checkpoint `id`.
    fn delete(&self, id: u64) -> Result<()>;
}

/// Checkpoints in a local folder: `<root>/chk-<id>/`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// The store in `root` for reading only (a savepoint, an export, while the job may be
    /// writing): nothing is created or removed.
    pub fn reader(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store in `root` for the job that writes it (created when missing). Half-written
    /// checkpoints left by a crash (temporary folders) are removed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| io_error(&root, e))?;
        for entry in std::fs::read_dir(&root).map_err(|e| io_error(&root, e))? {
            let entry = entry.map_err(|e| io_error(&root, e))?;
            if entry.file_name().to_string_lossy().starts_with(".chk-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(Self { root })
    }

    /// The folder of checkpoint `id`.
    pub fn folder(&self, id: u64) -> PathBuf {
        self.root.join(format!("chk-{id:010}"))
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn io_error(path: &Path, e: std::io::Error) -> VeloError {
    VeloError::State(format!("{}: {e}", path.display()))
}

pub(crate) fn sync_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(path, e))
}

impl CheckpointStore for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        if !self.root.exists() {
            return Ok(ids);
        }
        for entry in std::fs::read_dir(&self.root).map_err(|e| io_error(&self.root, e))? {
            let entry = entry.map_err(|e| io_error(&self.root, e))?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn write(&self, id: u64, files: &[(String, Vec<u8>)]) -> Result<()> {
        let temp = self
            .root
            .join(format!(".chk-{id:010}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&temp);
        std::fs::create_dir_all(&temp).map_err(|e| io_error(&temp, e))?;
        for (name, bytes) in files {
            let path = temp.join(name);
            let mut file = std::fs::File::create(&path).map_err(|e| io_error(&path, e))?;
            file.write_all(bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error(&path, e))?;
        }
        sync_dir(&temp)?;
        let target = self.folder(id);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(&temp, &target).map_err(|e| io_error(&target, e))?;
        sync_dir(&self.root)
    }

    fn read(&self, id: u64, name: &str) -> Result<Vec<u8>> {
        let path = self.folder(id).join(name);
        std::fs::read(&path).map_err(|e| io_error(&path, e))
    }

    fn delete(&self, id: u64) -> Result<()> {
        let path = self.folder(id);
        std::fs::remove_dir_all(&path).map_err(|e| io_error(&path, e))
    }
}

/// One batch as an Arrow IPC file.
fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer = arrow::ipc::writer::FileWriter::try_new(&mut out, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(out)
}

fn ipc_batch(bytes: Vec<u8>) -> Result<RecordBatch> {
    let reader = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let mut batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    match batches.len() {
        1 => Ok(batches.remove(0)),
        0 => Ok(RecordBatch::new_empty(schema)),
        n => Err(VeloError::State(format!(
            "a state file holds {n} batches, not one"
        ))),
    }
}

impl Checkpoint {
    /// The checkpoint as files: the manifest and one Arrow IPC file per batch.
    pub fn encode(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        let mut entries = BTreeMap::new();
        let mut add = |name: String, bytes: Vec<u8>, files: &mut Vec<(String, Vec<u8>)>| {
            entries.insert(
                name.clone(),
                FileEntry {
                    bytes: bytes.len() as u64,
                    crc32: crc32fast::hash(&bytes),
                },
            );
            files.push((name, bytes));
        };
        let mut operators = Vec::new();
        for (i, op) in self.operators.iter().enumerate() {
            let mut names = Vec::new();
            for (j, batch) in op.batches.iter().enumerate() {
                let name = format!("op{i}-{j}.arrow");
                add(name.clone(), ipc_bytes(batch)?, &mut files);
                names.push(name);
            }
            operators.push(ManifestOperator {
                name: op.name.clone(),
                files: names,
            });
        }
        let mut sink_files = Vec::new();
        for (j, batch) in self.sink.pending.iter().enumerate() {
            let name = format!("sink-{j}.arrow");
            add(name.clone(), ipc_bytes(batch)?, &mut files);
            sink_files.push(name);
        }
        let mut carry_files = Vec::new();
        for (j, batch) in self.carry.iter().enumerate() {
            let name = format!("carry-{j}.arrow");
            add(name.clone(), ipc_bytes(batch)?, &mut files);
            carry_files.push(name);
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            id: self.id,
            job: self.job.clone(),
            fingerprint: self.fingerprint.clone(),
            query: self.query.clone(),
            created_at: self.created_at.clone(),
            acknowledge: self.acknowledge,
            operators,
            lanes: self.lanes,
            split: self.split.clone(),
            watermark: self.watermark.clone(),
            inputs: self.inputs.clone(),
            tables: self.tables.clone(),
            sink_position: self.sink.position.clone(),
            sink_files,
            carry_files,
            files: entries,
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| VeloError::State(format!("encoding a checkpoint manifest: {e}")))?;
        // The manifest goes last: a store without atomic folders sees it only once the rest is
        // there.
        files.push((MANIFEST.to_string(), json));
        Ok(files)
    }

    /// Reads a checkpoint through `read` (one file by name), checking every file's length and
    /// CRC against the manifest.
    pub fn decode(mut read: impl FnMut(&str) -> Result<Vec<u8>>) -> Result<Checkpoint> {
        let manifest: Manifest = serde_json::from_slice(&read(MANIFEST)?)
            .map_err(|e| VeloError::State(format!("{MANIFEST} is unreadable: {e}")))?;
        if manifest.format != FORMAT || manifest.version != VERSION {
            return Err(VeloError::State(format!(
                "{MANIFEST} is {} version {}, not {FORMAT} version {VERSION}",
                manifest.format, manifest.version
            )));
        }
        let mut batch = |name: &str| -> Result<RecordBatch> {
            let entry = manifest
                .files
                .get(name)
                .ok_or_else(|| VeloError::State(format!("{MANIFEST} does not describe {name}")))?;
            let bytes = read(name)?;
            if bytes.len() as u64 != entry.bytes || crc32fast::hash(&bytes) != entry.crc32 {
                return Err(VeloError::State(format!(
                    "{name} is damaged ({} bytes, the manifest says {} with another checksum)",
                    bytes.len(),
                    entry.bytes
                )));
            }
            ipc_batch(bytes).map_err(|e| VeloError::State(format!("{name}: {e}")))
        };
        let mut operators = Vec::new();
        for op in &manifest.operators {
            operators.push(OperatorState {
                name: op.name.clone(),
                batches: op.files.iter().map(|f| batch(f)).collect::<Result<_>>()?,
            });
        }
        let pending = manifest
            .sink_files
            .iter()
            .map(|f| batch(f))
            .collect::<Result<_>>()?;
        let carry = manifest
            .carry_files
            .iter()
            .map(|f| batch(f))
            .collect::<Result<_>>()?;
        Ok(Checkpoint {
            id: manifest.id,
            job: manifest.job,
            fingerprint: manifest.fingerprint,
            query: manifest.query,
            created_at: manifest.created_at,
            acknowledge: manifest.acknowledge,
            operators,
            lanes: manifest.lanes,
            split: manifest.split,
            watermark: manifest.watermark,
            inputs: manifest.inputs,
            tables: manifest.tables,
            sink: SinkState {
                position: manifest.sink_position,
                pending,
            },
            carry,
        })
    }

    /// Bytes of state batches (for reports).
    pub fn state_rows(&self) -> usize {
        self.operators
            .iter()
            .flat_map(|o| &o.batches)
            .map(|b| b.num_rows())
            .sum()
    }
}

/// The newest checkpoint of `store` that reads back whole. A damaged one is skipped with a
/// warning, falling back to the one before; `Ok(None)` when there is none at all.
pub fn load_latest(store: &dyn CheckpointStore) -> Result<Option<Checkpoint>> {
    let ids = store.list()?;
    let mut damaged: Vec<(u64, String)> = Vec::new();
    for &id in ids.iter().rev() {
        match Checkpoint::decode(|name| store.read(id, name)) {
            Ok(checkpoint) => {
                if !damaged.is_empty() {
                    tracing::warn!(
                        "restoring checkpoint {id} of {} instead of the newer, damaged {}",
                        store.describe(),
                        damaged
                            .iter()
                            .map(|(id, _)| id.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                return Ok(Some(checkpoint));
            }
            Err(e) => {
                tracing::warn!(
                    "checkpoint {id} in {} is damaged and is skipped: {e}",
                    store.describe()
                );
                damaged.push((id, e.to_string()));
            }
        }
    }
    match damaged.first() {
        None => Ok(None),
        Some((id, why)) => Err(VeloError::State(format!(
            "no checkpoint in {} reads back whole (checkpoint {id}: {why}); start with \
             --ignore-state to run without the old state",
            store.describe()
        ))),
    }
}

/// Reads a savepoint: a checkpoint folder copied elsewhere.
pub fn load_folder(folder: &Path) -> Result<Checkpoint> {
    Checkpoint::decode(|name| {
        let path = folder.join(name);
        std::fs::read(&path).map_err(|e| io_error(&path, e))
    })
    .map_err(|e| VeloError::State(format!("savepoint {}: {e}", folder.display())))
}

/// Copies checkpoint `id` of `store` into `folder` (a savepoint), fsynced.
pub fn copy_to_folder(store: &dyn CheckpointStore, id: u64, folder: &Path) -> Result<()> {
    let checkpoint = Checkpoint::decode(|name| store.read(id, name))?;
    let parent = folder.parent().unwrap_or(Path::new("."));
    let name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "savepoint".into());
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    let temp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir_all(&temp).map_err(|e| io_error(&temp, e))?;
    for (file, bytes) in checkpoint.encode()? {
        let path = temp.join(&file);
        let mut out = std::fs::File::create(&path).map_err(|e| io_error(&path, e))?;
        out.write_all(&bytes)
            .and_then(|()| out.sync_all())
            .map_err(|e| io_error(&path, e))?;
    }
    sync_dir(&temp)?;
    std::fs::rename(&temp, folder).map_err(|e| io_error(folder, e))?;
    sync_dir(parent)
}

/// Writes a job's checkpoints and keeps the last few.
pub struct Checkpointer {
    pub store: Box<dyn CheckpointStore>,
    pub interval: std::time::Duration,
    pub keep: usize,
    pub next_id: u64,
    pub job: String,
    pub fingerprint: String,
    pub query: String,
    pub acknowledge: Acknowledge,
    pub last: std::time::Instant,
}

impl Checkpointer {
    /// True when the interval since the last checkpoint has passed.
    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.interval
    }

    /// Writes `checkpoint` (its id, job and fingerprint set here) and prunes old ones;
    /// returns its id and size in bytes.
    pub fn write(&mut self, mut checkpoint: Checkpoint) -> Result<(u64, u64)> {
        let id = self.next_id;
        checkpoint.id = id;
        checkpoint.job = self.job.clone();
        checkpoint.fingerprint = self.fingerprint.clone();
        checkpoint.query = self.query.clone();
        checkpoint.acknowledge = self.acknowledge;
        let files = checkpoint.encode()?;
        let bytes = files.iter().map(|(_, b)| b.len() as u64).sum();
        self.store.write(id, &files)?;
        self.next_id += 1;
        self.last = std::time::Instant::now();
        let ids = self.store.list()?;
        if ids.len() > self.keep {
            for &old in &ids[..ids.len() - self.keep] {
                if let Err(e) = self.store.delete(old) {
                    tracing::warn!("could not remove old checkpoint {old}: {e}");
                }
            }
        }
        Ok((id, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("n", DataType::Int64, false),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![n, n + 1])),
            ],
        )
        .unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            id: 0,
            job: String::new(),
            fingerprint: String::new(),
            query: String::new(),
            created_at: "2026-01-01T00:00:00Z".into(),
            acknowledge: Acknowledge::WithCheckpoints,
            operators: vec![
                OperatorState {
                    name: "FilterExec".into(),
                    batches: vec![],
                },
                OperatorState {
                    name: "WindowAggregateExec".into(),
                    batches: vec![batch(1), batch(10)],
                },
            ],
            lanes: 1,
            split: None,
            watermark: None,
            inputs: vec![InputPosition {
                stream: "trades".into(),
                positions: [(0, 17), (1, 3)].into_iter().collect(),
            }],
            tables: vec![],
            sink: SinkState {
                position: serde_json::json!({"bytes": 12}),
                pending: vec![batch(5)],
            },
            carry: vec![batch(7)],
        }
    }

    fn checkpointer(store: LocalStore) -> Checkpointer {
        Checkpointer {
            store: Box::new(store),
            interval: std::time::Duration::from_secs(1),
            keep: 2,
            next_id: 1,
            job: "j".into(),
            fingerprint: "f".into(),
            query: "SELECT 1".into(),
            acknowledge: Acknowledge::WithCheckpoints,
            last: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_checkpoint_reads_back_as_written_and_only_the_last_few_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut writer = checkpointer(store.clone());
        for _ in 0..3 {
            writer.write(checkpoint()).unwrap();
        }
        assert_eq!(store.list().unwrap(), vec![2, 3]);
        let back = load_latest(&store).unwrap().unwrap();
        assert_eq!(back.id, 3);
        assert_eq!(back.fingerprint, "f");
        assert_eq!(back.operators.len(), 2);
        assert_eq!(back.operators[1].batches, vec![batch(1), batch(10)]);
        assert_eq!(back.inputs, checkpoint().inputs);
        assert_eq!(back.sink.pending, vec![batch(5)]);
        assert_eq!(back.sink.position, serde_json::json!({"bytes": 12}));
        assert_eq!(back.carry, vec![batch(7)]);
    }

    #[test]
    fn a_damaged_checkpoint_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut writer = checkpointer(store.clone());
        writer.write(checkpoint()).unwrap();
        writer.write(checkpoint()).unwrap();
        // Truncate a state file of the newest checkpoint.
        let file = store.folder(2).join("op1-0.arrow");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(load_latest(&store).unwrap().unwrap().id, 1);
        // A half-written one (a temporary folder) is not a checkpoint at all.
        std::fs::create_dir_all(dir.path().join(".chk-0000000003.tmp-1")).unwrap();
        assert_eq!(store.list().unwrap(), vec![1, 2]);
        // With every checkpoint damaged the job refuses to guess.
        std::fs::write(store.folder(1).join("manifest.json"), b"{").unwrap();
        let err = load_latest(&store).unwrap_err().to_string();
        assert!(err.contains("--ignore-state"), "{err}");
    }
}
