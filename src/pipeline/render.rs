//! The score payload of SPEC, written into a reused buffer.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::model::card::{ScoreSpec, State};

/// Identity of the model that scored a window.
#[derive(Debug, Clone)]
pub struct Origin {
    pub pipeline: String,
    pub model: String,
    pub model_version: String,
}

#[derive(Serialize)]
struct Payload<'a> {
    ts: i64,
    device: &'a str,
    pipeline: &'a str,
    model: &'a str,
    model_version: &'a str,
    scores: Scores<'a>,
    state: State,
}

struct Scores<'a> {
    specs: &'a [ScoreSpec],
    values: &'a [f32],
}

impl Serialize for Scores<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.specs.len()))?;
        for (spec, v) in self.specs.iter().zip(self.values) {
            map.serialize_entry(&spec.name, v)?;
        }
        map.end()
    }
}

/// Write one window's payload into `out` (cleared first).
///
/// `values` are in card order. Non-finite values cannot be written as JSON
/// numbers; the caller refuses them before getting here.
pub fn write_payload(
    out: &mut Vec<u8>,
    origin: &Origin,
    specs: &[ScoreSpec],
    device: &str,
    ts: i64,
    values: &[f32],
    state: State,
) {
    out.clear();
    let payload = Payload {
        ts,
        device,
        pipeline: &origin.pipeline,
        model: &origin.model,
        model_version: &origin.model_version,
        scores: Scores { specs, values },
        state,
    };
    serde_json::to_writer(&mut *out, &payload).expect("writing JSON to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::card::Direction;

    #[test]
    fn spec_payload_shape() {
        let spec = |name: &str| ScoreSpec {
            name: name.into(),
            output: name.into(),
            index: 0,
            warn: None,
            alarm: None,
            direction: Direction::Above,
            clear: None,
            debounce: 1,
        };
        let origin =
            Origin { pipeline: "press-line".into(), model: "line-mlp".into(), model_version: "3".into() };
        let mut out = Vec::new();
        write_payload(
            &mut out,
            &origin,
            &[spec("anomaly"), spec("quality")],
            "line1/press3",
            1732400000123,
            &[0.031, 0.982],
            State::Ok,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"ts":1732400000123,"device":"line1/press3","pipeline":"press-line","model":"line-mlp","model_version":"3","scores":{"anomaly":0.031,"quality":0.982},"state":"ok"}"#
        );
    }
}
