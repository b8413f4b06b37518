//! One pipeline's worker: telemetry in, scores out.
//!
//! It runs on its own OS thread, off the async runtime, so inference never
//! stalls MQTT keep-alives. The loop ([`Worker::run`]) makes turns, in stages:
//! 1. **gather** the messages that arrive within `limits.batch_wait_us` of
//!    the turn's first (up to the batch limit);
//! 2. **read** each one ([`intake`]): its topic names the device, its
//!    payload decodes into rows of the card's features (or rejections);
//! 3. **window** each row ([`intake`]): into the device's window (or, on a
//!    sampling clock, its assembly), and a window that becomes due is
//!    copied straight into the batch input, normalized;
//! 4. **score** the batch in one model run, and the [`shadow`] model's
//!    ([`scoring`]);
//! 5. **stage** what each scored window publishes ([`scoring`], into
//!    [`staging`]): its score, its alarm state if that changed, its shadow
//!    score;
//! 6. **hand over**, at the turn's end, as the [`Mode`] says: in the daemon
//!    the scores go to the sinks at once and the turn's changes to the
//!    committer, which writes them in one group commit and only then
//!    acknowledges the telemetry behind them; replaying, they are kept.
//!
//! Between two turns it takes a model [`swap`], and answers `/devices`.
//! Scoring and publishing never wait for the disk. After a crash,
//! unacknowledged telemetry is redelivered and either re-applied (its
//! effect was not committed) or recognised by `ts` (it was).

mod intake;
mod mode;
mod replay;
mod scoring;
mod shadow;
mod staging;
mod swap;

pub(crate) use mode::{Daemon, Mode, ReplayLog};
pub(crate) use swap::Swap;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::durable::sink::Control;
use crate::ingest::decode::{Decoded, Decoder};
use crate::ingest::reject::Reason;
use crate::ingest::Reader;
use crate::model::card::{ModelCard, State};
use crate::model::{Model, PlanStates};
use crate::ops::events::pipeline::{DriftEvents, PipelineEvents, PipelineLabels};
use crate::pipeline::alarm::Alarms;
use crate::pipeline::batch::Batch;
use crate::pipeline::drift::Drift;
use crate::pipeline::explain::Explainer;
use crate::pipeline::forecast::{Forecast, Forecasts};
use crate::pipeline::recent::{self, PipelineView, Recent};
use crate::pipeline::render::{self, Origin};
use crate::pipeline::rollup::{Made, Rollups};
use crate::pipeline::window::{Reset, Unrestored, Windows};
use crate::pipeline::{Intake, Limits, Output, Pipeline};
use crate::sparkplug::input::SparkplugInput;
use shadow::Shadowing;
use staging::Staged;

/// The label values a pipeline's events count by.
pub(crate) struct Labels;

impl PipelineLabels for Labels {
    type Rejection = Reason;
    type State = State;
    type Reset = Reset;
    type Unrestored = Unrestored;
}

/// The HTTP listener asking for a pipeline's devices (`/devices`).
pub(crate) type ViewRequest = tokio::sync::oneshot::Sender<PipelineView>;

const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The loop goes round at least this often, idle or not: its heartbeat is
/// what the systemd watchdog and `/healthz` watch.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The windows of a pipeline serving `card`.
fn windows_for(card: &ModelCard, hop: usize, limits: &Limits) -> Windows {
    Windows::with_limits(
        card.window,
        card.features.len(),
        hop,
        limits.max_devices_per_pipeline,
        i64::try_from(limits.device_idle.as_millis()).unwrap_or(i64::MAX),
    )
    .normalizing(card.normalize.clone())
    .identified_by(card.input_fingerprint())
    .resetting_after(card.max_gap_ms)
    .on_clock(card.clock)
}

fn reader_for(card: &ModelCard, pipeline: &Pipeline, limits: &Limits) -> Reader {
    let decoder = Decoder::with_limits(
        &card.features,
        limits.max_samples_per_message,
        limits.max_keys_per_sample,
        limits.max_json_depth,
    );
    Reader::new(&pipeline.input, decoder)
}

