//! Everything observable, in one place: each event writes its metric and its
//! log line together, so counters and logs never drift apart (vector's
//! `internal_events`). Every metric name is a constant in [`names`]; no
//! other module calls the `metrics` macros.
//!
//! Two shapes of event:
//! - on a hot path, a struct holding the metric handles registered once
//!   (incrementing one is an atomic add) with a method per event:
//!   [`PipelineEvents`], [`ConnectionEvents`], [`CommitEvents`], [`SinkEvents`];
//! - a rare event, a small struct whose `emit` writes both: [`ModelInService`],
//!   [`ModelReloaded`], [`ModelRefused`], [`StoreRecovered`], [`StoreCorrupt`],
//!   [`WindowsDropped`], [`WindowsUnreadable`], [`DevicesEvicted`],
//!   [`SubscriptionRefused`], [`TopicNotUtf8`].
//!
//! Warnings that input or a fault can trigger at line rate (rejected
//! samples, broker errors while it is down, refused publishes, failing
//! commits) are rate-limited per kind: the first is logged at once, the rest
//! are counted and summed up at most every `LOG_EVERY`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use tracing::{debug, error, info, warn};

use crate::durable::store::Recovery;
use crate::ingest::reject::{Reason, Rejection};
use crate::model::card::State;
use crate::mqtt::protocol::Refusal;
use crate::pipeline::window::{Reset, Unrestored};

const LOG_EVERY: Duration = Duration::from_secs(10);

pub use crate::ops::metrics::names;

/// Per-key log rate limiter.
#[derive(Debug)]
pub struct RateLimit<K> {
    seen: HashMap<K, (Instant, u64)>,
}

