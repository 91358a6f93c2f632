//! A client of the Confluent Schema Registry REST API (the calls VeloStream uses), and the
//! Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the record (for
//! Protobuf, then a list of message indexes).
//!
//! Schemas fetched by id are cached for the life of the process. Reads of a new id are retried
//! with backoff (3 attempts, 200 ms then 400 ms apart) when the registry does not answer; an
//! id the registry does not know makes that record bad (dead-lettered), an unreachable registry
//! is an error naming its URL. Unknown ids are remembered for a minute
//! ([`UNKNOWN_ID_MEMORY`]): a stream of records with a bad id asks the registry once, not once
//! per record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use crate::{ConnectorError, Result};

/// Magic byte of the Confluent wire format.
pub const MAGIC: u8 = 0;

/// How long an id the registry did not know is answered as unknown without asking again.
pub const UNKNOWN_ID_MEMORY: Duration = Duration::from_secs(60);

/// How a registry is reached beyond its URL: HTTP basic credentials and the CA that signs its
/// TLS certificate (default: the usual public roots).
#[derive(Clone, Default)]
pub struct RegistryAccess {
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_location: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RegistryAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAccess")
            .field("username", &self.username.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_location", &self.ca_location)
            .finish()
    }
}

/// What every registry client of this process starts from (the server's `schema_registry:`
/// configuration); set once, at start.
static DEFAULT_ACCESS: std::sync::OnceLock<RegistryAccess> = std::sync::OnceLock::new();

impl RegistryAccess {
    /// Makes `self` what every registry client of this process starts from (the environment
    /// and credentials in a registry's URL win over it). Only the first call counts.
    pub fn set_process_default(self) {
        let _ = DEFAULT_ACCESS.set(self);
    }

    /// The process default (see [`RegistryAccess::set_process_default`]), then the environment: `SCHEMA_REGISTRY_USERNAME` / `SCHEMA_REGISTRY_PASSWORD` (or files
    /// named by `…_FILE`), or Confluent's `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO` (`user:password`);
    /// `SCHEMA_REGISTRY_SSL_CA_LOCATION` (a PEM file).
    pub fn from_env() -> std::result::Result<Self, String> {
        let var = |name: &str| -> std::result::Result<Option<String>, String> {
            if let Ok(v) = std::env::var(name) {
                return Ok(Some(v));
            }
            match std::env::var(format!("{name}_FILE")) {
                Ok(path) => std::fs::read_to_string(&path)
                    .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                    .map_err(|e| format!("{name}_FILE: cannot read {path}: {e}")),
                Err(_) => Ok(None),
            }
        };
        let mut access = RegistryAccess {
            username: var("SCHEMA_REGISTRY_USERNAME")?,
            password: var("SCHEMA_REGISTRY_PASSWORD")?,
            ca_location: std::env::var("SCHEMA_REGISTRY_SSL_CA_LOCATION")
                .ok()
                .map(Into::into),
        };
        if access.username.is_none() {
            if let Some(info) = var("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")? {
                let (user, password) = info.split_once(':').unwrap_or((&info, ""));
                access.username = Some(user.to_string());
                access.password = Some(password.to_string());
            }
        }
        Ok(access)
    }
}

/// `https://user:password@host:8081/` → (`https://host:8081`, credentials): the URL kept and
/// shown never holds the password.
fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let url = url.trim_end_matches('/');
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let (user, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
            return (
                format!("{scheme}://{}", &rest[at + 1..]),
                Some((user.to_string(), password.to_string())),
            );
        }
    }
    (url.to_string(), None)
}

/// A schema registry at `url`.
pub struct SchemaRegistry {
    url: String,
    agent: ureq::Agent,
    /// `Basic …` when credentials are given.
    authorization: Option<String>,
    /// Why the client cannot work (an unreadable CA file, a bad variable), said by every call.
    setup_error: Option<String>,
    by_id: Mutex<HashMap<u32, String>>,
    /// Ids the registry said it does not know, and when.
    unknown: Mutex<HashMap<u32, std::time::Instant>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.url)
            .finish()
    }
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

#[derive(Deserialize)]
struct Latest {
    id: u32,
    schema: String,
}

