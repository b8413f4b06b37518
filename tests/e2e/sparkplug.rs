//! Sparkplug B, checked by an independent decoder (tests/support/sparkplug.rs)
//! subscribed to `spBv1.0/#`, as a SCADA host would see it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon};
use crate::support::golden::{assert_close, card_scores, Expected, Golden};
use crate::support::line::{publish_interleaved, LINE_CARD, LINE_GOLDEN, LINE_MODEL};
use crate::support::mqtt::{Message, Publisher, Subscriber};
use crate::support::sparkplug::{self as sp, Val};

const GROUP: &str = "plant";
const NODE: &str = "gw-test";

fn node_topic(kind: &str) -> String {
    format!("spBv1.0/{GROUP}/{kind}/{NODE}")
}

/// A daemon whose `press-line` pipeline publishes Sparkplug B; `sparkplug`
/// is extra text for the `[sparkplug]` section.
fn start(broker: &Broker, client_id: &str, sparkplug: &str) -> Daemon {
    start_with(broker, client_id, sparkplug, "")
}

/// [`start`], with `tables` after the pipeline.
fn start_with(broker: &Broker, client_id: &str, sparkplug: &str, tables: &str) -> Daemon {
    let extra = format!("[sparkplug]\ngroup_id = \"{GROUP}\"\nedge_node_id = \"{NODE}\"\n{sparkplug}");
    let mut text = config(broker.port, client_id, crate::support::daemon::own_state(), &[], &extra);
    text.push_str(&format!(
        "\n[[pipelines]]\nname = \"press-line\"\nmodel = \"{}\"\ninput_topic = \"plant/{{line}}/{{machine}}/telemetry\"\n\
         format = \"sparkplug\"\ndevice_id = \"{{line}}-{{machine}}\"\n",
        crate::support::repo_path(LINE_MODEL).display()
    ));
    text.push_str(tables);
    Daemon::start(&text)
}

fn next_of(sub: &Subscriber, kind: &str, timeout: Duration) -> (Message, sp::Payload) {
    let deadline = Instant::now() + timeout;
    while let Some(m) = sub.next(deadline.saturating_duration_since(Instant::now())) {
        if sp::topic_kind(&m.topic).0 == kind {
            let p = sp::decode(&m.payload);
            return (m, p);
        }
    }
    panic!("no {kind} within {timeout:?}");
}

fn bd_seq(p: &sp::Payload) -> u64 {
    let m = p.metric("bdSeq");
    assert_eq!(m.datatype, Some(sp::INT64), "bdSeq is Int64");
    match m.value {
        Val::Long(v) => v,
        ref v => panic!("bdSeq value {v:?}"),
    }
}

fn device_key(device_id: &str) -> String {
    device_id.replacen('-', "/", 1)
}

/// A decoded device message: which window it is and what it says.
struct Seen {
    device: String,
    ts: i64,
    scores: BTreeMap<String, f32>,
    state: String,
    /// `{score}/to_warn_s` and `{score}/to_alarm_s`: seconds, or none (null).
    forecast: BTreeMap<String, Option<f64>>,
}

/// Read a DBIRTH (names, learning aliases) or a DDATA (aliases only).
fn read_device(topic: &str, p: &sp::Payload, aliases: &mut BTreeMap<u64, (String, String)>) -> Seen {
    let (kind, device) = sp::topic_kind(topic);
    let device = device.expect("device topic").to_string();
    let mut seen = Seen {
        device: device_key(&device),
        ts: 0,
        scores: BTreeMap::new(),
        state: String::new(),
        forecast: BTreeMap::new(),
    };
    for m in &p.metrics {
        let name = match kind {
            "DBIRTH" => {
                let name = m.name.clone().expect("DBIRTH metrics have names");
                let alias = m.alias.expect("DBIRTH metrics have aliases");
                let want = match name.as_str() {
                    n if n.ends_with("/state") => sp::STRING,
                    n if n.ends_with("/to_warn_s") || n.ends_with("/to_alarm_s") => sp::DOUBLE,
                    _ => sp::FLOAT,
                };
                assert_eq!(m.datatype, Some(want), "datatype of {name}");
                if let Some((d, n)) = aliases.insert(alias, (device.clone(), name.clone())) {
                    assert_eq!(
                        (d.as_str(), n.as_str()),
                        (device.as_str(), name.as_str()),
                        "alias {alias} reused"
                    );
                }
                name
            }
            "DDATA" => {
                assert_eq!(m.name, None, "DDATA carries aliases only");
                let alias = m.alias.expect("alias");
                let (d, n) = aliases.get(&alias).unwrap_or_else(|| panic!("alias {alias} not born"));
                assert_eq!(d, &device, "alias {alias} belongs to another device");
                n.clone()
            }
            k => panic!("unexpected {k}"),
        };
        seen.ts = m.timestamp.expect("metric timestamp") as i64;
        let short = name
            .strip_prefix("press-line/")
            .unwrap_or_else(|| panic!("metric {name} not in the pipeline folder"));
        match &m.value {
            Val::Float(v) => {
                seen.scores.insert(short.to_string(), *v);
            }
            Val::Str(s) if short == "state" => seen.state = s.clone(),
            Val::Double(v) if short.ends_with("_s") => {
                seen.forecast.insert(short.to_string(), Some(*v));
            }
            Val::Null if short.ends_with("_s") => {
                seen.forecast.insert(short.to_string(), None);
            }
            v => panic!("{name}: value {v:?}"),
        }
    }
    seen
}

