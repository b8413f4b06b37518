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
use crate::model::card::State;
use crate::model::{Model, States};
use crate::mqtt::ack::Ack;
use crate::ops::events::{DevicesEvicted, EvictReason, PipelineEvents, WindowsDropped, WindowsUnreadable};
use crate::ops::health::Health;
use crate::pipeline::alarm::Alarms;
use crate::pipeline::render::{write_payload, Origin};
use crate::pipeline::window::{Pushed, Unrestored, Windows};
use crate::pipeline::Inbound;
use crate::sparkplug::input::{Kind, SparkplugInput};
use crate::sparkplug::node::{Record, RecordValue};

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
}

fn decoder_for(card: &crate::model::card::ModelCard, limits: &Limits) -> Decoder {
    Decoder::with_limits(
        &card.features,
        limits.max_samples_per_message,
        limits.max_keys_per_sample,
        limits.max_json_depth,
    )
}

/// A window copied into the batch, waiting for its scores.
#[derive(Debug)]
struct Pending {
    /// Shared with the windows: no copy of the name per window.
    device: Arc<str>,
    ts: i64,
}

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
    committer: Committer,
    decoder: Decoder,
    /// For a `spBv1.0/...` input: aliases and last values per device.
    sparkplug_in: Option<SparkplugInput>,
    windows: Windows,
    events: PipelineEvents,
    decoded: Decoded,
    input: Vec<f32>,
    pending: Vec<Pending>,
    scores: Vec<f32>,
    staged_scores: Vec<NewEntry>,
    staged_acks: Vec<Ack>,
    staged_forget: Vec<String>,
    /// Devices evicted to make room, not yet reported.
    evicted: Vec<String>,
    alarms: Alarms,
    last_sweep: Instant,
    /// The store's [`Store::windows_epoch`] this worker's windows were written under.
    windows_epoch: u64,
}

