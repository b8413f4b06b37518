//! The Edge Node's sessions, as its sink drives them: births, commands
//! (rebirth, the primary host's STATE), the NDEATH that ends a session on
//! purpose, and the node's records rendered for the session they go out in.
//! The node's own state machine is [`EdgeNode`]; its start-up is the
//! daemon's ([`daemon::edge`](crate::daemon::edge)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::ops::events::sparkplug::NodeEvents;
use crate::sparkplug::node::{Command, EdgeNode, NodeRendered, OutMessage, Record};

/// An outbox record that is not a Sparkplug record.
#[derive(Debug)]
pub(crate) struct UnreadableRecord;

/// What an outbox record becomes in this session.
pub(crate) enum Rendered {
    Message(OutMessage),
    /// Nothing to publish (the death of a device never born): done.
    Nothing,
    /// A node metric the NBIRTH did not declare: publish these births
    /// first, then the record again.
    Rebirth(Vec<OutMessage>),
}

/// What a message on the node's subscriptions asks of its sink.
pub(crate) enum Reaction {
    /// Nothing to do.
    None,
    /// Publish these births now, ahead of any data (a rebirth, or the
    /// primary host came online).
    Births(Vec<OutMessage>),
    /// The primary host went offline: publish the session's NDEATH (QoS 1),
    /// then [`Session::end`] once the broker has it.
    End,
}

/// The Edge Node as its sink drives it: the node's state machine
/// ([`EdgeNode`]), this connection's `bdSeq`, the way to end a session, and an
/// index of the pending records made once per session.
pub(crate) struct Session {
    node: EdgeNode,
    bd_seq: Arc<AtomicU64>,
    end: mpsc::UnboundedSender<()>,
    /// Per device, the newest pending data record (by `seq`).
    newest_pending: Option<HashMap<String, u64>>,
    events: NodeEvents,
}

impl Session {
    pub(crate) fn new(node: EdgeNode, bd_seq: Arc<AtomicU64>, end: mpsc::UnboundedSender<()>) -> Session {
        Session { node, bd_seq, end, newest_pending: None, events: NodeEvents }
    }

    fn bd_seq(&self) -> u64 {
        self.bd_seq.load(Ordering::SeqCst)
    }

    /// A connection is up: a new session, nothing born in it yet.
    pub(crate) fn started(&mut self) {
        self.node.session_started();
        self.newest_pending = None;
    }

    /// Births are out: device data may be rendered.
    pub(crate) fn is_born(&self) -> bool {
        self.node.is_born()
    }

    /// NBIRTH and a DBIRTH per known device (none while a primary host is offline).
    pub(crate) fn births(&mut self) -> Vec<OutMessage> {
        let births = self.node.births(self.bd_seq(), now_ms());
        if !births.is_empty() {
            self.events.births(births.len() - 1);
        }
        births
    }

    /// A message on the node's subscriptions (NCMD, the primary host's STATE).
    pub(crate) fn command(&mut self, topic: &str, payload: &[u8]) -> Reaction {
        match self.node.command(topic, payload) {
            Command::Births => {
                self.events.rebirth(topic);
                Reaction::Births(self.births())
            }
            // Sparkplug 3.0: an Edge Node that disconnects on purpose
            // publishes its NDEATH first; once the broker has it, the
            // connection disconnects cleanly (so the will does not say it a
            // second time) and connects again.
            Command::EndSession => {
                self.events.primary_host_offline();
                Reaction::End
            }
            Command::Ignored(why) => {
                self.events.ignored(topic, &why);
                Reaction::None
            }
        }
    }

    /// The session's NDEATH is acknowledged: end it.
    pub(crate) fn end(&self) {
        let _ = self.end.send(());
    }

    /// This session's NDEATH (the end of a session, and the farewell).
    pub(crate) fn ndeath(&self) -> OutMessage {
        self.node.config().ndeath(self.bd_seq(), now_ms())
    }

    /// What one outbox record becomes: its message, nothing (the death of a
    /// device never born), or a rebirth first (a new node metric).
    pub(crate) fn render(&mut self, device: &str, record: &[u8]) -> Result<Rendered, UnreadableRecord> {
        let record = Record::decode(record).ok_or(UnreadableRecord)?;
        if let Record::Node { ts, metrics } = &record {
            return Ok(match self.node.render_node(*ts, metrics, now_ms()) {
                NodeRendered::Data(m) => Rendered::Message(m),
                NodeRendered::Rebirth => {
                    self.events.rebirth("a new node metric");
                    Rendered::Rebirth(self.births())
                }
                // The sink renders only once the node is born.
                NodeRendered::Unborn => Rendered::Nothing,
            });
        }
        Ok(match self.node.render(device, &record, now_ms()).pop() {
            Some(m) => Rendered::Message(m),
            None => Rendered::Nothing,
        })
    }

    /// For the record `seq` of a device not born in this session: a newer
    /// pending data record of the same device to be born with first (its
    /// `seq`), so that a device is born with its newest values and older
    /// ones follow as history. `pending` lists the queue's unpublished
    /// Sparkplug records, `(seq, device, record)`, oldest first; it is read
    /// once per session.
    pub(crate) fn birth_first<'a>(
        &mut self,
        device: &str,
        seq: u64,
        record: &[u8],
        pending: impl Iterator<Item = (u64, &'a str, &'a [u8])>,
    ) -> Option<u64> {
        // A record is JSON: `{"Data":..}`, `"Death"` or (the node's own, no device) `{"Node":..}`.
        if device.is_empty() || self.node.device_born(device) || record.first() != Some(&b'{') {
            return None;
        }
        let newest = self.newest_pending.get_or_insert_with(|| {
            let mut newest = HashMap::new();
            for (seq, device, record) in pending {
                if record.first() == Some(&b'{') {
                    newest.insert(device.to_string(), seq);
                } else {
                    newest.remove(device);
                }
            }
            newest
        });
        newest.get(device).copied().filter(|newer| *newer > seq)
    }
}
