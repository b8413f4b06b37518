//! One pipeline's worker: telemetry in, committed scores out.
//!
//! It runs on its own OS thread, off the async runtime, so inference never
//! stalls MQTT keep-alives. Each turn it takes the messages that arrive
//! within `limits.batch_wait_us` of the turn's first (up to the batch limit),
//! decodes them, pushes samples into the device windows and copies each
//! window that becomes due straight into the batch input (normalized); one
//! model run then scores the whole batch.
//!
//! Durability (at-least-once end to end): at the end of each turn the new
//! scores go to the sink at once, and the turn's changes (scores and changed
//! window tails) go to the pipeline's [`Committer`], which writes what has
//! queued in one group commit and only then acknowledges the telemetry that
//! caused them. Scoring and publishing never wait for the disk. After a
//! crash, unacknowledged telemetry is redelivered and either re-applied (its
//! effect was not committed) or recognised by `ts` (it was).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::clock::Deadline;
use crate::config::{Limits, Output, Pipeline};
use crate::durable::committer::{Committer, Turn, Watch};
use crate::durable::sink::Control;
use crate::durable::store::{Entry, NewEntry, Part, Store};
use crate::ingest::decode::{Decoded, Decoder};
use crate::ingest::reject::{Reason, Rejection};
use crate::ingest::Reader;
use crate::model::card::State;
use crate::model::{Model, States};
use crate::mqtt::ack::Ack;
use crate::ops::events::{
    DevicesEvicted, DriftEvents, EvictReason, PipelineEvents, ShadowEvents, WindowsDropped, WindowsUnreadable,
};
use crate::ops::health::Health;
use crate::pipeline::alarm::Alarms;
use crate::pipeline::batch::Batch;
use crate::pipeline::drift::Drift;
use crate::pipeline::explain::Explainer;
use crate::pipeline::recent::{self, PipelineView, Recent};
use crate::pipeline::render::{self, Origin, Scored};
use crate::pipeline::window::{Pushed, Reset, Unrestored, Windows};
use crate::pipeline::Inbound;
use crate::sparkplug::input::{Kind, SparkplugInput};

mod replay;

