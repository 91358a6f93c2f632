//! The server's state folder (`state.dir`): each deployed job's folder `jobs/<id>/` holds its
//! definition (`job.json`, so a restarted server redeploys it) and its checkpoints; savepoints
//! go to `savepoints/`. Export and import move jobs (definitions and last checkpoints) between
//! servers as one JSON document.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::app::AppJob;
use super::config::RestartPolicy;
use crate::error::{Result, VeloError};
use crate::job::checkpoint::{CheckpointStore, LocalStore};

const DEFINITION: &str = "job.json";
const EXPORT_FORMAT: &str = "velostream-state";

/// Whether a kept job runs when the server starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Running,
    /// Stopped by a user: listed, not started.
    Stopped,
}

/// A deployed job as kept on disk and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDefinition {
    pub id: String,
    pub job: AppJob,
    pub consumer_group: String,
    pub restart_policy: RestartPolicy,
    pub continuous: bool,
    pub desired: Desired,
    /// Deployed by the operator (`SQL_FILE`, an in-process `deploy-app`), not over HTTP: its
    /// errors may quote its files.
    #[serde(default)]
    pub trusted: bool,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> VeloError {
    VeloError::State(format!("{}: {e}", path.display()))
}

/// Writes `definition` to `<job_dir>/job.json` (temporary name, fsync, rename).
pub fn write_definition(job_dir: &Path, definition: &JobDefinition) -> Result<()> {
    std::fs::create_dir_all(job_dir).map_err(|e| io_error(job_dir, e))?;
    let path = job_dir.join(DEFINITION);
    let temp = job_dir.join(format!(".{DEFINITION}.tmp"));
    let text = serde_json::to_vec_pretty(definition).map_err(|e| io_error(&path, e))?;
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::File::open(&temp)?.sync_all())
        .map_err(|e| io_error(&temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| io_error(&path, e))?;
    crate::job::checkpoint::sync_dir(job_dir)
}

/// The definitions kept under `jobs_dir`, by id. An unreadable one is skipped with a warning.
pub fn read_definitions(jobs_dir: &Path) -> Result<Vec<JobDefinition>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(jobs_dir) else {
        return Ok(out);
    };
    for entry in entries {
        let path = entry
            .map_err(|e| io_error(jobs_dir, e))?
            .path()
            .join(DEFINITION);
        if !path.exists() {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<JobDefinition>(&b).map_err(|e| e.to_string()))
        {
            Ok(definition) => out.push(definition),
            Err(why) => tracing::warn!("skipping the job kept in {}: {why}", path.display()),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Copies the newest checkpoint of the job in `job_dir` to `savepoints/<id>-<time>`; returns
/// the savepoint's folder and the checkpoint's id.
pub fn savepoint(job_dir: &Path, savepoints: &Path, id: &str) -> Result<(PathBuf, u64)> {
    let store = LocalStore::reader(job_dir.join("checkpoints"));
    let Some(&checkpoint) = store.list()?.last() else {
        return Err(VeloError::State(format!(
            "job '{id}' has no checkpoint yet"
        )));
    };
    let folder = savepoints.join(format!(
        "{}-{}",
        crate::job::spec::folder_name(id),
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    ));
    crate::job::checkpoint::copy_to_folder(&store, checkpoint, &folder)?;
    Ok((folder, checkpoint))
}

/// One job of an export: its definition and its newest checkpoint's files (base64).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedJob {
    pub definition: JobDefinition,
    pub checkpoint: Option<ExportedCheckpoint>,
}

/// A checkpoint's files.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedCheckpoint {
    pub id: u64,
    pub files: std::collections::BTreeMap<String, String>,
}

/// An export document: every job's (or one job's) definition and state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Export {
    pub format: String,
    pub version: u32,
    #[serde(default)]
    pub exported_at: String,
    pub jobs: Vec<ExportedJob>,
}

