//! A shadow model: every window is also scored by it, in the same turn, and
//! published on `shadow_topic` with `"shadow": true`; it never changes the
//! live scores, states or alarms; its disagreements are counted.

use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon};
use crate::support::golden::{card_scores, check_scores, Golden};
use crate::support::line::{
    expect_exactly, line_pipeline, line_topic, publish_interleaved, wait_online, LINE_CARD, LINE_GOLDEN,
};
use crate::support::mqtt::{Publisher, Subscriber};

#[test]
fn a_shadow_model_is_published_apart_and_never_acted_on() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // The shadow: the shipped model with a stricter quality card, so it
    // disagrees with the live model on known windows.
    let shadow = dir.path().join("shadow.onnx");
    std::fs::copy(crate::support::repo_path("models/line-mlp.onnx"), &shadow).unwrap();
    let card = std::fs::read_to_string(crate::support::repo_path(LINE_CARD)).unwrap();
    let strict = card
        .replace("warn = 0.8\nalarm = 0.65\n", "warn = 0.95\nalarm = 0.85\n")
        .replace("version = \"4\"", "version = \"4-strict\"");
    assert_ne!(strict, card, "the shipped card changed: adjust this test");
    let shadow_card = dir.path().join("shadow.toml");
    std::fs::write(&shadow_card, strict).unwrap();
    let text = config(broker.port, "lg-shadow", dir.path(), &[line_pipeline()], "")
        + &format!(
            "shadow_model = \"{}\"\nshadow_topic = \"plant/{{line}}/{{machine}}/lineguard/shadow\"\nalarm_topic = \"plant/{{line}}/{{machine}}/lineguard/alarm\"\n",
            shadow.display()
        );
    let daemon = Daemon::start(&text);
    wait_online(&broker, "lg-shadow");
    let live = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let shadows = Subscriber::new(broker.port, &["plant/+/+/lineguard/shadow"]);
    let alarms = Subscriber::new(broker.port, &["plant/+/+/lineguard/alarm"]);
    let golden = Golden::load(LINE_GOLDEN);
    let mut p = Publisher::new(broker.port);
    publish_interleaved(&mut p, &golden);

    // The live scores are exactly what they are without a shadow.
    let live_expected = golden.expected(&card_scores(LINE_CARD), 1);
    let got = expect_exactly(&live, &live_expected);
    assert!(got.iter().all(|m| m.json().get("shadow").is_none()), "a live score marked shadow");
    // The shadow topic: the shadow's scores and states, marked.
    let shadow_expected = golden.expected(&card_scores(shadow_card.to_str().unwrap()), 1);
    let got =
        shadows.collect(shadow_expected.len(), Duration::from_secs(30), Duration::from_millis(500), |_| true);
    assert_eq!(got.len(), shadow_expected.len(), "{}", daemon.log());
    check_scores(&got, &shadow_expected, "press-line", "line-mlp", |d| format!("plant/{d}/lineguard/shadow"));
    for m in &got {
        let v = m.json();
        assert_eq!(
            (v["shadow"].as_bool(), v["model_version"].as_str()),
            (Some(true), Some("4-strict")),
            "{v}"
        );
    }
    // Alarms follow the live model only: the shadow calls press2 (quality
    // ~0.86-0.88) warn, the live model does not.
    let alarm_states: Vec<serde_json::Value> = alarms
        .collect(8, Duration::from_secs(5), Duration::from_millis(300), |_| true)
        .iter()
        .map(|m| m.json())
        .collect();
    for a in &alarm_states {
        let (device, ts) = (a["device"].as_str().unwrap(), a["ts"].as_i64().unwrap());
        let live = live_expected.iter().find(|e| e.device == device && e.ts == ts).unwrap();
        if let Some(want) = live.state {
            assert!(a["state"] == want || a["previous"].is_string(), "alarm from the shadow? {a}");
        }
    }
    // Disagreements: windows whose state differs, counted from ONNX Runtime's
    // outputs under each card (a window near a threshold may go either way).
    let (mut sure, mut maybe) = (0u64, 0u64);
    for (l, s) in live_expected.iter().zip(&shadow_expected) {
        match (l.state, s.state) {
            (Some(a), Some(b)) if a != b => sure += 1,
            (Some(_), Some(_)) => {}
            _ => maybe += 1,
        }
    }
    assert!(sure > 10, "the test needs disagreements: {sure}");
    let metrics = daemon.http_get("/metrics").1;
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{pipeline=\"press-line\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{metrics}"))
    };
    assert_eq!(value("lineguard_shadow_windows_total"), shadow_expected.len() as u64);
    let counted = value("lineguard_shadow_state_disagreements_total");
    assert!(
        sure <= counted && counted <= sure + maybe,
        "{counted} disagreements, expected {sure}..={}",
        sure + maybe
    );
    // Same model, so |shadow - live| is 0 for both scores.
    assert!(
        metrics.contains(
            "lineguard_shadow_abs_diff_bucket{pipeline=\"press-line\",score=\"quality\",le=\"0.0001\"} 100"
        ),
        "{metrics}"
    );
    // The shipped Grafana dashboard's shadow panels read what this daemon exports.
    let dashboard =
        std::fs::read_to_string(crate::support::repo_path("deploy/grafana-lineguard.json")).unwrap();
    let mut read: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lineguard_shadow_"))
        .collect();
    read.sort();
    read.dedup();
    assert!(read.len() >= 3, "the dashboard shows the shadow model: {read:?}");
    for m in read {
        assert!(metrics.contains(&format!("{m}{{")), "the dashboard queries {m}, not exported:\n{metrics}");
    }

    // Hot swap: a shadow card that reads other input is refused (the old
    // shadow keeps going); a good one is swapped in and shadows from then on.
    let text = std::fs::read_to_string(&shadow_card).unwrap();
    let reordered = text.replace("\"spindle_speed\", \"feed_rate\"", "\"feed_rate\", \"spindle_speed\"");
    assert_ne!(reordered, text);
    std::fs::write(&shadow_card, reordered).unwrap();
    crate::support::wait_until("the bad shadow refused", Duration::from_secs(15), || {
        daemon.log().contains("new shadow model refused")
    });
    std::fs::write(&shadow_card, text.replace("version = \"4-strict\"", "version = \"4-stricter\"")).unwrap();
    crate::support::wait_until("the shadow swapped", Duration::from_secs(15), || {
        daemon.log().contains("shadow model swapped")
    });
    for s in &golden.devices["line2/lathe1"] {
        let mut s = s.clone();
        s.ts += 10_000;
        p.publish(&line_topic("line1/press1"), Golden::payload(&s));
    }
    p.flush(Duration::from_secs(10));
    let after = shadows.collect(16, Duration::from_secs(20), Duration::from_millis(300), |_| true);
    assert!(!after.is_empty(), "no shadow scores after the swap");
    assert!(
        after.iter().all(|m| m.json()["model_version"] == "4-stricter"),
        "{:?}",
        after.last().map(|m| m.json())
    );
}

#[test]
fn a_shadow_that_reads_other_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = dir.path().join("shadow.onnx");
    std::fs::copy(crate::support::repo_path("models/line-mlp.onnx"), &shadow).unwrap();
    let card = std::fs::read_to_string(crate::support::repo_path(LINE_CARD)).unwrap();
    std::fs::write(dir.path().join("shadow.toml"), card.replace("window = 16", "window = 8")).unwrap();
    let text = config(1883, "lg-shadow-bad", dir.path(), &[line_pipeline()], "")
        + &format!(
            "shadow_model = \"{}\"\nshadow_topic = \"plant/{{line}}/{{machine}}/shadow\"\n",
            shadow.display()
        );
    let path = dir.path().join("lineguard.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lineguard"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("shadow_model") && text.contains("must read what the live model reads"), "{text}");
}
