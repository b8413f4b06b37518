//! A long, paced stream of many machines with ONNX Runtime's scores for
//! its windows, and a record of everything lineguard publishes: what the
//! failover and scale-out tests run and check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::daemon::now_ms;
use super::golden::{assert_close, card_scores, expected_window, Expected, Golden};
use super::line::{line_topic, LINE_CARD, LINE_GOLDEN};
use super::mqtt::{Message, Subscriber};

/// One sample of every machine per round.
pub const ROUND: Duration = Duration::from_millis(100);

/// The stream: machine `k` sends golden device `k % 4`'s samples in a
/// loop, one per round, stamped with the round's data time. A window whose
/// samples do not wrap around the golden stream is one of the fixture's,
/// scored by ONNX Runtime.
pub struct Stream {
    pub golden: Golden,
    /// (machine, golden device)
    pub machines: Vec<(String, String)>,
    t0: i64,
}

/// A window of the stream: `(machine, ts)`.
pub type WindowKey = (String, i64);

impl Stream {
    /// `machines` machines, on lines of four (`line1/m00` … `line1/m03`, `line2/m04` …).
    pub fn new(machines: usize) -> Stream {
        let golden = Golden::load(LINE_GOLDEN);
        let sources: Vec<String> = golden.devices.keys().cloned().collect();
        let machines = (0..machines)
            .map(|k| (format!("line{}/m{k:02}", k / 4 + 1), sources[k % sources.len()].clone()))
            .collect();
        Stream { golden, machines, t0: now_ms() }
    }

    fn ts(&self, round: usize) -> i64 {
        self.t0 + round as i64 * ROUND.as_millis() as i64
    }

    fn payload(&self, source: &str, round: usize) -> String {
        let samples = &self.golden.devices[source];
        let s = &samples[round % samples.len()];
        serde_json::json!({"ts": self.ts(round), "values": s.values}).to_string()
    }

    /// Every window of `rounds` rounds, with ORT's scores where the window
    /// is the fixture's.
    pub fn windows(&self, rounds: usize) -> Vec<(WindowKey, Option<Expected>)> {
        let scores = card_scores(LINE_CARD);
        let w = self.golden.window;
        let mut out = Vec::new();
        for (machine, source) in &self.machines {
            let samples = &self.golden.devices[source];
            for round in w - 1..rounds {
                let at = round % samples.len();
                let expected = (at + 1 >= w).then(|| {
                    let g = self.golden.window(source, samples[at].ts);
                    expected_window(machine, self.ts(round), &g.outputs, &scores)
                });
                out.push(((machine.clone(), self.ts(round)), expected));
            }
        }
        out
    }