fn check_window(seen: &Seen, expected: &[Expected]) {
    let e = expected
        .iter()
        .find(|e| e.device == seen.device && e.ts == seen.ts)
        .unwrap_or_else(|| panic!("unexpected window {} at {}", seen.device, seen.ts));
    assert_eq!(seen.scores.len(), e.scores.len(), "scores of {} at {}", seen.device, seen.ts);
    for (name, want) in &e.scores {
        assert_close(seen.scores[name], *want, &format!("{} ts {} {name}", seen.device, seen.ts));
    }
    if let Some(state) = e.state {
        assert_eq!(seen.state, state, "state of {} at {}", seen.device, seen.ts);
    }
}

#[test]
fn edge_node_births_data_rebirth_and_death_decode_independently() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, &["spBv1.0/#"]);
    let mut daemon = start(&broker, "lg-spb", "");

    // NBIRTH: seq 0, bdSeq, and the rebirth control.
    let (_, nbirth) = next_of(&sub, "NBIRTH", Duration::from_secs(30));
    assert_eq!(nbirth.seq, Some(0));
    let bd = bd_seq(&nbirth);
    let rebirth = nbirth.metric("Node Control/Rebirth");
    assert_eq!((rebirth.datatype, &rebirth.value), (Some(sp::BOOLEAN), &Val::Bool(false)));

    // Score the golden stream; every window arrives as one DBIRTH or DDATA.
    let golden = Golden::load(LINE_GOLDEN);
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let mut publisher = Publisher::new(broker.port);
    publish_interleaved(&mut publisher, &golden);
    let got = sub.collect(expected.len(), Duration::from_secs(30), Duration::from_millis(800), |m| {
        m.topic.starts_with(&format!("spBv1.0/{GROUP}/"))
    });
    let mut aliases = BTreeMap::new();
    let mut windows = BTreeSet::new();
    let mut births = BTreeSet::new();
    let mut last: BTreeMap<String, Seen> = BTreeMap::new();
    for (i, m) in got.iter().enumerate() {
        let p = sp::decode(&m.payload);
        assert_eq!(p.seq, Some((i as u64 + 1) % 256), "seq of message {i} ({})", m.topic);
        let (kind, device) = sp::topic_kind(&m.topic);
        if kind == "DBIRTH" {
            assert!(births.insert(device.unwrap().to_string()), "one DBIRTH per device before a rebirth");
            // The shipped card forecasts both scores: each record declares
            // their crossings (null until a forecast names one; the golden
            // stream is too short for any).
            assert_eq!(p.metrics.len(), 7, "anomaly, quality, state, and to_warn_s and to_alarm_s of both");
        } else {
            assert_eq!(kind, "DDATA", "{}", m.topic);
            assert!(births.contains(device.unwrap()), "DDATA before DBIRTH for {}", m.topic);
        }
        let seen = read_device(&m.topic, &p, &mut aliases);
        if kind == "DBIRTH" {
            let nulls = seen.forecast.values().filter(|v| v.is_none()).count();
            assert_eq!((seen.forecast.len(), nulls), (4, 4), "declared, null: {:?}", seen.forecast);
        }
        check_window(&seen, &expected);
        assert!(windows.insert((seen.device.clone(), seen.ts)), "window twice");
        // A device born while several of its records were pending is born
        // with the newest, and the older follow as history: its last values
        // are its newest window's, not its last message's.
        let newest = last.get(device.unwrap()).is_none_or(|l| seen.ts > l.ts);
        if newest {
            last.insert(device.unwrap().to_string(), seen);
        }
    }
    assert_eq!(windows.len(), expected.len(), "every window, once");
    assert_eq!(births.len(), golden.devices.len());

    // A host asks for a rebirth: NBIRTH (seq 0, same bdSeq), then every device with its last values.
    publisher.publish(&node_topic("NCMD"), sp::rebirth_request());
    let (_, again) = next_of(&sub, "NBIRTH", Duration::from_secs(10));
    assert_eq!((again.seq, bd_seq(&again)), (Some(0), bd));
    for i in 0..golden.devices.len() {
        let (m, p) = next_of(&sub, "DBIRTH", Duration::from_secs(10));
        assert_eq!(p.seq, Some(i as u64 + 1));
        let seen = read_device(&m.topic, &p, &mut aliases); // asserts the aliases are unchanged
        let before = &last[sp::topic_kind(&m.topic).1.unwrap()];
        assert_eq!((seen.ts, &seen.scores), (before.ts, &before.scores), "last values");
    }

    // kill -9: the broker publishes the NDEATH will, with the session's bdSeq.
    daemon.kill9();
    let (_, death) = next_of(&sub, "NDEATH", Duration::from_secs(15));
    assert_eq!((bd_seq(&death), death.seq), (bd, None));

    // The next session has the next bdSeq, even across the restart.
    daemon.spawn();
    let (_, reborn) = next_of(&sub, "NBIRTH", Duration::from_secs(30));
    assert_eq!(bd_seq(&reborn), (bd + 1) % 256);
    let status = daemon.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let (_, clean) = next_of(&sub, "NDEATH", Duration::from_secs(5));
    assert_eq!(bd_seq(&clean), (bd + 1) % 256, "a clean stop publishes the NDEATH itself");
}

