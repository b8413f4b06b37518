//! Broker connection settings and reconnect pacing.
//!
//! rumqttc reconnects the moment `poll()` is called after an error, so the
//! caller sleeps `Backoff::next()` between failures. The session is
//! persistent (`clean_session = false` under the configured, stable client
//! id): the broker keeps our subscriptions and queues QoS 1 telemetry while we
//! are away, and in-flight score publishes survive a reconnect.

use std::time::Duration;

use rand::Rng;
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use crate::config::{Settings, SparkplugSettings};
use crate::sparkplug::node::OutMessage;
use crate::status;

/// Extra room above the payload limit for topic and packet headers.
const PACKET_OVERHEAD: usize = 64 * 1024;

pub fn options(settings: &Settings) -> MqttOptions {
    let m = &settings.raw.mqtt;
    let mut o = base(settings, &m.client_id);
    o.set_clean_session(false);
    // Telemetry is acknowledged only after its effect is committed (see ack.rs).
    o.set_manual_acks(true);
    o.set_last_will(LastWill::new(
        settings.status_topic(),
        status::offline(&m.client_id),
        QoS::AtLeastOnce,
        true,
    ));
    o
}

/// The Sparkplug Edge Node's connection: a clean session, as Sparkplug
/// requires (births are republished at every connect), with the NDEATH of
/// the coming session as its will (see [`set_will`]).
pub fn sparkplug_options(settings: &Settings, sp: &SparkplugSettings) -> MqttOptions {
    let mut o = base(settings, &sp.client_id);
    o.set_clean_session(true);
    o.set_manual_acks(false);
    o
}

/// Register `message` as the will for the next connect (Sparkplug NDEATH).
pub fn set_will(o: &mut MqttOptions, message: &OutMessage) {
    o.set_last_will(LastWill::new(message.topic.clone(), message.payload.clone(), QoS::AtLeastOnce, false));
}

fn base(settings: &Settings, client_id: &str) -> MqttOptions {
    let m = &settings.raw.mqtt;
    let mut o = MqttOptions::new(client_id, m.host.clone(), m.port);
    o.set_keep_alive(settings.keep_alive());
    // Larger than any payload we accept, so an oversized message reaches our
    // own check (and is rejected and acknowledged) instead of killing the
    // connection and being redelivered forever by the persistent session.
    let incoming = settings.raw.limits.max_payload_bytes.saturating_mul(4).saturating_add(PACKET_OVERHEAD);
    o.set_max_packet_size(incoming, 1024 * 1024);
    o.set_request_channel_capacity(1024);
    o.set_inflight(1000);
    if let Some(user) = &m.username {
        o.set_credentials(user.clone(), settings.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &settings.tls {
        install_crypto_provider();
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: tls.ca.clone(),
            alpn: None,
            client_auth: tls.client.clone(),
        }));
    }
    o
}

/// rustls needs a process-wide crypto provider; ring's builds everywhere
/// (no cmake), for x86_64 and aarch64 gateways alike.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Capped exponential backoff with jitter, so a fleet of gateways does not
/// reconnect in lockstep after a broker restart.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The delay before the next attempt: uniform in [d/2, d], d doubling per call up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let ms = d.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        for (i, d) in delays.iter().enumerate() {
            let cap = (100u128 << i).min(1000);
            assert!(*d >= cap / 2 && *d <= cap, "attempt {i}: {d} ms outside [{}, {cap}]", cap / 2);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