/// The windows of a pipeline serving `card`.
fn windows_for(card: &crate::model::card::ModelCard, hop: usize, limits: &Limits) -> Windows {
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

fn reader_for(card: &crate::model::card::ModelCard, pipeline: &Pipeline, limits: &Limits) -> Reader {
    let decoder = Decoder::with_limits(
        &card.features,
        limits.max_samples_per_message,
        limits.max_keys_per_sample,
        limits.max_json_depth,
    );
    Reader::new(pipeline, decoder)
}

/// The pipeline's shadow model: scored on every window after the live one,
/// published on `shadow_topic`, never acted on.
struct Shadowing {
    model: Arc<Model>,
    topic: crate::ingest::topic::TopicTemplate,
    states: States,
    scores: Vec<f32>,
    origin: Origin,
    events: ShadowEvents,
    /// For each shadow score, the live score of the same name.
    shared: Vec<Option<usize>>,
    /// Whether this batch's shadow run succeeded.
    ran: bool,
}

impl Shadowing {
    fn new(pipeline: &Pipeline, model: Arc<Model>, live: &Model) -> Option<Self> {
        let topic = pipeline.shadow.as_ref()?.topic.clone();
        let names: Vec<String> = model.card.scores.iter().map(|s| s.name.clone()).collect();
        let shared: Vec<Option<usize>> =
            names.iter().map(|n| live.card.scores.iter().position(|s| &s.name == n)).collect();
        Some(Self {
            events: ShadowEvents::new(&pipeline.name, &names, &shared),
            origin: Worker::origin(pipeline, &model),
            topic,
            model,
            states: States::default(),
            scores: Vec::new(),
            shared,
            ran: false,
        })
    }
}

/// The HTTP listener asking for a pipeline's devices (`/devices`).
pub type ViewRequest = tokio::sync::oneshot::Sender<PipelineView>;

/// Where the worker's results go.
#[derive(Clone)]
pub struct Outputs {
    pub store: Arc<Store>,
    pub entries: mpsc::UnboundedSender<Vec<Entry>>,
    /// Sparkplug records, for the Edge Node's sink.
    pub sparkplug: Option<mpsc::UnboundedSender<Vec<Entry>>>,
    pub control: mpsc::Sender<Control>,
    pub dead_letter_topic: Option<String>,
    pub health: Arc<Health>,
    /// When a stop gives up on commits that keep failing.
    pub deadline: Deadline,
}

const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The loop goes round at least this often, idle or not: its heartbeat is
/// what the systemd watchdog and `/healthz` watch.
const HEARTBEAT: Duration = Duration::from_secs(1);

pub struct Worker {
    index: usize,
    pipeline: Pipeline,
    model: Arc<Model>,
    /// tract's run states for `model`, kept between batches (see `States`).
    states: States,
    origin: Origin,
    limits: Limits,
    /// `limits.max_future`, in the unit timestamps come in.
    max_future_ms: i64,
    out: Outputs,
    /// `None`: replaying (see [`Worker::replaying`]); the turns' results
    /// are kept in `kept` instead, each with the input message that caused it.
    committer: Option<Committer>,
    kept: Vec<(u64, NewEntry)>,
    /// Replaying: the input message being handled, and the one that caused
    /// each of `staged_scores` (as far as it is filled in).
    replay_cause: u64,
    staged_causes: Vec<u64>,
    reader: Reader,
    /// For a `spBv1.0/...` input: aliases and last values per device.
    sparkplug_in: Option<SparkplugInput>,
    windows: Windows,
    events: PipelineEvents,
    decoded: Decoded,
    /// The windows due for the next model run.
    batch: Batch,
    /// The device key of the row being offered, reused (see `handle`).
    row_key: String,
    /// The device key the message's topic names, reused (see `handle`).
    device_key: String,
    /// The order `handle` takes a message's rows in, reused.
    row_order: Vec<usize>,
    scores: Vec<f32>,
    staged_scores: Vec<NewEntry>,
    staged_acks: Vec<Ack>,
    staged_forget: Vec<String>,
    /// Devices evicted to make room, not yet reported.
    evicted: Vec<String>,
    alarms: Alarms,
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
    last_drift_update: Instant,
    last_sweep: Instant,
    /// Replaying: the recording's time of the last idle sweep.
    replay_swept_ms: i64,
    /// The store's [`Store::windows_epoch`] this worker's windows were written under.
    windows_epoch: u64,
}

impl Worker {
    pub fn new(
        index: usize,
        pipeline: Pipeline,
        model: Arc<Model>,
        shadow: Option<Arc<Model>>,
        limits: Limits,
        out: Outputs,
        commit_gap: Duration,
    ) -> std::io::Result<Self> {
        let committer = Committer::start(
            out.store.clone(),
            &pipeline.name,
            commit_gap,
            Watch { health: out.health.clone(), pipeline: index, deadline: out.deadline.clone() },
        )?;
        Ok(Self::with(index, pipeline, model, shadow, limits, out, Some(committer)))
    }

    fn with(
        index: usize,
        pipeline: Pipeline,
        model: Arc<Model>,
        shadow: Option<Arc<Model>>,
        limits: Limits,
        out: Outputs,
        committer: Option<Committer>,
    ) -> Self {
        let card = &model.card;
        let mut w = Self {
            shadow: shadow.and_then(|s| Shadowing::new(&pipeline, s, &model)),
            reader: reader_for(card, &pipeline, &limits),
            sparkplug_in: pipeline.input_births.as_ref().map(|_| {
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
            staged_scores: Vec::new(),
            staged_acks: Vec::new(),
            staged_forget: Vec::new(),
            evicted: Vec::new(),
            alarms: Alarms::default(),
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
            last_drift_update: Instant::now(),
            origin: Self::origin(&pipeline, &model),
            states: States::default(),
            committer,
            kept: Vec::new(),
            replay_cause: 0,
            staged_causes: Vec::new(),
            last_sweep: Instant::now(),
            replay_swept_ms: i64::MIN,
            windows_epoch: out.store.windows_epoch(),
            index,
            pipeline,
            model,
            limits,
            out,
        };
        w.restore();
        w
    }

    fn origin(pipeline: &Pipeline, model: &Model) -> Origin {
        Origin {
            pipeline: pipeline.name.clone(),
            model: model.card.name.clone(),
            model_version: model.card.version.clone(),
        }
    }

    /// Windows from the store, as they were at the last commit. A stored
    /// window that cannot be trusted (see `Windows::restore`, and a store
    /// that rolled back a commit) is dropped; one summary line says how many
    /// and why.
    fn restore(&mut self) {
        let stored = match self.out.store.windows(&self.pipeline.name) {
            Ok(s) => s,
            Err(e) => {
                WindowsUnreadable { pipeline: &self.pipeline.name, why: &e.to_string() }.emit();
                return;
            }
        };
        let newest_allowed = crate::clock::now_ms().saturating_add(self.max_future_ms);
        let trusted = self.out.store.windows_trusted();
        let mut dropped: std::collections::BTreeMap<Unrestored, usize> = Default::default();
        let mut restored = 0;
        for (device, snap) in stored {
            let result = match trusted {
                true => self.windows.restore(&device, &snap, newest_allowed),
                false => Err(Unrestored::RolledBack),
            };
            match result {
                Ok(()) => restored += 1,
                Err(reason) => {
                    *dropped.entry(reason).or_default() += 1;
                    self.staged_forget.push(device);
                }
            }
        }
        if !dropped.is_empty() {
            WindowsDropped { pipeline: &self.pipeline.name, by_reason: &dropped, kept: restored }.emit();
        }
        if restored > 0 {
            tracing::info!(pipeline = %self.pipeline.name, devices = restored, "windows restored from the state store");
        }
        self.events.devices(self.windows.devices());
    }

    /// Run until `rx` closes (intake stopped): finish the batch in hand,
    /// commit it, and return. Messages still queued are not acknowledged.
    pub fn run(
        mut self,
        mut rx: mpsc::Receiver<Inbound>,
        mut swaps: mpsc::Receiver<crate::ops::reload::Swap>,
        mut views: mpsc::Receiver<ViewRequest>,
        rt: Handle,
    ) {
        loop {
            self.out.health.beat(self.index);
            let wake = (self.last_sweep + SWEEP_EVERY).min(Instant::now() + HEARTBEAT);
            enum Ev {
                Msg(Option<Inbound>),
                Swap(crate::ops::reload::Swap),
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
                    if let Some(c) = &mut self.committer {
                        c.finish();
                    }
                    return;
                }
                Ev::Swap(crate::ops::reload::Swap::Live(model)) => {
                    self.score();
                    self.swap(model);
                }
                Ev::Swap(crate::ops::reload::Swap::Shadow(model)) => {
                    self.score();
                    self.swap_shadow(model);
                }
                Ev::View(reply) => {
                    let _ = reply.send(self.view());
                }
                Ev::Timer => {}
            }
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep();
            }
            self.report_drift();
            self.end_turn();
        }
    }

    /// Handle `first` and the messages that arrive within
    /// `limits.batch_wait_us` of it, until `max_batch` windows are ready. The
    /// wait is a plain sleep of this thread (tokio's timer would round it up
    /// to whole milliseconds); if intake closes meanwhile, the run loop's next
    /// `recv` sees it.
    fn gather(&mut self, first: Inbound, rx: &mut mpsc::Receiver<Inbound>) {
        let deadline = Instant::now() + self.limits.batch_wait;
        self.handle(first);
        loop {
            while !self.batch.is_full() {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
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

    fn staged(&self) -> bool {
        !self.staged_scores.is_empty() || !self.staged_acks.is_empty() || !self.staged_forget.is_empty()
    }

    fn reject(&mut self, topic: &str, payload: &[u8], r: &Rejection) {
        self.reject_sized(topic, payload, payload.len() as u64, r);
    }

    /// A rejection of a message `len` bytes long, of which `payload` is
    /// what was read (all of it, or the head of one too large to read).
    fn reject_sized(&mut self, topic: &str, payload: &[u8], len: u64, r: &Rejection) {
        self.events.rejected(topic, r);
        if let Some(dl) = &self.out.dead_letter_topic {
            let shown = &payload[..payload.len().min(crate::mqtt::relay::HEAD)];
            let body = serde_json::json!({
                "pipeline": self.pipeline.name,
                "topic": topic,
                "reason": r.reason.as_str(),
                "detail": r.detail,
                "payload": String::from_utf8_lossy(shown),
                "truncated": len > shown.len() as u64,
            });
            let payload = body.to_string().into_bytes();
            if self.committer.is_none() {
                // Replaying: in the output, with the message that caused it.
                self.staged_causes.resize(self.staged_scores.len(), self.replay_cause);
                let e =
                    NewEntry { created_ms: 0, topic: dl.clone(), payload, retain: false, sparkplug: false };
                self.staged_scores.push(e);
                self.staged_causes.push(self.replay_cause);
            } else if self.out.control.try_send(Control::DeadLetter { topic: dl.clone(), payload }).is_err() {
                self.events.dead_letter_dropped();
            }
        }
    }

    fn handle(&mut self, mut msg: Inbound) {
        self.events.received(msg.payload.len());
        self.out.health.counted(1, 0);
        if let Some(a) = msg.ack.take() {
            self.staged_acks.push(a);
        }
        let len = msg.oversize.unwrap_or(msg.payload.len() as u64);
        if len > self.limits.max_payload_bytes as u64 {
            let r = Rejection::new(
                Reason::PayloadTooLarge,
                format!("{len} bytes, limit {} (limits.max_payload_bytes)", self.limits.max_payload_bytes),
            );
            self.reject_sized(&msg.topic, &msg.payload, len, &r);
            return;
        }
        // The device key goes into a reused buffer: no allocation per message.
        let mut device = std::mem::take(&mut self.device_key);
        let kind = if self.pipeline.input.device_key_into(&msg.topic, &mut device) {
            Some(Kind::Data)
        } else if self
            .pipeline
            .input_births
            .as_ref()
            .is_some_and(|t| t.device_key_into(&msg.topic, &mut device))
        {
            Some(Kind::Birth)
        } else {
            None
        };
        match kind {
            Some(kind) => self.handle_device(&msg, &device, kind),
            // The router only sends matching topics; a mismatch is a bug, not input.
            None => debug_assert!(false, "router sent {} to {}", msg.topic, self.pipeline.name),
        }
        self.device_key = device;
    }

    /// The rest of [`Worker::handle`], once the topic has named the device.
    fn handle_device(&mut self, msg: &Inbound, device: &str, kind: Kind) {
        match &mut self.sparkplug_in {
            Some(sp) => sp.decode(kind, device, &msg.payload, &mut self.decoded),
            None => self.reader.read(&msg.topic, device, &msg.payload, &mut self.decoded),
        }
        self.apply_decoded(msg, device);
    }

    /// The samples `self.decoded` holds for `device` (from `msg`): its
    /// rejections counted, each row into its window or assembly.
    fn apply_decoded(&mut self, msg: &Inbound, device: &str) {
        for i in 0..self.decoded.rejects.len() {
            let r = self.decoded.rejects[i].clone();
            self.reject(&msg.topic, &msg.payload, &r);
        }
        let nf = self.reader.features();
        let len = self.model.card.input_len();
        let latest = msg.received_ms.saturating_add(self.max_future_ms);
        // On a sampling clock the rows go in time order, whatever order the
        // message lists them in (OPC UA data points, Kepware records): a
        // later value first would make an earlier one late.
        let mut order = std::mem::take(&mut self.row_order);
        order.clear();
        order.extend(0..self.decoded.len());
        if self.model.card.clock.is_some() {
            let ts = &self.decoded.ts;
            order.sort_unstable_by_key(|&i| (ts[i].unwrap_or(msg.received_ms), i));
        }
        for &i in &order {
            let values = &self.decoded.values[i * nf..(i + 1) * nf];
            let ts = self.decoded.ts[i];
            if let Some(t) = ts.filter(|t| *t > latest) {
                let ahead = (t - msg.received_ms) as f64 / 1000.0;
                let r = Rejection::new(
                    Reason::FutureTimestamp,
                    format!(
                        "ts {t} is {ahead:.0} s ahead of the gateway's clock (limits.max_future_ms = {})",
                        self.max_future_ms
                    ),
                );
                self.reject(&msg.topic, &msg.payload, &r);
                continue;
            }
            if self.model.card.clock.is_some() {
                // A row may name its own device (Kepware); its key goes
                // into a reused buffer, so no allocation once it has grown.
                let mut key = std::mem::take(&mut self.row_key);
                key.clear();
                key.push_str(self.decoded.key(i).unwrap_or(device));
                self.offer(msg, &key, i, ts.unwrap_or(msg.received_ms));
                self.row_key = key;
                continue;
            }
            match self.windows.push(device, ts, msg.received_ms, values, &mut self.evicted) {
                Ok(pushed) => {
                    if !matches!(pushed, Pushed::Duplicate { .. }) {
                        self.drift.observe(values);
                    }
                    self.pushed(device, pushed, len)
                }
                Err(r) if r.reason == Reason::OutOfOrder && msg.redelivered => {
                    self.events.duplicate(device, ts.unwrap_or_default())
                }
                Err(r) => self.reject(&msg.topic, &msg.payload, &r),
            }
        }
        self.row_order = order;
        for (reason, n) in Reset::ALL.into_iter().zip(self.windows.take_resets()) {
            if n > 0 {
                self.events.windows_reset(reason, n);
            }
        }
    }

    /// On a sampling clock: decoded row `i` (NaN: absent) stamped `ts`
    /// goes to the device's assembly; each grid point it makes final may
    /// complete a window.
    fn offer(&mut self, msg: &Inbound, device: &str, i: usize, ts: i64) {
        let len = self.model.card.input_len();
        match self.windows.admit(device, ts, msg.received_ms, &mut self.evicted) {
            Ok(()) => {
                let nf = self.reader.features();
                self.drift.observe(&self.decoded.values[i * nf..(i + 1) * nf]);
            }
            Err(_) if msg.redelivered => return self.events.duplicate(device, ts),
            Err(r) => return self.reject(&msg.topic, &msg.payload, &r),
        }
        while let Some(pushed) = self.windows.advance(device, ts) {
            self.pushed(device, pushed, len);
        }
        let nf = self.reader.features();
        if self.windows.hold(device, ts, &self.decoded.values[i * nf..(i + 1) * nf]) {
            self.events.duplicate(device, ts);
        }
    }

    /// A sample went into `device`'s window: a window it completes joins the batch.
    fn pushed(&mut self, device: &str, pushed: Pushed, len: usize) {
        match pushed {
            Pushed::Buffered { .. } => {}
            Pushed::Duplicate { ts } => self.events.duplicate(device, ts),
            Pushed::Ready { ts } => {
                if self.batch.is_full() {
                    self.score();
                }
                self.batch.push(&self.windows, device, ts, len, self.replay_cause);
            }
        }
    }

    /// Score every window in the batch in one model run and stage what they publish.
    fn score(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len();
        self.scores.clear();
        let started = Instant::now();
        self.errors.clear();
        let card = &self.model.card;
        // `explain = "always"`: the windows' occluded copies run with them.
        let in_run = Explainer::in_batch_run(&card.scores);
        let result = match in_run {
            true => {
                self.batch.run_occluded(&self.model, &mut self.states, &mut self.scores, &mut self.errors)
            }
            false => self.batch.run(&self.model, &mut self.states, &mut self.scores, &mut self.errors),
        };
        if in_run && result.is_ok() {
            let (k, f) = (self.model.score_count(), card.features.len());
            let recon = card.reconstruction_scores();
            self.explainer.scored(&self.scores[n * k..], f, k);
            self.scores.truncate(n * k);
            self.errors.truncate(n * recon * f);
        }
        self.events.scored(n, started.elapsed().as_secs_f64());
        self.out.health.counted(0, n as u64);
        match result {
            Err(e) => self.events.inference_failed(n, &e.to_string()),
            Ok(()) => {
                if let Some(s) = &mut self.shadow {
                    s.scores.clear();
                    s.ran = match s.model.run_with(&mut s.states, self.batch.input(), n, &mut s.scores) {
                        Ok(()) => true,
                        Err(e) => {
                            ShadowEvents::failed(&self.pipeline.name, n, &e.to_string());
                            false
                        }
                    };
                }
                self.stage_scores()
            }
        }
        self.batch.clear();
    }

    /// Each scored window's payload, and its alarm state if that changed;
    /// a window with a non-finite score publishes nothing.
    fn stage_scores(&mut self) {
        let k = self.model.score_count();
        let card = &self.model.card;
        let created_ms = crate::clock::now_ms();
        let recon = card.reconstruction_scores();
        let nf = card.features.len();
        // The windows some score explains. Their occluded copies ran with
        // the batch (`explain = "always"`), or go through the model now, in one run.
        let in_run = Explainer::in_batch_run(&card.scores);
        let mut rows = std::mem::take(&mut self.explain_rows);
        rows.clear();
        rows.extend((0..self.batch.len()).filter(|&i| {
            let values = &self.scores[i * k..(i + 1) * k];
            values.iter().all(|v| v.is_finite())
                && card.scores.iter().zip(values).any(|(s, v)| crate::pipeline::explain::occludes(s, *v))
        }));
        let explained = !rows.is_empty()
            && (in_run
                || match self.explainer.run(
                    &self.model,
                    &mut self.states,
                    self.batch.input(),
                    &rows,
                    card.window,
                    &card.baseline,
                ) {
                    Ok(()) => true,
                    Err(e) => {
                        self.events.explanation_failed(rows.len(), &e.to_string());
                        false
                    }
                });
        // Replaying: what each window staged, its input message caused.
        let replaying = self.committer.is_none();
        let mut cause = None;
        for (i, due) in self.batch.due().iter().enumerate() {
            if let Some(c) = cause {
                self.staged_causes.resize(self.staged_scores.len(), c);
            }
            cause = replaying.then_some(due.cause);
            let values = &self.scores[i * k..(i + 1) * k];
            let mut explain = match rows.binary_search(&i) {
                Ok(j) if explained => {
                    // The explainer holds every window's copies, or the explained ones'.
                    let j = if in_run { i } else { j };
                    self.explainer.explain(j, values, &card.scores, &card.features).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            if recon > 0 {
                let errors = &self.errors[i * recon * nf..(i + 1) * recon * nf];
                crate::pipeline::explain::reconstruction(
                    &mut explain,
                    values,
                    errors,
                    &card.scores,
                    &card.features,
                );
            }
            if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                let detail = format!(
                    "score `{}` is {} for {} at ts {}",
                    card.scores[bad].name, values[bad], due.device, due.ts
                );
                self.events.inference_failed(1, &detail);
                continue;
            }
            let state: State = card.state(values);
            self.events.state(state);
            self.recent.record(&due.device, due.ts, values, &explain, state, created_ms);
            let w = Scored { device: &due.device, ts: due.ts, values, state, explain: &explain };
            if let Some(s) = self.shadow.as_ref().filter(|s| s.ran) {
                let sk = s.model.score_count();
                let sv = &s.scores[i * sk..(i + 1) * sk];
                if sv.iter().all(|v| v.is_finite()) {
                    let shadow_state = s.model.card.state(sv);
                    let sw = Scored {
                        device: &due.device,
                        ts: due.ts,
                        values: sv,
                        state: shadow_state,
                        explain: &[],
                    };
                    let e = render::shadow_entry(
                        &self.pipeline,
                        &s.topic,
                        &s.origin,
                        &s.model.card.scores,
                        &sw,
                        created_ms,
                    );
                    self.staged_scores.push(e);
                    let diffs = s
                        .shared
                        .iter()
                        .enumerate()
                        .filter_map(|(j, l)| l.map(|l| (j, f64::from((sv[j] - values[l]).abs()))));
                    s.events.scored(shadow_state != state, diffs);
                }
            }
            self.staged_scores.push(render::score_entry(
                &self.pipeline,
                &self.origin,
                &card.scores,
                &w,
                created_ms,
            ));
            if let Some(alarm_topic) = &self.pipeline.alarm {
                if let Some(t) = self.alarms.update(&due.device, &card.scores, values) {
                    let input = &self.pipeline.input;
                    let e = render::alarm_entry(
                        input,
                        alarm_topic,
                        &self.origin,
                        &card.scores,
                        &w,
                        &t,
                        created_ms,
                    );
                    self.staged_scores.push(e);
                }
            }
        }
        if let Some(c) = cause {
            self.staged_causes.resize(self.staged_scores.len(), c);
        }
        self.explain_rows = rows;
    }

    /// End a turn: its new scores to the sink at once, its changes (and the
    /// acknowledgements they release) to the committer.
    fn end_turn(&mut self) {
        let epoch = self.out.store.windows_epoch();
        if epoch != self.windows_epoch {
            // The store lost its windows: write every one again.
            self.windows_epoch = epoch;
            self.windows.mark_all_dirty();
        }
        if self.committer.is_none() {
            // Replaying: what the turn publishes is kept; nothing is stored.
            self.staged_causes.resize(self.staged_scores.len(), self.replay_cause);
            self.kept.extend(self.staged_causes.drain(..).zip(self.staged_scores.drain(..)));
            self.staged_acks.clear();
            self.staged_forget.clear();
            self.windows.clear_dirty();
            return;
        }
        if self.staged() || self.windows.has_dirty() {
            let turn = self.take_turn();
            let (health, index) = (&self.out.health, self.index);
            if let Some(committer) = &self.committer {
                committer.send(turn, || health.beat(index));
            }
        }
    }

    /// The staged changes as a turn; the scores are handed to the sinks now.
    fn take_turn(&mut self) -> Turn {
        let entries = &self.out.entries;
        let sparkplug_entries = &self.out.sparkplug;
        let (scores, ()) = self.out.store.reserve(std::mem::take(&mut self.staged_scores), |committed| {
            let (sparkplug, plain): (Vec<Entry>, Vec<Entry>) =
                committed.into_iter().partition(|e| e.sparkplug);
            if !plain.is_empty() {
                let _ = entries.send(plain);
            }
            if let (Some(tx), false) = (sparkplug_entries, sparkplug.is_empty()) {
                let _ = tx.send(sparkplug);
            }
        });
        Turn {
            part: Part {
                windows: self.windows.take_dirty(),
                forget: std::mem::take(&mut self.staged_forget),
                scores,
            },
            acks: std::mem::take(&mut self.staged_acks),
        }
    }

    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        self.sweep_at(crate::clock::now_ms());
    }

    /// Evict the devices idle at `now_ms` (`limits.device_idle`).
    fn sweep_at(&mut self, now_ms: i64) {
        let idle = self.windows.evict_idle(now_ms);
        if !idle.is_empty() {
            DevicesEvicted { pipeline: &self.pipeline.name, reason: EvictReason::Idle, devices: idle.len() }
                .emit();
            self.forget(idle);
        }
        self.events.devices(self.windows.devices());
    }

    /// Devices evicted at the cap: counted and logged once per turn.
    fn report_evicted(&mut self) {
        if !self.evicted.is_empty() {
            let n = self.evicted.len();
            DevicesEvicted { pipeline: &self.pipeline.name, reason: EvictReason::Capacity, devices: n }
                .emit();
            let evicted = std::mem::take(&mut self.evicted);
            self.forget(evicted);
        }
    }

    /// Devices whose windows are gone: their alarm state and stored window go
    /// too, and a Sparkplug device dies (DDEATH).
    fn forget(&mut self, devices: Vec<String>) {
        self.alarms.forget(&devices);
        self.recent.forget(&devices);
        if let Some(sp) = &mut self.sparkplug_in {
            devices.iter().for_each(|d| sp.forget(d));
        }
        if let Output::Sparkplug(id) = &self.pipeline.output {
            let created_ms = crate::clock::now_ms();
            self.staged_scores.extend(devices.iter().map(|d| render::death_entry(id, d, created_ms)));
        }
        self.staged_forget.extend(devices);
    }

    /// The drift gauges, at most once a second; the retained summary every
    /// `drift_interval_secs`.
    fn report_drift(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_drift_update) < Duration::from_secs(1) {
            return;
        }
        self.last_drift_update = now;
        self.drift_events.update(&self.drift.current(), &self.drift.take_out_of_range());
        if !self.drift.due(now) {
            return;
        }
        let (payload, drifting) =
            self.drift.summary(&self.pipeline.name, &self.model.card.features, crate::clock::now_ms());
        DriftEvents::drifting(&self.pipeline.name, &drifting, &self.drifting);
        self.drifting = drifting;
        let topic = self.drift.topic().to_string();
        let _ = self.out.control.try_send(Control::Summary { topic, payload });
    }

    /// Every device: its window, latest scores and alarm state.
    fn view(&self) -> PipelineView {
        let names: Vec<String> = self.model.card.scores.iter().map(|s| s.name.clone()).collect();
        let alarms = self.pipeline.alarm.as_ref().map(|_| &self.alarms);
        recent::pipeline_view(
            &self.pipeline.name,
            self.model.card.window,
            &names,
            self.windows.fills(),
            &self.recent,
            |device| alarms.and_then(|a| a.state(device)),
            self.drift.drifting(&self.model.card.features),
        )
    }

    /// A changed shadow model, between two batches; refused (the old one
    /// keeps shadowing) unless it reads what the live model reads.
    fn swap_shadow(&mut self, model: Arc<Model>) {
        if !model.card.same_input(&self.model.card) {
            tracing::error!(
                pipeline = %self.pipeline.name,
                model = %model.path.display(),
                "new shadow model refused: it must read what the live model reads (features, window, sampling clock)"
            );
            return;
        }
        tracing::info!(pipeline = %self.pipeline.name, model = %model.card.name, version = %model.card.version,
                       sha256 = %model.sha256, "shadow model swapped");
        self.shadow = Shadowing::new(&self.pipeline, model, &self.model);
    }

    /// Put a checked model in service between two batches.
    fn swap(&mut self, model: Arc<Model>) {
        self.recent.rescore(model.score_count());
        if self.shadow.as_ref().is_some_and(|s| !s.model.card.same_input(&model.card)) {
            tracing::warn!(pipeline = %self.pipeline.name, "the new live model reads other input than the shadow model: shadow scoring stops");
            self.shadow = None;
        }
        let card = &model.card;
        self.drift.recard(card.features.len(), card.normalize.clone(), card.range.clone());
        let keep = model.card.same_input(&self.model.card);
        if !keep {
            let forgotten = self.windows.clear();
            self.staged_forget.extend(forgotten);
            let c = &model.card;
            self.windows = windows_for(c, self.pipeline.hop, &self.limits);
            self.reader = reader_for(c, &self.pipeline, &self.limits);
            if self.sparkplug_in.is_some() {
                self.sparkplug_in = Some(
                    SparkplugInput::new(&c.features, self.limits.max_devices_per_pipeline)
                        .per_value(c.clock.is_some()),
                );
            }
        } else {
            // Same features and window: the held windows stay, under the new constants.
            self.windows.renormalize(model.card.normalize.clone());
        }
        tracing::info!(
            pipeline = %self.pipeline.name,
            from = %format!("{} v{}", self.model.card.name, self.model.card.version),
            to = %format!("{} v{}", model.card.name, model.card.version),
            windows_kept = keep,
            "model swapped"
        );
        self.origin = Self::origin(&self.pipeline, &model);
        // The next window of each device publishes its state under the new model.
        self.alarms = Alarms::default();
        self.model = model;
        // Not only for safety (a state for another plan is never reused):
        // the old states hold the old model's plans and scratch in memory.
        self.states = States::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Output;
    use crate::ingest::topic::TopicTemplate;
    use crate::mqtt::ack::AckId;
    use bytes::Bytes;
    use rumqttc::QoS;

    struct Harness {
        worker: Worker,
        entries: mpsc::UnboundedReceiver<Vec<Entry>>,
        acks: mpsc::UnboundedReceiver<AckId>,
        ack_tx: mpsc::UnboundedSender<AckId>,
        inbound: (mpsc::Sender<Inbound>, mpsc::Receiver<Inbound>),
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
        }
    }

    /// A worker on the shipped model, with its committer on a fresh store.
    fn harness(max_batch: usize) -> Harness {
        let model =
            Model::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/line-mlp.onnx"))
                .expect("the shipped model");
        let input = TopicTemplate::parse_input("plant/{line}/{machine}/telemetry").unwrap();
        let output = TopicTemplate::parse_output("plant/{line}/{machine}/scores", &input).unwrap();
        let pipeline = Pipeline {
            name: "p".into(),
            model: model.path.clone(),
            card: model.card.path.clone(),
            input,
            input_format: crate::ingest::format::InputFormat::Lineguard,
            ts_unit: crate::ingest::format::TsUnit::Ms,
            tag_keys: Default::default(),
            tag_id: Default::default(),
            input_births: None,
            output: Output::Json(output),
            hop: 1,
            alarm: None,
            drift: crate::pipeline::drift::DriftSettings::defaults("lineguard/t/drift/p".into()),
            shadow: None,
        };
        let state = tempfile::tempdir().unwrap();
        let (entries_tx, entries) = mpsc::unbounded_channel();
        let (control, _) = mpsc::channel(16);
        let out = Outputs {
            store: Arc::new(Store::open(state.path()).unwrap()),
            entries: entries_tx,
            sparkplug: None,
            control,
            dead_letter_topic: None,
            health: Health::new(&["p".into()]),
            deadline: Deadline::default(),
        };
        let worker =
            Worker::new(0, pipeline, Arc::new(model), None, limits(max_batch), out, Duration::from_millis(1))
                .unwrap();
        let (ack_tx, acks) = mpsc::unbounded_channel();
        Harness { worker, entries, acks, ack_tx, inbound: mpsc::channel(1024), _state: state }
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
            messages.into_iter().for_each(|m| self.inbound.0.try_send(m).unwrap());
        }

        /// One turn, as the run loop makes it; false when nothing was queued.
        fn turn(&mut self) -> bool {
            let Ok(first) = self.inbound.1.try_recv() else { return false };
            self.worker.gather(first, &mut self.inbound.1);
            self.worker.score();
            self.worker.end_turn();
            true
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

        fn acked(&mut self) -> Vec<u16> {
            std::iter::from_fn(|| self.acks.try_recv().ok()).map(|a| a.pkid).collect()
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
        h.worker.committer.as_mut().expect("a daemon worker").finish();
        assert_eq!(h.acked(), (1..=20).collect::<Vec<u16>>(), "every message, after the commit");
        assert_eq!(h.worker.out.store.windows("p").unwrap().len(), 1, "the window is stored");
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
        h.worker.committer.as_mut().expect("a daemon worker").finish();
        let mut acked = h.acked();
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
