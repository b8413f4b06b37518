//! A redundant pair's controller: it watches the peer's status and the
//! alarm topics on a connection of its own, decides (through
//! [`Standing`]) whether this instance publishes, and tells the sink
//! (its [`Gate`]), the status topic and the operators.
//!
//! It decides every [`LOOK_EVERY`]: a change of the peer's status, of this
//! instance's connections or of its data clock is acted on within that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::status::{Board, PairStatus, PeerView};
use super::stop::{Phase, Stop};
use crate::durable::link::Link;
use crate::durable::sink::{Control, Gate, Redundant};
use crate::mqtt::connection::{Connection, Role, Target};
use crate::mqtt::protocol::Client;
use crate::mqtt::{MqttSettings, Purpose};
use crate::ops::events::redundancy::RedundancyEvents;
use crate::ops::health::Health;
use crate::redundancy::{self, NodeSessions, Peer, RedundancySettings, Standing, Why};
use crate::sparkplug::node::{bd_seq_of, NodeConfig};

/// How often it decides again.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// After its subscriptions are granted, what it gives the broker to deliver
/// what it retains (the peer's status) before deciding without it.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the status repeats this instance's data clock while it moves
/// (the primary catches up with the backup's): at most once a second.
const CLOCK_EVERY: Duration = Duration::from_secs(1);

/// What the controller is started with.
pub(super) struct Pair<'a> {
    pub redundancy: &'a RedundancySettings,
    pub mqtt: &'a MqttSettings,
    /// `limits.max_payload_bytes`.
    pub max_payload: usize,
    /// The pipelines' alarm topic filters.
    pub alarm_filters: Vec<String>,
    pub health: Arc<Health>,
    pub board: Board,
    /// The score publisher's sink.
    pub control: mpsc::Sender<Control>,
    /// The Edge Node the pair shares (under `[sparkplug]`).
    pub node: Option<NodeConfig>,
}

/// What the Edge Node's part is started with under a pair: the grant of
/// the node's session (which its connection and sink follow), what is
/// known of the node's sessions (its `bdSeq` follows them), and how its
/// sink stands by.
pub(super) struct NodePair {
    pub grant: Arc<watch::Sender<bool>>,
    pub sessions: Arc<Mutex<NodeSessions>>,
    pub redundant: Redundant,
}

/// What the status says before the first decision: standing by.
pub(super) fn before_deciding(r: &RedundancySettings) -> PairStatus {
    PairStatus {
        role: r.role.as_str(),
        active: false,
        ready: false,
        data_ts: 0,
        sparkplug_bd_seq: None,
        why: Why::Listening.as_str(),
        peer: PeerView { client_id: r.peer.clone(), status: "unknown", active: None, data_ts: None },
    }
}

/// What the score publisher's sink needs to stand by and take over.
pub(super) fn sink_side(r: &RedundancySettings) -> Redundant {
    Redundant { replay: r.takeover_replay, alarms_seen: Arc::default() }
}

