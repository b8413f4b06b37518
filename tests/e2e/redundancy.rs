//! A primary and a backup lineguard on one stream (`[redundancy]`): the
//! primary is killed with `kill -9` mid-stream and started again, then
//! frozen past its keep-alive and thawed. Every window is published at
//! least once, equal to ONNX Runtime; every duplicate is byte-identical;
//! no device's alarm state steps back; one instance is active at a time,
//! give or take a second at each change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::broker::{signal, Broker};
use crate::support::daemon::{config, now_ms, Daemon};
use crate::support::golden::{assert_close, card_scores, expected_window, Expected, Golden};
use crate::support::line::{line_pipeline, line_topic, LINE_CARD, LINE_GOLDEN};
use crate::support::mqtt::{Message, Publisher, Subscriber};

/// Machines on the line, each replaying one golden device's samples.
const MACHINES: usize = 12;
/// One sample of every machine per round.
const ROUND: Duration = Duration::from_millis(100);
/// The daemons' `mqtt.keep_alive_secs` (the least allowed).
const KEEP_ALIVE: Duration = Duration::from_secs(5);

const ALARMS: &str = "plant/{line}/{machine}/lineguard/alarm";

/// The stream: machine `k` sends golden device `k % 4`'s samples in a
/// loop, one per round, stamped with the round's data time. A window whose
/// samples do not wrap around the golden stream is one of the fixture's,
/// scored by ONNX Runtime.
struct Stream {
    golden: Golden,
    /// (machine, golden device)
    machines: Vec<(String, String)>,
    t0: i64,
}

impl Stream {
    fn new() -> Stream {
        let golden = Golden::load(LINE_GOLDEN);
        let sources: Vec<String> = golden.devices.keys().cloned().collect();
        let machines = (0..MACHINES)
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

    /// Every window of `rounds` rounds: `(machine, ts)`, with ORT's scores
    /// where the window is the fixture's.
    fn windows(&self, rounds: usize) -> Vec<((String, i64), Option<Expected>)> {
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
}

/// Publish a round every [`ROUND`] until `stop`; returns the rounds published.
fn publish_until(port: u16, stream: Arc<Stream>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut p = Publisher::new(port);
        let start = Instant::now();
        let mut round = 0;
        while !stop.load(Ordering::SeqCst) {
            for (machine, source) in &stream.machines {
                p.publish(&line_topic(machine), stream.payload(source, round));
            }
            round += 1;
            let next = start + ROUND * round as u32;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        p.flush(Duration::from_secs(30));
        round
    })
}

/// Everything on the plant's topics and the two statuses, as it arrives.
struct Record {
    messages: Arc<Mutex<Vec<Message>>>,
    taken: Arc<AtomicUsize>,
}

impl Record {
    fn start(port: u16) -> Record {
        let sub = Subscriber::new(port, &["plant/+/+/lineguard/#", "lineguard/+/status"]);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        std::thread::spawn(move || loop {
            if let Some(msg) = sub.next(Duration::from_millis(200)) {
                m.lock().unwrap().push(msg);
            }
        });
        Record { messages, taken: Arc::default() }
    }

