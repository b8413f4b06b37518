//! The sink: the one task that publishes, from the durable outbox.
//!
//! Scores reach it as their commit is written, before its fsync (see
//! [`Store`]: its deletes wait for that commit). It publishes
//! them in sequence order, learns from the connection task which packet id
//! each publish got (`Sent`) and when the broker acknowledged it (`Acked`),
//! and only then deletes it from the store. Status and dead-letter messages
//! go through here too, so every `Sent` event maps to exactly one publish.
//! It publishes on a connection of its own ([`Purpose::Publisher`](crate::mqtt::Purpose::Publisher)); of the
//! telemetry connection it hears only whether the subscriptions are in
//! place (`Intake`), since `online` waits for both.
//!
//! Reconnects: rumqttc's own retransmission state is cleared by the
//! connection task at every ConnAck, and before polling again it waits for
//! the sink to acknowledge `Up`. The sink then drops its half-done send and
//! republishes every unacknowledged entry from the oldest: nothing is lost,
//! and what the broker may already have is sent again byte for byte
//! (duplicates identical, identified by `device` and `ts`).
//!
//! Bounds: `max_bytes` and `max_age`; beyond them the oldest entries are
//! dropped and counted.
//!
//! Sparkplug: a second sink, on the Edge Node's own connection, holds the
//! Sparkplug records and renders each through the [`EdgeNode`](crate::sparkplug::node::EdgeNode) just before
//! it is published, since `seq` and births belong to the session: at each
//! `Up` the node starts a session, at `Subscribed` (and when a primary host
//! comes online, or a host asks for a rebirth) it publishes its births, and
//! only then device data. Sparkplug births and data are QoS 0, so a record
//! is done once the event loop has written it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::QoS;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Deadline;
use crate::durable::link::{Gone, Link, Publisher, Refusal};
use crate::durable::store::{Entry, Store};
use crate::ops::events::durable::{Overflow, SinkEvents};
use crate::ops::events::redundancy::ReplayEvents;
use crate::sparkplug::node::OutMessage;
use crate::sparkplug::session::{Reaction, Rendered, Session, UnreadableRecord};

/// Messages that are not scores.
#[derive(Debug)]
pub(crate) enum Control {
    /// The retained `online` status (published now and after every reconnect).
    Online(Vec<u8>),
    /// A rejected payload for the dead-letter topic (QoS 0, not durable).
    DeadLetter { topic: String, payload: Vec<u8> },
    /// A retained summary (QoS 1, not durable): a newer one for the same
    /// topic replaces one still queued.
    Summary { topic: String, payload: Vec<u8> },
    /// Under `[redundancy]`: publish for the pair, or stand by.
    Gate(Gate),
}

/// Whether a sink of a redundant pair publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Publish: first what was kept while standing by, in order, then live.
    /// Decided for the publisher connection's `n`th connect (see
    /// [`Health::publisher`](crate::ops::health::Health::publisher)): a sink
    /// that has seen a later connect since stays standing by, and its
    /// controller decides again.
    Active(u64),
    /// Publish nothing but the status; keep what would be published for
    /// the last `replay` of data time (the messages' `ts`), to publish
    /// first on becoming active.
    Standby,
}

/// A sink of a redundant pair (see [`crate::redundancy`]).
#[derive(Debug, Clone)]
pub(crate) struct Redundant {
    /// What a standby keeps, in data time.
    pub replay: Duration,
    /// The newest alarm state published on each alarm topic (its `ts`), by
    /// either instance: an alarm state not newer than that is not published
    /// again, so a subscriber never sees a device step back.
    pub alarms_seen: Arc<Mutex<HashMap<String, i64>>>,
}

