//! The daemon's wiring: the one place that connects the stages.
//!
//! ```text
//!            ┌───────────────── acker ◀── acks (after commit) ◀─────────────┐
//!  broker ─▶ telemetry connection ─▶ router ─▶ pipeline workers ─▶ committers ─▶ store
//!    ▲   ▲     │   (relay, rumqttc)   by topic  decode/window/infer   (group commit)
//!    │   │     └─ Intake ─▶ sink ◀── scores (numbered, before commit) ┘
//!    │   └ publisher connection ─┘▲ Sent/Acked/Up (outbox: publish; delete on PUBACK once committed)
//!    └──────── QoS 1 publish ─────┘
//! ```
//!
//! Two connections to the broker: the telemetry one takes intake and sends
//! our PUBACKs, the publisher one carries scores, status and dead letters
//! (see `mqtt::publisher` for why they are two). With Sparkplug B output the
//! Edge Node has a third connection and a second sink (its will is the
//! NDEATH; see `sparkplug/session.rs`): Sparkplug records go to that sink,
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
//! | inbound (one per pipeline) | router → worker | `INBOUND_QUEUE` (1024) | backpressure: a full one stops reading from the broker, which keeps the rest |
//! | swap (one per pipeline) | model watcher → worker | 1 | a model (live or shadow) at a time; the watcher waits for the worker to take it |
//! | committer queue (one per pipeline) | worker → committer thread | 256 turns and 8 MiB of snapshots and score rows | a stalled disk stops the worker (and so intake) instead of growing memory; bytes, because a turn's size follows the devices it touched |
//! | entries | workers → sink | unbounded | the sink takes them at once and bounds what it keeps (`outbox_max_bytes`); a bound would stall scoring behind a broker outage |
//! | Sparkplug entries | workers → node's sink | unbounded | the same, for Sparkplug records |
//! | control | workers, model watcher → sink | `CONTROL_QUEUE` (1024) | dead letters are `try_send` and dropped (counted) when full; `online` waits |
//! | link (one per sink) | connections → sink | unbounded | a connection must never wait for its sink, which waits on the connection's rendezvous channel |
//! | intake link | telemetry connection → forwarder → sink | unbounded | as link; the sink hears only whether intake is subscribed |
//! | acks | committers (and router) → acker | unbounded | at most what the broker lets through unacknowledged; a committer thread must not block on the async side |
//! | end session | node's sink → node's connection | unbounded | one request per primary-host offline |
//! | ready / attempted | connection → sink / start-up | oneshot | one answer each |
//!
//! A stop runs in the named phases of `stop::Stop`, within
//! `state.drain_timeout_secs` of the signal.

pub(crate) mod stop;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Protocol, Settings};
use crate::durable::sink::{Control, Sink, SinkConfig};
use crate::durable::store::Store;
use crate::model::Model;
use crate::mqtt::ack;
use crate::mqtt::connection::{Connection, Role, Telemetry};
use crate::mqtt::link::Link;
use crate::mqtt::relay::Relay;
use crate::mqtt::router::{Route, Router, INBOUND_QUEUE};
use crate::ops::devices::DeviceViews;
use crate::ops::events::{ModelInService, StoreRecovered};
use crate::ops::health::Health;
use crate::ops::reload::{self, Board, Watched};
use crate::ops::status::{self, ModelStatus};
use crate::pipeline::worker::{Outputs, Worker};
use stop::{Phase, Stop};

/// Status and dead letters waiting for the sink.
const CONTROL_QUEUE: usize = 1024;

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

