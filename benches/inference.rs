//! tract vs ONNX Runtime on the shipped model, same windows, one core each.
//!
//!     cargo bench --bench inference
//!
//! Prints microseconds per window at batch 1, 16, 32, 64, 128 and 256 for
//! both, and the ratio tract / ONNX Runtime (below 1: tract is faster). It
//! also prints the batch sizes the model kept plans for: a batch larger than
//! the largest runs as chunks of that size, which is why the ratio grows with
//! the batch above it. Last, the cost of explaining every window of a
//! batch of 32 (`explain = "always"`: the occluded copies in the batch's run)
//! against scoring it alone; the goal is about F + 1 = 9 windows' worth.
//! ONNX Runtime runs in
//! Python (`pip install -r models/requirements.txt`); without it the
//! benchmark fails and says so.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lineguard::model::{Model, PlanStates};
use rand::{Rng, SeedableRng};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model_path = root.join("models/line-mlp.onnx");
    let model = Model::load(&model_path).expect("shipped model");
    let len = model.card.input_len();
    let n = 256 * 4;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let inputs: Vec<f32> = (0..n * len).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let input_file = dir.join("inference-inputs.f32");
    std::fs::write(&input_file, inputs.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();

    let mut tract = Vec::new();
    for batch in [1usize, 16, 32, 64, 128, 256] {
        let mut scores = Vec::with_capacity(batch * 2);
        // As the pipeline runs it: tract's run states kept between runs.
        let mut states = PlanStates::default();
        let chunks: Vec<&[f32]> = inputs.chunks(batch * len).collect();
        for c in chunks.iter().take(20) {
            scores.clear();
            model.run_with(&mut states, c, batch, &mut scores).unwrap();
        }
        let mut samples = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            for c in &chunks {
                scores.clear();
                let t = Instant::now();
                model.run_with(&mut states, c, batch, &mut scores).unwrap();
                samples.push(t.elapsed().as_secs_f64() / batch as f64);
            }
        }
        samples.sort_by(f64::total_cmp);
        tract.push((batch, samples[samples.len() / 2] * 1e6));
    }

    let out = Command::new("python3")
        .arg(root.join("bench/ort_bench.py"))
        .arg(&model_path)
        .arg(&input_file)
        .arg(len.to_string())
        .output()
        .expect("python3 is needed to time ONNX Runtime");
    assert!(
        out.status.success(),
        "ONNX Runtime benchmark failed (pip install -r models/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ort: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ort_bench.py prints JSON");

    println!("inference, shipped model line-mlp (128 -> 64 -> 32 -> 2), one thread each");
    println!("tract plans kept for batch sizes {:?}", model.batch_sizes());
    println!(
        "{:<8} {:>16} {:>20} {:>14}",
        "batch", "tract us/window", "onnxruntime us/window", "tract / ORT"
    );
    for (batch, t) in tract {
        let o = ort[batch.to_string()].as_f64().unwrap();
        println!("{batch:<8} {t:>16.3} {o:>20.3} {:>14.2}", t / o);
    }
    let (plain, checked, explained) = explained_vs_plain(&model, &inputs);
    println!(
        "explained window (batch 32, explain = always, {} features): {explained:.3} us vs {plain:.3} us scored alone: {:.2} windows' worth",
        model.card.features.len(),
        explained / plain
    );
    println!(
        "unexplained window (batch 32, scored and checked for explaining): {checked:.3} us vs {plain:.3} us: {:.3}",
        checked / plain
    );
}

/// Median us per window of scoring a batch of 32; of scoring it and
/// checking which windows to explain (the worker's check: what an
/// unexplained window costs beyond its run);
/// and of scoring and explaining every window of it.
fn explained_vs_plain(model: &Model, inputs: &[f32]) -> (f64, f64, f64) {
    use lineguard::pipeline::explain::Explainer;
    let len = model.card.input_len();
    let batch = 32;
    let rows: Vec<usize> = (0..batch).collect();
    let chunks: Vec<&[f32]> = inputs.chunks(batch * len).collect();
    let mut states = PlanStates::default();
    let mut explainer = Explainer::default();
    let mut scores = Vec::new();
    let mut together = Vec::new();
    #[derive(PartialEq)]
    enum Mode {
        Plain,
        Checked,
        Explained,
    }
    let mut time = |mode: Mode| -> f64 {
        let mut samples = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            for c in &chunks {
                scores.clear();
                let t = Instant::now();
                if mode == Mode::Explained {
                    // As the worker does: the copies appended, one run for all.
                    together.clear();
                    together.extend_from_slice(c);
                    Explainer::append_all(&mut together, batch, model.card.window, &model.card.baseline);
                    let f = model.card.features.len();
                    model.run_with(&mut states, &together, batch * (f + 1), &mut scores).unwrap();
                    let k = model.score_count();
                    explainer.scored(&scores[batch * k..], f, k);
                    scores.truncate(batch * k);
                } else {
                    model.run_with(&mut states, c, batch, &mut scores).unwrap();
                }
                if mode == Mode::Checked {
                    let k = model.score_count();
                    let explained = (0..batch).filter(|&i| {
                        let values = &scores[i * k..(i + 1) * k];
                        values.iter().all(|v| v.is_finite())
                            && model
                                .card
                                .scores
                                .iter()
                                .zip(values)
                                .any(|(s, v)| lineguard::pipeline::explain::occludes(s, *v))
                    });
                    std::hint::black_box(explained.count());
                }
                if mode == Mode::Explained {
                    let k = model.score_count();
                    for (j, &i) in rows.iter().enumerate() {
                        let e = explainer.explain(
                            j,
                            &scores[i * k..(i + 1) * k],
                            &model.card.scores,
                            &model.card.features,
                        );
                        std::hint::black_box(e);
                    }
                }
                samples.push(t.elapsed().as_secs_f64() / batch as f64);
            }
        }
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2] * 1e6
    };
    let plain = time(Mode::Plain);
    let checked = time(Mode::Checked);
    let explained = time(Mode::Explained);
    (plain, checked, explained)
}
