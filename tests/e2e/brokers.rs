//! The broker side of the plant: several brokers (`mqtt.hosts`), one tried
//! after the other when a connection is lost, and a broker that comes back
//! without our session (telemetry published meanwhile is gone): the
//! windows such a hole would cut start again, so no published score joins
//! samples from both sides of it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon};
use crate::support::golden::{card_scores, check_scores, Golden, Sample};
use crate::support::line::{
    is_score, line_pipeline, publish_samples, score_topic, wait_online, LINE_CARD, LINE_GOLDEN,
};
use crate::support::mqtt::{Message, Publisher, Subscriber};

/// The golden stream cut in three: what goes out before the hole, what is
/// lost in it (`lost` samples of each device), and what comes after.
fn with_a_hole(golden: &Golden, lost: usize) -> [Vec<(&str, &Sample)>; 3] {
    let samples = golden.interleaved();
    let half = samples.len() / 2;
    let devices = golden.devices.len();
    let (before, rest) = samples.split_at(half);
    let (hole, after) = rest.split_at(lost * devices);
    [before.to_vec(), hole.to_vec(), after.to_vec()]
}

/// Every published score is ONNX Runtime's for its window, and no window
/// holds a sample from the hole: a window whose newest sample comes within
/// `window - 1` samples after the hole would join both sides of it.
fn check_no_window_across(got: &[Message], golden: &Golden, hole: &[(&str, &Sample)]) {
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let unique: Vec<Message> = {
        let mut seen = BTreeSet::new();
        got.iter()
            .filter(|m| seen.insert((m.json()["device"].to_string(), m.json()["ts"].as_i64().unwrap())))
            .cloned()
            .collect()
    };
    let published: Vec<_> = expected
        .into_iter()
        .filter(|e| unique.iter().any(|m| m.json()["device"] == e.device.as_str() && m.json()["ts"] == e.ts))
        .collect();
    assert_eq!(
        published.len(),
        unique.len(),
        "a published window is none of ONNX Runtime's: it crosses the hole"
    );
    check_scores(&unique, &published, "press-line", "line-mlp", score_topic);
    for (device, s) in hole {
        let samples = &golden.devices[*device];
        let at = samples.iter().position(|x| x.ts == s.ts).unwrap();
        let spans: Vec<i64> = samples[at..].iter().take(golden.window).map(|x| x.ts).collect();
        let across: Vec<&Message> = unique
            .iter()
            .filter(|m| m.json()["device"] == *device && spans.contains(&m.json()["ts"].as_i64().unwrap()))
            .collect();
        assert!(across.is_empty(), "{device}: a window holding ts {} from the hole was published", s.ts);
    }
}

fn metric(metrics: &str, line: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(line)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// `mqtt.hosts` names two brokers: when the first goes, both connections
/// turn to the second, and scoring goes on there. The second has no
/// session of ours, so the telemetry published while we were away is lost:
/// said once, counted, and the windows it would cut start again.
#[test]
fn a_lost_broker_is_replaced_by_the_next_of_mqtt_hosts() {
    let mut first = Broker::mosquitto().start();
    let second = Broker::mosquitto().start();
    let state = tempfile::tempdir().unwrap();
    let hosts = format!("hosts = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]", first.port, second.port);
    let text = config(first.port, "lg-hosts", state.path(), &[line_pipeline()], "")
        .replace(&format!("host = \"127.0.0.1\"\nport = {}", first.port), &hosts);
    let daemon = Daemon::start(&text);
    wait_online(&first, "lg-hosts");
    let golden = Golden::load(LINE_GOLDEN);
    let [before, hole, after] = with_a_hole(&golden, 3);

    let sub_first = Subscriber::new(first.port, &["plant/+/+/lineguard/scores"]);
    publish_samples(&mut Publisher::new(first.port), &before);
    let mut got = sub_first.collect(usize::MAX, Duration::from_secs(3), Duration::ZERO, is_score);
    assert!(!got.is_empty(), "scores from the first broker");
    // The hole's samples are never published: the first broker is gone.
    first.kill();
    wait_online(&second, "lg-hosts");
    let sub_second = Subscriber::new(second.port, &["plant/+/+/lineguard/scores"]);
    publish_samples(&mut Publisher::new(second.port), &after);
    got.extend(sub_second.collect(usize::MAX, Duration::from_secs(4), Duration::ZERO, is_score));
    check_no_window_across(&got, &golden, &hole);
    // Windows made only of samples after the hole are scored on the second broker.
    let last = golden.devices.values().map(|s| s.last().unwrap().ts).collect::<BTreeSet<_>>();
    assert!(
        got.iter().any(|m| last.contains(&m.json()["ts"].as_i64().unwrap())),
        "the last windows, scored through the second broker"
    );

    let log = daemon.log();
    let second_addr = format!("127.0.0.1:{}", second.port);
    assert!(
        log.lines().any(|l| l.contains("connected to broker") && l.contains(&second_addr)),
        "connected to the second broker:\n{log}"
    );
    assert_eq!(log.matches("the broker lost this connection's session").count(), 1, "said once:\n{log}");
    let metrics = daemon.http_get("/metrics").1;
    assert_eq!(
        metric(&metrics, "lineguard_sessions_lost_total{connection=\"telemetry\"} "),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "lineguard_window_resets_total{pipeline=\"press-line\",reason=\"session_lost\"} "),
        golden.devices.len() as f64,
        "one restart per device window\n{metrics}"
    );
}

/// mosquitto restarts without persistence while lineguard runs: the
/// session and what was queued in it are gone. No score joins the samples
/// from before the restart with those after it.
#[test]
fn a_broker_that_lost_the_session_starts_every_window_again() {
    let mut broker = Broker::mosquitto().start();
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(broker.port, "lg-lost", state.path(), &[line_pipeline()], ""));
    wait_online(&broker, "lg-lost");
    let golden = Golden::load(LINE_GOLDEN);
    let [before, hole, after] = with_a_hole(&golden, 3);
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    publish_samples(&mut Publisher::new(broker.port), &before);
    let mut got = sub.collect(usize::MAX, Duration::from_secs(3), Duration::ZERO, is_score);
    broker.restart();
    wait_online(&broker, "lg-lost");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    publish_samples(&mut Publisher::new(broker.port), &after);
    got.extend(sub.collect(usize::MAX, Duration::from_secs(4), Duration::ZERO, is_score));
    check_no_window_across(&got, &golden, &hole);
    let metrics = daemon.http_get("/metrics").1;
    assert_eq!(
        metric(&metrics, "lineguard_sessions_lost_total{connection=\"telemetry\"} "),
        1.0,
        "{metrics}"
    );
    let log = daemon.log();
    assert!(log.contains("the broker lost this connection's session"), "{log}");
}