/// `definition`'s job with its newest checkpoint (read back whole, so a damaged one is not
/// exported).
pub fn export_job(job_dir: &Path, definition: JobDefinition) -> Result<ExportedJob> {
    let store = LocalStore::reader(job_dir.join("checkpoints"));
    let checkpoint = match crate::job::checkpoint::load_latest(&store)? {
        None => None,
        Some(checkpoint) => {
            let b64 = base64::engine::general_purpose::STANDARD;
            Some(ExportedCheckpoint {
                id: checkpoint.id,
                files: checkpoint
                    .encode()?
                    .into_iter()
                    .map(|(name, bytes)| (name, b64.encode(bytes)))
                    .collect(),
            })
        }
    };
    Ok(ExportedJob {
        definition,
        checkpoint,
    })
}

/// A new export document of `jobs`.
pub fn export(jobs: Vec<ExportedJob>) -> Export {
    Export {
        format: EXPORT_FORMAT.into(),
        version: 1,
        exported_at: chrono::Utc::now().to_rfc3339(),
        jobs,
    }
}

/// Checks an export document before anything of it is written.
pub fn check_export(export: &Export) -> Result<()> {
    if export.format != EXPORT_FORMAT || export.version != 1 {
        return Err(VeloError::Usage(format!(
            "not a VeloStream state export (format '{}' version {}; expected '{EXPORT_FORMAT}' version 1)",
            export.format, export.version
        )));
    }
    Ok(())
}

/// A checkpoint's files, by name.
type CheckpointFiles = Vec<(String, Vec<u8>)>;

/// An exported job checked and decoded, ready to be written.
pub struct CheckedImport {
    pub definition: JobDefinition,
    /// The checkpoint's id and files.
    checkpoint: Option<(u64, CheckpointFiles)>,
}

/// Checks an exported job before anything is written: its id names a folder as it is, and
/// its checkpoint's files decode and read back as a checkpoint.
pub fn check_import(job: &ExportedJob) -> Result<CheckedImport> {
    let id = &job.definition.id;
    if !crate::job::spec::is_plain_name(id) {
        return Err(VeloError::Usage(format!(
            "job id '{id}' is not a plain name (letters, digits, '.', '_', '-'; not starting \
             with '.')"
        )));
    }
    let Some(checkpoint) = &job.checkpoint else {
        return Ok(CheckedImport {
            definition: job.definition.clone(),
            checkpoint: None,
        });
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut files = Vec::new();
    for (name, text) in &checkpoint.files {
        if !crate::job::spec::is_plain_name(name) {
            return Err(VeloError::Usage(format!(
                "job '{id}': the checkpoint file name '{name}' is not a plain name"
            )));
        }
        let bytes = b64.decode(text).map_err(|e| {
            VeloError::Usage(format!(
                "job '{id}': checkpoint file {name} is not base64: {e}"
            ))
        })?;
        files.push((name.clone(), bytes));
    }
    // The manifest last, as a checkpoint is written.
    files.sort_by_key(|(name, _)| name == "manifest.json");
    crate::job::checkpoint::Checkpoint::decode(|name| {
        files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| VeloError::State(format!("no file {name}")))
    })
    .map_err(|e| {
        VeloError::Usage(format!(
            "job '{id}': the exported checkpoint is damaged: {e}"
        ))
    })?;
    Ok(CheckedImport {
        definition: job.definition.clone(),
        checkpoint: Some((checkpoint.id, files)),
    })
}

/// Writes a checked job's definition and checkpoint into `job_dir` (emptied first).
pub fn write_import(job_dir: &Path, job: &CheckedImport) -> Result<()> {
    let _ = std::fs::remove_dir_all(job_dir);
    write_definition(job_dir, &job.definition)?;
    if let Some((id, files)) = &job.checkpoint {
        LocalStore::open(job_dir.join("checkpoints"))?.write(*id, files)?;
    }
    Ok(())
}