impl Worker {
    pub fn new(
        index: usize,
        pipeline: Pipeline,
        model: Arc<Model>,
        limits: Limits,
        out: Outputs,
        commit_gap: Duration,
    ) -> std::io::Result<Self> {
        let card = &model.card;
        let mut w = Self {
            decoder: decoder_for(card, &limits),
            sparkplug_in: pipeline
                .input_births
                .as_ref()
                .map(|_| SparkplugInput::new(&card.features, limits.max_devices_per_pipeline)),
            windows: windows_for(card, pipeline.hop, &limits),
            max_future_ms: i64::try_from(limits.max_future.as_millis()).unwrap_or(i64::MAX),
            events: PipelineEvents::new(&pipeline.name),
            input: Vec::with_capacity(limits.max_batch * card.input_len()),
            pending: Vec::with_capacity(limits.max_batch),
            scores: Vec::new(),
            decoded: Decoded::default(),
            staged_scores: Vec::new(),
            staged_acks: Vec::new(),
            staged_forget: Vec::new(),
            evicted: Vec::new(),
            alarms: Alarms::default(),
            origin: Self::origin(&pipeline, &model),
            states: States::default(),
            committer: Committer::start(
                out.store.clone(),
                &pipeline.name,
                commit_gap,
                Watch { health: out.health.clone(), pipeline: index, deadline: out.deadline.clone() },
            )?,
            last_sweep: Instant::now(),
            windows_epoch: out.store.windows_epoch(),
            index,
            pipeline,
            model,
            limits,
            out,
        };
        w.restore();
        Ok(w)
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
    pub fn run(mut self, mut rx: mpsc::Receiver<Inbound>, mut swaps: mpsc::Receiver<Arc<Model>>, rt: Handle) {
        loop {
            self.out.health.beat(self.index);
            let wake = (self.last_sweep + SWEEP_EVERY).min(Instant::now() + HEARTBEAT);
            enum Ev {
                Msg(Option<Inbound>),
                Swap(Arc<Model>),
                Timer,
            }
            let ev = rt.block_on(async {
                tokio::select! {
                    biased;
                    Some(m) = swaps.recv() => Ev::Swap(m),
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
                    self.committer.finish();
                    return;
                }
                Ev::Swap(model) => {
                    self.score();
                    self.swap(model);
                }
                Ev::Timer => {}
            }
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep();
            }
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
            while self.pending.len() < self.limits.max_batch {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if self.pending.len() >= self.limits.max_batch || now >= deadline {
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
            let msg = Control::DeadLetter { topic: dl.clone(), payload: body.to_string().into_bytes() };
            if self.out.control.try_send(msg).is_err() {
                self.events.dead_letter_dropped();
            }
        }
    }

    fn handle(&mut self, msg: Inbound) {
        self.events.received(msg.payload.len());
        self.out.health.counted(1, 0);
        if let Some(a) = msg.ack {
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
        let (device, kind) = match self.pipeline.input.device_key(&msg.topic) {
            Some(d) => (d, Kind::Data),
            None => match self.pipeline.input_births.as_ref().and_then(|t| t.device_key(&msg.topic)) {
                Some(d) => (d, Kind::Birth),
                None => {
                    // The router only sends matching topics; a mismatch is a bug, not input.
                    debug_assert!(false, "router sent {} to {}", msg.topic, self.pipeline.name);
                    return;
                }
            },
        };
        match &mut self.sparkplug_in {
            Some(sp) => sp.decode(kind, &device, &msg.payload, &mut self.decoded),
            None => self.decoder.decode(&msg.payload, &mut self.decoded),
        }
        for i in 0..self.decoded.rejects.len() {
            let r = self.decoded.rejects[i].clone();
            self.reject(&msg.topic, &msg.payload, &r);
        }
        let nf = self.decoder.features();
        let len = self.model.card.input_len();
        let latest = msg.received_ms.saturating_add(self.max_future_ms);
        for i in 0..self.decoded.len() {
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
            match self.windows.push(&device, ts, msg.received_ms, values, &mut self.evicted) {
                Ok(Pushed::Buffered { .. }) => {}
                Ok(Pushed::Duplicate { ts }) => self.events.duplicate(&device, ts),
                Ok(Pushed::Ready { ts }) => {
                    if self.pending.len() == self.limits.max_batch {
                        self.score();
                    }
                    let start = self.input.len();
                    self.input.resize(start + len, 0.0);
                    self.windows.write_window(&device, &mut self.input[start..]);
                    let device = self.windows.key(&device).expect("pushed above");
                    self.pending.push(Pending { device, ts });
                }
                Err(r) if r.reason == Reason::OutOfOrder && msg.redelivered => {
                    self.events.duplicate(&device, ts.unwrap_or_default())
                }
                Err(r) => self.reject(&msg.topic, &msg.payload, &r),
            }
        }
    }

    /// Score every pending window in one model run and stage the payloads.
    fn score(&mut self) {
        let n = self.pending.len();
        if n == 0 {
            return;
        }
        self.scores.clear();
        let started = Instant::now();
        let result = self.model.run_with(&mut self.states, &self.input, n, &mut self.scores);
        self.events.scored(n, started.elapsed().as_secs_f64());
        self.out.health.counted(0, n as u64);
        if let Err(e) = result {
            self.events.inference_failed(n, &e.to_string());
        } else {
            let k = self.model.score_count();
            let card = &self.model.card;
            let created_ms = crate::clock::now_ms();
            for (i, p) in self.pending.iter().enumerate() {
                let values = &self.scores[i * k..(i + 1) * k];
                if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                    let detail = format!(
                        "score `{}` is {} for {} at ts {}",
                        card.scores[bad].name, values[bad], p.device, p.ts
                    );
                    self.events.inference_failed(1, &detail);
                    continue;
                }
                let state: State = card.state(values);
                self.events.state(state);
                match &self.pipeline.output {
                    Output::Json(template) => {
                        let mut payload = Vec::with_capacity(256);
                        write_payload(
                            &mut payload,
                            &self.origin,
                            &card.scores,
                            &p.device,
                            p.ts,
                            values,
                            state,
                        );
                        let topic = template.render(&self.pipeline.input, &p.device);
                        self.staged_scores.push(NewEntry {
                            created_ms,
                            topic,
                            payload,
                            retain: false,
                            sparkplug: false,
                        });
                    }
                    Output::Sparkplug(id) => {
                        // Metric names carry the pipeline as a folder, so two
                        // pipelines scoring one machine make one device.
                        let name = &self.pipeline.name;
                        let mut metrics: Vec<(String, RecordValue)> = card
                            .scores
                            .iter()
                            .zip(values)
                            .map(|(s, v)| (format!("{name}/{}", s.name), RecordValue::Float(*v)))
                            .collect();
                        metrics.push((format!("{name}/state"), RecordValue::Text(state.as_str().into())));
                        self.staged_scores.push(NewEntry {
                            created_ms,
                            topic: id.render(&p.device),
                            payload: Record::Data { ts: p.ts, metrics }.encode(),
                            retain: false,
                            sparkplug: true,
                        });
                    }
                }
                if let Some(alarm_topic) = &self.pipeline.alarm {
                    if let Some(t) = self.alarms.update(&p.device, &card.scores, values) {
                        let scores: serde_json::Map<String, serde_json::Value> = card
                            .scores
                            .iter()
                            .zip(values)
                            .map(|(s, v)| (s.name.clone(), serde_json::json!(v)))
                            .collect();
                        let body = serde_json::json!({
                            "ts": p.ts,
                            "device": &*p.device,
                            "pipeline": self.origin.pipeline,
                            "model": self.origin.model,
                            "model_version": self.origin.model_version,
                            "state": t.state,
                            "previous": t.previous,
                            "active": t.active,
                            "scores": scores,
                        });
                        self.staged_scores.push(NewEntry {
                            created_ms,
                            topic: alarm_topic.render(&self.pipeline.input, &p.device),
                            payload: body.to_string().into_bytes(),
                            retain: true,
                            sparkplug: false,
                        });
                    }
                }
            }
        }
        self.pending.clear();
        self.input.clear();
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
        if self.staged() || self.windows.has_dirty() {
            let turn = self.take_turn();
            let (health, index) = (&self.out.health, self.index);
            self.committer.send(turn, || health.beat(index));
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
        let idle = self.windows.evict_idle(crate::clock::now_ms());
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
        if let Some(sp) = &mut self.sparkplug_in {
            devices.iter().for_each(|d| sp.forget(d));
        }
        if let Output::Sparkplug(id) = &self.pipeline.output {
            let created_ms = crate::clock::now_ms();
            for d in &devices {
                self.staged_scores.push(NewEntry {
                    created_ms,
                    topic: id.render(d),
                    payload: Record::Death.encode(),
                    retain: false,
                    sparkplug: true,
                });
            }
        }
        self.staged_forget.extend(devices);
    }

    /// Put a checked model in service between two batches.
    fn swap(&mut self, model: Arc<Model>) {
        let keep = model.card.same_input(&self.model.card);
        if !keep {
            let forgotten = self.windows.clear();
            self.staged_forget.extend(forgotten);
            let c = &model.card;
            self.windows = windows_for(c, self.pipeline.hop, &self.limits);
            self.decoder = decoder_for(c, &self.limits);
            if self.sparkplug_in.is_some() {
                self.sparkplug_in =
                    Some(SparkplugInput::new(&c.features, self.limits.max_devices_per_pipeline));
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
