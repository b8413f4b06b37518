//! Input drift: does live data still look like the training data?
//!
//! Per pipeline and feature, an exponentially weighted mean and standard
//! deviation (around that mean) of the values in the model's units — the
//! card's normalization, so training data has mean 0 and standard
//! deviation 1 — over all devices. A feature drifts when |mean| exceeds
//! `drift_mean_z`, or its standard deviation is more than `drift_std_ratio`
//! times 1. A spread *narrower* than training's is not drift: the training
//! set spans many machines and loads, and one line at its own steady load
//! varies less than all of them together, while its values stay where the
//! model learned (a narrow spread puts no input where the model has not
//! been). Values outside the card's `[range]` are counted (and still scored).
//!
//! The weight of a sample is `1 - 2^(-1/half_life)`, but never less than
//! 1/n for the n-th sample, so the first samples make a plain mean instead
//! of being pulled towards a starting guess.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::card::{FeatureRange, Normalize};

/// A feature is judged only once this many of its values have been seen.
pub const MIN_SAMPLES: u64 = 30;

/// A pipeline's drift settings (`drift_*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct DriftSettings {
    /// In samples.
    pub half_life: f64,
    pub interval: Duration,
    pub mean_z: f64,
    pub std_ratio: f64,
    /// Where the retained summary goes: `lineguard/{client_id}/drift/{pipeline}`.
    pub topic: String,
}

/// The defaults of the `drift_*` keys (the config schema's, too).
pub const DEFAULT_HALF_LIFE: f64 = 100_000.0;
pub const DEFAULT_INTERVAL_SECS: u64 = 60;
pub const DEFAULT_MEAN_Z: f64 = 3.0;
pub const DEFAULT_STD_RATIO: f64 = 2.0;

impl DriftSettings {
    /// The defaults of the `drift_*` keys, publishing to `topic`.
    pub fn defaults(topic: String) -> Self {
        Self {
            half_life: DEFAULT_HALF_LIFE,
            interval: Duration::from_secs(DEFAULT_INTERVAL_SECS),
            mean_z: DEFAULT_MEAN_Z,
            std_ratio: DEFAULT_STD_RATIO,
            topic,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    n: u64,
    mean: f64,
    var: f64,
}

/// The drift state of one pipeline.
#[derive(Debug)]
pub struct Drift {
    settings: DriftSettings,
    alpha: f64,
    normalize: Option<Normalize>,
    range: Option<FeatureRange>,
    moments: Vec<Moments>,
    /// Values outside `[range]` since the last [`Drift::take_out_of_range`].
    out_of_range: Vec<u64>,
    last_summary: Instant,
}

/// One feature in the summary.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct FeatureDrift {
    pub mean_z: f64,
    pub std_z: f64,
}

/// The retained summary.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub pipeline: &'a str,
    pub ts: i64,
    /// Features with no value yet are left out.
    pub features: BTreeMap<&'a str, FeatureDrift>,
    pub drifting: Vec<&'a str>,
}

impl Drift {
    pub fn new(
        settings: DriftSettings,
        features: usize,
        normalize: Option<Normalize>,
        range: Option<FeatureRange>,
    ) -> Self {
        Self {
            alpha: 1.0 - 0.5f64.powf(1.0 / settings.half_life.max(1.0)),
            settings,
            normalize,
            range,
            moments: vec![Moments::default(); features],
            out_of_range: vec![0; features],
            last_summary: Instant::now(),
        }
    }

    /// A new card (a reload): its normalization and range; what was learnt
    /// about the inputs stays if the features did.
    pub fn recard(&mut self, features: usize, normalize: Option<Normalize>, range: Option<FeatureRange>) {
        if features != self.moments.len() || normalize != self.normalize {
            self.moments = vec![Moments::default(); features];
            self.out_of_range = vec![0; features];
        }
        self.normalize = normalize;
        self.range = range;
    }

    /// One sample's raw values, card order; NaN is an absent value.
    pub fn observe(&mut self, raw: &[f64]) {
        for (f, &v) in raw.iter().enumerate() {
            if v.is_nan() {
                continue;
            }
            if let Some(r) = &self.range {
                if v < r.min[f] || v > r.max[f] {
                    self.out_of_range[f] += 1;
                }
            }
            let z = match &self.normalize {
                Some(n) => (v - n.mean[f]) / n.std[f],
                None => v,
            };
            let m = &mut self.moments[f];
            m.n += 1;
            let a = self.alpha.max(1.0 / m.n as f64);
            let diff = z - m.mean;
            let incr = a * diff;
            m.mean += incr;
            m.var = (1.0 - a) * (m.var + diff * incr);
        }
    }

    /// Values outside `[range]` per feature since the last call.
    pub fn take_out_of_range(&mut self) -> Vec<u64> {
        std::mem::replace(&mut self.out_of_range, vec![0; self.moments.len()])
    }

    /// Each feature's (mean, std) in the model's units; `None` before its first value.
    pub fn current(&self) -> Vec<Option<FeatureDrift>> {
        self.moments
            .iter()
            .map(|m| (m.n > 0).then(|| FeatureDrift { mean_z: m.mean, std_z: m.var.max(0.0).sqrt() }))
            .collect()
    }