/// Run until `shutdown` is cancelled, then stop, all within
/// `state.drain_timeout_secs` of the signal. `hangup` is SIGHUP, installed
/// by the caller before anything slow starts (see `ops/signals.rs`).
pub async fn run(
    settings: Settings,
    shutdown: CancellationToken,
    hangup: Option<tokio::signal::unix::Signal>,
) -> anyhow::Result<()> {
    let s = settings.clone();
    let load = move || -> anyhow::Result<_> {
        let models = crate::model::load_pipelines(&s)?;
        let shadows = crate::model::load_shadows(&s, &models)?;
        Ok((models, shadows))
    };
    let (models, shadows) = tokio::select! {
        m = tokio::task::spawn_blocking(load) => m??,
        _ = shutdown.cancelled() => {
            info!("stopped while loading the models");
            return Ok(());
        }
    };
    // Installed before anything counts (the store's recovery, below).
    crate::ops::http::recorder();
    crate::ops::metrics::register(&settings.pipelines.iter().map(|p| p.name.clone()).collect::<Vec<_>>());
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
    let stop = Stop::new(settings.state.drain_timeout);
    let board = status_board(&settings, &models);
    let views = DeviceViews::new();
    // Scoring matters more than its dashboard: without the port, run without it.
    let http = crate::ops::http::serve(
        settings.http_listen,
        health.clone(),
        views.clone(),
        board.clone(),
        stop.token(Phase::Services),
    );
    if let Err(e) = http.await {
        tracing::error!("{e:#}; running without the status page, /metrics and /healthz");
    }

    // The connections' clients and event loops; over MQTT 3.1.1 telemetry
    // runs through the relay that keeps oversize messages from killing it.
    let relay = match settings.mqtt.protocol {
        Protocol::V311 => Some(
            Relay::start(
                &settings.mqtt.host,
                settings.mqtt.port,
                settings.mqtt.tls.as_ref(),
                crate::mqtt::relay_limit(&settings),
                &settings.state.dir,
            )
            .context("cannot start the telemetry connection's relay")?,
        ),
        Protocol::V5 => None,
    };
    let (client, eventloop) = crate::mqtt::connect(&settings, relay.as_ref());
    let (pub_client, pub_eventloop) = crate::mqtt::publisher(&settings);

    // The channels (see the table above).
    let (entries_tx, entries_rx) = mpsc::unbounded_channel();
    let (spark_tx, spark_rx) = mpsc::unbounded_channel();
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (attempted_tx, attempted_rx) = oneshot::channel();

    // Pipelines: a worker thread each, with its committer.
    let outputs = Outputs {
        store: store.clone(),
        entries: entries_tx,
        sparkplug: settings.sparkplug.as_ref().map(|_| spark_tx),
        control: control_tx.clone(),
        dead_letter_topic: settings.limits.dead_letter_topic.clone(),
        health: health.clone(),
        deadline: stop.commits_deadline(),
    };
    let (routes, watched) = start_pipelines(&settings, &models, &shadows, outputs, &views, &stop)?;

    // Acknowledgements, on the telemetry connection.
    stop.spawn(Phase::Acker, ack::acker(client.clone(), ack_rx, stop.token(Phase::Acker)));

    // Sinks: the publisher's, and the Sparkplug node's.
    let sink_config = SinkConfig {
        status_topic: settings.status_topic(),
        offline: status::offline(&settings.mqtt.client_id),
        max_bytes: settings.state.outbox_max_bytes,
        max_age: settings.state.outbox_max_age,
        drain_until: stop.publishing_deadline(),
        farewell: stop.farewell(),
    };
    let sink = Sink::new(pub_client.clone(), store.clone(), sink_config.clone(), backlog)
        .with_health(health.clone());
    let _ = control_tx.send(Control::Online(board.online_payload())).await;
    stop.spawn(Phase::Sinks, sink.run(entries_rx, control_rx, link_rx, stop.token(Phase::Sinks)));
    match &settings.sparkplug {
        Some(sp) => {
            let drain = stop.token(Phase::Sinks);
            let (sink, conn) = crate::sparkplug::edge::start(
                &settings,
                sp,
                &store,
                sink_config,
                spark_backlog,
                spark_rx,
                drain,
                health.clone(),
            )?;
            stop.spawn(Phase::Sinks, sink);
            stop.spawn(Phase::Connections, conn);
        }
        None if !spark_backlog.is_empty() => {
            warn!(
                records = spark_backlog.len(),
                "outbox: Sparkplug records kept, but [sparkplug] is not configured"
            )
        }
        None => {}
    }

    // Connections.
    let publisher =
        Connection::new(&settings, Vec::new(), link_tx.clone(), Some(health.clone()), Role::Publisher);
    stop.spawn(Phase::Connections, publisher.run(pub_eventloop, pub_client));
    let mut filters: Vec<String> = settings.pipelines.iter().flat_map(|p| p.filters()).collect();
    filters.sort();
    filters.dedup();
    let telemetry = Role::Telemetry(Telemetry {
        router: Router::new(routes),
        acks: ack_tx,
        attempted: Some(attempted_tx),
        relay,
        intake: stop.token(Phase::Intake),
    });
    let intake_link = intake_link(link_tx, &stop);
    let telemetry = Connection::new(&settings, filters, intake_link, Some(health.clone()), telemetry);
    stop.spawn(Phase::Connections, telemetry.run(eventloop, client));

    // Model reloads, readiness, the watchdog.
    stop.spawn(Phase::Intake, reload::watch(watched, board, control_tx, hangup, stop.token(Phase::Intake)));
    // Ready: models loaded and the first connection attempted (whatever its outcome).
    tokio::select! {
        _ = attempted_rx => {}
        _ = shutdown.cancelled() => {}
    }
    crate::ops::systemd::ready();
    stop.spawn(Phase::Services, crate::ops::systemd::watchdog(health, stop.token(Phase::Services)));
    info!(pipelines = settings.pipelines.len(), "lineguard running");

    shutdown.cancelled().await;
    crate::ops::systemd::stopping();
    info!("stopping: intake closed, finishing the work in hand");
    stop.run().await;
    info!("stopped");
    Ok(())
}

