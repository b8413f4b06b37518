//! `lineguard check-model MODEL.onnx`: what a data scientist runs before
//! dropping a model on a gateway. Loads the model and its card through the
//! same checks as the daemon, prints what lineguard will feed and read, runs
//! test windows and times them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::model::card::{Direction, Layout, ScoreKind};
use crate::model::{BatchDim, ModelFiles};

/// Check the model; returns the report, or an error saying what is wrong.
pub(crate) fn check(model_path: &Path, card_path: Option<&Path>) -> anyhow::Result<String> {
    let files = match card_path {
        Some(card) => ModelFiles { onnx: model_path.to_path_buf(), card: card.to_path_buf() },
        None => ModelFiles::beside(model_path.to_path_buf()),
    };
    let model = crate::model::load(&files, None, None)?;
    let card = &model.card;
    let mut r = String::new();
    let nf = card.features.len();
    let _ = writeln!(r, "model      {}", model.path.display());
    let _ = writeln!(r, "sha256     {}", model.id.sha256);
    let _ = writeln!(r, "card       {}", card.path.display());
    let _ = writeln!(r, "name       {} (version {})", card.name, card.version);
    if let Some(d) = &card.description {
        let _ = writeln!(r, "about      {d}");
    }
    let batch = match model.batch {
        BatchDim::Free => "batch".to_string(),
        BatchDim::Fixed(b) => b.to_string(),
    };
    let (shape, layout) = match card.layout {
        Layout::Flat => {
            (format!("[{batch}, {}]", card.input_len()), "flat, time-major x[t*F + f], oldest first")
        }
        Layout::Sequence => {
            (format!("[{batch}, {}, {nf}]", card.window), "sequence [window, features], oldest first")
        }
    };
    let _ = writeln!(r, "input      `{}` f32 {shape} ({layout})", model.input_name);
    let _ = writeln!(
        r,
        "batch      {}",
        match model.batch {
            BatchDim::Free => {
                let sizes = model.batch_sizes();
                format!(
                    "free: windows ready at once run together, in runs of {} (the sizes whose kernels score a window alike, so its score never depends on the batch)",
                    sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
                )
            }
            BatchDim::Fixed(b) => format!("fixed at {b}: windows run {b} at a time"),
        }
    );
    let _ = writeln!(r, "window     {} samples x {nf} features", card.window);
    let _ = writeln!(r, "features   {}", card.features.join(", "));
    match &card.normalize {
        Some(n) => {
            let _ = writeln!(r, "normalize  z-score: (x - mean) / std");
            for (i, f) in card.features.iter().enumerate() {
                let _ = writeln!(r, "           {f:<24} mean {:<12} std {}", n.mean[i], n.std[i]);
            }
        }
        None => {
            let _ = writeln!(r, "normalize  none: raw values go to the model");
        }
    }
    // A reconstruction output has the input's shape (checked at load); the
    // others are [batch, width].
    let reconstructs =
        |n: &str| card.scores.iter().any(|s| s.kind == ScoreKind::Reconstruction && s.output == n);
    let outputs: Vec<String> = model
        .outputs
        .iter()
        .map(|(n, k)| match reconstructs(n) {
            true => format!("{n} {shape}"),
            false => format!("{n} [batch, {k}]"),
        })
        .collect();
    let _ = writeln!(r, "outputs    {}", outputs.join(", "));
    for s in &card.scores {
        let op = if s.direction == Direction::Above { ">=" } else { "<=" };
        let source = match s.kind {
            ScoreKind::Column => format!("{}[{}]", s.output, s.index),
            ScoreKind::Reconstruction => format!("mean((input - {})^2), same shape as the input", s.output),
        };
        let mut line = format!("score      {:<16} <- {source}", s.name);
        if let Some(w) = s.warn {
            let _ = write!(line, "  warn {op} {w}");
        }
        if let Some(a) = s.alarm {
            let _ = write!(line, "  alarm {op} {a}");
        }
        let _ = writeln!(r, "{line}");
    }
    if !card.unknown_keys.is_empty() {
        let _ = writeln!(r, "note       card keys not used by lineguard: {}", card.unknown_keys.join(", "));
    }

    // (Without normalization these are the raw values the model sees.)
    for t in model.self_test().context("self-test failed")? {
        let shown: Vec<String> =
            card.scores.iter().zip(&t.scores).map(|(s, v)| format!("{}={v}", s.name)).collect();
        let _ = writeln!(
            r,
            "test       {:<14} {} -> {}",
            t.label,
            shown.join(" "),
            card.state(&t.scores).as_str()
        );
    }

    let len = card.input_len();
    let spread = model.spread_window();
    // Timing: median of repeated runs, at batch 1 and at a larger batch.
    let big = match model.batch {
        BatchDim::Free => 64,
        BatchDim::Fixed(b) => b,
    };
    for n in [1usize, big] {
        let input: Vec<f32> = spread.iter().cycle().take(n * len).copied().collect();
        let mut scores = Vec::new();
        let mut times = Vec::new();
        for _ in 0..200 {
            scores.clear();
            let t = Instant::now();
            model.run(&input, n, &mut scores)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let _ = writeln!(
            r,
            "timing     batch {n:<4} {:>9.1} us per run, {:>8.2} us per window (median of {})",
            median * 1e6,
            median * 1e6 / n as f64,
            times.len()
        );
        if n == big {
            break;
        }
    }
    let _ = writeln!(r, "OK");
    Ok(r)
}
