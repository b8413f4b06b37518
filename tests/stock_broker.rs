//! lineguard behind a stock mosquitto at line rate. Its own test binary, so
//! that no other test's daemons share the two cores while it runs: the check
//! is that acknowledgements keep pace with the line, and a machine busy with
//! other tests would measure that machine instead.

mod support;

use std::time::Duration;

use support::broker::Broker;
use support::daemon::PipelineSpec;
use support::golden::Golden;
use support::line::{start_online, LINE_GOLDEN, LINE_IN, LINE_MODEL, LINE_OUT};
use support::mqtt::{Publisher, Subscriber};

/// A fast line (5 machines, 2000 messages/s in all) through mosquitto as
/// installed: it lets only 20 unacknowledged messages through at a time and
/// drops what overflows its queue of 1000, so lineguard must commit and
/// acknowledge promptly to lose nothing. (A raw burst faster than that needs
/// the broker's limits raised: README, "Broker settings".)
#[test]
fn a_fast_line_through_stock_mosquitto_loses_nothing() {
    let broker = Broker::mosquitto_stock();
    let _daemon = start_online(
        &broker,
        "lg-stock",
        &[PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)],
        "",
    );
    let sub = Subscriber::new(broker.port, &["#"]);
    let golden = Golden::load(LINE_GOLDEN);
    let sample = &golden.devices.values().next().unwrap()[0];
    let (devices, per_device) = (5, 1000);
    let mut p = Publisher::new(broker.port);
    for i in 0..per_device {
        for d in 0..devices {
            let mut s = sample.clone();
            s.ts = 1_732_400_000_000 + i as i64 * 100;
            p.publish(&format!("plant/burst/m{d}/telemetry"), Golden::payload(&s));
        }
        if i % 2 == 1 {
            std::thread::sleep(Duration::from_millis(5)); // 10 messages per 5 ms
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
    assert_eq!(keys.len(), expected, "every window scored once, none lost in the broker");
    assert_eq!(got.len(), expected, "nothing twice");
}