impl<K> Default for RateLimit<K> {
    fn default() -> Self {
        Self { seen: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq> RateLimit<K> {
    /// `Some(suppressed since last)` when a line may be logged now.
    pub fn allow(&mut self, key: K) -> Option<u64> {
        let now = Instant::now();
        match self.seen.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_EVERY => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                self.seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// " (N more since last report)", or nothing.
fn more(suppressed: u64) -> String {
    if suppressed > 0 {
        format!(" ({suppressed} more since last report)")
    } else {
        String::new()
    }
}

/// What a pipeline has done since it started, in plain numbers: for
/// `lineguard replay`'s summary (the daemon's are on `/metrics`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub messages: u64,
    pub windows: u64,
    /// By [`State`]: ok, warn, alarm.
    pub states: [u64; 3],
    /// Windows not scored (a failed run, a non-finite score).
    pub failed: u64,
    pub duplicates: u64,
    /// By [`Reason::ALL`]'s order.
    pub rejected: [u64; Reason::ALL.len()],
}

impl Tally {
    /// The reasons that rejected something, with their counts.
    pub fn rejections(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.into_iter().zip(self.rejected).filter(|(_, n)| *n > 0)
    }
}

/// Events of one pipeline, owned by its worker thread.
pub struct PipelineEvents {
    pipeline: String,
    tally: Tally,
    rejects: RateLimit<Reason>,
    duplicate_lines: RateLimit<()>,
    duplicates: Counter,
    messages: Counter,
    bytes: Counter,
    windows: Counter,
    batch_size: Histogram,
    inference: Histogram,
    states: [Counter; 3],
    devices: Gauge,
    /// By [`Reset`], registered at start so that each shows 0 until it happens.
    resets: Vec<Counter>,
}

impl std::fmt::Debug for PipelineEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineEvents").field("pipeline", &self.pipeline).finish()
    }
}

impl PipelineEvents {
    pub fn new(pipeline: &str) -> Self {
        let p = pipeline.to_string();
        let state = |s: State| counter!(names::SCORES, "pipeline" => p.clone(), "state" => s.as_str());
        Self {
            pipeline: p.clone(),
            tally: Tally::default(),
            rejects: RateLimit::default(),
            duplicate_lines: RateLimit::default(),
            duplicates: counter!(names::DUPLICATES, "pipeline" => p.clone()),
            messages: counter!(names::MESSAGES, "pipeline" => p.clone()),
            bytes: counter!(names::MESSAGE_BYTES, "pipeline" => p.clone()),
            windows: counter!(names::WINDOWS_SCORED, "pipeline" => p.clone()),
            batch_size: histogram!(names::BATCH_SIZE, "pipeline" => p.clone()),
            inference: histogram!(names::INFERENCE_SECONDS, "pipeline" => p.clone()),
            states: [state(State::Ok), state(State::Warn), state(State::Alarm)],
            devices: gauge!(names::DEVICES, "pipeline" => p.clone()),
            resets: Reset::ALL
                .iter()
                .map(|r| counter!(names::WINDOW_RESETS, "pipeline" => p.clone(), "reason" => r.as_str()))
                .collect(),
        }
    }

    /// Device windows started again (a gap in their data): counted; not a
    /// fault, so logged at debug level.
    pub fn windows_reset(&self, reason: Reset, windows: u64) {
        self.resets[reason as usize].increment(windows);
        debug!(pipeline = %self.pipeline, reason = reason.as_str(), windows, "windows started again");
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn received(&mut self, bytes: usize) {
        self.tally.messages += 1;
        self.messages.increment(1);
        self.bytes.increment(bytes as u64);
    }

    /// A sample or payload refused, with its reason.
    pub fn rejected(&mut self, topic: &str, r: &Rejection) {
        if let Some(i) = Reason::ALL.iter().position(|x| *x == r.reason) {
            self.tally.rejected[i] += 1;
        }
        counter!(names::REJECTED, "pipeline" => self.pipeline.clone(), "reason" => r.reason.as_str())
            .increment(1);
        if let Some(suppressed) = self.rejects.allow(r.reason) {
            warn!(
                pipeline = %self.pipeline,
                %topic,
                reason = r.reason.as_str(),
                "sample rejected: {}{}",
                r.detail,
                more(suppressed)
            );
        }
    }

    /// A sample already applied came again (a redelivery after a reconnect
    /// or a restart): counted, not rejected.
    pub fn duplicate(&mut self, device: &str, ts: i64) {
        self.tally.duplicates += 1;
        self.duplicates.increment(1);
        if let Some(suppressed) = self.duplicate_lines.allow(()) {
            debug!(pipeline = %self.pipeline, %device, ts, suppressed, "duplicate sample skipped (already applied)");
        }
    }

    pub fn scored(&mut self, windows: usize, seconds: f64) {
        self.tally.windows += windows as u64;
        self.windows.increment(windows as u64);
        self.batch_size.record(windows as f64);
        self.inference.record(seconds);
    }

    pub fn state(&mut self, state: State) {
        self.tally.states[state as usize] += 1;
        self.states[state as usize].increment(1);
    }

    pub fn devices(&self, n: usize) {
        self.devices.set(n as f64);
    }

    /// A model run failed or produced NaN/inf: those windows are not published.
    pub fn inference_failed(&mut self, windows: usize, detail: &str) {
        self.tally.failed += windows as u64;
        counter!(names::INFERENCE_ERRORS, "pipeline" => self.pipeline.clone()).increment(1);
        counter!(names::WINDOWS_FAILED, "pipeline" => self.pipeline.clone()).increment(windows as u64);
        error!(pipeline = %self.pipeline, windows, "inference failed, windows not scored: {detail}");
    }

    /// A dead letter did not fit the sink's queue: it is not published.
    pub fn dead_letter_dropped(&self) {
        DeadLetterDropped.emit();
    }

    /// The occlusion run failed: those windows are published unexplained.
    pub fn explanation_failed(&self, windows: usize, detail: &str) {
        counter!(names::INFERENCE_ERRORS, "pipeline" => self.pipeline.clone()).increment(1);
        error!(pipeline = %self.pipeline, windows, "explanation run failed, windows published unexplained: {detail}");
    }
}

/// A pipeline's input drift: per feature, its weighted mean and standard
/// deviation and the values outside the card's range.
pub struct DriftEvents {
    mean: Vec<Gauge>,
    std: Vec<Gauge>,
    out_of_range: Vec<Counter>,
}

impl DriftEvents {
    /// Registered at start: NaN (no value yet) and 0.
    pub fn new(pipeline: &str, features: &[String]) -> Self {
        let per = |name: &'static str| -> Vec<Gauge> {
            features
                .iter()
                .map(|f| {
                    let g = gauge!(name, "pipeline" => pipeline.to_string(), "feature" => f.clone());
                    g.set(f64::NAN);
                    g
                })
                .collect()
        };
        Self {
            mean: per(names::FEATURE_MEAN_Z),
            std: per(names::FEATURE_STD_Z),
            out_of_range: features
                .iter()
                .map(|f| counter!(names::FEATURE_OUT_OF_RANGE, "pipeline" => pipeline.to_string(), "feature" => f.clone()))
                .collect(),
        }
    }

    /// The current moments (`None`: no value yet) and new out-of-range counts.
    pub fn update(&self, current: &[Option<crate::pipeline::drift::FeatureDrift>], out_of_range: &[u64]) {
        for (i, d) in current.iter().enumerate() {
            let (m, s) = d.map_or((f64::NAN, f64::NAN), |d| (d.mean_z, d.std_z));
            self.mean[i].set(m);
            self.std[i].set(s);
        }
        for (c, n) in self.out_of_range.iter().zip(out_of_range) {
            c.increment(*n);
        }
    }

    /// The summary says which features drift (logged when that changes).
    pub fn drifting(pipeline: &str, now: &[String], before: &[String]) {
        if now != before {
            if now.is_empty() {
                info!(%pipeline, "input drift: no feature drifts any more");
            } else {
                warn!(%pipeline, features = %now.join(","), "input drift: {} no longer look like the training data", now.join(", "));
            }
        }
    }
}

/// A pipeline's shadow model: windows scored, state disagreements with
/// the live model, and |shadow - live| per shared score.
pub struct ShadowEvents {
    windows: Counter,
    disagreements: Counter,
    diffs: Vec<Option<Histogram>>,
    /// (windows, disagreements), in plain numbers, for `lineguard replay`'s summary.
    tally: std::cell::Cell<(u64, u64)>,
}

impl ShadowEvents {
    /// `shared[i]`: the live score the shadow's i-th score is compared with.
    pub fn new(pipeline: &str, shadow_scores: &[String], shared: &[Option<usize>]) -> Self {
        Self {
            windows: counter!(names::SHADOW_WINDOWS, "pipeline" => pipeline.to_string()),
            disagreements: counter!(names::SHADOW_DISAGREEMENTS, "pipeline" => pipeline.to_string()),
            diffs: shadow_scores
                .iter()
                .zip(shared)
                .map(|(name, live)| {
                    live.map(|_| histogram!(names::SHADOW_ABS_DIFF, "pipeline" => pipeline.to_string(), "score" => name.clone()))
                })
                .collect(),
            tally: Default::default(),
        }
    }

    /// Windows the shadow scored, and those whose state differed from the live one's.
    pub fn tally(&self) -> (u64, u64) {
        self.tally.get()
    }

    pub fn scored(&self, disagrees: bool, diffs: impl Iterator<Item = (usize, f64)>) {
        let (windows, disagreements) = self.tally.get();
        self.tally.set((windows + 1, disagreements + u64::from(disagrees)));
        self.windows.increment(1);
        if disagrees {
            self.disagreements.increment(1);
        }
        for (i, d) in diffs {
            if let Some(Some(h)) = self.diffs.get(i) {
                h.record(d);
            }
        }
    }

    pub fn failed(pipeline: &str, windows: usize, detail: &str) {
        warn!(%pipeline, windows, "shadow model run failed; the live scores are published as usual: {detail}");
    }
}

/// Which of the daemon's broker connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionName {
    /// Intake and our PUBACKs for it.
    Telemetry,
    /// Scores, status and dead letters.
    Publisher,
    /// The Sparkplug Edge Node's.
    Sparkplug,
}

impl ConnectionName {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionName::Telemetry => "telemetry",
            ConnectionName::Publisher => "scores",
            ConnectionName::Sparkplug => "sparkplug",
        }
    }
}

