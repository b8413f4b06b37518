//! systemd integration (`Type=notify`): `READY=1` once the models are loaded
//! and the first connection has been attempted; `WATCHDOG=1` only while every
//! pipeline loop is going round (a stalled pipeline stops the pings, and
//! systemd restarts the service); `STATUS=` with connection and throughput.
//! Without `NOTIFY_SOCKET` (not under systemd) all of this is a no-op.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::ops::health::Health;

pub(crate) fn ready() {
    let _ = sd_notify::notify(&[NotifyState::Ready]);
}

pub(crate) fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Ping the watchdog (if systemd asked for one) and report status until `stop`.
pub(crate) async fn watchdog(health: Arc<Health>, stop: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled();
    // Ping at half the watchdog interval; report status every 5 s otherwise.
    let period = watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(5)).max(Duration::from_millis(100));
    let stall_ms =
        watchdog.map(|w| (w.as_millis() as i64) / 2).unwrap_or(crate::ops::health::STALL_MS).max(1500);
    let mut tick = tokio::time::interval(period);
    let mut last = (Instant::now(), health.totals());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (messages, windows) = health.totals();
        let secs = last.0.elapsed().as_secs_f64().max(1e-3);
        let rate = |now: u64, then: u64| (now - then) as f64 / secs;
        let state = match health.check() {
            Ok(()) => "connected".to_string(),
            Err(why) => why,
        };
        let status = format!(
            "{state}; {:.0} msg/s, {:.0} windows/s; {messages} messages, {windows} windows scored",
            rate(messages, last.1 .0),
            rate(windows, last.1 .1),
        );
        last = (Instant::now(), (messages, windows));
        let stalled = health.stalled(stall_ms);
        if watchdog.is_some() && stalled.is_empty() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            if !stalled.is_empty() {
                crate::ops::events::daemon::DaemonEvents.stalled(&stalled);
            }
            let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
        }
    }
}