pub(crate) struct Worker {
    pipeline: Pipeline,
    model: Arc<Model>,
    /// tract's run states for `model`, kept between batches (see [`PlanStates`]).
    states: PlanStates,
    origin: Origin,
    limits: Limits,
    /// `limits.max_future`, in the unit timestamps come in.
    max_future_ms: i64,
    mode: Mode,
    reader: Reader,
    /// For a `spBv1.0/...` input: aliases and last values per device.
    sparkplug_in: Option<SparkplugInput>,
    windows: Windows,
    events: PipelineEvents<Labels>,
    decoded: Decoded,
    /// The windows due for the next model run.
    batch: Batch,
    /// The device key of the row being offered, reused (see [`Worker::read`]).
    row_key: String,
    /// The device key the message's topic names, reused (see [`Worker::read`]).
    device_key: String,
    /// The order `window_rows` takes a message's rows in, reused.
    row_order: Vec<usize>,
    scores: Vec<f32>,
    staged: Staged,
    /// Messages and windows of the turn so far (for `/healthz`'s totals).
    turn_counts: (u64, u64),
    /// The newest sample time the turn applied (the daemon's data clock).
    turn_newest: i64,
    /// Devices evicted to make room, not yet reported.
    evicted: Vec<String>,
    alarms: Alarms,
    /// Each device's buckets of the scores that forecast, and the forecasts a window made.
    forecasts: Forecasts,
    forecast_out: Vec<(usize, Forecast)>,
    forecast_latest: Vec<Option<(i64, Forecast)>>,
    /// Each device's latest scores, by the groups its pipeline's roll-ups form.
    rollups: Rollups,
    rollup_out: Vec<Made>,
    /// Each device's latest scores, for `/devices`.
    recent: Recent,
    /// Explanations: the occluded windows of a batch, and which windows they are.
    explainer: Explainer,
    explain_rows: Vec<usize>,
    /// Per-feature errors of the batch's reconstruction scores.
    errors: Vec<f32>,
    /// Whether the inputs still look like the training data.
    drift: Drift,
    shadow: Option<Shadowing>,
    drift_events: DriftEvents,
    /// Features the last drift summary named.
    drifting: Vec<String>,
    /// The store's [`Store::windows_epoch`](crate::durable::store::Store::windows_epoch)
    /// this worker's windows were written under (in the daemon).
    windows_epoch: u64,
}

impl Worker {
    /// A worker serving `model` (and `shadow`, if any) for `pipeline`, run
    /// as `mode` says. In the daemon it starts from the windows the store holds.
    pub(crate) fn new(
        pipeline: Pipeline,
        model: Arc<Model>,
        shadow: Option<Arc<Model>>,
        limits: Limits,
        mode: Mode,
    ) -> Self {
        let card = &model.card;
        let mut w = Self {
            shadow: shadow.and_then(|s| Shadowing::new(&pipeline, s, &model)),
            reader: reader_for(card, &pipeline, &limits),
            sparkplug_in: pipeline.input.births.as_ref().map(|_| {
                SparkplugInput::new(&card.features, limits.max_devices_per_pipeline)
                    .per_value(card.clock.is_some())
            }),
            windows: windows_for(card, pipeline.hop, &limits),
            max_future_ms: i64::try_from(limits.max_future.as_millis()).unwrap_or(i64::MAX),
            events: PipelineEvents::new(&pipeline.name),
            batch: Batch::new(limits.max_batch, card.input_len()),
            row_key: String::new(),
            device_key: String::new(),
            row_order: Vec::new(),
            scores: Vec::new(),
            decoded: Decoded::default(),
            staged: Staged::default(),
            turn_counts: (0, 0),
            turn_newest: i64::MIN,
            evicted: Vec::new(),
            alarms: Alarms::default(),
            forecasts: Forecasts::default(),
            forecast_out: Vec::new(),
            forecast_latest: Vec::new(),
            rollups: Rollups::new(pipeline.rollups.clone(), card),
            rollup_out: Vec::new(),
            recent: Recent::new(model.score_count()),
            explainer: Explainer::default(),
            explain_rows: Vec::new(),
            errors: Vec::new(),
            drift: Drift::new(
                pipeline.drift.clone(),
                card.features.len(),
                card.normalize.clone(),
                card.range.clone(),
            ),
            drift_events: DriftEvents::new(&pipeline.name, &card.features),
            drifting: Vec::new(),
            origin: Origin { pipeline: pipeline.name.clone(), model: model.id.clone() },
            states: PlanStates::default(),
            windows_epoch: 0,
            mode,
            pipeline,
            model,
            limits,
        };
        w.restore();
        w
    }

    /// The input message being handled, in replay's numbering (0 in the daemon).
    fn cause(&self) -> u64 {
        match &self.mode {
            Mode::Replay(log) => log.cause,
            Mode::Daemon(_) => 0,
        }
    }

