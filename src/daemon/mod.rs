//! The daemon's wiring: the one place that connects the stages.
//!
//! ```text
//!            ┌──────────── acks (after commit) ◀──────────────────────────┐
//!  broker ─▶ telemetry connection ─▶ route by topic ─▶ pipeline workers ─▶ committers ─▶ store
//!    ▲   ▲     │   (rumqttc poll)   bounded          decode/window/infer   (group commit)
//!    │   │     └─ Intake ─▶ sink ◀── scores (numbered, before commit) ┘
//!    │   └ publisher connection ─┘▲ Sent/Acked/Up (outbox: publish; delete on PUBACK once committed)
//!    └──────── QoS 1 publish ─────┘
//! ```
//!
//! Two connections to the broker: the telemetry one takes intake and sends
//! our PUBACKs, the publisher one (`mqtt::publisher`) carries scores and
//! status. On one connection the PUBACKs queued behind score publishes in
//! rumqttc, and a broker that lets only a few unacknowledged messages
//! through (stock mosquitto: 20) then slowed intake to the pace of score
//! acknowledgements.
//!
//! Every request reaches rumqttc through a zero-capacity channel, so a send
//! that returned has been taken by the event loop; the connection task clears
//! rumqttc's retransmission state at each ConnAck and holds the loop until the
//! sink has reset too. That keeps the sink's view of what is in flight exact.
//!
//! With Sparkplug B output, the Edge Node has a third connection and a
//! second sink (its will is the NDEATH; see `sparkplug/mod.rs`): Sparkplug
//! records go to that sink, everything else to the first.
//!
//! Shutdown (mini-redis style): intake is cancelled — the connection task
//! stops routing and drops the pipeline channels; each worker finishes the
//! batch in hand and waits for its committer to commit everything queued
//! (messages still in the channel stay unacknowledged, so the
//! broker keeps them for the next start); then the sink drains the outbox for
//! a bounded time, publishes `offline` and disconnects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rumqttc::QoS;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::{now_ms, Deadline};
use crate::config::{Protocol, Settings, SparkplugSettings};
use crate::durable::sink::{Control, Link, NodeLink, Sink, SinkConfig};
use crate::durable::store::Store;
use crate::model::Model;
use crate::mqtt::ack::{Ack, AckId};
use crate::mqtt::protocol::{Client, Event, EventLoop};
use crate::mqtt::relay::{self, Relay};
use crate::mqtt::{self, Backoff};
use crate::ops::events::{
    ConnectionEvents, ConnectionName, ModelInService, StoreRecovered, SubscriptionRefused, TopicNotUtf8,
};
use crate::ops::health::Health;
use crate::ops::reload::{self, Board, Watched};
use crate::ops::status::{self, ModelStatus};
use crate::pipeline::worker::{Inbound, Outputs, Worker};
use crate::sparkplug::node::EdgeNode;

const INBOUND_QUEUE: usize = 1024;

/// Load every pipeline's model and card; any failure stops start-up.
pub fn load_models(settings: &Settings) -> anyhow::Result<Vec<Arc<Model>>> {
    settings
        .pipelines
        .iter()
        .map(|p| {
            let card = crate::model::card::ModelCard::load(&p.card)?;
            let model = Model::load_with_card(&p.model, card).with_context(|| format!("pipeline `{}`", p.name))?;
            model.self_test().with_context(|| format!("pipeline `{}`", p.name))?;
            if !model.card.unknown_keys.is_empty() {
                warn!(pipeline = %p.name, keys = ?model.card.unknown_keys, "model card has keys lineguard does not use");
            }
            info!(pipeline = %p.name, model = %model.card.name, version = %model.card.version,
                  sha256 = %model.sha256, "model loaded");
            Ok(Arc::new(model))
        })
        .collect()
}

struct Route {
    pipeline: crate::config::Pipeline,
    tx: mpsc::Sender<Inbound>,
}