#[test]
fn births_wait_for_the_primary_host_and_its_offline_ends_the_session() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, &["spBv1.0/#"]);
    let _daemon = start(&broker, "lg-spb-host", "primary_host_id = \"scada\"\n");
    let status = "lineguard/lg-spb-host/status";
    Subscriber::new(broker.port, &[status]).wait_for(status, "\"online\"", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        sub.collect(1, Duration::from_millis(500), Duration::ZERO, |m| m.topic.contains("/NBIRTH/"))
            .is_empty(),
        "no NBIRTH before the primary host is online"
    );

    let mut host = Publisher::new(broker.port);
    let state = "spBv1.0/STATE/scada";
    let now = crate::support::daemon::now_ms();
    host.publish_retained(state, format!(r#"{{"online":true,"timestamp":{now}}}"#));
    let (_, first) = next_of(&sub, "NBIRTH", Duration::from_secs(10));
    let bd = bd_seq(&first);

    let offline_at = crate::support::daemon::now_ms();
    host.publish_retained(state, format!(r#"{{"online":false,"timestamp":{}}}"#, now + 1));
    let (_, death) = next_of(&sub, "NDEATH", Duration::from_secs(10));
    assert_eq!(bd_seq(&death), bd, "the session ends with its NDEATH");
    // Published by the node itself (Sparkplug 3.0: an intentional disconnect
    // publishes NDEATH first), not the will registered at connect: stamped
    // now, and then DISCONNECT, so the will does not say it again.
    assert!(death.timestamp.unwrap() as i64 >= offline_at, "the NDEATH is the will's, stamped at connect");
    let again = sub.collect(1, Duration::from_millis(1500), Duration::ZERO, |m| m.topic.contains("/NDEATH/"));
    assert!(again.is_empty(), "a second NDEATH for the session: the will fired too");

    host.publish_retained(state, format!(r#"{{"online":true,"timestamp":{}}}"#, now + 2));
    let (_, second) = next_of(&sub, "NBIRTH", Duration::from_secs(15));
    assert_eq!(bd_seq(&second), (bd + 1) % 256, "a new session, a new bdSeq");
    host.publish_retained(state, Vec::new()); // clear the retained state for tidiness
    host.flush(Duration::from_secs(5));
}

#[test]
fn sparkplug_ddata_is_telemetry_input_by_alias() {
    let broker = Broker::start();
    let golden = Golden::load(LINE_GOLDEN);
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let mut text = config(broker.port, "lg-spb-in", crate::support::daemon::own_state(), &[], "");
    text.push_str(&format!(
        "\n[[pipelines]]\nname = \"press-line\"\nmodel = \"{}\"\ninput_topic = \"spBv1.0/{{line}}/DDATA/cell7/{{machine}}\"\n\
         output_topic = \"plant/{{line}}/{{machine}}/lineguard/scores\"\n",
        crate::support::repo_path(LINE_MODEL).display()
    ));
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let daemon = Daemon::start(&text);
    let status = "lineguard/lg-spb-in/status";
    Subscriber::new(broker.port, &[status]).wait_for(status, "\"online\"", Duration::from_secs(30));

    let mut p = Publisher::new(broker.port);
    let topic = |kind: &str, device: &str| {
        let (line, machine) = device.split_once('/').unwrap();
        format!("spBv1.0/{line}/{kind}/cell7/{machine}")
    };
    // Before any DBIRTH, an alias means nothing: rejected, counted.
    let stray = sp::Payload {
        timestamp: Some(1),
        seq: Some(0),
        metrics: vec![sp::Metric {
            name: None,
            alias: Some(1),
            timestamp: Some(1),
            datatype: None,
            value: Val::Double(1.0),
        }],
    };
    p.publish(&topic("DDATA", "line9/ghost"), sp::encode(&stray));

    // Each device: a DBIRTH declaring aliases (with a metric the model does not
    // use), then one DDATA per sample by alias, only the metrics that changed.
    for (device, samples) in &golden.devices {
        let mut metrics: Vec<sp::Metric> = golden
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| sp::Metric {
                name: Some(f.clone()),
                alias: Some(10 + i as u64),
                timestamp: Some(samples[0].ts as u64),
                datatype: Some(sp::DOUBLE),
                value: Val::Double(samples[0].values[f]),
            })
            .collect();
        metrics.push(sp::Metric {
            name: Some("Properties/Model".into()),
            alias: Some(99),
            timestamp: None,
            datatype: Some(sp::STRING),
            value: Val::Str("press 400t".into()),
        });
        p.publish(
            &topic("DBIRTH", device),
            sp::encode(&sp::Payload { timestamp: Some(1), seq: Some(0), metrics }),
        );
        for (n, s) in samples.iter().enumerate() {
            let metrics = golden
                .features
                .iter()
                .enumerate()
                .filter(|(_, f)| n == 0 || samples[n - 1].values[*f] != s.values[*f])
                .map(|(i, f)| sp::Metric {
                    name: None,
                    alias: Some(10 + i as u64),
                    timestamp: Some(s.ts as u64),
                    datatype: None,
                    value: Val::Double(s.values[f]),
                })
                .collect();
            p.publish(
                &topic("DDATA", device),
                sp::encode(&sp::Payload { timestamp: Some(s.ts as u64), seq: Some(n as u64 + 1), metrics }),
            );
        }
    }
    p.flush(Duration::from_secs(10));
    crate::support::line::expect_exactly(&sub, &expected);
    let (_, metrics) = daemon.http_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lineguard_rejected_total") && l.contains("reason=\"unknown_alias\"")),
        "unknown alias counted:\n{metrics}"
    );
}

#[test]
fn an_evicted_device_dies_with_a_ddeath() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, &["spBv1.0/#"]);
    let extra = format!(
        "[limits]\nmax_devices_per_pipeline = 3\n\n[sparkplug]\ngroup_id = \"{GROUP}\"\nedge_node_id = \"{NODE}\"\n"
    );
    let mut text = config(broker.port, "lg-spb-evict", crate::support::daemon::own_state(), &[], &extra);
    text.push_str(&format!(
        "\n[[pipelines]]\nname = \"press-line\"\nmodel = \"{}\"\ninput_topic = \"plant/{{line}}/{{machine}}/telemetry\"\n\
         format = \"sparkplug\"\n",
        crate::support::repo_path(LINE_MODEL).display()
    ));
    let _daemon = Daemon::start(&text);
    next_of(&sub, "NBIRTH", Duration::from_secs(30));

    // line1/press1 fills its window and is born...
    let golden = Golden::load(LINE_GOLDEN);
    let samples = &golden.devices["line1/press1"];
    let mut p = Publisher::new(broker.port);
    for s in &samples[..golden.window] {
        p.publish("plant/line1/press1/telemetry", Golden::payload(s));
    }
    p.flush(Duration::from_secs(10));
    let (born, _) = next_of(&sub, "DBIRTH", Duration::from_secs(10));
    assert_eq!(born.topic, node_topic("DBIRTH") + "/line1.press1", "default device id: values joined by `.`");
    // ...then three newer devices: at the cap of 3 the least recently seen goes.
    for machine in ["m2", "m3", "m4"] {
        p.publish(&format!("plant/line2/{machine}/telemetry"), Golden::payload(&samples[golden.window]));
    }
    p.flush(Duration::from_secs(10));
    let (death, payload) = next_of(&sub, "DDEATH", Duration::from_secs(10));
    assert_eq!(death.topic, node_topic("DDEATH") + "/line1.press1");
    assert!(payload.seq.is_some() && payload.metrics.is_empty(), "{payload:?}");
}