/// Events of one broker connection.
#[derive(Debug)]
pub struct ConnectionEvents {
    name: ConnectionName,
    connected: Gauge,
    reconnects: Counter,
    errors: RateLimit<()>,
    down_since: Option<Instant>,
}

impl ConnectionEvents {
    pub fn new(name: ConnectionName) -> Self {
        Self {
            name,
            connected: gauge!(names::CONNECTION_UP, "connection" => name.as_str()),
            reconnects: counter!(names::CONNECTION_RECONNECTS, "connection" => name.as_str()),
            errors: RateLimit::default(),
            down_since: None,
        }
    }

    pub fn connected(&mut self, host: &str, port: u16, session_present: bool) {
        self.connected.set(1.0);
        let after = self.down_since.take().map(|t| format!(" after {:.1} s down", t.elapsed().as_secs_f64()));
        info!(
            connection = self.name.as_str(),
            %host,
            port,
            session_present,
            "connected to broker{}",
            after.unwrap_or_default()
        );
    }

    pub fn connection_failed(&mut self, error: &str, retry_in: Duration) {
        self.connected.set(0.0);
        self.reconnects.increment(1);
        self.down_since.get_or_insert_with(Instant::now);
        if let Some(suppressed) = self.errors.allow(()) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more failures since last report)")
            } else {
                String::new()
            };
            warn!(
                connection = self.name.as_str(),
                "broker connection lost or refused: {error}; retrying in {:.1} s{more}",
                retry_in.as_secs_f64()
            );
        }
    }
}