/// `lineguard run`: logging as configured, the signal handlers before
/// anything slow (a signal must never find its default action), then
/// [`run`] until SIGTERM or SIGINT.
pub fn serve(settings: Settings) -> anyhow::Result<()> {
    crate::ops::logging::init(settings.log.format, &settings.log.level);
    let rt = crate::tools::runtime()?;
    let result = rt.block_on(async {
        let signals = crate::ops::signals::install().context("cannot install signal handlers")?;
        run(settings, signals.stop, Some(signals.hangup)).await
    });
    // A model still loading on a blocking thread need not be waited for.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Run until `shutdown` is cancelled, then drain and stop, all within
/// `state.drain_timeout_secs` of the signal. `hangup` is SIGHUP, installed
/// by the caller before anything slow starts (see `shutdown.rs`).
pub async fn run(
    settings: Settings,
    shutdown: CancellationToken,
    hangup: Option<tokio::signal::unix::Signal>,
) -> anyhow::Result<()> {
    let s = settings.clone();
    let models = tokio::select! {
        m = tokio::task::spawn_blocking(move || load_models(&s)) => m??,
        _ = shutdown.cancelled() => {
            info!("stopped while loading the models");
            return Ok(());
        }
    };
    // Installed before anything counts (the store's recovery, below).
    crate::ops::http::recorder();
    let dir = settings.state.dir.clone();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || Store::open(&dir))
            .await?
            .context("cannot open the state store")?,
    );
    StoreRecovered { path: store.path(), recovery: store.recovery() }.emit();
    let (spark_backlog, backlog): (Vec<_>, Vec<_>) =
        store.outbox().context("cannot read the outbox")?.into_iter().partition(|e| e.sparkplug);
    let health = Health::new(&settings.pipelines.iter().map(|p| p.name.clone()).collect::<Vec<_>>());
    health.set_stale_intake(settings.limits.stale_intake);
    let services_stop = CancellationToken::new();
    // Scoring matters more than its dashboard: without the port, run without it.
    if let Err(e) = crate::ops::http::serve(settings.http_listen, health.clone(), services_stop.clone()).await
    {
        tracing::error!("{e:#}; running without /metrics and /healthz");
    }
    for (p, m) in settings.pipelines.iter().zip(&models) {
        let m = ModelInService {
            pipeline: &p.name,
            model: &m.card.name,
            version: &m.card.version,
            sha256: &m.sha256,
            in_service: true,
        };
        m.emit();
    }

    let client_id = settings.mqtt.client_id.clone();
    let board = Board {
        client_id: client_id.clone(),
        models: Arc::new(Mutex::new(
            settings
                .pipelines
                .iter()
                .zip(&models)
                .map(|(p, m)| ModelStatus {
                    pipeline: p.name.clone(),
                    model: m.card.name.clone(),
                    model_version: m.card.version.clone(),
                    sha256: m.sha256.clone(),
                    input_topic: p.input.as_str().to_string(),
                    output_topic: p.output_display(settings.sparkplug.as_ref().map(|s| &s.node)),
                })
                .collect(),
        )),
    };

    // Over MQTT 3.1.1, through the relay that keeps oversize messages from
    // killing the connection (relay.rs); MQTT 5 tells the broker our limit.
    let relay = match settings.mqtt.protocol {
        Protocol::V311 => Some(
            Relay::start(
                &settings.mqtt.host,
                settings.mqtt.port,
                settings.mqtt.tls.as_ref(),
                mqtt::relay_limit(&settings),
            )
            .context("cannot start the telemetry connection's relay")?,
        ),
        Protocol::V5 => None,
    };
    // Zero capacity: see the module comment.
    let (client, eventloop) = mqtt::connect(&settings, relay.as_ref());
    let (pub_client, pub_eventloop) = mqtt::publisher(&settings);

    let stop = StopDeadlines::default();
    let (entries_tx, entries_rx) = mpsc::unbounded_channel();
    let (control_tx, control_rx) = mpsc::channel(1024);
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<AckId>();
    let (spark_tx, spark_rx) = mpsc::unbounded_channel();
    let outputs = Outputs {
        store: store.clone(),
        entries: entries_tx,
        sparkplug: settings.sparkplug.as_ref().map(|_| spark_tx),
        control: control_tx.clone(),
        dead_letter_topic: settings.limits.dead_letter_topic.clone(),
        health: health.clone(),
        deadline: stop.commits.clone(),
    };

    // Pipeline workers, each on its own thread.
    let mut routes = Vec::new();
    let mut workers = Vec::new();
    let mut watched = Vec::new();
    for (i, (p, model)) in settings.pipelines.iter().zip(&models).enumerate() {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let (swap_tx, swap_rx) = mpsc::channel(1);
        routes.push(Route { pipeline: p.clone(), tx });
        watched.push(Watched { index: i, pipeline: p.clone(), swap: swap_tx });
        let limits = settings.limits.clone();
        let worker =
            Worker::new(i, p.clone(), model.clone(), limits, outputs.clone(), settings.state.commit_interval)
                .context("cannot start a pipeline's committer thread")?;
        let rt = tokio::runtime::Handle::current();
        workers.push(
            std::thread::Builder::new()
                .name(format!("pipeline-{}", p.name))
                .spawn(move || worker.run(rx, swap_rx, rt))
                .context("cannot start a pipeline thread")?,
        );
    }
    drop(outputs);

    // Acker: PUBACKs for telemetry whose effect is committed. At the stop
    // it sends what the committers left and then DISCONNECT, in that order
    // on the one connection.
    let ack_client = client.clone();
    let acks_done = CancellationToken::new();
    let acker = tokio::spawn({
        let done = acks_done.clone();
        async move {
            loop {
                let id = tokio::select! {
                    biased;
                    id = ack_rx.recv() => id,
                    _ = done.cancelled() => break,
                };
                match id {
                    Some(id) if ack_client.ack(id).await.is_ok() => {}
                    _ => return,
                }
            }
            while let Ok(id) = ack_rx.try_recv() {
                if ack_client.ack(id).await.is_err() {
                    return;
                }
            }
            let _ = ack_client.disconnect().await;
        }
    });

    // Sink: the one publisher.
    let st = &settings.state;
    let sink_config = SinkConfig {
        status_topic: settings.status_topic(),
        offline: status::offline(&client_id),
        max_bytes: st.outbox_max_bytes,
        max_age: st.outbox_max_age,
        drain_until: stop.publishing.clone(),
        farewell: stop.farewell(settings.state.drain_timeout),
    };
    let sink = Sink::new(pub_client.clone(), store.clone(), sink_config.clone(), backlog)
        .with_health(health.clone());
    let _ = control_tx.send(Control::Online(board.online_payload())).await;
    let drain = CancellationToken::new();
    let sink = tokio::spawn(sink.run(entries_rx, control_rx, link_rx, drain.clone()));
    let node = match &settings.sparkplug {
        Some(sp) => {
            Some(start_node(&settings, sp, &store, sink_config, spark_backlog, spark_rx, drain.clone())?)
        }
        None => {
            if !spark_backlog.is_empty() {
                warn!(
                    records = spark_backlog.len(),
                    "outbox: Sparkplug records kept, but [sparkplug] is not configured"
                );
            }
            None
        }
    };

    let mut filters: Vec<String> = settings.pipelines.iter().flat_map(|p| p.filters()).collect();
    filters.sort();
    filters.dedup();
    let intake = CancellationToken::new();
    let (attempted_tx, attempted_rx) = oneshot::channel();
    let publisher = tokio::spawn(connection_loop(
        pub_eventloop,
        pub_client,
        Vec::new(),
        Connection {
            health: Some((health.clone(), Role::Publisher)),
            ..Connection::new(
                &settings,
                Vec::new(),
                link_tx.clone(),
                ConnectionEvents::new(ConnectionName::Publisher),
            )
        },
        CancellationToken::new(),
    ));
    let conn = tokio::spawn(connection_loop(
        eventloop,
        client.clone(),
        routes,
        Connection {
            acks: Some(ack_tx),
            health: Some((health.clone(), Role::Telemetry)),
            attempted: Some(attempted_tx),
            relay,
            ..Connection::new(
                &settings,
                filters,
                intake_link(link_tx),
                ConnectionEvents::new(ConnectionName::Telemetry),
            )
        },
        intake.clone(),
    ));
    let watcher_stop = CancellationToken::new();
    tokio::spawn(reload::watch(watched, board, control_tx, hangup, watcher_stop.clone()));
    // Ready: models loaded and the first connection attempted (whatever its outcome).
    tokio::select! {
        _ = attempted_rx => {}
        _ = shutdown.cancelled() => {}
    }
    crate::ops::systemd::ready();
    tokio::spawn(crate::ops::systemd::watchdog(health.clone(), services_stop.clone()));
    info!(pipelines = settings.pipelines.len(), "lineguard running");

    shutdown.cancelled().await;
    let stop_by = stop.arm(settings.state.drain_timeout);
    crate::ops::systemd::stopping();
    info!("stopping: intake closed, finishing the work in hand");
    watcher_stop.cancel();
    intake.cancel();
    let left = || stop_by.saturating_duration_since(tokio::time::Instant::now());
    for w in workers {
        if tokio::time::timeout(left(), tokio::task::spawn_blocking(move || w.join())).await.is_err() {
            warn!("stop: a pipeline did not finish in time");
        }
    }
    drain.cancel();
    if tokio::time::timeout(left(), sink).await.is_err() {
        warn!("stop: the sink did not finish in time");
    }
    let _ = tokio::time::timeout(left(), publisher).await;
    acks_done.cancel();
    let _ = tokio::time::timeout(left(), acker).await;
    let _ = tokio::time::timeout(left(), conn).await;
    if let Some((sink, conn)) = node {
        if tokio::time::timeout(left(), sink).await.is_err() {
            warn!("stop: the Sparkplug sink did not finish in time");
        }
        let _ = tokio::time::timeout(left(), conn).await;
    }
    services_stop.cancel();
    info!("stopped");
    Ok(())
}

