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
//! first window of a device with no stored state, so a retained state left
//! by an earlier run is corrected — is a transition to publish, retained.
//!
//! A device's state machines are stored with its window (see
//! [`Alarms::store_with`]): a restart, or the other instance of a redundant
//! pair, goes on from the same debounce and hysteresis, so the same
//! telemetry gives the same transitions.

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

    /// Append `device`'s state machines to its stored window `snap`: after
    /// the window's bytes, one byte per score's state and its two counters,
    /// a fingerprint of the scores they were made for, a CRC-32 of the
    /// record, the record's length and [`STORED_MAGIC`]. A device with no
    /// state appends nothing.
    pub(super) fn store_with(&self, device: &str, specs: &[ScoreSpec], snap: &mut Vec<u8>) {
        let Some(states) = self.devices.get(device) else { return };
        let start = snap.len();
        snap.extend_from_slice(&specs_fingerprint(specs).to_le_bytes());
        for a in states {
            snap.push(a.state as u8);
            snap.extend_from_slice(&a.up.to_le_bytes());
            snap.extend_from_slice(&a.down.to_le_bytes());
        }
        super::stored::seal(snap, start, STORED_MAGIC);
    }

    /// Split a stored value into the window's bytes and the alarm record
    /// [`Alarms::store_with`] appended (none in a store from before).
    pub(super) fn split_stored(stored: &[u8]) -> (&[u8], Option<&[u8]>) {
        super::stored::split(stored, STORED_MAGIC)
    }

    /// Restore `device`'s state machines from a record `store_with` wrote,
    /// if it passes its checksum and was made for these scores; otherwise
    /// the device starts afresh (its first window is published).
    pub(super) fn restore(&mut self, device: &str, specs: &[ScoreSpec], record: &[u8]) -> bool {
        let Some(body) = super::stored::checked(record) else { return false };
        let Some((fp, states)) = body.split_at_checked(8) else { return false };
        if fp != specs_fingerprint(specs).to_le_bytes() || states.len() != 9 * specs.len() {
            return false;
        }
        let mut restored = Vec::with_capacity(specs.len());
        for c in states.chunks_exact(9) {
            let state = match c[0] {
                0 => State::Ok,
                1 => State::Warn,
                2 => State::Alarm,
                _ => return false,
            };
            let u32_at = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().expect("4 bytes"));
            restored.push(ScoreAlarm { state, up: u32_at(1), down: u32_at(5) });
        }
        self.devices.insert(device.to_string(), restored);
        true
    }

    /// Forget devices (evicted windows).
    pub(super) fn forget(&mut self, devices: &[String]) {
        for d in devices {
            self.devices.remove(d);
        }
    }
}

/// Ends a stored window that carries its device's alarm state machines.
const STORED_MAGIC: [u8; 4] = *b"LGa1";

/// What stored state machines were made for: each score's name, levels,
/// direction and debounce (FNV-1a, stable across builds).
fn specs_fingerprint(specs: &[ScoreSpec]) -> u64 {
    let mut h = super::stored::Fnv::default();
    for s in specs {
        h.eat(s.name.as_bytes());
        h.eat(&[0]);
        for level in [s.warn, s.alarm, s.clear] {
            h.eat(&level.map_or(f64::NAN, |v| v).to_le_bytes());
        }
        h.eat(&[matches!(s.direction, Direction::Above) as u8]);
        h.eat(&s.debounce.to_le_bytes());
    }
    h.0
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
            forecast: None,
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

    #[test]
    fn stored_state_machines_go_on_where_they_were() {
        let s = spec(3, Some(0.5));
        let specs = std::slice::from_ref(&s);
        // Two windows into a debounce of three, in a hysteresis band after an alarm.
        let values = [0.95, 0.95, 0.95, 0.7, 0.3, 0.3];
        let mut a = Alarms::default();
        run(&mut a, &s, &values);
        let mut stored = b"window bytes".to_vec();
        a.store_with("d", specs, &mut stored);
        a.store_with("unknown", specs, &mut stored);
        let (window, record) = Alarms::split_stored(&stored);
        assert_eq!(window, b"window bytes", "the window's bytes come back as they were");
        let mut b = Alarms::default();
        assert!(b.restore("d", specs, record.expect("a record")));
        let rest = [0.3, 0.95, 0.3, 0.3, 0.3];
        assert_eq!(
            run(&mut b, &s, &rest),
            run(&mut a, &s, &rest),
            "the same transitions as without a restart"
        );
        assert_eq!(run(&mut Alarms::default(), &s, &[0.3])[0], Some(State::Ok), "without it: a first window");

        let other = ScoreSpec { debounce: 2, ..s.clone() };
        assert!(
            !Alarms::default().restore("d", std::slice::from_ref(&other), record.unwrap()),
            "other scores"
        );
        let mut damaged = record.unwrap().to_vec();
        damaged[9] ^= 1;
        assert!(!Alarms::default().restore("d", specs, &damaged), "a damaged record");
        assert_eq!(Alarms::split_stored(b"no record"), (&b"no record"[..], None), "a window stored before");
    }
}
