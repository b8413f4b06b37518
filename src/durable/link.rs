//! Between the sink and the connection it publishes on: what the sink
//! asks of it ([`Publisher`]), and what the connection tells the sink
//! ([`Link`]), in order.

use std::future::Future;

use bytes::Bytes;
use rumqttc::QoS;
use tokio::sync::oneshot;

/// The connection's event loop is gone: nothing more can be sent on it.
#[derive(Debug, thiserror::Error)]
#[error("the MQTT event loop is gone")]
pub(crate) struct Gone;

/// What the sink publishes with: the client of its MQTT connection.
pub(crate) trait Publisher: Clone + Send + Sync + 'static {
    /// Hand a publish to the connection; returns once it has taken it (not
    /// once the broker acknowledged it: that comes as [`Link::Acked`]).
    fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Gone>> + Send;

    /// A clean DISCONNECT (the broker drops the will).
    fn disconnect(&self) -> impl Future<Output = Result<(), Gone>> + Send;
}

/// What the connection task tells the sink.
#[derive(Debug)]
pub(crate) enum Link {
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

/// Why the broker refused a publish (an MQTT 5 PUBACK reason code of 0x80 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum Refusal {
    #[strum(serialize = "not authorized")]
    NotAuthorized,
    #[strum(serialize = "topic name invalid")]
    TopicNameInvalid,
    #[strum(serialize = "quota exceeded")]
    QuotaExceeded,
    #[strum(serialize = "payload format invalid")]
    PayloadFormatInvalid,
    #[strum(serialize = "packet identifier in use")]
    PacketIdentifierInUse,
    #[strum(serialize = "implementation specific error")]
    ImplementationSpecificError,
    #[strum(serialize = "unspecified error")]
    UnspecifiedError,
}

impl Refusal {
    /// As the metric's label and the log say it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