/// The models in service, as the status topic reports them; `model_info` 1 for each.
fn status_board(settings: &Settings, models: &[Arc<Model>]) -> Board {
    let node = settings.sparkplug.as_ref().map(|s| &s.node);
    let statuses = settings
        .pipelines
        .iter()
        .zip(models)
        .map(|(p, m)| {
            ModelInService {
                pipeline: &p.name,
                model: &m.card.name,
                version: &m.card.version,
                sha256: &m.sha256,
                in_service: true,
            }
            .emit();
            ModelStatus {
                pipeline: p.name.clone(),
                model: m.card.name.clone(),
                model_version: m.card.version.clone(),
                sha256: m.sha256.clone(),
                input_topic: p.input.as_str().to_string(),
                output_topic: p.output_display(node),
            }
        })
        .collect();
    Board { client_id: settings.mqtt.client_id.clone(), models: Arc::new(Mutex::new(statuses)) }
}

/// A worker thread per pipeline (with its committer), tracked by the stop;
/// returns the router's routes and the model watcher's list.
fn start_pipelines(
    settings: &Settings,
    models: &[Arc<Model>],
    shadows: &[Option<Arc<Model>>],
    outputs: Outputs,
    views: &DeviceViews,
    stop: &Stop,
) -> anyhow::Result<(Vec<Route>, Vec<Watched>)> {
    let (mut routes, mut watched) = (Vec::new(), Vec::new());
    for (i, (p, model)) in settings.pipelines.iter().zip(models).enumerate() {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let (swap_tx, swap_rx) = mpsc::channel(1);
        let view_rx = views.register(&p.name);
        routes.push(Route { pipeline: p.clone(), tx });
        watched.push(Watched { index: i, pipeline: p.clone(), swap: swap_tx });
        let worker = Worker::new(
            i,
            p.clone(),
            model.clone(),
            shadows.get(i).cloned().flatten(),
            settings.limits.clone(),
            outputs.clone(),
            settings.state.commit_interval,
        )
        .context("cannot start a pipeline's committer thread")?;
        let rt = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(format!("pipeline-{}", p.name))
            .spawn(move || worker.run(rx, swap_rx, view_rx, rt))
            .context("cannot start a pipeline thread")?;
        stop.thread(Phase::Workers, thread);
    }
    Ok((routes, watched))
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