    /// Publish a round every [`ROUND`] on the broker at `port` until `stop`;
    /// the thread returns what was published and what of it the broker
    /// acknowledged.
    pub fn publish_until(
        self: &Arc<Self>,
        port: u16,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<Published> {
        let stream = self.clone();
        std::thread::spawn(move || {
            let mut p = TrackedPublisher::new(port);
            let start = Instant::now();
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                for (k, (machine, source)) in stream.machines.iter().enumerate() {
                    p.publish(&line_topic(machine), stream.payload(source, round), (k, round));
                }
                round += 1;
                let next = start + ROUND * round as u32;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Published { rounds: round, unacknowledged: p.unacknowledged(Duration::from_secs(20)) }
        })
    }

    /// The windows a broker that acknowledged all but `unacknowledged` must
    /// see scored: a window holding a sample the broker never acknowledged
    /// (a clustered broker that lost it while electing leaders) is not
    /// lineguard's to score, nor are those it shifts.
    pub fn windows_of(&self, published: &Published) -> Vec<(WindowKey, Option<Expected>)> {
        let w = self.golden.window;
        self.windows(published.rounds)
            .into_iter()
            .filter(|((machine, ts), _)| {
                let k =
                    self.machines.iter().position(|(m, _)| m == machine).expect("a machine of the stream");
                let round = ((ts - self.t0) / ROUND.as_millis() as i64) as usize;
                !published.unacknowledged.iter().any(|(mk, r)| *mk == k && *r <= round && round < r + w)
            })
            .collect()
    }
}

/// What [`Stream::publish_until`] published: the rounds, and the samples
/// (machine index, round) the broker never acknowledged.
#[derive(Debug)]
pub struct Published {
    pub rounds: usize,
    pub unacknowledged: Vec<(usize, usize)>,
}

/// A QoS 1 publisher that knows which of its messages the broker
/// acknowledged (by packet id, as rumqttc writes them).
struct TrackedPublisher {
    client: rumqttc::Client,
    /// Tags of publishes asked for, in order, not yet written.
    asked: Arc<Mutex<std::collections::VecDeque<(usize, usize)>>>,
    /// Written, not yet acknowledged: packet id -> tag.
    outstanding: Arc<Mutex<BTreeMap<u16, (usize, usize)>>>,
}

impl TrackedPublisher {
    fn new(port: u16) -> TrackedPublisher {
        use rumqttc::{Event, Outgoing, Packet};
        let mut o =
            rumqttc::MqttOptions::new(format!("test-stream-{}", std::process::id()), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = rumqttc::Client::new(o, 1000);
        let asked: Arc<Mutex<std::collections::VecDeque<(usize, usize)>>> = Arc::default();
        let outstanding: Arc<Mutex<BTreeMap<u16, (usize, usize)>>> = Arc::default();
        let (a, out) = (asked.clone(), outstanding.clone());
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    // A packet id seen again is a retransmission after a reconnect.
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let std::collections::btree_map::Entry::Vacant(e) = out.lock().unwrap().entry(pkid)
                        {
                            if let Some(tag) = a.lock().unwrap().pop_front() {
                                e.insert(tag);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        out.lock().unwrap().remove(&ack.pkid);
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        TrackedPublisher { client, asked, outstanding }
    }

    fn publish(&mut self, topic: &str, payload: String, tag: (usize, usize)) {
        self.asked.lock().unwrap().push_back(tag);
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).unwrap();
    }

    /// Wait up to `patience` for the last acknowledgements; what is still
    /// not acknowledged then (asked and never written, or written and never
    /// acknowledged).
    fn unacknowledged(&self, patience: Duration) -> Vec<(usize, usize)> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline
            && !(self.asked.lock().unwrap().is_empty() && self.outstanding.lock().unwrap().is_empty())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut left: Vec<(usize, usize)> = self.outstanding.lock().unwrap().values().copied().collect();
        left.extend(self.asked.lock().unwrap().iter().copied());
        left.sort();
        left
    }
}

/// Everything on the plant's lineguard topics and every status, as it
/// arrives at one subscriber.
pub struct Record {
    messages: Arc<Mutex<Vec<Message>>>,
}

impl Record {
    pub fn start(port: u16) -> Record {
        Self::with(Subscriber::new(port, &Self::FILTERS))
    }

    /// At QoS 0 (see [`Subscriber::at_most_once`]), on each of `ports` (the
    /// nodes of a cluster), everything each of them hears in one record.
    pub fn at_most_once(ports: &[u16]) -> Record {
        let messages = Arc::new(Mutex::new(Vec::new()));
        for port in ports {
            Self::record(Subscriber::at_most_once(*port, &Self::FILTERS), messages.clone());
        }
        Record { messages }
    }

    const FILTERS: [&str; 2] = ["plant/+/+/lineguard/#", "lineguard/+/status"];

    fn with(sub: Subscriber) -> Record {
        let messages = Arc::new(Mutex::new(Vec::new()));
        Self::record(sub, messages.clone());
        Record { messages }
    }

    fn record(sub: Subscriber, into: Arc<Mutex<Vec<Message>>>) {
        std::thread::spawn(move || loop {
            if let Some(msg) = sub.next(Duration::from_millis(200)) {
                into.lock().unwrap().push(msg);
            }
        });
    }

