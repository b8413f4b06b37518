//! What a scored window publishes: the JSON score payload of SPEC (written
//! into a reused buffer), the retained alarm state, or the Sparkplug record
//! the Edge Node renders at publish time; and a Sparkplug device's death.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::durable::store::NewEntry;
use crate::ingest::topic::TopicTemplate;
use crate::model::card::{Explain, ScoreSpec, State};
use crate::model::ModelId;
use crate::pipeline::alarm::Transition;
use crate::pipeline::explain::Explanation;
use crate::pipeline::forecast::Forecast;
use crate::pipeline::{Output, Pipeline};
use crate::sparkplug::node::{Record, RecordValue};
use crate::sparkplug::DeviceIdTemplate;

/// One window's scores, as the model gave them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scored<'a> {
    pub device: &'a str,
    /// Its newest sample's.
    pub ts: i64,
    /// In card order.
    pub values: &'a [f32],
    /// The worst over the scores with thresholds.
    pub state: State,
    /// The scores it explains (none: not explained).
    pub explain: &'a [Explanation],
    /// The forecasts it made, by score index (none: it made none).
    pub forecast: &'a [(usize, Forecast)],
    /// Sparkplug: each score's latest forecast and the `ts` of the window
    /// that made it (card order; empty: none yet).
    pub latest: &'a [Option<(i64, Forecast)>],
}

/// Which pipeline and model scored a window.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    pub pipeline: String,
    pub model: ModelId,
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
    #[serde(skip_serializing_if = "Explained::is_empty")]
    explain: Explained<'a>,
    #[serde(skip_serializing_if = "Forecasted::is_empty")]
    forecast: Forecasted<'a>,
    /// On `shadow_topic`: scored by the pipeline's shadow model.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    shadow: bool,
}

/// `{"anomaly": [{"feature": "vibration_rms", "delta": 0.61}, ...], ...}`.
struct Explained<'a> {
    specs: &'a [ScoreSpec],
    explain: &'a [Explanation],
}

impl Explained<'_> {
    fn is_empty(&self) -> bool {
        self.explain.is_empty()
    }
}

impl Serialize for Explained<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Contribution<'a> {
            feature: &'a str,
            delta: f32,
        }
        let mut map = s.serialize_map(Some(self.explain.len()))?;
        for e in self.explain {
            let top: Vec<Contribution> =
                e.top.iter().map(|(f, d)| Contribution { feature: f, delta: *d }).collect();
            map.serialize_entry(&self.specs[e.score].name, &top)?;
        }
        map.end()
    }
}

/// `{"anomaly": {"slope_per_hour": 0.41, "z": 5.8, "to_warn_s": 312.0, "to_alarm_s": null}}`.
struct Forecasted<'a> {
    specs: &'a [ScoreSpec],
    forecast: &'a [(usize, Forecast)],
}

impl Forecasted<'_> {
    fn is_empty(&self) -> bool {
        self.forecast.is_empty()
    }
}

impl Serialize for Forecasted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.forecast.len()))?;
        for (i, f) in self.forecast {
            map.serialize_entry(&self.specs[*i].name, f)?;
        }
        map.end()
    }
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
pub(super) fn write_payload(out: &mut Vec<u8>, origin: &Origin, specs: &[ScoreSpec], w: &Scored) {
    out.clear();
    serde_json::to_writer(&mut *out, &payload(origin, specs, w, false))
        .expect("writing JSON to a Vec cannot fail");
}

/// The score payload of `w`; `shadow` marks a shadow model's.
fn payload<'a>(origin: &'a Origin, specs: &'a [ScoreSpec], w: &'a Scored, shadow: bool) -> Payload<'a> {
    Payload {
        ts: w.ts,
        device: w.device,
        pipeline: &origin.pipeline,
        model: &origin.model.name,
        model_version: &origin.model.version,
        scores: Scores { specs, values: w.values },
        state: w.state,
        explain: Explained { specs, explain: w.explain },
        forecast: Forecasted { specs, forecast: w.forecast },
        shadow,
    }
}

/// A roll-up, retained on its topic (QoS 1, like an alarm state).
pub(super) fn rollup_entry(m: crate::pipeline::rollup::Made, created_ms: i64) -> NewEntry {
    let payload = serde_json::to_vec(&m.message).expect("a roll-up serializes");
    NewEntry { created_ms, ts: m.message.ts, topic: m.topic, payload, retain: true, sparkplug: false }
}

