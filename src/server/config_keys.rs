//! The configuration file's keys as users write them. Before the file is read into
//! [`Config`](super::config::Config):
//! - the deployment guide's spellings are moved to where this engine reads them
//!   (`server.bind_host` → `server.bind`, `sql.max_memory_mb` → `sql.memory_limit_mb`, `jobs.*`
//!   → `sql.*`, the flat Kafka tuning keys → `kafka.common`, …);
//! - keys this engine accepts but does not use are taken out and listed, for one warning at start;
//! - any other key is an error naming it and the nearest known key.

use serde_yaml_ng::{Mapping, Value};

/// A key moved elsewhere, with its value converted.
struct Rename {
    from: &'static str,
    to: &'static str,
    convert: fn(&Value) -> Option<Value>,
}

fn same(v: &Value) -> Option<Value> {
    Some(v.clone())
}

fn mib_to_bytes(v: &Value) -> Option<Value> {
    v.as_u64()
        .and_then(|n| n.checked_mul(1024 * 1024))
        .map(Value::from)
}

fn ms_to_seconds(v: &Value) -> Option<Value> {
    v.as_u64().map(|ms| Value::from(ms.div_ceil(1000).max(1)))
}

const RENAMES: &[Rename] = &[
    Rename {
        from: "server.bind_host",
        to: "server.bind",
        convert: same,
    },
    Rename {
        from: "server.max_request_size_mb",
        to: "server.max_body_bytes",
        convert: mib_to_bytes,
    },
    Rename {
        from: "sql.max_memory_mb",
        to: "sql.memory_limit_mb",
        convert: same,
    },
    Rename {
        from: "sql.query_timeout_ms",
        to: "server.query_timeout_seconds",
        convert: ms_to_seconds,
    },
    Rename {
        from: "sql.query_timeout_seconds",
        to: "server.query_timeout_seconds",
        convert: same,
    },
    Rename {
        from: "sql.batch_size",
        to: "performance.batch_size",
        convert: same,
    },
    Rename {
        from: "jobs.restart_policy",
        to: "sql.restart_policy",
        convert: same,
    },
    Rename {
        from: "jobs.max_restart_attempts",
        to: "sql.max_restarts",
        convert: same,
    },
    Rename {
        from: "jobs.restart_delay_ms",
        to: "sql.restart_delay_ms",
        convert: same,
    },
];

/// Keys (or whole sections, ending in `.`) accepted without effect, and why.
pub const WITHOUT_EFFECT: &[(&str, &str)] = &[
    (
        "performance.buffer_size",
        "micro-batches are sized by performance.batch_size",
    ),
    (
        "performance.enable_compression",
        "compression is chosen per output",
    ),
    (
        "server.max_connections",
        "not limited; server.max_concurrent_queries limits queries",
    ),
    ("server.rate_limit_requests_per_minute", "no rate limiting"),
    (
        "server.request_timeout_ms",
        "server.query_timeout_seconds limits queries",
    ),
    ("server.security_headers.", "not added"),
    ("sql.aggregation_buffer_size", "state grows as needed"),
    (
        "sql.aggregation_memory_limit_mb",
        "sql.memory_limit_mb limits all state",
    ),
    ("sql.broadcast_join_threshold", "join strategy is fixed"),
    ("sql.cross_system_mode", "not applicable"),
    ("sql.enable_financial_types", "decimals are always exact"),
    ("sql.enable_parallel_execution", "one thread per job"),
    ("sql.enable_predicate_pushdown", "always on"),
    ("sql.enable_projection_pushdown", "always on"),
    ("sql.enable_spill_to_disk", "state stays in memory"),
    ("sql.enable_window_spilling", "state stays in memory"),
    ("sql.gc_threshold_mb", "no garbage collector"),
    ("sql.hash_join_threshold", "join strategy is fixed"),
    (
        "sql.join_memory_limit_mb",
        "sql.memory_limit_mb limits all state",
    ),
    ("sql.join_strategy", "join strategy is fixed"),
    ("sql.max_parallel_tasks", "one thread per job"),
    (
        "sql.memory_monitoring_interval_ms",
        "state is measured after every batch",
    ),
    (
        "sql.memory_pool_size",
        "sql.memory_limit_mb limits all state",
    ),
    ("sql.pre_aggregation_enabled", "always on"),
    ("sql.precision_mode", "decimals are always exact"),
    (
        "sql.query_memory_limit_mb",
        "sql.memory_limit_mb limits all state",
    ),
    ("sql.query_optimizer", "DataFusion's optimizer always runs"),
    (
        "sql.scale_validation",
        "decimals are always checked against their scale",
    ),
    ("sql.spill_directory", "state stays in memory"),
    ("sql.spill_threshold_ratio", "state stays in memory"),
    ("sql.window_buffer_size", "state grows as needed"),
    ("jobs.failure_threshold", "sql.max_restarts limits restarts"),
    (
        "jobs.health_check_interval_ms",
        "job health is tracked continuously",
    ),
    ("serialization.", "formats are declared per stream"),
    (
        "schema_registry.url",
        "registries are named per stream ('schema.registry.url', --schema-registry)",
    ),
    (
        "storage.state_backend",
        "state is in memory, checkpointed to files",
    ),
    ("storage.rocksdb.", "no RocksDB"),
    ("logging.", "logging is set with RUST_LOG"),
    ("monitoring.", "metrics are always at /metrics"),
    ("auth.", "use server.auth_token (bearer token)"),
];

