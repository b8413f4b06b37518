//! Everything observable, in one place: each event emits its metric and its
//! log line together, so counters and logs never drift apart.
//!
//! Warnings that input can trigger at line rate (rejected samples, broker
//! errors while it is down) are rate-limited per kind: the first is logged at
//! once, the rest are counted and summarised at most every `LOG_EVERY`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use tracing::{error, info, warn};

use crate::ingest::reject::{Reason, Rejection};
use crate::model::card::State;

const LOG_EVERY: Duration = Duration::from_secs(10);

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

/// Events of one pipeline, owned by its worker thread. The per-message
/// metrics are registered once: incrementing them is an atomic add.
pub struct PipelineEvents {
    pipeline: String,
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
}

impl std::fmt::Debug for PipelineEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineEvents").field("pipeline", &self.pipeline).finish()
    }
}

impl PipelineEvents {
    pub fn new(pipeline: &str) -> Self {
        let p = pipeline.to_string();
        let state =
            |s: &'static str| counter!("lineguard_scores_total", "pipeline" => p.clone(), "state" => s);
        Self {
            pipeline: p.clone(),
            rejects: RateLimit::default(),
            duplicate_lines: RateLimit::default(),
            duplicates: counter!("lineguard_duplicates_total", "pipeline" => p.clone()),
            messages: counter!("lineguard_messages_total", "pipeline" => p.clone()),
            bytes: counter!("lineguard_message_bytes_total", "pipeline" => p.clone()),
            windows: counter!("lineguard_windows_scored_total", "pipeline" => p.clone()),
            batch_size: histogram!("lineguard_batch_size", "pipeline" => p.clone()),
            inference: histogram!("lineguard_inference_seconds", "pipeline" => p.clone()),
            states: [state("ok"), state("warn"), state("alarm")],
            devices: gauge!("lineguard_devices", "pipeline" => p.clone()),
        }
    }

    pub fn received(&self, bytes: usize) {
        self.messages.increment(1);
        self.bytes.increment(bytes as u64);
    }

    pub fn rejected(&mut self, topic: &str, r: &Rejection) {
        counter!("lineguard_rejected_total", "pipeline" => self.pipeline.clone(), "reason" => r.reason.as_str())
            .increment(1);
        if let Some(suppressed) = self.rejects.allow(r.reason) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more since last report)")
            } else {
                String::new()
            };
            warn!(pipeline = %self.pipeline, %topic, reason = r.reason.as_str(), "sample rejected: {}{more}", r.detail);
        }
    }

    /// A sample already applied came again (a redelivery after a reconnect
    /// or a restart): counted, not rejected.
    pub fn duplicate(&mut self, device: &str, ts: i64) {
        self.duplicates.increment(1);
        if let Some(suppressed) = self.duplicate_lines.allow(()) {
            tracing::debug!(pipeline = %self.pipeline, %device, ts, suppressed, "duplicate sample skipped (already applied)");
        }
    }

    pub fn scored(&self, windows: usize, seconds: f64) {
        self.windows.increment(windows as u64);
        self.batch_size.record(windows as f64);
        self.inference.record(seconds);
    }

    pub fn state(&self, state: State) {
        self.states[state as usize].increment(1);
    }

    pub fn devices(&self, n: usize) {
        self.devices.set(n as f64);
    }

    /// A model run failed or produced NaN/inf: those windows are not published.
    pub fn inference_failed(&self, windows: usize, detail: &str) {
        counter!("lineguard_inference_errors_total", "pipeline" => self.pipeline.clone()).increment(1);
        counter!("lineguard_windows_failed_total", "pipeline" => self.pipeline.clone())
            .increment(windows as u64);
        error!(pipeline = %self.pipeline, windows, "inference failed, windows not scored: {detail}");
    }
}

/// Events of the broker connection.
#[derive(Debug)]
pub struct ConnectionEvents {
    /// `telemetry` (intake), `publisher` (scores and status) or `sparkplug`
    /// (the Edge Node's).
    name: &'static str,
    connected: Gauge,
    reconnects: Counter,
    errors: RateLimit<&'static str>,
    down_since: Option<Instant>,
}