    fn all(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Wait until `client_id`'s status says `active` is `active`; returns when it was said.
    fn wait_active(&self, client_id: &str, active: bool, timeout: Duration) -> Instant {
        let topic = format!("lineguard/{client_id}/status");
        let deadline = Instant::now() + timeout;
        loop {
            let said = self.all().into_iter().rev().find(|m| m.topic == topic && !m.payload.is_empty());
            if let Some(m) = said.filter(|m| m.json()["active"] == active) {
                self.taken.store(0, Ordering::SeqCst);
                return m.received;
            }
            assert!(Instant::now() < deadline, "{client_id} never said active = {active} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn pair_config(port: u16, client_id: &str, role: &str, peer: &str) -> String {
    let redundancy =
        format!("\n[redundancy]\nrole = \"{role}\"\npeer = \"{peer}\"\ntakeover_replay_secs = 30\n");
    config(port, client_id, crate::support::daemon::own_state(), &[line_pipeline()], &redundancy)
        .replace("hop = 1\n", &format!("hop = 1\nalarm_topic = \"{ALARMS}\"\n"))
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
}

/// Who is active over time, as the two retained statuses say it: the
/// longest stretch from `from` on with none or both active.
fn longest_without_one_active(messages: &[Message], ids: [&str; 2], from: Instant) -> (Duration, String) {
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
                    worst = (took, format!("until {} said {j}", id));
                }
                since = None;
            }
            (false, None) => since = Some(m.received),
            _ => {}
        }
    }
    worst
}

#[test]
fn a_primary_killed_and_frozen_mid_stream_leaves_no_window_unscored() {
    let broker = Broker::mosquitto().start();
    let stream = Arc::new(Stream::new());
    let record = Record::start(broker.port);
    let mut primary = Daemon::start(&pair_config(broker.port, "lg-pri", "primary", "lg-bak"));
    record.wait_active("lg-pri", true, Duration::from_secs(30));
    let backup = Daemon::start(&pair_config(broker.port, "lg-bak", "backup", "lg-pri"));
    record.wait_active("lg-bak", false, Duration::from_secs(30));
    let from = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = publish_until(broker.port, stream.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(4));

    // The standby has scored the same windows and published none of them.
    let metrics = backup.http_get("/metrics").1;
    assert!(metric(&metrics, "lineguard_windows_scored_total{pipeline=\"press-line\"} ") > 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "lineguard_scores_published_total "), 0.0, "a standby published: {metrics}");
    assert_eq!(metric(&metrics, "lineguard_alarms_published_total "), 0.0, "a standby published: {metrics}");

    // The primary dies: the broker says its will at once, the backup takes over.
    primary.kill9();
    let killed = Instant::now();
    let took_over = record.wait_active("lg-bak", true, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    // Back: it catches up on its session, takes over, the backup stands down.
    primary.spawn();
    record.wait_active("lg-pri", true, Duration::from_secs(30));
    record.wait_active("lg-bak", false, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));

    // Frozen past its keep-alive: the broker's will says offline after 1.5 x keep-alive.
    signal(primary.pid(), "STOP");
    let frozen = Instant::now();
    let backup_again = record.wait_active("lg-bak", true, KEEP_ALIVE * 3);
    std::thread::sleep(Duration::from_secs(2));
    signal(primary.pid(), "CONT");
    record.wait_active("lg-pri", true, Duration::from_secs(30));
    record.wait_active("lg-bak", false, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let rounds = publishing.join().unwrap();

    // Every window, at least once.
    let windows = stream.windows(rounds);
    let want: BTreeSet<(String, i64)> = windows.iter().map(|(k, _)| k.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let scores_of = |all: &[Message]| -> BTreeMap<(String, i64), Vec<Message>> {
        let mut by: BTreeMap<(String, i64), Vec<Message>> = BTreeMap::new();
        for m in all.iter().filter(|m| m.topic.ends_with("/lineguard/scores")) {
            let j = m.json();
            by.entry((j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap()))
                .or_default()
                .push(m.clone());
        }
        by
    };
    let mut by_window = scores_of(&record.all());
    while want.iter().any(|k| !by_window.contains_key(k)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        by_window = scores_of(&record.all());
    }
    let missing: Vec<_> = want.iter().filter(|k| !by_window.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} windows never published, e.g. {:?}\nprimary:\n{}\nbackup:\n{}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(5)],
        primary.log(),
        backup.log()
    );
    let extra: Vec<_> = by_window.keys().filter(|k| !want.contains(*k)).collect();
    assert!(extra.is_empty(), "windows the stream does not hold: {:?}", &extra[..extra.len().min(5)]);

