//! The daemon: the one place that makes every channel and task and
//! connects the stages, and what looks at them from outside (the status
//! page and `/devices`, model reloads, the status topic, systemd, signals,
//! the stop).
//!
//! ```text
//!            ┌───────────────── acker ◀── acks (after commit) ◀─────────────┐
//!  broker ─▶ telemetry connection ─▶ router ─▶ pipeline workers ─▶ committers ─▶ store
//!    ▲   ▲     │   (relay, rumqttc)   by topic  read/window/score  (group commit)
//!    │   │     └─ Intake ─▶ sink ◀── scores (numbered, before commit) ┘
//!    │   └ publisher connection ─┘▲ Sent/Acked/Up (outbox: publish; delete on PUBACK once committed)
//!    └──────── QoS 1 publish ─────┘
//! ```
//!
//! Two connections to the broker: the telemetry one takes intake and sends
//! our PUBACKs, the publisher one carries scores, status and dead letters
//! (see [`Purpose::Publisher`] for why they are two). With Sparkplug B
//! output the Edge Node has a third connection and a second sink (its will
//! is the NDEATH; see [`edge`]): Sparkplug records go to that sink,
//! everything else to the first.
//!
//! Every request reaches rumqttc through a zero-capacity channel, so a send
//! that returned has been taken by the event loop; a connection clears
//! rumqttc's retransmission state at each ConnAck and holds its loop until
//! the sink has reset too. That keeps the sink's view of what is in flight
//! exact.
//!
//! The channels, who sends and receives, and why each bound:
//!
//! | channel | from → to | bound | why |
//! | --- | --- | --- | --- |
//! | inbound (one per pipeline) | router → worker | [`INBOUND_QUEUE`] (1024) | backpressure: a full one stops reading from the broker, which keeps the rest |
//! | swap (one per pipeline) | model watcher → worker | 1 | a model (live or shadow) at a time; the watcher waits for the worker to take it |
//! | views (one per pipeline) | HTTP `/devices` → worker | [`VIEW_QUEUE`] (8) | a request is answered between two turns; more waiting than that are refused (the page asks again) |
//! | commit queue (one per pipeline) | worker → committer thread | 256 turns and 8 MiB of snapshots and score rows | a stalled disk stops the worker (and so intake) instead of growing memory; bytes, because a turn's size follows the devices it touched |
//! | entries | workers → sink | unbounded | the sink takes them at once and bounds what it keeps (`outbox_max_bytes`); a bound would stall scoring behind a broker outage |
//! | Sparkplug entries | workers → node's sink | unbounded | the same, for Sparkplug records |
//! | control | workers, model watcher → sink | [`CONTROL_QUEUE`] (1024) | dead letters are `try_send` and dropped (counted) when full; `online` waits |
//! | link (one per sink) | connections → sink | unbounded | a connection must never wait for its sink, which waits on the connection's rendezvous channel |
//! | intake link | telemetry connection → forwarder → sink | unbounded | as link; the sink hears only whether intake is subscribed |
//! | acks | committers (and router) → acker | unbounded | at most what the broker lets through unacknowledged; a committer thread must not block on the async side |
//! | end session | node's sink → node's connection | unbounded | one request per primary-host offline |
//! | ready / attempted | connection → sink / start-up | oneshot | one answer each |
//!
//! A stop runs in the named phases of [`Stop`], within
//! `state.drain_timeout_secs` of the signal; a store found corrupt at run
//! time stops the daemon the same way, and it exits non-zero.

pub(crate) mod devices;
pub(crate) mod edge;
pub(crate) mod http;
pub(crate) mod redundancy;
pub(crate) mod reload;
pub(crate) mod signals;
pub(crate) mod status;
pub(crate) mod stop;
pub(crate) mod systemd;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::durable::ack::AckId;
use crate::durable::committer::{self, Watch};
use crate::durable::link::Link;
use crate::durable::sink::{Control, Sink, SinkConfig};
use crate::durable::store::{Entry, Store};
use crate::mqtt::connection::{Connection, Role, Target, Telemetry};
use crate::mqtt::protocol::{Client, EventLoop};
use crate::mqtt::relay::Relay;
use crate::mqtt::router::{Route, Router, INBOUND_QUEUE};
use crate::mqtt::{Protocol, Purpose, Will};
use crate::ops::events::daemon::DaemonEvents;
use crate::ops::events::model::ModelEvents;
use crate::ops::events::redundancy::RedundancyEvents;
use crate::ops::health::Health;
use crate::pipeline::worker::{Daemon, Mode, Worker};
use crate::pipeline::{Pipeline, PipelineModels};
use devices::DeviceViews;
use reload::Watched;
use status::{Board, ModelStatus};
use stop::{Phase, Stop};