/// The deadlines of a stop, which as a whole keeps `state.drain_timeout_secs`:
/// commits that keep failing are given up halfway, publishing ends in time
/// for the farewell (`offline`, DISCONNECT) to fit.
#[derive(Default)]
struct StopDeadlines {
    commits: Deadline,
    publishing: Deadline,
}

impl StopDeadlines {
    /// What the farewell (and the last deletes) may take: a second, less for a short drain.
    fn farewell(&self, drain: Duration) -> Duration {
        (drain / 4).min(Duration::from_secs(1))
    }

    /// The stop begins now: returns when it must be over.
    fn arm(&self, drain: Duration) -> tokio::time::Instant {
        self.commits.arm(drain / 2);
        self.publishing.arm(drain.saturating_sub(2 * self.farewell(drain)));
        tokio::time::Instant::now() + drain
    }
}

/// The sink hears from the telemetry connection only whether its
/// subscriptions are in place (`Link::Intake`); the rest of that
/// connection's news (`Up`, publishes written and acknowledged) is about a
/// connection the sink does not publish on.
fn intake_link(sink: mpsc::UnboundedSender<Link>) -> mpsc::UnboundedSender<Link> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            let told = match l {
                Link::Up { ready } => {
                    let _ = ready.send(());
                    continue;
                }
                Link::Subscribed => sink.send(Link::Intake(true)),
                Link::Down => sink.send(Link::Intake(false)),
                _ => continue,
            };
            if told.is_err() {
                return;
            }
        }
    });
    tx
}