impl ConnectionEvents {
    pub fn telemetry() -> Self {
        Self::new("telemetry", "lineguard_broker_connected", "lineguard_broker_reconnects_total")
    }

    pub fn publisher() -> Self {
        Self::new("publisher", "lineguard_publisher_connected", "lineguard_publisher_reconnects_total")
    }

    pub fn sparkplug() -> Self {
        Self::new("sparkplug", "lineguard_sparkplug_connected", "lineguard_sparkplug_reconnects_total")
    }

    fn new(name: &'static str, connected: &'static str, reconnects: &'static str) -> Self {
        Self {
            name,
            connected: gauge!(connected),
            reconnects: counter!(reconnects),
            errors: RateLimit::default(),
            down_since: None,
        }
    }

    pub fn connected(&mut self, host: &str, port: u16, session_present: bool) {
        self.connected.set(1.0);
        let after = self.down_since.take().map(|t| format!(" after {:.1} s down", t.elapsed().as_secs_f64()));
        info!(connection = self.name, %host, port, session_present, "connected to broker{}", after.unwrap_or_default());
    }

    pub fn connection_failed(&mut self, error: &str, retry_in: Duration) {
        self.connected.set(0.0);
        self.reconnects.increment(1);
        self.down_since.get_or_insert_with(Instant::now);
        if let Some(suppressed) = self.errors.allow("connection") {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more failures since last report)")
            } else {
                String::new()
            };
            warn!(
                connection = self.name,
                "broker connection lost or refused: {error}; retrying in {:.1} s{more}",
                retry_in.as_secs_f64()
            );
        }
    }
}

/// A new model passed its checks and goes into service.
pub fn model_loaded(pipeline: &str, model: &str, version: &str, sha256: &str) {
    counter!("lineguard_model_reloads_total", "pipeline" => pipeline.to_string(), "result" => "ok")
        .increment(1);
    info!(%pipeline, %model, %version, %sha256, "new model passed its checks; swapping it in");
}