/// Status and dead letters waiting for the sink.
const CONTROL_QUEUE: usize = 1024;
/// `/devices` requests waiting for a pipeline.
const VIEW_QUEUE: usize = 8;

/// The async runtime every command runs on: one thread. The async side only
/// moves messages between the broker connections and the pipeline threads
/// (where the CPU work is), and doing that within one thread avoids a
/// kernel context switch per hand-off. Pipeline workers drive their waits
/// through its handle; the caller's `block_on` drives the timers and I/O.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `lineguard run`: logging as configured, the signal handlers before
/// anything slow (a signal must never find its default action), then
/// [`run`] until SIGTERM or SIGINT.
pub(crate) fn serve(settings: Settings) -> anyhow::Result<()> {
    crate::ops::logging::init(settings.log.format, &settings.log.level);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let signals = signals::install().context("cannot install signal handlers")?;
        run(settings, signals.stop, Some(signals.hangup)).await
    });
    // A model still loading on a blocking thread need not be waited for.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

/// What the stages report to and what looks at them: health, the models
/// in service, the pipelines' device views.
struct Services {
    health: Arc<Health>,
    board: Board,
    views: Arc<DeviceViews>,
}

/// The broker connections' clients and event loops (for the first broker
/// of `mqtt.hosts`), and how each reaches the others, made before anything
/// runs on them.
struct Connections {
    telemetry: (Client, EventLoop, Target),
    publisher: (Client, EventLoop, Target),
    relay: Option<Relay>,
    /// The store holds windows, so the broker should hold our session.
    expect_session: bool,
}

/// The channels into the sinks and the acker (see the table above): what
/// the pipelines, the connections and the model watcher send on...
struct Senders {
    entries: mpsc::UnboundedSender<Vec<Entry>>,
    records: mpsc::UnboundedSender<Vec<Entry>>,
    control: mpsc::Sender<Control>,
    link: mpsc::UnboundedSender<Link>,
    acks: mpsc::UnboundedSender<AckId>,
}

/// ...and what the sinks and the acker take from them.
struct Receivers {
    entries: mpsc::UnboundedReceiver<Vec<Entry>>,
    records: mpsc::UnboundedReceiver<Vec<Entry>>,
    control: mpsc::Receiver<Control>,
    link: mpsc::UnboundedReceiver<Link>,
    acks: mpsc::UnboundedReceiver<AckId>,
}

fn channels() -> (Senders, Receivers) {
    let (entries, entries_rx) = mpsc::unbounded_channel();
    let (records, records_rx) = mpsc::unbounded_channel();
    let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (link, link_rx) = mpsc::unbounded_channel();
    let (acks, acks_rx) = mpsc::unbounded_channel();
    (
        Senders { entries, records, control, link, acks },
        Receivers {
            entries: entries_rx,
            records: records_rx,
            control: control_rx,
            link: link_rx,
            acks: acks_rx,
        },
    )
}

