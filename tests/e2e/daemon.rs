//! The daemon end to end, as a user runs it: a real mosquitto, `lineguard run
//! --config`, telemetry published over MQTT, scores read back over MQTT and
//! compared with ONNX Runtime's outputs on the same windows.

use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{Daemon, PipelineSpec};
use crate::support::golden::{card_scores, check_scores, Golden};
use crate::support::line::{
    expect_exactly, line_topic, publish_interleaved, start_online, LINE_CARD, LINE_GOLDEN, LINE_IN,
    LINE_MODEL, LINE_OUT,
};
use crate::support::mqtt::{Publisher, Subscriber};

/// Start a daemon, wait for its `online`, and listen to everything.
fn start(broker: &Broker, client_id: &str, pipelines: &[PipelineSpec], extra: &str) -> (Daemon, Subscriber) {
    let daemon = start_online(broker, client_id, pipelines, extra);
    (daemon, Subscriber::new(broker.port, &["#"]))
}

#[test]
fn every_window_is_scored_like_onnx_runtime() {
    let broker = Broker::start();
    let (mut daemon, sub) =
        start(&broker, "lg-golden", &[PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)], "");
    let golden = Golden::load(LINE_GOLDEN);
    publish_interleaved(&mut Publisher::new(broker.port), &golden);
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    assert_eq!(expected.len(), 100);
    expect_exactly(&sub, &expected);
    assert!(daemon.is_running(), "{}", daemon.log());
}

#[test]
fn hop_scores_every_nth_window() {
    let broker = Broker::start();
    let mut p = PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT);
    p.hop = 3;
    let (_daemon, sub) = start(&broker, "lg-hop", &[p], "");
    let golden = Golden::load(LINE_GOLDEN);
    publish_interleaved(&mut Publisher::new(broker.port), &golden);
    let expected = golden.expected(&card_scores(LINE_CARD), 3);
    // 25 windows per device, every third from the first full one: 9 each.
    assert_eq!(expected.len(), 4 * 9);
    expect_exactly(&sub, &expected);
}

#[test]
fn batches_of_samples_in_one_message() {
    let broker = Broker::start();
    let (_daemon, sub) =
        start(&broker, "lg-batch", &[PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)], "");
    let golden = Golden::load(LINE_GOLDEN);
    let mut publisher = Publisher::new(broker.port);
    for (device, samples) in &golden.devices {
        for chunk in samples.chunks(7) {
            let batch: Vec<serde_json::Value> =
                chunk.iter().map(|s| serde_json::json!({"ts": s.ts, "values": s.values})).collect();
            publisher.publish(&line_topic(device), serde_json::to_vec(&batch).unwrap());
        }
    }
    publisher.flush(Duration::from_secs(10));
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    expect_exactly(&sub, &expected);
}