/// A Sparkplug pipeline's roll-up as the Edge Node's own metric
/// `rollup/{name}/{group}` (Double; null while every device is stale).
pub(super) fn rollup_node_entry(m: &crate::pipeline::rollup::Made, created_ms: i64) -> NewEntry {
    let r = &m.message;
    let metrics = vec![(format!("rollup/{}/{}", r.rollup, r.group), RecordValue::Double(r.index))];
    let payload = Record::Node { ts: r.ts, metrics }.encode();
    NewEntry { created_ms, ts: r.ts, topic: String::new(), payload, retain: false, sparkplug: true }
}

/// A window's scores as its pipeline publishes them: the JSON payload on
/// the output topic, or a Sparkplug record for the device.
pub(super) fn score_entry(
    pipeline: &Pipeline,
    origin: &Origin,
    specs: &[ScoreSpec],
    w: &Scored,
    created_ms: i64,
) -> NewEntry {
    match &pipeline.output {
        Output::Json(template) => {
            let mut payload = Vec::with_capacity(256);
            write_payload(&mut payload, origin, specs, w);
            let topic = template.render(&pipeline.input.topic, w.device);
            NewEntry { created_ms, ts: w.ts, topic, payload, retain: false, sparkplug: false }
        }
        Output::Sparkplug(id) => {
            // Metric names carry the pipeline as a folder, so two pipelines
            // scoring one machine make one device.
            let name = &pipeline.name;
            let mut metrics: Vec<(String, RecordValue)> = specs
                .iter()
                .zip(w.values)
                .map(|(s, v)| (format!("{name}/{}", s.name), RecordValue::Float(*v)))
                .collect();
            metrics.push((format!("{name}/state"), RecordValue::Text(w.state.as_str().into())));
            // Only for `explain = "always"`: a metric that came and went with
            // warn/alarm would change the device's metric set, and every
            // change is a new DBIRTH. Empty when a window went unexplained.
            for (s, spec) in specs.iter().enumerate().filter(|(_, s)| s.explain == Explain::Always) {
                let top = w.explain.iter().find(|e| e.score == s).map_or(String::new(), |e| {
                    e.top.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>().join(",")
                });
                metrics.push((format!("{name}/{}/top", spec.name), RecordValue::Text(top)));
            }
            // Every record carries the latest forecast (null before the
            // first), so the DBIRTH declares them and a forecast never
            // changes the device's metric set.
            for (s, spec) in specs.iter().enumerate().filter(|(_, s)| s.forecast.is_some()) {
                let latest = w.latest.get(s).copied().flatten().map(|(_, f)| f);
                for (what, v) in [
                    ("to_warn_s", latest.and_then(|f| f.to_warn_s)),
                    ("to_alarm_s", latest.and_then(|f| f.to_alarm_s)),
                ] {
                    metrics.push((format!("{name}/{}/{what}", spec.name), RecordValue::Double(v)));
                }
            }
            let payload = Record::Data { ts: w.ts, metrics }.encode();
            NewEntry {
                created_ms,
                ts: w.ts,
                topic: id.render(w.device),
                payload,
                retain: false,
                sparkplug: true,
            }
        }
    }
}

/// A window as the pipeline's shadow model scored it, for `shadow_topic`:
/// the score payload of the shadow's model and scores, with `"shadow": true`.
pub(super) fn shadow_entry(
    input: &TopicTemplate,
    topic: &TopicTemplate,
    origin: &Origin,
    specs: &[ScoreSpec],
    w: &Scored,
    created_ms: i64,
) -> NewEntry {
    let payload =
        serde_json::to_vec(&payload(origin, specs, w, true)).expect("writing JSON to a Vec cannot fail");
    NewEntry {
        created_ms,
        ts: w.ts,
        topic: topic.render(input, w.device),
        payload,
        retain: false,
        sparkplug: false,
    }
}

/// The alarm payload (retained on `alarm_topic`). Fields in name order and
/// scores widened to f64, unlike the score payload: retained alarm states
/// are compared byte for byte (a duplicate must equal the first copy).
#[derive(Serialize)]
struct AlarmPayload<'a> {
    active: &'a [String],
    device: &'a str,
    #[serde(skip_serializing_if = "Explained::is_empty")]
    explain: Explained<'a>,
    model: &'a str,
    model_version: &'a str,
    pipeline: &'a str,
    previous: Option<State>,
    scores: WideScores<'a>,
    state: State,
    ts: i64,
}

struct WideScores<'a>(Scores<'a>);

