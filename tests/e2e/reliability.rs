//! Nothing lost, nothing crashes: broker restarts, `kill -9`, hostile input,
//! device floods and bad models, each against a real mosquitto, each checking
//! that every valid window is published with ONNX Runtime's scores.

use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon, PipelineSpec};
use crate::support::golden::{card_scores, check_scores, check_scores_at_least_once, Golden};
use crate::support::line::{
    collect_every_window, expect_exactly, is_score, line_pipeline, line_topic, publish_samples, score_topic,
    start_online, LINE_CARD, LINE_GOLDEN, LINE_IN, LINE_MODEL, LINE_OUT,
};
use crate::support::mqtt::{Publisher, Subscriber};

/// The broker restarts (with its persistence) while the daemon is scoring:
/// every window is published, and a window is published twice only when it
/// was in flight at the restart (the first half's): none published after
/// the broker came back is.
#[test]
fn broker_restart_mid_stream_loses_no_window() {
    let mut broker = Broker::mosquitto().persistent().start();
    let daemon = start_online(&broker, "lg-brokerrestart", &[line_pipeline()], "");
    let sub = Subscriber::persistent(broker.port, &["plant/+/+/lineguard/scores"], "test-brokerrestart-sub");
    let golden = Golden::load(LINE_GOLDEN);
    let samples = golden.interleaved();
    let (first, second) = samples.split_at(samples.len() / 2);

    let mut p = Publisher::new(broker.port);
    publish_samples(&mut p, first);
    // Restart while the daemon is still scoring and publishing the first half.
    broker.restart();
    let status = Subscriber::new(broker.port, &["lineguard/lg-brokerrestart/status"]);
    status.wait_for("lineguard/lg-brokerrestart/status", "\"online\"", Duration::from_secs(30));
    let mut p = Publisher::new(broker.port);
    publish_samples(&mut p, second);

    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let got = collect_every_window(&sub, &expected, Duration::from_secs(30));
    let dups = check_scores_at_least_once(&got, &expected, "press-line", "line-mlp", score_topic);
    let first_half: std::collections::BTreeMap<&str, i64> = first.iter().map(|(d, s)| (*d, s.ts)).collect();
    let mut copies: std::collections::BTreeMap<(String, i64), usize> = Default::default();
    for m in &got {
        let j = m.json();
        *copies.entry((j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap())).or_default() +=
            1;
    }
    let late: Vec<_> = copies
        .iter()
        .filter(|((d, ts), n)| **n > 1 && first_half.get(d.as_str()).is_none_or(|last| ts > last))
        .collect();
    assert!(
        late.is_empty(),
        "windows published after the restart came twice: {late:?} ({dups} duplicates in all)"
    );
    drop(daemon);
}

/// `kill -9` mid-stream, started again later: every window is published,
/// and a window comes twice only when its telemetry reached the daemon
/// before the kill (scored, not yet committed: the broker delivers it
/// again); none made of telemetry published after the kill does.
#[test]
fn kill_9_mid_stream_then_restart_scores_every_window() {
    let broker = Broker::start();
    let mut daemon = start_online(&broker, "lg-kill9", &[line_pipeline()], "");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let golden = Golden::load(LINE_GOLDEN);
    let samples = golden.interleaved();
    let mut p = Publisher::new(broker.port);
    let mut before_kill: std::collections::BTreeMap<&str, i64> = Default::default();
    for (i, (device, s)) in samples.iter().enumerate() {
        p.publish(&line_topic(device), Golden::payload(s));
        std::thread::sleep(Duration::from_millis(3));
        if i <= samples.len() / 2 {
            before_kill.insert(device, s.ts);
        }
        if i == samples.len() / 2 {
            daemon.kill9();
        }
        if i == samples.len() / 2 + 20 {
            // Telemetry published while it was down waits in its persistent session.
            daemon.spawn();
        }
    }
    p.flush(Duration::from_secs(10));
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let got = collect_every_window(&sub, &expected, Duration::from_secs(30));
    let dups = check_scores_at_least_once(&got, &expected, "press-line", "line-mlp", score_topic);
    let mut copies: std::collections::BTreeMap<(String, i64), usize> = Default::default();
    for m in &got {
        let j = m.json();
        *copies.entry((j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap())).or_default() +=
            1;
    }
    let late: Vec<_> = copies
        .iter()
        .filter(|((d, ts), n)| **n > 1 && before_kill.get(d.as_str()).is_none_or(|last| ts > last))
        .collect();
    assert!(late.is_empty(), "windows of telemetry sent after the kill came twice: {late:?} ({dups} in all)");
    assert!(daemon.is_running(), "{}", daemon.log());
    assert!(daemon.log().contains("windows restored from the state store"), "{}", daemon.log());
}

