//! The `kafka:` section of the configuration and the `KAFKA_*` environment variables, turned into
//! librdkafka properties: brokers and consumer groups, client tuning (the deployment guide's flat
//! keys such as `linger_ms`, and the same keys in `consumer:` / `producer:` sections), TLS
//! (`security_protocol`, `ssl:`), SASL (`sasl:`) and a raw `properties:` map of librdkafka names.
//!
//! Secrets (`ssl.key_password`, `sasl.username`, `sasl.password`) may be given in the file, by
//! the name of an environment variable (`*_env`) or by a file holding them (`*_file`, as
//! Kubernetes and Docker secrets are mounted). Their values never appear in logs, answers or
//! errors: `velo_connectors::kafka::redacted_properties` is how properties are shown.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VeloError};

/// `kafka:` — the broker, the consumer groups of jobs, security and client tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers (`KAFKA_BROKERS`).
    pub brokers: String,
    /// Seconds allowed for broker requests.
    pub timeout_seconds: u64,
    /// Prefix of each job's consumer group (`<prefix><job name>`).
    pub group_prefix: String,
    /// `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (`KAFKA_SECURITY_PROTOCOL`).
    pub security_protocol: Option<String>,
    pub ssl: SslConfig,
    pub sasl: SaslConfig,
    /// The guide's `ssl_check_hostname` / `ssl_verify_hostname`: false turns off the check that
    /// the broker's certificate names the host connected to.
    pub ssl_check_hostname: Option<bool>,
    pub ssl_verify_hostname: Option<bool>,
    /// Tuning for every client (the guide's flat keys: `acks`, `linger_ms`, `fetch_min_bytes`, …).
    /// Written flat under `kafka:` in files; kept here by the loader.
    pub common: ClientTuning,
    /// Tuning for consumers only (wins over the flat keys).
    pub consumer: ClientTuning,
    /// Tuning for producers only (wins over the flat keys).
    pub producer: ClientTuning,
    /// Any librdkafka property by its own name (wins over everything above).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            timeout_seconds: 10,
            group_prefix: "velo-".into(),
            security_protocol: None,
            ssl: SslConfig::default(),
            sasl: SaslConfig::default(),
            ssl_check_hostname: None,
            ssl_verify_hostname: None,
            common: ClientTuning::default(),
            consumer: ClientTuning::default(),
            producer: ClientTuning::default(),
            properties: BTreeMap::new(),
        }
    }
}

/// `kafka.ssl:` — TLS to the brokers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SslConfig {
    /// PEM file of the CA certificates that sign the brokers' certificates.
    pub ca_location: Option<PathBuf>,
    /// PEM file of this client's certificate (mutual TLS).
    pub certificate_location: Option<PathBuf>,
    /// PEM file of this client's private key.
    pub key_location: Option<PathBuf>,
    /// The key's password, or the variable (`KAFKA_SSL_KEY_PASSWORD`) or file holding it.
    pub key_password: Option<String>,
    pub key_password_env: Option<String>,
    pub key_password_file: Option<PathBuf>,
}

/// `kafka.sasl:` — SASL authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` (`GSSAPI` needs a librdkafka built with
    /// Cyrus SASL, which this build is not; `OAUTHBEARER` via `properties`).
    #[serde(alias = "mechanisms")]
    pub mechanism: Option<String>,
    pub username: Option<String>,
    pub username_env: Option<String>,
    pub username_file: Option<PathBuf>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// `schema_registry:` — how every schema registry the server's jobs name is reached (the
/// registries themselves are named per stream, `'schema.registry.url'`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistryConfig {
    /// `none` (default) or `basic` (HTTP basic credentials below).
    pub auth_type: Option<String>,
    pub username: Option<String>,
    pub username_env: Option<String>,
    pub username_file: Option<PathBuf>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ssl: RegistrySslConfig,
}

