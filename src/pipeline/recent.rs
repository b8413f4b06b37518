//! Each device's latest scores and a short trend of them, for `/devices`
//! and the status page. Kept by the pipeline's worker beside its windows;
//! read only when the HTTP listener asks for a [`PipelineView`].

use std::collections::HashMap;

use serde::Serialize;

use crate::model::card::State;
use crate::pipeline::explain::Explanation;
use crate::pipeline::forecast::ForecastView;

/// Scored windows kept per device for the trend.
pub(crate) const TREND: usize = 30;

#[derive(Debug)]
struct DeviceRecent {
    ts: i64,
    scored_ms: i64,
    state: State,
    /// The last window's scores, card order.
    values: Box<[f32]>,
    /// The last window's explanations (none: it was not explained).
    explain: Vec<Explanation>,
    /// The last [`TREND`] windows' scores, `TREND × scores`, oldest at `head`.
    trend: Box<[f32]>,
    head: usize,
    len: usize,
}

/// The latest scores of every device of one pipeline.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    scores: usize,
    devices: HashMap<String, DeviceRecent>,
}

impl Recent {
    pub(crate) fn new(scores: usize) -> Self {
        Self { scores, devices: HashMap::new() }
    }

    /// A window scored: `values` in card order, and what explains it.
    pub(crate) fn record(
        &mut self,
        device: &str,
        ts: i64,
        values: &[f32],
        explain: &[Explanation],
        state: State,
        now_ms: i64,
    ) {
        debug_assert_eq!(values.len(), self.scores);
        let k = self.scores;
        let d = match self.devices.get_mut(device) {
            Some(d) => d,
            None => self.devices.entry(device.to_string()).or_insert_with(|| DeviceRecent {
                ts,
                scored_ms: now_ms,
                state,
                values: vec![0.0; k].into_boxed_slice(),
                explain: Vec::new(),
                trend: vec![0.0; k * TREND].into_boxed_slice(),
                head: 0,
                len: 0,
            }),
        };
        (d.ts, d.scored_ms, d.state) = (ts, now_ms, state);
        d.values.copy_from_slice(values);
        // A window that is not explained leaves nothing to copy (and
        // nothing allocated): the previous window's reasons no longer hold.
        d.explain.clear();
        d.explain.extend_from_slice(explain);
        let slot = (d.head + d.len) % TREND;
        d.trend[slot * k..(slot + 1) * k].copy_from_slice(values);
        if d.len < TREND {
            d.len += 1;
        } else {
            d.head = (d.head + 1) % TREND;
        }
    }

    pub(crate) fn forget(&mut self, devices: &[String]) {
        for d in devices {
            self.devices.remove(d);
        }
    }

    /// A model with another number of scores: what is kept no longer fits it.
    pub(crate) fn rescore(&mut self, scores: usize) {
        if scores != self.scores {
            *self = Self::new(scores);
        }
    }

    /// What `device` last scored: (ts, scored at, state, scores, trend per score).
    fn view(&self, device: &str, names: &[String]) -> Option<Scores> {
        let d = self.devices.get(device)?;
        let k = self.scores;
        let values = names.iter().cloned().zip(d.values.iter().map(|v| *v as f64)).collect();
        let trend = names
            .iter()
            .enumerate()
            .map(|(s, name)| {
                let series = (0..d.len).map(|i| d.trend[((d.head + i) % TREND) * k + s] as f64).collect();
                (name.clone(), series)
            })
            .collect();
        let explain = d
            .explain
            .iter()
            .filter_map(|e| {
                let top = e.top.iter().map(|(f, delta)| Contribution { feature: f.clone(), delta: *delta });
                Some((names.get(e.score)?.clone(), top.collect()))
            })
            .collect();
        Some(Scores { ts: d.ts, scored_ms: d.scored_ms, state: d.state, values, explain, trend })
    }
}

struct Scores {
    ts: i64,
    scored_ms: i64,
    state: State,
    values: std::collections::BTreeMap<String, f64>,
    explain: std::collections::BTreeMap<String, Vec<Contribution>>,
    trend: std::collections::BTreeMap<String, Vec<f64>>,
}

/// A feature's part in a score, as the score payload's `explain` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Contribution {
    pub feature: String,
    /// As published: f32, so that `/devices` writes the payload's digits.
    pub delta: f32,
}

/// One device, as `/devices` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct DeviceView {
    pub pipeline: String,
    pub device: String,
    /// The newest sample's ts (the data's own time).
    pub ts: Option<i64>,
    /// When the gateway last received a sample for it (epoch ms).
    pub last_seen_ms: Option<i64>,
    /// Samples in its window, of `window`.
    pub window_fill: usize,
    pub window: usize,
    /// The last scored window: its ts, when it was scored, its scores and
    /// its instantaneous state (none before the window first fills).
    pub scored_ts: Option<i64>,
    pub scored_ms: Option<i64>,
    pub scores: std::collections::BTreeMap<String, f64>,
    pub state: Option<State>,
    /// The debounced alarm state (with `alarm_topic`).
    pub alarm: Option<State>,
    /// What drove the last scored window, per explained score (the score
    /// payload's `explain`); absent when it was not explained.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub explain: std::collections::BTreeMap<String, Vec<Contribution>>,
    /// The last scored windows' scores, oldest first.
    pub trend: std::collections::BTreeMap<String, Vec<f64>>,
    /// The latest forecast per score that has one (see the score payload's
    /// `forecast`; the worker adds them from its forecasts).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub forecast: std::collections::BTreeMap<String, ForecastView>,
}