#[derive(Debug, Clone)]
pub(crate) struct SinkConfig {
    pub status_topic: String,
    pub offline: Vec<u8>,
    pub max_bytes: u64,
    pub max_age: Duration,
    /// At a stop, publishing ends by this deadline (armed by the daemon
    /// when the stop begins: the whole stop keeps `state.drain_timeout_secs`).
    pub drain_until: Deadline,
    /// Then `offline` (or NDEATH) and DISCONNECT get at most this long.
    pub farewell: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ref {
    Data(u64),
    Control,
    /// The NDEATH that ends a Sparkplug session (see [`Sink::command`]).
    EndSession,
}

struct Pending {
    topic: String,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    /// Only meaningful in the session it was made for (Sparkplug births).
    session: bool,
}

impl Pending {
    /// A dead letter: QoS 0, neither retained nor of a Sparkplug session.
    fn is_dead_letter(&self) -> bool {
        self.qos == QoS::AtMostOnce && !self.retain && !self.session
    }
}

impl Slot {
    /// Alarms are the only retained messages that are not Sparkplug
    /// (`alarm_entry` in [`pipeline::render`](crate::pipeline::render)).
    fn is_alarm(&self) -> bool {
        self.retain && !self.sparkplug
    }
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    created_ms: i64,
    topic: String,
    payload: Bytes,
    retain: bool,
    sparkplug: bool,
    /// Its data time (see [`Entry::ts`]).
    ts: i64,
    acked: bool,
    /// Sent in this session ahead of its turn (a device born with its newest values).
    early: bool,
}

/// Rows per delete transaction. redb has one writer: a pipeline's committer
/// waits behind a delete, and its worker stops scoring once the committer's
/// queue is full. After a burst the backlog of acknowledged scores runs to
/// tens of thousands, so it is deleted in short transactions with a pause
/// between them, in which a waiting commit gets the writer.
const DELETE_CHUNK: usize = 512;
const DELETE_PAUSE: Duration = Duration::from_micros(200);

/// Sequence numbers a delete could not remove, and why.
type Undeleted = (Vec<u64>, String);

/// Delete `seqs` in chunks; returns what could not be deleted (the store
/// failed), to be tried again later, and the error.
fn remove(store: &Store, seqs: &[u64], durable: bool) -> Option<Undeleted> {
    // Nothing to delete still makes one (durable) transaction when asked to.
    let chunks: Vec<&[u64]> = if seqs.is_empty() { vec![seqs] } else { seqs.chunks(DELETE_CHUNK).collect() };
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        // Only the last is made durable: redb's durable commit covers the earlier ones.
        if let Err(e) = store.remove(chunk, durable && last) {
            return Some((chunks[i..].concat(), e.to_string()));
        }
        if !last {
            std::thread::sleep(DELETE_PAUSE);
        }
    }
    None
}

type SendFuture = Pin<Box<dyn Future<Output = Result<(), Gone>> + Send>>;

/// What the run loop does after a [`Link`].
enum Flow {
    Go,
    /// A new connection: the half-done send is dropped.
    DropSend,
}

/// Dead letters and status queued at most (QoS 0 extras: beyond, dropped and counted).
const DEAD_LETTERS_QUEUED: usize = 1000;

pub(crate) struct Sink<P: Publisher> {
    client: P,
    store: Arc<Store>,
    config: SinkConfig,
    slots: VecDeque<Slot>,
    bytes: u64,
    /// Index in `slots` of the next entry to send.
    cursor: usize,
    control: VecDeque<Pending>,
    online: Option<Vec<u8>>,
    /// Refs of publishes handed to rumqttc whose `Sent` has not come yet.
    fifo: VecDeque<Ref>,
    pkids: HashMap<u16, Ref>,
    to_delete: Vec<u64>,
    /// The delete running on a blocking thread: redb has one writer, so a
    /// delete can wait for a pipeline's commit, and the async thread (every
    /// connection's intake and publishing) must not wait with it.
    deleting: Option<tokio::task::JoinHandle<()>>,
    /// What the last delete could not delete, and why: tried again.
    undeleted: Arc<Mutex<Option<Undeleted>>>,
    events: SinkEvents<Refusal>,
    /// Where refused publishes are reported (`/healthz`).
    health: Option<Arc<crate::ops::health::Health>>,
    /// The NDEATH of a session being ended on purpose, to publish first.
    ending: Option<Pending>,
    /// The next Sparkplug record waits for its commit (see [`Sink::next_publish`]).
    awaiting_commit: bool,
    up: bool,
    /// The telemetry connection's subscriptions are in place: `online` is
    /// said only while both that and the sink's own connection are up.
    intake: bool,
    /// The Sparkplug Edge Node this sink publishes for.
    node: Option<Session>,
    /// Under `[redundancy]`: how it stands by, and whether it does now.
    redundant: Option<Redundant>,
    standby: bool,
    /// Dead letters kept while standing by, with the data time they came at.
    kept_letters: VecDeque<(i64, Pending)>,
    /// The newest data time of what it holds (a standby keeps back from it).
    newest_ts: i64,
    /// Connects of its connection so far.
    ups: u64,
    replays: ReplayEvents,
    /// The Edge Node's sink of a redundant pair: whether its controller
    /// grants it a session now (see [`Sink::follows`]).
    granted: Option<bool>,
    grants: Option<watch::Receiver<bool>>,
}

impl<P: Publisher> Sink<P> {
    /// A sink holding what the store still has from before.
    pub(crate) fn new(client: P, store: Arc<Store>, config: SinkConfig, backlog: Vec<Entry>) -> Sink<P> {
        let mut sink = Sink {
            client,
            store,
            config,
            slots: VecDeque::new(),
            bytes: 0,
            cursor: 0,
            control: VecDeque::new(),
            online: None,
            fifo: VecDeque::new(),
            pkids: HashMap::new(),
            to_delete: Vec::new(),
            deleting: None,
            undeleted: Default::default(),
            events: SinkEvents::default(),
            health: None,
            ending: None,
            awaiting_commit: false,
            up: false,
            intake: false,
            node: None,
            redundant: None,
            standby: false,
            kept_letters: VecDeque::new(),
            newest_ts: i64::MIN,
            ups: 0,
            replays: ReplayEvents::default(),
            granted: None,
            grants: None,
        };
        if !backlog.is_empty() {
            sink.events.backlog(backlog.len());
        }
        sink.add(backlog);
        sink
    }