/// What a failed lookup means for the record that asked.
#[derive(Debug)]
pub enum Lookup {
    /// The registry answered that it does not know the id.
    Unknown,
    /// The registry did not answer (after retries).
    Unreachable(ConnectorError),
}

impl SchemaRegistry {
    /// A client of the registry at `url` (e.g. `http://127.0.0.1:8081`, or
    /// `https://user:password@registry:8081`), with the credentials and CA the environment gives
    /// (see [`RegistryAccess::from_env`]; credentials in the URL win).
    pub fn new(url: &str, timeout: Duration) -> Self {
        match RegistryAccess::from_env() {
            Ok(access) => Self::with_access(url, timeout, access),
            Err(e) => {
                let mut registry = Self::with_access(url, timeout, RegistryAccess::default());
                registry.setup_error = Some(e);
                registry
            }
        }
    }

    /// A client of the registry at `url` reached with `access`.
    pub fn with_access(url: &str, timeout: Duration, mut access: RegistryAccess) -> Self {
        let (url, credentials) = split_credentials(url);
        if let Some((user, password)) = credentials {
            access.username = Some(user);
            access.password = Some(password);
        }
        let mut setup_error = None;
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::NativeTls);
        if let Some(ca) = &access.ca_location {
            let certificates = std::fs::read(ca)
                .map_err(|e| format!("cannot read the CA file {}: {e}", ca.display()))
                .and_then(|pem| {
                    ureq::tls::parse_pem(&pem)
                        .filter_map(|item| match item {
                            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                            Ok(_) => None,
                            Err(e) => Some(Err(e)),
                        })
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|e| format!("the CA file {}: {e}", ca.display()))
                });
            match certificates {
                Ok(certs) if !certs.is_empty() => {
                    tls =
                        tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)));
                }
                Ok(_) => {
                    setup_error = Some(format!("the CA file {} holds no certificate", ca.display()))
                }
                Err(e) => setup_error = Some(e),
            }
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .tls_config(tls.build())
            .build()
            .into();
        let authorization = access.username.as_ref().map(|user| {
            use base64::Engine;
            let pair = format!("{user}:{}", access.password.as_deref().unwrap_or(""));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Self {
            url,
            agent,
            authorization,
            setup_error,
            by_id: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
        }
    }

    /// A GET with the credentials, if any.
    fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let request = self.agent.get(url);
        match &self.authorization {
            Some(authorization) => request.header("Authorization", authorization),
            None => request,
        }
    }

    fn check_setup(&self, url: &str) -> Result<()> {
        match &self.setup_error {
            Some(e) => Err(self.unreachable(url, e)),
            None => Ok(()),
        }
    }

    fn unreachable(&self, what: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::Registry {
            url: self.url.clone(),
            detail: format!("{what}: {e}"),
        }
    }

    /// The schema text registered under `id` (cached).
    pub fn schema_by_id(&self, id: u32) -> std::result::Result<String, Lookup> {
        if let Some(s) = self
            .by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(s.clone());
        }
        if self
            .unknown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|when| when.elapsed() < UNKNOWN_ID_MEMORY)
        {
            return Err(Lookup::Unknown);
        }
        let url = format!("{}/schemas/ids/{id}", self.url);
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << (attempt - 1)));
            }
            if let Some(e) = &self.setup_error {
                return Err(Lookup::Unreachable(self.unreachable(&url, e)));
            }
            match self.get(&url).call() {
                Ok(mut response) => {
                    let body: SchemaById = response
                        .body_mut()
                        .read_json()
                        .map_err(|e| Lookup::Unreachable(self.unreachable(&url, e)))?;
                    self.by_id
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, body.schema.clone());
                    return Ok(body.schema);
                }
                Err(ureq::Error::StatusCode(404)) => {
                    self.unknown
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, std::time::Instant::now());
                    return Err(Lookup::Unknown);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Lookup::Unreachable(self.unreachable(
            &format!("GET {url} (3 attempts)"),
            last.map(|e| e.to_string()).unwrap_or_default(),
        )))
    }

    /// The latest schema of `subject` (id and text).
    pub fn latest(&self, subject: &str) -> Result<(u32, String)> {
        let url = format!("{}/subjects/{subject}/versions/latest", self.url);
        self.check_setup(&url)?;
        let mut response = self
            .get(&url)
            .call()
            .map_err(|e| self.unreachable(&format!("GET {url}"), e))?;
        let latest: Latest = response
            .body_mut()
            .read_json()
            .map_err(|e| self.unreachable(&url, e))?;
        Ok((latest.id, latest.schema))
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    /// `schema_type` is `AVRO` or `PROTOBUF`.
    pub fn register(&self, subject: &str, schema: &str, schema_type: &str) -> Result<u32> {
        let url = format!("{}/subjects/{subject}/versions", self.url);
        let mut body = serde_json::json!({ "schema": schema });
        if schema_type != "AVRO" {
            body["schemaType"] = serde_json::Value::String(schema_type.to_string());
        }
        self.check_setup(&url)?;
        let mut request = self.agent.post(&url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send_json(&body)
            .map_err(|e| self.unreachable(&format!("POST {url}"), e))?;
        let registered: Registered = response
            .body_mut()
            .read_json()
            .map_err(|e| self.unreachable(&url, e))?;
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registered.id, schema.to_string());
        Ok(registered.id)
    }
}

