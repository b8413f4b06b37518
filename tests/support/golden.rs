//! Golden fixtures written by models/*.py with ONNX Runtime.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Sample {
    pub ts: i64,
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Window {
    pub device: String,
    /// Index of the window's newest sample in the device's stream.
    pub index: usize,
    pub ts: i64,
    pub input: Vec<f32>,
    pub outputs: BTreeMap<String, Vec<f32>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Golden {
    pub features: Vec<String>,
    pub window: usize,
    pub devices: BTreeMap<String, Vec<Sample>>,
    pub windows: Vec<Window>,
}

impl Golden {
    pub fn load(rel: &str) -> Self {
        let path = super::repo_path(rel);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
    }

    pub fn window(&self, device: &str, ts: i64) -> &Window {
        self.windows
            .iter()
            .find(|w| w.device == device && w.ts == ts)
            .unwrap_or_else(|| panic!("no fixture window for {device} at ts {ts}"))
    }

    /// The telemetry payload for one sample, as a device would send it.
    pub fn payload(sample: &Sample) -> String {
        serde_json::json!({"ts": sample.ts, "values": sample.values}).to_string()
    }
}

/// The contract's tolerance: 1e-4 relative (with a floor for values near 0,
/// where relative error is meaningless; 1e-6 absolute is far below any alarm
/// threshold).
pub fn assert_close(got: f32, want: f32, what: &str) {
    let tol = 1e-4 * want.abs().max(1e-2);
    assert!((got - want).abs() <= tol, "{what}: lineguard {got} vs ONNX Runtime {want}");
}

/// What one published score message must say.
#[derive(Debug, Clone)]
pub struct Expected {
    pub device: String,
    pub ts: i64,
    pub scores: BTreeMap<String, f32>,
    /// `None` when a score sits within tolerance of a threshold.
    pub state: Option<&'static str>,
}

/// One score of a card, read independently of lineguard's card parser.
#[derive(Debug, Clone)]
pub struct CardScore {
    pub name: String,
    pub output: String,
    pub index: usize,
    pub warn: Option<f64>,
    pub alarm: Option<f64>,
    pub below: bool,
}

/// The `[scores.*]` tables of a card file.
pub fn card_scores(card_rel: &str) -> Vec<CardScore> {
    let text = std::fs::read_to_string(super::repo_path(card_rel)).unwrap();
    let card: toml::Value = toml::from_str(&text).unwrap();
    card["scores"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(name, t)| CardScore {
            name: name.clone(),
            output: t.get("output").and_then(|v| v.as_str()).unwrap_or(name).to_string(),
            index: t.get("index").and_then(|v| v.as_integer()).unwrap_or(0) as usize,
            warn: t.get("warn").and_then(|v| v.as_float()),
            alarm: t.get("alarm").and_then(|v| v.as_float()),
            below: t.get("direction").and_then(|v| v.as_str()) == Some("below"),
        })
        .collect()
}

/// What the score message of one window must say, from ORT's `outputs`.
pub fn expected_window(
    device: &str,
    ts: i64,
    outputs: &BTreeMap<String, Vec<f32>>,
    scores: &[CardScore],
) -> Expected {
    let mut values = BTreeMap::new();
    let mut state = Some(0u8);
    for s in scores {
        let v = outputs[&s.output][s.index];
        values.insert(s.name.clone(), v);
        let mut level = 0u8;
        for (t, l) in [(s.warn, 1u8), (s.alarm, 2u8)] {
            let Some(t) = t else { continue };
            let t = t as f32;
            if (v - t).abs() <= 1e-4 * t.abs().max(1e-2) {
                state = None; // too close to call
            }
            if (s.below && v <= t) || (!s.below && v >= t) {
                level = level.max(l);
            }
        }
        state = state.map(|st| st.max(level));
    }
    Expected {
        device: device.to_string(),
        ts,
        scores: values,
        state: state.map(|l| ["ok", "warn", "alarm"][l as usize]),
    }
}

impl Golden {
    /// Every window lineguard must publish with this `hop`, with ORT's scores.
    pub fn expected(&self, scores: &[CardScore], hop: usize) -> Vec<Expected> {
        self.windows
            .iter()
            .filter(|w| (w.index + 1 - self.window).is_multiple_of(hop))
            .map(|w| expected_window(&w.device, w.ts, &w.outputs, scores))
            .collect()
    }

    /// Every sample in publishing order: devices interleaved sample by sample.
    pub fn interleaved(&self) -> Vec<(&str, &Sample)> {
        let longest = self.devices.values().map(Vec::len).max().unwrap_or(0);
        (0..longest)
            .flat_map(|i| self.devices.iter().filter_map(move |(d, s)| s.get(i).map(|s| (d.as_str(), s))))
            .collect()
    }
}

/// Check published score messages against the expectation: nothing missing,
/// nothing extra, nothing twice, every field right.
pub fn check_scores(
    messages: &[super::mqtt::Message],
    expected: &[Expected],
    pipeline: &str,
    model: &str,
    topic_of: impl Fn(&str) -> String,
) {
    let mut seen = std::collections::BTreeSet::new();
    for m in messages {
        let j = m.json();
        let device = j["device"].as_str().expect("device").to_string();
        let ts = j["ts"].as_i64().expect("ts");
        assert!(seen.insert((device.clone(), ts)), "score for {device} at {ts} published twice");
        let e = expected.iter().find(|e| e.device == device && e.ts == ts).unwrap_or_else(|| {
            panic!("unexpected score for {device} at {ts}: {}", String::from_utf8_lossy(&m.payload))
        });
        assert_eq!(m.topic, topic_of(&device), "topic");
        assert_eq!(j["pipeline"], pipeline);
        assert_eq!(j["model"], model);
        assert!(j["model_version"].is_string(), "model_version");
        let scores = j["scores"].as_object().expect("scores object");
        assert_eq!(scores.len(), e.scores.len(), "score names in {j}");
        for (name, want) in &e.scores {
            let got =
                scores.get(name).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("score {name} in {j}"));
            assert_close(got as f32, *want, &format!("{pipeline} {device} ts {ts} {name}"));
        }
        if let Some(state) = e.state {
            assert_eq!(j["state"], state, "state of {device} at {ts}: {j}");
        }
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|e| !seen.contains(&(e.device.clone(), e.ts)))
        .map(|e| (&e.device, e.ts))
        .collect();
    assert!(missing.is_empty(), "{} of {} windows never scored: {missing:?}", missing.len(), expected.len());
}

/// At-least-once delivery: duplicates are allowed but must be byte-identical;
/// after removing them, exactly the expected windows with the right values.
pub fn check_scores_at_least_once(
    messages: &[super::mqtt::Message],
    expected: &[Expected],
    pipeline: &str,
    model: &str,
    topic_of: impl Fn(&str) -> String,
) -> usize {
    let mut first: BTreeMap<(String, i64), &super::mqtt::Message> = BTreeMap::new();
    let mut duplicates = 0;
    for m in messages {
        let j = m.json();
        let key = (j["device"].as_str().expect("device").to_string(), j["ts"].as_i64().expect("ts"));
        match first.get(&key) {
            Some(prev) => {
                assert_eq!(prev.payload, m.payload, "duplicate for {key:?} differs");
                duplicates += 1;
            }
            None => {
                first.insert(key, m);
            }
        }
    }
    let unique: Vec<super::mqtt::Message> = first.into_values().cloned().collect();
    check_scores(&unique, expected, pipeline, model, topic_of);
    assert_eq!(unique.len(), expected.len(), "nothing extra");
    duplicates
}