    fn add(&mut self, entries: Vec<Entry>) {
        for e in entries {
            self.bytes += e.size();
            self.newest_ts = self.newest_ts.max(e.ts);
            // Dead letters kept before any data time was known take the first.
            for (ts, _) in self.kept_letters.iter_mut().rev().take_while(|(ts, _)| *ts == i64::MIN) {
                *ts = self.newest_ts;
            }
            self.slots.push_back(Slot {
                seq: e.seq,
                created_ms: e.created_ms,
                topic: e.topic,
                payload: Bytes::from(e.payload),
                retain: e.retain,
                sparkplug: e.sparkplug,
                ts: e.ts,
                acked: false,
                early: false,
            });
        }
        self.enforce_bounds();
    }

    fn drop_front(&mut self, reason: Overflow) {
        if let Some(s) = self.slots.pop_front() {
            self.bytes -= (s.topic.len() + s.payload.len()) as u64;
            self.cursor = self.cursor.saturating_sub(1);
            self.to_delete.push(s.seq);
            if !s.acked {
                self.events.dropped(&s.topic, reason);
            }
        }
    }

    fn enforce_bounds(&mut self) {
        while self.bytes > self.config.max_bytes {
            self.drop_front(Overflow::Bytes);
        }
        let oldest_allowed = crate::clock::now_ms() - self.config.max_age.as_millis() as i64;
        while self.slots.front().is_some_and(|s| s.created_ms < oldest_allowed) {
            self.drop_front(Overflow::Age);
        }
        self.keep_back();
        self.events.level(self.slots.len(), self.bytes);
    }

    /// Standing by: what is older (in data time) than the replay keeps is
    /// the active instance's to publish, and goes.
    fn keep_back(&mut self) {
        let Some(r) = self.redundant.as_ref().filter(|_| self.standby) else { return };
        let oldest_kept = self.newest_ts.saturating_sub(r.replay.as_millis() as i64);
        while self.slots.front().is_some_and(|s| s.ts < oldest_kept) {
            let s = self.slots.pop_front().expect("front exists");
            self.bytes -= (s.topic.len() + s.payload.len()) as u64;
            self.cursor = self.cursor.saturating_sub(1);
            self.to_delete.push(s.seq);
        }
        while self.kept_letters.front().is_some_and(|(ts, _)| *ts < oldest_kept) {
            self.kept_letters.pop_front();
        }
    }

    /// Under `[redundancy]`, from `Standby` on (the controller says when).
    pub(crate) fn redundant(mut self, r: Redundant) -> Sink<P> {
        self.redundant = Some(r);
        self.standby = true;
        self
    }

    /// The Edge Node's sink of a redundant pair (with [`Sink::redundant`]):
    /// it publishes while `grant` says so, its connection connected only
    /// then; when the grant goes, it ends the session with its NDEATH and
    /// keeps what it would publish, as a standby does.
    pub(crate) fn follows(mut self, grant: watch::Receiver<bool>) -> Sink<P> {
        let granted = *grant.borrow();
        self.granted = Some(granted);
        self.standby = !granted;
        self.grants = Some(grant);
        self
    }

    /// The grant changed.
    fn follow(&mut self, granted: bool) {
        self.granted = Some(granted);
        if granted || self.standby {
            return;
        }
        self.standby = true;
        self.control.retain(|p| !p.session);
        if self.up {
            self.end_session();
        }
    }

    /// End the node's session: its NDEATH first, then a clean DISCONNECT.
    fn end_session(&mut self) {
        if let Some(n) = &self.node {
            let m = n.ndeath();
            self.ending = Some(Pending {
                topic: m.topic,
                payload: Bytes::from(m.payload),
                qos: QoS::AtLeastOnce,
                retain: false,
                session: false,
            });
        }
    }

    /// Start or stop publishing for the pair.
    fn gate(&mut self, gate: Gate) {
        if self.redundant.is_none() {
            return;
        }
        match gate {
            Gate::Standby => {
                self.standby = true;
                // Dead letters not yet out wait with the rest; summaries are
                // the active instance's; the status stays.
                for p in std::mem::take(&mut self.control) {
                    match p.is_dead_letter() {
                        true => self.kept_letters.push_back((self.newest_ts, p)),
                        false if p.topic == self.config.status_topic => self.control.push_back(p),
                        false => {}
                    }
                }
            }
            Gate::Active(ups) if ups != self.ups => {}
            Gate::Active(_) if self.standby => {
                self.standby = false;
                // From the oldest kept: what the old active did not get to publish.
                self.cursor = 0;
                let kept = self.slots.iter().filter(|s| !s.acked).count() + self.kept_letters.len();
                self.control.extend(self.kept_letters.drain(..).map(|(_, p)| p));
                self.replays.replaying(kept);
            }
            Gate::Active(_) => {}
        }
    }