    /// In the daemon: the windows from the store, as they were at the last
    /// commit, with their devices' alarm states. A stored window that cannot be trusted (see
    /// [`Windows::restore`], and a store that rolled back a commit) is
    /// dropped; one summary line says how many and why.
    fn restore(&mut self) {
        let Mode::Daemon(d) = &self.mode else { return };
        let store = d.store.clone();
        self.windows_epoch = store.windows_epoch();
        let stored = match store.windows(&self.pipeline.name) {
            Ok(s) => s,
            Err(e) => {
                self.events.windows_unreadable(Unrestored::Unreadable, &e.to_string());
                return;
            }
        };
        let newest_allowed = crate::clock::now_ms().saturating_add(self.max_future_ms);
        let trusted = store.windows_trusted();
        let mut dropped: BTreeMap<Unrestored, usize> = BTreeMap::new();
        let (mut restored, mut alarms_dropped) = (0, 0);
        for (device, stored) in stored {
            let (rest, alarms) = Alarms::split_stored(&stored);
            let (rest, latest) = Rollups::split_stored(rest);
            let (snap, forecasts) = Forecasts::split_stored(rest);
            let result = match trusted {
                true => self.windows.restore(&device, snap, newest_allowed),
                false => Err(Unrestored::RolledBack),
            };
            match result {
                Ok(()) => {
                    restored += 1;
                    if let Some(record) = alarms {
                        if !self.alarms.restore(&device, &self.model.card.scores, record) {
                            alarms_dropped += 1;
                        }
                    }
                    let scores = self.model.card.scores.len();
                    if let Some(record) = latest {
                        if !self.rollups.restore(&self.pipeline.input.topic, &device, scores, record) {
                            alarms_dropped += 1;
                        }
                    }
                    if let Some(record) = forecasts {
                        if !self.forecasts.restore(&device, &self.model.card.scores, record) {
                            alarms_dropped += 1;
                        }
                    }
                }
                Err(reason) => {
                    *dropped.entry(reason).or_default() += 1;
                    self.staged.forget.push(device);
                }
            }
        }
        if !dropped.is_empty() {
            self.events.windows_dropped(&dropped, restored);
        }
        if restored > 0 {
            self.events.windows_restored(restored, alarms_dropped);
        }
        self.events.devices(self.windows.devices());
    }

    /// The daemon's loop: turns until `rx` closes (intake stopped), then
    /// score the batch in hand, hand it over and return. Messages still
    /// queued are not acknowledged.
    pub(crate) fn run(
        mut self,
        mut rx: mpsc::Receiver<Intake>,
        mut swaps: mpsc::Receiver<Swap>,
        mut views: mpsc::Receiver<ViewRequest>,
        rt: Handle,
    ) {
        let mut last_sweep = Instant::now();
        let mut last_drift_update = Instant::now();
        loop {
            self.beat();
            let wake = (last_sweep + SWEEP_EVERY).min(Instant::now() + HEARTBEAT);
            enum Ev {
                Msg(Option<Intake>),
                Swap(Swap),
                View(ViewRequest),
                Timer,
            }
            let ev = rt.block_on(async {
                tokio::select! {
                    biased;
                    Some(m) = swaps.recv() => Ev::Swap(m),
                    Some(v) = views.recv() => Ev::View(v),
                    m = rx.recv() => Ev::Msg(m),
                    _ = tokio::time::sleep_until(wake.into()) => Ev::Timer,
                }
            });
            match ev {
                Ev::Msg(Some(first)) => {
                    self.gather(first, &mut rx);
                    self.score();
                    self.report_evicted();
                    self.events.devices(self.windows.devices());
                }
                Ev::Msg(None) => {
                    self.score();
                    self.end_turn();
                    return;
                }
                Ev::Swap(swap) => self.take_swap(swap),
                Ev::View(reply) => {
                    let _ = reply.send(self.view());
                }
                Ev::Timer => {}
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep(crate::clock::now_ms());
            }
            if last_drift_update.elapsed() >= Duration::from_secs(1) {
                last_drift_update = Instant::now();
                self.report_drift(last_drift_update);
            }
            self.end_turn();
        }
    }

    /// The loop went round (`/healthz` and the watchdog watch it).
    fn beat(&self) {
        if let Mode::Daemon(d) = &self.mode {
            d.health.beat(d.index);
        }
    }