type Task = tokio::task::JoinHandle<()>;
type BeforeConnect = Box<dyn FnMut(&mut EventLoop) + Send>;

const BD_SEQ_KEY: &str = "sparkplug_bd_seq";

/// The Sparkplug Edge Node: its own connection (will = NDEATH of the coming
/// session, `bdSeq` one more per connect, kept across restarts) and its own sink.
fn start_node(
    settings: &Settings,
    sp: &SparkplugSettings,
    store: &Arc<Store>,
    config: SinkConfig,
    backlog: Vec<crate::durable::store::Entry>,
    entries: mpsc::UnboundedReceiver<Vec<crate::durable::store::Entry>>,
    drain: CancellationToken,
) -> anyhow::Result<(Task, Task)> {
    let (client, eventloop) = mqtt::sparkplug(settings, sp);
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let (reconnect_tx, reconnect_rx) = mpsc::unbounded_channel();
    let (_control_tx, control_rx) = mpsc::channel(1);
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
    let sink = Sink::new(client.clone(), store.clone(), config, backlog).with_node(NodeLink {
        node: EdgeNode::new(sp.node.clone()),
        bd_seq,
        reconnect: reconnect_tx,
    });
    let sink = tokio::spawn(sink.run(entries, control_rx, link_rx, drain));
    let conn = tokio::spawn(connection_loop(
        eventloop,
        client,
        Vec::new(),
        Connection {
            forward: true,
            before_connect: Some(before_connect),
            reconnect: Some(reconnect_rx),
            ..Connection::new(
                settings,
                sp.node.filters(),
                link_tx,
                ConnectionEvents::new(ConnectionName::Sparkplug),
            )
        },
        CancellationToken::new(),
    ));
    info!(group = %sp.node.group_id, node = %sp.node.edge_node_id, primary_host = ?sp.node.primary_host_id,
          "sparkplug edge node starting");
    Ok((sink, conn))
}

