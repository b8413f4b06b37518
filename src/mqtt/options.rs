//! The options of each broker connection, by what the connection is for
//! ([`Purpose`]), for any of the brokers `mqtt.hosts` names: a connection
//! that loses its broker is given the next one's options (see
//! [`Connection`](crate::mqtt::connection::Connection)).
//!
//! The telemetry session is persistent (no clean start, under the
//! configured, stable client id; with MQTT 5 a session that never expires):
//! the broker keeps our subscriptions and queues QoS 1 telemetry while we
//! are away.

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::mqtt::protocol::{self, Client, EventLoop};
use crate::mqtt::relay::Relay;
use crate::mqtt::{BrokerAddr, MqttSettings, Protocol};

/// Extra room above the payload limit for topic and packet headers.
const PACKET_OVERHEAD: usize = 64 * 1024;
/// Room for a PUBLISH's topic (at most 64 KiB) and headers above the payload.
const TOPIC_ROOM: usize = 2 * 64 * 1024;
/// Score publishes in flight at once (the broker may allow fewer).
const OUTGOING_INFLIGHT: u16 = 1000;

/// A connection's last will: retained, QoS 1 (the daemon's `offline` status).
#[derive(Debug, Clone)]
pub(crate) struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What a connection is for, and so how it is made.
#[derive(Debug, Clone)]
pub(crate) enum Purpose {
    /// Telemetry in: a persistent session, manual acknowledgements
    /// (telemetry is acknowledged only after its effect is committed, see
    /// [`Ack`](crate::durable::ack::Ack)), and the daemon's `offline` as its
    /// will. It publishes nothing: scores go out on the publisher's
    /// connection. Over MQTT 3.1.1 it runs through the [`Relay`], which
    /// keeps any PUBLISH above [`relay_limit`] from reaching rumqttc.
    Telemetry { will: Will },
    /// Scores, status and dead letters, beside the telemetry connection.
    ///
    /// Why a second connection: rumqttc takes requests in order and takes
    /// none while its outgoing window is full, so on one connection our
    /// telemetry PUBACKs queued behind score publishes waiting for the
    /// broker, and behind a broker that lets few unacknowledged messages
    /// through that held intake to the pace of score acknowledgements
    /// (BENCHMARKS.md).
    ///
    /// MQTT 5 by default (`mqtt.scores_protocol`): its PUBACK carries a
    /// reason code, so a publish the broker refuses (an ACL) is known as
    /// refused; over 3.1.1 the broker acknowledges it like any other. The
    /// broker's own Receive Maximum (mosquitto: `max_inflight_messages`,
    /// 20) caps score publishes in flight, which costs little since no
    /// telemetry PUBACK waits behind them. A clean session: the sink
    /// republishes every unacknowledged score from the outbox at each
    /// connect, so there is nothing for the broker to keep. Its will is
    /// `offline`, like the telemetry connection's: either one lost says the
    /// daemon is not doing its job.
    Publisher { will: Will },
    /// The Sparkplug Edge Node's: MQTT 3.1.1, which every Sparkplug host
    /// speaks, and a clean session, as Sparkplug requires (births are
    /// republished at every connect), with the NDEATH of the coming session
    /// as its will (see [`EventLoop::set_will`]).
    Sparkplug { client_id: String },
    /// A redundant pair's watch on its peer (`{client_id}-watch`): MQTT
    /// 3.1.1, a clean session (what it needs is retained), no will.
    Watch,
    /// `lineguard record`'s: MQTT 3.1.1, a clean session under
    /// `{client_id}-record`, so it never takes over the daemon's session
    /// (nor its queued telemetry); acknowledged as it reads.
    Recorder,
}

