//! One MQTT connection, MQTT 5 or 3.1.1, behind the few calls lineguard makes.
//!
//! Where each is spoken:
//! - Telemetry: 3.1.1 by default (every broker speaks it), 5 on request
//!   (`mqtt.protocol`). lineguard acknowledges telemetry only once its
//!   effect is committed (see [`Ack`](crate::durable::ack::Ack)), so the number of unacknowledged
//!   messages the broker lets through sets its intake; a 3.1.1 client gets
//!   the broker's own limit (mosquitto's `max_inflight_messages`, 20), an
//!   MQTT 5 client states its own in CONNECT (Receive Maximum).
//! - Scores: 5 by default (`mqtt.scores_protocol`), because only MQTT 5's
//!   PUBACK can say that the broker refused a publish (an ACL): over 3.1.1 a
//!   refused score is acknowledged like a delivered one.
//!
//! rumqttc has one client per protocol, with the same shape; this module
//! maps both onto one set of types so that the connection task and the sink
//! are written once.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{Outgoing, QoS};

use crate::durable::ack::AckId;
use crate::durable::link::{Gone, Publisher, Refusal};

/// What the connection task acts on, whatever the protocol.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message from the broker. `topic` is `None` when it is not UTF-8
    /// (MQTT forbids that; a v5 packet carries raw bytes).
    Publish {
        topic: Option<String>,
        payload: Bytes,
        id: AckId,
        /// The broker sent it before (DUP flag).
        dup: bool,
    },
    ConnAck {
        session_present: bool,
    },
    /// The broker answered a SUBSCRIBE; `refused` when it granted nothing.
    SubAck {
        pkid: u16,
        refused: bool,
    },
    /// The broker acknowledged a QoS 1 publish. Over MQTT 5 it may say it
    /// refused it (`refused`: the reason, e.g. "not authorized" for an ACL);
    /// over 3.1.1 a refusal looks like an acknowledgement.
    PubAck {
        pkid: u16,
        refused: Option<Refusal>,
    },
    /// A publish went out under this packet id.
    Sent(u16),
    /// A SUBSCRIBE went out under this packet id.
    Subscribing(u16),
    /// Our DISCONNECT went out.
    Disconnected,
    Other,
}