/// Which of the daemon's two connections a health flag is about.
#[derive(Debug, Clone, Copy)]
enum Role {
    Telemetry,
    Publisher,
}

struct Connection {
    filters: Vec<String>,
    host: String,
    port: u16,
    backoff: Backoff,
    link: mpsc::UnboundedSender<Link>,
    /// Manual acknowledgements (the telemetry connection).
    acks: Option<mpsc::UnboundedSender<AckId>>,
    health: Option<(Arc<Health>, Role)>,
    /// Told once, after the first connection attempt.
    attempted: Option<oneshot::Sender<()>>,
    events: ConnectionEvents,
    /// Incoming messages go to the sink (Sparkplug commands), not to pipelines.
    forward: bool,
    /// Run before every connect (registers the Sparkplug NDEATH will).
    before_connect: Option<BeforeConnect>,
    /// Drop the connection and connect again (a Sparkplug session ends).
    reconnect: Option<mpsc::UnboundedReceiver<()>>,
    /// The relay the connection runs through (telemetry over MQTT 3.1.1).
    relay: Option<Relay>,
}

impl Connection {
    fn new(
        settings: &Settings,
        filters: Vec<String>,
        link: mpsc::UnboundedSender<Link>,
        events: ConnectionEvents,
    ) -> Self {
        let m = &settings.mqtt;
        Connection {
            filters,
            host: m.host.clone(),
            port: m.port,
            backoff: Backoff::new(m.reconnect_min, m.reconnect_max),
            link,
            acks: None,
            health: None,
            attempted: None,
            events,
            forward: false,
            before_connect: None,
            reconnect: None,
            relay: None,
        }
    }

    fn before_connect(&mut self, eventloop: &mut EventLoop) {
        if let Some(f) = &mut self.before_connect {
            f(eventloop);
        }
    }

    fn set_health(&self, up: bool) {
        match &self.health {
            Some((h, Role::Telemetry)) => h.set_connected(up),
            Some((h, Role::Publisher)) => h.set_publishing(up),
            None => {}
        }
    }

    fn down(&mut self) {
        self.set_health(false);
        if let Some(t) = self.attempted.take() {
            let _ = t.send(());
        }
        let _ = self.link.send(Link::Down);
    }
}