#[test]
fn several_pipelines_with_different_models_in_one_daemon() {
    let broker = Broker::start();
    let specs = [
        ("press-line", LINE_MODEL, LINE_IN, LINE_OUT, LINE_GOLDEN, LINE_CARD, "line-mlp"),
        (
            "pumps",
            "tests/fixtures/models/seq-risk.onnx",
            "water/{site}/{pump}/telemetry",
            "water/{site}/{pump}/risk",
            "tests/fixtures/models/seq-risk.golden.json",
            "tests/fixtures/models/seq-risk.toml",
            "seq-risk",
        ),
        (
            "cells",
            "tests/fixtures/models/fixed1.onnx",
            "lab/{bench}/{cell}/in",
            "lab/{bench}/{cell}/out",
            "tests/fixtures/models/fixed1.golden.json",
            "tests/fixtures/models/fixed1.toml",
            "fixed1",
        ),
        (
            "bench",
            "tests/fixtures/models/sk-mlp.onnx",
            "sk/{a}/{b}/t",
            "sk/{a}/{b}/estimate",
            "tests/fixtures/models/sk-mlp.golden.json",
            "tests/fixtures/models/sk-mlp.toml",
            "sk-mlp",
        ),
    ];
    let pipelines: Vec<PipelineSpec> = specs.iter().map(|s| PipelineSpec::new(s.0, s.1, s.2, s.3)).collect();
    let (_daemon, sub) = start(&broker, "lg-multi", &pipelines, "");
    // Fill a template's placeholders, in order, with the device key's levels.
    let topic = |template: &str, device: &str| {
        let mut values = device.split('/');
        template
            .split('/')
            .map(|l| if l.starts_with('{') { values.next().unwrap() } else { l })
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut publisher = Publisher::new(broker.port);
    let goldens: Vec<Golden> = specs.iter().map(|s| Golden::load(s.4)).collect();
    let mut total = 0;
    for (s, g) in specs.iter().zip(&goldens) {
        for (device, sample) in g.interleaved() {
            publisher.publish(&topic(s.2, device), Golden::payload(sample));
        }
        total += g.windows.len();
    }
    publisher.flush(Duration::from_secs(10));
    let outputs: Vec<String> = specs.iter().map(|s| s.3.rsplit('/').next().unwrap().to_string()).collect();
    let got = sub.collect(total, Duration::from_secs(30), Duration::from_millis(800), |m| {
        !m.topic.starts_with("lineguard/") && outputs.iter().any(|o| m.topic.ends_with(&format!("/{o}")))
    });
    assert_eq!(got.len(), total, "one score per window of every pipeline");
    for (s, g) in specs.iter().zip(&goldens) {
        let prefix = format!("{}/", s.3.split('/').next().unwrap());
        let mine: Vec<_> = got.iter().filter(|m| m.topic.starts_with(&prefix)).cloned().collect();
        check_scores(&mine, &g.expected(&card_scores(s.5), 1), s.0, s.6, |d| topic(s.3, d));
    }
}

#[test]
fn rejected_samples_do_not_break_the_windows_of_valid_ones() {
    let broker = Broker::start();
    let (mut daemon, sub) =
        start(&broker, "lg-reject", &[PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)], "");
    let golden = Golden::load(LINE_GOLDEN);
    let mut publisher = Publisher::new(broker.port);
    let mut previous: std::collections::HashMap<&str, String> = Default::default();
    for (i, (device, sample)) in golden.interleaved().into_iter().enumerate() {
        let topic = line_topic(device);
        let good = Golden::payload(sample);
        let mut missing = sample.values.clone();
        missing.remove("torque");
        let mut stringy = serde_json::json!({"ts": sample.ts, "values": sample.values});
        stringy["values"]["motor_temp"] = serde_json::json!("61.2");
        let mut nan = stringy.clone();
        nan["values"]["motor_temp"] = serde_json::json!("NaN");
        let garbage: Vec<Vec<u8>> = vec![
            b"{\"ts\": 1, \"values\": {".to_vec(),
            b"not json at all".to_vec(),
            vec![0xff, 0x00, 0x13],
            serde_json::json!({"ts": sample.ts, "values": missing}).to_string().into_bytes(),
            stringy.to_string().into_bytes(),
            nan.to_string().into_bytes(),
            serde_json::json!({"ts": "last tuesday", "values": sample.values}).to_string().into_bytes(),
            b"[]".to_vec(),
            b"42".to_vec(),
            serde_json::json!({"values": 3}).to_string().into_bytes(),
        ];
        publisher.publish(&topic, garbage[i % garbage.len()].clone());
        if i % 3 == 0 {
            // A batch whose first element is bad and second is the real sample.
            let batch = format!("[{{\"ts\":{},\"values\":{{\"spindle_speed\":\"x\"}}}},{good}]", sample.ts);
            publisher.publish(&topic, batch);
        } else {
            publisher.publish(&topic, good.clone());
        }
        if let Some(prev) = previous.get(device) {
            publisher.publish(&topic, prev.clone()); // a replay: out of order
        }
        previous.insert(device, good);
    }
    publisher.flush(Duration::from_secs(10));
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    expect_exactly(&sub, &expected);
    assert!(daemon.is_running());
    let log = daemon.log();
    for reason in [
        "invalid_json",
        "missing_feature",
        "non_numeric",
        "non_finite",
        "bad_timestamp",
        "out_of_order",
        "empty_batch",
        "bad_shape",
    ] {
        assert!(log.contains(reason), "no log line for {reason}:\n{log}");
    }
}