/// Run until `shutdown` is cancelled (or the store turns out corrupt), then
/// stop, all within `state.drain_timeout_secs` of the signal. `hangup` is
/// SIGHUP, installed by the caller before anything slow starts (see
/// [`signals`]).
pub(crate) async fn run(
    settings: Settings,
    shutdown: CancellationToken,
    hangup: Option<tokio::signal::unix::Signal>,
) -> anyhow::Result<()> {
    let Some(models) = load_models(&settings, &shutdown).await? else {
        DaemonEvents.stopped_while_loading();
        return Ok(());
    };
    // Installed before anything counts (the store's recovery, below).
    http::recorder();
    crate::ops::metrics::describe();
    let store = open_store(&settings).await?;
    let stop = Stop::new(settings.state.drain_timeout);
    let corrupt = CancellationToken::new();
    let services = start_services(&settings, &models, &stop).await;
    let connections = connect(&settings, &store)?;
    let (senders, receivers) = channels();
    let (routes, watched) =
        start_pipelines(&settings, &models, &store, &services, &senders, &corrupt, &stop)?;
    let acks =
        start_sinks(&settings, &store, &services, &connections.publisher.0, &senders, receivers, &stop)
            .await?;
    let control = senders.control.clone();
    let watcher = reload::watch(watched, services.board.clone(), control, hangup, stop.token(Phase::Intake));
    stop.spawn(Phase::Intake, watcher);
    // The last senders go to the connections: once every task holding one
    // has ended, the sinks see their inputs close.
    let attempted = start_connections(&settings, connections, routes, &services, senders, acks, &stop);
    // Ready: models loaded and the first connection attempted (whatever its outcome).
    tokio::select! {
        _ = attempted => {}
        _ = shutdown.cancelled() => {}
    }
    systemd::ready();
    stop.spawn(Phase::Services, systemd::watchdog(services.health.clone(), stop.token(Phase::Services)));
    DaemonEvents.running(settings.pipelines.len());

    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = corrupt.cancelled() => {}
    }
    systemd::stopping();
    DaemonEvents.stopping();
    stop.run().await;
    DaemonEvents.stopped();
    match corrupt.is_cancelled() {
        true => anyhow::bail!("the state store is corrupt (see the log); the next start sets it aside"),
        false => Ok(()),
    }
}

