//! A pipeline's events: what its worker takes in, rejects, scores and
//! forgets; its stored windows at start-up; its model swaps; its inputs'
//! drift; its shadow model.

use std::collections::BTreeMap;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use tracing::{debug, error, info, warn};

use super::{more, names, zeroed, ByLabel, Label, RateLimit};

/// The label values a pipeline counts by, each an enum of the pipeline's
/// stages (see [`Label`]).
pub(crate) trait PipelineLabels: 'static {
    /// Why a sample or message was rejected (`lineguard_rejected_total{reason}`).
    type Rejection: Label + std::hash::Hash;
    /// A scored window's state (`lineguard_scores_total{state}`).
    type State: Label;
    /// Why a device's window started again (`lineguard_window_resets_total{reason}`).
    type Reset: Label;
    /// Why a stored window was not restored
    /// (`lineguard_state_dropped_total{kind="window",reason}`).
    type Unrestored: Label + Ord;
}

/// Why devices were evicted: the two are told apart in the log (a cap that
/// is reached is a warning, silence is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Eviction {
    /// Silent for `limits.device_idle_secs`.
    Idle,
    /// The device cap (`limits.max_devices_per_pipeline`) was reached.
    Capacity,
}

/// What a pipeline has done since it started, in plain numbers: for
/// `lineguard replay`'s summary (the daemon's are on `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tally<L: PipelineLabels> {
    pub messages: u64,
    pub windows: u64,
    /// By `L::State`, in its order.
    pub states: Vec<u64>,
    /// Windows not scored (a failed run, a non-finite score).
    pub failed: u64,
    pub duplicates: u64,
    /// By `L::Rejection`, in its order.
    rejected: Vec<u64>,
    _labels: std::marker::PhantomData<L>,
}

impl<L: PipelineLabels> Default for Tally<L> {
    fn default() -> Self {
        Tally {
            messages: 0,
            windows: 0,
            states: vec![0; L::State::ALL.len()],
            failed: 0,
            duplicates: 0,
            rejected: vec![0; L::Rejection::ALL.len()],
            _labels: std::marker::PhantomData,
        }
    }
}

impl<L: PipelineLabels> Tally<L> {
    /// The reasons that rejected something, with their counts.
    pub(crate) fn rejections(&self) -> impl Iterator<Item = (L::Rejection, u64)> + '_ {
        L::Rejection::ALL.iter().copied().zip(self.rejected.iter().copied()).filter(|(_, n)| *n > 0)
    }

    /// How many windows were in `state`.
    pub(crate) fn in_state(&self, state: L::State) -> u64 {
        self.states[state.index()]
    }
}

/// Events of one pipeline, owned by its worker thread.
pub(crate) struct PipelineEvents<L: PipelineLabels> {
    pipeline: String,
    tally: Tally<L>,
    reject_lines: RateLimit<L::Rejection>,
    duplicate_lines: RateLimit<()>,
    rejected: ByLabel<L::Rejection>,
    states: ByLabel<L::State>,
    resets: ByLabel<L::Reset>,
    unrestored: ByLabel<L::Unrestored>,
    evicted: ByLabel<Eviction>,
    duplicates: Counter,
    messages: Counter,
    bytes: Counter,
    windows: Counter,
    windows_failed: Counter,
    inference_errors: Counter,
    dead_letters_dropped: Counter,
    batch_size: Histogram,
    inference: Histogram,
    devices: Gauge,
}

impl<L: PipelineLabels> std::fmt::Debug for PipelineEvents<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineEvents").field("pipeline", &self.pipeline).finish()
    }
}

impl<L: PipelineLabels> PipelineEvents<L> {
    pub(crate) fn new(pipeline: &str) -> Self {
        let p = [("pipeline", pipeline)];
        let one = |name: &'static str| zeroed(counter!(name, "pipeline" => pipeline.to_string()));
        Self {
            pipeline: pipeline.to_string(),
            tally: Tally::default(),
            reject_lines: RateLimit::default(),
            duplicate_lines: RateLimit::default(),
            rejected: ByLabel::register(names::REJECTED, "reason", &p),
            states: ByLabel::register(names::SCORES, "state", &p),
            resets: ByLabel::register(names::WINDOW_RESETS, "reason", &p),
            unrestored: ByLabel::register(names::STATE_DROPPED, "reason", &[("kind", "window")]),
            evicted: ByLabel::register(names::DEVICES_EVICTED, "reason", &p),
            duplicates: one(names::DUPLICATES),
            messages: one(names::MESSAGES),
            bytes: one(names::MESSAGE_BYTES),
            windows: one(names::WINDOWS_SCORED),
            windows_failed: one(names::WINDOWS_FAILED),
            inference_errors: one(names::INFERENCE_ERRORS),
            dead_letters_dropped: zeroed(counter!(names::DEAD_LETTERS_DROPPED)),
            batch_size: histogram!(names::BATCH_SIZE, "pipeline" => pipeline.to_string()),
            inference: histogram!(names::INFERENCE_SECONDS, "pipeline" => pipeline.to_string()),
            devices: gauge!(names::DEVICES, "pipeline" => pipeline.to_string()),
        }
    }

