//! The server through a real socket, with the real broker: every documented route answers,
//! auth/body-size/concurrency limits, the streams catalog and ad-hoc SQL in every format, an
//! application file deployed with the CLI and managed with `velo-sql jobs …`, bad application
//! files, a job whose topic does not exist, in-process `deploy-app`, and the metrics moving.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

#[test]
fn every_documented_route_answers_and_errors_are_json() {
    let server = start_server(&config_yaml(""));
    let (status, doc) = call("GET", &format!("{}/openapi.json", server.url), None, None);
    assert_eq!(status, 200);
    let doc = json(&doc);
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "no-such-job")
                .replace("{name}", "no-such-stream");
            let (status, body) = call(
                &method.to_uppercase(),
                &format!("{}{concrete}", server.url),
                None,
                Some("{}"),
            );
            assert_ne!(status, 405, "{method} {path}");
            if path.contains('{') {
                assert_eq!(status, 404, "{method} {path}: {body}");
                assert_eq!(json(&body)["code"], "not_found", "{method} {path}");
            } else if method == "post" {
                // An empty object is not a valid request: a JSON error saying what is missing.
                assert_eq!(status, 400, "{method} {path}: {body}");
                let message = json(&body)["message"].as_str().unwrap().to_string();
                assert!(
                    message.contains("missing field `sql`")
                        || message.contains("needs a name")
                        || message.contains("missing field `format`"),
                    "{method} {path}: {message}"
                );
            } else {
                assert_eq!(status, 200, "{method} {path}: {body}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 32);
    let (status, body) = call("GET", &format!("{}/no/such/route", server.url), None, None);
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (404, "no_route".into())
    );
}

#[test]
fn auth_body_size_concurrency_and_malformed_bodies_are_enforced() {
    let server = start_server(&config_yaml(
        "server:\n  auth_token: s3cret\n  max_body_bytes: 2000\n  max_concurrent_queries: 1\n",
    ));
    let url = |p: &str| format!("{}{p}", server.url);
    assert_eq!(call("GET", &url("/health"), None, None).0, 200);
    let (status, body) = call("GET", &url("/jobs"), None, None);
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (401, "unauthorized".into())
    );
    assert_eq!(call("GET", &url("/jobs"), Some("wrong"), None).0, 401);
    assert_eq!(call("GET", &url("/jobs"), Some("s3cret"), None).0, 200);
    // The CLI sends VELO_API_TOKEN.
    let cli = |token: Option<&str>| {
        let mut c = velo_sql();
        c.args(["jobs", "list", "--format", "json", "--server", &server.url]);
        c.env_remove("VELO_API_TOKEN");
        if let Some(t) = token {
            c.env("VELO_API_TOKEN", t);
        }
        c.output().unwrap()
    };
    let allowed = cli(Some("s3cret"));
    assert_eq!(String::from_utf8_lossy(&allowed.stdout), "[]\n");
    let refused = cli(None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let big = format!(r#"{{"sql":"SELECT 1 -- {}"}}"#, "x".repeat(5000));
    let (status, body) = call("POST", &url("/sql"), Some("s3cret"), Some(&big));
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (413, "body_too_large".into())
    );
    let (status, body) = call("POST", &url("/sql"), Some("s3cret"), Some("{not json"));
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (400, "malformed_json".into())
    );
    // A followed query holds the only query slot; the next query gets 429.
    let follow = r#"{"sql":"CREATE STREAM g WITH ('source' = 'generator:trades?rate=20'); SELECT symbol FROM g","follow":true}"#;
    let mut held = agent()
        .post(url("/sql"))
        .header("Authorization", "Bearer s3cret")
        .header("Content-Type", "application/json")
        .send(follow)
        .unwrap();
    assert_eq!(held.status().as_u16(), 200);
    let mut lines = BufReader::new(held.body_mut().as_reader()).lines();
    let first = json(&lines.next().unwrap().unwrap());
    assert!(first["symbol"].is_string(), "{first}");
    let (status, body) = call(
        "POST",
        &url("/sql"),
        Some("s3cret"),
        Some(r#"{"sql":"SELECT 1"}"#),
    );
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (429, "too_many_queries".into())
    );
    // Every refusal is in /security/events: its kind and declared route, never the token.
    let (_, body) = call("GET", &url("/security/events"), Some("s3cret"), None);
    let events: Vec<(String, String)> = json(&body)["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["route"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for wanted in [
        ("unauthorized", "/jobs"),
        ("too_large", "/sql"),
        ("too_many_queries", "/sql"),
    ] {
        assert!(
            events.contains(&(wanted.0.to_string(), wanted.1.to_string())),
            "{wanted:?} in {body}"
        );
    }
    assert!(
        !body.contains("wrong") && !body.contains("s3cret"),
        "{body}"
    );
}