#[test]
fn status_is_retained_online_then_offline_on_kill_and_on_sigterm() {
    let broker = Broker::start();
    let (mut daemon, sub) =
        start(&broker, "lg-status", &[PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)], "");
    let topic = "lineguard/lg-status/status";
    // A late subscriber sees the retained `online` with the model and its sha256.
    let late = Subscriber::new(broker.port, &[topic]);
    let online = late.wait_for(topic, "\"online\"", Duration::from_secs(10));
    assert!(online.retain, "status is retained");
    let j = online.json();
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(crate::support::repo_path(LINE_MODEL)).unwrap()))
    };
    assert_eq!(j["models"][0]["sha256"], sha.as_str(), "{j}");
    assert_eq!(j["models"][0]["model"], "line-mlp");
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));

    // kill -9: the broker publishes the last will.
    daemon.kill9();
    let will = sub.wait_for(topic, "\"offline\"", Duration::from_secs(15));
    assert_eq!(will.json()["status"], "offline");
    let later = Subscriber::new(broker.port, &[topic]);
    assert!(later.wait_for(topic, "offline", Duration::from_secs(5)).retain);

    // Restart, then SIGTERM: exit 0 and `offline` published by the daemon itself.
    daemon.spawn();
    sub.wait_for(topic, "\"online\"", Duration::from_secs(30));
    let status = daemon.sigterm(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}; log:\n{}", daemon.log());
    sub.wait_for(topic, "\"offline\"", Duration::from_secs(10));
}

/// Scores and status go out on a connection of their own,
/// `{client_id}-scores`. Another client taking that id drops it, and the
/// broker publishes its will, `offline`; once the intruder is gone lineguard
/// reconnects it, says `online` again, and every window is scored once (the
/// telemetry connection, and its session, were not touched).
#[test]
fn a_lost_score_connection_comes_back_online_and_scores() {
    let broker = Broker::start();
    let (daemon, sub) =
        start(&broker, "lg-split", &[PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)], "");
    let status = "lineguard/lg-split/status";
    // One takeover: a bare client that connects once and never again (a
    // reconnecting one would take the id back, mid-stream, whenever it can).
    let intruder = crate::support::mqtt::connect_once(broker.port, "lg-split-scores");
    sub.wait_for(status, "\"offline\"", Duration::from_secs(10));
    drop(intruder);
    sub.wait_for(status, "\"online\"", Duration::from_secs(30));
    let golden = Golden::load(LINE_GOLDEN);
    publish_interleaved(&mut Publisher::new(broker.port), &golden);
    expect_exactly(&sub, &golden.expected(&card_scores(LINE_CARD), 1));
    assert!(
        daemon.log().contains("connection=\"scores\""),
        "the score connection's events are logged as its own:\n{}",
        daemon.log()
    );
}

/// `(runs, windows)` of the pipeline's model so far, from `/metrics`.
fn model_runs(daemon: &Daemon) -> (u64, u64) {
    let (_, body) = daemon.http_get("/metrics");
    let value = |name: &str| {
        let prefix = format!("{name}{{pipeline=\"press-line\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("/metrics lacks {name}:\n{body}"))
            .parse::<f64>()
            .unwrap() as u64
    };
    (value("lineguard_batch_size_count"), value("lineguard_batch_size_sum"))
}

#[test]
fn windows_that_come_within_the_batch_wait_share_one_model_run() {
    let broker = Broker::start();
    let (daemon, sub) = start(
        &broker,
        "lg-wait",
        &[PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)],
        "[limits]\nbatch_wait_us = 100000\n",
    );
    let golden = Golden::load(LINE_GOLDEN);
    let w = golden.window;
    let mut p = Publisher::new(broker.port);
    for (device, samples) in &golden.devices {
        samples[..w].iter().for_each(|s| p.publish(&line_topic(device), Golden::payload(s)));
    }
    p.flush(Duration::from_secs(10));
    let mut got = sub.collect(4, Duration::from_secs(30), Duration::ZERO, crate::support::line::is_score);
    std::thread::sleep(Duration::from_millis(300)); // those turns are over
    let before = model_runs(&daemon);

    // One more sample per device, 5 ms apart: 15 ms from first to last,
    // inside the first one's 100 ms wait, so one model run scores all four.
    for (device, samples) in &golden.devices {
        p.publish(&line_topic(device), Golden::payload(&samples[w]));
        std::thread::sleep(Duration::from_millis(5));
    }
    p.flush(Duration::from_secs(10));
    got.extend(sub.collect(
        4,
        Duration::from_secs(30),
        Duration::from_millis(300),
        crate::support::line::is_score,
    ));
    let after = model_runs(&daemon);

    let expected: Vec<_> = golden
        .expected(&card_scores(LINE_CARD), 1)
        .into_iter()
        .filter(|e| [w - 1, w].iter().any(|&i| golden.devices[&e.device][i].ts == e.ts))
        .collect();
    assert_eq!(expected.len(), 8);
    check_scores(&got, &expected, "press-line", "line-mlp", crate::support::line::score_topic);
    assert_eq!(got.len(), 8, "nothing extra");
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 4),
        "model runs and windows: {before:?} -> {after:?}"
    );
}
