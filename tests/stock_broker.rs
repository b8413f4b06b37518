//! lineguard behind a stock mosquitto. Its own test binary, and its tests
//! take turns, so that no other daemons share the two cores while one runs:
//! the check is that acknowledgements keep pace with the line, and a machine
//! busy with other tests would measure that machine instead.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use support::broker::Broker;
use support::daemon::PipelineSpec;
use support::golden::Golden;
use support::line::{start_online_with_env, LINE_GOLDEN, LINE_IN, LINE_MODEL, LINE_OUT};
use support::mqtt::{Publisher, Subscriber};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const MQTT_5: &[(&str, &str)] = &[("LINEGUARD__MQTT__PROTOCOL", "5")];

/// Publish `per_device` samples to each of `devices` machines, pausing 5 ms
/// after every `pause_every` rounds (0: one raw burst), and check that every
/// window is scored exactly once.
fn line_loses_nothing(id: &str, env: &[(&str, &str)], devices: usize, per_device: usize, pause_every: usize) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Broker::mosquitto().stock_limits().start();
    let daemon = start_online_with_env(
        &broker,
        id,
        &[PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)],
        "",
        env,
    );
    // Scores only: a subscriber to the telemetry too would have its own
    // queue overflow in a burst.
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let golden = Golden::load(LINE_GOLDEN);
    let sample = &golden.devices.values().next().unwrap()[0];
    let mut p = Publisher::new(broker.port);
    for i in 0..per_device {
        for d in 0..devices {
            let mut s = sample.clone();
            s.ts = 1_732_400_000_000 + i as i64 * 100;
            p.publish(&format!("plant/burst/m{d}/telemetry"), Golden::payload(&s));
        }
        if pause_every > 0 && i % pause_every == pause_every - 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    p.flush(Duration::from_secs(60));
    let expected = devices * (per_device - golden.window + 1);
    let got = sub.collect(expected, Duration::from_secs(60), Duration::from_millis(500), |m| {
        m.topic.ends_with("/lineguard/scores")
    });
    let mut keys: Vec<String> =
        got.iter().map(|m| format!("{}@{}", m.json()["device"], m.json()["ts"])).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        expected,
        "every window scored once, none lost in the broker; log:\n{}",
        daemon.log()
    );
    assert_eq!(got.len(), expected, "nothing twice");
}

/// A fast line (5 machines, 2000 messages/s in all) through mosquitto as
/// installed, over MQTT 3.1.1 (the default): mosquitto lets only 20
/// unacknowledged messages through at a time and drops what overflows its
/// queue of 1000, so lineguard must commit and acknowledge promptly to lose
/// nothing.
#[test]
fn a_fast_line_through_stock_mosquitto_loses_nothing() {
    line_loses_nothing("lg-stock", &[], 5, 1000, 2);
}

/// The same over MQTT 5 (`mqtt.protocol = "5"`).
#[test]
fn a_fast_line_through_stock_mosquitto_over_mqtt_5_loses_nothing() {
    line_loses_nothing("lg-stock-5", MQTT_5, 5, 1000, 2);
}

/// A raw burst of 1900 messages, published as fast as the broker takes
/// them. Over MQTT 5 lineguard asks for up to 1000 unacknowledged messages
/// (`mqtt.receive_maximum`), so the broker's queue of 1000 holds the rest
/// whatever the disk's speed. (Over 3.1.1 only 20 + 1000 fit, so the same
/// burst loses about a third of its windows: README, "Broker settings";
/// BENCHMARKS.md has the counts.)
#[test]
fn a_raw_burst_through_stock_mosquitto_over_mqtt_5_loses_nothing() {
    line_loses_nothing("lg-stock-burst", MQTT_5, 5, 380, 0);
}