/// `schema_registry.ssl:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySslConfig {
    /// PEM file of the CA that signs the registry's certificate.
    pub ca_location: Option<PathBuf>,
}

impl SchemaRegistryConfig {
    /// The access these keys describe, secrets read now.
    pub fn access(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<velo_connectors::registry::RegistryAccess> {
        let username = secret(
            "schema_registry.username",
            &self.username,
            &self.username_env,
            &self.username_file,
            lookup,
        )?;
        let password = secret(
            "schema_registry.password",
            &self.password,
            &self.password_env,
            &self.password_file,
            lookup,
        )?;
        match self.auth_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("none") if username.is_none() => {}
            None | Some("basic") if username.is_some() => {}
            Some("basic") => {
                return Err(VeloError::Usage(
                    "schema_registry.auth_type basic needs a username (username, username_env or username_file)".into(),
                ))
            }
            Some("none") => {
                return Err(VeloError::Usage(
                    "schema_registry.auth_type is none but a username is given".into(),
                ))
            }
            Some(other) => {
                return Err(VeloError::Usage(format!(
                    "schema_registry.auth_type: '{other}' is not none or basic"
                )))
            }
            None => unreachable!("the arms above cover a missing auth_type"),
        }
        Ok(velo_connectors::registry::RegistryAccess {
            username,
            password,
            ca_location: self.ssl.ca_location.clone(),
        })
    }
}

/// Client tuning in the guide's names (Java client names with `_`), each mapped to librdkafka's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTuning {
    /// Accepted, no effect: the producer always waits for all in-sync replicas (`acks=all`).
    pub acks: Option<Scalar>,
    /// Accepted, no effect: the idempotent producer retries until `message.timeout.ms`.
    pub retries: Option<u64>,
    /// Most bytes in one produce batch → `batch.size`.
    pub batch_size: Option<u64>,
    /// → `linger.ms`.
    pub linger_ms: Option<u64>,
    /// Producer queue size in bytes → `queue.buffering.max.kbytes` (rounded up to KiB).
    pub buffer_memory: Option<u64>,
    /// `none`, `gzip`, `snappy`, `lz4` → `compression.type`.
    pub compression_type: Option<String>,
    /// Accepted, no effect: the producer is always idempotent (no duplicates on retries).
    pub enable_idempotence: Option<bool>,
    /// → `fetch.min.bytes`.
    pub fetch_min_bytes: Option<u64>,
    /// → `fetch.wait.max.ms`.
    pub fetch_max_wait_ms: Option<u64>,
    /// → `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: Option<u64>,
    /// Most records per micro-batch when `performance.batch_size` is not given (a Java
    /// consumer's records per poll; librdkafka has no such limit).
    pub max_poll_records: Option<u64>,
    /// → `session.timeout.ms`.
    pub session_timeout_ms: Option<u64>,
    /// → `heartbeat.interval.ms`.
    pub heartbeat_interval_ms: Option<u64>,
    /// `read_committed` / `read_uncommitted` → `isolation.level`.
    pub isolation_level: Option<String>,
    /// → `socket.receive.buffer.bytes`.
    pub receive_buffer_bytes: Option<u64>,
    /// → `socket.send.buffer.bytes`.
    pub send_buffer_bytes: Option<u64>,
    /// Accepted, no effect: offsets are committed with checkpoints, after the output is
    /// acknowledged, never automatically.
    pub enable_auto_commit: Option<bool>,
    /// Accepted, no effect (see `enable_auto_commit`).
    pub auto_commit_interval_ms: Option<u64>,
}

/// A YAML scalar written as text, number or boolean (`acks: all`, `acks: "1"`, `acks: 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Bool(bool),
    Text(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Text(t) => f.write_str(t),
        }
    }
}

/// Which clients a property is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
}

