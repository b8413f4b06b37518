//! Stages 2 and 3 of a turn: read a message (its topic names the device,
//! its payload decodes into rows of the card's features, or rejections) and
//! put each row into its device's window (or, on a sampling clock, its
//! assembly); a window that becomes due joins the batch.

use super::{Mode, Worker};
use crate::durable::sink::Control;
use crate::durable::store::NewEntry;
use crate::ingest::reject::{Reason, Rejection};
use crate::pipeline::window::{Pushed, Reset};
use crate::pipeline::{Inbound, Intake};
use crate::sparkplug::input::Kind;
use strum::VariantArray;

impl Worker {
    /// What the router sent: a message to read, or a hole in the telemetry.
    pub(super) fn take(&mut self, intake: Intake) {
        match intake {
            Intake::Message(msg) => self.read(msg),
            Intake::SessionLost => {
                self.windows.restart_all(Reset::SessionLost);
                self.report_resets();
            }
        }
    }

    pub(super) fn reject(&mut self, topic: &str, payload: &[u8], r: &Rejection) {
        self.reject_sized(topic, payload, payload.len() as u64, r);
    }

    /// A rejection of a message `len` bytes long, of which `payload` is
    /// what was read (all of it, or the head of one too large to read):
    /// counted, logged, and with `limits.dead_letter_topic` dead-lettered.
    fn reject_sized(&mut self, topic: &str, payload: &[u8], len: u64, r: &Rejection) {
        self.events.rejected(topic, r.reason, &r.detail);
        let Some(dl) = &self.limits.dead_letter_topic else { return };
        let shown = &payload[..payload.len().min(crate::pipeline::DEAD_LETTER_SHOWS)];
        let body = serde_json::json!({
            "pipeline": self.pipeline.name,
            "topic": topic,
            "reason": r.reason.as_str(),
            "detail": r.detail,
            "payload": String::from_utf8_lossy(shown),
            "truncated": len > shown.len() as u64,
        });
        let payload = body.to_string().into_bytes();
        match &self.mode {
            // In the output, after the message that caused it.
            Mode::Replay(log) => {
                let e = NewEntry {
                    created_ms: 0,
                    ts: 0,
                    topic: dl.clone(),
                    payload,
                    retain: false,
                    sparkplug: false,
                };
                self.staged.publish(log.cause, e);
            }
            Mode::Daemon(d) => {
                if d.control.try_send(Control::DeadLetter { topic: dl.clone(), payload }).is_err() {
                    self.events.dead_letter_dropped();
                }
            }
        }
    }

    /// Stage 2: one message, its topic naming the device; rejected whole
    /// when too large.
    pub(super) fn read(&mut self, mut msg: Inbound) {
        self.events.received(msg.payload.len());
        self.turn_counts.0 += 1;
        if let Some(a) = msg.ack.take() {
            self.staged.acks.push(a);
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
        let input = &self.pipeline.input;
        let kind = if input.topic.device_key_into(&msg.topic, &mut device) {
            Some(Kind::Data)
        } else if input.births.as_ref().is_some_and(|t| t.device_key_into(&msg.topic, &mut device)) {
            Some(Kind::Birth)
        } else {
            None
        };
        match kind {
            Some(kind) => {
                match &mut self.sparkplug_in {
                    Some(sp) => sp.decode(kind, &device, &msg.payload, &mut self.decoded),
                    None => self.reader.read(&msg.topic, &device, &msg.payload, &mut self.decoded),
                }
                self.window_rows(&msg, &device);
            }
            // The router only sends matching topics; a mismatch is a bug, not input.
            None => debug_assert!(false, "router sent {} to {}", msg.topic, self.pipeline.name),
        }
        self.device_key = device;
    }

    /// Stage 3: the rows `self.decoded` holds for `device` (from `msg`):
    /// its rejections counted, each row into its window or assembly.
    pub(super) fn window_rows(&mut self, msg: &Inbound, device: &str) {
        for i in 0..self.decoded.rejects.len() {
            let r = self.decoded.rejects[i].clone();
            self.reject(&msg.topic, &msg.payload, &r);
        }
        let nf = self.reader.feature_count();
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
            if ts.is_none() && self.limits.require_ts {
                let r = Rejection::new(
                    Reason::NoTs,
                    "no `ts`: under [redundancy] every sample needs its own time (two instances would stamp \
                     its arrival differently, and their windows would differ)",
                );
                self.reject(&msg.topic, &msg.payload, &r);
                continue;
            }
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
                        self.turn_newest = self.turn_newest.max(ts.unwrap_or(msg.received_ms));
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
        self.report_resets();
    }

    /// The windows started again since the last report, by why.
    fn report_resets(&mut self) {
        for (reason, n) in Reset::VARIANTS.iter().copied().zip(self.windows.take_resets()) {
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
                let nf = self.reader.feature_count();
                self.drift.observe(&self.decoded.values[i * nf..(i + 1) * nf]);
                self.turn_newest = self.turn_newest.max(ts);
            }
            Err(_) if msg.redelivered => return self.events.duplicate(device, ts),
            Err(r) => return self.reject(&msg.topic, &msg.payload, &r),
        }
        while let Some(pushed) = self.windows.advance(device, ts) {
            self.pushed(device, pushed, len);
        }
        let nf = self.reader.feature_count();
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
                let cause = self.cause();
                self.batch.push(&self.windows, device, ts, len, cause);
            }
        }
    }
}
