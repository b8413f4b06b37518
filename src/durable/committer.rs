//! A pipeline's committer: the thread that makes its turns durable.
//!
//! The pipeline worker hands each turn's changes (window snapshots,
//! forgotten devices, reserved scores, and the acknowledgements they
//! release) here and goes on scoring; its scores are already with the sink.
//! This thread writes everything queued since its last commit in one group
//! commit (one fsync), then acknowledges the telemetry behind it. So the
//! disk sets the pace of acknowledgements, never the latency of scores.
//!
//! A refused commit (a full disk, say) is retried with the same parts until
//! it succeeds: nothing is acknowledged meanwhile, the bounded queue holds
//! the worker back once it is full (and so intake: the broker keeps the
//! telemetry), `/healthz` says why, and the log says it once, then every
//! ten seconds, then when commits resume. The store reopens its file by
//! itself (see [`Store`]), so this heals without a restart. At a stop the
//! retries end at the stop's [`Deadline`]: what is still uncommitted stays
//! unacknowledged, to be redelivered at the next start. A store found
//! corrupt at run time cannot hold anything any more: the committer asks
//! the daemon to stop ([`Watch::corrupt`]) and ends, leaving what it holds
//! unacknowledged, and the next start sets the file aside.
//!
//! The daemon makes each pipeline's [`queue`] and runs [`run`] on a thread
//! of its own; the worker holds the [`CommitQueue`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::Deadline;
use crate::durable::ack::Ack;
use crate::durable::store::{Part, Store};
use crate::ops::events::durable::CommitEvents;
use crate::ops::health::Health;

/// Turns waiting for a commit before the worker waits: far more than one
/// commit's worth (a turn per wake-up), bounded so that a stalled disk
/// stops intake instead of growing memory.
const QUEUE: usize = 256;
/// Bytes (snapshots and score rows) the queued turns may hold before the
/// worker waits: a turn's size follows the devices it touched, so the count
/// of turns alone bounded memory only loosely. A burst into 10k devices
/// queued turns of thousands of snapshots each, faster than the disk took
/// them. Several commits' worth, so that only a disk that falls behind holds
/// the worker.
const QUEUE_BYTES: usize = 8 << 20;
/// How often a worker waiting for room in the queue looks again.
const ROOM_LOOK_UP: Duration = Duration::from_micros(200);
/// After a refused commit, wait this long before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often a wait (for a retry, for room in the queue) looks up.
const LOOK_UP: Duration = Duration::from_millis(50);

/// One worker turn.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    pub part: Part,
    pub acks: Vec<Ack>,
}

/// What the worker and its committer share about the queue between them.
#[derive(Debug, Default)]
struct Shared {
    /// Bytes of the turns queued and not yet taken by the committer.
    queued: AtomicUsize,
    /// The committer has ended (the stop's deadline, or a corrupt store).
    ended: AtomicBool,
}

/// The worker's end of its committer's queue.
pub(crate) struct CommitQueue {
    tx: SyncSender<(Turn, usize)>,
    shared: Arc<Shared>,
}

/// The committer's end of the queue.
pub(crate) struct Turns {
    rx: Receiver<(Turn, usize)>,
    shared: Arc<Shared>,
}

/// Where a committer reports: its pipeline's health slot, the stop
/// deadline, and the token that stops the daemon when the store is corrupt.
#[derive(Clone)]
pub(crate) struct Watch {
    pub health: Arc<Health>,
    pub pipeline: usize,
    pub deadline: Deadline,
    pub corrupt: CancellationToken,
}

/// A worker's queue of turns to commit: at most [`QUEUE`] turns and about
/// [`QUEUE_BYTES`] of them, so that a stalled disk holds the worker (and so
/// intake) back instead of growing memory.
pub(crate) fn queue() -> (CommitQueue, Turns) {
    let (tx, rx) = sync_channel(QUEUE);
    let shared = Arc::new(Shared::default());
    (CommitQueue { tx, shared: shared.clone() }, Turns { rx, shared })
}