async fn next_reconnect(rx: &mut Option<mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn connection_loop(
    mut eventloop: EventLoop,
    client: Client,
    mut routes: Vec<Route>,
    mut c: Connection,
    intake: CancellationToken,
) {
    let (mut subacks, mut refusals) = (0usize, 0usize);
    // Packet ids of this connection's SUBSCRIBEs, in the order of `c.filters`.
    let mut subscribing: Vec<u16> = Vec::new();
    let mut stopping = false;
    // A Sparkplug session is being ended on purpose: its DISCONNECT is not the stop.
    let mut ending_session = false;
    c.before_connect(&mut eventloop);
    loop {
        let event = tokio::select! {
            biased;
            _ = intake.cancelled(), if !stopping && !c.forward => {
                stopping = true;
                routes.clear(); // workers see their channel close
                continue;
            }
            Some(()) = next_reconnect(&mut c.reconnect) => {
                // A Sparkplug session ends (its NDEATH is out): DISCONNECT,
                // so the broker drops the will, then connect again. Off this
                // task: it must keep polling for the request to go out.
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
            Ok(Event::Publish { topic, payload, id, dup }) => {
                if c.forward {
                    if let Some(topic) = topic {
                        let _ = c.link.send(Link::Incoming { topic, payload });
                    }
                    continue;
                }
                let Some(acks) = &c.acks else { continue };
                if stopping {
                    continue; // stopping: not acknowledged, the broker keeps it for us
                }
                let Some(topic) = topic else {
                    // MQTT forbids it and brokers refuse it; acknowledged, or
                    // the persistent session would deliver it forever.
                    TopicNotUtf8.emit();
                    Ack::split(id, 1, acks).into_iter().for_each(Ack::done);
                    continue;
                };
                // A stand-in for a message too large to read (relay.rs).
                let (payload, oversize) = match relay::stand_in(&payload) {
                    Some(o) => (o.head, Some(o.len)),
                    None => (payload, None),
                };
                let received_ms = now_ms();
                if let Some((h, _)) = &c.health {
                    h.intake(received_ms);
                }
                let holders = routes.iter().filter(|r| r.pipeline.takes(&topic)).count();
                if holders == 0 {
                    // Matches no pipeline (an overlapping subscription): nothing to do with it.
                    Ack::split(id, 1, acks).into_iter().for_each(Ack::done);
                    continue;
                }
                let mut shares = Ack::split(id, holders, acks);
                for r in routes.iter().filter(|r| r.pipeline.takes(&topic)) {
                    let msg = Inbound {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        received_ms,
                        redelivered: dup,
                        oversize,
                        ack: shares.pop(),
                    };
                    // Waiting here is the backpressure: we stop reading from the broker.
                    let _ = r.tx.send(msg).await;
                }
            }
            Ok(Event::ConnAck { session_present }) => {
                eventloop.forget_replay();
                c.backoff.connected();
                c.set_health(true);
                if let Some(t) = c.attempted.take() {
                    let _ = t.send(());
                }
                (subacks, refusals) = (0, 0);
                subscribing.clear();
                c.events.connected(&c.host, c.port, session_present);
                let (ready_tx, ready_rx) = oneshot::channel();
                if c.link.send(Link::Up { ready: ready_tx }).is_ok() {
                    let _ = ready_rx.await;
                }
                // Subscribing again is harmless and covers a config that gained a
                // pipeline since the stored session was made. Off this task: it
                // must keep polling for the requests to go out.
                let (client, filters) = (client.clone(), c.filters.clone());
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
                    let filter = subscribing.iter().position(|p| *p == pkid).and_then(|i| c.filters.get(i));
                    let filter = filter.map_or("?", String::as_str);
                    SubscriptionRefused { filter }.emit();
                    refusals += 1;
                    if let Some((h, _)) = &c.health {
                        h.subscription_refused(filter);
                    }
                }
                if subacks == c.filters.len() {
                    if let (Some((h, _)), 0) = (&c.health, refusals) {
                        h.subscriptions_granted();
                    }
                    let _ = c.link.send(Link::Subscribed);
                }
            }
            Ok(Event::PubAck { pkid, refused }) => {
                let _ = c.link.send(Link::Acked { pkid, refused });
            }
            Ok(Event::Sent(pkid)) => {
                let _ = c.link.send(Link::Sent(pkid));
            }
            Ok(Event::Disconnected) if ending_session => {
                ending_session = false;
                eventloop.drop_connection();
                c.down();
                c.before_connect(&mut eventloop);
                tokio::time::sleep(c.backoff.next_delay()).await;
            }
            Ok(Event::Disconnected) => return,
            Ok(Event::Other) => {}
            Err(e) => {
                // Through the relay, rumqttc sees only its socket close; the relay knows why.
                let e = c.relay.as_ref().and_then(Relay::take_error).unwrap_or(e);
                c.down();
                c.before_connect(&mut eventloop);
                let delay = c.backoff.next_delay();
                c.events.connection_failed(&e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}
