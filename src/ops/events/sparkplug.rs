//! The Sparkplug Edge Node's events: its start, births, rebirths and the
//! sessions it ends.

use tracing::{debug, info, warn};

/// The Edge Node's events.
#[derive(Debug, Default)]
pub(crate) struct NodeEvents;

impl NodeEvents {
    /// The node starts (its connection and sink).
    pub(crate) fn starting(&self, group: &str, node: &str, primary_host: Option<&str>) {
        info!(%group, %node, ?primary_host, "sparkplug edge node starting");
    }

    /// NBIRTH and `devices` DBIRTHs went out.
    pub(crate) fn births(&self, devices: usize) {
        info!(devices, "sparkplug: births published");
    }

    /// A host asked for a rebirth (NCMD on `topic`).
    pub(crate) fn rebirth(&self, topic: &str) {
        info!(%topic, "sparkplug: rebirth");
    }

    /// The primary host went offline: the session ends (NDEATH) and the node reconnects.
    pub(crate) fn primary_host_offline(&self) {
        warn!("sparkplug: the primary host went offline; ending the session (NDEATH) and reconnecting");
    }

    /// A message on the node's subscriptions that asks for nothing, and why.
    pub(crate) fn ignored(&self, topic: &str, why: &str) {
        debug!(%topic, "sparkplug: {why}");
    }

    /// The next `bdSeq` could not be stored (it may repeat after a restart).
    pub(crate) fn bd_seq_unstored(&self, bd_seq: u64, why: &str) {
        warn!("sparkplug: cannot store bdSeq {bd_seq}: {why}");
    }
}
