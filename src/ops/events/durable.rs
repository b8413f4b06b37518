//! Durability's events: the state store opened, reopened or found corrupt;
//! a pipeline's group commits; the sink's publishes, refusals and drops.

use std::path::Path;
use std::time::Instant;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use tracing::{error, info, warn};

use super::{more, names, zeroed, ByLabel, Label, RateLimit};

/// Why the state store, or all it held, was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Discarded {
    /// The file could not be opened as a database (moved aside).
    Unreadable,
    /// Its last commit was damaged and rolled back (windows dropped).
    RolledBack,
    /// Found corrupt while running (the daemon stops).
    CorruptAtRunTime,
}

/// The state store's events (one handle for the daemon's store).
pub(crate) struct StoreEvents {
    path: String,
    discarded: ByLabel<Discarded>,
    /// `lineguard_state_dropped_total{kind="outbox",reason="checksum"}`.
    outbox_dropped: Counter,
}

impl StoreEvents {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.display().to_string(),
            discarded: ByLabel::register(names::STATE_STORE_DISCARDED, "reason", &[]),
            outbox_dropped: zeroed(
                counter!(names::STATE_DROPPED, "kind" => "outbox", "reason" => "checksum"),
            ),
        }
    }

    /// The file could not be opened (`why`) and was moved to `aside`.
    pub(crate) fn moved_aside(&self, aside: &Path, why: &str) {
        self.discarded.add(Discarded::Unreadable, 1);
        error!(
            store = %self.path,
            moved_to = %aside.display(),
            "state store could not be opened ({why}); moved aside and started fresh: lost are the \
             window tails of every device (each scores again once its window refills), the scores \
             not yet published, and the Sparkplug bdSeq"
        );
    }

    /// Its last commit was damaged and rolled back at open.
    pub(crate) fn rolled_back(&self) {
        self.discarded.add(Discarded::RolledBack, 1);
        error!(
            store = %self.path,
            "state store: its last commit was damaged and rolled back; the stored windows may lack \
             acknowledged samples, so every one is dropped"
        );
    }

    /// Outbox entries that failed their check at open.
    pub(crate) fn outbox_dropped(&self, entries: usize) {
        self.outbox_dropped.increment(entries as u64);
        error!(
            store = %self.path,
            entries,
            "outbox entries failed their check and were dropped: those scores are not published"
        );
    }

    /// The store's file was opened again after an I/O error.
    pub(crate) fn reopened(&self) {
        info!(path = %self.path, "state store reopened");
    }

    /// A reopen rolled back a commit: the stored windows are removed and
    /// written again from memory.
    pub(crate) fn rolled_back_while_running(&self, cleared: &dyn std::fmt::Debug) {
        error!(
            ?cleared,
            "state store: reopening it rolled back its last commit; stored windows removed and written again \
             from memory (scores waiting in the outbox may be published twice or, after a crash, lost)"
        );
    }
}

/// A pipeline's committer: its commit times, and its failures, logged
/// once, then at most every [`LOG_EVERY`](super::LOG_EVERY), then when commits resume.
pub(crate) struct CommitEvents {
    pipeline: String,
    seconds: Histogram,
    errors: Counter,
    corrupt: Counter,
    lines: RateLimit<()>,
    failing_since: Option<Instant>,
    attempts: u64,
}