/// After a restart, each device is born again with the newest values the
/// host already had, never an older window: what the outbox still held from
/// before the kill is republished as history after the birth, not as the
/// birth.
#[test]
fn after_a_restart_a_device_is_born_with_its_newest_values() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, &["spBv1.0/#"]);
    let mut daemon = start(&broker, "lg-spb-restart", "");
    next_of(&sub, "NBIRTH", Duration::from_secs(30));
    let golden = Golden::load(LINE_GOLDEN);
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let mut publisher = Publisher::new(broker.port);
    publish_interleaved(&mut publisher, &golden);
    // The newest values each device published, as a host holds them.
    let mut aliases = BTreeMap::new();
    let mut held: BTreeMap<String, Seen> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut windows = 0;
    while windows < expected.len() && Instant::now() < deadline {
        let Some(m) = sub.next(Duration::from_millis(500)) else { continue };
        let (kind, device) = sp::topic_kind(&m.topic);
        if kind == "DBIRTH" || kind == "DDATA" {
            let seen = read_device(&m.topic, &sp::decode(&m.payload), &mut aliases);
            held.insert(device.unwrap().to_string(), seen);
            windows += 1;
        }
    }
    assert_eq!(windows, expected.len());
    daemon.kill9();
    daemon.spawn();
    next_of(&sub, "NBIRTH", Duration::from_secs(30));
    // What the outbox held births a device; a device it held nothing for is
    // born by its next window: one more sample each, after the last.
    for (device, samples) in &golden.devices {
        let mut next = samples.last().unwrap().clone();
        next.ts += 100;
        publisher.publish(&crate::support::line::line_topic(device), Golden::payload(&next));
    }
    publisher.flush(Duration::from_secs(10));
    let mut born: BTreeMap<String, Seen> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while born.len() < golden.devices.len() && Instant::now() < deadline {
        let Some(m) = sub.next(Duration::from_millis(500)) else { continue };
        if let ("DBIRTH", Some(device)) = sp::topic_kind(&m.topic) {
            born.entry(device.to_string())
                .or_insert_with(|| read_device(&m.topic, &sp::decode(&m.payload), &mut aliases));
        }
    }
    let names: Vec<String> = golden.devices.keys().map(|d| d.replacen('/', "-", 1)).collect();
    assert_eq!(born.keys().cloned().collect::<Vec<_>>(), names, "every device born again after kill -9");
    for (device, seen) in &born {
        let before = &held[device.as_str()];
        assert!(
            seen.ts >= before.ts,
            "{device} born at ts {} after the restart; the host had {}",
            seen.ts,
            before.ts
        );
    }
}

