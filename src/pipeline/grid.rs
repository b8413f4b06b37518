//! The sampling clock: one device's samples formed on the grid
//! `t_k = k * period` (epoch aligned) from values that come when they come
//! (tags reporting separately, by exception, or whole samples at any pace).
//!
//! The rule, in the data's own time (never the wall clock, so replaying a
//! recording forms the same samples):
//! - the sample at `t_k` holds, per feature, the newest value with
//!   `ts <= t_k`, provided `ts > t_k - stale_after`;
//! - `t_k` is final once the device has delivered any value with `ts > t_k`;
//!   a value at or before a final grid point is late;
//! - a final grid point where some feature has no such value makes no
//!   sample (the caller starts the window again).
//!
//! Why two slots per feature suffice: every grid point before the newest
//! value's `ts` is final, so the values not yet used (`pending`) all lie
//! within one period after the newest final point, and the next point to
//! become final takes each feature's newest of them. Earlier values are
//! `held`. A jump over many points costs at most `stale_after / period`
//! steps: once a point is stale, every later one before the new value is too.

use crate::model::card::SampleClock;

/// No value (yet).
const NONE: i64 = i64::MIN;

/// One device's assembly state.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Assembly {
    /// The newest grid point made final; `NONE` before the first value.
    final_ts: i64,
    /// Per feature, `(ts, value)` of the newest value at or before `final_ts`.
    held: Box<[(i64, f64)]>,
    /// Per feature, `(ts, value)` of the newest value after `final_ts`.
    pending: Box<[(i64, f64)]>,
}

/// What the next final grid point made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A sample at this grid time, its raw values written into the row.
    Sample(i64),
    /// Some feature had no fresh value at this grid time: no sample.
    Stale(i64),
}

/// The largest grid point strictly before `ts`.
fn grid_below(ts: i64, period: i64) -> i64 {
    ts.saturating_sub(1).div_euclid(period).saturating_mul(period)
}

/// Bytes of one assembly in a snapshot (see [`Assembly::encode`]).
pub(super) fn encoded_len(features: usize) -> usize {
    8 + 32 * features
}

impl Assembly {
    pub(super) fn new(features: usize) -> Self {
        Self {
            final_ts: NONE,
            held: vec![(NONE, 0.0); features].into_boxed_slice(),
            pending: vec![(NONE, 0.0); features].into_boxed_slice(),
        }
    }

    /// Whether a value stamped `ts` can still be used: not at or before a
    /// grid point already final.
    pub(super) fn admits(&self, ts: i64) -> bool {
        self.final_ts == NONE || ts > self.final_ts
    }

    /// The newest final grid point, if any.
    pub(super) fn final_ts(&self) -> Option<i64> {
        (self.final_ts != NONE).then_some(self.final_ts)
    }

    /// Make the next grid point before `ts` final, if there is one, and say
    /// what it made (a sample's raw values go into `row`). Call until it
    /// returns `None`, then [`Assembly::hold`] the value stamped `ts`.
    pub(super) fn advance(&mut self, clock: SampleClock, ts: i64, row: &mut [f64]) -> Option<Step> {
        let period = clock.period_ms;
        if self.final_ts == NONE {
            // The first value: every point before it is final, and empty.
            self.final_ts = grid_below(ts, period);
            return None;
        }
        let next = self.final_ts.checked_add(period)?;
        if next >= ts {
            return None;
        }
        for (held, pending) in self.held.iter_mut().zip(self.pending.iter_mut()) {
            if pending.0 != NONE {
                *held = std::mem::replace(pending, (NONE, 0.0));
            }
        }
        let fresh_after = next.saturating_sub(clock.stale_after_ms);
        if self.held.iter().all(|&(t, _)| t != NONE && t > fresh_after) {
            self.final_ts = next;
            row.iter_mut().zip(self.held.iter()).for_each(|(o, &(_, v))| *o = v);
            Some(Step::Sample(next))
        } else {
            // No value comes before `ts`, so every point up to it is stale too.
            self.final_ts = grid_below(ts, period);
            Some(Step::Stale(next))
        }
    }

    /// Keep the values of `row` (NaN: absent) stamped `ts`, once
    /// [`Assembly::advance`] has returned `None` for it. Returns whether all
    /// of them were held already (a repeat, such as a redelivery).
    pub(super) fn hold(&mut self, ts: i64, row: &[f64]) -> bool {
        let mut repeat = true;
        for (slot, &v) in self.pending.iter_mut().zip(row) {
            if v.is_nan() {
                continue;
            }
            if *slot != (ts, v) {
                repeat = false;
            }
            // A value older than one already pending for this point is superseded.
            if slot.0 == NONE || ts >= slot.0 {
                *slot = (ts, v);
            }
        }
        repeat
    }