impl ClientTuning {
    /// This tuning's librdkafka properties, in order.
    fn properties(&self, out: &mut Vec<(String, String)>) {
        let mut set = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push((key.to_string(), value));
            }
        };
        let text = |v: &Option<u64>| v.map(|v| v.to_string());
        set("batch.size", text(&self.batch_size));
        set("linger.ms", text(&self.linger_ms));
        set(
            "queue.buffering.max.kbytes",
            self.buffer_memory
                .map(|b| b.div_ceil(1024).max(1).to_string()),
        );
        set("compression.type", self.compression_type.clone());
        set("fetch.min.bytes", text(&self.fetch_min_bytes));
        set("fetch.wait.max.ms", text(&self.fetch_max_wait_ms));
        set(
            "max.partition.fetch.bytes",
            text(&self.max_partition_fetch_bytes),
        );
        set("session.timeout.ms", text(&self.session_timeout_ms));
        set("heartbeat.interval.ms", text(&self.heartbeat_interval_ms));
        set("isolation.level", self.isolation_level.clone());
        set(
            "socket.receive.buffer.bytes",
            text(&self.receive_buffer_bytes),
        );
        set("socket.send.buffer.bytes", text(&self.send_buffer_bytes));
    }
}

/// Properties only consumers understand (librdkafka warns when a producer is given one).
const CONSUMER_ONLY: &[&str] = &[
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "isolation.level",
];

/// Properties only producers understand.
const PRODUCER_ONLY: &[&str] = &[
    "batch.size",
    "linger.ms",
    "queue.buffering.max.kbytes",
    "compression.type",
];