/// A pipeline's committer: its commit times, and its failures, logged
/// once, then at most every `LOG_EVERY`, then when commits resume.
pub struct CommitEvents {
    pipeline: String,
    seconds: Histogram,
    errors: Counter,
    lines: RateLimit<()>,
    failing_since: Option<Instant>,
    attempts: u64,
}

impl CommitEvents {
    pub fn new(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            seconds: histogram!(names::COMMIT_SECONDS, "pipeline" => pipeline.to_string()),
            errors: counter!(names::COMMIT_ERRORS, "pipeline" => pipeline.to_string()),
            lines: RateLimit::default(),
            failing_since: None,
            attempts: 0,
        }
    }

    pub fn committed(&self, seconds: f64) {
        self.seconds.record(seconds);
    }

    /// The store refused a commit; nothing is acknowledged until one succeeds.
    pub fn failed(&mut self, why: &str, turns: usize) {
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
    pub fn resumed(&mut self) {
        if let Some(since) = self.failing_since.take() {
            info!(
                pipeline = %self.pipeline,
                attempts = std::mem::take(&mut self.attempts),
                "commits resumed after {:.1} s of failures; nothing was lost",
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// A stop gave up on commits that kept failing.
    pub fn abandoned(&self, turns: usize) {
        warn!(
            pipeline = %self.pipeline,
            turns,
            "stop: giving up on commits that keep failing; their telemetry stays unacknowledged \
             and the broker delivers it again at the next start"
        );
    }
}

/// Why the sink dropped an unpublished score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Beyond `state.outbox_max_bytes`.
    Bytes,
    /// Older than `state.outbox_max_age_secs`.
    Age,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::Bytes, DropReason::Age];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Bytes => "bytes",
            DropReason::Age => "age",
        }
    }
}

/// Events of the publishing sink (the outbox).
pub struct SinkEvents {
    published: Counter,
    alarms: Counter,
    scores: Gauge,
    bytes: Gauge,
    drop_lines: RateLimit<DropReason>,
    refusal_lines: RateLimit<Refusal>,
    delete_lines: RateLimit<()>,
}

impl Default for SinkEvents {
    fn default() -> Self {
        Self {
            published: counter!(names::SCORES_PUBLISHED),
            alarms: counter!(names::ALARMS_PUBLISHED),
            scores: gauge!(names::OUTBOX_SCORES),
            bytes: gauge!(names::OUTBOX_BYTES),
            drop_lines: RateLimit::default(),
            refusal_lines: RateLimit::default(),
            delete_lines: RateLimit::default(),
        }
    }
}

impl SinkEvents {
    /// The broker acknowledged a score (JSON or Sparkplug) or, with
    /// `alarm`, an alarm.
    pub fn published(&self, alarm: bool) {
        if alarm { &self.alarms } else { &self.published }.increment(1);
    }

    /// What the outbox holds.
    pub fn level(&self, scores: usize, bytes: u64) {
        self.scores.set(scores as f64);
        self.bytes.set(bytes as f64);
    }

    /// The outbox was full: its oldest unpublished score is gone.
    pub fn dropped(&mut self, topic: &str, reason: DropReason) {
        counter!(names::OUTBOX_DROPPED, "reason" => reason.as_str()).increment(1);
        if let Some(suppressed) = self.drop_lines.allow(reason) {
            warn!(%topic, "outbox full ({}): oldest unpublished score dropped{}", reason.as_str(), more(suppressed));
        }
    }

