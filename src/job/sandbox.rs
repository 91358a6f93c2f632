//! What SQL arriving over HTTP may touch on the server's machine: files (table files, Avro and
//! Protobuf schema files) only under the configured directories, schema registries only from
//! the configured list. SQL from the command line is the local user's own and is not
//! sandboxed.
//!
//! The check runs on the declarations before anything reads a file, and says the same for a
//! file that does not exist as for one outside the allowed directories, so a caller learns
//! nothing about the server's files. Errors from reading an allowed file are logged on the
//! server and reported without the file's content.

use std::path::{Path, PathBuf};

use crate::error::{Result, VeloError};
use crate::sql::StreamDecl;

/// The options of a declaration that name a file.
const FILE_OPTIONS: &[&str] = &[
    "path",
    "file",
    "avro.schema.file",
    "avro_schema_file",
    "avro.schema",
    "protobuf.file",
    "proto.file",
    "protobuf.schema.file",
];

/// The options of a declaration that name a schema registry.
const REGISTRY_OPTIONS: &[&str] = &["schema.registry", "schema.registry.url"];

/// What HTTP callers may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// Directories whose regular files may be read (none: no file at all).
    pub allowed_paths: Vec<PathBuf>,
    /// Schema registry URLs that may be used (none: no registry).
    pub allowed_registries: Vec<String>,
}

impl Sandbox {
    /// Refuses a declaration naming a file or a registry the sandbox does not allow.
    pub fn check(&self, decl: &StreamDecl) -> Result<()> {
        for (key, value) in &decl.options {
            if FILE_OPTIONS.contains(&key.as_str()) {
                self.check_file(Path::new(value)).map_err(|why| {
                    VeloError::sql(
                        format!("'{}': option '{key}': {why}", decl.name),
                        Some(decl.location),
                    )
                })?;
            }
            if REGISTRY_OPTIONS.contains(&key.as_str()) {
                self.check_registry(value).map_err(|why| {
                    VeloError::sql(
                        format!("'{}': option '{key}': {why}", decl.name),
                        Some(decl.location),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Refuses a file outside the allowed directories, or not a regular file.
    pub fn check_file(&self, path: &Path) -> std::result::Result<(), String> {
        let refused = || {
            format!(
                "the file '{}' is not among those this server lets HTTP callers read \
                 (server.allowed_paths)",
                path.display()
            )
        };
        let real = std::fs::canonicalize(path).map_err(|_| refused())?;
        let inside = self.allowed_paths.iter().any(|dir| {
            std::fs::canonicalize(dir)
                .map(|dir| real.starts_with(dir))
                .unwrap_or(false)
        });
        let regular = std::fs::metadata(&real)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if inside && regular {
            Ok(())
        } else {
            Err(refused())
        }
    }

    /// Refuses a registry URL not in the allowed list.
    pub fn check_registry(&self, url: &str) -> std::result::Result<(), String> {
        let url = url.trim_end_matches('/');
        if self
            .allowed_registries
            .iter()
            .any(|allowed| allowed.trim_end_matches('/') == url)
        {
            Ok(())
        } else {
            Err(format!(
                "the schema registry '{url}' is not one this server lets HTTP callers use \
                 (server.allowed_registries)"
            ))
        }
    }
}

/// An error from reading an allowed file, for an HTTP caller: logged here in full, told
/// without the file's content.
pub fn conceal(what: &str, e: VeloError) -> VeloError {
    tracing::warn!("{what}: {e}");
    match e {
        // Mistakes in the SQL itself carry no file content.
        VeloError::Sql { .. } | VeloError::UnknownTable { .. } => e,
        _ => VeloError::Usage(format!(
            "{what} failed; the server's log says why (file contents are not echoed to HTTP \
             callers)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_allowed_directories_pass() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("t.csv");
        std::fs::write(&inside, "a\n1\n").unwrap();
        let sandbox = Sandbox {
            allowed_paths: vec![dir.path().to_path_buf()],
            allowed_registries: vec!["http://registry:8081".into()],
        };
        assert!(sandbox.check_file(&inside).is_ok());
        // Outside, missing, climbing out, or not a regular file: one answer.
        for path in [
            PathBuf::from("/etc/passwd"),
            dir.path().join("missing.csv"),
            dir.path().join("../../etc/passwd"),
            PathBuf::from("/dev/zero"),
            dir.path().to_path_buf(),
        ] {
            let why = sandbox.check_file(&path).unwrap_err();
            assert!(why.contains("server.allowed_paths"), "{why}");
        }
        assert!(
            Sandbox::default().check_file(&inside).is_err(),
            "none by default"
        );
        assert!(sandbox.check_registry("http://registry:8081/").is_ok());
        assert!(sandbox.check_registry("http://169.254.169.254").is_err());
    }
}