    /// A roll-up was made: its index, as a gauge by roll-up and group.
    pub(crate) fn rollup(&self, rollup: &str, group: &str, index: Option<f64>) {
        gauge!(names::ROLLUP_INDEX, "rollup" => rollup.to_string(), "group" => group.to_string())
            .set(index.unwrap_or(f64::NAN));
    }

    pub(crate) fn tally(&self) -> &Tally<L> {
        &self.tally
    }

    pub(crate) fn received(&mut self, bytes: usize) {
        self.tally.messages += 1;
        self.messages.increment(1);
        self.bytes.increment(bytes as u64);
    }

    /// A sample or payload refused, with its reason.
    pub(crate) fn rejected(&mut self, topic: &str, reason: L::Rejection, detail: &str) {
        self.tally.rejected[reason.index()] += 1;
        self.rejected.add(reason, 1);
        if let Some(suppressed) = self.reject_lines.allow(reason) {
            warn!(
                pipeline = %self.pipeline,
                %topic,
                reason = reason.as_str(),
                "sample rejected: {detail}{}",
                more(suppressed)
            );
        }
    }

    /// A sample already applied came again (a redelivery after a reconnect
    /// or a restart): counted, not rejected.
    pub(crate) fn duplicate(&mut self, device: &str, ts: i64) {
        self.tally.duplicates += 1;
        self.duplicates.increment(1);
        if let Some(suppressed) = self.duplicate_lines.allow(()) {
            debug!(pipeline = %self.pipeline, %device, ts, suppressed, "duplicate sample skipped (already applied)");
        }
    }

    /// Device windows started again (a gap in their data): counted; not a
    /// fault, so logged at debug level.
    pub(crate) fn windows_reset(&self, reason: L::Reset, windows: u64) {
        self.resets.add(reason, windows);
        debug!(pipeline = %self.pipeline, reason = reason.as_str(), windows, "windows started again");
    }

    /// One model run of `windows` windows took `seconds`.
    pub(crate) fn scored(&mut self, windows: usize, seconds: f64) {
        self.tally.windows += windows as u64;
        self.windows.increment(windows as u64);
        self.batch_size.record(windows as f64);
        self.inference.record(seconds);
    }

    pub(crate) fn state(&mut self, state: L::State) {
        self.tally.states[state.index()] += 1;
        self.states.add(state, 1);
    }

    /// Devices with a window in memory.
    pub(crate) fn devices(&self, n: usize) {
        self.devices.set(n as f64);
    }

    /// A model run failed or produced NaN/inf: those windows are not published.
    pub(crate) fn inference_failed(&mut self, windows: usize, detail: &str) {
        self.tally.failed += windows as u64;
        self.inference_errors.increment(1);
        self.windows_failed.increment(windows as u64);
        error!(pipeline = %self.pipeline, windows, "inference failed, windows not scored: {detail}");
    }

    /// The occlusion run failed: those windows are published unexplained.
    pub(crate) fn explanation_failed(&self, windows: usize, detail: &str) {
        self.inference_errors.increment(1);
        error!(pipeline = %self.pipeline, windows, "explanation run failed, windows published unexplained: {detail}");
    }

    /// A dead letter did not fit the sink's queue: it is not published.
    pub(crate) fn dead_letter_dropped(&self) {
        self.dead_letters_dropped.increment(1);
    }

    /// Devices silent for `limits.device_idle_secs` were evicted (their windows dropped).
    pub(crate) fn evicted_idle(&self, devices: usize) {
        self.evicted.add(Eviction::Idle, devices as u64);
        info!(pipeline = %self.pipeline, devices, "idle devices evicted");
    }

    /// The device cap was reached: the least recently seen devices were evicted.
    pub(crate) fn evicted_at_capacity(&self, devices: usize) {
        self.evicted.add(Eviction::Capacity, devices as u64);
        warn!(
            pipeline = %self.pipeline,
            devices,
            "device cap reached (limits.max_devices_per_pipeline): least recently seen devices evicted"
        );
    }

    /// Windows restored from the state store at start-up; `alarms_dropped`
    /// of them had alarm states or forecast buckets that could not be
    /// trusted (made for other scores, or damaged): those start afresh.
    pub(crate) fn windows_restored(&self, devices: usize, alarms_dropped: usize) {
        info!(pipeline = %self.pipeline, devices, "windows restored from the state store");
        if alarms_dropped > 0 {
            warn!(
                pipeline = %self.pipeline,
                devices = alarms_dropped,
                "stored alarm states or forecast buckets dropped (made for other scores, or damaged): these devices start them afresh (their next windows publish their alarm state)"
            );
        }
    }

    /// Stored windows that could not be trusted at start-up and were
    /// dropped, by reason: one line however many devices.
    pub(crate) fn windows_dropped(&self, by_reason: &BTreeMap<L::Unrestored, usize>, kept: usize) {
        let mut total = 0;
        for (reason, n) in by_reason {
            self.unrestored.add(*reason, *n as u64);
            total += n;
        }
        let reasons: Vec<String> = by_reason.iter().map(|(r, n)| format!("{} {n}", r.as_str())).collect();
        warn!(
            pipeline = %self.pipeline,
            dropped = total,
            kept,
            "stored windows dropped, not trusted ({}); those devices score again once their windows refill",
            reasons.join(", ")
        );
    }