impl CommitQueue {
    /// Queue a turn. While the queue is full (commits are failing or slow)
    /// this waits, calling `waiting` every so often: the worker's loop is
    /// held up by the disk, not stuck.
    pub(crate) fn send(&self, turn: Turn, mut waiting: impl FnMut()) {
        let bytes = turn.part.bytes();
        let queued = &self.shared.queued;
        // A turn larger than the budget still goes, alone. Room comes with
        // the next commit, so look often at first; a disk that refuses
        // commits keeps the queue full, and then a look every LOOK_UP will do.
        let started = Instant::now();
        while queued.load(Ordering::Acquire) > 0 && queued.load(Ordering::Acquire) + bytes > QUEUE_BYTES {
            waiting();
            let soon = started.elapsed() < Duration::from_millis(20);
            std::thread::sleep(if soon { ROOM_LOOK_UP } else { LOOK_UP });
            if self.shared.ended.load(Ordering::Acquire) {
                return;
            }
        }
        queued.fetch_add(bytes, Ordering::AcqRel);
        let mut turn = (turn, bytes);
        loop {
            match self.tx.try_send(turn) {
                Ok(()) => return,
                Err(TrySendError::Full(t)) => {
                    turn = t;
                    waiting();
                    std::thread::sleep(LOOK_UP);
                }
                // The committer has ended: it gave up at the stop deadline,
                // or the store is corrupt; the turn's telemetry stays
                // unacknowledged.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// The committer: commit what `turns` brings until the worker drops its
/// end (then commit what is left, or give up at the stop's deadline).
/// `gap`: at most one commit per this long (`state.commit_interval_ms`),
/// which bounds the fsync rate under light load, a turn per message.
pub(crate) fn run(store: Arc<Store>, pipeline: &str, gap: Duration, turns: Turns, watch: Watch) {
    let shared = turns.shared.clone();
    commit(&store, pipeline, gap, turns.rx, &shared.queued, &watch);
    shared.ended.store(true, Ordering::Release);
}

fn commit(
    store: &Store,
    pipeline: &str,
    gap: Duration,
    rx: Receiver<(Turn, usize)>,
    queued: &AtomicUsize,
    watch: &Watch,
) {
    // Taken off the queue: its bytes no longer count against the budget.
    let take = |(t, bytes): (Turn, usize)| {
        queued.fetch_sub(bytes, Ordering::AcqRel);
        t
    };
    let mut events = CommitEvents::new(pipeline);
    let mut last_commit = Instant::now().checked_sub(gap).unwrap_or_else(Instant::now);
    let mut turns: Vec<Turn> = Vec::new();
    let mut open = true;
    let mut retrying = false;
    while open || !turns.is_empty() {
        if turns.is_empty() {
            match rx.recv() {
                Ok(t) => turns.push(take(t)),
                Err(_) => break,
            }
        }
        // Turns that only release acknowledgements (rejected or duplicate
        // telemetry) need no commit and no wait.
        let writes = turns.iter().any(|t| !t.part.is_empty());
        if let Some(wait) = (last_commit + gap).checked_duration_since(Instant::now()) {
            if writes {
                std::thread::sleep(wait);
            }
        }
        // While retrying, the queue stays bounded: new turns wait in it.
        if !retrying {
            loop {
                match rx.try_recv() {
                    Ok(t) => turns.push(take(t)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        let parts: Vec<Part> = turns.iter_mut().map(|t| std::mem::take(&mut t.part)).collect();
        let started = Instant::now();
        let writes = parts.iter().any(|p| !p.is_empty());
        let result = if writes { store.commit(pipeline, &parts) } else { Ok(()) };
        if writes {
            // From the start, not the end: at most one commit per `gap`, and
            // a commit slower than `gap` is followed by the next at once.
            // Behind a broker that holds back telemetry until it is
            // acknowledged (mosquitto lets 20 through by default), the gap
            // after a commit would be dead time on every cycle.
            last_commit = started;
        }
        match result {
            Ok(()) => {
                if writes {
                    events.committed(started.elapsed().as_secs_f64());
                }
                if retrying {
                    events.resumed();
                    watch.health.set_commit_error(watch.pipeline, None);
                }
                retrying = false;
                turns.drain(..).flat_map(|t| t.acks).for_each(Ack::done);
            }
            Err(e) if e.is_corrupt() => {
                // Dropped unacknowledged: the broker delivers them again
                // to the next start, which sets the file aside.
                events.corrupt(&e.to_string());
                watch.corrupt.cancel();
                return;
            }
            Err(e) => {
                events.failed(&e.to_string(), turns.len());
                watch.health.set_commit_error(watch.pipeline, Some(e.to_string()));
                // Put the parts back: the same changes are committed next time.
                for (t, p) in turns.iter_mut().zip(parts) {
                    t.part = p;
                }
                retrying = true;
                let until = Instant::now() + RETRY_AFTER;
                while Instant::now() < until && !watch.deadline.passed() {
                    std::thread::sleep(LOOK_UP);
                }
                if watch.deadline.passed() {
                    // Dropped unacknowledged: the broker delivers them again.
                    events.abandoned(turns.len() + rx.try_iter().count());
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::ack::AckId;
    use crate::durable::store::NewEntry;
    use rumqttc::QoS;

    fn watch() -> Watch {
        Watch {
            health: Health::new(&["p".into()]),
            pipeline: 0,
            deadline: Deadline::default(),
            corrupt: CancellationToken::new(),
        }
    }

    /// A committer on its own thread, as the daemon runs one.
    fn start(store: &Arc<Store>, gap: Duration) -> (CommitQueue, std::thread::JoinHandle<()>) {
        let (queue, turns) = queue();
        let store = store.clone();
        (queue, std::thread::spawn(move || run(store, "p", gap, turns, watch())))
    }

    /// The queue holds at most `QUEUE_BYTES` of turns: a worker sending
    /// faster than the disk commits waits for room (never more than one
    /// turn over the budget is queued), and every turn is still committed
    /// and acknowledged, the queue's count back at zero.
    #[test]
    fn queued_turns_are_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (ack_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
        // A gap of 50 ms between commits: the disk is the slow side.
        let (c, committer) = start(&store, Duration::from_millis(50));
        let snapshot = vec![7u8; QUEUE_BYTES / 4];
        let mut peak = 0;
        for i in 0..12u16 {
            let part =
                Part { windows: vec![(format!("d{i}").into(), snapshot.clone())], ..Default::default() };
            let id = AckId { pkid: 1 + i, qos: QoS::AtLeastOnce };
            c.send(Turn { part, acks: Ack::split(id, 1, &ack_tx) }, || {});
            peak = peak.max(c.shared.queued.load(Ordering::Acquire));
        }
        assert!(peak <= QUEUE_BYTES + snapshot.len() + 64, "queued {peak} bytes");
        let shared = c.shared.clone();
        drop(c);
        committer.join().unwrap();
        assert_eq!(shared.queued.load(Ordering::Acquire), 0);
        let acked = std::iter::from_fn(|| acks.try_recv().ok()).count();
        assert_eq!(acked, 12, "every turn committed and acknowledged");
        assert_eq!(store.windows("p").unwrap().len(), 12);
    }

    /// Turns are committed in order, merged, and their telemetry is
    /// acknowledged only once durable; what is queued when the worker
    /// lets go of the queue is committed before the committer ends.
    #[test]
    fn turns_are_committed_in_order_then_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (ack_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
        let (c, committer) = start(&store, Duration::from_millis(5));
        for i in 0..20u8 {
            let id = AckId { pkid: 100 + u16::from(i), qos: QoS::AtLeastOnce };
            let new = NewEntry {
                created_ms: 1,
                ts: 7,
                topic: format!("s/{i}"),
                payload: vec![i],
                retain: false,
                sparkplug: false,
            };
            let (scores, ()) = store.reserve(vec![new], |_| ());
            let forget = if i == 19 { vec!["d3".to_string()] } else { vec![] };
            let part = Part { windows: vec![(format!("d{}", i % 4).into(), vec![i])], forget, scores };
            c.send(Turn { part, acks: Ack::split(id, 1, &ack_tx) }, || {});
        }
        drop(c);
        committer.join().unwrap();
        let acked: Vec<u16> = std::iter::from_fn(|| acks.try_recv().ok()).map(|a| a.pkid).collect();
        assert_eq!(acked, (100..120).collect::<Vec<_>>(), "every turn acknowledged, in order");
        let windows = store.windows("p").unwrap();
        let expected: Vec<(String, Vec<u8>)> =
            [("d0", 16u8), ("d1", 17), ("d2", 18)].iter().map(|(d, v)| (d.to_string(), vec![*v])).collect();
        assert_eq!(windows, expected, "the last snapshot of each device wins; d3 is forgotten");
        let out = store.outbox().unwrap();
        assert_eq!(out.len(), 20);
        assert_eq!(store.durable_below(), 21, "every reservation is committed");
    }
}