/// Every pipeline's models, loaded and checked on a blocking thread;
/// `None` when a stop comes first.
async fn load_models(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Vec<PipelineModels>>> {
    let pipelines = settings.pipelines.clone();
    let load = move || pipelines.iter().map(Pipeline::load_models).collect::<Result<Vec<_>, _>>();
    tokio::select! {
        m = tokio::task::spawn_blocking(load) => Ok(Some(m??)),
        _ = shutdown.cancelled() => Ok(None),
    }
}

/// The state store, opened (a damaged file set aside) and its recovery reported.
async fn open_store(settings: &Settings) -> anyhow::Result<Arc<Store>> {
    let dir = settings.state.dir.clone();
    let store = tokio::task::spawn_blocking(move || {
        crate::durable::store::check_writable(&dir)?;
        Store::open(&dir)
    })
    .await?
    .context("cannot open the state store")?;
    store.report_recovery();
    Ok(Arc::new(store))
}

/// Health, the board of models in service (`model_info` 1 for each), the
/// device views, and the HTTP listener on them.
async fn start_services(settings: &Settings, models: &[PipelineModels], stop: &Stop) -> Services {
    let names: Vec<String> = settings.pipelines.iter().map(|p| p.name.clone()).collect();
    let health = Health::new(&names);
    health.set_stale_intake(settings.limits.stale_intake);
    let statuses = settings
        .pipelines
        .iter()
        .zip(models)
        .map(|(p, m)| {
            let m = &m.live;
            ModelEvents::new(&p.name).in_service(&m.id);
            ModelStatus {
                pipeline: p.name.clone(),
                model: m.id.clone(),
                input_topic: p.input.topic.as_str().to_string(),
                output_topic: p.output_display(settings.node()),
            }
        })
        .collect();
    let pair = settings.redundancy.as_ref().map(redundancy::before_deciding);
    let board = Board {
        client_id: settings.mqtt.client_id.clone(),
        models: Arc::new(Mutex::new(statuses)),
        pair: Arc::new(Mutex::new(pair)),
    };
    let views = DeviceViews::new();
    // Scoring matters more than its dashboard: without the port, run without it.
    let listening = http::serve(
        settings.http_listen,
        health.clone(),
        views.clone(),
        board.clone(),
        stop.token(Phase::Services),
    );
    if let Err(e) = listening.await {
        DaemonEvents.no_http(&e);
    }
    Services { health, board, views }
}

/// The daemon's `offline` status, as both connections' will.
fn offline(settings: &Settings) -> Will {
    Will { topic: settings.mqtt.status_topic(), payload: status::offline(&settings.mqtt.client_id) }
}

/// The connections' clients and event loops; over MQTT 3.1.1 telemetry
/// runs through the relay that keeps oversize messages from killing it.
fn connect(settings: &Settings, store: &Store) -> anyhow::Result<Connections> {
    let (m, max_payload) = (&settings.mqtt, settings.limits.max_payload_bytes);
    let relay = match m.protocol {
        Protocol::V311 => Some(
            Relay::start(
                &m.brokers,
                m.tls.as_ref(),
                crate::mqtt::relay_limit(max_payload),
                &settings.state.dir,
            )
            .context("cannot start the telemetry connection's relay")?,
        ),
        Protocol::V5 => None,
    };
    let will = offline(settings);
    let make = |purpose: Purpose| {
        let (client, eventloop) =
            crate::mqtt::connect(&purpose, m, &m.brokers[0], max_payload, relay.as_ref());
        (client, eventloop, Target { settings: m.clone(), purpose, max_payload })
    };
    Ok(Connections {
        telemetry: make(Purpose::Telemetry { will: will.clone() }),
        publisher: make(Purpose::Publisher { will }),
        relay,
        expect_session: store.holds_windows(),
    })
}

/// Per pipeline, a worker thread and its committer's thread, tracked by the
/// stop; returns the router's routes and the model watcher's list.
fn start_pipelines(
    settings: &Settings,
    models: &[PipelineModels],
    store: &Arc<Store>,
    services: &Services,
    senders: &Senders,
    corrupt: &CancellationToken,
    stop: &Stop,
) -> anyhow::Result<(Vec<Route>, Vec<Watched>)> {
    let (mut routes, mut watched) = (Vec::new(), Vec::new());
    for (index, (p, m)) in settings.pipelines.iter().zip(models).enumerate() {
        let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let (swap_tx, swaps) = mpsc::channel(1);
        let (view_tx, views) = mpsc::channel(VIEW_QUEUE);
        let (queue, turns) = committer::queue();
        services.views.register(&p.name, view_tx);
        routes.push(Route { input: p.input.clone(), tx: inbound_tx });
        watched.push(Watched {
            index,
            pipeline: p.clone(),
            swap: swap_tx,
            events: ModelEvents::new(&p.name),
        });

        let watch = Watch {
            health: services.health.clone(),
            pipeline: index,
            deadline: stop.commits_deadline(),
            corrupt: corrupt.clone(),
        };
        let (s, name, gap) = (store.clone(), p.name.clone(), settings.state.commit_interval);
        let committer = std::thread::Builder::new()
            .name(format!("commit-{}", p.name))
            .spawn(move || committer::run(s, &name, gap, turns, watch))
            .context("cannot start a pipeline's committer thread")?;
        stop.thread(Phase::Workers, committer);

        let mode = Mode::Daemon(Daemon {
            index,
            store: store.clone(),
            committer: queue,
            entries: senders.entries.clone(),
            sparkplug: settings.sparkplug.as_ref().map(|_| senders.records.clone()),
            control: senders.control.clone(),
            health: services.health.clone(),
        });
        let worker = Worker::new(p.clone(), m.live.clone(), m.shadow.clone(), settings.limits.clone(), mode);
        let rt = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("pipeline-{}", p.name))
            .spawn(move || worker.run(inbound, swaps, views, rt))
            .context("cannot start a pipeline thread")?;
        stop.thread(Phase::Workers, thread);
    }
    Ok((routes, watched))
}

