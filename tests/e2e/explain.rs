//! Explanations: with `explain = "always"`, every published score carries,
//! per score, the features ranked by their occlusion delta — equal to the
//! occlusion computed independently with ONNX Runtime
//! (`models/make_explain_fixture.py`), ranking included.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon, PipelineSpec};
use crate::support::golden::Golden;
use crate::support::line::{
    copy_model, is_score, publish_interleaved, wait_online, LINE_GOLDEN, LINE_IN, LINE_OUT,
};
use crate::support::mqtt::{Publisher, Subscriber};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    features: Vec<String>,
    windows: Vec<Window>,
}

#[derive(Deserialize)]
struct Window {
    device: String,
    ts: i64,
    deltas: BTreeMap<String, Vec<f64>>,
}

const TOLERANCE: f64 = 1e-4;

/// A daemon serving `pipeline`, the golden stream published to it, and
/// every score message it publishes.
fn score_the_golden_stream(
    broker: &Broker,
    client_id: &str,
    dir: &std::path::Path,
    pipeline: PipelineSpec,
) -> Vec<crate::support::mqtt::Message> {
    let daemon = Daemon::start(&config(broker.port, client_id, dir, &[pipeline], ""));
    wait_online(broker, client_id);
    let golden = Golden::load(LINE_GOLDEN);
    let scores = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    publish_interleaved(&mut Publisher::new(broker.port), &golden);
    let got =
        scores.collect(golden.windows.len(), Duration::from_secs(30), Duration::from_millis(300), is_score);
    assert_eq!(got.len(), golden.windows.len(), "{}", daemon.log());
    got
}

#[test]
fn every_explanation_equals_onnx_runtime_occlusion() {
    let fixture: Fixture = serde_json::from_str(
        &std::fs::read_to_string(crate::support::repo_path("models/fixtures/line-mlp.explain.golden.json"))
            .unwrap(),
    )
    .unwrap();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let model = copy_model(dir.path());
    let card = std::fs::read_to_string(dir.path().join("line-mlp.toml")).unwrap();
    let card = card
        .replace("[scores.anomaly]\n", "[scores.anomaly]\nexplain = \"always\"\n")
        .replace("[scores.quality]\n", "[scores.quality]\nexplain = \"always\"\nexplain_top = 3\n");
    std::fs::write(dir.path().join("line-mlp.toml"), card).unwrap();
    let model = model.display().to_string();
    let pipeline = PipelineSpec::new("press-line", &model, LINE_IN, LINE_OUT);
    let got = score_the_golden_stream(&broker, "lg-explain", dir.path(), pipeline);
    assert_eq!(got.len(), fixture.windows.len());
    let by_window: BTreeMap<(String, i64), &Window> =
        fixture.windows.iter().map(|w| ((w.device.clone(), w.ts), w)).collect();
    for m in &got {
        let v = m.json();
        let key = (v["device"].as_str().unwrap().to_string(), v["ts"].as_i64().unwrap());
        let want = by_window.get(&key).unwrap_or_else(|| panic!("no fixture window for {key:?}"));
        for score in ["anomaly", "quality"] {
            let listed =
                v["explain"][score].as_array().unwrap_or_else(|| panic!("{score} not explained: {v}"));
            assert_eq!(listed.len(), 3, "explain_top 3: {v}");
            let deltas = &want.deltas[score];
            let mut magnitudes: Vec<f64> = deltas.iter().map(|d| d.abs()).collect();
            magnitudes.sort_by(|a, b| b.total_cmp(a));
            let mut previous = f64::INFINITY;
            for (rank, entry) in listed.iter().enumerate() {
                let feature = entry["feature"].as_str().unwrap();
                let delta = entry["delta"].as_f64().unwrap();
                let f = fixture.features.iter().position(|x| x == feature).unwrap();
                assert!(
                    (delta - deltas[f]).abs() <= TOLERANCE,
                    "{key:?} {score} {feature}: lineguard {delta}, ONNX Runtime {}",
                    deltas[f]
                );
                // Ranked by |delta|, largest first: the feature at rank r is
                // ONNX Runtime's r-th largest (ties within the tolerance).
                assert!(
                    (deltas[f].abs() - magnitudes[rank]).abs() <= 2.0 * TOLERANCE,
                    "{key:?} {score}: rank {rank} is {feature} ({}), ONNX Runtime's is {}: {v}",
                    deltas[f],
                    magnitudes[rank]
                );
                assert!(delta.abs() <= previous + 1e-12, "{key:?} {score}: not sorted: {v}");
                previous = delta.abs();
            }
        }
    }
}

/// The shipped card (`explain = "alarm"` by default): windows in warn or
/// alarm for a score carry its explanation; the healthy machine's do not.
#[test]
fn by_default_only_warn_and_alarm_windows_are_explained() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let got = score_the_golden_stream(
        &broker,
        "lg-explain-default",
        dir.path(),
        crate::support::line::line_pipeline(),
    );
    let golden = Golden::load(LINE_GOLDEN);
    assert_eq!(got.len(), golden.windows.len());
    let (mut explained, mut plain) = (0, 0);
    for m in &got {
        let v = m.json();
        let anomaly = v["scores"]["anomaly"].as_f64().unwrap();
        let quality = v["scores"]["quality"].as_f64().unwrap();
        assert_eq!(v["explain"].get("anomaly").is_some(), anomaly >= 0.6 - 1e-7, "{v}");
        assert_eq!(v["explain"].get("quality").is_some(), quality <= 0.8 + 1e-7, "{v}");
        if v.get("explain").is_some() {
            explained += 1;
        } else {
            plain += 1;
        }
    }
    assert!(explained > 0 && plain > 0, "{explained} explained, {plain} not");
}
