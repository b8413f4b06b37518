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
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
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
    assert!(
        (got - want).abs() <= tol,
        "{what}: lineguard {got} vs ONNX Runtime {want}"
    );
}
