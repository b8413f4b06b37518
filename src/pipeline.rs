//! One pipeline's worker: telemetry in, score payloads out.
//!
//! It runs on its own OS thread, off the async runtime, so inference never
//! stalls MQTT keep-alives. Each turn it takes every message already queued
//! (up to the batch limit), decodes them, pushes samples into the device
//! windows and copies each window that becomes due straight into the batch
//! input (normalized). Then one model run scores the whole batch: under load,
//! batches grow by themselves; when idle, a single window goes at once.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::card::State;
use crate::config::Pipeline;
use crate::decode::{Decoded, Decoder};
use crate::events::PipelineEvents;
use crate::model::Model;
use crate::reject::{Reason, Rejection};
use crate::score::{write_payload, Origin};
use crate::window::{Pushed, Windows};

/// A telemetry message routed to this pipeline.
#[derive(Debug)]
pub struct Inbound {
    pub topic: String,
    pub payload: Bytes,
    /// Receive time, epoch ms: the `ts` of samples that carry none.
    pub received_ms: i64,
}

/// A score payload to publish (QoS 1).
#[derive(Debug)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A window copied into the batch, waiting for its scores.
#[derive(Debug)]
struct Pending {
    device: String,
    ts: i64,
}

pub struct Worker {
    pipeline: Pipeline,
    model: Arc<Model>,
    origin: Origin,
    max_payload: usize,
    max_batch: usize,
    decoder: Decoder,
    windows: Windows,
    events: PipelineEvents,
    decoded: Decoded,
    input: Vec<f32>,
    pending: Vec<Pending>,
    scores: Vec<f32>,
}

impl Worker {
    pub fn new(pipeline: Pipeline, model: Arc<Model>, max_payload: usize, max_batch: usize) -> Self {
        let card = &model.card;
        let origin = Origin {
            pipeline: pipeline.name.clone(),
            model: card.name.clone(),
            model_version: card.version.clone(),
        };
        Self {
            decoder: Decoder::new(&card.features),
            windows: Windows::new(card.window, card.features.len(), pipeline.hop),
            events: PipelineEvents::new(&pipeline.name),
            input: Vec::with_capacity(max_batch * card.input_len()),
            pending: Vec::with_capacity(max_batch),
            scores: Vec::new(),
            decoded: Decoded::default(),
            origin,
            pipeline,
            model,
            max_payload,
            max_batch,
        }
    }

    /// Run until `rx` closes (intake stopped), then finish the batch in hand.
    pub fn run(mut self, mut rx: mpsc::Receiver<Inbound>, tx: mpsc::Sender<Outbound>) {
        while let Some(first) = rx.blocking_recv() {
            self.handle(first, &tx);
            while self.pending.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg, &tx),
                    Err(_) => break,
                }
            }
            self.flush(&tx);
            self.events.devices(self.windows.devices());
        }
        self.flush(&tx);
    }

    fn handle(&mut self, msg: Inbound, tx: &mpsc::Sender<Outbound>) {
        self.events.received(msg.payload.len());
        if msg.payload.len() > self.max_payload {
            let r = Rejection::new(
                Reason::PayloadTooLarge,
                format!("{} bytes, limit {} (limits.max_payload_bytes)", msg.payload.len(), self.max_payload),
            );
            self.events.rejected(&msg.topic, &r);
            return;
        }
        let Some(device) = self.pipeline.input.device_key(&msg.topic) else {
            // The router only sends matching topics; a mismatch is a bug, not input.
            debug_assert!(false, "router sent {} to {}", msg.topic, self.pipeline.name);
            return;
        };
        self.decoder.decode(&msg.payload, &mut self.decoded);
        for r in &self.decoded.rejects {
            self.events.rejected(&msg.topic, r);
        }
        let nf = self.decoder.features();
        let len = self.model.card.input_len();
        for i in 0..self.decoded.len() {
            let values = &self.decoded.values[i * nf..(i + 1) * nf];
            match self.windows.push(&device, self.decoded.ts[i], msg.received_ms, values) {
                Ok(Pushed::Buffered { .. }) => {}
                Ok(Pushed::Ready { ts }) => {
                    if self.pending.len() == self.max_batch {
                        self.flush(tx);
                    }
                    let start = self.input.len();
                    self.input.resize(start + len, 0.0);
                    self.windows.write_window(
                        &device,
                        self.model.card.normalize.as_ref(),
                        &mut self.input[start..],
                    );
                    self.pending.push(Pending { device: device.to_string(), ts });
                }
                Err(r) => self.events.rejected(&msg.topic, &r),
            }
        }
    }

    /// Score every pending window in one model run and send the payloads.
    fn flush(&mut self, tx: &mpsc::Sender<Outbound>) {
        let n = self.pending.len();
        if n == 0 {
            return;
        }
        self.scores.clear();
        let started = Instant::now();
        let result = self.model.run(&self.input, n, &mut self.scores);
        self.events.scored(n, started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.events.inference_failed(n, &e.to_string());
        } else {
            let k = self.model.score_count();
            let card = &self.model.card;
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
                self.events.state(state.as_str());
                let mut payload = Vec::with_capacity(256);
                write_payload(&mut payload, &self.origin, &card.scores, &p.device, p.ts, values, state);
                let topic = self.pipeline.output.render(&self.pipeline.input, &p.device);
                if tx.blocking_send(Outbound { topic, payload }).is_err() {
                    // The sink only closes after every worker has finished.
                    tracing::error!(pipeline = %self.pipeline.name, "score sink closed; stopping");
                    break;
                }
            }
        }
        self.pending.clear();
        self.input.clear();
    }
}
