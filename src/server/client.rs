//! The command line's side of the API: `velo-sql jobs …` and `velo-sql deploy-app --server`.
//! Talks to `--server URL` (default `http://127.0.0.1:8080`, or `VELO_SERVER`) with the
//! bearer token of `VELO_API_TOKEN` when set.

use std::io::{BufRead, BufReader, Write};

use serde_json::Value;

use crate::error::{Result, VeloError};

/// A client of one server.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        // A fresh connection per call: a command makes a few calls, and a pooled connection the
        // server closed after a POST whose body it did not read fails the next call ("Peer
        // disconnected"), seen under load.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .new_agent();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: ureq::Error) -> VeloError {
        VeloError::Usage(format!("server {} is not reachable: {e}", self.base))
    }

    fn answer(&self, mut response: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let mut text = format!("{} ({status})", message);
        if let (Some(file), Some(line)) = (value.get("file"), value.get("line")) {
            text = format!(
                "{}:{}:{}: {text}",
                file.as_str().unwrap_or("?"),
                line,
                value.get("column").unwrap_or(&Value::Null)
            );
        }
        Err(if status.as_u16() == 400 || status.as_u16() == 404 {
            VeloError::Usage(text)
        } else {
            VeloError::Execution(text)
        })
    }

    /// Adds the bearer token, when there is one.
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => request.header("Authorization", format!("Bearer {t}")),
            None => request,
        }
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let request = self.authorized(self.agent.get(self.url(path)));
        let response = request.call().map_err(|e| self.unreachable(e))?;
        self.answer(response)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let request = self.authorized(self.agent.post(self.url(path)));
        let response = request.send_json(body).map_err(|e| self.unreachable(e))?;
        self.answer(response)
    }

    /// Posts `body` (a JSON document already encoded) as it is.
    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<Value> {
        let request = self
            .authorized(self.agent.post(self.url(path)))
            .header("Content-Type", "application/json");
        let response = request.send(&body[..]).map_err(|e| self.unreachable(e))?;
        self.answer(response)
    }

    /// Copies the body of `GET path` to `out`, however large; returns its length.
    pub fn download(&self, path: &str, out: &mut impl Write) -> Result<u64> {
        let request = self.authorized(self.agent.get(self.url(path)));
        let mut response = request.call().map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return self.answer(response).map(|_| 0);
        }
        let mut reader = response.body_mut().as_reader();
        Ok(std::io::copy(&mut reader, out)?)
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        let request = self.authorized(self.agent.delete(self.url(path)));
        let response = request.call().map_err(|e| self.unreachable(e))?;
        self.answer(response)
    }

    /// Copies a line stream (`/jobs/{id}/output`, `/logs`) to `out` until it ends.
    pub fn stream_lines(&self, path: &str, out: &mut impl Write) -> Result<()> {
        self.for_each_line(path, |line| {
            writeln!(out, "{line}")?;
            out.flush()?;
            Ok(())
        })
    }

    /// Calls `each` with every line of a line stream until it ends (the server's heartbeats,
    /// empty lines, left out).
    pub fn for_each_line(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        let request = self.authorized(self.agent.get(self.url(path)));
        let mut response = request.call().map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return self.answer(response).map(|_| ());
        }
        let reader = BufReader::new(response.body_mut().as_reader());
        for line in reader.lines() {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            each(&line)?;
        }
        Ok(())
    }
}

/// Prints jobs as a table: id, status, records in/out, bad records and rows, restarts, lag.
pub fn jobs_table(jobs: &[Value]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "STATUS".into(),
        "IN".into(),
        "OUT".into(),
        "ERRORS".into(),
        "RESTARTS".into(),
        "LAG".into(),
        "STARTED".into(),
    ]];
    for j in jobs {
        let field = |k: &str| match j.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(v) => v.to_string(),
        };
        rows.push([
            field("id"),
            field("status"),
            field("records_in"),
            field("records_out"),
            // Bad records and rows of every kind.
            j.get("errors")
                .and_then(Value::as_object)
                .map_or("-".into(), |kinds| {
                    kinds
                        .values()
                        .filter_map(Value::as_u64)
                        .sum::<u64>()
                        .to_string()
                }),
            field("restarts"),
            field("lag"),
            field("started_at"),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}