    /// The store's windows could not be read at all (`reason`): every device starts empty.
    pub(crate) fn windows_unreadable(&self, reason: L::Unrestored, why: &str) {
        self.unrestored.add(reason, 1);
        error!(pipeline = %self.pipeline, "cannot read the stored windows, every device starts empty: {why}");
    }

    /// A checked model went into service between two batches.
    pub(crate) fn model_swapped(
        &self,
        from: &dyn std::fmt::Display,
        to: &dyn std::fmt::Display,
        windows_kept: bool,
    ) {
        info!(pipeline = %self.pipeline, from = %from, to = %to, windows_kept, "model swapped");
    }

    /// A new shadow model went into service.
    pub(crate) fn shadow_swapped(&self, model: &impl super::model::Identity) {
        let (name, version, sha256) = (model.name(), model.version(), model.sha256());
        info!(pipeline = %self.pipeline, model = %name, %version, %sha256, "shadow model swapped");
    }

    /// A new shadow model reads other input than the live model: refused.
    pub(crate) fn shadow_refused(&self, path: &std::path::Path) {
        error!(
            pipeline = %self.pipeline,
            model = %path.display(),
            "new shadow model refused: it must read what the live model reads (features, window, sampling clock)"
        );
    }

    /// A new live model reads other input than the shadow: shadow scoring stops.
    pub(crate) fn shadow_stopped(&self) {
        warn!(pipeline = %self.pipeline, "the new live model reads other input than the shadow model: shadow scoring stops");
    }
}

/// A pipeline's input drift: per feature, its weighted mean and standard
/// deviation and the values outside the card's range.
pub(crate) struct DriftEvents {
    pipeline: String,
    mean: Vec<Gauge>,
    std: Vec<Gauge>,
    out_of_range: Vec<Counter>,
}

impl DriftEvents {
    /// Registered at start: NaN (no value yet) and 0.
    pub(crate) fn new(pipeline: &str, features: &[String]) -> Self {
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
            pipeline: pipeline.to_string(),
            mean: per(names::FEATURE_MEAN_Z),
            std: per(names::FEATURE_STD_Z),
            out_of_range: features
                .iter()
                .map(|f| zeroed(counter!(names::FEATURE_OUT_OF_RANGE, "pipeline" => pipeline.to_string(), "feature" => f.clone())))
                .collect(),
        }
    }

    /// Each feature's current moments, `(mean, std)` in training z-units
    /// (`None`: no value yet), and its new out-of-range counts.
    pub(crate) fn update(&self, moments: impl Iterator<Item = Option<(f64, f64)>>, out_of_range: &[u64]) {
        for (i, d) in moments.enumerate() {
            let (m, s) = d.unwrap_or((f64::NAN, f64::NAN));
            self.mean[i].set(m);
            self.std[i].set(s);
        }
        for (c, n) in self.out_of_range.iter().zip(out_of_range) {
            c.increment(*n);
        }
    }

    /// The summary says which features drift (logged when that changes).
    pub(crate) fn drifting(&self, now: &[String], before: &[String]) {
        let pipeline = &self.pipeline;
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
pub(crate) struct ShadowEvents {
    pipeline: String,
    windows: Counter,
    disagreements: Counter,
    diffs: Vec<Option<Histogram>>,
    /// (windows, disagreements), in plain numbers, for `lineguard replay`'s summary.
    tally: (u64, u64),
}

impl ShadowEvents {
    /// `shared[i]`: the live score the shadow's i-th score is compared with.
    pub(crate) fn new(pipeline: &str, shadow_scores: &[String], shared: &[Option<usize>]) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            windows: zeroed(counter!(names::SHADOW_WINDOWS, "pipeline" => pipeline.to_string())),
            disagreements: zeroed(counter!(names::SHADOW_DISAGREEMENTS, "pipeline" => pipeline.to_string())),
            diffs: shadow_scores
                .iter()
                .zip(shared)
                .map(|(name, live)| {
                    live.map(|_| histogram!(names::SHADOW_ABS_DIFF, "pipeline" => pipeline.to_string(), "score" => name.clone()))
                })
                .collect(),
            tally: (0, 0),
        }
    }

    /// Windows the shadow scored, and those whose state differed from the live one's.
    pub(crate) fn tally(&self) -> (u64, u64) {
        self.tally
    }

    /// The shadow scored a window; `disagrees` when its state differs from
    /// the live model's; `diffs`: (shadow score, |shadow - live|).
    pub(crate) fn scored(&mut self, disagrees: bool, diffs: impl Iterator<Item = (usize, f64)>) {
        self.tally.0 += 1;
        self.tally.1 += u64::from(disagrees);
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

    /// The shadow's run failed: the live scores are published as usual.
    pub(crate) fn failed(&self, windows: usize, detail: &str) {
        let pipeline = &self.pipeline;
        warn!(%pipeline, windows, "shadow model run failed; the live scores are published as usual: {detail}");
    }
}
