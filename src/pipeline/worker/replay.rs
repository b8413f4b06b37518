//! The worker as `lineguard replay` drives it: the daemon's whole path on
//! an empty store in memory, without a committer, fed message by message
//! (or row by row) on the recording's clock; what each turn would publish
//! is kept for the caller, with the input message that caused it.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Outputs, Worker, SWEEP_EVERY};
use crate::clock::Deadline;
use crate::config::{Limits, Pipeline};
use crate::durable::store::{NewEntry, Store, StoreError};
use crate::ingest::decode::missing_features;
use crate::ingest::reject::Rejection;
use crate::model::Model;
use crate::ops::health::Health;
use crate::pipeline::Inbound;

impl Worker {
    /// A worker for `lineguard replay`: the daemon's whole path (decode,
    /// assembly, windows, model, states, alarms, explanations), on an empty
    /// store in memory and with no committer. What a turn would publish is
    /// kept, in order, for [`Worker::take_published`] (dead letters with
    /// it, after the message they refuse); nothing is stored, and drift
    /// summaries (on the wall clock) go nowhere.
    pub fn replaying(
        pipeline: Pipeline,
        model: Arc<Model>,
        shadow: Option<Arc<Model>>,
        limits: Limits,
    ) -> Result<Self, StoreError> {
        let (entries, _) = mpsc::unbounded_channel();
        let (control, _) = mpsc::channel(1);
        let out = Outputs {
            store: Arc::new(Store::in_memory()?),
            entries,
            sparkplug: None,
            control,
            dead_letter_topic: limits.dead_letter_topic.clone(),
            health: Health::new(std::slice::from_ref(&pipeline.name)),
            deadline: Deadline::default(),
        };
        Ok(Self::with(0, pipeline, model, shadow, limits, out, None))
    }

    /// Replaying: one recorded message, taken as the daemon's worker takes
    /// it. Its windows are scored when the batch fills, or at
    /// [`Worker::take_published`]; idle devices are evicted on the
    /// recording's clock (`received_ms`), as the daemon does on its own.
    /// `cause` numbers the message: see [`Worker::take_published`].
    pub fn replay(&mut self, cause: u64, msg: Inbound) {
        self.replay_cause = cause;
        self.replay_clock(msg.received_ms);
        self.handle(msg);
        self.report_evicted();
    }

    /// Replaying: one row of a table, for `device`, as though a message on
    /// `topic` received at `received_ms` carried it: `Ok((ts, values))`,
    /// values in card order and NaN for an empty cell, or why the row cannot
    /// be read. Without a sampling clock a row with an empty cell is
    /// rejected, as a JSON sample without that feature is.
    pub fn replay_row(
        &mut self,
        cause: u64,
        topic: &str,
        device: &str,
        received_ms: i64,
        row: Result<(i64, &[f64]), Rejection>,
    ) {
        self.replay_cause = cause;
        self.replay_clock(received_ms);
        self.events.received(0);
        self.out.health.counted(1, 0);
        self.decoded.clear();
        let card = &self.model.card;
        let row =
            row.and_then(|(ts, values)| match (&card.clock, missing_features(&card.features, values)) {
                (None, Some(r)) => Err(r),
                _ => Ok((ts, values)),
            });
        match row {
            Ok((ts, values)) => {
                self.decoded.ts.push(Some(ts));
                self.decoded.values.extend_from_slice(values);
            }
            Err(r) => self.decoded.rejects.push(r),
        }
        let msg = Inbound {
            topic: topic.to_string(),
            payload: bytes::Bytes::new(),
            received_ms,
            redelivered: false,
            oversize: None,
            ack: None,
        };
        self.apply_decoded(&msg, device);
        self.report_evicted();
    }

    /// Replaying: the daemon's idle sweep, every `SWEEP_EVERY` of the recording's time.
    fn replay_clock(&mut self, now_ms: i64) {
        let every = SWEEP_EVERY.as_millis() as i64;
        if now_ms.saturating_sub(self.replay_swept_ms) >= every {
            self.replay_swept_ms = now_ms;
            self.sweep_at(now_ms);
        }
    }

    /// Replaying: score the windows in hand and return what every turn so
    /// far would have published, in the order the daemon publishes it, each
    /// with the number of the input message that caused it.
    pub fn take_published(&mut self) -> Vec<(u64, NewEntry)> {
        self.score();
        self.end_turn();
        std::mem::take(&mut self.kept)
    }

    /// What this pipeline has done so far.
    pub fn tally(&self) -> &crate::ops::events::Tally {
        self.events.tally()
    }

    /// Its shadow model, if any: `name vN`, the windows it scored, and
    /// those whose state differed from the live model's.
    pub fn shadow_tally(&self) -> Option<(String, u64, u64)> {
        let s = self.shadow.as_ref()?;
        let (windows, disagreements) = s.events.tally();
        Some((format!("{} v{}", s.model.card.name, s.model.card.version), windows, disagreements))
    }

    /// The pipeline it serves.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The features its model reads, in card order.
    pub fn features(&self) -> &[String] {
        &self.model.card.features
    }

    /// The devices it holds windows for.
    pub fn devices(&self) -> usize {
        self.windows.devices()
    }

    /// The features whose inputs drift from the training data now (see
    /// [`Drift::summary`](crate::pipeline::drift::Drift::summary)).
    pub fn drifting(&self) -> Vec<String> {
        self.drift.drifting(&self.model.card.features)
    }
}
