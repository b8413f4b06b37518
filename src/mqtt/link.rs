//! What a connection tells its sink: the connection's news, in order.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::mqtt::protocol::Refusal;

/// What the connection task tells the sink.
#[derive(Debug)]
pub enum Link {
    /// Connected; rumqttc state is clean. Reply once the half-done send is dropped.
    Up {
        ready: oneshot::Sender<()>,
    },
    /// This connection's subscriptions are acknowledged (the Sparkplug
    /// node: time for births).
    Subscribed,
    /// From the telemetry connection, which is not the sink's own: its
    /// subscriptions are in place (`true`: time to say `online`) or it is
    /// down (`false`).
    Intake(bool),
    Down,
    /// The event loop wrote a publish with this packet id.
    Sent(u16),
    /// The broker acknowledged this packet id; over MQTT 5 it may say it
    /// refused the message (`refused`: why).
    Acked {
        pkid: u16,
        refused: Option<Refusal>,
    },
    /// A message on a subscription of the Sparkplug node (NCMD, STATE).
    Incoming {
        topic: String,
        payload: Bytes,
    },
}
