//! A primary and a backup lineguard on one stream (`[redundancy]`): the
//! primary is killed with `kill -9` mid-stream and started again, then
//! frozen past its keep-alive and thawed. Every window is published at
//! least once, equal to ONNX Runtime; every duplicate is byte-identical;
//! no device's alarm state steps back; one instance is active at a time,
//! give or take a second at each change.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::broker::{signal, Broker};
use crate::support::daemon::{config, Daemon};
use crate::support::golden::Golden;
use crate::support::line::{line_pipeline, line_topic, LINE_GOLDEN};
use crate::support::mqtt::Publisher;
use crate::support::stream::{
    check_alarms, check_windows, longest_without_one_active, metric, Record, Stream,
};

/// Machines on the line, each replaying one golden device's samples.
const MACHINES: usize = 12;
/// The daemons' `mqtt.keep_alive_secs` (the least allowed).
const KEEP_ALIVE: Duration = Duration::from_secs(5);

const ALARMS: &str = "plant/{line}/{machine}/lineguard/alarm";

fn pair_config(port: u16, client_id: &str, role: &str, peer: &str) -> String {
    let redundancy =
        format!("\n[redundancy]\nrole = \"{role}\"\npeer = \"{peer}\"\ntakeover_replay_secs = 30\n");
    config(port, client_id, crate::support::daemon::own_state(), &[line_pipeline()], &redundancy)
        .replace("hop = 1\n", &format!("hop = 1\nalarm_topic = \"{ALARMS}\"\n"))
}

#[test]
fn a_primary_killed_and_frozen_mid_stream_leaves_no_window_unscored() {
    let broker = Broker::mosquitto().start();
    let stream = Arc::new(Stream::new(MACHINES));
    let record = Record::start(broker.port);
    let mut primary = Daemon::start(&pair_config(broker.port, "lg-pri", "primary", "lg-bak"));
    record.wait_active("lg-pri", true, Duration::from_secs(30));
    let backup = Daemon::start(&pair_config(broker.port, "lg-bak", "backup", "lg-pri"));
    record.wait_active("lg-bak", false, Duration::from_secs(30));
    let from = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = stream.publish_until(broker.port, stop.clone());
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
    let published = publishing.join().unwrap();
    assert!(published.unacknowledged.is_empty(), "mosquitto acknowledges every publish: {published:?}");
    let rounds = published.rounds;

    // Every window, at least once, equal to ONNX Runtime; every copy the same bytes.
    let windows = stream.windows(rounds);
    let want: BTreeSet<_> = windows.iter().map(|(k, _)| k.clone()).collect();
    let (by_window, missing) = record.wait_for_windows(&want, Duration::from_secs(30));
    assert!(
        missing.is_empty(),
        "{} of {} windows never published, e.g. {:?}\nprimary:\n{}\nbackup:\n{}",
        missing.len(),
        want.len(),
        &missing[..missing.len().min(5)],
        primary.log(),
        backup.log()
    );
    let duplicates = check_windows(&by_window, &windows);
    assert!(duplicates > 0, "a takeover replays what the old active may not have published");
    // No device's alarm state steps back or changes without its data.
    let all = record.all();
    let changes = |d: &Daemon| -> String {
        let log = d.log();
        let lines = log.lines().filter(|l| l.contains("redundancy:") || l.contains("broker connection"));
        lines.collect::<Vec<_>>().join("\n")
    };
    let transitions = check_alarms(&all, &windows)
        .unwrap_or_else(|e| panic!("{e}\nbackup:\n{}\nprimary:\n{}", changes(&backup), changes(&primary)));
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
    assert_eq!(
        metric(&metrics, "lineguard_redundancy_takeovers_total "),
        2.0,
        "the backup took over after the kill and after the freeze, and only then:\nbackup:\n{}\nprimary:\n{}",
        changes(&backup),
        changes(&primary)
    );
    assert!(metric(&metrics, "lineguard_redundancy_replayed_total ") > 0.0, "{metrics}");
    let metrics = primary.http_get("/metrics").1;
    assert_eq!(metric(&metrics, "lineguard_redundancy_active "), 1.0, "{metrics}");
    let log = backup.log();
    assert!(
        log.contains("redundancy: active, publishing for the pair: the primary's status says offline"),
        "{log}"
    );
    assert!(
        log.contains("redundancy: standing by, publishing nothing but its status: the primary has caught up and takes over"),
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
