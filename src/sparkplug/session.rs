//! The Edge Node's sessions: its own connection, whose will is the NDEATH of
//! the coming session, and its own sink.
//!
//! Each connect takes the next `bdSeq` (0–255, kept in the state store so
//! that it goes on across restarts): it is registered with that connect's
//! NDEATH will, then carried by the session's NBIRTH. The sink renders the
//! node's records (births, data, deaths) for the session it is in, and asks
//! the connection to end a session when the primary host goes offline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::config::{Settings, SparkplugSettings};
use crate::daemon::stop::{Phase, Stop};
use crate::durable::sink::{Sink, SinkConfig};
use crate::durable::store::{Entry, Store};
use crate::mqtt::connection::{Connection, Role, Sparkplug};
use crate::mqtt::protocol::EventLoop;
use crate::sparkplug::node::{Command, EdgeNode, OutMessage, Record};

const BD_SEQ_KEY: &str = "sparkplug_bd_seq";

/// Start the node's sink and connection; both end with the stop.
pub fn start(
    settings: &Settings,
    sp: &SparkplugSettings,
    store: &Arc<Store>,
    config: SinkConfig,
    backlog: Vec<Entry>,
    entries: mpsc::UnboundedReceiver<Vec<Entry>>,
    stop: &Stop,
) -> anyhow::Result<()> {
    let (client, eventloop) = crate::mqtt::sparkplug(settings, sp);
    // Connection -> sink: what happens on the node's connection (unbounded:
    // the connection must never wait for the sink, which waits on it).
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    // Sink -> connection: end the session (one at a time).
    let (end_tx, end_rx) = mpsc::unbounded_channel();
    // The node's sink takes no control messages (no status, no dead letters).
    let (_, control_rx) = mpsc::channel(1);
    let bd_seq = Arc::new(AtomicU64::new(0));
    let mut next =
        store.counter(BD_SEQ_KEY).context("cannot read the Sparkplug bdSeq")?.map_or(0, |v| (v + 1) % 256);
    let (bd, node_config, st) = (bd_seq.clone(), sp.node.clone(), store.clone());
    let before_connect = Box::new(move |l: &mut EventLoop| {
        bd.store(next, Ordering::SeqCst);
        if let Err(e) = st.set_counter(BD_SEQ_KEY, next) {
            warn!("sparkplug: cannot store bdSeq {next}: {e}");
        }
        let will = node_config.ndeath(next, now_ms());
        l.set_will(&will.topic, &will.payload);
        next = (next + 1) % 256;
    });
    let session = Session::new(EdgeNode::new(sp.node.clone()), bd_seq, end_tx);
    let sink = Sink::new(client.clone(), store.clone(), config, backlog).with_node(session);
    stop.spawn(Phase::Sinks, sink.run(entries, control_rx, link_rx, stop.token(Phase::Sinks)));
    let role = Role::Sparkplug(Sparkplug { before_connect, end_session: Some(end_rx) });
    let conn = Connection::new(settings, sp.node.filters(), link_tx, None, role);
    stop.spawn(Phase::Connections, conn.run(eventloop, client));
    info!(group = %sp.node.group_id, node = %sp.node.edge_node_id, primary_host = ?sp.node.primary_host_id,
          "sparkplug edge node starting");
    Ok(())
}

/// An outbox record that is not a Sparkplug record.
#[derive(Debug)]
pub struct UnreadableRecord;

/// What a message on the node's subscriptions asks of its sink.
pub enum Reaction {
    /// Nothing to do.
    None,
    /// Publish these births now, ahead of any data (a rebirth, or the
    /// primary host came online).
    Births(Vec<OutMessage>),
    /// The primary host went offline: publish this NDEATH (QoS 1), then
    /// [`Session::end`] once the broker has it.
    End(OutMessage),
}

/// The Edge Node as its sink drives it: the node's state machine
/// (`node.rs`), this connection's `bdSeq`, the way to end a session, and an
/// index of the pending records made once per session.
pub struct Session {
    node: EdgeNode,
    bd_seq: Arc<AtomicU64>,
    end: mpsc::UnboundedSender<()>,
    /// Per device, the newest pending data record (by `seq`).
    newest_pending: Option<HashMap<String, u64>>,
}

impl Session {
    pub fn new(node: EdgeNode, bd_seq: Arc<AtomicU64>, end: mpsc::UnboundedSender<()>) -> Session {
        Session { node, bd_seq, end, newest_pending: None }
    }

    fn bd_seq(&self) -> u64 {
        self.bd_seq.load(Ordering::SeqCst)
    }

    /// A connection is up: a new session, nothing born in it yet.
    pub fn started(&mut self) {
        self.node.session_started();
        self.newest_pending = None;
    }

    /// Births are out: device data may be rendered.
    pub fn is_born(&self) -> bool {
        self.node.is_born()
    }

    /// NBIRTH and a DBIRTH per known device (none while a primary host is offline).
    pub fn births(&mut self) -> Vec<OutMessage> {
        let births = self.node.births(self.bd_seq(), now_ms());
        if !births.is_empty() {
            info!(devices = births.len() - 1, "sparkplug: births published");
        }
        births
    }

    /// A message on the node's subscriptions (NCMD, the primary host's STATE).
    pub fn command(&mut self, topic: &str, payload: &[u8]) -> Reaction {
        match self.node.command(topic, payload) {
            Command::Births => {
                info!(%topic, "sparkplug: rebirth");
                Reaction::Births(self.births())
            }
            // Sparkplug 3.0: an Edge Node that disconnects on purpose
            // publishes its NDEATH first; once the broker has it, the
            // connection disconnects cleanly (so the will does not say it a
            // second time) and connects again.
            Command::EndSession => {
                warn!(
                    "sparkplug: the primary host went offline; ending the session (NDEATH) and reconnecting"
                );
                Reaction::End(self.ndeath())
            }
            Command::Ignored(why) => {
                tracing::debug!(%topic, "sparkplug: {why}");
                Reaction::None
            }
        }
    }

    /// The session's NDEATH is acknowledged: end it.
    pub fn end(&self) {
        let _ = self.end.send(());
    }

    /// This session's NDEATH (the end of a session, and the farewell).
    pub fn ndeath(&self) -> OutMessage {
        self.node.config().ndeath(self.bd_seq(), now_ms())
    }

    /// The message for one outbox record (none for the death of a device
    /// never born).
    pub fn render(&mut self, device: &str, record: &[u8]) -> Result<Option<OutMessage>, UnreadableRecord> {
        let record = Record::decode(record).ok_or(UnreadableRecord)?;
        Ok(self.node.render(device, &record, now_ms()).pop())
    }

    /// For the record `seq` of a device not born in this session: a newer
    /// pending data record of the same device to be born with first (its
    /// `seq`), so that a device is born with its newest values and older
    /// ones follow as history. `pending` lists the queue's unpublished
    /// Sparkplug records, `(seq, device, record)`, oldest first; it is read
    /// once per session.
    pub fn birth_first<'a>(
        &mut self,
        device: &str,
        seq: u64,
        record: &[u8],
        pending: impl Iterator<Item = (u64, &'a str, &'a [u8])>,
    ) -> Option<u64> {
        // A record is JSON: `{"Data":..}` or `"Death"`.
        if self.node.device_born(device) || record.first() != Some(&b'{') {
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