    /// An alarm state that another publish on its topic (by either
    /// instance) has overtaken: publishing it would step the device back.
    fn overtaken(&self, s: &Slot) -> bool {
        let Some(r) = &self.redundant else { return false };
        s.is_alarm()
            && r.alarms_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&s.topic)
                .is_some_and(|seen| *seen >= s.ts)
    }

    /// Mark `seq` acknowledged and release the acknowledged prefix.
    fn acked(&mut self, seq: u64) {
        let Ok(i) = self.slots.binary_search_by_key(&seq, |s| s.seq) else { return };
        self.events.published(self.slots[i].is_alarm());
        if let Some(h) = &self.health {
            h.publish_accepted(&self.slots[i].topic);
        }
        self.release(i);
    }

    /// The broker refused `seq` (MQTT 5 reason code): it is not published
    /// and never will be as it is, so it leaves the outbox, counted as lost.
    fn refused(&mut self, seq: u64, why: Refusal) {
        let Ok(i) = self.slots.binary_search_by_key(&seq, |s| s.seq) else { return };
        self.events.refused(&self.slots[i].topic, why);
        if let Some(h) = &self.health {
            h.publish_refused(&self.slots[i].topic, why.as_str());
        }
        self.release(i);
    }

    /// The broker refused the status or a dead letter.
    fn refused_control(&mut self, why: Refusal) {
        let topic = "(status or dead letter)";
        self.events.refused(topic, why);
        if let Some(h) = &self.health {
            h.publish_refused(topic, why.as_str());
        }
    }

    /// Slot `i` is done with (acknowledged or refused): release the done prefix.
    fn release(&mut self, i: usize) {
        self.slots[i].acked = true;
        while self.slots.front().is_some_and(|s| s.acked) {
            let s = self.slots.pop_front().expect("front exists");
            self.bytes -= (s.topic.len() + s.payload.len()) as u64;
            self.cursor = self.cursor.saturating_sub(1);
            self.to_delete.push(s.seq);
        }
    }

    /// Report refused publishes to `health`.
    pub(crate) fn with_health(mut self, health: Arc<crate::ops::health::Health>) -> Sink<P> {
        self.health = Some(health);
        self
    }

    /// This sink publishes for a Sparkplug Edge Node (its records only).
    pub(crate) fn with_node(mut self, node: Session) -> Sink<P> {
        self.node = Some(node);
        self
    }

    fn next_publish(&mut self) -> Option<(Ref, Pending)> {
        if let Some(p) = self.ending.take() {
            return Some((Ref::EndSession, p));
        }
        if let Some(p) = self.control.pop_front() {
            return Some((Ref::Control, p));
        }
        if self.standby {
            return None;
        }
        while let Some(s) = self.slots.get(self.cursor) {
            if s.acked || s.early {
                self.cursor += 1;
                continue;
            }
            let seq = s.seq;
            if !s.sparkplug && self.overtaken(s) {
                self.cursor += 1;
                self.release(self.cursor - 1);
                continue;
            }
            if !s.sparkplug {
                self.cursor += 1;
                let p = Pending {
                    topic: s.topic.clone(),
                    payload: s.payload.clone(),
                    qos: QoS::AtLeastOnce,
                    retain: s.retain,
                    session: false,
                };
                return Some((Ref::Data(seq), p));
            }
            // Sparkplug: nothing before the node's births (it may be waiting for its primary host).
            let node = self.node.as_mut().filter(|n| n.is_born())?;

            // A device about to be born is born with its newest pending
            // values; older records still pending (published before a
            // restart, say) follow as history.
            let pending = self.slots.iter().filter(|s| s.sparkplug && !s.acked);
            let newer = node.birth_first(
                &s.topic,
                seq,
                &s.payload,
                pending.map(|s| (s.seq, s.topic.as_str(), &s.payload[..])),
            );
            let newer = newer.and_then(|n| self.slots.binary_search_by_key(&n, |s| s.seq).ok());
            let (at, early) = match newer.filter(|j| !self.slots[*j].acked && !self.slots[*j].early) {
                Some(j) => (j, true),
                None => (self.cursor, false),
            };
            // Nor before its commit: what a host was sent must survive a crash,
            // or after a restart the device would be born with older values
            // than the host already has (a score is otherwise published before
            // its commit, see `Store`). A commit is a millisecond or so.
            if self.slots[at].seq >= self.store.durable_below() {
                self.awaiting_commit = true;
                return None;
            }
            if early {
                self.slots[at].early = true;
            } else {
                self.cursor += 1;
            }
            let s = &self.slots[at];
            let seq = s.seq;
            let node = self.node.as_mut().expect("born above");
            match node.render(&s.topic, &s.payload) {
                Err(UnreadableRecord) => {
                    self.events.unreadable_record(seq);
                    self.acked(seq);
                }
                Ok(Rendered::Rebirth(births)) => {
                    // The births first (they declare the new metric), then this record again.
                    match early {
                        true => self.slots[at].early = false,
                        false => self.cursor -= 1,
                    }
                    self.queue_births(births);
                    return self.control.pop_front().map(|p| (Ref::Control, p));
                }
                Ok(Rendered::Message(m)) => {
                    let p = Pending {
                        topic: m.topic,
                        payload: Bytes::from(m.payload),
                        qos: QoS::AtMostOnce,
                        retain: false,
                        session: true,
                    };
                    return Some((Ref::Data(seq), p));
                }
                Ok(Rendered::Nothing) => self.acked(seq), // e.g. the death of a device never born
            }
        }
        None
    }

    /// Queue the node's births (NBIRTH, then a DBIRTH per known device) ahead of any data.
    fn births(&mut self) {
        let Some(n) = self.node.as_mut() else { return };
        let births = n.births();
        self.queue_births(births);
    }

    fn queue_births(&mut self, births: Vec<OutMessage>) {
        if births.is_empty() || self.granted == Some(false) {
            return;
        }
        // Births reset `seq`: whatever was made for the old numbering goes.
        self.control.retain(|p| !p.session);
        for m in births {
            self.control.push_back(Pending {
                topic: m.topic,
                payload: Bytes::from(m.payload),
                qos: QoS::AtMostOnce,
                retain: false,
                session: true,
            });
        }
    }

    fn command(&mut self, topic: &str, payload: &[u8]) {
        let Some(n) = self.node.as_mut() else { return };
        match n.command(topic, payload) {
            Reaction::None => {}
            Reaction::Births(births) => self.queue_births(births),
            Reaction::End => {
                self.control.retain(|p| !p.session);
                self.end_session();
            }
        }
    }

    fn send(&self, p: Pending) -> SendFuture {
        let client = self.client.clone();
        Box::pin(async move { client.publish(p.topic, p.qos, p.retain, p.payload).await })
    }

    /// Queue `online` ahead of everything, if there is one to say and both
    /// connections are up (an earlier one still queued goes: one is enough).
    fn say_online(&mut self) {
        if !(self.up && self.intake) {
            return;
        }
        if let Some(p) = self.online_pending() {
            let topic = &self.config.status_topic;
            self.control.retain(|c| !(c.retain && c.topic == *topic));
            self.control.push_front(p);
        }
    }

    fn online_pending(&self) -> Option<Pending> {
        self.online.as_ref().map(|o| Pending {
            topic: self.config.status_topic.clone(),
            payload: Bytes::from(o.clone()),
            qos: QoS::AtLeastOnce,
            retain: true,
            session: false,
        })
    }

    fn all_acked(&self) -> bool {
        self.slots.iter().all(|s| s.acked)
    }

    /// Start deleting what was acknowledged since the last delete, unless
    /// the last one still runs (its successor then takes both batches).
    /// Scores whose commit is not done yet wait for a later round: deleted
    /// now, their commit would bring them back.
    fn flush_deletes(&mut self) {
        if self.deleting.as_ref().is_some_and(|d| !d.is_finished()) {
            return;
        }
        self.deleting = None;
        if let Some((left, why)) = self.undeleted.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.to_delete.extend(left);
            self.events.delete_failed(&why);
        }
        if self.to_delete.is_empty() {
            return;
        }
        let seqs = self.deletable();
        if seqs.is_empty() {
            return;
        }
        let (store, undeleted) = (self.store.clone(), self.undeleted.clone());
        self.deleting = Some(tokio::task::spawn_blocking(move || {
            if let Some(left) = remove(&store, &seqs, false) {
                *undeleted.lock().unwrap_or_else(|p| p.into_inner()) = Some(left);
            }
        }));
    }

    /// Take the pending deletes whose commits are done.
    fn deletable(&mut self) -> Vec<u64> {
        let floor = self.store.durable_below();
        let (now, later) = self.to_delete.iter().partition(|s| **s < floor);
        self.to_delete = later;
        now
    }

    /// The last delete, made durable, after any still running.
    async fn final_deletes(&mut self) {
        if let Some(d) = self.deleting.take() {
            let _ = d.await;
        }
        if let Some((left, _)) = self.undeleted.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.to_delete.extend(left);
        }
        // The pipelines are done, so every commit is too.
        let (seqs, store) = (self.deletable(), self.store.clone());
        if let Ok(Some((left, why))) = tokio::task::spawn_blocking(move || remove(&store, &seqs, true)).await
        {
            self.events.last_deletes_failed(left.len(), &why);
        }
    }

    /// Publish until `drain` is cancelled and the workers are gone (`entries`
    /// closed), then until everything is acknowledged or the drain timeout
    /// passes; then `offline`, and disconnect.
    pub(crate) async fn run(
        mut self,
        mut entries: mpsc::UnboundedReceiver<Vec<Entry>>,
        mut control: mpsc::Receiver<Control>,
        mut link: mpsc::UnboundedReceiver<Link>,
        drain: CancellationToken,
    ) {
        let mut sending: Option<SendFuture> = None;
        let mut entries_open = true;
        // A closed channel is always ready: poll it no more, or it starves the other branches.
        let mut control_open = true;
        let mut drain_deadline: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let store = self.store.clone();
        let mut grants = self.grants.take();
        loop {
            if sending.is_none() && self.up {
                if let Some((r, p)) = self.next_publish() {
                    // Queued before the hand-over: `Sent` may arrive before we see the send complete.
                    self.fifo.push_back(r);
                    sending = Some(self.send(p));
                }
            }
            if let Some(deadline) = drain_deadline {
                // A standby publishes nothing it keeps: only what is in flight.
                let done = !entries_open && (self.standby || self.all_acked()) && self.control.is_empty();
                if done || Instant::now() >= deadline {
                    if !done {
                        self.events.drain_timeout(self.slots.iter().filter(|s| !s.acked).count());
                    }
                    break;
                }
            }
            tokio::select! {
                biased;
                l = link.recv() => match l.map(|l| self.on_link(l)) {
                    Some(Flow::Go) => {}
                    // Nothing half-sent survives: rumqttc cannot take it before we answer.
                    Some(Flow::DropSend) => sending = None,
                    None => break, // connection task gone
                },
                r = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                    sending = None;
                    if r.is_err() {
                        break; // the event loop is gone
                    }
                }
                e = entries.recv(), if entries_open => match e {
                    Some(batch) => self.add(batch),
                    None => entries_open = false,
                },
                c = control.recv(), if control_open => match c {
                    Some(c) => self.on_control(c),
                    None => control_open = false,
                },
                _ = store.commits().notified(), if self.awaiting_commit => self.awaiting_commit = false,
                g = changed(&mut grants), if grants.is_some() => match g {
                    Some(g) => self.follow(g),
                    None => grants = None,
                },
                _ = tick.tick() => {
                    self.awaiting_commit = false;
                    self.enforce_bounds();
                    self.flush_deletes();
                }
                _ = drain.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + self.config.drain_until.remaining().unwrap_or_default());
                }
            }
        }
        drop(sending);
        if tokio::time::timeout(self.config.farewell, self.final_deletes()).await.is_err() {
            self.events.last_deletes_late();
        }
        self.farewell().await;
    }

    /// What the connection says; `DropSend` when the half-done send must go.
    fn on_link(&mut self, l: Link) -> Flow {
        match l {
            Link::Up { ready } => {
                // A new connection of a redundant pair's instance stands by
                // until its controller says otherwise, and says its status
                // once the controller has decided it again.
                self.ups += 1;
                match self.granted {
                    Some(granted) => self.standby = !granted,
                    None if self.redundant.is_some() => {
                        self.standby = true;
                        self.online = None;
                    }
                    None => {}
                }
                self.fifo.clear();
                self.pkids.clear();
                self.ending = None;
                self.slots.iter_mut().for_each(|s| s.early = false);
                self.cursor = 0;
                self.control.retain(|p| p.qos == QoS::AtMostOnce && !p.session);
                if let Some(n) = self.node.as_mut() {
                    n.started();
                }
                // Connected as the grant went: the session ends at once.
                if self.granted == Some(false) {
                    self.end_session();
                }
                self.up = true;
                // Our will may have said `offline` since.
                self.say_online();
                let _ = ready.send(());
                return Flow::DropSend;
            }
            Link::Subscribed => self.births(),
            Link::Intake(subscribed) => {
                self.intake = subscribed;
                self.say_online();
            }
            Link::Incoming { topic, payload } => self.command(&topic, &payload),
            Link::Down => self.up = false,
            Link::Sent(pkid) => match self.fifo.pop_front() {
                Some(r) if pkid != 0 => {
                    self.pkids.insert(pkid, r);
                }
                // QoS 0 (Sparkplug): written is as far as it goes.
                Some(Ref::Data(seq)) => self.acked(seq),
                Some(Ref::Control | Ref::EndSession) => {}
                None => self.events.unmatched_send(pkid),
            },
            Link::Acked { pkid, refused: None } => match self.pkids.remove(&pkid) {
                Some(Ref::Data(seq)) => self.acked(seq),
                Some(Ref::EndSession) => {
                    if let Some(n) = &self.node {
                        n.end();
                    }
                }
                _ => {}
            },
            Link::Acked { pkid, refused: Some(why) } => match self.pkids.remove(&pkid) {
                Some(Ref::Data(seq)) => self.refused(seq, why),
                Some(Ref::Control | Ref::EndSession) => self.refused_control(why),
                None => {}
            },
        }
        Flow::Go
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Online(payload) => {
                self.online = Some(payload);
                self.say_online();
            }
            Control::DeadLetter { topic, payload } => {
                let payload = Bytes::from(payload);
                let p = Pending { topic, payload, qos: QoS::AtMostOnce, retain: false, session: false };
                let (held, kept) = (self.control.len(), self.kept_letters.len());
                match (self.standby, held.max(kept) < DEAD_LETTERS_QUEUED) {
                    (_, false) => self.events.dead_letter_dropped(),
                    (true, true) => self.kept_letters.push_back((self.newest_ts, p)),
                    (false, true) => self.control.push_back(p),
                }
            }
            // The active instance publishes the pair's summaries.
            Control::Summary { .. } if self.standby => {}
            Control::Gate(g) => self.gate(g),
            Control::Summary { topic, payload } => {
                self.control.retain(|c| !(c.retain && c.topic == topic));
                let payload = Bytes::from(payload);
                self.control.push_back(Pending {
                    topic,
                    payload,
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    session: false,
                });
            }
        }
    }

    /// `offline` (or the node's NDEATH), then a clean DISCONNECT (so the
    /// broker drops the last will), within the farewell's time.
    async fn farewell(self) {
        let last = match &self.node {
            None => Some(Pending {
                topic: self.config.status_topic.clone(),
                payload: Bytes::from(self.config.offline.clone()),
                qos: QoS::AtLeastOnce,
                retain: true,
                session: false,
            }),
            // A standby of a pair has no session to end.
            Some(_) if self.granted == Some(false) => None,
            Some(n) => {
                let m = n.ndeath();
                Some(Pending {
                    topic: m.topic,
                    payload: Bytes::from(m.payload),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    session: false,
                })
            }
        };
        let farewell = async {
            if let Some(p) = last {
                let _ = self.send(p).await;
            }
            let _ = self.client.disconnect().await;
        };
        if tokio::time::timeout(self.config.farewell, farewell).await.is_err() {
            self.events.farewell_unsent();
        }
    }
}

