//! The model card: how to build a model's input and how to read its output.
//!
//! A card sits beside the model as `MODEL.toml`. It is parsed and checked on
//! its own here (lengths, thresholds, names); [`Model`](crate::model::Model) then checks it against
//! the ONNX graph, so the hot path never asks whether shapes agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(
        "cannot read model card {path}: {error} (a model needs its card beside it: for `x.onnx`, `x.toml`)"
    )]
    Read { path: PathBuf, error: std::io::Error },
    #[error("model card {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("model card {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How a window is laid out in the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[batch, window * features]`, time-major (`x[t * F + f]`), oldest first.
    #[default]
    Flat,
    /// `[batch, window, features]`.
    Sequence,
}

/// Which windows a score explains (see [`pipeline::explain`](crate::pipeline::explain)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Explain {
    /// Windows in warn or alarm for this score (the default).
    #[default]
    Alarm,
    Always,
    Never,
}

/// What a score is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// Column `index` of output `output`, `[batch, k]` (the default).
    #[default]
    Column,
    /// An autoencoder's error: output `output` has the input's shape, and
    /// the score is the mean of (normalized input − output)² over the window.
    Reconstruction,
}

/// Which side of a threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Higher is worse (anomaly scores): `score >= threshold` trips.
    #[default]
    Above,
    /// Lower is worse (quality): `score <= threshold` trips.
    Below,
}

/// Score state, ordered from best to worst.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum State {
    Ok,
    Warn,
    Alarm,
}

impl State {
    /// As payloads and metrics write it: `ok`, `warn`, `alarm`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum VersionText {
    Text(String),
    Int(i64),
    Float(f64),
}

#[derive(Debug, Deserialize)]
struct CardFile {
    name: String,
    version: VersionText,
    #[serde(default)]
    description: Option<String>,
    features: Vec<String>,
    window: i64,
    #[serde(default)]
    layout: Layout,
    #[serde(default)]
    normalize: Option<NormalizeFile>,
    #[serde(default)]
    max_gap_ms: Option<i64>,
    #[serde(default)]
    sample_period_ms: Option<i64>,
    #[serde(default)]
    stale_after_ms: Option<i64>,
    #[serde(default)]
    range: Option<RangeFile>,
    /// What an occluded feature is replaced by (raw units, one per feature).
    #[serde(default)]
    baseline: Option<Vec<f64>>,
    scores: BTreeMap<String, ScoreFile>,
    /// Anything else at the top level: reported, not fatal, so a card can carry
    /// its own metadata (`author`, `trained_on`, ...).
    #[serde(flatten)]
    extra: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NormalizeFile {
    mean: Vec<f64>,
    std: Vec<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeFile {
    min: Vec<f64>,
    max: Vec<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreFile {
    #[serde(default)]
    kind: ScoreKind,
    output: Option<String>,
    #[serde(default)]
    index: i64,
    warn: Option<f64>,
    alarm: Option<f64>,
    #[serde(default)]
    direction: Direction,
    /// Hysteresis: an alarm clears only once the score is back past this level.
    clear: Option<f64>,
    /// Consecutive windows a change must hold before the alarm state follows it.
    #[serde(default = "one")]
    debounce: i64,
    #[serde(default)]
    explain: Explain,
    #[serde(default = "three")]
    explain_top: i64,
    /// Fit the trend over this much data time (seconds); absent or 0: no forecast.
    #[serde(default)]
    forecast_secs: i64,
    /// A threshold crossing further ahead than this is no forecast.
    #[serde(default = "one_day")]
    forecast_horizon_secs: i64,
}

fn one_day() -> i64 {
    86_400
}

fn three() -> i64 {
    3
}

fn one() -> i64 {
    1
}

/// One published score: a column of a named model output.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSpec {
    pub name: String,
    pub kind: ScoreKind,
    pub output: String,
    pub index: usize,
    pub warn: Option<f64>,
    pub alarm: Option<f64>,
    pub direction: Direction,
    /// Hysteresis level for alarm states (see [`pipeline::alarm`](crate::pipeline::alarm)).
    pub clear: Option<f64>,
    /// Windows a change must hold before the alarm state follows (>= 1).
    pub debounce: u32,
    /// Which windows carry an explanation of this score.
    pub explain: Explain,
    /// Features an explanation lists (>= 1).
    pub explain_top: usize,
    /// When this score will reach warn and alarm (see [`pipeline::forecast`](crate::pipeline::forecast)).
    pub forecast: Option<ForecastSpec>,
}

impl ScoreSpec {
    /// The state this score alone puts a window in.
    ///
    /// Compared in f32, the precision of the score itself: a score published
    /// as `0.6` trips a threshold of `0.6`.
    pub fn state(&self, value: f32) -> State {
        let trips = |t: Option<f64>| match (t.map(|t| t as f32), self.direction) {
            (Some(t), Direction::Above) => value >= t,
            (Some(t), Direction::Below) => value <= t,
            (None, _) => false,
        };
        if trips(self.alarm) {
            State::Alarm
        } else if trips(self.warn) {
            State::Warn
        } else {
            State::Ok
        }
    }
}

/// A score's forecast (`forecast_secs`, `forecast_horizon_secs`): see
/// [`pipeline::forecast`](crate::pipeline::forecast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForecastSpec {
    pub secs: u64,
    pub horizon_secs: u64,
}

/// z-score constants, one per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// A parsed, self-consistent model card.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub features: Vec<String>,
    pub window: usize,
    pub layout: Layout,
    pub normalize: Option<Normalize>,
    /// A sample more than this after its device's previous one starts the
    /// window again, so that no window spans a machine stop.
    pub max_gap_ms: Option<i64>,
    /// The rate the model was trained at: lineguard forms each device's
    /// samples itself on this grid (see [`pipeline::grid`](crate::pipeline::grid)).
    pub clock: Option<SampleClock>,
    /// Each feature's valid range in raw units, `[range] min = [...] max =
    /// [...]`: values outside are counted (and still scored).
    pub range: Option<FeatureRange>,
    /// For explanations: each feature's value when occluded, in the model's
    /// units (the card's `baseline`, normalized; else the normalization's
    /// mean, 0; else 0).
    pub baseline: Vec<f32>,
    /// In card order (sorted by name).
    pub scores: Vec<ScoreSpec>,
    /// Top-level keys the card carries that lineguard does not use.
    pub unknown_keys: Vec<String>,
}

