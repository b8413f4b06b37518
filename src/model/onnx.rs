//! A model ready to serve: the ONNX graph in tract, checked against its card.
//!
//! Loading does every check once (one f32 input of the card's shape, each
//! score's output present, f32, `[batch, k]` with the index in range), keeps a
//! free batch dimension free so all windows ready at once run as one batch,
//! and prunes the graph to the outputs the card uses. After that, `run` cannot
//! meet a shape it does not expect.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{GenericFactoid, InferenceFact, ShapeFactoid};

use crate::model::card::{CardError, Layout, ModelCard, ScoreKind};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path} is not a usable ONNX model: {message}")]
    Onnx { path: PathBuf, message: String },
    #[error(transparent)]
    Card(#[from] CardError),
    #[error("{path} does not match its card {card}: {message}")]
    Mismatch { path: PathBuf, card: PathBuf, message: String },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("{}: {message}", card.display())]
    Rollup { card: PathBuf, message: String },
    #[error(
        "input_format = \"{format}\" brings one value per message; the model card {} must set \
         `sample_period_ms` (the rate the model was trained at) so that lineguard can form its samples",
        card.display()
    )]
    NoClock { format: &'static str, card: PathBuf },
    #[error(
        "{} must read what the live model reads (features {live_features:?}, window {live_window}, \
         the same sampling clock); its card says features {features:?}, window {window}",
        card.display()
    )]
    OtherInput {
        card: PathBuf,
        live_features: Vec<String>,
        live_window: usize,
        features: Vec<String>,
        window: usize,
    },
}

/// How many windows one run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchDim {
    /// Symbolic batch: any number of windows in one run.
    Free,
    /// The graph fixes the batch: runs are padded to exactly this many.
    Fixed(usize),
}

/// Where a score is read from: output number and column.
#[derive(Debug, Clone, Copy)]
struct ScoreSource {
    output: usize,
    column: usize,
    /// An autoencoder's output: the score is its error against the input.
    reconstruction: bool,
}

type Plan = TypedRunnableModel;
type RunState = TypedSimpleState;

/// tract run states kept between runs of a model, one per plan (batch
/// size), made on first use. Owned by the thread that runs the model: the
/// scratch a state uses lives in that thread's storage and is freed when the
/// state is dropped there.
#[derive(Default)]
pub struct PlanStates(Vec<Option<RunState>>);

impl PlanStates {
    /// The state for plan number `slot`, made anew unless the one there was
    /// made for this very plan (after a model swap it was not).
    fn for_plan(&mut self, slot: usize, plan: &Arc<Plan>) -> Result<&mut RunState, ModelError> {
        if self.0.len() <= slot {
            self.0.resize_with(slot + 1, || None);
        }
        let entry = &mut self.0[slot];
        if !entry.as_ref().is_some_and(|s| Arc::ptr_eq(s.plan(), plan)) {
            *entry = Some(plan.spawn().map_err(|e| ModelError::Run(format!("{e:#}")))?);
        }
        Ok(entry.as_mut().expect("just set"))
    }
}

impl std::fmt::Debug for PlanStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlanStates({} made)", self.0.iter().flatten().count())
    }
}

/// Which model this is: what the status topic, `/metrics` and every score
/// payload name it by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelId {
    /// The card's `name`.
    #[serde(rename = "model")]
    pub name: String,
    /// The card's `version`.
    #[serde(rename = "model_version")]
    pub version: String,
    /// Of the ONNX file's bytes, hex.
    pub sha256: String,
}

impl crate::ops::events::model::Identity for ModelId {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl std::fmt::Display for ModelId {
    /// `line-mlp v3`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

/// A loaded, checked model.
pub struct Model {
    pub path: PathBuf,
    pub card: ModelCard,
    pub id: ModelId,
    pub input_name: String,
    pub batch: BatchDim,
    /// Output names (card order of first use) and widths.
    pub outputs: Vec<(String, usize)>,
    sources: Vec<ScoreSource>,
    /// Plans by batch size, ascending. With a free batch dimension: powers
    /// of two up to `MAX_BUCKET`, each optimized for its concrete size
    /// (tract picks far better kernels for a known batch than for a symbol),
    /// but only those that compute a window bit for bit alike (see
    /// [`alike`]); with a fixed one: just that size.
    plans: Vec<(usize, Arc<Plan>)>,
}

/// Largest batch run at once; bigger batches run in chunks of this size.
const MAX_BUCKET: usize = 256;

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.path).field("card", &self.card.name).finish()
    }
}

