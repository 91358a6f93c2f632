//! What the server remembers of its recent requests, for the monitoring routes: refused
//! requests (`/security/events`) and ad-hoc queries with their durations
//! (`/metrics/queries/slow`, `/metrics/queries/performance`). Each is a bounded ring: the
//! oldest entries go first, memory stays fixed.

use std::collections::VecDeque;
use std::sync::Mutex;

/// The last `capacity` entries.
pub struct Recent<T> {
    entries: Mutex<VecDeque<T>>,
    capacity: usize,
}

impl<T: Clone> Recent<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&self, entry: T) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Oldest first.
    pub fn all(&self) -> Vec<T> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// A request the server refused for who sent it or how much it asked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SecurityEvent {
    pub at: String,
    /// `unauthorized` (401), `too_large` (413) or `too_many_queries` (429).
    pub kind: &'static str,
    pub method: String,
    /// The route as declared (`/jobs/{id}`), never the caller's path or headers.
    pub route: String,
}

/// One ad-hoc query (`POST /sql`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryRecord {
    pub at: String,
    /// The first 200 characters of the SQL.
    pub sql: String,
    pub format: String,
    pub status: u16,
    pub duration_ms: u64,
}

/// Now, as RFC 3339 UTC.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
