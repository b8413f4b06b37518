//! tract against ONNX Runtime: every fixture window, through lineguard's own
//! windowing, normalization and batched inference, must reproduce the scores
//! ONNX Runtime computed (models/*.py wrote the fixtures).

use crate::support::golden::{assert_close, Golden};
use lineguard::model::{Model, PlanStates};
use lineguard::pipeline::window::{Pushed, Windows};

fn check(model_path: &str, fixture: &str) {
    let golden = Golden::load(fixture);
    let model =
        Model::load(&crate::support::repo_path(model_path)).unwrap_or_else(|e| panic!("{model_path}: {e}"));
    let card = &model.card;
    assert_eq!(card.features, golden.features);
    let len = card.input_len();

    // 1. lineguard's windows + normalization build exactly ORT's input.
    let mut windows = Windows::new(card.window, card.features.len(), 1).normalizing(card.normalize.clone());
    let mut inputs = Vec::new();
    let mut expected = Vec::new();
    for (device, samples) in &golden.devices {
        for s in samples {
            let row: Vec<f64> = card.features.iter().map(|f| s.values[f]).collect();
            if let Pushed::Ready { ts } = windows.push(device, Some(s.ts), 0, &row, &mut Vec::new()).unwrap()
            {
                let w = golden.window(device, ts);
                let mut buf = vec![0f32; len];
                assert!(windows.write_window(device, &mut buf));
                for (i, (a, b)) in buf.iter().zip(&w.input).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{device} ts {ts} input[{i}]: {a} vs ORT {b}"
                    );
                }
                inputs.extend_from_slice(&buf);
                expected.push(w);
            }
        }
    }
    assert_eq!(expected.len(), golden.windows.len(), "every fixture window is produced once");

    // 2. One batch of everything, and one window at a time: both match ORT.
    //    The single windows run as the pipeline runs them, on run states
    //    kept from one run to the next; the batch on fresh ones.
    let n = expected.len();
    let mut batched = Vec::new();
    model.run(&inputs, n, &mut batched).unwrap();
    let mut single = Vec::new();
    let mut states = PlanStates::default();
    for w in inputs.chunks(len) {
        model.run_with(&mut states, w, 1, &mut single).unwrap();
    }
    // The batch again, on states kept from the single runs: the same bits.
    let mut again = Vec::new();
    model.run_with(&mut states, &inputs, n, &mut again).unwrap();
    assert_eq!(again, batched, "{model_path}: reused run states change nothing");
    let k = model.score_count();
    assert_eq!(batched.len(), n * k);
    for (i, w) in expected.iter().enumerate() {
        for (j, s) in card.scores.iter().enumerate() {
            let want = w.outputs[&s.output][s.index];
            let what = format!("{model_path} {} ts {} score {}", w.device, w.ts, s.name);
            assert_close(batched[i * k + j], want, &what);
            assert_close(single[i * k + j], want, &what);
        }
    }

    // 3. A window's scores are the same bits whatever batch it runs in:
    //    alone, with all the others, and in batches of every size from 2
    //    up, at every place in them (a redelivered window republishes the
    //    same bytes).
    assert_eq!(single, batched, "{model_path}: one window alone and in the whole batch");
    let n = expected.len();
    for size in [2, 3, 5, 16, 31, 64, 100, 200, 256, 300] {
        for offset in [0, 1, size / 2] {
            let (from, to) = (offset.min(n), (offset + size).min(n));
            let mut part = Vec::new();
            model.run_with(&mut states, &inputs[from * len..to * len], to - from, &mut part).unwrap();
            assert_eq!(
                part,
                batched[from * k..to * k],
                "{model_path}: windows {from}..{to} in a batch of {}",
                to - from
            );
        }
    }
}

#[test]
fn shipped_line_mlp_matches_onnx_runtime() {
    check("models/line-mlp.onnx", "models/fixtures/line-mlp.golden.json");
}

#[test]
fn sequence_layout_softmax_and_unused_output_match_onnx_runtime() {
    check("tests/fixtures/models/seq-risk.onnx", "tests/fixtures/models/seq-risk.golden.json");
}

#[test]
fn fixed_batch_model_matches_onnx_runtime() {
    check("tests/fixtures/models/fixed1.onnx", "tests/fixtures/models/fixed1.golden.json");
}

#[test]
fn scikit_learn_export_matches_onnx_runtime() {
    check("tests/fixtures/models/sk-mlp.onnx", "tests/fixtures/models/sk-mlp.golden.json");
}

/// Run states kept for one model and handed to another (a model swap) are
/// replaced, not reused: the second model gives its own scores.
#[test]
fn run_states_follow_a_model_swap() {
    let a = Model::load(&crate::support::repo_path("models/line-mlp.onnx")).unwrap();
    let b = Model::load(&crate::support::repo_path("tests/fixtures/models/sk-mlp.onnx")).unwrap();
    let (wa, wb) = (a.spread_window(), b.spread_window());
    let (mut fresh_a, mut fresh_b) = (Vec::new(), Vec::new());
    a.run(&wa, 1, &mut fresh_a).unwrap();
    b.run(&wb, 1, &mut fresh_b).unwrap();
    let mut states = PlanStates::default();
    let (mut kept_a, mut kept_b) = (Vec::new(), Vec::new());
    a.run_with(&mut states, &wa, 1, &mut kept_a).unwrap();
    b.run_with(&mut states, &wb, 1, &mut kept_b).unwrap();
    a.run_with(&mut states, &wa, 1, &mut kept_a).unwrap();
    fresh_a.extend_from_within(..);
    assert_eq!(kept_a, fresh_a, "a's scores, before and after b ran on the states");
    assert_eq!(kept_b, fresh_b, "b's scores on states made for a");
}

/// A window's score does not depend on the batch it runs in: every window
/// of a varied stream, scored in batches of many sizes and at every place in
/// them, gives the bits it gives alone. This is what makes a redelivered
/// window publish the same bytes, and `replay` the daemon's.
#[test]
fn scores_do_not_depend_on_the_batch() {
    for path in [
        "models/line-mlp.onnx",
        "models/line-ae.onnx",
        "tests/fixtures/models/seq-risk.onnx",
        "tests/fixtures/models/sk-mlp.onnx",
        "tests/fixtures/models/fixed1.onnx",
    ] {
        let model = Model::load(&crate::support::repo_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let len = model.card.input_len();
        let n = 520;
        // Independent of the load-time probe: another generator, another range.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let input: Vec<f32> = (0..n * len)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) * 8.0 - 4.0
            })
            .collect();
        let mut alone = Vec::new();
        for w in input.chunks(len) {
            model.run(w, 1, &mut alone).unwrap();
        }
        let mut states = PlanStates::default();
        for size in (2..=34).chain([63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 300, 520]) {
            let mut batched = Vec::new();
            for chunk in input.chunks(size * len) {
                model.run_with(&mut states, chunk, chunk.len() / len, &mut batched).unwrap();
            }
            let differ = alone.iter().zip(&batched).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{path}: {differ} of {} scores differ in batches of {size}", alone.len());
        }
    }
}