    fn drifts(&self, m: &Moments, d: FeatureDrift) -> bool {
        m.n >= MIN_SAMPLES && (d.mean_z.abs() > self.settings.mean_z || d.std_z > self.settings.std_ratio)
    }

    /// Whether the summary is due (every `drift_interval_secs`).
    pub fn due(&self, now: Instant) -> bool {
        now.duration_since(self.last_summary) >= self.settings.interval
    }

    pub fn topic(&self) -> &str {
        &self.settings.topic
    }

    /// The summary, as JSON, and the features it names as drifting; the
    /// next one is due an interval from now.
    pub fn summary(&mut self, pipeline: &str, features: &[String], now_ms: i64) -> (Vec<u8>, Vec<String>) {
        self.last_summary = Instant::now();
        let s = self.summarize(pipeline, features, now_ms);
        let drifting = s.drifting.iter().map(|f| f.to_string()).collect();
        (serde_json::to_vec(&s).expect("a summary is plain JSON"), drifting)
    }

    /// The features drifting now (what the next summary would name).
    pub fn drifting(&self, features: &[String]) -> Vec<String> {
        self.summarize("", features, 0).drifting.into_iter().map(str::to_string).collect()
    }

    fn summarize<'a>(&self, pipeline: &'a str, features: &'a [String], now_ms: i64) -> Summary<'a> {
        let mut s = Summary { pipeline, ts: now_ms, features: BTreeMap::new(), drifting: Vec::new() };
        for ((name, m), d) in features.iter().zip(&self.moments).zip(self.current()) {
            let Some(d) = d else { continue };
            s.features.insert(name, d);
            if self.drifts(m, d) {
                s.drifting.push(name);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DriftSettings {
        DriftSettings {
            half_life: 1000.0,
            interval: Duration::ZERO,
            mean_z: 3.0,
            std_ratio: 2.0,
            topic: "lineguard/gw/drift/p".into(),
        }
    }

    /// A deterministic stream with mean 0 and standard deviation 1 in
    /// the model's units: +1, -1, +1, ...
    fn unit(i: usize) -> f64 {
        if i.is_multiple_of(2) {
            1.0
        } else {
            -1.0
        }
    }

    #[test]
    fn a_feature_whose_mean_moves_is_named_and_no_other() {
        let norm = Normalize { mean: vec![100.0, 50.0, 0.0], std: vec![10.0, 5.0, 1.0] };
        let range = FeatureRange { min: vec![0.0, 0.0, -2.0], max: vec![200.0, 100.0, 2.0] };
        let mut d = Drift::new(settings(), 3, Some(norm), Some(range));
        let names = ["speed".to_string(), "temp".to_string(), "noise".to_string()];
        for i in 0..5000 {
            // temp moves by 5 training standard deviations; noise is 4x
            // wider; speed is 10x steadier than training (not drift).
            d.observe(&[100.0 + unit(i), 75.0 + 5.0 * unit(i), 4.0 * unit(i)]);
        }
        let c = d.current();
        assert!(c[0].unwrap().mean_z.abs() < 0.01 && (c[0].unwrap().std_z - 0.1).abs() < 0.01, "{c:?}");
        assert!((c[1].unwrap().mean_z - 5.0).abs() < 0.01, "{c:?}");
        assert!((c[2].unwrap().std_z - 4.0).abs() < 0.05, "{c:?}");
        let json: serde_json::Value = serde_json::from_slice(&d.summary("p", &names, 7).0).unwrap();
        assert_eq!(json["drifting"], serde_json::json!(["temp", "noise"]));
        assert_eq!(json["pipeline"], "p");
        assert_eq!(json["ts"], 7);
        assert!((json["features"]["temp"]["mean_z"].as_f64().unwrap() - 5.0).abs() < 0.01);
        assert_eq!(d.take_out_of_range(), [0, 0, 5000], "every noise value is outside [-2, 2]");
        assert_eq!(d.take_out_of_range(), [0, 0, 0]);
    }

    #[test]
    fn few_samples_judge_nothing_and_absent_values_are_skipped() {
        let mut d = Drift::new(settings(), 2, None, None);
        for _ in 0..(MIN_SAMPLES - 1) {
            d.observe(&[10.0, f64::NAN]);
        }
        let names = ["a".to_string(), "b".to_string()];
        let json: serde_json::Value = serde_json::from_slice(&d.summary("p", &names, 0).0).unwrap();
        assert_eq!(json["drifting"], serde_json::json!([]), "not judged yet");
        assert_eq!(json["features"]["a"]["mean_z"], 10.0, "without normalization, raw units");
        assert!(json["features"].get("b").is_none(), "no value yet");
        d.observe(&[10.0, f64::NAN]);
        let json: serde_json::Value = serde_json::from_slice(&d.summary("p", &names, 0).0).unwrap();
        assert_eq!(json["drifting"], serde_json::json!(["a"]));
    }

    #[test]
    fn the_mean_follows_a_change_within_a_few_half_lives() {
        let mut s = settings();
        s.half_life = 100.0;
        let mut d = Drift::new(s, 1, None, None);
        for i in 0..2000 {
            d.observe(&[unit(i)]);
        }
        for i in 0..100 {
            d.observe(&[4.0 + unit(i)]);
        }
        let m = d.current()[0].unwrap().mean_z;
        assert!((m - 2.0).abs() < 0.1, "one half-life after a step of 4: {m}");
    }
}