    /// The broker refused a publish (MQTT 5 reason code): the score is lost,
    /// counted apart from published ones.
    pub fn refused(&mut self, topic: &str, why: Refusal) {
        counter!(names::PUBLISHES_REFUSED, "reason" => why.as_str()).increment(1);
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
    pub fn delete_failed(&mut self, why: &str) {
        if let Some(suppressed) = self.delete_lines.allow(()) {
            warn!(suppressed, "outbox: cannot delete acknowledged scores yet (retrying): {why}");
        }
    }

    /// A dead letter did not fit the sink's queue.
    pub fn dead_letter_dropped(&self) {
        DeadLetterDropped.emit();
    }
}

/// A dead letter that was not published (its queue was full).
struct DeadLetterDropped;

impl DeadLetterDropped {
    fn emit(self) {
        counter!(names::DEAD_LETTERS_DROPPED).increment(1);
    }
}

/// `lineguard_model_info{pipeline,model,version,sha256}`: 1 for the model in service, 0 for one retired.
pub struct ModelInService<'a> {
    pub pipeline: &'a str,
    pub model: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
    pub in_service: bool,
}

impl ModelInService<'_> {
    pub fn emit(self) {
        gauge!(
            names::MODEL_INFO,
            "pipeline" => self.pipeline.to_string(),
            "model" => self.model.to_string(),
            "version" => self.version.to_string(),
            "sha256" => self.sha256.to_string()
        )
        .set(if self.in_service { 1.0 } else { 0.0 });
    }
}

/// A new model passed its checks and goes into service.
pub struct ModelReloaded<'a> {
    pub pipeline: &'a str,
    pub model: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
}

impl ModelReloaded<'_> {
    pub fn emit(self) {
        counter!(names::MODEL_RELOADS, "pipeline" => self.pipeline.to_string(), "result" => "ok")
            .increment(1);
        let ModelReloaded { pipeline, model, version, sha256 } = self;
        info!(%pipeline, %model, %version, %sha256, "new model passed its checks; swapping it in");
    }
}

/// A changed model or card failed its checks; the old model keeps serving.
pub struct ModelRefused<'a> {
    pub pipeline: &'a str,
    pub path: &'a std::path::Path,
    pub why: &'a str,
}

impl ModelRefused<'_> {
    pub fn emit(self) {
        counter!(names::MODEL_RELOADS, "pipeline" => self.pipeline.to_string(), "result" => "refused")
            .increment(1);
        error!(
            pipeline = %self.pipeline,
            model = %self.path.display(),
            "new model refused, the current one keeps serving: {}",
            self.why
        );
    }
}

/// Why the state store, or all it held, was set aside.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Discarded {
    /// The file could not be opened as a database (moved aside).
    Unreadable,
    /// Its last commit was damaged and rolled back (windows dropped).
    RolledBack,
    /// Found corrupt while running (the process exits).
    CorruptAtRunTime,
}

impl Discarded {
    pub(crate) const ALL: [Discarded; 3] =
        [Discarded::Unreadable, Discarded::RolledBack, Discarded::CorruptAtRunTime];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Discarded::Unreadable => "unreadable",
            Discarded::RolledBack => "rolled_back",
            Discarded::CorruptAtRunTime => "corrupt_at_run_time",
        }
    }

    fn count(self) {
        counter!(names::STATE_STORE_DISCARDED, "reason" => self.as_str()).increment(1);
    }
}

/// What opening the state store found and did (see `store::Recovery`).
pub struct StoreRecovered<'a> {
    pub path: &'a std::path::Path,
    pub recovery: &'a Recovery,
}

impl StoreRecovered<'_> {
    pub fn emit(self) {
        let (path, r) = (self.path, self.recovery);
        if let Some((aside, why)) = &r.moved_aside {
            Discarded::Unreadable.count();
            error!(
                store = %path.display(),
                moved_to = %aside.display(),
                "state store could not be opened ({why}); moved aside and started fresh: lost are the \
                 window tails of every device (each scores again once its window refills), the scores \
                 not yet published, and the Sparkplug bdSeq"
            );
        }
        if r.rolled_back {
            Discarded::RolledBack.count();
            error!(
                store = %path.display(),
                "state store: its last commit was damaged and rolled back; the stored windows may lack \
                 acknowledged samples, so every one is dropped"
            );
        }
        if r.outbox_dropped > 0 {
            counter!(names::STATE_DROPPED, "kind" => "outbox", "reason" => "checksum")
                .increment(r.outbox_dropped as u64);
            error!(
                store = %path.display(),
                entries = r.outbox_dropped,
                "outbox entries failed their check and were dropped: those scores are not published"
            );
        }
    }
}

