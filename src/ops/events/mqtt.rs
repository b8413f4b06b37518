//! The broker connections' events: up, down, refused subscriptions, and
//! telemetry no pipeline can take.

use std::time::{Duration, Instant};

use metrics::{counter, gauge, Counter, Gauge};
use tracing::{error, info, warn};

use super::{names, zeroed, RateLimit};

/// Events of one broker connection, named as `lineguard_connection_up{connection}` says it.
#[derive(Debug)]
pub(crate) struct ConnectionEvents {
    name: &'static str,
    connected: Gauge,
    reconnects: Counter,
    subscriptions_refused: Counter,
    sessions_lost: Counter,
    errors: RateLimit<()>,
    down_since: Option<Instant>,
}

impl ConnectionEvents {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            connected: gauge!(names::CONNECTION_UP, "connection" => name),
            reconnects: zeroed(counter!(names::CONNECTION_RECONNECTS, "connection" => name)),
            subscriptions_refused: zeroed(counter!(names::SUBSCRIPTIONS_REFUSED)),
            sessions_lost: zeroed(counter!(names::SESSIONS_LOST, "connection" => name)),
            errors: RateLimit::default(),
            down_since: None,
        }
    }

    /// Connected to `broker`; returns for how long it was down before, if it was.
    pub(crate) fn connected(
        &mut self,
        broker: &dyn std::fmt::Display,
        session_present: bool,
    ) -> Option<Duration> {
        self.connected.set(1.0);
        let down = self.down_since.take().map(|t| t.elapsed());
        let after = down.map(|d| format!(" after {:.1} s down", d.as_secs_f64()));
        info!(
            connection = self.name,
            %broker,
            session_present,
            "connected to broker{}",
            after.unwrap_or_default()
        );
        down
    }

    /// The connection was lost or refused; the next attempt goes to `next`.
    pub(crate) fn connection_failed(
        &mut self,
        error: &str,
        retry_in: Duration,
        next: &dyn std::fmt::Display,
    ) {
        self.connected.set(0.0);
        self.reconnects.increment(1);
        self.down_since.get_or_insert_with(Instant::now);
        if let Some(suppressed) = self.errors.allow(()) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more failures since last report)")
            } else {
                String::new()
            };
            warn!(
                connection = self.name,
                "broker connection lost or refused: {error}; retrying {next} in {:.1} s{more}",
                retry_in.as_secs_f64()
            );
        }
    }

    /// The broker answered a reconnect without the session it kept for us
    /// (a restart without persistence, a cluster node without it): what was
    /// published while we were away (`down`) is gone.
    pub(crate) fn session_lost(&self, down: Option<Duration>) {
        self.sessions_lost.increment(1);
        let down = down.map_or("a moment".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
        warn!(
            connection = self.name,
            "the broker lost this connection's session: the telemetry published in the {down} it was \
             down is gone; every window it may cut starts again"
        );
    }

    /// The broker refused a subscription: nothing comes in on it.
    pub(crate) fn subscription_refused(&self, filter: &str) {
        self.subscriptions_refused.increment(1);
        error!(%filter, "the broker refused the subscription to {filter}: no telemetry comes in on it; check its ACL");
    }

    /// The broker refused one of the watch connection's subscriptions (an
    /// ACL, or a clustered broker still electing its leaders): without it
    /// the pair cannot hear its peer, so it connects again after `retry_in`.
    pub(crate) fn watch_refused(&mut self, filter: &str, retry_in: Duration) {
        self.subscriptions_refused.increment(1);
        if let Some(suppressed) = self.errors.allow(()) {
            let more = if suppressed > 0 {
                format!(" ({suppressed} more since last report)")
            } else {
                String::new()
            };
            warn!(
                connection = self.name,
                %filter,
                "the broker refused the subscription to {filter}: connecting again in {:.1} s{more}",
                retry_in.as_secs_f64()
            );
        }
    }
}

/// Events of the router: messages no pipeline can take.
#[derive(Debug)]
pub(crate) struct RouterEvents {
    topic_not_utf8: Counter,
    lines: RateLimit<()>,
}

impl Default for RouterEvents {
    fn default() -> Self {
        Self {
            topic_not_utf8: zeroed(counter!(names::UNROUTABLE, "reason" => "topic_not_utf8")),
            lines: RateLimit::default(),
        }
    }
}

impl RouterEvents {
    /// A message whose topic is not UTF-8 (MQTT 5 hands topics over as
    /// bytes): no pipeline can take it; it is acknowledged, counted and logged.
    pub(crate) fn topic_not_utf8(&mut self) {
        self.topic_not_utf8.increment(1);
        if let Some(suppressed) = self.lines.allow(()) {
            warn!(suppressed, "message dropped: its topic is not UTF-8");
        }
    }
}

/// The telemetry relay's events (see `mqtt::relay`).
#[derive(Debug, Default)]
pub(crate) struct RelayEvents;

impl RelayEvents {
    /// The broker side of a relayed connection ended (rumqttc sees it close).
    pub(crate) fn ended(&self, why: &dyn std::fmt::Display) {
        tracing::debug!("relay: broker side ended: {why}");
    }
}