/// A connection for `purpose` to `broker` (through `relay`, for telemetry
/// over MQTT 3.1.1). `max_payload` is the largest telemetry payload
/// lineguard reads (`limits.max_payload_bytes`).
pub(crate) fn connect(
    purpose: &Purpose,
    m: &MqttSettings,
    broker: &BrokerAddr,
    max_payload: usize,
    relay: Option<&Relay>,
) -> (Client, EventLoop) {
    use rumqttc::v5::mqttbytes::{v5::LastWill as Will5, QoS as QoS5};
    let will5 = |w: &Will| Will5::new(w.topic.clone(), w.payload.clone(), QoS5::AtLeastOnce, true, None);
    let will = |w: &Will| LastWill::new(w.topic.clone(), w.payload.clone(), QoS::AtLeastOnce, true);
    match (purpose, m.protocol, m.scores_protocol) {
        (Purpose::Telemetry { will: w }, Protocol::V5, _) => {
            let mut o = base5(m, broker, &m.client_id, max_payload);
            o.set_clean_start(false);
            // 0xFFFFFFFF: the session never expires, as a 3.1.1 persistent
            // session (0, the default, would end it at every disconnect).
            o.set_session_expiry_interval(Some(u32::MAX));
            o.set_receive_maximum(Some(m.receive_maximum));
            o.set_manual_acks(true);
            o.set_last_will(will5(w));
            protocol::v5(o)
        }
        (Purpose::Telemetry { will: w }, Protocol::V311, _) => {
            let mut o = match relay {
                Some(r) => via_relay(m, &m.client_id, r, max_payload),
                None => base(m, broker, &m.client_id, max_payload),
            };
            o.set_clean_session(false);
            o.set_manual_acks(true);
            o.set_last_will(will(w));
            protocol::v311(o)
        }
        (Purpose::Publisher { will: w }, _, Protocol::V5) => {
            let mut o = base5(m, broker, &m.publisher_client_id(), max_payload);
            o.set_clean_start(true);
            o.set_last_will(will5(w));
            protocol::v5(o)
        }
        (Purpose::Publisher { will: w }, _, Protocol::V311) => {
            let mut o = base(m, broker, &m.publisher_client_id(), max_payload);
            o.set_clean_session(true);
            o.set_last_will(will(w));
            protocol::v311(o)
        }
        (Purpose::Sparkplug { client_id }, _, _) => {
            let mut o = base(m, broker, client_id, max_payload);
            o.set_clean_session(true);
            o.set_manual_acks(false);
            protocol::v311(o)
        }
        (Purpose::Watch, _, _) => {
            let mut o = base(m, broker, &format!("{}-watch", m.client_id), max_payload);
            o.set_clean_session(true);
            o.set_manual_acks(false);
            protocol::v311(o)
        }
        (Purpose::Recorder, _, _) => {
            let mut o = base(m, broker, &format!("{}-record", m.client_id), max_payload);
            o.set_clean_session(true);
            o.set_manual_acks(false);
            protocol::v311(o)
        }
    }
}

/// Larger than any payload we accept, so an oversized message reaches our
/// own check (and is rejected and acknowledged) instead of killing the
/// connection and being redelivered forever by the persistent session.
fn incoming_limit(max_payload: usize) -> usize {
    max_payload.saturating_mul(4).saturating_add(PACKET_OVERHEAD)
}

/// What a PUBLISH may be before the relay puts a stand-in in its place: the
/// largest payload lineguard reads, and room for the topic. rumqttc reads
/// up to this much.
pub(crate) fn relay_limit(max_payload: usize) -> usize {
    max_payload.saturating_add(TOPIC_ROOM)
}

fn base(m: &MqttSettings, broker: &BrokerAddr, client_id: &str, max_payload: usize) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    common(m, &mut o, incoming_limit(max_payload));
    if let Some(t) = transport(m) {
        o.set_transport(t);
    }
    o
}

/// To the broker through the relay's socket (which does TLS if configured).
fn via_relay(m: &MqttSettings, client_id: &str, relay: &Relay, max_payload: usize) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, relay.socket().display().to_string(), 0);
    common(m, &mut o, relay_limit(max_payload));
    o.set_transport(Transport::Unix);
    o
}

fn common(m: &MqttSettings, o: &mut MqttOptions, incoming: usize) {
    o.set_keep_alive(m.keep_alive);
    o.set_max_packet_size(incoming, 1024 * 1024);
    o.set_request_channel_capacity(1024);
    o.set_inflight(OUTGOING_INFLIGHT);
    if let Some(user) = &m.username {
        o.set_credentials(user.clone(), m.password.clone().unwrap_or_default());
    }
}

fn base5(
    m: &MqttSettings,
    broker: &BrokerAddr,
    client_id: &str,
    max_payload: usize,
) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(m.keep_alive);
    // Told to the broker in CONNECT: it does not send us anything larger.
    o.set_max_packet_size(Some(u32::try_from(incoming_limit(max_payload)).unwrap_or(u32::MAX)));
    o.set_request_channel_capacity(1024);
    o.set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT);
    if let Some(user) = &m.username {
        o.set_credentials(user.clone(), m.password.clone().unwrap_or_default());
    }
    if let Some(t) = transport(m) {
        o.set_transport(t);
    }
    o
}

fn transport(m: &MqttSettings) -> Option<Transport> {
    let tls = m.tls.as_ref()?;
    install_crypto_provider();
    Some(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: tls.ca.clone(),
        alpn: None,
        client_auth: tls.client.clone(),
    }))
}

/// rustls needs a process-wide crypto provider; ring's builds everywhere
/// (no cmake), for x86_64 and aarch64 gateways alike.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