/// Moves, takes out and checks the keys of a parsed configuration file. Returns the keys that
/// have no effect, each with why; an unknown key is an error naming it.
pub fn normalize(value: &mut Value, known: &Value) -> Result<Vec<String>, String> {
    let Value::Mapping(root) = value else {
        return match value {
            Value::Null => Ok(Vec::new()),
            _ => Err("the configuration is not a mapping of sections".into()),
        };
    };
    let mut without_effect = Vec::new();
    // Authentication the server cannot give must not be silently dropped.
    if let Some(auth) = get(root, "auth") {
        let enabled = auth.get("enable").or_else(|| auth.get("enabled"));
        if enabled.and_then(Value::as_bool) == Some(true) {
            return Err(
                "auth.enable: this server's authentication is a bearer token (server.auth_token or \
                 VELO_API_TOKEN); set that instead, so the server does not start open"
                    .into(),
            );
        }
    }
    // The flat Kafka tuning keys go to `kafka.common`.
    let tuning = known
        .get("kafka")
        .and_then(|k| k.get("common"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if let Some(Value::Mapping(kafka)) = root.get_mut("kafka") {
        for key in &tuning {
            if let Some(v) = kafka.remove(key.as_str()) {
                let common = kafka
                    .entry(Value::from("common"))
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                if let Value::Mapping(common) = common {
                    common.entry(Value::from(key.as_str())).or_insert(v);
                }
            }
        }
    }
    for rename in RENAMES {
        let Some(v) = take(root, rename.from) else {
            continue;
        };
        let converted = (rename.convert)(&v)
            .ok_or_else(|| format!("{}: '{}' is not a whole number", rename.from, show(&v)))?;
        if get(root, rename.to).is_some() {
            without_effect.push(format!("{} ({} is given)", rename.from, rename.to));
        } else {
            put(root, rename.to, converted);
        }
    }
    prune(root);
    for path in leaves(&Value::Mapping(root.clone())) {
        if let Some((key, why)) = WITHOUT_EFFECT
            .iter()
            .find(|(key, _)| path == *key || (key.ends_with('.') && path.starts_with(key)))
        {
            without_effect.push(format!("{path} ({why})"));
            take(root, key.trim_end_matches('.'));
            continue;
        }
        if !is_known(known, &path) {
            return Err(unknown_key(known, &path));
        }
    }
    prune(root);
    Ok(without_effect)
}

/// Removes the sections left empty by moving keys out.
fn prune(map: &mut Mapping) {
    for (_, v) in map.iter_mut() {
        if let Value::Mapping(m) = v {
            prune(m);
        }
    }
    map.retain(|_, v| !matches!(v, Value::Mapping(m) if m.is_empty()));
}

/// The error for `path`, with the nearest key this engine or the guide knows.
fn unknown_key(known: &Value, path: &str) -> String {
    // `kafka.common` is where the flat keys are kept: suggest them as users write them.
    let mut candidates: Vec<String> = leaves(known)
        .into_iter()
        .map(|c| c.replace("kafka.common.", "kafka."))
        .collect();
    candidates.extend(RENAMES.iter().map(|r| r.from.to_string()));
    candidates.extend(
        WITHOUT_EFFECT
            .iter()
            .filter(|(k, _)| !k.ends_with('.'))
            .map(|(k, _)| k.to_string()),
    );
    let nearest = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(c, path), c))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c);
    match nearest {
        Some(c) => format!("unknown key `{path}`; did you mean `{c}`?"),
        None => format!("unknown key `{path}`"),
    }
}

/// True when `path` is a key of the defaults, or lies inside a map of free keys (a mapping
/// empty in the defaults, e.g. `kafka.properties`) or a list.
fn is_known(known: &Value, path: &str) -> bool {
    let mut at = known;
    for part in path.split('.') {
        match at {
            Value::Mapping(m) if m.is_empty() => return true,
            Value::Mapping(m) => match m.get(part) {
                Some(next) => at = next,
                None => return false,
            },
            // A scalar or list default: what the user wrote under it is serde's to judge.
            _ => return true,
        }
    }
    true
}