#[test]
fn ad_hoc_sql_over_a_registered_stream_in_every_format() {
    let topic = unique_topic("srv-trades");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[
            Rec::value(r#"{"symbol":"AAPL","price":"150.2567","qty":100}"#),
            Rec::value(r#"{"symbol":"MSFT","price":"-0.0001","qty":3}"#),
            Rec::value(r#"{"symbol":"AAPL","price":"151.0000","qty":7}"#),
        ],
    );
    let server = start_server(&config_yaml(""));
    let url = |p: &str| format!("{}{p}", server.url);
    let (status, body) = call(
        "POST",
        &url("/streams"),
        None,
        Some(&format!(
            r#"{{"name":"trades","kafka_topic":"{topic}","columns":"symbol VARCHAR, price DECIMAL(18,4), qty BIGINT"}}"#
        )),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = call("GET", &url("/streams/trades"), None, None);
    assert_eq!(status, 200);
    assert_eq!(
        json(&body)["ddl"],
        format!("CREATE STREAM trades (symbol VARCHAR, price DECIMAL(18,4), qty BIGINT) WITH ('topic' = '{topic}')")
    );
    let query = |format: &str| {
        call(
            "POST",
            &url("/sql"),
            None,
            Some(&format!(
                r#"{{"sql":"SELECT symbol, price * qty AS notional FROM trades WHERE symbol = 'AAPL'","format":"{format}"}}"#
            )),
        )
    };
    let (status, body) = query("json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"{"columns":[{"name":"symbol","type":"VARCHAR"},{"name":"notional","type":"DECIMAL(38,4)"}],"rows":[{"symbol":"AAPL","notional":"15025.6700"},{"symbol":"AAPL","notional":"1057.0000"}]}"#
    );
    assert_eq!(
        query("json-lines").1,
        "{\"symbol\":\"AAPL\",\"notional\":\"15025.6700\"}\n{\"symbol\":\"AAPL\",\"notional\":\"1057.0000\"}\n"
    );
    assert_eq!(
        query("csv").1,
        "symbol,notional\nAAPL,15025.6700\nAAPL,1057.0000\n"
    );
    let mut response = agent()
        .post(url("/sql"))
        .header("Content-Type", "application/json")
        .send(r#"{"sql":"SELECT symbol, price FROM trades","format":"arrow"}"#)
        .unwrap();
    let bytes = response.body_mut().read_to_vec().unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let prices = arrow::compute::concat(
        &batches
            .iter()
            .map(|b| b.column(1).as_ref())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(
        arrow::util::display::array_value_to_string(&prices, 1).unwrap(),
        "-0.0001"
    );
    // Parquet: the file itself, read back by pyarrow with its exact decimals.
    let mut response = agent()
        .post(url("/sql"))
        .header("Content-Type", "application/json")
        .send(r#"{"sql":"SELECT symbol, price FROM trades","format":"parquet"}"#)
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let file = std::env::temp_dir().join(format!("velo-sql-{}.parquet", std::process::id()));
    std::fs::write(&file, response.body_mut().read_to_vec().unwrap()).unwrap();
    let rows = python_tool(
        "tests/interop/parquet_tool.py",
        &["pyarrow", file.to_str().unwrap()],
        &[],
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        rows,
        [
            r#"{"symbol":"AAPL","price":"150.2567"}"#,
            r#"{"symbol":"MSFT","price":"-0.0001"}"#,
            r#"{"symbol":"AAPL","price":"151.0000"}"#,
        ]
    );
    // SQL errors carry the line and column of the client's text.
    let (status, body) = call(
        "POST",
        &url("/sql"),
        None,
        Some(r#"{"sql":"SELECT symbol,\n  price FROM trades GROUP BY BY symbol"}"#),
    );
    let error = json(&body);
    assert_eq!(
        (status, error["code"].clone()),
        (400, "sql_error".into()),
        "{body}"
    );
    assert_eq!(
        (error["line"].clone(), error["column"].clone()),
        (2.into(), 33.into()),
        "{body}"
    );
    let (status, body) = call(
        "POST",
        &url("/sql"),
        None,
        Some(r#"{"sql":"SELECT nope FROM trades"}"#),
    );
    assert_eq!(status, 400);
    assert!(
        json(&body)["message"].as_str().unwrap().contains("nope"),
        "{body}"
    );
    assert_eq!(call("DELETE", &url("/streams/trades"), None, None).0, 204);
    assert_eq!(call("GET", &url("/streams/trades"), None, None).0, 404);
}

/// The value of metric `name` with these labels (0 when absent).
fn metric(server: &Server, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, text) = call("GET", &format!("{}/metrics", server.url), None, None);
    text.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Three orders produced to `orders`; the two over 1000 must reach `out`, in order.
fn orders_over_1000_are_written(orders: &str, out: &str) {
    produce(
        orders,
        &[
            Rec::value(r#"{"customer_id":1,"amount":"1500.50"}"#),
            Rec::value(r#"{"customer_id":2,"amount":"99.99"}"#),
            Rec::value(r#"{"customer_id":3,"amount":"1000.01"}"#),
        ],
    );
    let written: Vec<String> = consume(out, 2).into_iter().map(|c| c.value).collect();
    assert_eq!(
        written,
        [
            r#"{"customer_id":1,"amount":"1500.50"}"#,
            r#"{"customer_id":3,"amount":"1000.01"}"#
        ]
    );
}

#[test]
fn an_application_is_deployed_run_and_managed_from_the_cli() {
    let orders = unique_topic("app-orders");
    let big = unique_topic("app-big");
    let dead = unique_topic("app-dlq");
    create_topic(&orders, 1);
    create_topic(&big, 1);
    create_topic(&dead, 1);
    let server = start_server(&config_yaml(""));
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.sql");
    std::fs::write(
        &app,
        format!(
            "CREATE STREAM orders (customer_id BIGINT, amount DECIMAL(10,2)) WITH ('topic' = '{orders}');\n\
             \n\
             -- JOB: high_value\n\
             START JOB high_value AS\n\
             SELECT customer_id, amount FROM orders WHERE amount > 1000\n\
             WITH ('sink.topic' = '{big}', 'dlq.topic' = '{dead}');\n"
        ),
    )
    .unwrap();
    let prefix = format!("{}-", unique_topic("t"));
    let ids = run_ok(&[
        "deploy-app",
        "--server",
        &server.url,
        "--file",
        app.to_str().unwrap(),
        "--job-prefix",
        &prefix,
    ]);
    let id = format!("{prefix}high_value");
    assert_eq!(ids.trim(), id);
    orders_over_1000_are_written(&orders, &big);
    let server_flag = ["--server", server.url.as_str()];
    let jobs = |args: &[&str]| {
        let mut all = vec!["jobs"];
        all.extend_from_slice(args);
        all.extend_from_slice(&server_flag);
        run_ok(&all)
    };
    assert_eq!(
        jobs(&["output", &id]),
        "{\"customer_id\":1,\"amount\":\"1500.50\"}\n{\"customer_id\":3,\"amount\":\"1000.01\"}\n"
    );
    // The job's current output as a Parquet file, typed (the amount stays a decimal).
    let mut response = agent()
        .get(&format!("{}/jobs/{id}/output?format=parquet", server.url))
        .call()
        .unwrap();
    let file = std::env::temp_dir().join(format!("velo-job-{}.parquet", std::process::id()));
    std::fs::write(&file, response.body_mut().read_to_vec().unwrap()).unwrap();
    let path = file.to_str().unwrap();
    let schema = python_tool("tests/interop/parquet_tool.py", &["schema", path], &[]);
    let rows = python_tool("tests/interop/parquet_tool.py", &["pyarrow", path], &[]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(schema, ["customer_id: int64", "amount: decimal128(10, 2)"]);
    assert_eq!(
        rows,
        [
            r#"{"customer_id":1,"amount":"1500.50"}"#,
            r#"{"customer_id":3,"amount":"1000.01"}"#
        ]
    );
    let status = eventually("records counted", || {
        let s = json(&jobs(&["status", &id]));
        (s["records_in"] == 3 && s["records_out"] == 2).then_some(s)
    });
    assert_eq!(status["status"], "running");
    assert!(status["consumer_group"].as_str().unwrap().ends_with(&id));
    let table = jobs(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("running")),
        "{table}"
    );
    assert!(
        jobs(&["list", "--status", "failed"]).lines().count() == 1,
        "header only"
    );
    let job = [("job_id", id.as_str())];
    assert_eq!(metric(&server, "velo_records_in_total", &job), 3.0);
    assert_eq!(metric(&server, "velo_records_out_total", &job), 2.0);
    assert!(metric(&server, "velo_batch_latency_seconds_count", &job) >= 1.0);
    assert_eq!(metric(&server, "velo_active_jobs", &[]), 1.0);
    assert!(
        metric(
            &server,
            "velo_http_requests_total",
            &[
                ("route", "/jobs/{id}"),
                ("method", "GET"),
                ("status", "200")
            ]
        ) >= 1.0
    );

    assert_eq!(json(&jobs(&["pause", &id]))["status"], "paused");
    assert_eq!(json(&jobs(&["resume", &id]))["status"], "running");
    produce(
        &orders,
        &[Rec::value(r#"{"customer_id":4,"amount":"2000.00"}"#)],
    );
    eventually("the resumed job's row", || {
        jobs(&["output", &id])
            .contains("\"customer_id\":4")
            .then_some(())
    });
    assert_eq!(metric(&server, "velo_records_in_total", &job), 4.0);
    // A bad record: counted, in the metrics and in the job's own log; the job goes on.
    produce(&orders, &[Rec::value("{oops")]);
    let status = eventually("the bad record counted and the lag caught up", || {
        let s = json(&jobs(&["status", &id]));
        (s["bad_records"] == 1 && s["lag"] == 0).then_some(s)
    });
    assert_eq!(status["records_in"], 5);
    assert_eq!(
        metric(
            &server,
            "velo_record_errors_total",
            &[("job_id", id.as_str()), ("kind", "decode")]
        ),
        1.0
    );
    assert_eq!(metric(&server, "velo_consumer_lag", &job), 0.0);
    let logs = jobs(&["logs", &id]);
    assert!(logs.contains("dead-lettered the record at"), "{logs}");
    let dead_letters: Vec<String> = consume(&dead, 1).into_iter().map(|c| c.value).collect();
    assert_eq!(dead_letters, ["{oops"]);
    assert_eq!(status["dead_letters"], 1);
    assert_eq!(metric(&server, "velo_dlq_records_total", &job), 1.0);
    assert_eq!(json(&jobs(&["stop", &id]))["status"], "stopped");
    let restarted = json(&jobs(&["restart", &id]));
    assert_eq!(restarted["restarts"], 1);
    eventually("running again", || {
        (json(&jobs(&["status", &id]))["status"] == "running").then_some(())
    });
    let logs = jobs(&["logs", &id]);
    assert!(
        logs.contains("started") && logs.contains("paused") && logs.contains("stopped"),
        "{logs}"
    );
    run_ok(&["jobs", "delete", &id, "--server", &server.url]);
    run_failing(
        &["jobs", "status", &id, "--server", &server.url],
        2,
        "does not exist",
    );
    run_failing(
        &["jobs", "stop", "nobody", "--server", &server.url],
        2,
        "job 'nobody' does not exist",
    );
}

#[test]
fn a_bad_application_file_starts_no_job_and_names_the_place() {
    let server = start_server(&config_yaml(""));
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("bad.sql");
    std::fs::write(
        &app,
        "START JOB fine AS SELECT a FROM t;\n\nSTART JOB broken AS\nSELECT a FROM t GROUP BY BY a;\n",
    )
    .unwrap();
    let out = run_failing(
        &[
            "deploy-app",
            "--server",
            &server.url,
            "--file",
            app.to_str().unwrap(),
        ],
        2,
        "bad.sql:4:",
    );
    assert!(stderr(&out).contains("SQL error"), "{}", stderr(&out));
    let (_, body) = call("GET", &format!("{}/jobs", server.url), None, None);
    assert_eq!(json(&body)["jobs"], serde_json::json!([]));
}

#[test]
fn a_job_whose_topic_does_not_exist_fails_clearly_and_the_server_stays_up() {
    let server = start_server(&config_yaml("sql:\n  restart_policy: never\n"));
    let missing = unique_topic("missing");
    let (status, body) = call(
        "POST",
        &format!("{}/jobs", server.url),
        None,
        Some(
            &serde_json::json!({"sql": format!("START JOB lost AS SELECT * FROM \"{missing}\"")})
                .to_string(),
        ),
    );
    assert_eq!(status, 201, "{body}");
    let job = eventually("the job to fail", || {
        let (_, body) = call("GET", &format!("{}/jobs/lost", server.url), None, None);
        let j = json(&body);
        (j["status"] == "failed").then_some(j)
    });
    assert!(
        job["last_error"].as_str().unwrap().contains(&missing),
        "{job}"
    );
    assert_eq!(job["failures"], 1);
    // The guide's scripts read `job_id` and `error`; `status=all` lists every job.
    assert_eq!(job["job_id"], "lost");
    assert_eq!(job["error"], job["last_error"]);
    let (_, body) = call(
        "GET",
        &format!("{}/jobs?status=all", server.url),
        None,
        None,
    );
    assert_eq!(json(&body)["jobs"][0]["job_id"], "lost", "{body}");
    assert_eq!(
        call("GET", &format!("{}/health", server.url), None, None).0,
        200
    );
    let (_, logs) = call("GET", &format!("{}/jobs/lost/logs", server.url), None, None);
    assert!(
        logs.contains("failed:") && logs.contains(&missing),
        "{logs}"
    );
}

#[test]
fn deploy_app_without_a_server_runs_the_jobs_here() {
    let orders = unique_topic("local-orders");
    let out_topic = unique_topic("local-out");
    create_topic(&orders, 1);
    produce(
        &orders,
        &[
            Rec::value(r#"{"id":1,"amount":"5.00"}"#),
            Rec::value(r#"{"id":2,"amount":"50.00"}"#),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("local.sql");
    std::fs::write(
        &app,
        format!(
            "-- TOPIC: {orders}\n\
             CREATE STREAM large AS SELECT id, amount FROM orders WHERE amount > 10 WITH ('sink.topic' = '{out_topic}');\n"
        ),
    )
    .unwrap();
    let status = run_ok(&["deploy-app", "--file", app.to_str().unwrap()]);
    let line = json(status.lines().next().unwrap());
    assert_eq!(
        (line["id"].clone(), line["status"].clone()),
        ("large".into(), "finished".into())
    );
    assert_eq!(line["records_in"], 2);
    let out: Vec<String> = consume(&out_topic, 1)
        .into_iter()
        .map(|c| c.value)
        .collect();
    assert_eq!(out, [r#"{"id":2,"amount":"50.00"}"#]);
}

#[test]
fn a_job_output_can_be_followed_live() {
    let server = start_server(&config_yaml(""));
    let (status, body) = call(
        "POST",
        &format!("{}/jobs", server.url),
        None,
        Some(
            r#"{"sql":"CREATE STREAM g WITH ('source' = 'generator:trades?rate=50');\nSTART JOB live AS SELECT symbol, price FROM g;"}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    let mut response = agent()
        .get(format!(
            "{}/jobs/live/output?limit=0&follow=true",
            server.url
        ))
        .call()
        .unwrap();
    let mut lines = BufReader::new(response.body_mut().as_reader()).lines();
    for _ in 0..3 {
        let row = json(&lines.next().unwrap().unwrap());
        assert!(
            row["symbol"].is_string() && row["price"].is_string(),
            "{row}"
        );
    }
}

#[test]
fn a_failing_job_is_restarted_with_backoff_and_then_reported_failed() {
    let server = start_server(&config_yaml(
        "sql:\n  restart_policy: on-failure\n  max_restarts: 2\n  restart_delay_ms: 50\n",
    ));
    let missing = unique_topic("gone");
    let body =
        serde_json::json!({"sql": format!("START JOB retry AS SELECT * FROM \"{missing}\"")});
    assert_eq!(
        call(
            "POST",
            &format!("{}/jobs", server.url),
            None,
            Some(&body.to_string())
        )
        .0,
        201
    );
    let job = eventually("the retries to run out", || {
        let (_, body) = call("GET", &format!("{}/jobs/retry", server.url), None, None);
        let j = json(&body);
        (j["status"] == "failed").then_some(j)
    });
    assert_eq!(
        (job["restarts"].clone(), job["failures"].clone()),
        (2.into(), 3.into()),
        "{job}"
    );
    assert_eq!(
        metric(&server, "velo_job_restarts_total", &[("job_id", "retry")]),
        2.0
    );
    let (_, logs) = call(
        "GET",
        &format!("{}/jobs/retry/logs", server.url),
        None,
        None,
    );
    assert!(
        logs.contains("restarting in 50 ms") && logs.contains("restarting in 100 ms"),
        "{logs}"
    );
    assert!(logs.contains("gave up after 2 restart(s)"), "{logs}");
}

#[test]
fn the_sql_file_is_deployed_at_start_and_config_streams_are_known() {
    let topic = unique_topic("cfg-ticks");
    create_topic(&topic, 1);
    produce(&topic, &[Rec::value(r#"{"sym":"A","px":"1.50"}"#)]);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("start.sql");
    std::fs::write(&app, "START JOB echo AS SELECT sym, px FROM ticks;\n").unwrap();
    let yaml = config_yaml(&format!(
        "sql:\n  streams:\n    - \"CREATE STREAM ticks (sym VARCHAR, px DECIMAL(6,2)) WITH ('topic' = '{topic}')\"\n"
    ));
    let server = start_server_with(&yaml, &[("SQL_FILE", app.to_str().unwrap())]);
    let (_, body) = call("GET", &format!("{}/streams", server.url), None, None);
    assert_eq!(json(&body)["streams"][0]["origin"], "config");
    let rows = eventually("the job's output", || {
        let (_, out) = call(
            "GET",
            &format!("{}/jobs/echo/output", server.url),
            None,
            None,
        );
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(rows, "{\"sym\":\"A\",\"px\":\"1.50\"}\n");
    let (status, body) = call(
        "POST",
        &format!("{}/streams", server.url),
        None,
        Some(&serde_json::json!({"sql": format!("CREATE STREAM more (x BIGINT) WITH ('topic' = '{topic}')")}).to_string()),
    );
    assert_eq!((status, json(&body)["name"].clone()), (201, "more".into()));
}

#[test]
fn a_bad_config_stops_the_server_naming_the_key_and_cors_is_off_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "server:\n  prot: 1\n").unwrap();
    run_failing(
        &["server", "--config", path.to_str().unwrap()],
        2,
        "unknown key `server.prot`; did you mean `server.port`?",
    );
    let out = velo_sql()
        .args(["server", "--port", "0"])
        .env("SQL_MAX_JOBS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SQL_MAX_JOBS='lots'"));

    let origin_of = |server: &Server| {
        let response = agent()
            .get(format!("{}/health", server.url))
            .header("Origin", "http://dash.example")
            .call()
            .unwrap();
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(origin_of(&start_server(&config_yaml(""))), None);
    let open = start_server(&config_yaml(
        "server:\n  cors_origins: [\"http://dash.example\"]\n",
    ));
    assert_eq!(origin_of(&open).as_deref(), Some("http://dash.example"));
}

#[test]
fn the_cli_follows_a_jobs_output_and_logs() {
    let server = start_server(&config_yaml(""));
    let body = r#"{"sql":"CREATE STREAM g WITH ('source' = 'generator:trades?rate=50');\nSTART JOB ticker AS SELECT symbol FROM g;"}"#;
    assert_eq!(
        call("POST", &format!("{}/jobs", server.url), None, Some(body)).0,
        201
    );
    let output = spawn(&[
        "jobs",
        "output",
        "ticker",
        "--follow",
        "--limit",
        "0",
        "--server",
        &server.url,
    ]);
    for line in output.take_lines(3) {
        assert!(json(&line)["symbol"].is_string(), "{line}");
    }
    let logs = spawn(&[
        "jobs",
        "logs",
        "ticker",
        "--follow",
        "--server",
        &server.url,
    ]);
    assert!(logs.take_lines(1)[0].ends_with("INFO started"));
    run_ok(&["jobs", "pause", "ticker", "--server", &server.url]);
    assert!(logs.take_lines(1)[0].ends_with("INFO paused"));
}

#[test]
fn a_query_past_its_timeout_or_memory_limit_gets_a_clear_error_and_sse_follows() {
    let server = start_server(&config_yaml(
        "server:\n  query_timeout_seconds: 1\nsql:\n  memory_limit_mb: 0\n",
    ));
    let url = format!("{}/sql", server.url);
    let endless = r#"{"sql":"CREATE STREAM g WITH ('source' = 'generator:trades?rate=10'); SELECT symbol FROM g"}"#;
    let (status, body) = call("POST", &url, None, Some(endless));
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (408, "timeout".into()),
        "{body}"
    );
    let grouped = r#"{"sql":"CREATE STREAM g WITH ('source' = 'generator:trades?count=500'); SELECT symbol, COUNT(*) AS n FROM g GROUP BY symbol"}"#;
    let (status, body) = call("POST", &url, None, Some(grouped));
    assert_eq!(
        (status, json(&body)["code"].clone()),
        (422, "memory_limit".into()),
        "{body}"
    );
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("WindowAggregateExec"),
        "{body}"
    );
    // The server is still up, and a followed query can come as server-sent events.
    let follow = r#"{"sql":"CREATE STREAM g WITH ('source' = 'generator:trades?rate=50'); SELECT symbol FROM g","follow":true}"#;
    let mut response = agent()
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Accept", "text/event-stream")
        .send(follow)
        .unwrap();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut lines = BufReader::new(response.body_mut().as_reader()).lines();
    let first = lines.next().unwrap().unwrap();
    let event = first
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("{first}"));
    assert!(json(event)["symbol"].is_string());
}

#[test]
fn an_avro_stream_registers_with_an_inline_schema() {
    let topic = unique_topic("srv-avro");
    create_topic(&topic, 1);
    let server = start_server(&config_yaml(""));
    let schema = serde_json::json!({
        "type": "record", "name": "Tick",
        "fields": [{"name": "sym", "type": "string"},
                   {"name": "px", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}}]
    });
    let request = serde_json::json!({
        "name": "ticks", "kafka_topic": topic, "serialization": "avro", "avro_schema": schema,
        "event_time": "_timestamp", "watermark": "5s"
    });
    let (status, body) = call(
        "POST",
        &format!("{}/streams", server.url),
        None,
        Some(&request.to_string()),
    );
    assert_eq!(status, 201, "{body}");
    let ddl = json(&body)["ddl"].as_str().unwrap().to_string();
    assert!(
        ddl.contains("'format' = 'avro'") && ddl.contains("ticks.avsc"),
        "{ddl}"
    );
    assert!(ddl.contains("'watermark_delay' = '5s'"), "{ddl}");
    // The columns come from the schema: an empty topic answers with them and no rows.
    let (status, body) = call(
        "POST",
        &format!("{}/sql", server.url),
        None,
        Some(r#"{"sql":"SELECT sym, px FROM ticks"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"{"columns":[{"name":"sym","type":"VARCHAR"},{"name":"px","type":"DECIMAL(10,2)"}],"rows":[]}"#
    );
    let (status, body) = call(
        "POST",
        &format!("{}/streams", server.url),
        None,
        Some(r#"{"name":"p","serialization":"protobuf"}"#),
    );
    assert_eq!(status, 400);
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("proto_message"),
        "{body}"
    );
    // A schema given for a JSON stream would be ignored: refused, naming the field.
    let (status, body) = call(
        "POST",
        &format!("{}/streams", server.url),
        None,
        Some(r#"{"name":"j","serialization":"json","schema_file":"schemas/trades.avsc"}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        json(&body)["message"],
        "schema_file applies to serialization avro or protobuf; a json stream takes its \
         columns from 'columns' (or infers them from the topic)"
    );
}

#[test]
fn deploy_app_continuous_runs_here_until_stopped_with_the_given_topic_and_group() {
    let input = unique_topic("cont-in");
    let output = unique_topic("cont-out");
    create_topic(&input, 1);
    create_topic(&output, 1);
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("cont.sql");
    std::fs::write(
        &app,
        format!("START JOB doubler AS SELECT n * 2 AS twice FROM numbers WITH ('sink.topic' = '{output}');\n"),
    )
    .unwrap();
    let two = dir.path().join("two.sql");
    std::fs::write(
        &two,
        "START JOB a AS SELECT 1 AS x FROM t;\nSTART JOB b AS SELECT 1 AS x FROM t;\n",
    )
    .unwrap();
    run_failing(
        &[
            "deploy-app",
            "--file",
            two.to_str().unwrap(),
            "--max-jobs",
            "1",
        ],
        2,
        "over the limit of 1",
    );
    produce(&input, &[Rec::value(r#"{"n":21}"#)]);
    let group = format!("{}-", unique_topic("grp"));
    let job = spawn(&[
        "deploy-app",
        "--file",
        app.to_str().unwrap(),
        "--continuous",
        "--default-topic",
        &input,
        "--group-prefix",
        &group,
    ]);
    let out: Vec<String> = consume(&output, 1).into_iter().map(|c| c.value).collect();
    assert_eq!(out, [r#"{"twice":42}"#]);
    // Still running: a record produced now comes out too.
    produce(&input, &[Rec::value(r#"{"n":5}"#)]);
    let out: Vec<String> = consume(&output, 2).into_iter().map(|c| c.value).collect();
    assert_eq!(out, [r#"{"twice":42}"#, r#"{"twice":10}"#]);
    let (code, lines) = job.terminate();
    assert_eq!(code, 0);
    let status = json(&lines[0]);
    assert_eq!(status["status"], "stopped");
    assert_eq!(status["consumer_group"], format!("{group}doubler"));
}

/// Metric names in `text` (`velo_…`), histogram series folded into their metric.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("velo_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let name = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(name.to_string());
        i = end;
    }
    names
}

#[test]
fn the_grafana_dashboard_and_the_docs_name_the_metrics_the_engine_emits() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut emitted = std::collections::BTreeSet::new();
    for file in [
        "src/job/progress.rs",
        "src/job/runner.rs",
        "src/server/jobs.rs",
        "src/server/api.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        // Metric names are the string literals handed to the metrics macros.
        for name in metric_names(&text) {
            if text.contains(&format!("\"{name}\"")) {
                emitted.insert(name);
            }
        }
    }
    assert!(emitted.len() >= 11, "{emitted:?}");
    let dashboard =
        std::fs::read_to_string(root.join("grafana/dashboards/velostream.json")).unwrap();
    json(&dashboard);
    let charted = metric_names(&dashboard);
    assert_eq!(
        charted, emitted,
        "the dashboard charts every metric, and only those"
    );
    let docs = std::fs::read_to_string(root.join("docs/server.md")).unwrap();
    for name in &emitted {
        assert!(
            docs.contains(&format!("`{name}")),
            "docs/server.md does not list {name}"
        );
    }
}

#[test]
fn a_join_jobs_state_is_reported_in_its_status_and_metrics() {
    let orders = unique_topic("js-orders");
    let shipments = unique_topic("js-shipments");
    create_topic(&orders, 1);
    create_topic(&shipments, 1);
    let server = start_server(&config_yaml(""));
    let app = format!(
        "CREATE STREAM orders (id BIGINT, ts TIMESTAMP) WITH ('topic' = '{orders}');\n\
         CREATE STREAM shipments (id BIGINT, ts TIMESTAMP) WITH ('topic' = '{shipments}');\n\
         START JOB matched AS SELECT o.id FROM orders o JOIN shipments s \
         ON o.id = s.id AND s.ts BETWEEN o.ts AND o.ts + INTERVAL '1' HOUR;"
    );
    deploy(&server, &app);
    produce(
        &orders,
        &[
            Rec::value(r#"{"id":1,"ts":1704067200000}"#),
            Rec::value(r#"{"id":2,"ts":1704067200000}"#),
        ],
    );
    // Both orders wait for their shipments: two rows of join state.
    let status = eventually("the join state reported", || {
        let (_, body) = call("GET", &format!("{}/jobs/matched", server.url), None, None);
        let s = json(&body);
        (s["state_rows"] == 2).then_some(s)
    });
    assert!(status["state_bytes"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(
        metric(&server, "velo_state_rows", &[("job_id", "matched")]),
        2.0
    );
}

#[test]
fn deploying_past_the_job_limit_is_refused_whole_with_429() {
    let server = start_server(&config_yaml("sql:\n  max_jobs: 1\n"));
    let body = serde_json::json!({
        "sql": "START JOB a AS SELECT 1 AS x FROM t;\nSTART JOB b AS SELECT 1 AS x FROM t;"
    });
    let (status, answer) = call(
        "POST",
        &format!("{}/jobs", server.url),
        None,
        Some(&body.to_string()),
    );
    assert_eq!(
        (status, json(&answer)["code"].clone()),
        (429, "too_many_jobs".into()),
        "{answer}"
    );
    let (_, jobs) = call("GET", &format!("{}/jobs", server.url), None, None);
    assert_eq!(json(&jobs)["jobs"], serde_json::json!([]));
}

#[test]
fn an_exactly_once_jobs_rows_out_are_counted_when_sent_while_idle_and_across_a_restart() {
    let topic = unique_topic("eo-in");
    let out = unique_topic("eo-out");
    create_topic(&topic, 1);
    create_topic(&out, 1);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap().to_string();
    let server = start_server_with(
        &config_yaml("state:\n  checkpoint_interval_ms: 3000\n"),
        &[("VELO_STATE_DIR", state_dir.as_str())],
    );
    let app = format!(
        "CREATE STREAM orders (customer_id BIGINT, amount DECIMAL(10,2)) WITH ('topic' = '{topic}');\n\
         START JOB big AS SELECT customer_id, amount FROM orders WHERE amount > 1000 \
         WITH ('sink.topic' = '{out}', 'delivery' = 'exactly-once');"
    );
    let body = serde_json::json!({ "sql": app }).to_string();
    assert_eq!(
        call("POST", &format!("{}/jobs", server.url), None, Some(&body)).0,
        201
    );
    let status = || {
        let (_, body) = call("GET", &format!("{}/jobs/big", server.url), None, None);
        json(&body)
    };
    // A first checkpoint (of a record the filter drops): the next is 3 s away, so the orders
    // below are read in an epoch that takes none, and only a checkpoint taken while the input
    // is idle sends their results.
    produce(
        &topic,
        &[Rec::value(r#"{"customer_id":0,"amount":"5.00"}"#)],
    );
    eventually("a first checkpoint", || {
        (status()["checkpoints"].as_u64() >= Some(1)).then_some(())
    });
    orders_over_1000_are_written(&topic, &out);
    let s = eventually("the rows sent to be counted", || {
        let s = status();
        (s["records_out"] == 2).then_some(s)
    });
    assert_eq!(s["records_in"], 4);
    let job = [("job_id", "big")];
    assert_eq!(metric(&server, "velo_records_out_total", &job), 2.0);
    // A restarted job's new sink counts from zero; the job's count goes on from 2.
    assert_eq!(
        call(
            "POST",
            &format!("{}/jobs/big/restart", server.url),
            None,
            None
        )
        .0,
        200
    );
    eventually("the job to run again", || {
        (status()["status"] == "running").then_some(())
    });
    produce(
        &topic,
        &[Rec::value(r#"{"customer_id":5,"amount":"2500.00"}"#)],
    );
    let written: Vec<String> = consume(&out, 3).into_iter().map(|c| c.value).collect();
    assert_eq!(written[2], r#"{"customer_id":5,"amount":"2500.00"}"#);
    eventually("the row after the restart to be counted", || {
        (status()["records_out"] == 3).then_some(())
    });
    assert_eq!(metric(&server, "velo_records_out_total", &job), 3.0);
}

/// A tumbling-window job over `topic` writing to `out`, as an application file.
fn window_app(topic: &str, out: &str) -> String {
    format!(
        "CREATE STREAM ev (k VARCHAR, n BIGINT, ts TIMESTAMP) WITH ('topic' = '{topic}');\n\
         START JOB counts AS SELECT window_start, k, COUNT(*) AS c, SUM(n) AS total FROM ev \
         WHERE k <> 'end' GROUP BY k WINDOW TUMBLING(ts, 1m) WITH ('sink.topic' = '{out}');"
    )
}

/// What an uninterrupted run of the window job gives over `topic`.
fn window_oracle(topic: &str) -> Vec<String> {
    let out = run_ok(&[
        "execute",
        "--topic",
        topic,
        "--schema",
        "k VARCHAR, n BIGINT, ts TIMESTAMP",
        "--query",
        "SELECT window_start, k, COUNT(*) AS c, SUM(n) AS total FROM ev WHERE k <> 'end' \
                    GROUP BY k WINDOW TUMBLING(ts, 1m)",
        "--format",
        "json-lines",
    ]);
    let mut rows: Vec<String> = out.lines().map(str::to_string).collect();
    rows.sort();
    rows
}

/// Waits until `out` holds `expected` (sorted) and returns what it holds.
fn output_rows(out: &str, expected: usize) -> Vec<String> {
    let mut rows: Vec<String> = consume(out, expected)
        .into_iter()
        .map(|c| c.value)
        .collect();
    rows.sort();
    rows
}

fn records_in(server: &Server, id: &str) -> u64 {
    let (_, body) = call("GET", &format!("{}/jobs/{id}", server.url), None, None);
    json(&body)["records_in"].as_u64().unwrap_or(0)
}

fn terminate(server: &mut Server) {
    std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_job_comes_back_after_a_server_restart_with_its_window_state() {
    let topic = unique_topic("sr-in");
    let out = unique_topic("sr-out");
    create_topic(&topic, 2);
    create_topic(&out, 1);
    produce(&topic, &(0..150).map(window_event).collect::<Vec<_>>());
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap().to_string();
    let yaml = config_yaml("state:\n  checkpoint_interval_ms: 500\n");
    let env = [("VELO_STATE_DIR", state_dir.as_str())];
    let mut server = start_server_with(&yaml, &env);
    let body = serde_json::json!({ "sql": window_app(&topic, &out) }).to_string();
    assert_eq!(
        call("POST", &format!("{}/jobs", server.url), None, Some(&body)).0,
        201
    );
    eventually("the job to read the first records", || {
        (records_in(&server, "counts") >= 150).then_some(())
    });
    // Windows 0 and 1 have closed; window 2 is open when the server stops.
    terminate(&mut server);
    assert!(state.path().join("jobs/counts/job.json").exists());
    produce(&topic, &(150..300).map(window_event).collect::<Vec<_>>());
    produce(&topic, &window_closer());
    let server = start_server_with(&yaml, &env);
    let (_, body) = call("GET", &format!("{}/jobs/counts", server.url), None, None);
    assert_eq!(json(&body)["status"], "running", "{body}");
    let expected = window_oracle(&topic);
    assert_eq!(expected.len(), 15, "3 keys in 5 windows");
    assert_eq!(output_rows(&out, expected.len()), expected);
}

#[test]
fn a_savepoint_and_an_export_move_a_job_to_another_server() {
    let topic = unique_topic("mv-in");
    let out = unique_topic("mv-out");
    create_topic(&topic, 2);
    create_topic(&out, 1);
    produce(&topic, &(0..150).map(window_event).collect::<Vec<_>>());
    let yaml = config_yaml("");
    let mut first = start_server(&yaml);
    let body = serde_json::json!({ "sql": window_app(&topic, &out) }).to_string();
    assert_eq!(
        call("POST", &format!("{}/jobs", first.url), None, Some(&body)).0,
        201
    );
    eventually("the job to read the first records", || {
        (records_in(&first, "counts") >= 150).then_some(())
    });
    let saved = json(&run_ok(&[
        "jobs",
        "--server",
        &first.url,
        "savepoint",
        "counts",
    ]));
    let folder = std::path::PathBuf::from(saved["savepoint"].as_str().unwrap());
    assert!(folder.join("manifest.json").exists(), "{saved}");
    assert!(saved["checkpoint"].as_u64().unwrap() >= 1);
    let file = tempfile::tempdir().unwrap();
    let export = file.path().join("state.json");
    let export_arg = export.to_str().unwrap();
    run_ok(&[
        "export-state",
        "--server",
        &first.url,
        "--output",
        export_arg,
    ]);
    let exported = json(&std::fs::read_to_string(&export).unwrap());
    assert_eq!(exported["format"], "velostream-state");
    assert_eq!(exported["jobs"][0]["definition"]["id"], "counts");
    terminate(&mut first);
    // The second server has its own state folder: the job arrives with the import.
    produce(&topic, &(150..300).map(window_event).collect::<Vec<_>>());
    produce(&topic, &window_closer());
    let second = start_server(&yaml);
    let imported = run_ok(&[
        "import-state",
        "--server",
        &second.url,
        "--input",
        export_arg,
    ]);
    assert_eq!(imported.trim(), "counts");
    let again = run(&[
        "import-state",
        "--server",
        &second.url,
        "--input",
        export_arg,
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );
    let expected = window_oracle(&topic);
    assert_eq!(output_rows(&out, expected.len()), expected);
}

#[test]
fn savepoints_and_imports_refuse_what_they_cannot_do_safely() {
    let server = start_server(&config_yaml(""));
    // A job reading only a generator keeps no checkpoints: its savepoint says so.
    let app = "CREATE STREAM g WITH ('source' = 'generator:trades?rate=50');\n\
               START JOB gen AS SELECT symbol FROM g;";
    deploy(&server, app);
    eventually("the generator job to run", || {
        (records_in(&server, "gen") > 0).then_some(())
    });
    let (status, body) = call(
        "POST",
        &format!("{}/jobs/gen/savepoint", server.url),
        None,
        None,
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("keeps no checkpoints"),
        "{body}"
    );
    // An import whose job id would name a folder outside the jobs' folder is refused whole.
    let export = serde_json::json!({
        "format": "velostream-state", "version": 1, "jobs": [{
            "definition": {
                "id": "..", "consumer_group": "g", "restart_policy": "never",
                "continuous": true, "desired": "running",
                "job": {
                    "name": "..", "sql": "SELECT 1", "query": "SELECT 1", "input_topic": null,
                    "sink_topic": null, "sink_format": null, "sink_key": null, "dlq_topic": null,
                    "delivery": null, "location": {"line": 1, "column": 1}
                }
            },
            "checkpoint": null
        }]
    })
    .to_string();
    let (status, body) = call(
        "POST",
        &format!("{}/state", server.url),
        None,
        Some(&export),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("not a plain name"),
        "{body}"
    );
    let (_, jobs) = call("GET", &format!("{}/jobs", server.url), None, None);
    assert_eq!(json(&jobs)["jobs"].as_array().unwrap().len(), 1, "{jobs}");
}

#[test]
fn a_memory_limit_annotation_caps_that_jobs_state() {
    let server = start_server(&config_yaml("sql:\n  restart_policy: never\n"));
    let orders = unique_topic("capped");
    create_topic(&orders, 1);
    // 2 000 distinct keys of an updating aggregate: far more than 16 KiB of state.
    produce(
        &orders,
        &(0..2000)
            .map(|n| Rec::value(format!(r#"{{"k":"key-{n}","v":{n}}}"#)))
            .collect::<Vec<_>>(),
    );
    deploy(
        &server,
        &format!(
            "CREATE STREAM o (k VARCHAR, v BIGINT) WITH ('topic' = '{orders}');\n\
             -- JOB: capped\n-- MEMORY_LIMIT: 16KiB\n\
             SELECT k, SUM(v) AS total FROM o GROUP BY k;\n\
             -- JOB: free\n\
             SELECT k, COUNT(*) AS n FROM o GROUP BY k;\n"
        ),
    );
    let job = eventually("the capped job to fail", || {
        let (_, body) = call("GET", &format!("{}/jobs/capped", server.url), None, None);
        let j = json(&body);
        (j["status"] == "failed").then_some(j)
    });
    let error = job["last_error"].as_str().unwrap();
    assert!(error.contains("16384"), "{error}");
    // The other job of the file keeps the server's limit and runs on.
    let (_, body) = call("GET", &format!("{}/jobs/free", server.url), None, None);
    assert_eq!(json(&body)["status"], "running", "{body}");
}

#[test]
fn the_guides_monitoring_routes_answer_with_their_views() {
    let server = start_server(&config_yaml(""));
    let orders = unique_topic("mon");
    create_topic(&orders, 1);
    produce(&orders, &[Rec::value(r#"{"k":"a","v":1}"#)]);
    deploy(
        &server,
        &format!(
            "CREATE STREAM o (k VARCHAR, v BIGINT) WITH ('topic' = '{orders}');\n\
             -- JOB: totals\nSELECT k, SUM(v) AS total FROM o GROUP BY k;\n"
        ),
    );
    let memory = eventually("the job's state in /metrics/memory", || {
        let (status, body) = call("GET", &format!("{}/metrics/memory", server.url), None, None);
        assert_eq!(status, 200, "{body}");
        let m = json(&body);
        (m["jobs"][0]["state_rows"].as_u64() >= Some(1)).then_some(m)
    });
    assert_eq!(memory["jobs"][0]["job_id"], "totals");
    assert!(
        memory["process_resident_bytes"].as_u64().unwrap() > 1_000_000,
        "{memory}"
    );
    assert!(memory["state_bytes"].as_u64().unwrap() > 0, "{memory}");
    let (status, body) = call("GET", &format!("{}/health/kafka", server.url), None, None);
    assert_eq!(status, 200, "{body}");
    let kafka = json(&body);
    assert_eq!(kafka["status"], "ok");
    assert!(kafka["topics"].as_u64().unwrap() >= 1, "{kafka}");
    // Ad-hoc queries are timed: one that answers, one that fails.
    call(
        "POST",
        &format!("{}/sql", server.url),
        None,
        Some(r#"{"sql":"SELECT 1 AS x"}"#),
    );
    call(
        "POST",
        &format!("{}/sql", server.url),
        None,
        Some(r#"{"sql":"SELECT nope FROM nowhere"}"#),
    );
    let (_, body) = call(
        "GET",
        &format!("{}/metrics/queries/performance", server.url),
        None,
        None,
    );
    let performance = json(&body);
    assert_eq!(
        (
            performance["count"].as_u64(),
            performance["failed"].as_u64()
        ),
        (Some(2), Some(1)),
        "{body}"
    );
    assert!(performance["p95_ms"].as_u64().is_some(), "{body}");
    let (_, body) = call(
        "GET",
        &format!("{}/metrics/queries/slow", server.url),
        None,
        None,
    );
    let slow = json(&body);
    assert_eq!(slow["queries"].as_array().unwrap().len(), 2, "{body}");
    let performance = eventually("the job's latency in /metrics/performance", || {
        let (_, body) = call(
            "GET",
            &format!("{}/metrics/performance", server.url),
            None,
            None,
        );
        let p = json(&body);
        p["jobs"][0]["batch_latency_ms"]["p99"].as_f64().map(|_| p)
    });
    assert_eq!(performance["jobs"][0]["job_id"], "totals");
    assert_eq!(performance["jobs"][0]["records_in"], 1);
    let (_, body) = call("GET", &format!("{}/metrics/report", server.url), None, None);
    let report = json(&body);
    assert_eq!(report["jobs"][0]["job_id"], "totals", "{body}");
    assert_eq!(report["queries"]["count"], 2, "{body}");
    let (_, body) = call("GET", &format!("{}/metrics/health", server.url), None, None);
    let health = json(&body);
    assert_eq!(
        (
            health["status"].as_str(),
            health["jobs"]["running"].as_u64()
        ),
        (Some("ok"), Some(1)),
        "{body}"
    );
    // The job's one partition, read to its end.
    let kafka = eventually("the job's partition in /metrics/kafka", || {
        let (_, body) = call("GET", &format!("{}/metrics/kafka", server.url), None, None);
        let k = json(&body);
        (k["jobs"][0]["partitions"][0]["lag"] == 0).then_some(k)
    });
    let partition = &kafka["jobs"][0]["partitions"][0];
    assert_eq!(
        (
            partition["stream"].as_str(),
            partition["partition"].as_i64(),
            partition["offset"].as_i64(),
            partition["end_offset"].as_i64()
        ),
        (Some("o"), Some(0), Some(1), Some(1)),
        "{kafka}"
    );
    let (status, prometheus) = call(
        "GET",
        &format!("{}/metrics/prometheus", server.url),
        None,
        None,
    );
    assert_eq!(status, 200);
    assert!(prometheus.contains("velo_active_jobs"), "{prometheus}");
}

#[test]
fn a_separate_metrics_port_serves_prometheus_text_and_nothing_else() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = start_server(&config_yaml(&format!("server:\n  metrics_port: {port}\n")));
    // A request on the API, counted, then seen on the metrics port.
    assert_eq!(
        call("GET", &format!("{}/jobs", server.url), None, None).0,
        200
    );
    let metrics = format!("http://127.0.0.1:{port}");
    let text = eventually("the metrics port", || {
        let (status, text) = call("GET", &format!("{metrics}/metrics"), None, None);
        (status == 200 && text.contains("velo_http_requests_total")).then_some(text)
    });
    assert!(text.contains("route=\"/jobs\""), "{text}");
    assert_eq!(
        call("GET", &format!("{metrics}/metrics/prometheus"), None, None).0,
        200
    );
    assert_eq!(call("GET", &format!("{metrics}/health"), None, None).0, 200);
    // Only metrics there: the API stays on its own port.
    assert_eq!(call("GET", &format!("{metrics}/jobs"), None, None).0, 404);
}