/// The raw values each feature was trained on, one min and max per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRange {
    pub min: Vec<f64>,
    pub max: Vec<f64>,
}

/// A card's sampling clock: samples at `t_k = k * period_ms` (epoch
/// aligned), each feature's newest value at or before `t_k`, if it is newer
/// than `t_k - stale_after_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleClock {
    pub period_ms: i64,
    pub stale_after_ms: i64,
}

/// Largest input a card may ask for (window x features): far beyond any MLP
/// that fits a gateway, small enough that a typo cannot exhaust memory.
const MAX_INPUT: usize = 1 << 20;

impl ModelCard {
    /// The card path for a model: `line-mlp.onnx` -> `line-mlp.toml`.
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_extension("toml")
    }

    pub fn load(path: &Path) -> Result<Self, CardError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| CardError::Read { path: path.to_path_buf(), error })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, CardError> {
        let file: CardFile = toml::from_str(text)
            .map_err(|e| CardError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let invalid = |message: String| CardError::Invalid { path: path.to_path_buf(), message };

        if file.name.trim().is_empty() {
            return Err(invalid("`name` is empty".into()));
        }
        let version = match file.version {
            VersionText::Text(s) => s,
            VersionText::Int(i) => i.to_string(),
            VersionText::Float(f) => f.to_string(),
        };
        if file.features.is_empty() {
            return Err(invalid("`features` is empty: list the input features in model order".into()));
        }
        for (i, f) in file.features.iter().enumerate() {
            if f.is_empty() {
                return Err(invalid(format!("features[{i}] is an empty name")));
            }
            if file.features[..i].contains(f) {
                return Err(invalid(format!("feature `{f}` is listed twice")));
            }
        }
        let window = usize::try_from(file.window)
            .ok()
            .filter(|&w| w >= 1)
            .ok_or_else(|| invalid(format!("`window` = {} must be at least 1", file.window)))?;
        let input = window.saturating_mul(file.features.len());
        if input > MAX_INPUT {
            return Err(invalid(format!(
                "window x features = {input} values per window; more than {MAX_INPUT} is not an MLP for a gateway"
            )));
        }
        let normalize = file
            .normalize
            .map(|n| {
                let nf = file.features.len();
                if n.mean.len() != nf || n.std.len() != nf {
                    return Err(invalid(format!(
                        "[normalize] needs one mean and one std per feature: {nf} features, {} means, {} stds",
                        n.mean.len(),
                        n.std.len()
                    )));
                }
                if let Some(i) = n.mean.iter().position(|m| !m.is_finite()) {
                    return Err(invalid(format!("normalize.mean[{i}] ({}) is not finite", file.features[i])));
                }
                if let Some(i) = n.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(invalid(format!(
                        "normalize.std[{i}] ({}) = {} must be a finite number > 0",
                        file.features[i], n.std[i]
                    )));
                }
                Ok(Normalize { mean: n.mean, std: n.std })
            })
            .transpose()?;
        let max_gap_ms = file
            .max_gap_ms
            .map(|g| {
                (g >= 1).then_some(g).ok_or_else(|| {
                    invalid(format!(
                        "`max_gap_ms` = {g} must be at least 1 (or leave it out: windows never reset)"
                    ))
                })
            })
            .transpose()?;
        let range = match file.range {
            None => None,
            Some(r) => {
                let nf = file.features.len();
                if r.min.len() != nf || r.max.len() != nf {
                    return Err(invalid(format!(
                        "[range] needs one min and one max per feature: {nf} features, {} mins, {} maxes",
                        r.min.len(),
                        r.max.len()
                    )));
                }
                for i in 0..nf {
                    let (lo, hi) = (r.min[i], r.max[i]);
                    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                        return Err(invalid(format!(
                            "range[{i}] ({}): min = {lo} and max = {hi} must be finite, min <= max",
                            file.features[i]
                        )));
                    }
                }
                Some(FeatureRange { min: r.min, max: r.max })
            }
        };
        let baseline = match &file.baseline {
            None => vec![0.0; file.features.len()],
            Some(b) if b.len() != file.features.len() => {
                return Err(invalid(format!(
                    "`baseline` needs one value per feature: {} features, {} values",
                    file.features.len(),
                    b.len()
                )))
            }
            Some(b) => {
                if let Some(i) = b.iter().position(|v| !v.is_finite()) {
                    return Err(invalid(format!("baseline[{i}] ({}) is not finite", file.features[i])));
                }
                b.iter()
                    .enumerate()
                    .map(|(i, v)| match &normalize {
                        Some(n) => ((v - n.mean[i]) / n.std[i]) as f32,
                        None => *v as f32,
                    })
                    .collect()
            }
        };
        let clock = match (file.sample_period_ms, file.stale_after_ms) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid(
                    "`stale_after_ms` needs `sample_period_ms`, the rate the model was trained at".into(),
                ))
            }
            (Some(p), _) if p < 1 => {
                return Err(invalid(format!("`sample_period_ms` = {p} must be at least 1")));
            }
            (Some(p), s) => {
                let stale = s.unwrap_or(p.saturating_mul(3));
                if stale < 1 {
                    return Err(invalid(format!("`stale_after_ms` = {stale} must be at least 1")));
                }
                Some(SampleClock { period_ms: p, stale_after_ms: stale })
            }
        };
        if clock.is_some() && max_gap_ms.is_some() {
            return Err(invalid(
                "`max_gap_ms` is for cards without a sampling clock; with `sample_period_ms`, \
                 `stale_after_ms` says how old a value may be"
                    .into(),
            ));
        }
        if file.scores.is_empty() {
            return Err(invalid(
                "no [scores.NAME] table: say which model output each published score comes from".into(),
            ));
        }
        let mut scores = Vec::with_capacity(file.scores.len());
        for (name, s) in file.scores {
            let index = usize::try_from(s.index)
                .map_err(|_| invalid(format!("scores.{name}.index = {} must be >= 0", s.index)))?;
            if s.kind == ScoreKind::Reconstruction && index != 0 {
                return Err(invalid(format!(
                    "scores.{name}: kind = \"reconstruction\" reads the whole output; index = {index} has no meaning there"
                )));
            }
            for (key, t) in [("warn", s.warn), ("alarm", s.alarm)] {
                if t.is_some_and(|t| !t.is_finite()) {
                    return Err(invalid(format!("scores.{name}.{key} is not a finite number")));
                }
            }
            if let (Some(w), Some(a)) = (s.warn, s.alarm) {
                let ordered = match s.direction {
                    Direction::Above => w <= a,
                    Direction::Below => w >= a,
                };
                if !ordered {
                    return Err(invalid(format!(
                        "scores.{name}: warn = {w} and alarm = {a} are in the wrong order for direction = \"{}\" \
                         (warn must be reached before alarm)",
                        if s.direction == Direction::Above { "above" } else { "below" }
                    )));
                }
            }
            if s.clear.is_some_and(|c| !c.is_finite()) {
                return Err(invalid(format!("scores.{name}.clear is not a finite number")));
            }
            if let Some(c) = s.clear {
                let nearest = match s.direction {
                    Direction::Above => s.warn.into_iter().chain(s.alarm).reduce(f64::min).filter(|t| c > *t),
                    Direction::Below => s.warn.into_iter().chain(s.alarm).reduce(f64::max).filter(|t| c < *t),
                };
                if let Some(t) = nearest {
                    return Err(invalid(format!(
                        "scores.{name}: clear = {c} is past the threshold {t}; it must lie on the good side of warn/alarm"
                    )));
                }
            }
            let debounce =
                u32::try_from(s.debounce).ok().filter(|d| (1..=10_000).contains(d)).ok_or_else(|| {
                    invalid(format!("scores.{name}.debounce = {} must be 1..=10000 windows", s.debounce))
                })?;
            let explain_top = usize::try_from(s.explain_top).ok().filter(|t| *t >= 1).ok_or_else(|| {
                invalid(format!("scores.{name}.explain_top = {} must be at least 1", s.explain_top))
            })?;
            let forecast = match (s.forecast_secs, s.forecast_horizon_secs) {
                (0, _) => None,
                (secs, _) if secs < 0 => {
                    return Err(invalid(format!("scores.{name}.forecast_secs = {secs} must be >= 0 (0: no forecast)")))
                }
                (_, h) if h < 1 => {
                    return Err(invalid(format!("scores.{name}.forecast_horizon_secs = {h} must be at least 1")))
                }
                _ if s.warn.is_none() && s.alarm.is_none() => {
                    return Err(invalid(format!(
                        "scores.{name}: forecast_secs asks when the score reaches warn or alarm, and it has neither"
                    )))
                }
                (secs, h) => Some(ForecastSpec { secs: secs as u64, horizon_secs: h as u64 }),
            };
            scores.push(ScoreSpec {
                forecast,
                kind: s.kind,
                explain: s.explain,
                explain_top,
                output: s.output.unwrap_or_else(|| name.clone()),
                name,
                index,
                warn: s.warn,
                alarm: s.alarm,
                direction: s.direction,
                clear: s.clear,
                debounce,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            name: file.name,
            version,
            description: file.description,
            features: file.features,
            window,
            layout: file.layout,
            normalize,
            max_gap_ms,
            clock,
            range,
            baseline,
            scores,
            unknown_keys: file.extra.into_keys().collect(),
        })
    }

    /// A window's shape in the model input, batch dimension aside.
    pub fn layout_shape(&self) -> Vec<usize> {
        match self.layout {
            Layout::Flat => vec![self.input_len()],
            Layout::Sequence => vec![self.window, self.features.len()],
        }
    }

    /// Values per window (`window * features`).
    pub fn input_len(&self) -> usize {
        self.window * self.features.len()
    }

    /// How many of its scores are reconstruction errors (each gives F
    /// per-feature errors per window, see [`Model::run_detailed`](crate::model::Model::run_detailed)).
    pub fn reconstruction_scores(&self) -> usize {
        self.scores.iter().filter(|s| s.kind == ScoreKind::Reconstruction).count()
    }

    /// The worst state over all scores of one window.
    pub fn state(&self, scores: &[f32]) -> State {
        self.scores.iter().zip(scores).map(|(s, &v)| s.state(v)).max().unwrap_or(State::Ok)
    }

    /// What a stored window must have been built for to be restored under
    /// this card: the features, in order, and the window length (the
    /// normalization travels with each snapshot and is converted). A hash,
    /// so that a renamed or reordered feature list never matches.
    pub fn input_fingerprint(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"lineguard window input v1\0");
        for f in &self.features {
            h.update((f.len() as u32).to_le_bytes());
            h.update(f.as_bytes());
        }
        h.update((self.window as u32).to_le_bytes());
        if let Some(c) = self.clock {
            // Samples on another grid are other samples.
            h.update(b"clock");
            h.update(c.period_ms.to_le_bytes());
            h.update(c.stale_after_ms.to_le_bytes());
        }
        u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
    }

    /// Whether windows built for `self` are valid input for `other`
    /// (same features in the same order, same window length, samples on
    /// the same clock).
    pub fn same_input(&self, other: &ModelCard) -> bool {
        self.features == other.features && self.window == other.window && self.clock == other.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "m"
version = 3
features = ["a", "b"]
window = 4
layout = "sequence"
author = "ds team"
[normalize]
mean = [1.0, 2.0]
std = [0.5, 4.0]
[scores.anomaly]
warn = 0.6
alarm = 0.9
[scores.quality]
output = "q"
index = 1
direction = "below"
warn = 0.8
alarm = 0.6
"#;

    fn parse(text: &str) -> Result<ModelCard, CardError> {
        ModelCard::parse(Path::new("m.toml"), text)
    }

    #[test]
    fn a_sampling_clock() {
        assert_eq!(parse(GOOD).unwrap().clock, None);
        let c = parse(&format!("sample_period_ms = 100\n{GOOD}")).unwrap();
        assert_eq!(
            c.clock,
            Some(SampleClock { period_ms: 100, stale_after_ms: 300 }),
            "stale defaults to 3 periods"
        );
        let c = parse(&format!("sample_period_ms = 100\nstale_after_ms = 150\n{GOOD}")).unwrap();
        assert_eq!(c.clock.unwrap().stale_after_ms, 150);
        assert_ne!(
            c.input_fingerprint(),
            parse(GOOD).unwrap().input_fingerprint(),
            "windows on a grid are other windows"
        );
        for (bad, needle) in [
            ("sample_period_ms = 0", "`sample_period_ms` = 0"),
            ("stale_after_ms = 100", "needs `sample_period_ms`"),
            ("sample_period_ms = 100\nstale_after_ms = 0", "`stale_after_ms` = 0"),
            ("sample_period_ms = 100\nmax_gap_ms = 500", "`max_gap_ms` is for cards without"),
        ] {
            let e = parse(&format!("{bad}\n{GOOD}")).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn a_range_is_optional_and_one_finite_min_max_per_feature() {
        assert_eq!(parse(GOOD).unwrap().range, None);
        let c = parse(&format!("{GOOD}\n[range]\nmin = [0, -1.5]\nmax = [10, 2]\n")).unwrap();
        assert_eq!(c.range, Some(FeatureRange { min: vec![0.0, -1.5], max: vec![10.0, 2.0] }));
        let e = parse(&format!("{GOOD}\n[range]\nmin = [0]\nmax = [10, 2]\n")).unwrap_err().to_string();
        assert!(e.contains("one min and one max per feature"), "{e}");
        let e = parse(&format!("{GOOD}\n[range]\nmin = [0, 3]\nmax = [10, 2]\n")).unwrap_err().to_string();
        assert!(e.contains("range[1] (b)"), "{e}");
    }

    #[test]
    fn max_gap_ms_is_optional_and_positive() {
        assert_eq!(parse(GOOD).unwrap().max_gap_ms, None);
        assert_eq!(parse(&format!("max_gap_ms = 5000\n{GOOD}")).unwrap().max_gap_ms, Some(5000));
        let e = parse(&format!("max_gap_ms = 0\n{GOOD}")).unwrap_err().to_string();
        assert!(e.contains("`max_gap_ms` = 0 must be at least 1"), "{e}");
    }

    #[test]
    fn parses_a_full_card() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.version, "3");
        assert_eq!(c.layout, Layout::Sequence);
        assert_eq!(c.input_len(), 8);
        assert_eq!(c.unknown_keys, ["author"]);
        assert_eq!(c.scores[0].output, "anomaly", "output defaults to the score name");
        assert_eq!(c.scores[1].index, 1);
        assert_eq!(c.state(&[0.1, 0.95]), State::Ok);
        assert_eq!(c.state(&[0.6, 0.95]), State::Warn);
        assert_eq!(c.state(&[0.1, 0.7]), State::Warn);
        assert_eq!(c.state(&[0.1, 0.6]), State::Alarm);
        assert_eq!(c.state(&[0.95, 0.9]), State::Alarm);
    }

    fn broken(from: &str, to: &str) -> String {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "test edit `{from}` did not apply");
        parse(&text).unwrap_err().to_string()
    }

    #[test]
    fn the_input_fingerprint_names_features_order_and_window() {
        let c = parse(GOOD).unwrap();
        let fp = c.input_fingerprint();
        let with = |from: &str, to: &str| parse(&GOOD.replacen(from, to, 1)).unwrap().input_fingerprint();
        assert_eq!(with("version = 3", "version = 4"), fp, "the version is not the input");
        assert_eq!(
            with("mean = [1.0, 2.0]", "mean = [1.5, 2.0]"),
            fp,
            "normalization is converted, not refused"
        );
        assert_ne!(with("[\"a\", \"b\"]", "[\"b\", \"a\"]"), fp, "reordered");
        assert_ne!(with("[\"a\", \"b\"]", "[\"a\", \"c\"]"), fp, "renamed");
        assert_ne!(with("window = 4", "window = 5"), fp, "window");
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(broken("std = [0.5, 4.0]", "std = [0.5, 0.0]").contains("normalize.std[1] (b)"));
        assert!(broken("mean = [1.0, 2.0]", "mean = [1.0]").contains("one mean and one std per feature"));
        assert!(broken("window = 4", "window = 0").contains("`window` = 0"));
        assert!(broken("[\"a\", \"b\"]", "[\"a\", \"a\"]").contains("listed twice"));
        assert!(broken("[\"a\", \"b\"]", "[]").contains("`features` is empty"));
        assert!(broken("alarm = 0.9", "alarm = 0.5").contains("wrong order"));
        assert!(broken("index = 1", "index = -1").contains("index = -1"));
        assert!(broken("warn = 0.6\n", "warn = 0.6\nclear = 0.7\n").contains("good side"));
        assert!(broken("warn = 0.6\n", "warn = 0.6\ndebounce = 0\n").contains("debounce = 0"));
        assert!(parse(&GOOD.replacen("warn = 0.6\n", "warn = 0.6\nclear = 0.4\ndebounce = 3\n", 1)).is_ok());
        assert!(broken("layout = \"sequence\"", "layout = \"matrix\"").contains("matrix"));
        assert!(broken("warn = 0.6", "wran = 0.6").contains("wran"));
        let forecast = parse(&GOOD.replacen("warn = 0.6\n", "warn = 0.6\nforecast_secs = 600\n", 1)).unwrap();
        assert_eq!(forecast.scores[0].forecast, Some(ForecastSpec { secs: 600, horizon_secs: 86_400 }));
        assert_eq!(parse(GOOD).unwrap().scores[0].forecast, None, "off unless asked");
        assert!(broken("warn = 0.6\n", "warn = 0.6\nforecast_secs = -5\n").contains("forecast_secs = -5"));
        assert!(broken("warn = 0.6\n", "warn = 0.6\nforecast_secs = 60\nforecast_horizon_secs = 0\n")
            .contains("forecast_horizon_secs = 0"));
        assert!(broken("name = \"m\"", "").contains("name"));
        let no_scores = GOOD.split("[scores.anomaly]").next().unwrap();
        assert!(parse(no_scores).unwrap_err().to_string().contains("scores"));
    }
}
