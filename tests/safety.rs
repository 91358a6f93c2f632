//! Nothing a client or a record sends can crash VeloStream, exhaust it, or read through it:
//! through the real server socket and the binary, against the real broker.

mod common;

use common::server::*;
use common::*;

/// A server with stream `t` (`id BIGINT`) over a topic holding ids 1, 2, 3.
fn server_with_stream() -> (Server, String) {
    let topic = unique_topic("safe");
    create_topic(&topic, 1);
    produce(
        &topic,
        &(1..=3)
            .map(|i| Rec::value(format!(r#"{{"id":{i}}}"#)))
            .collect::<Vec<_>>(),
    );
    let server = start_server(&config_yaml(""));
    let body = format!(r#"{{"name":"t","kafka_topic":"{topic}","columns":"id BIGINT"}}"#);
    let (status, text) = call(
        "POST",
        &format!("{}/streams", server.url),
        None,
        Some(&body),
    );
    assert_eq!(status, 201, "{text}");
    (server, topic)
}

fn sql(server: &Server, text: &str) -> (u16, String) {
    let body = serde_json::json!({ "sql": text, "format": "json-lines" }).to_string();
    call("POST", &format!("{}/sql", server.url), None, Some(&body))
}

#[test]
fn long_or_chains_run_or_are_refused_and_never_crash_the_server() {
    let (server, _) = server_with_stream();
    let chain = |n: usize| {
        let terms: Vec<String> = (0..n).map(|i| format!("id = {}", i % 2 + 2)).collect();
        format!("SELECT id FROM t WHERE {}", terms.join(" OR "))
    };
    let (status, body) = sql(&server, &chain(200));
    assert_eq!((status, body.as_str()), (200, "{\"id\":2}\n{\"id\":3}\n"));
    // About 900 KB of SQL: refused before planning, with the reason.
    let (status, body) = sql(&server, &chain(100_000));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nest more than 2000 levels"), "{body}");
    assert_eq!(
        call("GET", &format!("{}/health", server.url), None, None).0,
        200
    );
    let (status, body) = sql(&server, &chain(1_500));
    assert_eq!((status, body.as_str()), (200, "{\"id\":2}\n{\"id\":3}\n"));
}

#[test]
fn any_cors_origin_starts_the_server_and_a_bad_origin_is_refused_at_start() {
    let server = start_server(&config_yaml("server:\n  cors_origins: [\"*\"]\n"));
    let response = agent()
        .get(format!("{}/health", server.url))
        .header("Origin", "https://example.org")
        .call()
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string()),
        Some("*".to_string())
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "server:\n  cors_origins: [\"not an origin\"]\n").unwrap();
    let out = run(&[
        "server",
        "--config",
        config.to_str().unwrap(),
        "--port",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("server.cors_origins: 'not an origin' is not an origin"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_oversized_bad_record_is_dead_lettered_with_a_bounded_reason_and_the_job_goes_on() {
    let topic = unique_topic("safe-big");
    let dlq = unique_topic("safe-big-dlq");
    create_topic(&topic, 1);
    create_topic(&dlq, 1);
    let big = format!("{{\"id\":\"{}", "x".repeat(900_000));
    produce(
        &topic,
        &[
            Rec::value(r#"{"id":1}"#),
            Rec::value(big.clone()),
            Rec::value(r#"{"id":3}"#),
        ],
    );
    let job = spawn(&[
        "stream",
        "--topic",
        &topic,
        "--schema",
        "id BIGINT",
        "--query",
        "SELECT id FROM t",
        "--dlq-topic",
        &dlq,
        "--format",
        "json-lines",
        "--group-id",
        &unique_topic("g"),
    ]);
    assert_eq!(job.take_lines(2), vec![r#"{"id":1}"#, r#"{"id":3}"#]);
    assert_eq!(job.terminate().0, 0);
    let letters = consume(&dlq, 1);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].value, big, "the record, unchanged");
    let reason = &letters[0].headers["velo.error"];
    assert!(reason.len() <= 1100, "{} bytes of reason", reason.len());
    assert_eq!(letters[0].headers["velo.source.offset"], "1");
}

#[test]
fn abandoned_followers_free_their_slots_and_a_stop_ends_the_others() {
    let topic = unique_topic("safe-follow");
    create_topic(&topic, 1);
    let mut server = start_server(&config_yaml("server:\n  max_concurrent_queries: 2\n"));
    let body = format!(r#"{{"name":"t","kafka_topic":"{topic}","columns":"id BIGINT"}}"#);
    assert_eq!(
        call(
            "POST",
            &format!("{}/streams", server.url),
            None,
            Some(&body)
        )
        .0,
        201
    );
    let follow = || {
        agent()
            .post(format!("{}/sql", server.url))
            .header("Content-Type", "application/json")
            .send(r#"{"sql":"SELECT id FROM t","follow":true}"#)
            .unwrap()
    };
    // Two followers of a quiet topic take both slots; their clients go away.
    let first = follow();
    let second = follow();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    drop(first);
    drop(second);
    let bounded = || {
        call(
            "POST",
            &format!("{}/sql", server.url),
            None,
            Some(r#"{"sql":"SELECT id FROM t","format":"json-lines"}"#),
        )
    };
    let freed = eventually("the abandoned followers' slots", || {
        let (status, body) = bounded();
        (status != 429).then_some((status, body))
    });
    assert_eq!(freed, (200, String::new()));
    // A follower still connected does not hold up a stop.
    let mut connected = follow();
    let mut heartbeat = [0u8; 1];
    std::io::Read::read_exact(&mut connected.body_mut().as_reader(), &mut heartbeat).unwrap();
    assert_eq!(&heartbeat, b"\n", "a quiet follow sends heartbeats");
    let stopped_at = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped_at.elapsed() < std::time::Duration::from_secs(10),
            "still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop(connected);
}

#[test]
fn a_window_that_would_explode_every_row_is_refused_before_it_runs() {
    let (server, _) = server_with_stream();
    let (status, body) = sql(
        &server,
        "SELECT COUNT(*) FROM t GROUP BY id, HOP(_timestamp, INTERVAL '1' MILLISECOND, INTERVAL '3650' DAY)",
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("would fall in 315360000000 windows"),
        "{body}"
    );
}

#[test]
fn sql_over_http_reads_files_only_under_the_allowed_directories_and_never_echoes_them() {
    let topic = unique_topic("safe-files");
    create_topic(&topic, 1);
    produce(&topic, &[Rec::value(r#"{"id":1}"#)]);
    let allowed = tempfile::tempdir().unwrap();
    let table = allowed.path().join("names.csv");
    std::fs::write(&table, "id,name\n1,one\n").unwrap();
    let server = start_server(&config_yaml(&format!(
        "server:\n  allowed_paths: [\"{}\"]\n",
        allowed.path().display()
    )));
    let query = |path: &str| {
        format!(
            "CREATE STREAM s (id BIGINT) WITH ('topic' = '{topic}');\n\
             CREATE TABLE f (id BIGINT, name VARCHAR) WITH ('path' = '{path}', 'format' = 'csv');\n\
             SELECT s.id, f.name FROM s JOIN f ON s.id = f.id"
        )
    };
    let ask = |sql: &str| {
        let body = serde_json::json!({ "sql": sql, "format": "json-lines" }).to_string();
        call("POST", &format!("{}/sql", server.url), None, Some(&body))
    };
    assert_eq!(
        ask(&query(&table.display().to_string())),
        (200, "{\"id\":1,\"name\":\"one\"}\n".to_string())
    );
    // Outside the allowed directory, a device, a path climbing out: one refusal, no content.
    for path in [
        "/etc/passwd".to_string(),
        "/dev/zero".to_string(),
        format!("{}/../../../etc/passwd", allowed.path().display()),
    ] {
        let (status, body) = ask(&query(&path));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("server.allowed_paths"), "{body}");
        assert!(!body.contains("root"), "{body}");
    }
    // A schema file in a stream registration is checked the same way.
    let (status, body) = call(
        "POST",
        &format!("{}/streams", server.url),
        None,
        Some(
            r#"{"name":"p","serialization":"protobuf","schema_file":"/etc/passwd","proto_message":"x.Y"}"#,
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("root"), "{body}");
    // A registry not in the allowed list is refused before anything is fetched.
    let (status, body) = ask(&format!(
        "CREATE STREAM r WITH ('topic' = '{topic}', 'format' = 'avro', 'schema.registry' = 'http://169.254.169.254/');\nSELECT * FROM r"
    ));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("server.allowed_registries"), "{body}");
    // An allowed file that does not parse is reported without its content.
    std::fs::write(allowed.path().join("bad.proto"), "root:x:0:0:secret\n").unwrap();
    let (status, body) = ask(&format!(
        "CREATE STREAM b WITH ('topic' = '{topic}', 'format' = 'protobuf', 'protobuf.file' = '{}', 'protobuf.message' = 'x.Y');\nSELECT * FROM b",
        allowed.path().join("bad.proto").display()
    ));
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("secret") && !body.contains("root"), "{body}");
}

#[test]
fn concurrent_stops_restarts_and_deletes_leave_one_run_or_none() {
    let server = start_server(&config_yaml(""));
    let app = "CREATE STREAM g WITH ('source' = 'generator:trades?rate=200');\n\
               START JOB busy AS SELECT symbol FROM g;";
    deploy(&server, app);
    let url = server.url.clone();
    let records = |url: &str| -> u64 {
        let (_, body) = call("GET", &format!("{url}/jobs/busy"), None, None);
        json(&body)["records_in"].as_u64().unwrap_or(0)
    };
    eventually("the job to run", || (records(&url) > 0).then_some(()));
    // 200 stops and restarts from 8 clients at once.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let action = if (i + t) % 2 == 0 { "stop" } else { "restart" };
                    let (status, body) =
                        call("POST", &format!("{url}/jobs/busy/{action}"), None, None);
                    assert_eq!(status, 200, "{action}: {body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Stopped now, nothing of it may still run: its count stands still.
    assert_eq!(
        call("POST", &format!("{url}/jobs/busy/stop"), None, None).0,
        200
    );
    let (_, body) = call("GET", &format!("{url}/jobs/busy"), None, None);
    assert_eq!(json(&body)["status"], "stopped", "{body}");
    let before = records(&url);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(records(&url), before, "no run left behind");
    // A restart and a delete racing: the job is gone, and no run of it is left.
    let restart = {
        let url = url.clone();
        std::thread::spawn(move || call("POST", &format!("{url}/jobs/busy/restart"), None, None))
    };
    let (status, _) = call("DELETE", &format!("{url}/jobs/busy"), None, None);
    assert!(status == 204 || status == 404, "{status}");
    let _ = restart.join().unwrap();
    let (status, _) = call("DELETE", &format!("{url}/jobs/busy"), None, None);
    assert!(status == 204 || status == 404, "{status}");
    assert_eq!(call("GET", &format!("{url}/jobs/busy"), None, None).0, 404);
    let (_, jobs) = call("GET", &format!("{url}/jobs"), None, None);
    assert_eq!(json(&jobs)["jobs"], serde_json::json!([]));
    let (_, metrics) = call("GET", &format!("{url}/metrics"), None, None);
    assert!(metrics.contains("velo_active_jobs 0"), "{metrics}");
}

#[test]
fn invented_http_methods_do_not_create_metric_series() {
    let server = start_server(&config_yaml(""));
    let address = server.url.trim_start_matches("http://").to_string();
    for method in ["FOO", "BAR", "BAZZ"] {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(&address).unwrap();
        write!(
            tcp,
            "{method} /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    }
    let (_, metrics) = call("GET", &format!("{}/metrics", server.url), None, None);
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    for method in ["FOO", "BAR", "BAZZ"] {
        assert!(!metrics.contains(method), "{metrics}");
    }
}

/// CPU seconds the process `pid` has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn a_query_past_its_time_limit_is_cancelled_and_gives_its_slot_and_cpu_back() {
    let server = start_server(&config_yaml(
        "server:\n  query_timeout_seconds: 2\n  max_concurrent_queries: 1\n",
    ));
    let sql = |text: &str| {
        let body = serde_json::json!({ "sql": text }).to_string();
        call("POST", &format!("{}/sql", server.url), None, Some(&body))
    };
    // A bounded query that would read 10^10 generated trades.
    let (status, body) = sql(
        "CREATE STREAM g WITH ('source' = 'generator:trades?count=10000000000');\n\
         SELECT COUNT(*) AS n FROM g",
    );
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("server.query_timeout_seconds"), "{body}");
    // Within a few seconds the process is idle again and the only slot is free.
    let pid = server.child.id();
    eventually("the cancelled query to stop using the CPU", || {
        let before = cpu_seconds(pid);
        std::thread::sleep(std::time::Duration::from_millis(500));
        (cpu_seconds(pid) - before < 0.1).then_some(())
    });
    let (status, body) = sql(
        "CREATE STREAM g WITH ('source' = 'generator:trades?count=10');\nSELECT COUNT(*) AS n FROM g",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""rows":[{"n":10}]"#), "{body}");
}
