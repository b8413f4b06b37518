//! Where a worker's results go: to the daemon's sinks and committer, or
//! into replay's log.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::durable::committer::{CommitQueue, Turn};
use crate::durable::sink::Control;
use crate::durable::store::{Entry, NewEntry, Part, Store};
use crate::ops::health::Health;
use crate::pipeline::worker::staging::Staged;

/// What the worker is run by.
pub(crate) enum Mode {
    /// The daemon: each turn's scores go to the sinks at once, its changes
    /// to the committer, which acknowledges the telemetry once they are
    /// durable.
    Daemon(Daemon),
    /// `lineguard replay`: what each turn would publish is kept, in order,
    /// each with the input message that caused it; nothing is stored.
    Replay(ReplayLog),
}

/// The daemon's side of a worker.
pub(crate) struct Daemon {
    /// The pipeline's place in `health`.
    pub index: usize,
    pub store: Arc<Store>,
    pub committer: CommitQueue,
    /// Scores, alarm states and shadow scores, for the sink.
    pub entries: mpsc::UnboundedSender<Vec<Entry>>,
    /// Sparkplug records, for the Edge Node's sink.
    pub sparkplug: Option<mpsc::UnboundedSender<Vec<Entry>>>,
    /// Dead letters and drift summaries, for the sink.
    pub control: mpsc::Sender<Control>,
    pub health: Arc<Health>,
}

/// Replay's side of a worker.
#[derive(Debug, Default)]
pub(crate) struct ReplayLog {
    /// The number of the input message being handled.
    pub cause: u64,
    /// What the turns so far would have published.
    pub kept: Vec<(u64, NewEntry)>,
    /// The recording's time of the last idle sweep.
    pub swept_ms: Option<i64>,
}

impl Daemon {
    /// Hand a turn over: its new scores to the sinks at once (numbered by
    /// the store), then its changes and the acknowledgements they release
    /// to the committer, waiting for room in its queue (`waiting` is called
    /// meanwhile).
    pub(crate) fn hand_over(
        &self,
        staged: &mut Staged,
        windows: Vec<(Arc<str>, Vec<u8>)>,
        waiting: impl FnMut(),
    ) {
        let published = staged.published.drain(..).map(|(_, e)| e).collect();
        let (entries, sparkplug) = (&self.entries, &self.sparkplug);
        let (scores, ()) = self.store.reserve(published, |committed| {
            let (records, plain): (Vec<Entry>, Vec<Entry>) = committed.into_iter().partition(|e| e.sparkplug);
            if !plain.is_empty() {
                let _ = entries.send(plain);
            }
            if let (Some(tx), false) = (sparkplug, records.is_empty()) {
                let _ = tx.send(records);
            }
        });
        let part = Part { windows, forget: std::mem::take(&mut staged.forget), scores };
        let turn = Turn { part, acks: std::mem::take(&mut staged.acks) };
        self.committer.send(turn, waiting);
    }
}
