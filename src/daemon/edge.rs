//! The Sparkplug Edge Node's part of the wiring: its own connection, whose
//! will is the NDEATH of the coming session, and its own sink, which
//! renders the node's records for the session they go out in.
//!
//! Each connect takes the next `bdSeq` (0–255, kept in the state store so
//! that it goes on across restarts): it is registered with that connect's
//! NDEATH will, then carried by the session's NBIRTH.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::sync::mpsc;

use super::redundancy::NodePair;
use super::stop::{Phase, Stop};
use crate::clock::now_ms;
use crate::durable::sink::{Sink, SinkConfig};
use crate::durable::store::{Entry, Store};
use crate::mqtt::connection::{BeforeConnect, Connection, Granted, Role, Sparkplug, Target};
use crate::mqtt::protocol::EventLoop;
use crate::mqtt::{MqttSettings, Purpose};
use crate::ops::events::sparkplug::NodeEvents;
use crate::ops::health::Health;
use crate::redundancy::NodeSessions;
use crate::sparkplug::node::EdgeNode;
use crate::sparkplug::session::Session;
use crate::sparkplug::SparkplugSettings;

const BD_SEQ_KEY: &str = "sparkplug_bd_seq";

/// What the node's part is started with.
pub(super) struct Node<'a> {
    pub mqtt: &'a MqttSettings,
    pub sparkplug: &'a SparkplugSettings,
    /// `limits.max_payload_bytes`.
    pub max_payload: usize,
    pub store: &'a Arc<Store>,
    pub health: &'a Arc<Health>,
    /// Under `[redundancy]`: the pair's controller grants the session.
    pub pair: Option<NodePair>,
}

/// Start the node's sink and connection under `stop`: the sink publishes
/// the Sparkplug records the workers send on `records` (and `backlog`, the
/// outbox's from before), and drains at the stop's sinks phase; the
/// connection ends on the sink's DISCONNECT.
pub(super) fn start(
    node: Node,
    config: SinkConfig,
    backlog: Vec<Entry>,
    records: mpsc::UnboundedReceiver<Vec<Entry>>,
    stop: &Stop,
) -> anyhow::Result<()> {
    let Node { mqtt, sparkplug: sp, max_payload, store, health, pair } = node;
    health.set_sparkplug(false);
    let purpose = Purpose::Sparkplug { client_id: sp.client_id.clone() };
    let (client, eventloop) = crate::mqtt::connect(&purpose, mqtt, &mqtt.brokers[0], max_payload, None);
    // Connection -> sink: what happens on the node's connection (unbounded:
    // the connection must never wait for its sink, which waits on it).
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    // Sink -> connection: end the session (one request per primary-host offline).
    let (end_tx, end_rx) = mpsc::unbounded_channel();
    // The node's sink takes no control messages (no status, no dead letters).
    let (_, control_rx) = mpsc::channel(1);
    let bd_seq = Arc::new(AtomicU64::new(0));
    let next =
        store.counter(BD_SEQ_KEY).context("cannot read the Sparkplug bdSeq")?.map_or(0, |v| (v + 1) % 256);
    let sessions = pair.as_ref().map(|p| p.sessions.clone());
    let before_connect = next_session(next, bd_seq.clone(), sp, store.clone(), sessions);
    let session = Session::new(EdgeNode::new(sp.node.clone()), bd_seq, end_tx);
    let sink = Sink::new(client.clone(), store.clone(), config, backlog).with_node(session);
    let (sink, granted) = match pair {
        Some(p) => {
            let sink = sink.redundant(p.redundant).follows(p.grant.subscribe());
            (sink, Some(Granted { grant: p.grant, until: stop.token(Phase::Connections) }))
        }
        None => (sink, None),
    };
    let role = Role::Sparkplug(Sparkplug { before_connect, end_session: Some(end_rx), granted });
    let target = Target { settings: mqtt.clone(), purpose, max_payload };
    let conn = Connection::new(target, sp.node.filters(), link_tx, Some(health.clone()), role);
    let n = &sp.node;
    NodeEvents.starting(&n.group_id, &n.edge_node_id, n.primary_host_id.as_deref());
    stop.spawn(Phase::Sinks, sink.run(records, control_rx, link_rx, stop.token(Phase::Sinks)));
    stop.spawn(Phase::Connections, conn.run(eventloop, client));
    Ok(())
}

/// Before each connect: the session's `bdSeq` (from `next`, stored so that
/// it goes on after a restart) and its NDEATH as the connection's will.
/// Under a pair, the `bdSeq` follows the newest one heard of the node
/// (either instance's; see [`NodeSessions`]).
fn next_session(
    mut next: u64,
    current: Arc<AtomicU64>,
    sp: &SparkplugSettings,
    store: Arc<Store>,
    sessions: Option<Arc<Mutex<NodeSessions>>>,
) -> BeforeConnect {
    let node = sp.node.clone();
    Box::new(move |l: &mut EventLoop| {
        if let Some(s) = &sessions {
            next = s.lock().unwrap_or_else(|p| p.into_inner()).connecting(next);
        }
        current.store(next, Ordering::SeqCst);
        if let Err(e) = store.set_counter(BD_SEQ_KEY, next) {
            NodeEvents.bd_seq_unstored(next, &e.to_string());
        }
        let will = node.ndeath(next, now_ms());
        l.set_will(&will.topic, &will.payload);
        next = (next + 1) % 256;
    })
}
