//! Followed responses — `/sql` with `follow`, `/jobs/{id}/output` and `/logs` with
//! `follow=true`: lines as they come, a heartbeat when nothing comes, and an end when the server
//! shuts down.
//!
//! The heartbeat (an empty line for NDJSON, a comment for server-sent events, every
//! [`HEARTBEAT`]) makes the server write to an idle connection, so a client that went away is
//! noticed within a second or two: the response is dropped, and with it whatever the follower
//! held (a followed query's thread and its concurrency slot, through [`StopOnDrop`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{broadcast, mpsc, watch};
use velo_connectors::codec::EncodedRows;

/// How often an idle follower writes a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Where a follower's lines come from.
pub enum Feed {
    /// A followed query's rows, one JSON line each.
    Lines(mpsc::Receiver<String>),
    /// A job's result batches.
    Rows(broadcast::Receiver<Arc<EncodedRows>>),
    /// A job's log lines.
    Logs(broadcast::Receiver<String>),
}

impl Feed {
    /// The next text to send (whole lines, each ending in `\n`); `None` when the feed ended.
    async fn next(&mut self) -> Option<String> {
        loop {
            match self {
                Feed::Lines(rx) => return rx.recv().await.map(|line| line + "\n"),
                Feed::Rows(rx) => match rx.recv().await {
                    Ok(rows) => {
                        let mut text = String::with_capacity(rows.bytes.len() + rows.len());
                        for row in rows.iter() {
                            text.push_str(&String::from_utf8_lossy(row));
                            text.push('\n');
                        }
                        return Some(text);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                },
                Feed::Logs(rx) => match rx.recv().await {
                    Ok(line) => return Some(format!("{line}\n")),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                },
            }
        }
    }
}

/// Sets a stop switch when dropped: the follower's response is gone.
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How lines are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Newline-delimited JSON; the heartbeat is an empty line.
    Lines,
    /// Server-sent events (`data: …`); the heartbeat is a comment.
    Events,
}

impl Framing {
    fn heartbeat(self) -> &'static str {
        match self {
            Framing::Lines => "\n",
            Framing::Events => ": heartbeat\n\n",
        }
    }

    fn frame(self, text: String) -> String {
        match self {
            Framing::Lines => text,
            Framing::Events => text.lines().map(|l| format!("data: {l}\n\n")).collect(),
        }
    }
}

/// The body of a followed response: `feed`'s lines, heartbeats while it is quiet, ending when
/// the feed ends or `shutdown` turns true. `guard` is dropped with the response.
pub fn follow(
    feed: Feed,
    framing: Framing,
    shutdown: watch::Receiver<bool>,
    guard: Option<StopOnDrop>,
) -> impl Stream<Item = Result<String, std::io::Error>> + Send {
    struct State {
        feed: Feed,
        shutdown: watch::Receiver<bool>,
        _guard: Option<StopOnDrop>,
    }
    let state = State {
        feed,
        shutdown,
        _guard: guard,
    };
    futures::stream::unfold(state, move |mut state| async move {
        if *state.shutdown.borrow() {
            return None;
        }
        let State { feed, shutdown, .. } = &mut state;
        let text = tokio::select! {
            next = feed.next() => framing.frame(next?),
            _ = tokio::time::sleep(HEARTBEAT) => framing.heartbeat().to_string(),
            _ = shutdown.changed() => return None,
        };
        Some((Ok(text), state))
    })
}