    pub fn all(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Wait until `client_id`'s latest status says `active` is `active`;
    /// returns when it arrived.
    pub fn wait_active(&self, client_id: &str, active: bool, timeout: Duration) -> Instant {
        self.try_wait_active(client_id, active, timeout)
            .unwrap_or_else(|| panic!("{client_id} never said active = {active} within {timeout:?}"))
    }

    /// [`Record::wait_active`], `None` on a timeout.
    pub fn try_wait_active(&self, client_id: &str, active: bool, timeout: Duration) -> Option<Instant> {
        let topic = format!("lineguard/{client_id}/status");
        let deadline = Instant::now() + timeout;
        loop {
            let said = self.all().into_iter().rev().find(|m| m.topic == topic && !m.payload.is_empty());
            if let Some(m) = said.filter(|m| m.json()["active"] == active) {
                return Some(m.received);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The score messages by window.
    pub fn scores(&self) -> BTreeMap<WindowKey, Vec<Message>> {
        let mut by: BTreeMap<WindowKey, Vec<Message>> = BTreeMap::new();
        for m in self.all().into_iter().filter(|m| m.topic.ends_with("/lineguard/scores")) {
            let j = m.json();
            by.entry((j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap()))
                .or_default()
                .push(m);
        }
        by
    }

    /// Wait (up to `timeout`) until every one of `want` was published; the
    /// score messages by window, and the windows still missing.
    pub fn wait_for_windows(
        &self,
        want: &BTreeSet<WindowKey>,
        timeout: Duration,
    ) -> (BTreeMap<WindowKey, Vec<Message>>, Vec<WindowKey>) {
        let deadline = Instant::now() + timeout;
        loop {
            let by = self.scores();
            let missing: Vec<WindowKey> = want.iter().filter(|k| !by.contains_key(*k)).cloned().collect();
            if missing.is_empty() || Instant::now() >= deadline {
                return (by, missing);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Each published window equal to ONNX Runtime where the fixture has it,
/// every copy the same bytes, nothing published that the stream does not
/// hold; returns the duplicates.
pub fn check_windows(
    by_window: &BTreeMap<WindowKey, Vec<Message>>,
    windows: &[(WindowKey, Option<Expected>)],
) -> usize {
    let want: BTreeSet<&WindowKey> = windows.iter().map(|(k, _)| k).collect();
    let extra: Vec<_> = by_window.keys().filter(|k| !want.contains(k)).collect();
    assert!(extra.is_empty(), "windows the stream does not hold: {:?}", &extra[..extra.len().min(5)]);
    let mut duplicates = 0;
    for (key, expected) in windows {
        let Some(copies) = by_window.get(key) else { continue };
        duplicates += copies.len() - 1;
        for c in copies {
            assert_eq!(c.payload, copies[0].payload, "a duplicate of {key:?} differs");
        }
        if let Some(e) = expected {
            let j = copies[0].json();
            for (name, want) in &e.scores {
                assert_close(j["scores"][name].as_f64().unwrap() as f32, *want, &format!("{key:?} {name}"));
            }
            if let Some(state) = e.state {
                assert_eq!(j["state"], state, "{key:?}");
            }
        }
    }
    duplicates
}

/// No device's alarm state steps back, or changes without its data: each
/// new state comes from the one before, at a later window, and is the
/// window's own where the fixture knows it. Returns the transitions seen,
/// or what went wrong.
pub fn check_alarms(
    messages: &[Message],
    windows: &[(WindowKey, Option<Expected>)],
) -> Result<usize, String> {
    let expected_state: BTreeMap<&WindowKey, &'static str> =
        windows.iter().filter_map(|(k, e)| e.as_ref().and_then(|e| e.state).map(|s| (k, s))).collect();
    let mut last: BTreeMap<String, (i64, serde_json::Value)> = BTreeMap::new();
    let mut transitions = 0;
    for m in messages.iter().filter(|m| m.topic.ends_with("/lineguard/alarm") && !m.retain) {
        let j = m.json();
        let (device, ts) = (j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap());
        if let Some(state) = expected_state.get(&(device.clone(), ts)) {
            if j["state"] != *state {
                return Err(format!("{device} at {ts}: not the window's state {state}: {j}"));
            }
        }
        match last.get(&device) {
            Some((t, prev)) if ts < *t => {
                return Err(format!("{device} stepped back from {t} to {ts}: {prev} then {j}"));
            }
            Some((t, prev)) if ts == *t && prev != &j => {
                return Err(format!("{device} at {ts}: two different states: {prev} and {j}"));
            }
            Some((t, _)) if ts == *t => {}
            Some((_, prev)) => {
                if j["previous"] != prev["state"] || j["previous"] == j["state"] {
                    return Err(format!("{device}: a transition that is no change from {prev}: {j}"));
                }
                transitions += 1;
            }
            None => {}
        }
        last.insert(device, (ts, j));
    }
    Ok(transitions)
}

/// Who is active over time, as a pair's two retained statuses say it: the
/// longest stretch from `from` on with none or both active, and the status
/// that ended it.
pub fn longest_without_one_active(messages: &[Message], ids: [&str; 2], from: Instant) -> (Duration, String) {
    let mut active: BTreeMap<&str, bool> = ids.iter().map(|id| (*id, false)).collect();
    let mut worst = (Duration::ZERO, String::new());
    let mut since: Option<Instant> = Some(from);
    for m in messages.iter().filter(|m| m.topic.ends_with("/status") && !m.payload.is_empty()) {
        let j = m.json();
        let Some(id) = ids.iter().find(|id| j["client_id"] == **id) else { continue };
        active.insert(id, j["status"] == "online" && j["active"] == true);
        let count = active.values().filter(|a| **a).count();
        match (count == 1, since) {
            (true, Some(s)) => {
                let took = m.received.saturating_duration_since(s.max(from));
                if took > worst.0 && m.received > from {
                    worst = (took, format!("until {id} said {j}"));
                }
                since = None;
            }
            (false, None) => since = Some(m.received),
            _ => {}
        }
    }
    worst
}

/// A value of `/metrics` (`-1` when absent).
pub fn metric(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
}