/// Start the watch connection and the controller under `stop`; `redundant`
/// is what the sink was made with (the alarm states seen are shared).
/// Under `[sparkplug]`, returns what the Edge Node's part follows.
pub(super) fn start(pair: Pair, redundant: &Redundant, stop: &Stop) -> Option<NodePair> {
    let Pair { redundancy, mqtt, max_payload, alarm_filters, health, board, control, node } = pair;
    let purpose = Purpose::Watch;
    let (client, eventloop) = crate::mqtt::connect(&purpose, mqtt, &mqtt.brokers[0], max_payload, None);
    let peer_topic = redundancy.peer_status_topic();
    let mut filters = vec![peer_topic.clone()];
    filters.extend(alarm_filters);
    let node = node.map(|n| NodeSide {
        birth_topic: n.topic("NBIRTH", None),
        death_topic: n.topic("NDEATH", None),
        sessions: Arc::default(),
        grant: Arc::new(watch::Sender::new(false)),
        granted: false,
        waiting_since: None,
        relisten: Relisten::Heard,
    });
    if let Some(n) = &node {
        filters.extend([n.birth_topic.clone(), n.death_topic.clone()]);
    }
    let node_pair = node.as_ref().map(|n| NodePair {
        grant: n.grant.clone(),
        sessions: n.sessions.clone(),
        redundant: sink_side(redundancy),
    });
    let (link_tx, link) = mpsc::unbounded_channel();
    let target = Target { settings: mqtt.clone(), purpose, max_payload };
    let conn = Connection::new(target, filters, link_tx, None, Role::Watch);
    stop.spawn(Phase::Connections, conn.run(eventloop, client.clone()));
    let patience = 3 * mqtt.keep_alive;
    let controller = Controller {
        standing: Standing::new(redundancy.role, patience, Instant::now()),
        events: RedundancyEvents::new(redundancy.role.as_str()),
        peer_id: redundancy.peer.clone(),
        peer_topic,
        alarms_seen: redundant.alarms_seen.clone(),
        health,
        board,
        control,
        settle: None,
        seen_ups: 0,
        gate_sent: None,
        said: None,
        node,
        watch: client,
        patience,
    };
    let (deciding, ending) = (stop.token(Phase::Sinks), stop.token(Phase::Connections));
    stop.spawn(Phase::Connections, controller.run(link, deciding, ending));
    node_pair
}

/// What the status says of this instance's standing: active, ready, and
/// the Sparkplug session it holds.
type Said = (bool, bool, Option<u64>);

/// The Edge Node's side of the controller: who holds the node's session.
struct NodeSide {
    birth_topic: String,
    death_topic: String,
    sessions: Arc<Mutex<NodeSessions>>,
    grant: Arc<watch::Sender<bool>>,
    /// Granted, as the controller last said it.
    granted: bool,
    /// Since when it has been active without the grant (waiting for the
    /// peer's session to end).
    waiting_since: Option<Instant>,
    relisten: Relisten,
}

/// After its session was lost, an instance hears the peer afresh before
/// the next: what it heard before may be what the broker had sent it before
/// the loss (a frozen instance reads it on waking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relisten {
    Heard,
    /// Until the watch connection subscribes again.
    AwaitSubscribe,
    /// Until the peer's status (or its absence, once settled) is heard.
    AwaitStatus,
}

struct Controller {
    standing: Standing,
    events: RedundancyEvents,
    peer_id: String,
    peer_topic: String,
    alarms_seen: Arc<Mutex<HashMap<String, i64>>>,
    health: Arc<Health>,
    board: Board,
    control: mpsc::Sender<Control>,
    /// When what the broker retains counts as delivered.
    settle: Option<Instant>,
    /// The publisher's connects when it last looked.
    seen_ups: u64,
    /// The last gate sent to the sink, for which connect.
    gate_sent: Option<(bool, u64)>,
    /// The last status said: whether active or ready, the Sparkplug session
    /// it holds, the data clock, when.
    said: Option<(Said, i64, Instant)>,
    node: Option<NodeSide>,
    /// The watch connection's client.
    watch: Client,
    /// `3 × keep_alive_secs`: how long it waits for what it should hear.
    patience: Duration,
}