    /// Stage 1: handle `first` and the messages that arrive within
    /// `limits.batch_wait_us` of it, until `max_batch` windows are ready.
    /// The wait is a plain sleep of this thread (tokio's timer would round
    /// it up to whole milliseconds); if intake closes meanwhile, the run
    /// loop's next `recv` sees it.
    fn gather(&mut self, first: Intake, rx: &mut mpsc::Receiver<Intake>) {
        let deadline = Instant::now() + self.limits.batch_wait;
        self.take(first);
        loop {
            while !self.batch.is_full() {
                match rx.try_recv() {
                    Ok(intake) => self.take(intake),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if self.batch.is_full() || now >= deadline {
                return;
            }
            std::thread::sleep(deadline - now);
        }
    }

    /// Stage 6: end a turn, handing over what it staged as the mode says.
    fn end_turn(&mut self) {
        let counts = std::mem::take(&mut self.turn_counts);
        let newest = std::mem::replace(&mut self.turn_newest, i64::MIN);
        match &mut self.mode {
            Mode::Replay(log) => {
                // What the turn publishes is kept; nothing is stored.
                log.kept.append(&mut self.staged.published);
                self.staged.clear();
                self.windows.clear_dirty();
            }
            Mode::Daemon(d) => {
                d.health.counted(counts.0, counts.1);
                d.health.data_seen(newest);
                let epoch = d.store.windows_epoch();
                if epoch != self.windows_epoch {
                    // The store lost its windows: write every one again.
                    self.windows_epoch = epoch;
                    self.windows.mark_all_dirty();
                }
                if !self.staged.is_empty() || self.windows.has_dirty() {
                    let mut windows = self.windows.take_dirty();
                    for (device, snap) in &mut windows {
                        self.forecasts.store_with(device, &self.model.card.scores, snap);
                        self.rollups.store_with(device, snap);
                        self.alarms.store_with(device, &self.model.card.scores, snap);
                    }
                    let (health, index) = (&d.health, d.index);
                    d.hand_over(&mut self.staged, windows, || health.beat(index));
                }
            }
        }
    }

    /// Evict the devices idle at `now_ms` (`limits.device_idle`).
    fn sweep(&mut self, now_ms: i64) {
        let idle = self.windows.evict_idle(now_ms);
        if !idle.is_empty() {
            self.events.evicted_idle(idle.len());
            self.forget(idle);
        }
        self.events.devices(self.windows.devices());
    }

    /// Devices evicted at the cap: counted and logged once per turn.
    fn report_evicted(&mut self) {
        if !self.evicted.is_empty() {
            self.events.evicted_at_capacity(self.evicted.len());
            let evicted = std::mem::take(&mut self.evicted);
            self.forget(evicted);
        }
    }

    /// Devices whose windows are gone: their alarm state and stored window go
    /// too, and a Sparkplug device dies (DDEATH).
    fn forget(&mut self, devices: Vec<String>) {
        self.alarms.forget(&devices);
        self.forecasts.forget(&devices);
        self.rollups.forget(&devices);
        self.recent.forget(&devices);
        if let Some(sp) = &mut self.sparkplug_in {
            devices.iter().for_each(|d| sp.forget(d));
        }
        if let Output::Sparkplug(id) = &self.pipeline.output {
            let (created_ms, cause) = (crate::clock::now_ms(), self.cause());
            for d in &devices {
                self.staged.publish(cause, render::death_entry(id, d, created_ms));
            }
        }
        self.staged.forget.extend(devices);
    }

    /// The drift gauges (at most once a second, as the run loop calls it),
    /// and the retained summary every `drift_interval_secs`.
    fn report_drift(&mut self, now: Instant) {
        let moments = self.drift.current();
        self.drift_events
            .update(moments.iter().map(|d| d.map(|d| (d.mean_z, d.std_z))), &self.drift.take_out_of_range());
        let Mode::Daemon(d) = &self.mode else { return };
        if !self.drift.due(now) {
            return;
        }
        let (payload, drifting) =
            self.drift.summary(&self.pipeline.name, &self.model.card.features, crate::clock::now_ms());
        self.drift_events.drifting(&drifting, &self.drifting);
        self.drifting = drifting;
        let topic = self.drift.topic().to_string();
        let _ = d.control.try_send(Control::Summary { topic, payload });
    }

    /// Every device: its window, latest scores and alarm state.
    fn view(&self) -> PipelineView {
        let names: Vec<String> = self.model.card.scores.iter().map(|s| s.name.clone()).collect();
        let alarms = self.pipeline.alarm.as_ref().map(|_| &self.alarms);
        let mut view = recent::pipeline_view(
            &self.pipeline.name,
            self.model.card.window,
            &names,
            self.windows.fills(),
            &self.recent,
            |device| alarms.and_then(|a| a.state(device)),
            self.drift.drifting(&self.model.card.features),
        );
        for d in &mut view.devices {
            d.forecast = self.forecasts.view(&d.device, &self.model.card.scores);
        }
        view.rollups = self.rollups.view();
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::ack::{Ack, AckId};
    use crate::durable::committer::{self, Watch};
    use crate::durable::store::{Entry, Store};
    use crate::ingest::input::Input;
    use crate::ingest::topic::TopicTemplate;
    use crate::model::ModelFiles;
    use crate::ops::health::Health;
    use crate::pipeline::Inbound;
    use bytes::Bytes;
    use rumqttc::QoS;

    struct Harness {
        worker: Worker,
        store: Arc<Store>,
        committer: std::thread::JoinHandle<()>,
        entries: mpsc::UnboundedReceiver<Vec<Entry>>,
        acks: mpsc::UnboundedReceiver<AckId>,
        ack_tx: mpsc::UnboundedSender<AckId>,
        inbound: (mpsc::Sender<Intake>, mpsc::Receiver<Intake>),
        _state: tempfile::TempDir,
    }

    fn limits(max_batch: usize) -> Limits {
        Limits {
            max_payload_bytes: 4096,
            max_batch,
            batch_wait: Duration::ZERO,
            max_samples_per_message: 100,
            max_keys_per_sample: 64,
            max_json_depth: 8,
            max_devices_per_pipeline: 100,
            device_idle: Duration::from_secs(3600),
            max_future: Duration::from_secs(300),
            stale_intake: None,
            dead_letter_topic: None,
            require_ts: false,
        }
    }

    /// A worker on the shipped model, with its committer on a fresh store.
    fn harness(max_batch: usize) -> Harness {
        let onnx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/line-mlp.onnx");
        let files = ModelFiles::beside(onnx);
        let model = crate::model::load(&files, None, None).expect("the shipped model");
        let input = TopicTemplate::parse_input("plant/{line}/{machine}/telemetry").unwrap();
        let output = TopicTemplate::parse_output("plant/{line}/{machine}/scores", &input).unwrap();
        let pipeline = Pipeline {
            name: "p".into(),
            model: files,
            input: Input::lineguard(input),
            output: Output::Json(output),
            hop: 1,
            alarm: None,
            drift: crate::pipeline::drift::DriftSettings::defaults("lineguard/t/drift/p".into()),
            shadow: None,
            rollups: Vec::new(),
        };
        let state = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(state.path()).unwrap());
        let (entries_tx, entries) = mpsc::unbounded_channel();
        let (control, _) = mpsc::channel(16);
        let health = Health::new(&["p".into()]);
        let (queue, turns) = committer::queue();
        let watch = Watch {
            health: health.clone(),
            pipeline: 0,
            deadline: Default::default(),
            corrupt: Default::default(),
        };
        let s = store.clone();
        let committer =
            std::thread::spawn(move || committer::run(s, "p", Duration::from_millis(1), turns, watch));
        let mode = Mode::Daemon(Daemon {
            index: 0,
            store: store.clone(),
            committer: queue,
            entries: entries_tx,
            sparkplug: None,
            control,
            health,
        });
        let worker = Worker::new(pipeline, Arc::new(model), None, limits(max_batch), mode);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        Harness {
            worker,
            store,
            committer,
            entries,
            acks,
            ack_tx,
            inbound: mpsc::channel(1024),
            _state: state,
        }
    }

    impl Harness {
        /// A QoS 1 message for `device` with one sample at `ts` (`None`: a payload that is not JSON).
        fn message(&self, device: &str, ts: Option<i64>, pkid: u16) -> Inbound {
            let features = &self.worker.model.card.features;
            let payload = match ts {
                Some(ts) => {
                    let values: serde_json::Map<String, serde_json::Value> = features
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (f.clone(), serde_json::json!(i as f64)))
                        .collect();
                    serde_json::json!({"ts": ts, "values": values}).to_string()
                }
                None => "not json".to_string(),
            };
            Inbound {
                topic: format!("plant/{device}/telemetry"),
                payload: Bytes::from(payload),
                received_ms: crate::clock::now_ms(),
                redelivered: false,
                oversize: None,
                ack: Ack::split(AckId { pkid, qos: QoS::AtLeastOnce }, 1, &self.ack_tx).pop(),
            }
        }

        /// Queue `messages` for the pipeline, as the router does.
        fn feed(&mut self, messages: Vec<Inbound>) {
            messages.into_iter().for_each(|m| self.inbound.0.try_send(Intake::Message(m)).unwrap());
        }

        /// One turn, as the run loop makes it; false when nothing was queued.
        fn turn(&mut self) -> bool {
            let Ok(first) = self.inbound.1.try_recv() else { return false };
            self.worker.gather(first, &mut self.inbound.1);
            self.worker.score();
            self.worker.end_turn();
            true
        }

        /// The worker lets go of its committer's queue, which commits what is left.
        fn finish(self) -> (mpsc::UnboundedReceiver<AckId>, Arc<Store>) {
            drop(self.worker);
            self.committer.join().unwrap();
            (self.acks, self.store)
        }

        fn scores(&mut self) -> Vec<(String, i64)> {
            let mut out = Vec::new();
            while let Ok(batch) = self.entries.try_recv() {
                for e in batch {
                    let j: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
                    out.push((j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap()));
                }
            }
            out
        }
    }

    const T0: i64 = 1_732_400_000_000;

    /// A turn scores every window that became due, hands the scores to the
    /// sink at once (in one hand-over) and leaves the acknowledgements to the
    /// committer, which sends them only once the turn is committed.
    #[test]
    fn a_turn_scores_what_became_due_and_acknowledges_after_its_commit() {
        let mut h = harness(256);
        let msgs: Vec<Inbound> =
            (0..20).map(|i| h.message("l1/m1", Some(T0 + i * 100), i as u16 + 1)).collect();
        h.feed(msgs);
        assert!(h.turn());
        assert!(!h.turn(), "one turn took all of it");
        let scores = h.scores();
        assert_eq!(scores, (15..20).map(|i| ("l1/m1".to_string(), T0 + i * 100)).collect::<Vec<_>>());
        let (mut acks, store) = h.finish();
        let acked: Vec<u16> = std::iter::from_fn(|| acks.try_recv().ok()).map(|a| a.pkid).collect();
        assert_eq!(acked, (1..=20).collect::<Vec<u16>>(), "every message, after the commit");
        assert_eq!(store.windows("p").unwrap().len(), 1, "the window is stored");
    }

    /// Rejected and duplicate samples release their messages' acknowledgements
    /// and change no window: the next valid sample continues the window.
    #[test]
    fn rejections_and_duplicates_are_acknowledged_and_leave_the_window_alone() {
        let mut h = harness(256);
        let mut msgs: Vec<Inbound> =
            (0..15).map(|i| h.message("l1/m1", Some(T0 + i * 100), i as u16 + 1)).collect();
        msgs.push(h.message("l1/m1", None, 100)); // not JSON
        msgs.push(h.message("l1/m1", Some(T0 + 14 * 100), 101)); // the newest again
        msgs.push(h.message("l1/m1", Some(crate::clock::now_ms() + 3_600_000), 102)); // an hour ahead
        msgs.push(h.message("l1/m1", Some(T0 + 15 * 100), 103)); // the 16th sample
        h.feed(msgs);
        while h.turn() {}
        assert_eq!(h.scores(), [("l1/m1".to_string(), T0 + 1500)], "one window, of the 16 valid samples");
        let (mut acks, _store) = h.finish();
        let mut acked: Vec<u16> = std::iter::from_fn(|| acks.try_recv().ok()).map(|a| a.pkid).collect();
        acked.sort();
        assert_eq!(acked.len(), 19, "all acknowledged: {acked:?}");
    }

    /// A batch never holds more than `max_batch` windows: a turn ends when
    /// its batch is full, and what is still queued makes the next turn.
    #[test]
    fn a_full_batch_ends_the_turn() {
        let mut h = harness(2);
        let mut msgs = Vec::new();
        for i in 0..16 {
            for (d, device) in ["l1/m1", "l1/m2", "l1/m3"].iter().enumerate() {
                msgs.push(h.message(device, Some(T0 + i * 100), (i * 3) as u16 + d as u16 + 1));
            }
        }
        h.feed(msgs);
        assert!(h.turn());
        let first: Vec<String> = h.scores().into_iter().map(|(d, _)| d).collect();
        assert_eq!(first, ["l1/m1", "l1/m2"], "two windows, a full batch");
        assert!(h.turn());
        let second: Vec<String> = h.scores().into_iter().map(|(d, _)| d).collect();
        assert_eq!(second, ["l1/m3"], "the third in the next turn");
        assert!(!h.turn());
    }
}