impl CommitEvents {
    pub(crate) fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            seconds: histogram!(names::COMMIT_SECONDS, "pipeline" => pipeline.to_string()),
            errors: zeroed(counter!(names::COMMIT_ERRORS, "pipeline" => pipeline.to_string())),
            corrupt: counter!(names::STATE_STORE_DISCARDED, "reason" => Discarded::CorruptAtRunTime.as_str()),
            lines: RateLimit::default(),
            failing_since: None,
            attempts: 0,
        }
    }

    pub(crate) fn committed(&self, seconds: f64) {
        self.seconds.record(seconds);
    }

    /// The store refused a commit; nothing is acknowledged until one succeeds.
    pub(crate) fn failed(&mut self, why: &str, turns: usize) {
        self.errors.increment(1);
        self.attempts += 1;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if let Some(suppressed) = self.lines.allow(()) {
            error!(
                pipeline = %self.pipeline,
                turns,
                failing_for_secs = since.elapsed().as_secs(),
                suppressed,
                "cannot commit state (retrying every second; telemetry is not acknowledged meanwhile, \
                 so the broker keeps it): {why}"
            );
        }
    }

    /// A commit succeeded after failures.
    pub(crate) fn resumed(&mut self) {
        if let Some(since) = self.failing_since.take() {
            info!(
                pipeline = %self.pipeline,
                attempts = std::mem::take(&mut self.attempts),
                "commits resumed after {:.1} s of failures; nothing was lost",
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// The store turned out corrupt at run time: nothing can be made
    /// durable in it any more, so the daemon stops (through every phase of
    /// a stop) and the next start sets the file aside.
    pub(crate) fn corrupt(&self, why: &str) {
        self.corrupt.increment(1);
        error!(
            pipeline = %self.pipeline,
            "state store is corrupt ({why}); stopping so that the next start sets it aside and starts fresh"
        );
    }

    /// A stop gave up on commits that kept failing.
    pub(crate) fn abandoned(&self, turns: usize) {
        warn!(
            pipeline = %self.pipeline,
            turns,
            "stop: giving up on commits that keep failing; their telemetry stays unacknowledged \
             and the broker delivers it again at the next start"
        );
    }
}

/// Why the sink dropped an unpublished score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Overflow {
    /// Beyond `state.outbox_max_bytes`.
    Bytes,
    /// Older than `state.outbox_max_age_secs`.
    Age,
}

/// Events of a publishing sink (the outbox); `R` is why the broker refuses
/// a publish (an MQTT 5 reason code).
pub(crate) struct SinkEvents<R: Label + std::hash::Hash> {
    published: Counter,
    alarms: Counter,
    scores: Gauge,
    bytes: Gauge,
    dropped: ByLabel<Overflow>,
    refused: ByLabel<R>,
    dead_letters_dropped: Counter,
    drop_lines: RateLimit<Overflow>,
    refusal_lines: RateLimit<R>,
    delete_lines: RateLimit<()>,
}

impl<R: Label + std::hash::Hash> Default for SinkEvents<R> {
    fn default() -> Self {
        Self {
            published: zeroed(counter!(names::SCORES_PUBLISHED)),
            alarms: zeroed(counter!(names::ALARMS_PUBLISHED)),
            scores: gauge!(names::OUTBOX_SCORES),
            bytes: gauge!(names::OUTBOX_BYTES),
            dropped: ByLabel::register(names::OUTBOX_DROPPED, "reason", &[]),
            refused: ByLabel::register(names::PUBLISHES_REFUSED, "reason", &[]),
            dead_letters_dropped: zeroed(counter!(names::DEAD_LETTERS_DROPPED)),
            drop_lines: RateLimit::default(),
            refusal_lines: RateLimit::default(),
            delete_lines: RateLimit::default(),
        }
    }
}

impl<R: Label + std::hash::Hash> SinkEvents<R> {
    /// The outbox holds scores from before the last stop.
    pub(crate) fn backlog(&self, scores: usize) {
        info!(scores, "outbox: scores from before the last stop will be published");
    }

    /// The broker acknowledged a score (JSON or Sparkplug) or, with
    /// `alarm`, an alarm.
    pub(crate) fn published(&self, alarm: bool) {
        if alarm { &self.alarms } else { &self.published }.increment(1);
    }

    /// What the outbox holds.
    pub(crate) fn level(&self, scores: usize, bytes: u64) {
        self.scores.set(scores as f64);
        self.bytes.set(bytes as f64);
    }

    /// The outbox was full: its oldest unpublished score is gone.
    pub(crate) fn dropped(&mut self, topic: &str, reason: Overflow) {
        self.dropped.add(reason, 1);
        if let Some(suppressed) = self.drop_lines.allow(reason) {
            warn!(%topic, "outbox full ({}): oldest unpublished score dropped{}", reason.as_str(), more(suppressed));
        }
    }

    /// The broker refused a publish (MQTT 5 reason code): the score is lost,
    /// counted apart from published ones.
    pub(crate) fn refused(&mut self, topic: &str, why: R) {
        self.refused.add(why, 1);
        if let Some(suppressed) = self.refusal_lines.allow(why) {
            error!(
                %topic,
                reason = why.as_str(),
                suppressed,
                "the broker refused a publish to {topic} ({}): that score is lost; check the broker's \
                 ACL for the score connection",
                why.as_str()
            );
        }
    }

    /// Acknowledged scores could not be deleted yet (retried).
    pub(crate) fn delete_failed(&mut self, why: &str) {
        if let Some(suppressed) = self.delete_lines.allow(()) {
            warn!(suppressed, "outbox: cannot delete acknowledged scores yet (retrying): {why}");
        }
    }

    /// A dead letter did not fit the sink's queue.
    pub(crate) fn dead_letter_dropped(&self) {
        self.dead_letters_dropped.increment(1);
    }

    /// An outbox record meant for the Sparkplug node that it cannot read.
    pub(crate) fn unreadable_record(&self, seq: u64) {
        warn!(seq, "outbox: unreadable Sparkplug record dropped");
    }

    /// The connection reported a publish that was never handed to it.
    pub(crate) fn unmatched_send(&self, pkid: u16) {
        warn!(pkid, "outbox: publish event without a matching send");
    }

    /// A stop: the drain timeout passed with scores unacknowledged.
    pub(crate) fn drain_timeout(&self, unacknowledged: usize) {
        warn!(
            unacknowledged,
            "stop: drain timeout; unpublished scores stay in the outbox for the next start"
        );
    }

    /// A stop: the last delete failed.
    pub(crate) fn last_deletes_failed(&self, scores: usize, why: &str) {
        warn!(
            scores,
            "stop: acknowledged scores stay in the outbox (published again at the next start): {why}"
        );
    }

    /// A stop: the store did not take the last deletes in time.
    pub(crate) fn last_deletes_late(&self) {
        warn!("stop: the store did not take the last deletes in time; those scores are published again at the next start");
    }

    /// A stop: `offline` (or NDEATH) could not be sent.
    pub(crate) fn farewell_unsent(&self) {
        warn!("stop: broker unreachable; the last will says `offline`");
    }
}