/// The publisher's sink (publishing on `publisher`, with `online` queued
/// first), and the Sparkplug node's with its connection; returns what the
/// acker takes.
async fn start_sinks(
    settings: &Settings,
    store: &Arc<Store>,
    services: &Services,
    publisher: &Client,
    senders: &Senders,
    receivers: Receivers,
    stop: &Stop,
) -> anyhow::Result<mpsc::UnboundedReceiver<AckId>> {
    let (records_backlog, backlog): (Vec<_>, Vec<_>) =
        store.outbox().context("cannot read the outbox")?.into_iter().partition(|e| e.sparkplug);
    let config = SinkConfig {
        status_topic: settings.mqtt.status_topic(),
        offline: status::offline(&settings.mqtt.client_id),
        max_bytes: settings.state.outbox_max_bytes,
        max_age: settings.state.outbox_max_age,
        drain_until: stop.publishing_deadline(),
        farewell: stop.farewell(),
    };
    let mut sink = Sink::new(publisher.clone(), store.clone(), config.clone(), backlog)
        .with_health(services.health.clone());
    let mut node_pair = None;
    match &settings.redundancy {
        Some(r) => {
            let redundant = redundancy::sink_side(r);
            let pair = redundancy::Pair {
                redundancy: r,
                mqtt: &settings.mqtt,
                max_payload: settings.limits.max_payload_bytes,
                alarm_filters: settings
                    .pipelines
                    .iter()
                    .filter_map(|p| p.alarm.as_ref())
                    .map(|t| t.filter())
                    .collect(),
                health: services.health.clone(),
                board: services.board.clone(),
                control: senders.control.clone(),
                node: settings.node().cloned(),
            };
            node_pair = redundancy::start(pair, &redundant, stop);
            sink = sink.redundant(redundant);
        }
        None => RedundancyEvents::standalone(),
    }
    // Under [redundancy] the controller says it, once it has decided.
    if settings.redundancy.is_none() {
        let _ = senders.control.send(Control::Online(services.board.online_payload())).await;
    }
    let Receivers { entries, records, control, link, acks } = receivers;
    stop.spawn(Phase::Sinks, sink.run(entries, control, link, stop.token(Phase::Sinks)));
    match &settings.sparkplug {
        Some(sp) => {
            let node = edge::Node {
                mqtt: &settings.mqtt,
                sparkplug: sp,
                max_payload: settings.limits.max_payload_bytes,
                store,
                health: &services.health,
                pair: node_pair,
            };
            edge::start(node, config, records_backlog, records, stop)?;
        }
        None if !records_backlog.is_empty() => DaemonEvents.sparkplug_backlog_kept(records_backlog.len()),
        None => {}
    }
    Ok(acks)
}

/// The acker, the publisher's connection and the telemetry connection
/// (routing to the pipelines); returns what says the first connection
/// attempt is made.
fn start_connections(
    settings: &Settings,
    connections: Connections,
    routes: Vec<Route>,
    services: &Services,
    senders: Senders,
    acks: mpsc::UnboundedReceiver<AckId>,
    stop: &Stop,
) -> oneshot::Receiver<()> {
    let Connections {
        telemetry: (client, eventloop, telemetry_target),
        publisher: (pub_client, pub_eventloop, publisher_target),
        relay,
        expect_session,
    } = connections;
    let health = Some(services.health.clone());
    stop.spawn(Phase::Acker, crate::mqtt::acker::acker(client.clone(), acks, stop.token(Phase::Acker)));
    let publisher =
        Connection::new(publisher_target, Vec::new(), senders.link.clone(), health.clone(), Role::Publisher);
    stop.spawn(Phase::Connections, publisher.run(pub_eventloop, pub_client));
    let mut filters: Vec<String> = settings.pipelines.iter().flat_map(|p| p.input.filters()).collect();
    filters.sort();
    filters.dedup();
    let (attempted_tx, attempted) = oneshot::channel();
    let role = Role::Telemetry(Telemetry {
        router: Router::new(routes),
        acks: senders.acks,
        attempted: Some(attempted_tx),
        relay,
        intake: stop.token(Phase::Intake),
        expect_session,
    });
    let link = intake_link(senders.link, stop);
    let telemetry = Connection::new(telemetry_target, filters, link, health, role);
    stop.spawn(Phase::Connections, telemetry.run(eventloop, client));
    attempted
}

/// The sink hears from the telemetry connection only whether its
/// subscriptions are in place (`Link::Intake`); the rest of that
/// connection's news (`Up`, publishes written and acknowledged) is about a
/// connection the sink does not publish on.
fn intake_link(sink: mpsc::UnboundedSender<Link>, stop: &Stop) -> mpsc::UnboundedSender<Link> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    stop.spawn(Phase::Services, async move {
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
