//! The shipped line model, its golden stream and its topics, as most tests use them.

use std::time::Duration;

use super::broker::Broker;
use super::daemon::{config, Daemon, PipelineSpec};
use super::golden::Golden;
use super::mqtt::{Message, Publisher, Subscriber};

pub const LINE_MODEL: &str = "models/line-mlp.onnx";
pub const LINE_GOLDEN: &str = "models/fixtures/line-mlp.golden.json";
pub const LINE_CARD: &str = "models/line-mlp.toml";
pub const LINE_IN: &str = "plant/{line}/{machine}/telemetry";
pub const LINE_OUT: &str = "plant/{line}/{machine}/lineguard/scores";

pub fn line_topic(device: &str) -> String {
    format!("plant/{device}/telemetry")
}

pub fn score_topic(device: &str) -> String {
    format!("plant/{device}/lineguard/scores")
}

pub fn is_score(m: &Message) -> bool {
    m.topic.ends_with("/lineguard/scores")
}

/// The `press-line` pipeline on the shipped model.
pub fn line_pipeline() -> PipelineSpec<'static> {
    PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT)
}

/// Start a daemon with a fresh state directory and wait for its retained `online`.
pub fn start_online(broker: &Broker, client_id: &str, pipelines: &[PipelineSpec], extra: &str) -> Daemon {
    start_online_with_env(broker, client_id, pipelines, extra, &[])
}

/// [`start_online`] with `LINEGUARD__...` overrides in the environment.
pub fn start_online_with_env(
    broker: &Broker,
    client_id: &str,
    pipelines: &[PipelineSpec],
    extra: &str,
    env: &[(&str, &str)],
) -> Daemon {
    let daemon = Daemon::start_with_env(
        &config(broker.port, client_id, super::daemon::own_state(), pipelines, extra),
        env,
    );
    wait_online(broker, client_id);
    daemon
}

/// Wait for the retained `online` of the daemon with `client_id`.
pub fn wait_online(broker: &Broker, client_id: &str) {
    let topic = format!("lineguard/{client_id}/status");
    Subscriber::new(broker.port, &[&topic]).wait_for(&topic, "\"online\"", Duration::from_secs(30));
}

/// The shipped model and its card, copied into `dir` (to be changed there); the model's path.
pub fn copy_model(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("line-mlp.onnx");
    std::fs::copy(super::repo_path(LINE_MODEL), &model).unwrap();
    std::fs::copy(super::repo_path(LINE_CARD), dir.join("line-mlp.toml")).unwrap();
    model
}

/// Publish a golden stream, devices interleaved sample by sample, and wait
/// until the broker has acknowledged all of it.
pub fn publish_interleaved(p: &mut Publisher, golden: &Golden) {
    publish_samples(p, &golden.interleaved());
}

/// Publish these samples of the line in order, each on its device's topic,
/// and wait until the broker has acknowledged all of them.
pub fn publish_samples(p: &mut Publisher, samples: &[(&str, &super::golden::Sample)]) {
    for (device, sample) in samples {
        p.publish(&line_topic(device), Golden::payload(sample));
    }
    p.flush(Duration::from_secs(10));
}

/// Collect the line model's scores until `expected` arrived (then 800 ms
/// more, to catch extras) and check them all against ONNX Runtime: exactly
/// the expected windows, each once, with the right values.
pub fn expect_exactly(sub: &Subscriber, expected: &[super::golden::Expected]) -> Vec<Message> {
    let got = sub.collect(expected.len(), Duration::from_secs(30), Duration::from_millis(800), is_score);
    super::golden::check_scores(&got, expected, "press-line", "line-mlp", score_topic);
    assert_eq!(got.len(), expected.len(), "nothing extra");
    got
}

/// Collect score messages until every expected window (`device`, `ts`) has
/// arrived at least once, or `timeout`; then 800 ms more for stragglers.
/// Duplicates are kept (the caller checks them).
pub fn collect_every_window(
    sub: &Subscriber,
    expected: &[super::golden::Expected],
    timeout: Duration,
) -> Vec<Message> {
    let want: std::collections::BTreeSet<(String, i64)> =
        expected.iter().map(|e| (e.device.clone(), e.ts)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    while seen.len() < want.len() && std::time::Instant::now() < deadline {
        for m in sub.collect(usize::MAX, Duration::from_millis(300), Duration::ZERO, is_score) {
            let j = m.json();
            seen.insert((j["device"].as_str().unwrap_or("").to_string(), j["ts"].as_i64().unwrap_or(0)));
            got.push(m);
        }
    }
    got.extend(sub.collect(usize::MAX, Duration::from_millis(800), Duration::ZERO, is_score));
    got
}