/// The dotted paths of the leaves of `value` (a mapping's empty mappings count as leaves).
fn leaves(value: &Value) -> Vec<String> {
    fn walk(value: &Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            Value::Mapping(m) if !m.is_empty() => {
                for (k, v) in m {
                    let key = match k {
                        Value::String(s) => s.clone(),
                        other => show(other),
                    };
                    let path = match prefix {
                        "" => key,
                        p => format!("{p}.{key}"),
                    };
                    walk(v, &path, out);
                }
            }
            _ if !prefix.is_empty() => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn get<'a>(root: &'a Mapping, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut at = root.get(parts.next()?)?;
    for part in parts {
        at = at.get(part)?;
    }
    Some(at)
}

/// Removes the value at `path` (a key may itself hold dots only at the last level).
fn take(root: &mut Mapping, path: &str) -> Option<Value> {
    match path.split_once('.') {
        None => root.remove(path),
        Some((head, rest)) => match root.get_mut(head) {
            Some(Value::Mapping(m)) => {
                // Keys holding dots (`ingress.annotations.cert-manager.io/…`): try whole first.
                if let Some(v) = m.remove(rest) {
                    return Some(v);
                }
                take(m, rest)
            }
            _ => None,
        },
    }
}

fn put(root: &mut Mapping, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            root.insert(Value::from(path), value);
        }
        Some((head, rest)) => {
            let entry = root
                .entry(Value::from(head))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !entry.is_mapping() {
                *entry = Value::Mapping(Mapping::new());
            }
            if let Value::Mapping(m) = entry {
                put(m, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{Config, RestartPolicy};

    #[test]
    fn the_guides_spellings_land_where_the_engine_reads_them() {
        let c = Config::from_yaml(
            "server:\n  bind_host: 0.0.0.0\n  max_request_size_mb: 10\nsql:\n  max_memory_mb: 2048\n  \
             query_timeout_ms: 1500\njobs:\n  restart_policy: always\n  max_restart_attempts: 7\n  \
             restart_delay_ms: 250\nkafka:\n  linger_ms: 5\n  max_poll_records: 500\n",
        )
        .unwrap();
        assert_eq!(c.server.bind, "0.0.0.0");
        assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.sql.memory_limit_mb, 2048);
        assert_eq!(c.server.query_timeout_seconds, 2);
        assert_eq!(c.sql.restart_policy, RestartPolicy::Always);
        assert_eq!((c.sql.max_restarts, c.sql.restart_delay_ms), (7, 250));
        assert_eq!(c.kafka.common.linger_ms, Some(5));
        assert_eq!(c.performance().unwrap().batch_size, 500);
        assert!(c.without_effect.is_empty(), "{:?}", c.without_effect);
    }

    #[test]
    fn keys_without_effect_are_listed_with_why_and_nothing_else_changes() {
        let c = Config::from_yaml(
            "sql:\n  worker_threads: 3\n  enable_spill_to_disk: true\nstorage:\n  \
             state_backend: rocksdb\n  rocksdb:\n    write_buffer_size_mb: 256\n  \
             checkpoint_interval_ms: 3000\nserialization:\n  avro:\n    decimal_scale: 4\n\
             kafka:\n  acks: all\n",
        )
        .unwrap();
        assert_eq!(c.sql.worker_threads, 3);
        assert_eq!(c.checkpoint_interval_ms(), 3000);
        assert_eq!(
            c.without_effect,
            [
                "sql.enable_spill_to_disk (state stays in memory)",
                "storage.state_backend (state is in memory, checkpointed to files)",
                "storage.rocksdb.write_buffer_size_mb (no RocksDB)",
                "serialization.avro.decimal_scale (formats are declared per stream)",
                "kafka.acks",
            ]
        );
    }

    #[test]
    fn a_typo_fails_naming_the_key_and_the_nearest_known_one() {
        let e = Config::from_yaml("server:\n  prot: 8080\n").unwrap_err();
        assert_eq!(e, "unknown key `server.prot`; did you mean `server.port`?");
        let e = Config::from_yaml("kafka:\n  linger_sm: 5\n").unwrap_err();
        assert_eq!(
            e,
            "unknown key `kafka.linger_sm`; did you mean `kafka.linger_ms`?"
        );
        let e = Config::from_yaml("sql:\n  max_memroy_mb: 5\n").unwrap_err();
        assert_eq!(
            e,
            "unknown key `sql.max_memroy_mb`; did you mean `sql.max_memory_mb`?"
        );
        let e = Config::from_yaml("kafka:\n  ssl:\n    ca_locaton: /x\n").unwrap_err();
        assert_eq!(
            e,
            "unknown key `kafka.ssl.ca_locaton`; did you mean `kafka.ssl.ca_location`?"
        );
        let e = Config::from_yaml("nonsense:\n  x: 1\n").unwrap_err();
        assert_eq!(e, "unknown key `nonsense.x`");
        // Free keys: librdkafka's own names under `kafka.properties`.
        let c = Config::from_yaml("kafka:\n  properties:\n    client.rack: r1\n").unwrap();
        assert_eq!(c.kafka.properties["client.rack"], "r1");
    }

    #[test]
    fn authentication_the_server_cannot_give_refuses_to_start() {
        let e = Config::from_yaml("auth:\n  enable: true\n  type: jwt\n").unwrap_err();
        assert!(e.contains("server.auth_token"), "{e}");
        let c = Config::from_yaml("auth:\n  enable: false\n").unwrap();
        assert_eq!(
            c.without_effect,
            ["auth.enable (use server.auth_token (bearer token))"]
        );
    }
}