/// The next value of `grants` (if any); never without one, none once closed.
async fn changed(grants: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    match grants {
        Some(g) => g.changed().await.ok().map(|_| *g.borrow_and_update()),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that takes nothing (these tests drive the sink by hand).
    #[derive(Clone)]
    struct Nowhere;

    impl Publisher for Nowhere {
        async fn publish(&self, _: String, _: QoS, _: bool, _: Bytes) -> Result<(), Gone> {
            Err(Gone)
        }

        async fn disconnect(&self) -> Result<(), Gone> {
            Err(Gone)
        }
    }

    fn sink(max_bytes: u64, max_age: Duration) -> (Sink<Nowhere>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let client = Nowhere;
        let config = SinkConfig {
            status_topic: "s".into(),
            offline: Vec::new(),
            max_bytes,
            max_age,
            drain_until: Deadline::default(),
            farewell: Duration::from_secs(1),
        };
        (Sink::new(client, store, config, Vec::new()), dir)
    }

    fn entry(seq: u64, created_ms: i64) -> Entry {
        Entry {
            seq,
            created_ms,
            ts: 7,
            topic: "t/x".into(),
            payload: vec![b'x'; 97],
            retain: false,
            sparkplug: false,
        }
        // 100 bytes
    }

    fn seqs(s: &Sink<Nowhere>) -> Vec<u64> {
        s.slots.iter().map(|s| s.seq).collect()
    }

    #[test]
    fn bounded_by_bytes_dropping_oldest_first() {
        let (mut s, _d) = sink(350, Duration::from_secs(3600));
        let now = crate::clock::now_ms();
        s.add((1..=5).map(|i| entry(i, now)).collect());
        assert_eq!(seqs(&s), [3, 4, 5]);
        assert_eq!(s.bytes, 300);
        assert_eq!(s.to_delete, [1, 2], "dropped entries leave the store too");
    }

    #[test]
    fn bounded_by_age() {
        let (mut s, _d) = sink(1 << 20, Duration::from_secs(60));
        let now = crate::clock::now_ms();
        s.add(vec![entry(1, now - 120_000), entry(2, now - 30_000), entry(3, now)]);
        assert_eq!(seqs(&s), [2, 3]);
    }

    #[test]
    fn acknowledgements_release_only_the_acknowledged_prefix() {
        let (mut s, _d) = sink(1 << 20, Duration::from_secs(3600));
        let now = crate::clock::now_ms();
        s.add((1..=4).map(|i| entry(i, now)).collect());
        s.up = true;
        let sent: Vec<u64> = std::iter::from_fn(|| s.next_publish())
            .map(|(r, _)| match r {
                Ref::Data(seq) => seq,
                Ref::Control | Ref::EndSession => panic!("no control queued"),
            })
            .collect();
        assert_eq!(sent, [1, 2, 3, 4], "published in sequence order");
        s.acked(2);
        assert_eq!(seqs(&s), [1, 2, 3, 4], "1 is still unacknowledged");
        s.acked(1);
        assert_eq!(seqs(&s), [3, 4]);
        assert_eq!(s.to_delete, [1, 2]);
        assert!(!s.all_acked());
        s.acked(4);
        s.acked(3);
        assert!(s.slots.is_empty() && s.all_acked());
        s.acked(99); // unknown or dropped: ignored
    }

    /// A backlog larger than a chunk is deleted in several transactions,
    /// every row of it, and nothing else.
    #[test]
    fn a_backlog_is_deleted_in_chunks_all_of_it() {
        let (s, _d) = sink(1 << 30, Duration::from_secs(3600));
        let n = 2 * DELETE_CHUNK + 7;
        let new = crate::durable::store::NewEntry {
            created_ms: 1,
            ts: 7,
            topic: "t".into(),
            payload: b"{}".to_vec(),
            retain: false,
            sparkplug: false,
        };
        let (reserved, seqs) = s.store.reserve(vec![new; n], |e| e.iter().map(|e| e.seq).collect::<Vec<_>>());
        s.store
            .commit("p", &[crate::durable::store::Part { scores: reserved, ..Default::default() }])
            .unwrap();
        assert!(remove(&s.store, &seqs[..n - 1], true).is_none());
        let left: Vec<u64> = s.store.outbox().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(left, [seqs[n - 1]], "every chunk deleted, the rest kept");
    }

    /// An acknowledged score is deleted only once its commit is done: the
    /// commit would otherwise write it back, to be published again at the
    /// next start.
    #[test]
    fn acknowledged_scores_are_deleted_after_their_commit() {
        let (mut s, _d) = sink(1 << 20, Duration::from_secs(3600));
        let new = |t: &str| crate::durable::store::NewEntry {
            created_ms: crate::clock::now_ms(),
            ts: 7,
            topic: t.into(),
            payload: b"{}".to_vec(),
            retain: false,
            sparkplug: false,
        };
        let store = s.store.clone();
        let (reserved, entries) = store.reserve(vec![new("a"), new("b")], |e| e);
        s.add(entries);
        s.acked(1);
        s.acked(2);
        assert!(s.deletable().is_empty(), "not committed yet");
        assert_eq!(s.to_delete, [1, 2], "kept for a later round");
        store.commit("p", &[crate::durable::store::Part { scores: reserved, ..Default::default() }]).unwrap();
        assert_eq!(s.deletable(), [1, 2]);
        assert!(s.to_delete.is_empty());
    }

    fn at(seq: u64, ts: i64, topic: &str, retain: bool) -> Entry {
        let payload = format!("{{\"ts\":{ts}}}").into_bytes();
        Entry {
            seq,
            created_ms: crate::clock::now_ms(),
            ts,
            topic: topic.into(),
            payload,
            retain,
            sparkplug: false,
        }
    }

    fn published(s: &mut Sink<Nowhere>) -> Vec<(String, Vec<u8>)> {
        std::iter::from_fn(|| s.next_publish()).map(|(_, p)| (p.topic, p.payload.to_vec())).collect()
    }

    /// A standby publishes its status and nothing else, keeps the last
    /// `replay` of data time, and on taking over publishes what it kept in
    /// order, skipping alarm states the other instance already overtook.
    #[test]
    fn a_standby_keeps_the_replay_and_publishes_it_on_taking_over() {
        let (s, _d) = sink(1 << 20, Duration::from_secs(3600));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let mut s = s.redundant(Redundant { replay: Duration::from_secs(10), alarms_seen: seen.clone() });
        s.up = true;
        s.intake = true;
        s.ups = 1;
        s.on_control(Control::Online(b"standing by".to_vec()));
        s.on_control(Control::DeadLetter { topic: "dl-old".into(), payload: b"bad".to_vec() });
        s.on_control(Control::Summary { topic: "drift".into(), payload: b"{}".to_vec() });
        s.add(vec![
            at(1, 1_000, "a/scores", false),
            at(2, 2_000, "a/alarm", true),
            at(3, 9_000, "a/alarm", true),
        ]);
        s.on_control(Control::DeadLetter { topic: "dl".into(), payload: b"bad".to_vec() });
        s.add(vec![at(4, 12_500, "a/scores", false), at(5, 13_000, "a/scores", false)]);
        s.enforce_bounds();
        assert_eq!(
            published(&mut s),
            [("s".to_string(), b"standing by".to_vec())],
            "nothing but the status while standing by"
        );
        assert_eq!(seqs(&s), [3, 4, 5], "data older than 13 s - 10 s is the active instance's");
        // The old active published alarm state 9_000 itself before it died.
        seen.lock().unwrap().insert("a/alarm".to_string(), 9_000);
        s.on_control(Control::Gate(Gate::Active(0)));
        assert!(published(&mut s).is_empty(), "a decision for an older connect is not taken");
        s.on_control(Control::Gate(Gate::Active(1)));
        let topics: Vec<String> = published(&mut s).into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            topics,
            ["dl", "a/scores", "a/scores"],
            "the kept dead letter, then the kept scores in order"
        );
        s.on_control(Control::Gate(Gate::Standby));
        s.add(vec![at(6, 14_000, "a/scores", false)]);
        assert!(published(&mut s).is_empty(), "standing down: nothing more");
    }
}