impl Serialize for WideScores<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.specs.len()))?;
        for (spec, v) in self.0.specs.iter().zip(self.0.values) {
            map.serialize_entry(&spec.name, &f64::from(*v))?;
        }
        map.end()
    }
}

/// A device's alarm state changed (or is first published after a start).
pub(super) fn alarm_entry(
    input: &TopicTemplate,
    alarm_topic: &TopicTemplate,
    origin: &Origin,
    specs: &[ScoreSpec],
    w: &Scored,
    t: &Transition,
    created_ms: i64,
) -> NewEntry {
    let body = AlarmPayload {
        active: &t.active,
        device: w.device,
        model: &origin.model.name,
        model_version: &origin.model.version,
        pipeline: &origin.pipeline,
        previous: t.previous,
        scores: WideScores(Scores { specs, values: w.values }),
        state: t.state,
        ts: w.ts,
        explain: Explained { specs, explain: w.explain },
    };
    let payload = serde_json::to_vec(&body).expect("writing JSON to a Vec cannot fail");
    NewEntry {
        created_ms,
        ts: w.ts,
        topic: alarm_topic.render(input, w.device),
        payload,
        retain: true,
        sparkplug: false,
    }
}

/// A Sparkplug device's death (it was evicted, on the wall clock, which
/// stands in for its data time): DDEATH.
pub(super) fn death_entry(id: &DeviceIdTemplate, device: &str, created_ms: i64) -> NewEntry {
    NewEntry {
        created_ms,
        ts: created_ms,
        topic: id.render(device),
        payload: Record::Death.encode(),
        retain: false,
        sparkplug: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::card::Direction;

    #[test]
    fn spec_payload_shape() {
        let mut out = Vec::new();
        let specs = [spec("anomaly"), spec("quality")];
        let values = [0.031, 0.982];
        let w = Scored {
            device: "line1/press3",
            ts: 1732400000123,
            values: &values,
            state: State::Ok,
            explain: &[],
            forecast: &[],
            latest: &[],
        };
        write_payload(&mut out, &origin(), &specs, &w);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"ts":1732400000123,"device":"line1/press3","pipeline":"press-line","model":"line-mlp","model_version":"3","scores":{"anomaly":0.031,"quality":0.982},"state":"ok"}"#
        );
        // Explained: the features by |delta|, per explained score, after the state.
        let explain =
            [Explanation { score: 0, top: vec![("vibration_rms".into(), 0.61), ("torque".into(), -0.125)] }];
        write_payload(&mut out, &origin(), &specs, &Scored { explain: &explain, ..w });
        assert!(
            std::str::from_utf8(&out).unwrap().ends_with(
                r#""state":"ok","explain":{"anomaly":[{"feature":"vibration_rms","delta":0.61},{"feature":"torque","delta":-0.125}]}}"#
            ),
            "{}",
            std::str::from_utf8(&out).unwrap()
        );
        let f = Forecast { slope_per_hour: 0.5, z: 3.25, to_warn_s: Some(0.0), to_alarm_s: None };
        write_payload(&mut out, &origin(), &specs, &Scored { forecast: &[(0, f)], ..w });
        assert!(
            std::str::from_utf8(&out).unwrap().ends_with(
                r#""state":"ok","forecast":{"anomaly":{"slope_per_hour":0.5,"z":3.25,"to_warn_s":0.0,"to_alarm_s":null}}}"#
            ),
            "{}",
            std::str::from_utf8(&out).unwrap()
        );
    }

    fn spec(name: &str) -> ScoreSpec {
        ScoreSpec {
            kind: crate::model::card::ScoreKind::Column,
            name: name.into(),
            output: name.into(),
            index: 0,
            warn: None,
            alarm: None,
            direction: Direction::Above,
            clear: None,
            debounce: 1,
            explain: crate::model::card::Explain::Never,
            explain_top: 3,
            forecast: None,
        }
    }

    fn origin() -> Origin {
        let model = ModelId { name: "line-mlp".into(), version: "3".into(), sha256: "00".into() };
        Origin { pipeline: "press-line".into(), model }
    }

    /// The alarm payload's bytes are what serde_json's map writes (keys in
    /// name order, scores as f64), as subscribers read them.
    #[test]
    fn alarm_payload_shape() {
        let input = TopicTemplate::parse_input("plant/{line}/{machine}/telemetry").unwrap();
        let topic = TopicTemplate::parse_output("plant/{line}/{machine}/lineguard/alarm", &input).unwrap();
        let specs = [spec("anomaly"), spec("quality")];
        let values = [0.97f32, 0.88];
        let w = Scored {
            device: "line1/press3",
            ts: 1732400000123,
            values: &values,
            state: State::Alarm,
            explain: &[],
            forecast: &[],
            latest: &[],
        };
        let t =
            Transition { previous: Some(State::Warn), state: State::Alarm, active: vec!["anomaly".into()] };
        let e = alarm_entry(&input, &topic, &origin(), &specs, &w, &t, 5);
        assert_eq!(e.topic, "plant/line1/press3/lineguard/alarm");
        assert!(e.retain && !e.sparkplug);
        let reference = serde_json::json!({
            "ts": 1732400000123i64,
            "device": "line1/press3",
            "pipeline": "press-line",
            "model": "line-mlp",
            "model_version": "3",
            "state": "alarm",
            "previous": "warn",
            "active": ["anomaly"],
            "scores": {"anomaly": serde_json::json!(0.97f32), "quality": serde_json::json!(0.88f32)},
        });
        assert_eq!(String::from_utf8(e.payload).unwrap(), reference.to_string());
    }

    /// A Sparkplug pipeline's window becomes a record of its device: a metric
    /// per score and the state, in the pipeline's folder.
    #[test]
    fn sparkplug_records_and_deaths() {
        let input = TopicTemplate::parse_input("plant/{line}/{machine}/telemetry").unwrap();
        let id = DeviceIdTemplate::parse("{line}.{machine}", input.placeholders()).unwrap();
        let pipeline = Pipeline {
            name: "p".into(),
            model: crate::model::ModelFiles::beside("m.onnx".into()),
            input: crate::ingest::input::Input::lineguard(input),
            output: Output::Sparkplug(id.clone()),
            hop: 1,
            alarm: None,
            drift: crate::pipeline::drift::DriftSettings::defaults("lineguard/t/drift/p".into()),
            shadow: None,
            rollups: Vec::new(),
        };
        let values = [0.5f32];
        let w = Scored {
            device: "l1/m2",
            ts: 9,
            values: &values,
            state: State::Ok,
            explain: &[],
            forecast: &[],
            latest: &[],
        };
        let e = score_entry(&pipeline, &origin(), &[spec("anomaly")], &w, 1);
        assert_eq!((e.topic.as_str(), e.sparkplug, e.retain), ("l1.m2", true, false));
        let expected = Record::Data {
            ts: 9,
            metrics: vec![
                ("p/anomaly".into(), RecordValue::Float(0.5)),
                ("p/state".into(), RecordValue::Text("ok".into())),
            ],
        };
        assert_eq!(Record::decode(&e.payload), Some(expected));
        // explain = "always": a top metric in every record, empty when unexplained.
        let always = ScoreSpec { explain: Explain::Always, ..spec("anomaly") };
        let explain = [Explanation { score: 0, top: vec![("torque".into(), 0.3), ("feed".into(), 0.1)] }];
        for (explain, top) in [(&explain[..], "torque,feed"), (&[][..], "")] {
            let e =
                score_entry(&pipeline, &origin(), std::slice::from_ref(&always), &Scored { explain, ..w }, 1);
            let Some(Record::Data { metrics, .. }) = Record::decode(&e.payload) else { panic!("not data") };
            assert_eq!(metrics.last(), Some(&("p/anomaly/top".to_string(), RecordValue::Text(top.into()))));
        }
        // A forecasting score: its latest crossings in every record, null before any.
        let forecasting = ScoreSpec {
            forecast: Some(crate::model::card::ForecastSpec { secs: 600, horizon_secs: 86_400 }),
            ..spec("anomaly")
        };
        let f = Forecast { slope_per_hour: 1.0, z: 3.0, to_warn_s: Some(0.0), to_alarm_s: None };
        for (latest, warn) in [(&[Some((9, f))][..], Some(0.0)), (&[][..], None)] {
            let e = score_entry(
                &pipeline,
                &origin(),
                std::slice::from_ref(&forecasting),
                &Scored { latest, ..w },
                1,
            );
            let Some(Record::Data { metrics, .. }) = Record::decode(&e.payload) else { panic!("not data") };
            assert_eq!(
                metrics[2..],
                [
                    ("p/anomaly/to_warn_s".to_string(), RecordValue::Double(warn)),
                    ("p/anomaly/to_alarm_s".to_string(), RecordValue::Double(None))
                ]
            );
        }
        let d = death_entry(&id, "l1/m2", 1);
        assert_eq!((d.topic.as_str(), Record::decode(&d.payload)), ("l1.m2", Some(Record::Death)));
    }
}
