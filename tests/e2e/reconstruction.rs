//! Reconstruction scores: the shipped example autoencoder (`models/line-ae.onnx`,
//! `kind = "reconstruction"`) scores each window by the mean of (normalized
//! input − output)², and explains it by each feature's own mean squared
//! error. Both must equal what `models/train_line_autoencoder.py` computed
//! from ONNX Runtime's outputs; `check-model` refuses an output that is not
//! the input's shape.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon, PipelineSpec};
use crate::support::golden::{assert_close, Golden};
use crate::support::line::{is_score, publish_interleaved, wait_online, LINE_IN, LINE_OUT};
use crate::support::mqtt::{Publisher, Subscriber};
use lineguard::model::card::ModelCard;
use lineguard::model::{Model, PlanStates};
use serde::Deserialize;

const GOLDEN: &str = "models/fixtures/line-ae.golden.json";

#[derive(Deserialize)]
struct Fixture {
    features: Vec<String>,
    windows: Vec<Window>,
}

#[derive(Deserialize)]
struct Window {
    device: String,
    ts: i64,
    input: Vec<f32>,
    reconstruction: Reconstruction,
}

#[derive(Deserialize)]
struct Reconstruction {
    score: f32,
    features: Vec<f32>,
}

fn fixture() -> Fixture {
    serde_json::from_str(&std::fs::read_to_string(crate::support::repo_path(GOLDEN)).unwrap()).unwrap()
}

#[test]
fn scores_and_feature_errors_equal_onnx_runtime() {
    let fixture = fixture();
    let model = Model::load(&crate::support::repo_path("models/line-ae.onnx")).unwrap();
    assert_eq!(model.card.features, fixture.features);
    let len = model.card.input_len();
    let inputs: Vec<f32> = fixture.windows.iter().flat_map(|w| w.input.iter().copied()).collect();
    let n = fixture.windows.len();
    let (mut scores, mut errors) = (Vec::new(), Vec::new());
    model.run_detailed(&mut PlanStates::default(), &inputs, n, &mut scores, Some(&mut errors)).unwrap();
    assert_eq!((scores.len(), errors.len()), (n, n * 8));
    for (i, w) in fixture.windows.iter().enumerate() {
        let what = format!("{} ts {}", w.device, w.ts);
        assert_close(scores[i], w.reconstruction.score, &format!("{what} score"));
        for (f, want) in w.reconstruction.features.iter().enumerate() {
            assert_close(errors[i * 8 + f], *want, &format!("{what} {}", fixture.features[f]));
        }
    }
    // Alone, the same bits as in the batch.
    let mut alone = Vec::new();
    for w in inputs.chunks(len) {
        model.run(w, 1, &mut alone).unwrap();
    }
    assert_eq!(alone, scores);
    // The faults are what the autoencoder does not know: the healthy
    // machine stays below warn, every faulty one passes it.
    let warn = model.card.scores[0].warn.unwrap() as f32;
    for w in fixture.windows.iter().filter(|w| w.ts == fixture.windows.iter().map(|x| x.ts).max().unwrap()) {
        assert_eq!(
            w.reconstruction.score < warn,
            w.device == "line1/press1",
            "{} {}",
            w.device,
            w.reconstruction.score
        );
    }
}

#[test]
fn published_scores_and_explanations_equal_onnx_runtime() {
    let fixture = fixture();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("line-ae.onnx");
    std::fs::copy(crate::support::repo_path("models/line-ae.onnx"), &model).unwrap();
    let card = std::fs::read_to_string(crate::support::repo_path("models/line-ae.toml")).unwrap();
    let card =
        card.replace("[scores.novelty]\n", "[scores.novelty]\nexplain = \"always\"\nexplain_top = 8\n");
    std::fs::write(dir.path().join("line-ae.toml"), card).unwrap();
    let model = model.display().to_string();
    let pipeline = PipelineSpec::new("press-line", &model, LINE_IN, LINE_OUT);
    let daemon = Daemon::start(&config(broker.port, "lg-recon", dir.path(), &[pipeline], ""));
    wait_online(&broker, "lg-recon");
    let golden = Golden::load(GOLDEN);
    let scores = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    publish_interleaved(&mut Publisher::new(broker.port), &golden);
    let got =
        scores.collect(golden.windows.len(), Duration::from_secs(30), Duration::from_millis(300), is_score);
    assert_eq!(got.len(), fixture.windows.len(), "{}", daemon.log());
    let by_window: BTreeMap<(String, i64), &Window> =
        fixture.windows.iter().map(|w| ((w.device.clone(), w.ts), w)).collect();
    let mut states = BTreeMap::new();
    for m in &got {
        let v = m.json();
        let key = (v["device"].as_str().unwrap().to_string(), v["ts"].as_i64().unwrap());
        let want = by_window.get(&key).unwrap_or_else(|| panic!("no fixture window for {key:?}"));
        let score = v["scores"]["novelty"].as_f64().unwrap_or_else(|| panic!("no novelty score: {v}"));
        assert_close(score as f32, want.reconstruction.score, &format!("{key:?} score"));
        *states.entry(v["state"].as_str().unwrap().to_string()).or_insert(0) += 1;
        let listed = v["explain"]["novelty"].as_array().unwrap_or_else(|| panic!("not explained: {v}"));
        assert_eq!(listed.len(), 8, "explain_top 8: {v}");
        let mut ranked: Vec<(usize, f32)> =
            want.reconstruction.features.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (entry, (f, delta)) in listed.iter().zip(ranked) {
            let name = entry["feature"].as_str().unwrap();
            let got = entry["delta"].as_f64().unwrap() as f32;
            assert_close(got, delta, &format!("{key:?} {name}"));
            // Ranked alike, except where two errors are too close to order.
            if name != fixture.features[f] {
                let other = fixture.features.iter().position(|x| x == name).unwrap();
                assert!(
                    (want.reconstruction.features[other] - delta).abs() <= 2e-4 * delta.abs().max(1e-2),
                    "{key:?}: {name} listed where ONNX Runtime ranks {}: {v}",
                    fixture.features[f]
                );
            }
        }
    }
    assert!(states.len() >= 2, "the stream must reach more than one state: {states:?}");
}

#[test]
fn an_output_not_of_the_input_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let card_text = std::fs::read_to_string(crate::support::repo_path("models/line-mlp.toml"))
        .unwrap()
        .replace("[scores.anomaly]\n", "[scores.anomaly]\nkind = \"reconstruction\"\n");
    let card_path = dir.path().join("line-mlp.toml");
    std::fs::write(&card_path, &card_text).unwrap();
    let model = dir.path().join("line-mlp.onnx");
    std::fs::copy(crate::support::repo_path("models/line-mlp.onnx"), &model).unwrap();
    let card = ModelCard::parse(&card_path, &card_text).unwrap();
    let e = Model::load_with_card(&model, card).unwrap_err().to_string();
    assert!(e.contains("output `anomaly` has shape [batch, 1]; a reconstruction score needs the input's shape [batch, 128]"), "{e}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lineguard"))
        .arg("check-model")
        .arg(&model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("reconstruction score needs the input's shape"),
        "{stderr}"
    );
    // An index has no meaning for a reconstruction score.
    let indexed = card_text.replace("kind = \"reconstruction\"\n", "kind = \"reconstruction\"\nindex = 1\n");
    let indexed = indexed.replacen("index = 0\n", "", 1);
    let e = ModelCard::parse(&card_path, &indexed).unwrap_err().to_string();
    assert!(e.contains("reads the whole output"), "{e}");
}