#[test]
fn hostile_corpus_interleaved_with_a_valid_stream() {
    let broker = Broker::start();
    let extra =
        "[limits]\nmax_payload_bytes = 4096\nmax_samples_per_message = 50\nmax_keys_per_sample = 64\n\
                 max_json_depth = 8\ndead_letter_topic = \"lineguard/dead\"\n";
    let mut daemon = start_online(&broker, "lg-hostile", &[line_pipeline()], extra);
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let dead_sub = Subscriber::new(broker.port, &["lineguard/dead"]);
    let golden = Golden::load(LINE_GOLDEN);
    let many_keys = {
        let mut m = serde_json::Map::new();
        for i in 0..100 {
            m.insert(format!("k{i}"), serde_json::json!(i));
        }
        serde_json::json!({"values": m}).to_string()
    };
    let many_samples = serde_json::to_string(&vec![serde_json::json!({"values": {"x": 1}}); 200]).unwrap();
    let corpus: Vec<Vec<u8>> = vec![
        vec![b'['; 10_000],
        format!("{{\"values\":{{\"a\":{}1{}}}}}", "[".repeat(50), "]".repeat(50)).into_bytes(),
        vec![b'x'; 20_000],
        many_keys.into_bytes(),
        many_samples.into_bytes(),
        (0..=255u8).collect(),
        b"{\"ts\":1e400,\"values\":{}}".to_vec(),
        b"{\"ts\":-1,\"values\":{\"spindle_speed\":1}}".to_vec(),
        b"{\"values\":{\"spindle_speed\":1e308,\"feed_rate\":-1e308}}".to_vec(),
        "{\"values\":{\"\u{0}\":1,\"spindle_speed\":\"\u{feff}\"}}".as_bytes().to_vec(),
        b"null".to_vec(),
        b"{\"ts\":\"2024-02-30T00:00:00Z\",\"values\":{}}".to_vec(),
        b"{\"ts\":99999999999999999999999,\"values\":{}}".to_vec(),
        b"[{\"values\":{}},[],{},null,1,\"s\"]".to_vec(),
    ];
    let mut p = Publisher::new(broker.port);
    for (i, (device, s)) in golden.interleaved().into_iter().enumerate() {
        p.publish(&line_topic(device), corpus[i % corpus.len()].clone());
        p.publish(&line_topic(device), Golden::payload(s));
    }
    p.flush(Duration::from_secs(10));
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    expect_exactly(&sub, &expected);
    assert!(daemon.is_running());
    let dead = dead_sub
        .collect(usize::MAX, Duration::from_millis(500), Duration::ZERO, |m| m.topic == "lineguard/dead");
    let dead_reasons: std::collections::BTreeSet<String> =
        dead.iter().map(|m| m.json()["reason"].as_str().unwrap().to_string()).collect();
    let log = daemon.log();
    for reason in [
        "too_deep",
        "payload_too_large",
        "too_many_keys",
        "too_many_samples",
        "invalid_json",
        "bad_timestamp",
    ] {
        assert!(log.contains(reason), "no log line for {reason}");
        assert!(dead_reasons.contains(reason), "no dead letter for {reason}: {dead_reasons:?}");
    }
    let status = daemon.sigterm(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_flood_of_new_devices_cannot_grow_memory_without_bound() {
    let broker = Broker::start();
    let extra = "[limits]\nmax_devices_per_pipeline = 2000\n";
    let mut daemon = start_online(&broker, "lg-flood", &[line_pipeline()], extra);
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let golden = Golden::load(LINE_GOLDEN);
    // A real device reports throughout; 30 000 one-off devices flood in between.
    let mut p = Publisher::new(broker.port);
    let (real, samples) = golden.devices.iter().next().unwrap();
    let (head, tail) = samples.split_at(16);
    for s in head {
        p.publish(&line_topic(real), Golden::payload(s));
    }
    p.flush(Duration::from_secs(10));
    let flood = Golden::payload(&samples[0]);
    let mut i = 0;
    for s in tail {
        for _ in 0..1250 {
            p.publish(&format!("plant/flood{}/m{i}/telemetry", i % 7), flood.clone());
            i += 1;
        }
        p.publish(&line_topic(real), Golden::payload(s));
        p.flush(Duration::from_secs(30));
    }
    let expected: Vec<_> =
        golden.expected(&card_scores(LINE_CARD), 1).into_iter().filter(|e| &e.device == real).collect();
    let got = sub.collect(expected.len(), Duration::from_secs(60), Duration::from_millis(500), |m| {
        m.topic == score_topic(real)
    });
    check_scores(&got, &expected, "press-line", "line-mlp", score_topic);
    assert!(daemon.is_running());
    let rss_mib = crate::support::daemon::peak_rss_mib(daemon.pid());
    eprintln!("device flood: peak RSS {rss_mib} MiB");
    assert!(rss_mib < 150, "peak RSS {rss_mib} MiB with the device cap at 2000");
    assert!(daemon.log().contains("device cap reached"), "evictions are logged");
}

#[test]
fn a_bad_model_dropped_in_while_scoring_is_refused_and_a_good_one_swapped_in() {
    let broker = Broker::start();
    let models = tempfile::tempdir().unwrap();
    let model = crate::support::line::copy_model(models.path());
    let card = models.path().join("line-mlp.toml");
    let spec = PipelineSpec::new("press-line", model.to_str().unwrap(), LINE_IN, LINE_OUT);
    let mut daemon = start_online(&broker, "lg-swap", &[spec], "");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let status = Subscriber::new(broker.port, &["lineguard/lg-swap/status"]);
    let golden = Golden::load(LINE_GOLDEN);
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let samples = golden.interleaved();
    let thirds = samples.len() / 3;
    let mut p = Publisher::new(broker.port);
    let mut publish = |range: std::ops::Range<usize>| {
        publish_samples(&mut p, &samples[range]);
    };
    let wait_log = |daemon: &Daemon, needle: &str| {
        crate::support::wait_until(&format!("`{needle}` in the log"), Duration::from_secs(20), || {
            daemon.log().contains(needle)
        })
    };

    publish(0..thirds);
    // 1. Garbage in place of the model: refused, the old model keeps serving.
    std::fs::write(&model, b"not a model").unwrap();
    wait_log(&daemon, "new model refused");
    publish(thirds..2 * thirds);
    // 2. The good model back, with a card saying version 5: swapped in, windows kept.
    std::fs::copy(crate::support::repo_path(LINE_MODEL), &model).unwrap();
    let text = std::fs::read_to_string(&card).unwrap().replace("version = \"4\"", "version = \"5\"");
    std::fs::write(&card, text).unwrap();
    wait_log(&daemon, "model swapped");
    status.wait_for("lineguard/lg-swap/status", "\"model_version\":\"5\"", Duration::from_secs(10));
    publish(2 * thirds..samples.len());

    let got = sub.collect(expected.len(), Duration::from_secs(30), Duration::from_millis(800), is_score);
    // Every window is scored, by v4 before the swap and v5 after: same weights, same numbers.
    let versions: std::collections::BTreeSet<String> =
        got.iter().map(|m| m.json()["model_version"].as_str().unwrap().to_string()).collect();
    assert_eq!(versions, ["4".to_string(), "5".to_string()].into(), "both versions served");
    check_scores(&got, &expected, "press-line", "line-mlp", score_topic);
    assert_eq!(got.len(), expected.len(), "windows were kept across the swap: none missing");
    // 3. SIGHUP reloads on demand.
    crate::support::broker::signal(daemon.pid(), "HUP");
    wait_log(&daemon, "SIGHUP: reloading every model");
    assert!(daemon.is_running());
}

#[test]
fn broker_outage_is_quiet_and_sigterm_during_it_keeps_every_score() {
    let mut broker = Broker::mosquitto().persistent().start();
    let state = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_with_env(
        &config(broker.port, "lg-outage", state.path(), &[line_pipeline()], ""),
        &[("LINEGUARD__STATE__DRAIN_TIMEOUT_SECS", "1")],
    );
    Subscriber::new(broker.port, &["lineguard/lg-outage/status"]).wait_for(
        "lineguard/lg-outage/status",
        "\"online\"",
        Duration::from_secs(30),
    );
    let sub = Subscriber::persistent(broker.port, &["plant/+/+/lineguard/scores"], "test-outage-sub");
    let golden = Golden::load(LINE_GOLDEN);
    let mut p = Publisher::new(broker.port);
    publish_samples(&mut p, &golden.interleaved());
    broker.stop();

    // Down for 4 s: backoff, not a busy loop; one warning, not a flood.
    let cpu = daemon.cpu_seconds();
    std::thread::sleep(Duration::from_secs(4));
    let used = daemon.cpu_seconds() - cpu;
    assert!(used < 0.5, "{used} s of CPU in 4 s with the broker down");
    let warnings = daemon.log().matches("broker connection lost or refused").count();
    assert!((1..=2).contains(&warnings), "{warnings} connection warnings in 4 s:\n{}", daemon.log());

    // SIGTERM with the broker down: exits 0 after the drain timeout.
    let status = daemon.sigterm(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");

    // Broker and daemon back: every window arrives (outbox + redelivered telemetry).
    broker.restart();
    daemon.spawn();
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let got = collect_every_window(&sub, &expected, Duration::from_secs(30));
    check_scores_at_least_once(&got, &expected, "press-line", "line-mlp", score_topic);
}