fn dim_text(d: &GenericFactoid<TDim>) -> String {
    match d {
        GenericFactoid::Only(t) => t.to_string(),
        GenericFactoid::Any => "?".into(),
    }
}

/// A typed shape as `[batch, 128]`.
fn dims_text(dims: &[TDim]) -> String {
    format!("[{}]", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

impl Model {
    /// Load `path` and the card beside it.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let card = ModelCard::load(&ModelCard::path_for(path))?;
        Self::load_with_card(path, card)
    }

    pub fn load_with_card(path: &Path, card: ModelCard) -> Result<Self, ModelError> {
        let bytes =
            std::fs::read(path).map_err(|error| ModelError::Read { path: path.to_path_buf(), error })?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        let onnx_err =
            |e: TractError| ModelError::Onnx { path: path.to_path_buf(), message: format!("{e:#}") };
        let mismatch = |message: String| ModelError::Mismatch {
            path: path.to_path_buf(),
            card: card.path.clone(),
            message,
        };

        let mut model = tract_onnx::onnx().model_for_read(&mut bytes.as_slice()).map_err(onnx_err)?;
        let inputs = model.input_outlets().map_err(onnx_err)?.to_vec();
        if inputs.len() != 1 {
            let names: Vec<String> = inputs.iter().map(|o| model.node(o.node).name.clone()).collect();
            return Err(mismatch(format!(
                "lineguard feeds one input tensor, the graph has {} ({})",
                names.len(),
                names.join(", ")
            )));
        }
        let input_name = model.node(inputs[0].node).name.clone();
        let declared = model.input_fact(0).map_err(onnx_err)?.clone();
        if let GenericFactoid::Only(dt) = declared.datum_type {
            if dt != f32::datum_type() {
                return Err(mismatch(format!("input `{input_name}` is {dt:?}; lineguard feeds f32")));
            }
        }

        let nf = card.features.len();
        let expected = card.layout_shape();
        let layout_text = match card.layout {
            Layout::Flat => format!(
                "layout \"flat\" needs [batch, {}] (window {} x {nf} features)",
                card.input_len(),
                card.window
            ),
            Layout::Sequence => format!("layout \"sequence\" needs [batch, {}, {nf}]", card.window),
        };
        let declared_dims: Vec<GenericFactoid<TDim>> = declared.shape.dims().cloned().collect();
        let shape_text = format!("[{}]", declared_dims.iter().map(dim_text).collect::<Vec<_>>().join(", "));
        let rank_known = !declared.shape.is_open();
        if rank_known && declared_dims.len() != expected.len() + 1 {
            return Err(mismatch(format!("input `{input_name}` has shape {shape_text}; {layout_text}")));
        }
        for (i, want) in expected.iter().enumerate() {
            if let Some(GenericFactoid::Only(TDim::Val(have))) = declared_dims.get(i + 1) {
                if *have != *want as i64 {
                    return Err(mismatch(format!(
                        "input `{input_name}` has shape {shape_text}; {layout_text}"
                    )));
                }
            }
        }
        let batch_dim = match declared_dims.first() {
            Some(GenericFactoid::Only(TDim::Val(b))) if *b >= 1 => TDim::Val(*b),
            Some(GenericFactoid::Only(TDim::Val(b))) => {
                return Err(mismatch(format!("input `{input_name}` has batch dimension {b}")))
            }
            Some(GenericFactoid::Only(d)) => d.clone(),
            _ => model.sym("batch").into(),
        };
        let batch = match batch_dim {
            TDim::Val(b) => BatchDim::Fixed(b as usize),
            _ => BatchDim::Free,
        };
        let mut dims: TVec<GenericFactoid<TDim>> = tvec![GenericFactoid::Only(batch_dim.clone())];
        dims.extend(expected.iter().map(|&d| GenericFactoid::Only(TDim::Val(d as i64))));
        model
            .set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), ShapeFactoid::closed(dims)))
            .map_err(onnx_err)?;

        // Only the outputs the card reads, so unused heads are pruned away.
        let mut outputs: Vec<String> = Vec::new();
        for s in &card.scores {
            if !outputs.contains(&s.output) {
                outputs.push(s.output.clone());
            }
        }
        let available: Vec<String> = model
            .output_outlets()
            .map_err(onnx_err)?
            .iter()
            .map(|&o| {
                model.outlet_label(o).map(str::to_string).unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        for s in &card.scores {
            if !available.contains(&s.output) {
                return Err(mismatch(format!(
                    "score `{}` reads output `{}`, which the graph does not have (outputs: {})",
                    s.name,
                    s.output,
                    available.join(", ")
                )));
            }
        }
        model.select_outputs_by_name(&outputs).map_err(onnx_err)?;
        let typed = model.into_typed().map_err(onnx_err)?;

        let mut widths = Vec::with_capacity(outputs.len());
        for (i, name) in outputs.iter().enumerate() {
            let fact = typed.output_fact(i).map_err(onnx_err)?;
            if fact.datum_type != f32::datum_type() {
                return Err(mismatch(format!(
                    "output `{name}` is {:?}; scores are read as f32",
                    fact.datum_type
                )));
            }
            let dims: Vec<TDim> = fact.shape.iter().cloned().collect();
            let text = dims_text(&dims);
            let reconstructed =
                card.scores.iter().any(|s| s.output == *name && s.kind == ScoreKind::Reconstruction);
            if reconstructed {
                let mut want = vec![batch_dim.clone()];
                want.extend(expected.iter().map(|&d| TDim::Val(d as i64)));
                if dims != want {
                    let want_text = dims_text(&want);
                    return Err(mismatch(format!(
                        "output `{name}` has shape {text}; a reconstruction score needs the input's shape {want_text}"
                    )));
                }
                widths.push(card.input_len());
                continue;
            }
            let width = match dims.as_slice() {
                [b, k] if *b == batch_dim => k.to_i64().ok().map(|k| k as usize),
                [b] if *b == batch_dim => Some(1),
                _ => None,
            };
            let width = width.ok_or_else(|| {
                mismatch(format!("output `{name}` has shape {text}; a score output must be [batch, k]"))
            })?;
            widths.push(width);
        }
        let mut sources = Vec::with_capacity(card.scores.len());
        for s in &card.scores {
            let output = outputs.iter().position(|o| *o == s.output).expect("checked above");
            if s.index >= widths[output] {
                return Err(mismatch(format!(
                    "score `{}` reads column {} of output `{}`, which has {} column(s)",
                    s.name, s.index, s.output, widths[output]
                )));
            }
            sources.push(ScoreSource {
                output,
                column: s.index,
                reconstruction: s.kind == ScoreKind::Reconstruction,
            });
        }
        let plans = match (&batch, &batch_dim) {
            (BatchDim::Fixed(b), _) => {
                vec![(*b, typed.into_optimized().map_err(onnx_err)?.into_runnable().map_err(onnx_err)?)]
            }
            (BatchDim::Free, TDim::Sym(sym)) => {
                let mut plans = Vec::new();
                let mut size = 1;
                while size <= MAX_BUCKET {
                    let fixed = std::collections::HashMap::from([(sym.clone(), TDim::Val(size as i64))]);
                    let plan = typed
                        .set_symbols(&fixed)
                        .and_then(|m| m.into_optimized())
                        .and_then(|m| m.into_runnable())
                        .map_err(onnx_err)?;
                    plans.push((size, plan));
                    size *= 2;
                }
                alike(plans, card.input_len(), &card.layout_shape())
                    .map_err(|e| ModelError::Run(format!("{e:#}")))?
            }
            (BatchDim::Free, other) => {
                return Err(mismatch(format!(
                    "input `{input_name}` has batch dimension `{other}`, not a plain symbol"
                )))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            id: ModelId { name: card.name.clone(), version: card.version.clone(), sha256 },
            card,
            input_name,
            batch,
            outputs: outputs.into_iter().zip(widths).collect(),
            sources,
            plans,
        })
    }

    /// The batch sizes runs are made of.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.plans.iter().map(|(s, _)| *s).collect()
    }

    /// Number of scores per window.
    pub fn score_count(&self) -> usize {
        self.sources.len()
    }

    /// Run `n` windows (`input`: `n * card.input_len()` normalized values) and
    /// append `n * score_count()` scores, window by window in card order.
    ///
    /// Windows go in chunks of at most the largest plan's batch; a chunk that
    /// fits no plan exactly is padded with copies of its last window up to the
    /// next plan size (at most twice its size), and the padding's scores
    /// are dropped.
    pub fn run(&self, input: &[f32], n: usize, scores: &mut Vec<f32>) -> Result<(), ModelError> {
        self.run_with(&mut PlanStates::default(), input, n, scores)
    }

    /// [`Model::run`], keeping tract's run states in `states` for the next
    /// run: a state owns its matrix-multiply scratch, so a fresh one per run
    /// allocates and frees it every batch (BENCHMARKS.md: what it cost). A
    /// state made for another model's plan is replaced, never reused.
    pub fn run_with(
        &self,
        states: &mut PlanStates,
        input: &[f32],
        n: usize,
        scores: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.run_detailed(states, input, n, scores, None)
    }

    /// [`Model::run_with`], and for every reconstruction score of every
    /// window (in that order) appends to `errors` each feature's mean
    /// squared error over the window: F values, card order.
    pub fn run_detailed(
        &self,
        states: &mut PlanStates,
        input: &[f32],
        n: usize,
        scores: &mut Vec<f32>,
        mut errors: Option<&mut Vec<f32>>,
    ) -> Result<(), ModelError> {
        let len = self.card.input_len();
        assert_eq!(input.len(), n * len, "caller builds whole windows");
        let largest = self.plans.last().expect("at least one plan").0;
        let mut padded = Vec::new();
        for chunk in input.chunks(largest * len) {
            let rows = chunk.len() / len;
            let (slot, (size, plan)) =
                self.plans.iter().enumerate().find(|(_, (size, _))| *size >= rows).expect("largest fits");
            let full = if rows == *size {
                chunk
            } else {
                padded.clear();
                padded.extend_from_slice(chunk);
                for _ in rows..*size {
                    padded.extend_from_slice(&chunk[chunk.len() - len..]);
                }
                &padded
            };
            let state = states.for_plan(slot, plan)?;
            self.run_chunk(state, full, *size, rows, scores, errors.as_deref_mut())?;
        }
        Ok(())
    }

    fn run_chunk(
        &self,
        state: &mut RunState,
        input: &[f32],
        batch: usize,
        keep: usize,
        scores: &mut Vec<f32>,
        mut errors: Option<&mut Vec<f32>>,
    ) -> Result<(), ModelError> {
        let mut shape = vec![batch];
        shape.extend(self.card.layout_shape());
        let tensor = Tensor::from_shape(&shape, input).map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let outputs =
            state.run(tvec![tensor.into_tvalue()]).map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let views = outputs
            .iter()
            .map(|o| o.to_plain_array_view::<f32>())
            .collect::<TractResult<Vec<_>>>()
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        for row in 0..keep {
            for s in &self.sources {
                let width = self.outputs[s.output].1;
                let flat = views[s.output]
                    .as_slice()
                    .ok_or_else(|| ModelError::Run("output not contiguous".into()))?;
                if s.reconstruction {
                    let x = &input[row * width..(row + 1) * width];
                    let y = &flat[row * width..(row + 1) * width];
                    scores.push(self.reconstruction_error(x, y, errors.as_deref_mut()));
                } else {
                    scores.push(flat[row * width + s.column]);
                }
            }
        }
        Ok(())
    }
}

