//! The acker: the PUBACKs of telemetry whose effect is committed (see
//! [`Ack`](crate::durable::ack::Ack)), on the telemetry connection.

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::durable::ack::AckId;
use crate::mqtt::protocol::Client;

/// The acker: PUBACKs for telemetry whose effect is committed, on the
/// telemetry connection. When `done` is cancelled (the stop, once the
/// committers are through) it sends what they left and then DISCONNECT, in
/// that order on the one connection.
pub(crate) async fn acker(client: Client, mut acks: UnboundedReceiver<AckId>, done: CancellationToken) {
    loop {
        let id = tokio::select! {
            biased;
            id = acks.recv() => id,
            _ = done.cancelled() => break,
        };
        match id {
            Some(id) if client.ack(id).await.is_ok() => {}
            _ => return,
        }
    }
    while let Ok(id) = acks.try_recv() {
        if client.ack(id).await.is_err() {
            return;
        }
    }
    let _ = client.disconnect().await;
}