impl Controller {
    /// Decide until the stop reaches the sinks (the gate then stays as it
    /// is while the sink drains), then end the watch connection with the
    /// connections.
    async fn run(
        mut self,
        mut link: mpsc::UnboundedReceiver<Link>,
        deciding: CancellationToken,
        ending: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link_open = true;
        loop {
            tokio::select! {
                biased;
                _ = deciding.cancelled() => break,
                l = link.recv(), if link_open => match l {
                    Some(l) => self.on_link(l),
                    None => link_open = false,
                },
                _ = tick.tick() => self.decide().await,
            }
        }
        // Keep answering the watch connection until the connections end.
        loop {
            tokio::select! {
                biased;
                _ = ending.cancelled() => break,
                l = link.recv(), if link_open => match l {
                    Some(l) => answer(l),
                    None => link_open = false,
                },
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.watch.disconnect()).await;
        while let Ok(Some(l)) = tokio::time::timeout(Duration::from_secs(1), link.recv()).await {
            answer(l);
        }
    }

    fn on_link(&mut self, l: Link) {
        match l {
            Link::Up { ready } => {
                let _ = ready.send(());
                self.settle = None;
            }
            Link::Subscribed => {
                self.settle = Some(Instant::now() + SETTLE);
                self.standing.subscribed();
                if let Some(n) = self.node.as_mut().filter(|n| n.relisten == Relisten::AwaitSubscribe) {
                    n.relisten = Relisten::AwaitStatus;
                }
            }
            Link::Down => {
                self.settle = None;
                self.standing.unsubscribed();
            }
            Link::Incoming { topic, payload } if topic == self.peer_topic => {
                let peer = Peer::from_status(&payload);
                if let Some(n) = &mut self.node {
                    if n.relisten == Relisten::AwaitStatus {
                        n.relisten = Relisten::Heard;
                    }
                    let holds = held_by(&payload);
                    n.sessions.lock().unwrap_or_else(|p| p.into_inner()).peer_holds(holds);
                }
                self.standing.peer_status(peer, Instant::now());
            }
            Link::Incoming { topic, payload }
                if self.node.as_ref().is_some_and(|n| topic == n.birth_topic || topic == n.death_topic) =>
            {
                let n = self.node.as_ref().expect("matched above");
                let Some(bd_seq) = bd_seq_of(&payload) else { return };
                let mut sessions = n.sessions.lock().unwrap_or_else(|p| p.into_inner());
                match topic == n.birth_topic {
                    true => sessions.birth(bd_seq),
                    false => sessions.death(bd_seq),
                }
            }
            Link::Incoming { topic, payload } => {
                if let Some(ts) = alarm_ts(&payload) {
                    let mut seen = self.alarms_seen.lock().unwrap_or_else(|p| p.into_inner());
                    let at = seen.entry(topic).or_insert(ts);
                    *at = (*at).max(ts);
                }
            }
            Link::Sent(_) | Link::Acked { .. } | Link::Intake(_) => {}
        }
    }

    async fn decide(&mut self) {
        let now = Instant::now();
        if self.settle.is_some_and(|at| now >= at) {
            self.settle = None;
            self.standing.heard();
            if let Some(n) = self.node.as_mut().filter(|n| n.relisten == Relisten::AwaitStatus) {
                n.relisten = Relisten::Heard;
            }
        }
        let (publisher_up, ups) = self.health.publisher();
        // The watch connection is not one it publishes on: while it is down
        // the instance goes on as it last decided.
        let up = publisher_up && self.health.intake_up();
        let reconnected = ups != self.seen_ups;
        self.seen_ups = ups;
        self.standing.connections(up, reconnected);
        if reconnected {
            // Hear the peer afresh: what the watch connection holds may be
            // from before this instance's connections were dropped.
            resubscribe(&self.watch, &self.peer_topic);
        }
        let clock = self.health.data_clock();
        if let Some((active, why)) = self.standing.decide(now, clock) {
            self.events.changed(active, why.as_str());
        }
        let active = self.standing.active();
        self.node_session(active, now);
        let standing = (active, self.standing.ready(), self.held());
        // After a reconnect the sink stands by on its own: tell it again.
        if self.gate_sent != Some((active, ups)) {
            let gate = if active { Gate::Active(ups) } else { Gate::Standby };
            if self.control.send(Control::Gate(gate)).await.is_err() {
                return;
            }
            self.gate_sent = Some((active, ups));
        }
        self.board.set_pair(self.view(clock));
        let say = match self.said {
            None => true,
            Some((was, _, _)) if was != standing => true,
            Some((_, _, _)) if reconnected => true,
            Some((_, said_clock, at)) => said_clock != clock && now.duration_since(at) >= CLOCK_EVERY,
        };
        // A primary that has not yet heard the backup's status (or cannot
        // publish its own) would read to the backup as one catching up, and
        // draw it into taking over.
        let undecided = self.standing.role() == redundancy::Role::Primary
            && matches!(self.standing.why(), Why::Listening | Why::Disconnected);
        if say
            && up
            && !undecided
            && self.control.send(Control::Online(self.board.online_payload())).await.is_ok()
        {
            self.said = Some((standing, clock, now));
        }
    }

    /// Grant the Edge Node's session to this instance while it is active,
    /// once the peer's session is heard to be over (or after `patience`);
    /// take it back when it stands down.
    fn node_session(&mut self, active: bool, now: Instant) {
        let Some(n) = &mut self.node else { return };
        if n.granted && !*n.grant.borrow() {
            // Its connection lost the session.
            n.granted = false;
            n.relisten = Relisten::AwaitSubscribe;
            resubscribe(&self.watch, &self.peer_topic);
        }
        if n.granted {
            if !active {
                n.granted = false;
                n.grant.send_replace(false);
                self.events.node_session_ended();
            }
            return;
        }
        if !active {
            n.waiting_since = None;
            return;
        }
        let waited = now.duration_since(*n.waiting_since.get_or_insert(now));
        let heard =
            n.relisten == Relisten::Heard && n.sessions.lock().unwrap_or_else(|p| p.into_inner()).free();
        if !heard && waited < self.patience {
            return;
        }
        n.granted = true;
        n.waiting_since = None;
        n.grant.send_replace(true);
        self.events.node_session_granted(heard, waited);
    }

    /// The `bdSeq` of the Edge Node session this instance holds, if any.
    fn held(&self) -> Option<u64> {
        let n = self.node.as_ref()?;
        let own = n.sessions.lock().unwrap_or_else(|p| p.into_inner()).own();
        own.filter(|_| n.granted)
    }

    fn view(&self, data_ts: i64) -> PairStatus {
        let (status, active, peer_ts) = match self.standing.peer() {
            Peer::Unknown => ("unknown", None, None),
            Peer::Offline => ("offline", None, None),
            Peer::Online { active, data_ts, .. } => ("online", Some(active), data_ts),
        };
        PairStatus {
            role: self.standing.role().as_str(),
            active: self.standing.active(),
            ready: self.standing.ready(),
            data_ts,
            sparkplug_bd_seq: self.held(),
            why: self.standing.why().as_str(),
            peer: PeerView { client_id: self.peer_id.clone(), status, active, data_ts: peer_ts },
        }
    }
}

/// Subscribe the peer's status again: the broker delivers what it retains
/// of it now, and the watch connection says `Subscribed` (on a connection
/// dropped meanwhile, the request goes with it, and the next connect
/// subscribes anyway).
fn resubscribe(watch: &Client, peer_topic: &str) {
    let (watch, topic) = (watch.clone(), peer_topic.to_string());
    tokio::spawn(async move {
        let _ = watch.subscribe(topic, rumqttc::QoS::AtLeastOnce).await;
    });
}

/// A connect must be answered, whoever listens.
fn answer(l: Link) {
    if let Link::Up { ready } = l {
        let _ = ready.send(());
    }
}

/// The `bdSeq` of the Edge Node session a peer's status says it holds.
fn held_by(status: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Status {
        sparkplug_bd_seq: Option<u64>,
    }
    serde_json::from_slice::<Status>(status).ok()?.sparkplug_bd_seq
}

/// The `ts` of an alarm state as lineguard publishes it (none for a
/// cleared retained message or anything else).
fn alarm_ts(payload: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Alarm {
        ts: i64,
    }
    serde_json::from_slice::<Alarm>(payload).ok().map(|a| a.ts)
}
