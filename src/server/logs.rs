//! Per-job logs: the lines a job logs (bad records, warnings, errors) and what the job manager
//! says about it (started, failed, restarting), kept per job for `/jobs/{id}/logs`.
//!
//! A job runs inside a `job` span carrying its id; [`JobLogLayer`] (installed in the binary's
//! tracing subscriber) copies every event logged inside such a span to that job's buffer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{span, Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The target of the job manager's own lines (started, stopped, failed…): already in the job's
/// log, so [`JobLogLayer`] does not copy them again.
pub const LIFECYCLE: &str = "velostream::job";

/// A job's recent log lines and a channel of new ones.
pub struct LogBuffer {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
    live: broadcast::Sender<String>,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            live: broadcast::channel(256).0,
        }
    }

    /// Appends a line, stamped with the time.
    pub fn push(&self, level: &str, message: &str) {
        let line = format!("{} {level:>5} {message}", now());
        let mut lines = self.lines.lock().expect("log lock");
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line.clone());
        let _ = self.live.send(line);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().expect("log lock");
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.live.subscribe()
    }
}

/// The time now, as the server writes it (RFC 3339, milliseconds, UTC).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Log buffers by job id.
fn buffers() -> &'static Mutex<HashMap<String, Arc<LogBuffer>>> {
    static BUFFERS: OnceLock<Mutex<HashMap<String, Arc<LogBuffer>>>> = OnceLock::new();
    BUFFERS.get_or_init(Default::default)
}

/// Makes events inside `job` spans with `id` go to `buffer`.
pub fn register(id: &str, buffer: Arc<LogBuffer>) {
    buffers()
        .lock()
        .expect("log registry lock")
        .insert(id.to_string(), buffer);
}

pub fn unregister(id: &str) {
    buffers().lock().expect("log registry lock").remove(id);
}

/// Copies events inside `job` spans to the job's [`LogBuffer`].
pub struct JobLogLayer;

struct JobId(String);

#[derive(Default)]
struct Fields {
    id: Option<String>,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "id" => self.id = Some(value.to_string()),
            "message" => self.message.push_str(value),
            other => self.message.push_str(&format!(" {other}={value}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "id" => self.id = Some(format!("{value:?}").trim_matches('"').to_string()),
            "message" => self.message.push_str(&format!("{value:?}")),
            other => self.message.push_str(&format!(" {other}={value:?}")),
        }
    }
}

impl<S> Layer<S> for JobLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "job" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(job), Some(span)) = (fields.id, ctx.span(id)) {
            span.extensions_mut().insert(JobId(job));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() == LIFECYCLE {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            let extensions = span.extensions();
            let Some(JobId(job)) = extensions.get::<JobId>() else {
                continue;
            };
            let buffer = buffers()
                .lock()
                .expect("log registry lock")
                .get(job)
                .cloned();
            if let Some(buffer) = buffer {
                let mut fields = Fields::default();
                event.record(&mut fields);
                buffer.push(event.metadata().level().as_str(), &fields.message);
            }
            return;
        }
    }
}