    /// Final grid point, then per feature held ts, held value, pending ts,
    /// pending value; little-endian.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.final_ts.to_le_bytes());
        for (h, p) in self.held.iter().zip(self.pending.iter()) {
            out.extend_from_slice(&h.0.to_le_bytes());
            out.extend_from_slice(&h.1.to_le_bytes());
            out.extend_from_slice(&p.0.to_le_bytes());
            out.extend_from_slice(&p.1.to_le_bytes());
        }
    }

    /// The inverse of [`Assembly::encode`]; `None` when the bytes are not one.
    pub(super) fn decode(bytes: &[u8], features: usize) -> Option<Self> {
        if bytes.len() != encoded_len(features) {
            return None;
        }
        let i64_at = |i: usize| i64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let f64_at = |i: usize| f64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let mut a = Self::new(features);
        a.final_ts = i64_at(0);
        for f in 0..features {
            let at = 8 + 32 * f;
            a.held[f] = (i64_at(at), f64_at(at + 8));
            a.pending[f] = (i64_at(at + 16), f64_at(at + 24));
        }
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOCK: SampleClock = SampleClock { period_ms: 100, stale_after_ms: 300 };
    const NAN: f64 = f64::NAN;

    /// Offer one value of feature `f` (of 2) and collect the steps it made.
    fn offer(a: &mut Assembly, ts: i64, f: usize, v: f64) -> Vec<(Step, [f64; 2])> {
        let mut steps = Vec::new();
        let mut row = [0.0; 2];
        assert!(a.admits(ts), "{ts} is late");
        while let Some(s) = a.advance(CLOCK, ts, &mut row) {
            steps.push((s, row));
        }
        let mut values = [NAN; 2];
        values[f] = v;
        a.hold(ts, &values);
        steps
    }

    #[test]
    fn each_grid_point_takes_the_newest_value_of_each_feature_at_or_before_it() {
        let mut a = Assembly::new(2);
        assert!(offer(&mut a, 1030, 0, 1.0).is_empty());
        assert!(offer(&mut a, 1070, 1, 10.0).is_empty());
        assert!(offer(&mut a, 1090, 0, 2.0).is_empty(), "1100 is not final before a value after it");
        assert!(offer(&mut a, 1100, 1, 11.0).is_empty(), "a value at 1100 belongs to 1100");
        assert_eq!(offer(&mut a, 1105, 0, 3.0), [(Step::Sample(1100), [2.0, 11.0])]);
        assert!(!a.admits(1100), "1100 is final: a value for it is late");
        assert!(a.admits(1101));
        // Feature 1 stays silent; its 11.0 (at 1100) is held while fresher than 300 ms.
        assert_eq!(offer(&mut a, 1201, 0, 4.0), [(Step::Sample(1200), [3.0, 11.0])]);
        assert_eq!(
            offer(&mut a, 1450, 0, 5.0),
            [(Step::Sample(1300), [4.0, 11.0]), (Step::Stale(1400), [4.0, 11.0])],
            "at 1400, 11.0 is 300 ms old: stale"
        );
        assert_eq!(a.final_ts(), Some(1400));
    }

    #[test]
    fn a_long_silence_costs_one_step() {
        let mut a = Assembly::new(2);
        offer(&mut a, 50, 0, 1.0);
        offer(&mut a, 60, 1, 1.0);
        let steps = offer(&mut a, 3_600_000 + 50, 0, 2.0);
        assert_eq!(steps.len(), 4, "samples while the values are fresh, then one stale step: {steps:?}");
        assert_eq!(steps[3].0, Step::Stale(400));
        assert_eq!(a.final_ts(), Some(3_600_000));
        let steps = offer(&mut a, 3_600_000 + 60, 1, 2.0);
        assert!(steps.is_empty());
        assert_eq!(offer(&mut a, 3_600_000 + 101, 0, 3.0), [(Step::Sample(3_600_100), [2.0, 2.0])]);
    }

    #[test]
    fn whole_samples_off_the_grid_and_repeats() {
        let mut a = Assembly::new(2);
        let mut row = [0.0; 2];
        for (ts, v) in [(1010, 1.0), (1130, 2.0), (1250, 3.0)] {
            while a.advance(CLOCK, ts, &mut row).is_some() {}
            assert!(!a.hold(ts, &[v, v * 10.0]));
        }
        assert!(a.hold(1250, &[3.0, 30.0]), "the same values again are a repeat");
        assert!(!a.hold(1250, &[3.5, 30.0]));
        assert_eq!(a.advance(CLOCK, 1301, &mut row), Some(Step::Sample(1300)));
        assert_eq!(row, [3.5, 30.0], "the newest at the same ts wins");
    }

    #[test]
    fn encodes_and_decodes() {
        let mut a = Assembly::new(2);
        offer(&mut a, 1030, 0, 1.0);
        offer(&mut a, 1170, 1, 10.0);
        let mut bytes = Vec::new();
        a.encode(&mut bytes);
        assert_eq!(bytes.len(), encoded_len(2));
        assert_eq!(Assembly::decode(&bytes, 2), Some(a));
        assert_eq!(Assembly::decode(&bytes[1..], 2), None);
    }
}