#[derive(Clone)]
pub(crate) enum Client {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

pub(crate) enum EventLoop {
    V5(Box<rumqttc::v5::EventLoop>),
    V311(Box<rumqttc::EventLoop>),
}

fn qos5(q: QoS) -> QoS5 {
    match q {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

fn qos4(q: QoS5) -> QoS {
    match q {
        QoS5::AtMostOnce => QoS::AtMostOnce,
        QoS5::AtLeastOnce => QoS::AtLeastOnce,
        QoS5::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// A client and its event loop; zero capacity (see [`daemon`](crate::daemon)).
pub(crate) fn v5(options: rumqttc::v5::MqttOptions) -> (Client, EventLoop) {
    let (c, l) = rumqttc::v5::AsyncClient::new(options, 0);
    (Client::V5(c), EventLoop::V5(Box::new(l)))
}

pub(crate) fn v311(options: rumqttc::MqttOptions) -> (Client, EventLoop) {
    let (c, l) = rumqttc::AsyncClient::new(options, 0);
    (Client::V311(c), EventLoop::V311(Box::new(l)))
}

impl Publisher for Client {
    async fn publish(&self, topic: String, qos: QoS, retain: bool, payload: Bytes) -> Result<(), Gone> {
        match self {
            Client::V5(c) => c.publish_bytes(topic, qos5(qos), retain, payload).await.map_err(|_| Gone),
            Client::V311(c) => c.publish_bytes(topic, qos, retain, payload).await.map_err(|_| Gone),
        }
    }

    async fn disconnect(&self) -> Result<(), Gone> {
        Client::disconnect(self).await
    }
}

impl Client {
    pub(crate) async fn subscribe(&self, filter: String, qos: QoS) -> Result<(), Gone> {
        match self {
            Client::V5(c) => c.subscribe(filter, qos5(qos)).await.map_err(|_| Gone),
            Client::V311(c) => c.subscribe(filter, qos).await.map_err(|_| Gone),
        }
    }

    /// PUBACK for a message received under manual acknowledgement.
    pub(crate) async fn ack(&self, id: AckId) -> Result<(), Gone> {
        match self {
            Client::V5(c) => {
                let mut p = p5::Publish::new("", qos5(id.qos), Vec::new(), None);
                p.pkid = id.pkid;
                c.ack(&p).await.map_err(|_| Gone)
            }
            Client::V311(c) => {
                let mut p = rumqttc::Publish::new("", id.qos, Vec::new());
                p.pkid = id.pkid;
                c.ack(&p).await.map_err(|_| Gone)
            }
        }
    }

    pub(crate) async fn disconnect(&self) -> Result<(), Gone> {
        match self {
            Client::V5(c) => c.disconnect().await.map_err(|_| Gone),
            Client::V311(c) => c.disconnect().await.map_err(|_| Gone),
        }
    }
}

impl EventLoop {
    /// The next event; an error means the connection is down (the next
    /// call connects again, at once: the caller paces it).
    pub(crate) async fn poll(&mut self) -> Result<Event, String> {
        match self {
            EventLoop::V5(l) => {
                use rumqttc::v5::Event as E;
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    E::Incoming(p5::Packet::Publish(p)) => Event::Publish {
                        topic: String::from_utf8(p.topic.to_vec()).ok(),
                        id: AckId { pkid: p.pkid, qos: qos4(p.qos) },
                        dup: p.dup,
                        payload: p.payload,
                    },
                    E::Incoming(p5::Packet::ConnAck(a)) => {
                        Event::ConnAck { session_present: a.session_present }
                    }
                    E::Incoming(p5::Packet::SubAck(a)) => Event::SubAck {
                        pkid: a.pkid,
                        refused: !a
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, p5::SubscribeReasonCode::Success(_))),
                    },
                    E::Incoming(p5::Packet::PubAck(a)) => {
                        Event::PubAck { pkid: a.pkid, refused: refusal(a.reason) }
                    }
                    E::Outgoing(o) => outgoing(o),
                    E::Incoming(_) => Event::Other,
                })
            }
            EventLoop::V311(l) => {
                use rumqttc::{Event as E, Packet as P};
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    E::Incoming(P::Publish(p)) => Event::Publish {
                        topic: Some(p.topic),
                        id: AckId { pkid: p.pkid, qos: p.qos },
                        dup: p.dup,
                        payload: p.payload,
                    },
                    E::Incoming(P::ConnAck(a)) => Event::ConnAck { session_present: a.session_present },
                    E::Incoming(P::SubAck(a)) => Event::SubAck {
                        pkid: a.pkid,
                        refused: !a
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                    },
                    E::Incoming(P::PubAck(a)) => Event::PubAck { pkid: a.pkid, refused: None },
                    E::Outgoing(o) => outgoing(o),
                    E::Incoming(_) => Event::Other,
                })
            }
        }
    }

    /// Forget rumqttc's replay of the last connection (at a ConnAck): the
    /// outbox resends what was not acknowledged, and the broker redelivers
    /// telemetry we had not acknowledged.
    pub(crate) fn forget_replay(&mut self) {
        match self {
            EventLoop::V5(l) => {
                l.pending.clear();
                l.state.collision = None;
                l.state.events.clear();
            }
            EventLoop::V311(l) => {
                l.pending.clear();
                l.state.collision = None;
                l.state.events.clear();
            }
        }
    }

    /// Take `other`'s options (another broker's address, with everything
    /// else the same): the next connect goes there. What is in flight stays.
    pub(crate) fn take_options(&mut self, other: EventLoop) {
        match (self, other) {
            (EventLoop::V5(l), EventLoop::V5(o)) => l.options = o.options,
            (EventLoop::V311(l), EventLoop::V311(o)) => l.mqtt_options = o.mqtt_options,
            _ => debug_assert!(false, "options for another MQTT version"),
        }
    }

    /// Drop the connection without DISCONNECT (the broker publishes our will).
    pub(crate) fn drop_connection(&mut self) {
        match self {
            EventLoop::V5(l) => l.clean(),
            EventLoop::V311(l) => {
                l.network = None;
                l.clean();
            }
        }
    }

    /// The will for the next connect (QoS 1, not retained).
    pub(crate) fn set_will(&mut self, topic: &str, payload: &[u8]) {
        match self {
            EventLoop::V5(l) => {
                l.options.set_last_will(p5::LastWill::new(topic, payload, QoS5::AtLeastOnce, false, None));
            }
            EventLoop::V311(l) => {
                l.mqtt_options.set_last_will(rumqttc::LastWill::new(topic, payload, QoS::AtLeastOnce, false));
            }
        }
    }
}

/// An MQTT 5 PUBACK reason that means the message was not taken.
fn refusal(reason: p5::PubAckReason) -> Option<Refusal> {
    use p5::PubAckReason as R;
    match reason {
        R::Success | R::NoMatchingSubscribers => None,
        R::NotAuthorized => Some(Refusal::NotAuthorized),
        R::TopicNameInvalid => Some(Refusal::TopicNameInvalid),
        R::QuotaExceeded => Some(Refusal::QuotaExceeded),
        R::PayloadFormatInvalid => Some(Refusal::PayloadFormatInvalid),
        R::PacketIdentifierInUse => Some(Refusal::PacketIdentifierInUse),
        R::ImplementationSpecificError => Some(Refusal::ImplementationSpecificError),
        R::UnspecifiedError => Some(Refusal::UnspecifiedError),
    }
}

fn outgoing(o: Outgoing) -> Event {
    match o {
        Outgoing::Publish(pkid) => Event::Sent(pkid),
        Outgoing::Subscribe(pkid) => Event::Subscribing(pkid),
        Outgoing::Disconnect => Event::Disconnected,
        _ => Event::Other,
    }
}