/// The store turned out corrupt at run time: nothing can be made durable in
/// it any more. Exit, so that systemd restarts the daemon and the start
/// moves the file aside (unacknowledged telemetry is redelivered then).
pub struct StoreCorrupt<'a> {
    pub pipeline: &'a str,
    pub why: &'a str,
}

impl StoreCorrupt<'_> {
    pub fn emit(self) -> ! {
        Discarded::CorruptAtRunTime.count();
        error!(
            pipeline = %self.pipeline,
            "state store is corrupt ({}); exiting so that the next start sets it aside and starts fresh",
            self.why
        );
        std::process::exit(1)
    }
}

/// Stored windows that could not be trusted at start-up and were dropped,
/// by reason: one line per pipeline, however many devices.
pub struct WindowsDropped<'a> {
    pub pipeline: &'a str,
    pub by_reason: &'a BTreeMap<Unrestored, usize>,
    pub kept: usize,
}

impl WindowsDropped<'_> {
    pub fn emit(self) {
        let mut total = 0;
        for (reason, n) in self.by_reason {
            counter!(names::STATE_DROPPED, "kind" => "window", "reason" => reason.as_str())
                .increment(*n as u64);
            total += n;
        }
        let reasons: Vec<String> =
            self.by_reason.iter().map(|(r, n)| format!("{} {n}", r.as_str())).collect();
        warn!(
            pipeline = %self.pipeline,
            dropped = total,
            kept = self.kept,
            "stored windows dropped, not trusted ({}); those devices score again once their windows refill",
            reasons.join(", ")
        );
    }
}

/// The store's windows could not be read at all: every device starts empty.
pub struct WindowsUnreadable<'a> {
    pub pipeline: &'a str,
    pub why: &'a str,
}

impl WindowsUnreadable<'_> {
    pub fn emit(self) {
        counter!(names::STATE_DROPPED, "kind" => "window", "reason" => "unreadable").increment(1);
        error!(pipeline = %self.pipeline, "cannot read the stored windows, every device starts empty: {}", self.why);
    }
}

/// Why devices were evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// Silent for `limits.device_idle_secs`.
    Idle,
    /// The device cap (`limits.max_devices_per_pipeline`) was reached.
    Capacity,
}

impl EvictReason {
    pub const ALL: [EvictReason; 2] = [EvictReason::Idle, EvictReason::Capacity];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::Idle => "idle",
            EvictReason::Capacity => "capacity",
        }
    }
}

/// Devices evicted (their windows dropped).
pub struct DevicesEvicted<'a> {
    pub pipeline: &'a str,
    pub reason: EvictReason,
    pub devices: usize,
}

impl DevicesEvicted<'_> {
    pub fn emit(self) {
        let reason = self.reason.as_str();
        counter!(names::DEVICES_EVICTED, "pipeline" => self.pipeline.to_string(), "reason" => reason)
            .increment(self.devices as u64);
        let (pipeline, devices) = (self.pipeline, self.devices);
        match self.reason {
            EvictReason::Capacity => warn!(
                %pipeline,
                devices,
                "device cap reached (limits.max_devices_per_pipeline): least recently seen devices evicted"
            ),
            EvictReason::Idle => info!(%pipeline, devices, "idle devices evicted"),
        }
    }
}

/// The broker refused a subscription: nothing comes in on it.
pub struct SubscriptionRefused<'a> {
    pub filter: &'a str,
}

impl SubscriptionRefused<'_> {
    pub fn emit(self) {
        counter!(names::SUBSCRIPTIONS_REFUSED).increment(1);
        let filter = self.filter;
        error!(%filter, "the broker refused the subscription to {filter}: no telemetry comes in on it; check its ACL");
    }
}

/// A message whose topic is not UTF-8 (MQTT 5 hands topics over as bytes):
/// no pipeline can take it; it is acknowledged, counted and logged.
pub struct TopicNotUtf8;

impl TopicNotUtf8 {
    pub fn emit(self) {
        static LIMIT: LazyLock<Mutex<RateLimit<()>>> = LazyLock::new(Default::default);
        counter!(names::UNROUTABLE, "reason" => "topic_not_utf8").increment(1);
        let allowed = LIMIT.lock().map(|mut l| l.allow(())).unwrap_or(Some(0));
        if let Some(suppressed) = allowed {
            warn!(suppressed, "message dropped: its topic is not UTF-8");
        }
    }
}