/// A secret given directly, by environment variable or by file (the first of these given).
fn secret(
    what: &str,
    value: &Option<String>,
    env: &Option<String>,
    file: &Option<PathBuf>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>> {
    if let Some(v) = value {
        return Ok(Some(v.clone()));
    }
    if let Some(name) = env {
        return lookup(name).map(Some).ok_or_else(|| {
            VeloError::Usage(format!(
                "{what}_env names the environment variable {name}, which is not set"
            ))
        });
    }
    if let Some(path) = file {
        return read_secret_file(path)
            .map(Some)
            .map_err(|e| VeloError::Usage(format!("{what}_file: {e}")));
    }
    Ok(None)
}

/// A secret's file, without its trailing newline; errors name the file, never its content.
pub fn read_secret_file(path: &std::path::Path) -> std::result::Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl KafkaConfig {
    /// The librdkafka properties of clients in `role`, in increasing precedence: security,
    /// flat tuning, the role's section, then `properties:`. Secrets given by variable or file are
    /// read now (`lookup` reads the environment).
    pub fn client_properties(
        &self,
        role: Role,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        if let Some(p) = &self.security_protocol {
            out.push(("security.protocol".into(), p.to_ascii_lowercase()));
        }
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        for (key, value) in [
            ("ssl.ca.location", path(&self.ssl.ca_location)),
            (
                "ssl.certificate.location",
                path(&self.ssl.certificate_location),
            ),
            ("ssl.key.location", path(&self.ssl.key_location)),
            (
                "ssl.key.password",
                secret(
                    "kafka.ssl.key_password",
                    &self.ssl.key_password,
                    &self.ssl.key_password_env,
                    &self.ssl.key_password_file,
                    lookup,
                )?,
            ),
            ("sasl.mechanisms", self.sasl.mechanism.clone()),
            (
                "sasl.username",
                secret(
                    "kafka.sasl.username",
                    &self.sasl.username,
                    &self.sasl.username_env,
                    &self.sasl.username_file,
                    lookup,
                )?,
            ),
            (
                "sasl.password",
                secret(
                    "kafka.sasl.password",
                    &self.sasl.password,
                    &self.sasl.password_env,
                    &self.sasl.password_file,
                    lookup,
                )?,
            ),
        ] {
            if let Some(value) = value {
                out.push((key.to_string(), value));
            }
        }
        if let Some(check) = self.ssl_check_hostname.or(self.ssl_verify_hostname) {
            let algorithm = if check { "https" } else { "none" };
            out.push((
                "ssl.endpoint.identification.algorithm".into(),
                algorithm.into(),
            ));
        }
        let mut tuning = Vec::new();
        self.common.properties(&mut tuning);
        match role {
            Role::Consumer => self.consumer.properties(&mut tuning),
            Role::Producer => self.producer.properties(&mut tuning),
        }
        let foreign = match role {
            Role::Consumer => PRODUCER_ONLY,
            Role::Producer => CONSUMER_ONLY,
        };
        out.extend(
            tuning
                .into_iter()
                .filter(|(k, _)| !foreign.contains(&k.as_str())),
        );
        out.extend(self.properties.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(out)
    }

    /// Most records per micro-batch the guide's `max_poll_records` asks for (consumer section
    /// first).
    pub fn max_poll_records(&self) -> Option<usize> {
        self.consumer
            .max_poll_records
            .or(self.common.max_poll_records)
            .map(|n| n.max(1) as usize)
    }

    /// Keys given that have no effect here (for the start-up warning).
    pub fn keys_without_effect(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for (section, tuning) in [
            ("kafka", &self.common),
            ("kafka.consumer", &self.consumer),
            ("kafka.producer", &self.producer),
        ] {
            for (key, given) in [
                ("acks", tuning.acks.is_some()),
                ("retries", tuning.retries.is_some()),
                ("enable_idempotence", tuning.enable_idempotence.is_some()),
                ("enable_auto_commit", tuning.enable_auto_commit.is_some()),
                (
                    "auto_commit_interval_ms",
                    tuning.auto_commit_interval_ms.is_some(),
                ),
            ] {
                if given {
                    keys.push(format!("{section}.{key}"));
                }
            }
        }
        keys
    }

    /// Applies the `KAFKA_*` environment variables `lookup` finds.
    pub fn apply_env(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        fn number(name: &str, value: &str) -> Result<u64> {
            value.trim().parse().map_err(|e| {
                VeloError::Usage(format!("environment variable {name}='{value}': {e}"))
            })
        }
        if let Some(v) = lookup("KAFKA_BROKERS") {
            self.brokers = v;
        }
        if let Some(v) = lookup("KAFKA_SECURITY_PROTOCOL") {
            self.security_protocol = Some(v);
        }
        if let Some(v) = lookup("KAFKA_SASL_MECHANISM").or_else(|| lookup("KAFKA_SASL_MECHANISMS"))
        {
            self.sasl.mechanism = Some(v);
        }
        // A secret by value or by file: `KAFKA_USERNAME` or `KAFKA_USERNAME_FILE`.
        let by_value_or_file = |names: &[&str]| -> Result<Option<String>> {
            for name in names {
                if let Some(v) = lookup(name) {
                    return Ok(Some(v));
                }
                if let Some(path) = lookup(&format!("{name}_FILE")) {
                    return read_secret_file(std::path::Path::new(&path))
                        .map(Some)
                        .map_err(|e| VeloError::Usage(format!("{name}_FILE: {e}")));
                }
            }
            Ok(None)
        };
        if let Some(v) = by_value_or_file(&["KAFKA_SASL_USERNAME", "KAFKA_USERNAME"])? {
            self.sasl.username = Some(v);
        }
        if let Some(v) = by_value_or_file(&["KAFKA_SASL_PASSWORD", "KAFKA_PASSWORD"])? {
            self.sasl.password = Some(v);
        }
        if let Some(v) = by_value_or_file(&["KAFKA_SSL_KEY_PASSWORD"])? {
            self.ssl.key_password = Some(v);
        }
        for (name, field) in [
            ("KAFKA_SSL_CA_LOCATION", &mut self.ssl.ca_location),
            (
                "KAFKA_SSL_CERTIFICATE_LOCATION",
                &mut self.ssl.certificate_location,
            ),
            ("KAFKA_SSL_KEY_LOCATION", &mut self.ssl.key_location),
        ] {
            if let Some(v) = lookup(name) {
                *field = Some(PathBuf::from(v));
            }
        }
        let tuning = &mut self.common;
        for (name, field) in [
            ("KAFKA_BATCH_SIZE", &mut tuning.batch_size),
            ("KAFKA_LINGER_MS", &mut tuning.linger_ms),
            ("KAFKA_FETCH_MIN_BYTES", &mut tuning.fetch_min_bytes),
            ("KAFKA_FETCH_MAX_WAIT_MS", &mut tuning.fetch_max_wait_ms),
            ("KAFKA_MAX_POLL_RECORDS", &mut tuning.max_poll_records),
        ] {
            if let Some(v) = lookup(name) {
                *field = Some(number(name, &v)?);
            }
        }
        if let Some(v) = lookup("KAFKA_ACKS") {
            tuning.acks = Some(Scalar::Text(v));
        }
        if let Some(v) = lookup("KAFKA_COMPRESSION_TYPE") {
            tuning.compression_type = Some(v);
        }
        Ok(())
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(VeloError::Usage("kafka.brokers is empty".into()));
        }
        if let Some(p) = &self.security_protocol {
            let known = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
            if !known.contains(&p.to_ascii_lowercase().as_str()) {
                return Err(VeloError::Usage(format!(
                    "kafka.security_protocol: '{p}' is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// The `kafka:` section of a configuration file holding `yaml` under it.
    fn kafka(yaml: &str) -> KafkaConfig {
        let indented: String = yaml.lines().map(|l| format!("  {l}\n")).collect();
        super::super::config::Config::from_yaml(&format!("kafka:\n{indented}"))
            .unwrap()
            .kafka
    }

    #[test]
    fn the_guides_ssl_and_sasl_keys_become_librdkafka_properties() {
        let config = kafka(
            "brokers: kafka:9093\nsecurity_protocol: SASL_SSL\nssl:\n  ca_location: /certs/ca.pem\n  \
             certificate_location: /certs/client.pem\n  key_location: /certs/client.key\n  \
             key_password_env: KAFKA_SSL_KEY_PASSWORD\nsasl:\n  mechanism: SCRAM-SHA-512\n  \
             username_env: KAFKA_USERNAME\n  password_env: KAFKA_PASSWORD\nssl_check_hostname: false\n",
        );
        let env = |name: &str| match name {
            "KAFKA_SSL_KEY_PASSWORD" => Some("k3y".to_string()),
            "KAFKA_USERNAME" => Some("alice".to_string()),
            "KAFKA_PASSWORD" => Some("s3cret".to_string()),
            _ => None,
        };
        let properties = config.client_properties(Role::Consumer, &env).unwrap();
        let expected: Vec<(String, String)> = [
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", "/certs/ca.pem"),
            ("ssl.certificate.location", "/certs/client.pem"),
            ("ssl.key.location", "/certs/client.key"),
            ("ssl.key.password", "k3y"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "s3cret"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(properties, expected);
        let shown = velo_connectors::kafka::redacted_properties(&properties).join(" ");
        for secret in ["k3y", "alice", "s3cret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sasl.password=***"), "{shown}");
    }

    #[test]
    fn an_unset_secret_variable_is_named_and_a_secret_file_is_read_without_its_newline() {
        let config = kafka("sasl:\n  password_env: NOT_SET_ANYWHERE\n");
        let e = config
            .client_properties(Role::Producer, &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("NOT_SET_ANYWHERE"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        let mut config = KafkaConfig::default();
        let path = file.display().to_string();
        config
            .apply_env(&|name: &str| (name == "KAFKA_PASSWORD_FILE").then(|| path.clone()))
            .unwrap();
        assert_eq!(config.sasl.password.as_deref(), Some("from-file"));
    }

    #[test]
    fn tuning_keys_map_to_librdkafka_names_and_each_role_gets_its_own() {
        let config = kafka(
            "acks: all\nlinger_ms: 5\nbatch_size: 65536\nbuffer_memory: 33554432\n\
             compression_type: lz4\nfetch_min_bytes: 1\nfetch_max_wait_ms: 500\n\
             consumer:\n  fetch_min_bytes: 50000\n  isolation_level: read_committed\n\
             producer:\n  linger_ms: 0\nproperties:\n  client.rack: r1\n",
        );
        let consumer = config.client_properties(Role::Consumer, &no_env).unwrap();
        let producer = config.client_properties(Role::Producer, &no_env).unwrap();
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // Later entries win in librdkafka: the section's value follows the flat one.
        assert_eq!(
            consumer,
            pairs(&[
                ("fetch.min.bytes", "1"),
                ("fetch.wait.max.ms", "500"),
                ("fetch.min.bytes", "50000"),
                ("isolation.level", "read_committed"),
                ("client.rack", "r1"),
            ])
        );
        assert_eq!(
            producer,
            pairs(&[
                ("batch.size", "65536"),
                ("linger.ms", "5"),
                ("queue.buffering.max.kbytes", "32768"),
                ("compression.type", "lz4"),
                ("linger.ms", "0"),
                ("client.rack", "r1"),
            ])
        );
    }

    #[test]
    fn schema_registry_credentials_and_ca_come_from_the_config_and_auth_type_is_checked() {
        let config = super::super::config::Config::from_yaml(
            "schema_registry:\n  url: http://ignored:8081\n  auth_type: basic\n  \
             username: svc\n  password_env: REGISTRY_PASSWORD\n  ssl:\n    ca_location: /certs/ca.pem\n",
        )
        .unwrap();
        assert_eq!(
            config.without_effect,
            ["schema_registry.url (registries are named per stream ('schema.registry.url', --schema-registry))"]
        );
        let env = |n: &str| (n == "REGISTRY_PASSWORD").then(|| "pw".to_string());
        let access = config.schema_registry.access(&env).unwrap();
        assert_eq!(access.username.as_deref(), Some("svc"));
        assert_eq!(access.password.as_deref(), Some("pw"));
        assert_eq!(access.ca_location, Some(PathBuf::from("/certs/ca.pem")));
        assert!(!format!("{access:?}").contains("pw\""), "{access:?}");
        let none = super::super::config::Config::from_yaml("schema_registry:\n  auth_type: none\n")
            .unwrap();
        assert!(none
            .schema_registry
            .access(&no_env)
            .unwrap()
            .username
            .is_none());
        let e = super::super::config::Config::from_yaml("schema_registry:\n  auth_type: basic\n")
            .unwrap()
            .schema_registry
            .access(&no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a username"), "{e}");
    }

    #[test]
    fn the_environment_sets_security_and_tuning() {
        let mut config = KafkaConfig::default();
        config
            .apply_env(&|name: &str| {
                match name {
                    "KAFKA_SECURITY_PROTOCOL" => Some("SSL"),
                    "KAFKA_LINGER_MS" => Some("7"),
                    "KAFKA_MAX_POLL_RECORDS" => Some("500"),
                    "KAFKA_SASL_USERNAME" => Some("bob"),
                    _ => None,
                }
                .map(str::to_string)
            })
            .unwrap();
        assert_eq!(config.security_protocol.as_deref(), Some("SSL"));
        assert_eq!(config.common.linger_ms, Some(7));
        assert_eq!(config.max_poll_records(), Some(500));
        assert_eq!(config.sasl.username.as_deref(), Some("bob"));
        // `acks` has no effect here and says so.
        assert!(config.keys_without_effect().is_empty());
        config.common.acks = Some(Scalar::Text("1".into()));
        assert_eq!(config.keys_without_effect(), ["kafka.acks"]);
        let e = config
            .apply_env(&|name: &str| (name == "KAFKA_LINGER_MS").then(|| "soon".to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KAFKA_LINGER_MS='soon'"), "{e}");
    }
}
