//! The daemon's wiring: the one place that connects the stages.
//!
//! ```text
//!  broker ─▶ connection task ─▶ [route by topic] ─▶ pipeline worker threads ─▶ sink task ─▶ broker
//!            (rumqttc poll)       bounded channels   decode/window/infer        QoS 1 publish
//! ```
//!
//! Shutdown (mini-redis style): one token is cancelled; the connection task
//! stops routing and drops the pipeline channels; each worker finishes the
//! batch in hand and drops its sink sender; the sink publishes what is left,
//! then `offline`, then disconnects. The whole drain is bounded in time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::events::ConnectionEvents;
use crate::model::Model;
use crate::mqtt::{self, Backoff};
use crate::pipeline::{Inbound, Outbound, Worker};
use crate::status::{self, ModelStatus};
use crate::topic::TopicTemplate;

/// How long a clean stop may spend publishing what is left.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const INBOUND_QUEUE: usize = 1024;
const OUTBOUND_QUEUE: usize = 4096;

/// Load every pipeline's model and card; any failure stops start-up.
pub fn load_models(settings: &Settings) -> anyhow::Result<Vec<Arc<Model>>> {
    settings
        .pipelines
        .iter()
        .map(|p| {
            let card = crate::card::ModelCard::load(&p.card)?;
            let model = Model::load_with_card(&p.model, card).with_context(|| format!("pipeline `{}`", p.name))?;
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
    template: TopicTemplate,
    tx: mpsc::Sender<Inbound>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Run until `shutdown` is cancelled, then drain and stop.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let s = settings.clone();
    let models = tokio::task::spawn_blocking(move || load_models(&s)).await??;

    let client_id = settings.raw.mqtt.client_id.clone();
    let status_topic = settings.status_topic();
    let model_status: Vec<ModelStatus> = settings
        .pipelines
        .iter()
        .zip(&models)
        .map(|(p, m)| ModelStatus {
            pipeline: p.name.clone(),
            model: m.card.name.clone(),
            model_version: m.card.version.clone(),
            sha256: m.sha256.clone(),
            input_topic: p.input.as_str().to_string(),
            output_topic: p.output.as_str().to_string(),
        })
        .collect();

    let (client, eventloop) = AsyncClient::new(mqtt::options(&settings), 1024);

    // Pipeline workers, each on its own thread.
    let (out_tx, mut out_rx) = mpsc::channel::<Outbound>(OUTBOUND_QUEUE);
    let mut routes = Vec::new();
    let mut workers = Vec::new();
    for (p, model) in settings.pipelines.iter().zip(&models) {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        routes.push(Route { template: p.input.clone(), tx });
        let worker = Worker::new(
            p.clone(),
            model.clone(),
            settings.raw.limits.max_payload_bytes,
            settings.raw.limits.max_batch,
        );
        let out = out_tx.clone();
        workers.push(
            std::thread::Builder::new()
                .name(format!("pipeline-{}", p.name))
                .spawn(move || worker.run(rx, out))
                .context("cannot start a pipeline thread")?,
        );
    }
    drop(out_tx);

    // Sink: publish scores in the order the workers produced them.
    let sink_client = client.clone();
    let sink = tokio::spawn(async move {
        let events = ConnectionEvents::default();
        while let Some(o) = out_rx.recv().await {
            if sink_client.publish(o.topic, QoS::AtLeastOnce, false, o.payload).await.is_err() {
                break;
            }
            events.published();
        }
    });

    let mut filters: Vec<String> = settings.pipelines.iter().map(|p| p.input.filter()).collect();
    filters.dedup();
    let intake = CancellationToken::new();
    let conn = tokio::spawn(connection_loop(
        eventloop,
        client.clone(),
        routes,
        Connection {
            filters,
            status_topic: status_topic.clone(),
            online: status::online(&client_id, &model_status),
            host: settings.raw.mqtt.host.clone(),
            port: settings.raw.mqtt.port,
            backoff: Backoff::new(
                Duration::from_millis(settings.raw.mqtt.reconnect_min_ms),
                Duration::from_millis(settings.raw.mqtt.reconnect_max_ms),
            ),
        },
        intake.clone(),
    ));
    info!(pipelines = settings.pipelines.len(), "lineguard running");

    shutdown.cancelled().await;
    info!("stopping: intake closed, finishing the work in hand");
    intake.cancel();
    let drain = async {
        for w in workers {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        let _ = sink.await;
        let _ = client.publish(status_topic, QoS::AtLeastOnce, true, status::offline(&client_id)).await;
        let _ = client.disconnect().await;
        let _ = conn.await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        warn!("stop: broker did not take everything within {} s", DRAIN_TIMEOUT.as_secs());
    }
    info!("stopped");
    Ok(())
}

struct Connection {
    filters: Vec<String>,
    status_topic: String,
    online: Vec<u8>,
    host: String,
    port: u16,
    backoff: Backoff,
}

async fn connection_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    mut routes: Vec<Route>,
    mut c: Connection,
    intake: CancellationToken,
) {
    let mut events = ConnectionEvents::default();
    loop {
        let event = tokio::select! {
            biased;
            _ = intake.cancelled(), if !routes.is_empty() => {
                routes.clear(); // workers see their channel close
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let received_ms = now_ms();
                for r in &routes {
                    if r.template.matches(&p.topic) {
                        let msg = Inbound { topic: p.topic.clone(), payload: p.payload.clone(), received_ms };
                        // Waiting here is the backpressure: we stop reading from the broker.
                        let _ = r.tx.send(msg).await;
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                c.backoff.reset();
                events.connected(&c.host, c.port, ack.session_present);
                // Subscribing again is harmless and covers a config that gained a
                // pipeline since the stored session was made. Done off this task:
                // it must keep polling for the requests to go out.
                let (client, filters, topic, online) =
                    (client.clone(), c.filters.clone(), c.status_topic.clone(), c.online.clone());
                tokio::spawn(async move {
                    for f in filters {
                        let _ = client.subscribe(f, QoS::AtLeastOnce).await;
                    }
                    let _ = client.publish(topic, QoS::AtLeastOnce, true, online).await;
                });
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                let delay = c.backoff.next_delay();
                events.connection_failed(&e.to_string(), delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}
