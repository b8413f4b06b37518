//! Alarm states with hysteresis and debounce, per device.
//!
//! Each score with thresholds has its own state machine:
//! - it *rises* to the level its value reaches (warn or alarm) once that
//!   level, or worse, has held for `debounce` consecutive windows;
//! - it *falls* once the value has been back past its `clear` level (the
//!   hysteresis band; without `clear` there is no band) for `debounce`
//!   consecutive windows, to the level the value is at then.
//!
//! A device's alarm state is the worst of its scores'. Every change — and the
//! first window of a device after start, so a retained state left by an
//! earlier run is corrected — is a transition to publish, retained.

use std::collections::HashMap;

use crate::model::card::{Direction, ScoreSpec, State};

#[derive(Debug, Clone, Copy)]
struct ScoreAlarm {
    state: State,
    /// Consecutive windows worse than `state`, and back past `clear` below it.
    up: u32,
    down: u32,
}

/// A change of a device's alarm state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Transition {
    pub previous: Option<State>,
    pub state: State,
    /// Scores not `ok`, by name.
    pub active: Vec<String>,
}

#[derive(Debug, Default)]
pub(super) struct Alarms {
    devices: HashMap<String, Vec<ScoreAlarm>>,
}

fn cleared(spec: &ScoreSpec, value: f32) -> bool {
    let Some(clear) = spec.clear else { return true };
    let clear = clear as f32;
    match spec.direction {
        Direction::Above => value < clear,
        Direction::Below => value > clear,
    }
}

impl Alarms {
    /// Feed one window's scores (card order); returns the transition, if any.
    pub(super) fn update(&mut self, device: &str, specs: &[ScoreSpec], values: &[f32]) -> Option<Transition> {
        let first = !self.devices.contains_key(device);
        let states = self.devices.entry(device.to_string()).or_insert_with(|| {
            specs.iter().zip(values).map(|(s, v)| ScoreAlarm { state: s.state(*v), up: 0, down: 0 }).collect()
        });
        let previous = states.iter().map(|a| a.state).max().unwrap_or(State::Ok);
        if !first {
            for ((a, spec), &v) in states.iter_mut().zip(specs).zip(values) {
                let level = spec.state(v);
                let debounce = spec.debounce.max(1);
                if level > a.state {
                    (a.up, a.down) = (a.up + 1, 0);
                    if a.up >= debounce {
                        (a.state, a.up) = (level, 0);
                    }
                } else if level < a.state && cleared(spec, v) {
                    (a.up, a.down) = (0, a.down + 1);
                    if a.down >= debounce {
                        (a.state, a.down) = (level, 0);
                    }
                } else {
                    (a.up, a.down) = (0, 0);
                }
            }
        }
        let state = states.iter().map(|a| a.state).max().unwrap_or(State::Ok);
        if first || state != previous {
            let active = specs
                .iter()
                .zip(states.iter())
                .filter(|(_, a)| a.state != State::Ok)
                .map(|(s, _)| s.name.clone())
                .collect();
            return Some(Transition { previous: (!first).then_some(previous), state, active });
        }
        None
    }

    /// A device's debounced alarm state (the worst of its scores').
    pub(super) fn state(&self, device: &str) -> Option<State> {
        self.devices.get(device).map(|s| s.iter().map(|a| a.state).max().unwrap_or(State::Ok))
    }

    /// Forget devices (evicted windows).
    pub(super) fn forget(&mut self, devices: &[String]) {
        for d in devices {
            self.devices.remove(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(debounce: u32, clear: Option<f64>) -> ScoreSpec {
        ScoreSpec {
            kind: crate::model::card::ScoreKind::Column,
            name: "anomaly".into(),
            output: "anomaly".into(),
            index: 0,
            warn: Some(0.6),
            alarm: Some(0.9),
            direction: Direction::Above,
            clear,
            debounce,
            explain: crate::model::card::Explain::Never,
            explain_top: 3,
        }
    }

    fn run(a: &mut Alarms, spec: &ScoreSpec, values: &[f32]) -> Vec<Option<State>> {
        values.iter().map(|v| a.update("d", std::slice::from_ref(spec), &[*v]).map(|t| t.state)).collect()
    }

    #[test]
    fn first_window_reports_the_state_then_only_changes() {
        let mut a = Alarms::default();
        let s = spec(1, None);
        assert_eq!(
            run(&mut a, &s, &[0.1, 0.2, 0.95, 0.95, 0.1]),
            [Some(State::Ok), None, Some(State::Alarm), None, Some(State::Ok)]
        );
    }

    #[test]
    fn debounce_needs_consecutive_windows() {
        let mut a = Alarms::default();
        let s = spec(3, None);
        // A single spike does not raise; three in a row do.
        let got = run(&mut a, &s, &[0.1, 0.95, 0.1, 0.95, 0.95, 0.95, 0.1, 0.1, 0.1]);
        assert_eq!(
            got,
            [Some(State::Ok), None, None, None, None, Some(State::Alarm), None, None, Some(State::Ok)]
        );
    }

    #[test]
    fn hysteresis_holds_until_the_clear_level() {
        let mut a = Alarms::default();
        let s = spec(1, Some(0.4));
        // Up to warn at 0.7; 0.5 is below warn but above clear: stays warn; 0.3 clears.
        assert_eq!(
            run(&mut a, &s, &[0.1, 0.7, 0.5, 0.55, 0.3]),
            [Some(State::Ok), Some(State::Warn), None, None, Some(State::Ok)]
        );
    }

    #[test]
    fn below_direction_and_mixed_steps() {
        let mut a = Alarms::default();
        let s = ScoreSpec {
            kind: crate::model::card::ScoreKind::Column,
            direction: Direction::Below,
            warn: Some(0.8),
            alarm: Some(0.6),
            clear: Some(0.85),
            ..spec(2, None)
        };
        // Low is bad. 0.7 (warn) and 0.5 (alarm): two windows worse than ok raise
        // to alarm, the level at the second; 0.82 is inside the band (hold);
        // two windows above 0.85 clear it.
        let got = run(&mut a, &s, &[0.95, 0.7, 0.5, 0.82, 0.9, 0.9]);
        assert_eq!(got, [Some(State::Ok), None, Some(State::Alarm), None, None, Some(State::Ok)]);
    }
}
