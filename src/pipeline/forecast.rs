//! Forecasts: when a device's score will reach warn and alarm at its trend.
//!
//! Defined so that anyone can recompute a forecast from the published
//! scores (the README's "Forecasts" section is the contract):
//! - data time is cut into buckets of `b = forecast_secs / 64` seconds;
//!   bucket `k = floor(ts_ms / (b·1000))` holds the device's windows whose
//!   `ts` falls in it, and is the point `((k + 0.5)·b, mean of their scores)`;
//! - a window in a later bucket than the device's previous window completes
//!   the buckets before it; the complete buckets among the 64 bucket numbers
//!   before the new window's then make a forecast, if there are 16 or more;
//! - the trend is Theil–Sen (median of pairwise slopes, median intercept),
//!   and counts only when it runs toward the bad side and Mann–Kendall's `z`
//!   says so at the 1% level (|z| > 2.326);
//! - from the newest point, the time to each threshold: 0 when the fit is
//!   already at or past it, else along a counting trend if within the
//!   horizon, else none.
//!
//! Everything is f64 and order-deterministic: a replay, a restart (the state
//! is stored with the device's window, see [`Forecasts::store_with`]) and
//! the other instance of a pair give the same bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::model::card::{Direction, ForecastSpec, ScoreSpec};
use crate::pipeline::stored;

/// Points a forecast spans, and buckets of `forecast_secs`.
pub(crate) const BUCKETS: i64 = 64;
/// Points a forecast needs at least.
pub(crate) const MIN_POINTS: usize = 16;
/// One-sided 1% level of the standard normal: a trend counts beyond it.
pub(crate) const Z_COUNTS: f64 = 2.326;

/// A bucket's width in ms (`b·1000`).
fn bucket_ms(f: &ForecastSpec) -> f64 {
    f.secs as f64 / BUCKETS as f64 * 1000.0
}

/// A bucket's width in seconds (`b`).
fn bucket_secs(f: &ForecastSpec) -> f64 {
    f.secs as f64 / BUCKETS as f64
}

/// A device's latest forecast of a score, and the window (`ts`) that made
/// it, as `/devices` shows it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub(crate) struct ForecastView {
    pub ts: i64,
    #[serde(flatten)]
    pub forecast: Forecast,
}

/// One forecast of one score, as published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Forecast {
    pub slope_per_hour: f64,
    pub z: f64,
    pub to_warn_s: Option<f64>,
    pub to_alarm_s: Option<f64>,
}

/// A score's buckets for one device.
#[derive(Debug, Clone, Default, PartialEq)]
struct Series {
    /// The bucket being filled: its number, the sum of its scores and their count.
    current: Option<(i64, f64, u32)>,
    /// Complete buckets, oldest first: number and mean.
    complete: VecDeque<(i64, f64)>,
    /// The latest forecast made and the `ts` of the window that made it
    /// (what `/devices` and a Sparkplug device's metrics show).
    last: Option<(i64, Forecast)>,
}

impl Series {
    /// Add one window's score; a forecast if it completed buckets and enough
    /// are in reach (`scratch`: the points and slopes, reused).
    fn add(
        &mut self,
        spec: &ScoreSpec,
        f: &ForecastSpec,
        ts: i64,
        value: f64,
        scratch: &mut (Vec<(f64, f64)>, Vec<f64>),
    ) -> Option<Forecast> {
        let k = (ts as f64 / bucket_ms(f)).floor() as i64;
        match &mut self.current {
            None => {
                self.current = Some((k, value, 1));
                None
            }
            Some((ck, sum, n)) if k == *ck => {
                *sum += value;
                *n += 1;
                None
            }
            // Windows of a device come in `ts` order; an earlier bucket is not reopened.
            Some((ck, _, _)) if k < *ck => None,
            Some((ck, sum, n)) => {
                self.complete.push_back((*ck, *sum / f64::from(*n)));
                self.current = Some((k, value, 1));
                while self.complete.front().is_some_and(|(b, _)| *b < k - BUCKETS) {
                    self.complete.pop_front();
                }
                if self.complete.len() < MIN_POINTS {
                    return None;
                }
                let b = bucket_secs(f);
                let (points, slopes) = scratch;
                points.clear();
                points.extend(self.complete.iter().map(|(k, y)| ((*k as f64 + 0.5) * b, *y)));
                let made = forecast_with(spec, f, points, slopes);
                self.last = Some((ts, made));
                Some(made)
            }
        }
    }
}

