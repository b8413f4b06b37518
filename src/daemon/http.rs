//! The HTTP listener, read-only, loopback by default (`http.listen`):
//! `GET /metrics` (Prometheus text format), `GET /healthz` (200 when the
//! broker is connected and every pipeline loop is alive and has its model,
//! 503 with the reason otherwise), `GET /devices` (JSON: every device's
//! window, latest scores and states, see [`devices`](super::devices)) and `GET /`, the status
//! page (self-contained HTML that reads `/devices`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::daemon::devices::{DeviceViews, Filter};
use crate::daemon::status::Board;
use crate::ops::events::daemon::DaemonEvents;
use crate::ops::health::Health;
use crate::ops::metrics::names;

/// The status page: one file, no external assets (gateways are often offline).
const STATUS_PAGE: &str = include_str!("status_page.html");

/// The process-wide recorder (installed once, also when the demo runs the
/// daemon in-process).
pub(crate) fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let micro_to_second = [
                0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ];
            let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(names::INFERENCE_SECONDS.into()), &micro_to_second)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(names::BATCH_SIZE.into()), &sizes))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(names::COMMIT_SECONDS.into()), &micro_to_second)
                })
                .and_then(|b| {
                    let diffs = [0.0001, 0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0];
                    b.set_buckets_for_metric(Matcher::Full(names::SHADOW_ABS_DIFF.into()), &diffs)
                })
                .expect("bucket lists are not empty");
            match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (tests): render from a private one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
    views: Arc<DeviceViews>,
    board: Board,
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    crate::ops::metrics::collect_process();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.check() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")),
    }
}

async fn devices(State(s): State<AppState>, uri: Uri) -> axum::response::Response {
    let filter = match Filter::parse(uri.query()) {
        Ok(f) => f,
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    let overview = s.views.overview(&filter, &s.board, &s.health).await;
    match serde_json::to_vec(&overview) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn status_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing but itself and /devices: no external asset can load.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:",
            ),
        ],
        STATUS_PAGE,
    )
}

/// Bind `listen` (an error names the setting) and serve until `stop`.
/// Returns the bound address (useful with port 0).
pub(crate) async fn serve(
    listen: SocketAddr,
    health: Arc<Health>,
    views: Arc<DeviceViews>,
    board: Board,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    let addr = listener.local_addr()?;
    let handle = recorder();
    let upkeep = handle.clone();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/devices", get(devices))
        .route("/", get(status_page))
        .with_state(AppState { metrics: handle, health, views, board });
    let s = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = s.cancelled() => return,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = server.await {
            DaemonEvents.http_failed(&e);
        }
    });
    DaemonEvents.serving(addr);
    Ok(addr)
}
