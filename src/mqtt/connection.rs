//! One broker connection: rumqttc's poll loop, with the reconnect pacing
//! rumqttc lacks.
//!
//! The daemon has up to three, one loop each, differing by [`Role`]:
//! - **telemetry**: subscribes, routes each message to the pipelines (see
//!   [`Router`]) and leaves the acknowledgements to the acker; at the stop
//!   (its intake token) it stops routing, so what is left stays with the
//!   broker;
//! - **publisher**: carries scores, status and dead letters for its sink and
//!   hears only acknowledgements;
//! - **sparkplug**: the Edge Node's; it registers a new NDEATH will before
//!   every connect, forwards NCMD and STATE to its sink, and ends a session
//!   when the sink asks (DISCONNECT, then connect again).
//!
//! Every connection tells its sink what happens ([`Link`]): `Up` (the loop
//! waits for the sink's answer, so that nothing half-sent survives a
//! reconnect: rumqttc's retransmission state is cleared at each ConnAck),
//! `Subscribed`, `Sent` and `Acked` for each publish, `Down`.
//!
//! rumqttc reconnects the moment `poll()` is called after an error, so the
//! loop sleeps [`Backoff::next_delay`] between failures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::durable::ack::AckId;
use crate::durable::link::Link;
use crate::mqtt::options::{connect, Purpose};
use crate::mqtt::protocol::{Client, Event, EventLoop};
use crate::mqtt::relay::Relay;
use crate::mqtt::router::Router;
use crate::mqtt::{BrokerAddr, MqttSettings};
use crate::ops::events::mqtt::ConnectionEvents;
use crate::ops::health::Health;

/// Run before every connect (the Sparkplug node registers its next NDEATH will).
pub(crate) type BeforeConnect = Box<dyn FnMut(&mut EventLoop) + Send>;

/// Which of the daemon's broker connections, as `lineguard_connection_up{connection}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
pub enum ConnectionName {
    /// Intake and our PUBACKs for it.
    #[strum(serialize = "telemetry")]
    Telemetry,
    /// Scores, status and dead letters.
    #[strum(serialize = "scores")]
    Publisher,
    /// The Sparkplug Edge Node's.
    #[strum(serialize = "sparkplug")]
    Sparkplug,
    /// A redundant pair's: the peer's status, the alarm topics.
    #[strum(serialize = "watch")]
    Watch,
}

/// What a connection is for.
pub(crate) enum Role {
    Telemetry(Telemetry),
    Publisher,
    Sparkplug(Sparkplug),
    /// Under `[redundancy]`: hears what it subscribes to (the peer's status,
    /// the alarm topics) and tells its controller, publishing nothing.
    Watch,
}

pub(crate) struct Telemetry {
    pub router: Router,
    /// Where the router sends acknowledgements a message needs no work for.
    pub acks: mpsc::UnboundedSender<AckId>,
    /// Told once, after the first connection attempt (systemd's READY waits for it).
    pub attempted: Option<oneshot::Sender<()>>,
    /// The relay the connection runs through (over MQTT 3.1.1).
    pub relay: Option<Relay>,
    /// Cancelled at the stop: routing ends.
    pub intake: CancellationToken,
    /// The broker should have our session (we had one before): a connect
    /// without it means telemetry was lost (see [`Router::session_lost`]).
    pub expect_session: bool,
}

pub(crate) struct Sparkplug {
    pub before_connect: BeforeConnect,
    /// The sink asks to end the session (its NDEATH is out).
    pub end_session: Option<mpsc::UnboundedReceiver<()>>,
    /// Under `[redundancy]`: whether this instance may hold a session of
    /// the node the pair shares (its controller grants it). The connection
    /// connects only while granted, and a connection lost takes the grant
    /// back, so that the controller decides again before the next session.
    pub granted: Option<Granted>,
}

/// A redundant instance's leave to hold a Sparkplug session.
pub(crate) struct Granted {
    pub grant: Arc<watch::Sender<bool>>,
    /// Waiting for a grant ends here (the stop).
    pub until: CancellationToken,
}

/// How a connection reaches its brokers: `mqtt.hosts` in turn, the next
/// one after each connection lost or refused, each with this connection's
/// options for it ([`Purpose`]).
pub(crate) struct Target {
    pub settings: MqttSettings,
    pub purpose: Purpose,
    /// `limits.max_payload_bytes`.
    pub max_payload: usize,
}

pub(crate) struct Connection {
    filters: Vec<String>,
    target: Target,
    /// The broker in `target.settings.brokers` tried now.
    at: usize,
    backoff: Backoff,
    link: mpsc::UnboundedSender<Link>,
    health: Option<Arc<Health>>,
    events: ConnectionEvents,
    role: Role,
}

