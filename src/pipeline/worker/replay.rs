//! The worker as `lineguard replay` drives it ([`Mode::Replay`]): the
//! daemon's whole path (decode, assembly, windows, model, states, alarms,
//! explanations), fed message by message (or row by row) on the
//! recording's clock; what each turn would publish is kept for the caller,
//! with the input message that caused it. Nothing is stored, and drift
//! summaries (on the wall clock) go nowhere.

use super::{Mode, Worker, SWEEP_EVERY};
use crate::durable::store::NewEntry;
use crate::ingest::decode::missing_features;
use crate::ingest::reject::Rejection;
use crate::ops::events::pipeline::Tally;
use crate::pipeline::{Inbound, Pipeline};

impl Worker {
    fn replay_log(&mut self) -> &mut super::ReplayLog {
        match &mut self.mode {
            Mode::Replay(log) => log,
            Mode::Daemon(_) => panic!("a daemon worker is not replayed"),
        }
    }

    /// One recorded message, taken as the daemon's worker takes it. Its
    /// windows are scored when the batch fills, or at
    /// [`Worker::take_published`]; idle devices are evicted on the
    /// recording's clock (`received_ms`), as the daemon does on its own.
    /// `cause` numbers the message: see [`Worker::take_published`].
    pub(crate) fn replay(&mut self, cause: u64, msg: Inbound) {
        self.replay_log().cause = cause;
        self.replay_clock(msg.received_ms);
        self.read(msg);
        self.report_evicted();
    }

    /// One row of a table, for `device`, as though a message on `topic`
    /// received at `received_ms` carried it: `Ok((ts, values))`, values in
    /// card order and NaN for an empty cell, or why the row cannot be read.
    /// Without a sampling clock a row with an empty cell is rejected, as a
    /// JSON sample without that feature is.
    pub(crate) fn replay_row(
        &mut self,
        cause: u64,
        topic: &str,
        device: &str,
        received_ms: i64,
        row: Result<(i64, &[f64]), Rejection>,
    ) {
        self.replay_log().cause = cause;
        self.replay_clock(received_ms);
        self.events.received(0);
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
        self.window_rows(&msg, device);
        self.report_evicted();
    }

    /// The daemon's idle sweep, every `SWEEP_EVERY` of the recording's time.
    fn replay_clock(&mut self, now_ms: i64) {
        let every = SWEEP_EVERY.as_millis() as i64;
        let log = self.replay_log();
        if log.swept_ms.is_none_or(|t| now_ms.saturating_sub(t) >= every) {
            log.swept_ms = Some(now_ms);
            self.sweep(now_ms);
        }
    }

    /// Score the windows in hand and return what every turn so far would
    /// have published, in the order the daemon publishes it, each with the
    /// number of the input message that caused it.
    pub(crate) fn take_published(&mut self) -> Vec<(u64, NewEntry)> {
        self.score();
        self.end_turn();
        std::mem::take(&mut self.replay_log().kept)
    }

    /// What this pipeline has done so far.
    pub(crate) fn tally(&self) -> &Tally<super::Labels> {
        self.events.tally()
    }

    /// Its shadow model, if any: `name vN`, the windows it scored, and
    /// those whose state differed from the live model's.
    pub(crate) fn shadow_tally(&self) -> Option<(String, u64, u64)> {
        self.shadow.as_ref().map(|s| s.tally())
    }

    /// The pipeline it serves.
    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The names of the features its model reads, in card order.
    pub(crate) fn feature_names(&self) -> &[String] {
        &self.model.card.features
    }

    /// The devices it holds windows for.
    pub(crate) fn devices(&self) -> usize {
        self.windows.devices()
    }

    /// The features whose inputs drift from the training data now (see
    /// [`Drift::summary`](crate::pipeline::drift::Drift::summary)).
    pub(crate) fn drifting(&self) -> Vec<String> {
        self.drift.drifting(&self.model.card.features)
    }
}