/// A primary and a backup sharing one Edge Node (`[redundancy]` with
/// `[sparkplug]`), through the same failovers as the JSON pair: the primary
/// killed, back, frozen past its keep-alive and thawed. A host (this
/// subscriber, decoding independently) never sees two sessions of the node
/// online at once; each session is born with a new `bdSeq` and ends with an
/// NDEATH carrying its own; a late NDEATH of an old session carries the old
/// one; every message of a session follows its NBIRTH with `seq` in order;
/// and every window of every machine is reported, equal to ONNX Runtime.
#[test]
fn a_redundant_pair_hands_over_the_edge_node_one_session_at_a_time() {
    use crate::support::broker::signal;
    use crate::support::line::line_pipeline;
    use crate::support::stream::{Record, Stream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let broker = Broker::mosquitto().start();
    let host = Subscriber::new(broker.port, &["spBv1.0/#"]);
    let record = Record::start(broker.port);
    let pair = |id: &str, role: &str, peer: &str| {
        let extra = format!(
            "[sparkplug]\ngroup_id = \"{GROUP}\"\nedge_node_id = \"{NODE}\"\n\n\
             [redundancy]\nrole = \"{role}\"\npeer = \"{peer}\"\ntakeover_replay_secs = 30\n"
        );
        let text = config(broker.port, id, crate::support::daemon::own_state(), &[line_pipeline()], &extra);
        let output = text.lines().find(|l| l.starts_with("output_topic")).unwrap().to_string();
        text.replace(&output, "format = \"sparkplug\"\ndevice_id = \"{line}-{machine}\"")
    };
    let mut primary = Daemon::start(&pair("lg-spp", "primary", "lg-spb"));
    record.wait_active("lg-spp", true, Duration::from_secs(30));
    let backup = Daemon::start(&pair("lg-spb", "backup", "lg-spp"));
    record.wait_active("lg-spb", false, Duration::from_secs(30));

    let stream = Arc::new(Stream::new(8));
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = stream.publish_until(broker.port, stop.clone());
    std::thread::sleep(Duration::from_secs(4));
    primary.kill9();
    record.wait_active("lg-spb", true, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    primary.spawn();
    record.wait_active("lg-spp", true, Duration::from_secs(30));
    record.wait_active("lg-spb", false, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    signal(primary.pid(), "STOP");
    record.wait_active("lg-spb", true, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    signal(primary.pid(), "CONT");
    record.wait_active("lg-spp", true, Duration::from_secs(30));
    record.wait_active("lg-spb", false, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let published = publishing.join().unwrap();
    assert!(published.unacknowledged.is_empty(), "{published:?}");
    let windows = stream.windows(published.rounds);

    // What the host saw, in the order the broker delivered it.
    let mut online: Option<u64> = None;
    let mut births = Vec::new();
    let mut late_deaths = 0;
    let mut next_seq = 0u64;
    let mut aliases = BTreeMap::new();
    let mut reported: BTreeMap<(String, i64), Seen> = BTreeMap::new();
    let want: BTreeSet<(String, i64)> = windows.iter().map(|(k, _)| k.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = || format!("primary:\n{}\nbackup:\n{}", primary.log(), backup.log());
    while Instant::now() < deadline && !want.iter().all(|k| reported.contains_key(k)) {
        let Some(m) = host.next(Duration::from_millis(500)) else { continue };
        let p = sp::decode(&m.payload);
        match sp::topic_kind(&m.topic).0 {
            "NBIRTH" => {
                let b = bd_seq(&p);
                assert_eq!(online, None, "NBIRTH bdSeq {b} while session {online:?} is online\n{}", logs());
                assert!(births.last() != Some(&b), "a new session takes a new bdSeq: {births:?} then {b}");
                assert_eq!(p.seq, Some(0), "NBIRTH seq");
                (online, next_seq) = (Some(b), 1);
                births.push(b);
                // Aliases are the session's: each instance numbers its own.
                aliases.clear();
            }
            "NDEATH" => {
                let b = bd_seq(&p);
                match online {
                    Some(o) if o == b => online = None,
                    // A host ignores an NDEATH of another session than the one online.
                    _ => {
                        assert!(births.contains(&b), "NDEATH of bdSeq {b}, never born: {births:?}");
                        late_deaths += 1;
                    }
                }
            }
            "DBIRTH" | "DDATA" => {
                assert!(online.is_some(), "{} outside a session\n{}", m.topic, logs());
                assert_eq!(p.seq, Some(next_seq % 256), "seq of {} in session {online:?}", m.topic);
                next_seq += 1;
                let seen = read_device(&m.topic, &p, &mut aliases);
                reported.entry((seen.device.clone(), seen.ts)).or_insert(seen);
            }
            _ => {}
        }
    }
    assert!(
        births.len() >= 5,
        "the primary, the backup, the primary, the backup, the primary: {births:?}\n{}",
        logs()
    );
    let missing: Vec<_> = want.iter().filter(|k| !reported.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} windows never reported, e.g. {:?}\n{}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(5)],
        logs()
    );
    let expected: Vec<Expected> = windows.into_iter().filter_map(|(_, e)| e).collect();
    for e in &expected {
        check_window(&reported[&(e.device.clone(), e.ts)], std::slice::from_ref(e));
    }
    eprintln!("sessions {births:?}, {late_deaths} late NDEATHs ignored, {} windows", want.len());
    let log = backup.log();
    assert!(log.contains("redundancy: the Sparkplug session is this instance's (births follow)"), "{log}");
    assert!(log.contains("redundancy: the Sparkplug session ends (NDEATH)"), "{log}");
}

/// A Sparkplug pipeline's roll-up is also a metric of the Edge Node itself,
/// `rollup/{name}/{group}`: a new one is declared by a rebirth (NBIRTH with
/// it, then the devices' DBIRTHs), then it goes out in NDATA by alias,
/// equal to the roll-up published as JSON.
#[test]
fn a_rollup_is_a_node_metric_declared_by_a_rebirth() {
    let broker = Broker::start();
    let sub = Subscriber::new(broker.port, &["spBv1.0/#", "plant/+/lineguard/health"]);
    let rollup = "\n[[rollups]]\nname = \"line-health\"\npipeline = \"press-line\"\ngroup = \"{line}\"\n\
                  output_topic = \"plant/{line}/lineguard/health\"\ninputs = { anomaly = 1.0 }\n\
                  method = \"worst\"\ninterval_secs = 1\n";
    let _daemon = start_with(&broker, "lg-spb-rollup", "", rollup);
    let (_, first) = next_of(&sub, "NBIRTH", Duration::from_secs(30));
    assert!(
        first.metrics.iter().all(|m| !m.name.as_deref().unwrap_or("").starts_with("rollup/")),
        "none yet"
    );
    let golden = Golden::load(LINE_GOLDEN);
    let mut publisher = Publisher::new(broker.port);
    publish_interleaved(&mut publisher, &golden);
    let got = sub.collect(10_000, Duration::from_secs(8), Duration::from_millis(1500), |_| true);

    // The JSON roll-ups: index by (group, ts).
    let json: BTreeMap<(String, i64), Option<f64>> = got
        .iter()
        .filter(|m| m.topic.ends_with("/health"))
        .map(|m| {
            let j = m.json();
            ((j["group"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap()), j["index"].as_f64())
        })
        .collect();
    assert!(json.len() >= 4, "two lines, two roll-ups each: {json:?}");
    // The node's: aliases from each NBIRTH, values from NBIRTH and NDATA.
    let mut aliases: BTreeMap<u64, String> = BTreeMap::new();
    let mut node: BTreeMap<(String, i64), Option<f64>> = BTreeMap::new();
    let mut rebirths = 0;
    let value = |m: &sp::Metric| match &m.value {
        Val::Double(v) => Some(*v),
        Val::Null => None,
        v => panic!("a roll-up metric is a Double: {v:?}"),
    };
    for m in got.iter().filter(|m| m.topic.starts_with("spBv1.0/")) {
        let (kind, _) = sp::topic_kind(&m.topic);
        let p = sp::decode(&m.payload);
        match kind {
            "NBIRTH" => {
                rebirths += 1;
                assert_eq!(p.seq, Some(0), "a rebirth starts seq again");
                for metric in
                    p.metrics.iter().filter(|x| x.name.as_deref().is_some_and(|n| n.starts_with("rollup/")))
                {
                    assert_eq!(metric.datatype, Some(sp::DOUBLE));
                    let name = metric.name.clone().unwrap();
                    aliases.insert(metric.alias.expect("an alias"), name.clone());
                    let group = name.rsplit('/').next().unwrap().to_string();
                    node.insert((group, metric.timestamp.unwrap() as i64), value(metric));
                }
            }
            "NDATA" => {
                for metric in &p.metrics {
                    let name =
                        aliases.get(&metric.alias.expect("NDATA by alias")).expect("declared in an NBIRTH");
                    let group = name.rsplit('/').next().unwrap().to_string();
                    node.insert((group, metric.timestamp.unwrap() as i64), value(metric));
                }
            }
            _ => {}
        }
    }
    assert!(rebirths >= 1, "a rebirth declared the roll-up metrics");
    assert_eq!(
        aliases.values().collect::<BTreeSet<_>>(),
        ["rollup/line-health/line1", "rollup/line-health/line2"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
            .iter()
            .collect(),
    );
    assert_eq!(node, json, "every roll-up as the node's metric, equal to its JSON");
}