/// Splits a Confluent-framed record into its schema id and the rest.
pub fn split_frame(bytes: &[u8]) -> std::result::Result<(u32, &[u8]), String> {
    match bytes {
        [MAGIC, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [first, ..] if *first != MAGIC => Err(format!(
            "wrong magic byte {first:#04x} (the Confluent wire format starts with 0x00)"
        )),
        _ => Err(format!(
            "{} bytes is too short for the Confluent wire format",
            bytes.len()
        )),
    }
}

/// The Confluent header for schema `id`.
pub fn frame_header(id: u32) -> [u8; 5] {
    let b = id.to_be_bytes();
    [MAGIC, b[0], b[1], b[2], b[3]]
}

/// Skips the Protobuf message-index list (zig-zag varints: a count, then that many indexes).
pub fn skip_message_indexes(bytes: &[u8]) -> std::result::Result<&[u8], String> {
    fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
        let mut value = 0u64;
        for (i, b) in bytes.iter().enumerate().take(10) {
            value |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Some((value, i + 1));
            }
        }
        None
    }
    let (count, mut used) = varint(bytes).ok_or("truncated message indexes")?;
    let count = (count >> 1) as i64 ^ -((count & 1) as i64);
    for _ in 0..count.max(0) {
        let (_, n) = varint(&bytes[used..]).ok_or("truncated message indexes")?;
        used += n;
    }
    Ok(&bytes[used..])
}

/// The message-index list for the message at `index` among a file's top-level messages.
pub fn message_indexes(index: usize) -> Vec<u8> {
    if index == 0 {
        return vec![0];
    }
    // count 1 and the index, zig-zag encoded (both small and positive here).
    let zz = |v: u64| v << 1;
    let mut out = Vec::new();
    for mut v in [zz(1), zz(index as u64)] {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_bad_frames_say_why() {
        let mut record = frame_header(258).to_vec();
        record.extend_from_slice(b"abc");
        assert_eq!(split_frame(&record), Ok((258, &b"abc"[..])));
        assert!(split_frame(&[1, 0, 0, 0, 1])
            .unwrap_err()
            .contains("wrong magic byte 0x01"));
        assert!(split_frame(&[0, 0]).unwrap_err().contains("too short"));
    }

    #[test]
    fn message_indexes_round_trip() {
        assert_eq!(skip_message_indexes(&[0, 9]).unwrap(), &[9]);
        let mut framed = message_indexes(1);
        assert_eq!(framed, vec![2, 2]);
        framed.push(7);
        assert_eq!(skip_message_indexes(&framed).unwrap(), &[7]);
    }
}

#[cfg(test)]
mod negative_cache_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn an_unknown_id_is_asked_for_once_not_once_per_record() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                counter.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"error_code":40403,"message":"Schema not found"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let registry = SchemaRegistry::new(&url, Duration::from_secs(5));
        for _ in 0..100 {
            assert!(matches!(registry.schema_by_id(7), Err(Lookup::Unknown)));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }
}
