//! The Edge Node's start-up: its own connection, whose will is the NDEATH
//! of the coming session, and its own sink.
//!
//! Each connect takes the next `bdSeq` (0–255, kept in the state store so
//! that it goes on across restarts): it is registered with that connect's
//! NDEATH will, then carried by the session's NBIRTH.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::config::{Settings, SparkplugSettings};
use crate::durable::sink::{Sink, SinkConfig};
use crate::durable::store::{Entry, Store};
use crate::mqtt::connection::{Connection, Role, Sparkplug};
use crate::mqtt::protocol::EventLoop;
use crate::sparkplug::node::EdgeNode;
use crate::sparkplug::session::Session;

const BD_SEQ_KEY: &str = "sparkplug_bd_seq";

/// The node's sink and its connection, to be run (the sink drains once
/// `drain` is cancelled, then disconnects, which ends the connection);
/// `health` learns whether the node's connection is up (the status page).
// Each argument is a distinct part of the daemon's wiring; a struct that
// only bundles them for this call would say no more.
#[allow(clippy::too_many_arguments)]
pub fn start(
    settings: &Settings,
    sp: &SparkplugSettings,
    store: &Arc<Store>,
    config: SinkConfig,
    backlog: Vec<Entry>,
    entries: mpsc::UnboundedReceiver<Vec<Entry>>,
    drain: CancellationToken,
    health: Arc<crate::ops::health::Health>,
) -> anyhow::Result<(impl Future<Output = ()> + Send, impl Future<Output = ()> + Send)> {
    health.set_sparkplug(false);
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
    let role = Role::Sparkplug(Sparkplug { before_connect, end_session: Some(end_rx) });
    let conn = Connection::new(settings, sp.node.filters(), link_tx, Some(health), role);
    info!(group = %sp.node.group_id, node = %sp.node.edge_node_id, primary_host = ?sp.node.primary_host_id,
          "sparkplug edge node starting");
    Ok((sink.run(entries, control_rx, link_rx, drain), conn.run(eventloop, client)))
}