impl Connection {
    /// A connection to `target`'s brokers (the first one first),
    /// subscribing `filters` at every connect.
    pub(crate) fn new(
        target: Target,
        filters: Vec<String>,
        link: mpsc::UnboundedSender<Link>,
        health: Option<Arc<Health>>,
        role: Role,
    ) -> Connection {
        let name = match role {
            Role::Telemetry(_) => ConnectionName::Telemetry,
            Role::Publisher => ConnectionName::Publisher,
            Role::Sparkplug(_) => ConnectionName::Sparkplug,
            Role::Watch => ConnectionName::Watch,
        };
        let backoff = Backoff::new(target.settings.reconnect_min, target.settings.reconnect_max);
        Connection {
            filters,
            target,
            at: 0,
            backoff,
            link,
            health,
            events: ConnectionEvents::new(name.into()),
            role,
        }
    }

    /// The relay the connection runs through, if any (telemetry over 3.1.1).
    fn relay(&self) -> Option<&Relay> {
        match &self.role {
            Role::Telemetry(t) => t.relay.as_ref(),
            _ => None,
        }
    }

    /// The broker this connection is (or is about to be) connected to.
    fn broker(&self) -> BrokerAddr {
        match self.relay() {
            Some(r) => r.broker(),
            None => self.target.settings.brokers[self.at].clone(),
        }
    }

    /// After a loss: the next broker's options, where there are several
    /// (through a relay, the relay turns to the next one itself).
    fn next_broker(&mut self, eventloop: &mut EventLoop) {
        let brokers = &self.target.settings.brokers;
        if brokers.len() < 2 || self.relay().is_some() {
            return;
        }
        self.at = (self.at + 1) % brokers.len();
        let t = &self.target;
        let (_, fresh) = connect(&t.purpose, &t.settings, &brokers[self.at], t.max_payload, None);
        eventloop.take_options(fresh);
    }

    fn before_connect(&mut self, eventloop: &mut EventLoop) {
        if let Role::Sparkplug(s) = &mut self.role {
            (s.before_connect)(eventloop);
        }
    }

    /// Under a pair, wait until this instance may hold a Sparkplug session
    /// (false: the stop came first).
    fn granted(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let wait = match &self.role {
            Role::Sparkplug(Sparkplug { granted: Some(g), .. }) => {
                Some((g.grant.subscribe(), g.until.clone()))
            }
            _ => None,
        };
        async move {
            let Some((mut grant, until)) = wait else { return true };
            tokio::select! {
                r = grant.wait_for(|g| *g) => r.is_ok(),
                _ = until.cancelled() => false,
            }
        }
    }

    /// A session lost under a pair: its grant goes back to the controller.
    fn ungrant(&self) {
        if let Role::Sparkplug(Sparkplug { granted: Some(g), .. }) = &self.role {
            g.grant.send_replace(false);
        }
    }

    fn set_health(&self, up: bool) {
        match (&self.health, &self.role) {
            (Some(h), Role::Telemetry(_)) => h.set_connected(up),
            (Some(h), Role::Publisher) => h.set_publishing(up),
            (Some(h), Role::Sparkplug(_)) => h.set_sparkplug(up),
            _ => {}
        }
    }

    fn attempted(&mut self) {
        if let Role::Telemetry(t) = &mut self.role {
            if let Some(tx) = t.attempted.take() {
                let _ = tx.send(());
            }
        }
    }

    fn down(&mut self) {
        self.set_health(false);
        self.attempted();
        let _ = self.link.send(Link::Down);
    }