    // Each equal to ONNX Runtime where the fixture has it; every copy the same bytes.
    let mut duplicates = 0;
    for (key, expected) in &windows {
        let copies = &by_window[key];
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
    assert!(duplicates > 0, "a takeover replays what the old active may not have published");

    // No device's alarm state steps back or changes without its data.
    let all = record.all();
    let expected_state: BTreeMap<(String, i64), &'static str> = windows
        .iter()
        .filter_map(|(k, e)| e.as_ref().and_then(|e| e.state).map(|s| (k.clone(), s)))
        .collect();
    let mut last: BTreeMap<String, (i64, serde_json::Value)> = BTreeMap::new();
    let mut transitions = 0;
    for m in all.iter().filter(|m| m.topic.ends_with("/lineguard/alarm") && !m.retain) {
        let j = m.json();
        let (device, ts) = (j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap());
        if let Some(state) = expected_state.get(&(device.clone(), ts)) {
            assert_eq!(j["state"], *state, "{device} at {ts}: {j}");
        }
        match last.get(&device) {
            Some((t, prev)) if ts < *t => panic!("{device} stepped back from {t} to {ts}: {prev} then {j}"),
            Some((t, prev)) if ts == *t => assert_eq!(prev, &j, "{device} at {ts}: two different states"),
            Some((_, prev)) => {
                assert_eq!(
                    j["previous"], prev["state"],
                    "{device}: a transition from a state it was not in: {j}"
                );
                assert_ne!(j["previous"], j["state"], "{device}: no change: {j}");
                transitions += 1;
            }
            None => {}
        }
        last.insert(device, (ts, j));
    }
    assert!(transitions > 0, "the stream raises and clears alarms");

    // One active at a time, give or take a second at each change.
    let (worst, when) = longest_without_one_active(&all, ["lg-pri", "lg-bak"], from);
    assert!(worst <= Duration::from_secs(2), "none or both active for {worst:?} ({when})");
    // Failover after the broker's will (mosquitto says it 1.5 to 2.5 keep-alives after the freeze): within a second.
    let will = all
        .iter()
        .find(|m| {
            m.topic == "lineguard/lg-pri/status" && m.received > frozen && m.json()["status"] == "offline"
        })
        .expect("the broker said the frozen primary's will")
        .received;
    let failover = backup_again.saturating_duration_since(will);
    assert!(
        failover <= Duration::from_millis(1200),
        "the backup took over {failover:?} after the primary's will"
    );
    eprintln!(
        "{rounds} rounds, {} windows, {duplicates} duplicates, {transitions} alarm transitions; \
         the backup took over {:?} after the kill, the will came {:?} after the freeze and the backup {failover:?} after it; \
         worst {worst:?} ({when})",
        want.len(),
        took_over.duration_since(killed),
        will.duration_since(frozen)
    );

    // Operators see it.
    let (_, devices) = backup.http_get("/devices");
    let d: serde_json::Value = serde_json::from_str(&devices).unwrap();
    assert_eq!(d["redundancy"]["role"], "backup", "{d}");
    assert_eq!(d["redundancy"]["active"], false, "{d}");
    assert_eq!(d["redundancy"]["peer"]["client_id"], "lg-pri", "{d}");
    assert_eq!(d["redundancy"]["peer"]["active"], true, "{d}");
    let metrics = backup.http_get("/metrics").1;
    assert_eq!(metric(&metrics, "lineguard_redundancy_active "), 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "lineguard_redundancy_takeovers_total "), 2.0, "{metrics}");
    assert!(metric(&metrics, "lineguard_redundancy_replayed_total ") > 0.0, "{metrics}");
    let metrics = primary.http_get("/metrics").1;
    assert_eq!(metric(&metrics, "lineguard_redundancy_active "), 1.0, "{metrics}");
    let log = backup.log();
    assert!(
        log.contains("redundancy: active, publishing for the pair: the primary's status says offline"),
        "{log}"
    );
    assert!(
        log.contains("redundancy: standing by, publishing nothing but its status: the primary is active"),
        "{log}"
    );
}

/// Under `[redundancy]` a sample without its own `ts` is refused: the two
/// instances would stamp its arrival differently, and their windows differ.
/// A primary with no backup to hear of becomes active on its own.
#[test]
fn under_redundancy_a_sample_without_ts_is_refused() {
    let broker = Broker::mosquitto().start();
    let record = Record::start(broker.port);
    let daemon = Daemon::start(&pair_config(broker.port, "lg-alone", "primary", "lg-absent"));
    record.wait_active("lg-alone", true, Duration::from_secs(30));
    let golden = Golden::load(LINE_GOLDEN);
    let (device, samples) = golden.devices.iter().next().unwrap();
    let mut p = Publisher::new(broker.port);
    p.publish(&line_topic(device), serde_json::json!({"values": samples[0].values}).to_string());
    p.flush(Duration::from_secs(5));
    let name = "lineguard_rejected_total{pipeline=\"press-line\",reason=\"no_ts\"} ";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&daemon.http_get("/metrics").1, name) != 1.0 {
        assert!(Instant::now() < deadline, "not refused:\n{}", daemon.http_get("/metrics").1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = daemon.log();
    assert!(log.contains("every sample needs its own time"), "{log}");
    assert!(log.contains("redundancy: active, publishing for the pair: caught up"), "{log}");
}