/// The median of `v` (reordered): of an even count, the mean of the middle
/// two. By selection, not a sort (a forecast's ~2k slopes): the values picked
/// are the same whatever the order they came in.
fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    let (below, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    match n % 2 {
        1 => mid,
        _ => (below.iter().copied().max_by(f64::total_cmp).expect("n >= 2") + mid) / 2.0,
    }
}

/// [`forecast_with`], its own scratch.
#[cfg(test)]
pub(crate) fn forecast(spec: &ScoreSpec, f: &ForecastSpec, points: &[(f64, f64)]) -> Forecast {
    forecast_with(spec, f, points, &mut Vec::new())
}

/// Theil–Sen and Mann–Kendall over `points` (in `x` order, `x` distinct),
/// and the time from the newest point to each threshold (`slopes`: scratch).
fn forecast_with(
    spec: &ScoreSpec,
    f: &ForecastSpec,
    points: &[(f64, f64)],
    slopes: &mut Vec<f64>,
) -> Forecast {
    let n = points.len();
    slopes.clear();
    let mut s: i64 = 0;
    for (i, (xi, yi)) in points.iter().enumerate() {
        for (xj, yj) in &points[i + 1..] {
            slopes.push((yj - yi) / (xj - xi));
            s += match yj.partial_cmp(yi) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    let m = median(slopes);
    let mut intercepts: Vec<f64> = points.iter().map(|(x, y)| y - m * x).collect();
    let c = median(&mut intercepts);
    let nf = n as f64;
    let var = nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0;
    let z = match s {
        0 => 0.0,
        s if s > 0 => (s - 1) as f64 / var.sqrt(),
        s => (s + 1) as f64 / var.sqrt(),
    };
    let counts = match spec.direction {
        Direction::Above => m > 0.0 && z > Z_COUNTS,
        Direction::Below => m < 0.0 && z < -Z_COUNTS,
    };
    let t = points[n - 1].0;
    let fit = m * t + c;
    let horizon = f.horizon_secs as f64;
    let to = |threshold: Option<f64>| {
        let th = threshold?;
        let past = match spec.direction {
            Direction::Above => fit >= th,
            Direction::Below => fit <= th,
        };
        if past {
            return Some(0.0);
        }
        let secs = (th - fit) / m;
        (counts && secs <= horizon).then_some(secs)
    };
    Forecast { slope_per_hour: m * 3600.0, z, to_warn_s: to(spec.warn), to_alarm_s: to(spec.alarm) }
}

/// Every device's buckets, for the scores whose card asks for a forecast.
#[derive(Debug, Default)]
pub(crate) struct Forecasts {
    devices: HashMap<String, Vec<Series>>,
    /// A forecast's points and slopes, reused.
    scratch: (Vec<(f64, f64)>, Vec<f64>),
}

/// Whether any score of `specs` asks for a forecast.
pub(crate) fn wanted(specs: &[ScoreSpec]) -> bool {
    specs.iter().any(|s| s.forecast.is_some())
}

impl Forecasts {
    /// Feed one window's scores (card order); the forecasts it triggered,
    /// by score index (empty: none).
    pub(crate) fn update(
        &mut self,
        device: &str,
        ts: i64,
        specs: &[ScoreSpec],
        values: &[f32],
        out: &mut Vec<(usize, Forecast)>,
    ) {
        out.clear();
        if !wanted(specs) {
            return;
        }
        let series = match self.devices.get_mut(device) {
            Some(s) => s,
            None => {
                self.devices.entry(device.to_string()).or_insert_with(|| vec![Series::default(); specs.len()])
            }
        };
        for (i, ((spec, v), s)) in specs.iter().zip(values).zip(series.iter_mut()).enumerate() {
            let Some(f) = &spec.forecast else { continue };
            if let Some(fc) = s.add(spec, f, ts, f64::from(*v), &mut self.scratch) {
                out.push((i, fc));
            }
        }
    }

    /// The latest forecast of each score of `device` (card order) and the
    /// `ts` of the window that made it, into `out`.
    pub(crate) fn latest_into(&self, device: &str, out: &mut Vec<Option<(i64, Forecast)>>) {
        out.clear();
        if let Some(series) = self.devices.get(device) {
            out.extend(series.iter().map(|s| s.last));
        }
    }

    /// `device`'s latest forecast of each score that has one, by score name.
    pub(crate) fn view(&self, device: &str, specs: &[ScoreSpec]) -> BTreeMap<String, ForecastView> {
        let Some(series) = self.devices.get(device) else { return BTreeMap::new() };
        specs
            .iter()
            .zip(series)
            .filter_map(|(spec, s)| {
                s.last.map(|(ts, forecast)| (spec.name.clone(), ForecastView { ts, forecast }))
            })
            .collect()
    }

    /// Append `device`'s buckets to its stored window `snap` (see
    /// [`stored`]): a fingerprint of what they were made for, then per
    /// score the bucket being filled and the complete ones.
    pub(crate) fn store_with(&self, device: &str, specs: &[ScoreSpec], snap: &mut Vec<u8>) {
        let Some(series) = self.devices.get(device) else { return };
        let start = snap.len();
        snap.extend_from_slice(&fingerprint(specs).to_le_bytes());
        for s in series {
            // The complete buckets lie in the 64 before the current one: a
            // mask of which, then their means (≤ 541 bytes; with the latest
            // forecast, ≤ 582 a score).
            match s.current {
                None => snap.push(0),
                Some((k, sum, n)) => {
                    snap.push(1);
                    snap.extend_from_slice(&k.to_le_bytes());
                    snap.extend_from_slice(&sum.to_le_bytes());
                    snap.extend_from_slice(&n.to_le_bytes());
                    let mask = s.complete.iter().fold(0u64, |m, (b, _)| m | 1 << (b - (k - BUCKETS)));
                    snap.extend_from_slice(&mask.to_le_bytes());
                    for (_, y) in &s.complete {
                        snap.extend_from_slice(&y.to_le_bytes());
                    }
                }
            }
            snap.push(u8::from(s.last.is_some()));
            if let Some((ts, f)) = &s.last {
                snap.extend_from_slice(&ts.to_le_bytes());
                for v in [Some(f.slope_per_hour), Some(f.z), f.to_warn_s, f.to_alarm_s] {
                    // NaN stands for null: a forecast's own numbers are never NaN.
                    snap.extend_from_slice(&v.unwrap_or(f64::NAN).to_le_bytes());
                }
            }
        }
        stored::seal(snap, start, MAGIC);
    }

    /// Split a stored value into what comes before the buckets and their record.
    pub(crate) fn split_stored(stored: &[u8]) -> (&[u8], Option<&[u8]>) {
        stored::split(stored, MAGIC)
    }

    /// Restore `device`'s buckets from a record `store_with` wrote, if it
    /// passes its checksum and was made for these scores.
    pub(crate) fn restore(&mut self, device: &str, specs: &[ScoreSpec], record: &[u8]) -> bool {
        let Some(body) = stored::checked(record) else { return false };
        let mut r = Reader(body);
        if r.u64() != Some(fingerprint(specs)) {
            return false;
        }
        let mut series = Vec::with_capacity(specs.len());
        for _ in specs {
            let mut s = Series::default();
            match r.take::<1>() {
                Some([0]) => {}
                Some([1]) => {
                    let (Some(k), Some(sum), Some(n), Some(mask)) = (r.i64(), r.f64(), r.u32(), r.u64())
                    else {
                        return false;
                    };
                    if n == 0 {
                        return false;
                    }
                    s.current = Some((k, sum, n));
                    for j in (0..BUCKETS).filter(|j| mask & 1 << j != 0) {
                        let Some(y) = r.f64() else { return false };
                        s.complete.push_back((k - BUCKETS + j, y));
                    }
                }
                _ => return false,
            }
            match r.take::<1>() {
                Some([0]) => {}
                Some([1]) => {
                    let (Some(ts), Some(m), Some(z), Some(w), Some(a)) =
                        (r.i64(), r.f64(), r.f64(), r.f64(), r.f64())
                    else {
                        return false;
                    };
                    let null = |v: f64| (!v.is_nan()).then_some(v);
                    let f = Forecast { slope_per_hour: m, z, to_warn_s: null(w), to_alarm_s: null(a) };
                    s.last = Some((ts, f));
                }
                _ => return false,
            }
            series.push(s);
        }
        if !r.0.is_empty() {
            return false;
        }
        self.devices.insert(device.to_string(), series);
        true
    }

    /// Forget devices (evicted windows).
    pub(crate) fn forget(&mut self, devices: &[String]) {
        for d in devices {
            self.devices.remove(d);
        }
    }
}

/// Ends a stored window that carries its device's forecast buckets.
const MAGIC: [u8; 4] = *b"LGf1";

/// What stored buckets were made for: each score's name and forecast span.
fn fingerprint(specs: &[ScoreSpec]) -> u64 {
    let mut h = stored::Fnv::default();
    for s in specs {
        h.eat(s.name.as_bytes());
        h.eat(&[0]);
        h.eat(&s.forecast.map_or(0, |f| f.secs).to_le_bytes());
    }
    h.0
}

/// Reads little-endian numbers off the front of a record.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::card::{Explain, ScoreKind};

    fn spec(direction: Direction, warn: f64, alarm: f64) -> ScoreSpec {
        ScoreSpec {
            kind: ScoreKind::Column,
            name: "anomaly".into(),
            output: "anomaly".into(),
            index: 0,
            warn: Some(warn),
            alarm: Some(alarm),
            direction,
            clear: None,
            debounce: 1,
            explain: Explain::Never,
            explain_top: 3,
            forecast: Some(ForecastSpec { secs: 640, horizon_secs: 86_400 }),
        }
    }

    #[test]
    fn buckets_with_gaps_are_stored_and_restored_as_they_were() {
        let s = spec(Direction::Above, 0.6, 0.9);
        let specs = [s.clone(), ScoreSpec { name: "other".into(), forecast: None, ..s }];
        let mut fs = Forecasts::default();
        let mut out = Vec::new();
        // Buckets of 10 s, a window every 3 s, with data missing from 60 s to 130 s.
        for ts in (0..400_000i64).step_by(3_000).filter(|t| !(60_000..130_000).contains(t)) {
            fs.update("d", ts, &specs, &[0.1 + ts as f32 * 1e-6, 0.5], &mut out);
        }
        let mut snap = Vec::new();
        fs.store_with("d", &specs, &mut snap);
        let (_, record) = Forecasts::split_stored(&snap);
        let mut back = Forecasts::default();
        assert!(back.restore("d", &specs, record.unwrap()));
        assert_eq!(back.devices["d"], fs.devices["d"]);
        assert!(fs.devices["d"][0].complete.len() < 40, "{:?}", fs.devices["d"][0].complete);
    }

    #[test]
    fn the_median_by_selection_is_the_sorted_median() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in [1usize, 2, 3, 16, 17, 120, 2016] {
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((x >> 40) % 7) as f64 - 3.0 // many ties
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_by(f64::total_cmp);
            let want = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
            assert_eq!(median(&mut v.clone()), want, "n = {n}");
        }
    }

    #[test]
    fn a_line_is_fitted_exactly_and_its_crossings_computed() {
        // y = 0.001·x + 0.2 on 20 points: every pairwise slope is 0.001.
        let s = spec(Direction::Above, 0.6, 0.9);
        let f = s.forecast.unwrap();
        let points: Vec<(f64, f64)> =
            (0..20).map(|i| (i as f64 * 10.0 + 5.0, 0.001 * (i as f64 * 10.0 + 5.0) + 0.2)).collect();
        let fc = forecast(&s, &f, &points);
        assert!((fc.slope_per_hour - 3.6).abs() < 1e-9, "{fc:?}");
        // S = 190 pairs all rising; var = 20·19·45/18 = 950.
        assert!((fc.z - 189.0 / 950f64.sqrt()).abs() < 1e-12, "{fc:?}");
        let t = 195.0;
        let fit = 0.001 * t + 0.2;
        assert!((fc.to_warn_s.unwrap() - (0.6 - fit) / 0.001).abs() < 1e-6, "{fc:?}");
        assert!((fc.to_alarm_s.unwrap() - (0.9 - fit) / 0.001).abs() < 1e-6, "{fc:?}");
    }

    #[test]
    fn a_trend_toward_the_good_side_or_beyond_the_horizon_says_null_but_past_is_zero() {
        let s = spec(Direction::Above, 0.6, 0.9);
        let f = s.forecast.unwrap();
        let falling: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 0.5 - 0.01 * i as f64)).collect();
        let fc = forecast(&s, &f, &falling);
        assert_eq!((fc.to_warn_s, fc.to_alarm_s), (None, None), "{fc:?}");
        let high: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 0.7 - 0.001 * i as f64)).collect();
        let fc = forecast(&s, &f, &high);
        assert_eq!((fc.to_warn_s, fc.to_alarm_s), (Some(0.0), None), "past warn whatever the trend: {fc:?}");
        let slow: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 0.1 + 1e-9 * i as f64)).collect();
        let fc = forecast(&s, &f, &slow);
        assert!(fc.z > Z_COUNTS && fc.to_warn_s.is_none(), "beyond the horizon: {fc:?}");
        // Below: low is bad.
        let b = spec(Direction::Below, 0.8, 0.6);
        let dropping: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 0.95 - 0.001 * i as f64)).collect();
        let fc = forecast(&b, &f, &dropping);
        let fit = 0.95 - 0.019;
        assert!((fc.to_warn_s.unwrap() - (0.8 - fit) / -0.001).abs() < 1e-6, "{fc:?}");
    }

    #[test]
    fn buckets_complete_when_a_later_one_starts_and_need_sixteen_points() {
        let s = spec(Direction::Above, 0.6, 0.9);
        let specs = std::slice::from_ref(&s);
        let mut fs = Forecasts::default();
        let mut out = Vec::new();
        // Buckets of 10 s; two windows a bucket.
        let mut made = Vec::new();
        for i in 0..40i64 {
            let ts = i * 5_000;
            fs.update("d", ts, specs, &[0.1 + 0.001 * i as f32], &mut out);
            made.push(!out.is_empty());
        }
        // The 17th bucket's first window (i = 32) completes the 16th bucket.
        let first = made.iter().position(|m| *m).unwrap();
        assert_eq!(first, 32, "{made:?}");
        assert!(made[32..].iter().step_by(2).all(|m| *m) && made[33..].iter().step_by(2).all(|m| !*m));

        // Stored and restored, it goes on the same.
        let mut snap = b"window".to_vec();
        fs.store_with("d", specs, &mut snap);
        let (window, record) = Forecasts::split_stored(&snap);
        assert_eq!(window, b"window");
        let mut back = Forecasts::default();
        assert!(back.restore("d", specs, record.unwrap()));
        let (mut la, mut lb) = (Vec::new(), Vec::new());
        fs.latest_into("d", &mut la);
        back.latest_into("d", &mut lb);
        assert!(la[0].is_some() && la == lb, "the latest forecast too: {la:?} {lb:?}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 40..60i64 {
            fs.update("d", i * 5_000, specs, &[0.3], &mut a);
            back.update("d", i * 5_000, specs, &[0.3], &mut b);
            assert_eq!(a, b);
        }
        let mut damaged = record.unwrap().to_vec();
        damaged[10] ^= 1;
        assert!(!Forecasts::default().restore("d", specs, &damaged));
    }
}
