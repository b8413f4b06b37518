//! Acknowledging telemetry only once its effect is durable.
//!
//! With manual acknowledgements, the broker keeps (and after a reconnect
//! redelivers) every QoS 1 message we have not acknowledged. A message routed
//! to several pipelines is acknowledged when the last of them has committed
//! what it did with it. A message dropped before that (intake stopped, crash)
//! is never acknowledged, so the broker delivers it again. The acknowledgements
//! themselves go out on the telemetry connection ([`mqtt::acker`](crate::mqtt::acker)).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rumqttc::QoS;
use tokio::sync::mpsc::UnboundedSender;

/// What a PUBACK for a received message needs: its packet id and QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckId {
    pub pkid: u16,
    pub qos: QoS,
}

#[derive(Debug)]
struct Inner {
    remaining: AtomicUsize,
    id: AckId,
    tx: UnboundedSender<AckId>,
}

/// One holder's share of a message's acknowledgement.
#[derive(Debug)]
pub(crate) struct Ack(Arc<Inner>);

impl Ack {
    /// Shares for `holders` pipelines; `None` for QoS 0 (nothing to acknowledge).
    pub(crate) fn split(id: AckId, holders: usize, tx: &UnboundedSender<AckId>) -> Vec<Ack> {
        if id.qos == QoS::AtMostOnce || holders == 0 {
            return Vec::new();
        }
        let inner = Arc::new(Inner { remaining: AtomicUsize::new(holders), id, tx: tx.clone() });
        (0..holders).map(|_| Ack(inner.clone())).collect()
    }

    /// This holder's effect is durable; the last one sends the PUBACK.
    pub(crate) fn done(self) {
        if self.0.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.0.tx.send(self.0.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledged_once_after_the_last_holder() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let p = AckId { pkid: 42, qos: QoS::AtLeastOnce };
        let mut shares = Ack::split(p, 3, &tx);
        shares.pop().unwrap().done();
        shares.pop().unwrap().done();
        assert!(rx.try_recv().is_err(), "not before every holder is done");
        drop(shares.pop()); // a holder that never finished (e.g. stopped)...
        assert!(rx.try_recv().is_err(), "...means no acknowledgement at all");
        let shares = Ack::split(p, 1, &tx);
        shares.into_iter().for_each(Ack::done);
        assert_eq!(rx.try_recv().unwrap(), AckId { pkid: 42, qos: QoS::AtLeastOnce });
        assert!(Ack::split(AckId { pkid: 0, qos: QoS::AtMostOnce }, 2, &tx).is_empty());
    }
}
