//! The sampling clock's fixture (`models/make_tag_fixture.py`): one value
//! per message, each tag at its own jittered times, and ONNX Runtime's
//! scores of the grid samples it forms from them.

use super::golden::{card_scores, expected_window, Expected};
use super::line::{copy_model, LINE_CARD};

/// The shipped model, its card given a sampling clock of `period` ms.
pub fn model_on_a_clock(dir: &std::path::Path, period: i64) -> String {
    let model = copy_model(dir);
    let card = dir.join("line-mlp.toml");
    let text = std::fs::read_to_string(&card).unwrap();
    std::fs::write(&card, format!("sample_period_ms = {period}\n{text}")).unwrap();
    model.display().to_string()
}

#[derive(serde::Deserialize)]
pub struct TagFixture {
    pub sample_period_ms: i64,
    pub resets: std::collections::BTreeMap<String, u64>,
    pub messages: Vec<TagMessage>,
    pub windows: Vec<TagWindow>,
}

#[derive(serde::Deserialize)]
pub struct TagMessage {
    pub ts: i64,
    pub device: String,
    pub feature: String,
    pub value: f64,
}

#[derive(serde::Deserialize)]
pub struct TagWindow {
    pub device: String,
    pub ts: i64,
    pub outputs: std::collections::BTreeMap<String, Vec<f32>>,
}

/// `models/fixtures/line-mlp.tags.golden.json`.
pub fn tag_fixture() -> TagFixture {
    let text =
        std::fs::read_to_string(super::repo_path("models/fixtures/line-mlp.tags.golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The fixture's `i`th tag message: HiveMQ Edge's shape, every fifth value
/// as a string, as some gateways send it.
pub fn tag_message(i: usize, m: &TagMessage) -> (String, String) {
    let payload = match i % 5 {
        0 => serde_json::json!({"value": m.value.to_string(), "timestamp": m.ts}),
        _ => serde_json::json!({"value": m.value, "timestamp": m.ts}),
    };
    (format!("uns/{}/{}", m.device, m.feature), payload.to_string())
}

/// ONNX Runtime's scores of the fixture's windows, as the line card names them.
pub fn tag_expected(fixture: &TagFixture) -> Vec<Expected> {
    let scores = card_scores(LINE_CARD);
    fixture.windows.iter().map(|w| expected_window(&w.device, w.ts, &w.outputs, &scores)).collect()
}