/// One device's window, as the worker reads it from its windows.
#[derive(Debug, Clone, Copy)]
pub struct WindowFill<'a> {
    pub device: &'a str,
    pub fill: usize,
    pub newest_ts: Option<i64>,
    pub last_seen_ms: Option<i64>,
}

/// Every device of one pipeline, and the features whose inputs drift.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PipelineView {
    pub pipeline: String,
    pub devices: Vec<DeviceView>,
    pub drifting: Vec<String>,
    pub rollups: Vec<crate::pipeline::rollup::RollupMessage>,
}

/// Build a pipeline's view from its windows, latest scores and alarm
/// states, and the features `drifting` now.
pub(crate) fn pipeline_view<'a>(
    pipeline: &str,
    window: usize,
    names: &[String],
    windows: impl Iterator<Item = WindowFill<'a>>,
    recent: &Recent,
    alarm: impl Fn(&str) -> Option<State>,
    drifting: Vec<String>,
) -> PipelineView {
    let devices = windows
        .map(|w| {
            let scores = recent.view(w.device, names);
            DeviceView {
                pipeline: pipeline.to_string(),
                device: w.device.to_string(),
                ts: w.newest_ts,
                last_seen_ms: w.last_seen_ms,
                window_fill: w.fill.min(window),
                window,
                scored_ts: scores.as_ref().map(|s| s.ts),
                scored_ms: scores.as_ref().map(|s| s.scored_ms),
                state: scores.as_ref().map(|s| s.state),
                alarm: alarm(w.device),
                scores: scores.as_ref().map(|s| s.values.clone()).unwrap_or_default(),
                explain: scores.as_ref().map(|s| s.explain.clone()).unwrap_or_default(),
                forecast: Default::default(),
                trend: scores.map(|s| s.trend).unwrap_or_default(),
            }
        })
        .collect();
    PipelineView { pipeline: pipeline.to_string(), devices, drifting, rollups: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_scores_and_a_bounded_trend_oldest_first() {
        let mut r = Recent::new(2);
        for i in 0..(TREND + 5) {
            r.record("m1", i as i64, &[i as f32, -(i as f32)], &[], State::Ok, 1000 + i as i64);
        }
        let why = [Explanation { score: 1, top: vec![("torque".into(), 0.5), ("feed".into(), -0.25)] }];
        r.record("m2", 6, &[0.5, 0.25], &why, State::Alarm, 8);
        r.record("m4", 1, &[0.1, 0.2], &why, State::Warn, 2);
        r.record("m4", 2, &[0.1, 0.2], &[], State::Ok, 3);
        r.record("m2", 7, &[0.5, 0.25], &why, State::Alarm, 9);
        let names = ["anomaly".to_string(), "quality".to_string()];
        let fills = [
            WindowFill { device: "m1", fill: 99, newest_ts: Some(40), last_seen_ms: Some(5) },
            WindowFill { device: "m2", fill: 3, newest_ts: Some(7), last_seen_ms: Some(9) },
            WindowFill { device: "m3", fill: 1, newest_ts: Some(1), last_seen_ms: Some(2) },
        ];
        let drifting = vec!["torque".to_string()];
        let v = pipeline_view(
            "p",
            10,
            &names,
            fills.into_iter(),
            &r,
            |d| (d == "m2").then_some(State::Warn),
            drifting,
        );
        assert_eq!(v.drifting, ["torque"]);
        let m1 = &v.devices[0];
        assert_eq!(m1.window_fill, 10);
        assert_eq!(m1.scores["anomaly"], (TREND + 4) as f64);
        assert_eq!(m1.trend["anomaly"].len(), TREND);
        assert_eq!(m1.trend["anomaly"][0], 5.0, "oldest first");
        assert_eq!(*m1.trend["quality"].last().unwrap(), -((TREND + 4) as f64));
        assert_eq!((v.devices[1].state, v.devices[1].alarm), (Some(State::Alarm), Some(State::Warn)));
        let quality = &v.devices[1].explain["quality"];
        assert_eq!(
            quality,
            &[
                Contribution { feature: "torque".into(), delta: 0.5 },
                Contribution { feature: "feed".into(), delta: -0.25 }
            ]
        );
        assert!(m1.explain.is_empty(), "never explained");
        assert!(r.view("m4", &names).unwrap().explain.is_empty(), "its last window was not explained");
        assert_eq!(v.devices[2].state, None, "not scored yet");
        assert!(v.devices[2].scores.is_empty());
        r.forget(&["m1".to_string()]);
        r.rescore(3);
        assert!(r.view("m2", &names).is_none(), "another model's scores are not kept");
    }
}