/// A changed model or card failed its checks; the old model keeps serving.
pub fn model_refused(pipeline: &str, path: &std::path::Path, why: &str) {
    counter!("lineguard_model_reloads_total", "pipeline" => pipeline.to_string(), "result" => "refused")
        .increment(1);
    error!(%pipeline, model = %path.display(), "new model refused, the current one keeps serving: {why}");
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
            seconds: histogram!("lineguard_commit_seconds", "pipeline" => pipeline.to_string()),
            errors: counter!("lineguard_commit_errors_total", "pipeline" => pipeline.to_string()),
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

/// The store turned out corrupt at run time: nothing can be made durable in
/// it any more. Exit, so that systemd restarts the daemon and the start
/// moves the file aside (unacknowledged telemetry is redelivered then).
pub fn store_corrupt(pipeline: &str, why: &str) -> ! {
    counter!("lineguard_state_store_discarded_total", "reason" => "corrupt_at_run_time").increment(1);
    error!(
        %pipeline,
        "state store is corrupt ({why}); exiting so that the next start sets it aside and starts fresh"
    );
    std::process::exit(1)
}

/// Stored windows that could not be trusted at start-up and were dropped,
/// by reason: one line per pipeline, however many devices.
pub fn windows_dropped(
    pipeline: &str,
    by_reason: &std::collections::BTreeMap<&'static str, usize>,
    kept: usize,
) {
    let mut total = 0;
    for (reason, n) in by_reason {
        counter!("lineguard_state_dropped_total", "kind" => "window", "reason" => *reason)
            .increment(*n as u64);
        total += n;
    }
    let reasons: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
    warn!(
        %pipeline,
        dropped = total,
        kept,
        "stored windows dropped, not trusted ({}); those devices score again once their windows refill",
        reasons.join(", ")
    );
}

/// The store's windows could not be read at all: every device starts empty.
pub fn windows_unreadable(pipeline: &str, why: &str) {
    counter!("lineguard_state_dropped_total", "kind" => "window", "reason" => "unreadable").increment(1);
    error!(%pipeline, "cannot read the stored windows, every device starts empty: {why}");
}

/// What opening the state store found and did (see `store::Recovery`).
pub fn store_recovered(path: &std::path::Path, r: &crate::durable::store::Recovery) {
    if let Some((aside, why)) = &r.moved_aside {
        counter!("lineguard_state_store_discarded_total", "reason" => "unreadable").increment(1);
        error!(
            store = %path.display(),
            moved_to = %aside.display(),
            "state store could not be opened ({why}); moved aside and started fresh: lost are the \
             window tails of every device (each scores again once its window refills), the scores \
             not yet published, and the Sparkplug bdSeq"
        );
    }
    if r.rolled_back {
        counter!("lineguard_state_store_discarded_total", "reason" => "rolled_back").increment(1);
        error!(
            store = %path.display(),
            "state store: its last commit was damaged and rolled back; the stored windows may lack \
             acknowledged samples, so every one is dropped"
        );
    }
    if r.outbox_dropped > 0 {
        counter!("lineguard_state_dropped_total", "kind" => "outbox", "reason" => "checksum")
            .increment(r.outbox_dropped as u64);
        error!(
            store = %path.display(),
            entries = r.outbox_dropped,
            "outbox entries failed their check and were dropped: those scores are not published"
        );
    }
}

/// Devices evicted, `why` = `idle` or `capacity` (the device cap was reached).
pub fn evicted(pipeline: &str, why: &'static str, n: usize) {
    counter!("lineguard_devices_evicted_total", "pipeline" => pipeline.to_string(), "reason" => why)
        .increment(n as u64);
    if why == "capacity" {
        warn!(%pipeline, devices = n, "device cap reached (limits.max_devices_per_pipeline): least recently seen devices evicted");
    } else {
        info!(%pipeline, devices = n, "idle devices evicted");
    }
}

/// `lineguard_model_info{pipeline,model,version,sha256}`: 1 for the model in service.
pub fn model_info(pipeline: &str, model: &str, version: &str, sha256: &str, in_service: bool) {
    gauge!(
        "lineguard_model_info",
        "pipeline" => pipeline.to_string(),
        "model" => model.to_string(),
        "version" => version.to_string(),
        "sha256" => sha256.to_string()
    )
    .set(if in_service { 1.0 } else { 0.0 });
}

/// The broker refused a publish (MQTT 5 reason code): the score is lost,
/// counted apart from published ones. Logged once per reason per 10 s.
pub fn publish_refused(topic: &str, why: &'static str, lines: &mut RateLimit<&'static str>) {
    counter!("lineguard_publishes_refused_total", "reason" => why).increment(1);
    if let Some(suppressed) = lines.allow(why) {
        error!(
            %topic,
            reason = why,
            suppressed,
            "the broker refused a publish to {topic} ({why}): that score is lost; check the broker's \
             ACL for the score connection"
        );
    }
}

/// The broker refused a subscription: nothing comes in on it.
pub fn subscription_refused(filter: &str) {
    counter!("lineguard_subscriptions_refused_total").increment(1);
    error!(%filter, "the broker refused the subscription to {filter}: no telemetry comes in on it; check its ACL");
}

/// A message whose topic is not UTF-8 (MQTT 5 hands topics over as bytes):
/// no pipeline can take it; it is acknowledged, counted and logged.
pub fn topic_not_utf8() {
    static LIMIT: std::sync::LazyLock<std::sync::Mutex<RateLimit<()>>> =
        std::sync::LazyLock::new(Default::default);
    counter!("lineguard_unroutable_total", "reason" => "topic_not_utf8").increment(1);
    let allowed = LIMIT.lock().map(|mut l| l.allow(())).unwrap_or(Some(0));
    if let Some(suppressed) = allowed {
        warn!(suppressed, "message dropped: its topic is not UTF-8");
    }
}