impl Model {
    /// Mean of (x − y)² over a window, summed feature by feature in a fixed
    /// order (so the score's bits never depend on the batch), in f64; each
    /// feature's own mean goes to `errors`.
    fn reconstruction_error(&self, x: &[f32], y: &[f32], mut errors: Option<&mut Vec<f32>>) -> f32 {
        let (f, w) = (self.card.features.len(), self.card.window);
        let mut total = 0f64;
        for feature in 0..f {
            let mut sum = 0f64;
            for t in 0..w {
                let d = f64::from(x[t * f + feature]) - f64::from(y[t * f + feature]);
                sum += d * d;
            }
            total += sum;
            if let Some(errors) = errors.as_deref_mut() {
                errors.push((sum / w as f64) as f32);
            }
        }
        (total / x.len() as f64) as f32
    }
}

/// The plans that give every window the same bits whatever batch it runs
/// in, so that a window's score never depends on which others shared its
/// run (a redelivered window must publish the same bytes, and a replay the
/// daemon's). tract picks its kernels by batch size, and kernels sum in
/// different orders, so batch sizes can differ in a score's last bits.
///
/// The reference is each window scored alone, as `run` scores a lone window
/// (batch 2, padded with a copy of itself). At load every plan runs a
/// varied probe batch, and every row of every output must equal that row's
/// reference bit for bit: batch 2 is always kept, batch 1 only if it agrees,
/// and the larger sizes up to the first that disagrees. Comparing every row
/// (not a few) is what makes the promise hold: a kernel that sums in
/// another order differs in a third or so of its rows, so a few rows that
/// agree by chance prove nothing. `check-model` prints the sizes kept.
fn alike(
    plans: Vec<(usize, Arc<Plan>)>,
    len: usize,
    shape: &[usize],
) -> TractResult<Vec<(usize, Arc<Plan>)>> {
    let largest = plans.last().map_or(1, |(s, _)| *s);
    // Values with every mantissa bit in use, about ±3 (a normalized window's
    // range): round numbers can sum alike in kernels that differ.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let probe: Vec<f32> = (0..largest * len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
        })
        .collect();
    let run = |plan: &Arc<Plan>, input: &[f32], size: usize| -> TractResult<Vec<Vec<f32>>> {
        let mut dims = vec![size];
        dims.extend_from_slice(shape);
        let out = plan.run(tvec![Tensor::from_shape(&dims, input)?.into_tvalue()])?;
        out.iter().map(|o| Ok(o.to_plain_array_view::<f32>()?.iter().copied().collect())).collect()
    };
    let Some(base) = plans.iter().position(|(s, _)| *s == 2) else { return Ok(plans) };
    // Each probe row alone: per output, its values (the output's width).
    let mut reference: Vec<Vec<f32>> = Vec::new();
    let mut pair = Vec::with_capacity(2 * len);
    for row in probe.chunks(len) {
        pair.clear();
        pair.extend_from_slice(row);
        pair.extend_from_slice(row);
        let out = run(&plans[base].1, &pair, 2)?;
        if reference.is_empty() {
            reference = vec![Vec::new(); out.len()];
        }
        for (r, o) in reference.iter_mut().zip(&out) {
            r.extend_from_slice(&o[..o.len() / 2]);
        }
    }
    let agrees = |size: usize, plan: &Arc<Plan>| -> TractResult<bool> {
        let out = run(plan, &probe[..size * len], size)?;
        Ok(out.iter().zip(&reference).all(|(o, r)| o[..] == r[..o.len()]))
    };
    // A batch-2 plan whose two rows differ from each other's lone score
    // depends on a row's place: then every window runs alone, at batch 1.
    if !agrees(2, &plans[base].1)? {
        return Ok(plans.into_iter().take(1).collect());
    }
    let mut keep = Vec::new();
    if base > 0 && agrees(plans[0].0, &plans[0].1)? {
        keep.push(0);
    }
    keep.push(base);
    for (i, (size, plan)) in plans.iter().enumerate().skip(base + 1) {
        if !agrees(*size, plan)? {
            break;
        }
        keep.push(i);
    }
    Ok(plans.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, p)| p).collect())
}

/// A test window and the scores the model gave it.
#[derive(Debug, Clone)]
pub struct SelfTest {
    pub label: &'static str,
    pub scores: Vec<f32>,
}

impl Model {
    /// Run two test windows — every feature at the card's mean (all zeros once
    /// normalized) and a deterministic spread of about ±2 — and require finite
    /// scores. A model that fails this is never put in service.
    pub fn self_test(&self) -> Result<Vec<SelfTest>, ModelError> {
        let len = self.card.input_len();
        let center = vec![0f32; len];
        let spread = self.spread_window();
        let mut out = Vec::new();
        for (label, w) in [("mean window", &center), ("spread window", &spread)] {
            let mut scores = Vec::new();
            self.run(w, 1, &mut scores)?;
            if let Some(i) = scores.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::Run(format!(
                    "test inference on the {label} gives {} = {}: the model must give finite scores",
                    self.card.scores[i].name, scores[i]
                )));
            }
            out.push(SelfTest { label, scores });
        }
        Ok(out)
    }

    /// A fixed, varied test window (values between -2 and 2).
    pub fn spread_window(&self) -> Vec<f32> {
        (0..self.card.input_len()).map(|i| (((i * 7919) % 41) as f32 / 10.0) - 2.0).collect()
    }
}
