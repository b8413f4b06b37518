//! Routing: each telemetry message to every pipeline whose input matches.
//!
//! A message goes to each matching pipeline's bounded channel with its share
//! of the acknowledgement ([`Ack`]); waiting on a full channel is the
//! backpressure (the connection stops reading from the broker). A message
//! no pipeline takes (an overlapping subscription, a topic that is not
//! UTF-8) is acknowledged at once, or the persistent session would deliver
//! it forever. A relay's stand-in (see [`relay`]) arrives as its head and
//! the length of the message it stands for.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::durable::ack::{Ack, AckId};
use crate::ingest::input::Input;
use crate::mqtt::relay;
use crate::ops::events::mqtt::RouterEvents;
use crate::pipeline::{Inbound, Intake};

/// Messages waiting for a pipeline before the connection stops reading:
/// a few turns' worth, so a pipeline busy with one model run does not hold
/// up intake; bounded, so a stalled one holds it up instead of growing memory.
pub(crate) const INBOUND_QUEUE: usize = 1024;

/// One pipeline's input.
pub(crate) struct Route {
    pub input: Input,
    pub tx: mpsc::Sender<Intake>,
}

pub(crate) struct Router {
    routes: Vec<Route>,
    events: RouterEvents,
}

impl Router {
    pub(crate) fn new(routes: Vec<Route>) -> Router {
        Router { routes, events: RouterEvents::default() }
    }

    /// Stop routing: the pipelines see their channels close.
    pub(crate) fn close(&mut self) {
        self.routes.clear();
    }

    /// The broker lost the telemetry session: every pipeline hears it after
    /// the messages before the hole and before any after it.
    pub(crate) async fn session_lost(&mut self) {
        for r in &self.routes {
            let _ = r.tx.send(Intake::SessionLost).await;
        }
    }

    /// Hand one message to every pipeline that takes it; returns the
    /// receive time it was stamped with.
    pub(crate) async fn route(
        &mut self,
        topic: Option<String>,
        payload: Bytes,
        id: AckId,
        redelivered: bool,
        acks: &mpsc::UnboundedSender<AckId>,
    ) -> i64 {
        let received_ms = now_ms();
        let Some(topic) = topic else {
            self.events.topic_not_utf8();
            Ack::split(id, 1, acks).into_iter().for_each(Ack::done);
            return received_ms;
        };
        let (payload, oversize) = match relay::stand_in(&payload) {
            Some(o) => (o.head, Some(o.len)),
            None => (payload, None),
        };
        let holders = self.routes.iter().filter(|r| r.input.takes(&topic)).count();
        if holders == 0 {
            Ack::split(id, 1, acks).into_iter().for_each(Ack::done);
            return received_ms;
        }
        let mut shares = Ack::split(id, holders, acks);
        for r in self.routes.iter().filter(|r| r.input.takes(&topic)) {
            let msg = Inbound {
                topic: topic.clone(),
                payload: payload.clone(),
                received_ms,
                redelivered,
                oversize,
                ack: shares.pop(),
            };
            // Waiting here is the backpressure: we stop reading from the broker.
            let _ = r.tx.send(Intake::Message(msg)).await;
        }
        received_ms
    }
}