    /// Poll until the connection's DISCONNECT went out (the stop).
    pub(crate) async fn run(mut self, mut eventloop: EventLoop, client: Client) {
        let (mut subacks, mut refusals) = (0usize, 0usize);
        // Packet ids of this connection's SUBSCRIBEs, in the order of `filters`.
        let mut subscribing: Vec<u16> = Vec::new();
        let mut stopping = false;
        // A Sparkplug session is being ended on purpose: its DISCONNECT is not the stop.
        let mut ending_session = false;
        let intake = match &self.role {
            Role::Telemetry(t) => Some(t.intake.clone()),
            _ => None,
        };
        let mut end_requests = match &mut self.role {
            Role::Sparkplug(s) => s.end_session.take(),
            _ => None,
        };
        // The next connect's options are set (its will, for Sparkplug).
        let mut prepared = false;
        // Connected (a ConnAck) since the last loss.
        let mut connected = false;
        loop {
            if !prepared {
                if !self.granted().await {
                    return;
                }
                self.before_connect(&mut eventloop);
                prepared = true;
            }
            let event = tokio::select! {
                biased;
                _ = cancelled(&intake), if !stopping => {
                    stopping = true;
                    if let Role::Telemetry(t) = &mut self.role {
                        t.router.close();
                    }
                    continue;
                }
                Some(()) = next_request(&mut end_requests) => {
                    // DISCONNECT, so the broker drops the will, then connect
                    // again. Off this task: it must keep polling for the
                    // request to go out.
                    ending_session = true;
                    let client = client.clone();
                    tokio::spawn(async move {
                        let _ = client.disconnect().await;
                    });
                    continue;
                }
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Publish { topic, payload, id, dup }) => match &mut self.role {
                    Role::Sparkplug(_) | Role::Watch => {
                        if let Some(topic) = topic {
                            let _ = self.link.send(Link::Incoming { topic, payload });
                        }
                    }
                    // Stopping: not acknowledged, the broker keeps it for us.
                    Role::Telemetry(_) if stopping => {}
                    Role::Telemetry(t) => {
                        let received_ms = t.router.route(topic, payload, id, dup, &t.acks).await;
                        if let Some(h) = &self.health {
                            h.intake(received_ms);
                        }
                    }
                    Role::Publisher => {}
                },
                Ok(Event::ConnAck { session_present }) => {
                    connected = true;
                    eventloop.forget_replay();
                    self.backoff.connected();
                    self.set_health(true);
                    self.attempted();
                    (subacks, refusals) = (0, 0);
                    subscribing.clear();
                    let down = self.events.connected(&self.broker(), session_present);
                    if let Role::Telemetry(t) = &mut self.role {
                        if t.expect_session && !session_present {
                            self.events.session_lost(down);
                            t.router.session_lost().await;
                        }
                        t.expect_session = true;
                    }
                    let (ready_tx, ready_rx) = oneshot::channel();
                    if self.link.send(Link::Up { ready: ready_tx }).is_ok() {
                        let _ = ready_rx.await;
                    }
                    // Subscribing again is harmless and covers a config that gained a
                    // pipeline since the stored session was made. Off this task: it
                    // must keep polling for the requests to go out.
                    let (client, filters) = (client.clone(), self.filters.clone());
                    tokio::spawn(async move {
                        for f in filters {
                            let _ = client.subscribe(f, QoS::AtLeastOnce).await;
                        }
                    });
                }
                Ok(Event::Subscribing(pkid)) => subscribing.push(pkid),
                Ok(Event::SubAck { pkid, refused }) => {
                    subacks += 1;
                    if refused {
                        // SUBSCRIBEs go out one per filter, in order.
                        let filter =
                            subscribing.iter().position(|p| *p == pkid).and_then(|i| self.filters.get(i));
                        let filter = filter.map_or("?", String::as_str);
                        if let Role::Watch = self.role {
                            // What it watches is what the pair decides by: connect
                            // again until every subscription is granted.
                            let delay = self.backoff.next_delay();
                            self.events.watch_refused(filter, delay);
                            eventloop.drop_connection();
                            self.down();
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                        self.events.subscription_refused(filter);
                        refusals += 1;
                        if let (Some(h), Role::Telemetry(_)) = (&self.health, &self.role) {
                            h.subscription_refused(filter);
                        }
                    }
                    // The watch subscribes its peer's status again on request
                    // (see the redundancy controller): each of those says so too.
                    let again = subacks > self.filters.len() && matches!(self.role, Role::Watch);
                    if subacks == self.filters.len() || again {
                        if let (Some(h), 0, Role::Telemetry(_)) = (&self.health, refusals, &self.role) {
                            h.subscriptions_granted();
                        }
                        let _ = self.link.send(Link::Subscribed);
                    }
                }
                Ok(Event::PubAck { pkid, refused }) => {
                    let _ = self.link.send(Link::Acked { pkid, refused });
                }
                Ok(Event::Sent(pkid)) => {
                    let _ = self.link.send(Link::Sent(pkid));
                }
                Ok(Event::Disconnected) if ending_session => {
                    (ending_session, connected, prepared) = (false, false, false);
                    eventloop.drop_connection();
                    self.down();
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
                Ok(Event::Disconnected) => return,
                Ok(Event::Other) => {}
                Err(e) => {
                    // Through the relay, rumqttc sees only its socket close; the relay knows why.
                    let e = self.relay().and_then(Relay::take_error).unwrap_or(e);
                    self.down();
                    if std::mem::take(&mut connected) {
                        self.ungrant();
                    }
                    self.next_broker(&mut eventloop);
                    prepared = false;
                    let delay = self.backoff.next_delay();
                    self.events.connection_failed(&e, delay, &self.broker());
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Resolves when `token` (if any) is cancelled; never without one.
async fn cancelled(token: &Option<CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The next request on `rx` (if any); never without one.
async fn next_request(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Capped exponential backoff with jitter, so a fleet of gateways does not
/// reconnect in lockstep after a broker restart. A connection counts as
/// healthy only once it has stayed up for [`STABLE_AFTER`]: one that the
/// broker accepts and then drops at once (a message it keeps sending that
/// kills it, a session taken over) goes on backing off instead of
/// reconnecting at full speed forever.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    up_since: Option<Instant>,
}

/// How long a connection must last before the backoff starts from `min` again.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(10);

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min, up_since: None }
    }

    /// The delay before the next attempt: uniform in [d/2, d], d doubling per
    /// call up to `max`, from `min` again if the last connection was stable.
    pub(crate) fn next_delay(&mut self) -> Duration {
        if self.up_since.take().is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
            self.next = self.min;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let ms = d.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
    }

    /// A connection is up (the broker accepted it).
    pub(crate) fn connected(&mut self) {
        self.up_since = Some(Instant::now());
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
        // A connection that dies at once does not reset it...
        b.connected();
        assert!(b.next_delay() >= Duration::from_millis(500), "still backing off");
        // ...one that lasted does.
        b.connected();
        b.up_since = Some(Instant::now() - STABLE_AFTER);
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
