//! Sliding windows: a fixed ring buffer of the last `window` samples per device.
//!
//! Samples are kept raw (f64, as decoded) so normalization is applied once,
//! exactly, when a window is copied into a batch, and so windows survive a
//! model swap that changes only the normalization constants.
//!
//! Scoring cadence: counting accepted samples from 1, sample `n` completes a
//! window to score when `n >= window` and `(n - window) % hop == 0`.
//! A sample whose `ts` is not newer than the device's newest is refused as out
//! of order. A sample without `ts` takes the receive time, nudged to 1 ms after
//! the device's newest so that bursts received in one millisecond all count.

use std::collections::HashMap;

use crate::card::Normalize;
use crate::reject::{Reason, Rejection};

#[derive(Debug, Clone)]
struct Ring {
    /// `window * features` values; the oldest sample starts at `head * features`.
    buf: Vec<f64>,
    head: usize,
    /// Accepted samples so far.
    count: u64,
    newest_ts: i64,
}

/// Result of adding a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored; no window to score yet.
    Buffered { ts: i64 },
    /// Stored, and the device's window is due for scoring.
    Ready { ts: i64 },
}

/// The windows of every device of one pipeline.
#[derive(Debug)]
pub struct Windows {
    window: usize,
    features: usize,
    hop: u64,
    devices: HashMap<String, Ring>,
}

impl Windows {
    pub fn new(window: usize, features: usize, hop: usize) -> Self {
        assert!(window > 0 && features > 0 && hop > 0, "validated by the card and config");
        Self { window, features, hop: hop as u64, devices: HashMap::new() }
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Add one sample (`values` in card order) for `device`.
    pub fn push(
        &mut self,
        device: &str,
        ts: Option<i64>,
        now_ms: i64,
        values: &[f64],
    ) -> Result<Pushed, Rejection> {
        debug_assert_eq!(values.len(), self.features);
        let (window, features) = (self.window, self.features);
        let ring = match self.devices.get_mut(device) {
            Some(r) => r,
            None => self.devices.entry(device.to_string()).or_insert_with(|| Ring {
                buf: vec![0.0; window * features],
                head: 0,
                count: 0,
                newest_ts: i64::MIN,
            }),
        };
        let ts = match ts {
            Some(t) if t <= ring.newest_ts => {
                return Err(Rejection::new(
                    Reason::OutOfOrder,
                    format!("ts {t} is not newer than {} already in the window of {device}", ring.newest_ts),
                ))
            }
            Some(t) => t,
            None => now_ms.max(ring.newest_ts.saturating_add(1)),
        };
        let slot = ring.head * features;
        ring.buf[slot..slot + features].copy_from_slice(values);
        ring.head = (ring.head + 1) % window;
        ring.count += 1;
        ring.newest_ts = ts;
        let n = ring.count;
        let w = window as u64;
        Ok(if n >= w && (n - w).is_multiple_of(self.hop) {
            Pushed::Ready { ts }
        } else {
            Pushed::Buffered { ts }
        })
    }

    /// Copy `device`'s window, oldest sample first, normalized, into `out`
    /// (`window * features` f32). Returns false for an unknown device.
    pub fn write_window(&self, device: &str, normalize: Option<&Normalize>, out: &mut [f32]) -> bool {
        let Some(ring) = self.devices.get(device) else {
            return false;
        };
        let f = self.features;
        let split = ring.head * f;
        let (newer, older) = ring.buf.split_at(split);
        let src = older.iter().chain(newer.iter());
        match normalize {
            None => out.iter_mut().zip(src).for_each(|(o, &v)| *o = v as f32),
            Some(n) => out.iter_mut().zip(src).enumerate().for_each(|(i, (o, &v))| {
                let k = i % f;
                // f64 arithmetic, one rounding to f32: what the reference (numpy) does.
                *o = ((v - n.mean[k]) / n.std[k]) as f32;
            }),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_order_and_hop() {
        let mut w = Windows::new(3, 2, 2);
        let mut ready = Vec::new();
        for i in 0..8 {
            let v = [i as f64, 10.0 * i as f64];
            if let Pushed::Ready { ts } = w.push("d", Some(100 + i), 0, &v).unwrap() {
                let mut out = [0f32; 6];
                assert!(w.write_window("d", None, &mut out));
                ready.push((ts, out));
            }
        }
        // Samples 3, 5, 7 (1-based) complete windows with hop 2.
        assert_eq!(ready.len(), 3);
        assert_eq!(ready[0], (102, [0.0, 0.0, 1.0, 10.0, 2.0, 20.0]));
        assert_eq!(ready[1], (104, [2.0, 20.0, 3.0, 30.0, 4.0, 40.0]));
        assert_eq!(ready[2], (106, [4.0, 40.0, 5.0, 50.0, 6.0, 60.0]));
    }

    #[test]
    fn out_of_order_is_refused_and_does_not_disturb_the_window() {
        let mut w = Windows::new(2, 1, 1);
        assert_eq!(w.push("d", Some(10), 0, &[1.0]).unwrap(), Pushed::Buffered { ts: 10 });
        let err = w.push("d", Some(10), 0, &[9.0]).unwrap_err();
        assert_eq!(err.reason, Reason::OutOfOrder);
        assert_eq!(w.push("d", Some(5), 0, &[9.0]).unwrap_err().reason, Reason::OutOfOrder);
        assert_eq!(
            w.push("e", Some(5), 0, &[9.0]).unwrap(),
            Pushed::Buffered { ts: 5 },
            "devices are independent"
        );
        assert_eq!(w.push("d", Some(11), 0, &[2.0]).unwrap(), Pushed::Ready { ts: 11 });
        let mut out = [0f32; 2];
        w.write_window("d", None, &mut out);
        assert_eq!(out, [1.0, 2.0]);
    }

    #[test]
    fn missing_ts_takes_receive_time_and_stays_monotonic() {
        let mut w = Windows::new(4, 1, 1);
        assert_eq!(w.push("d", None, 1000, &[1.0]).unwrap(), Pushed::Buffered { ts: 1000 });
        assert_eq!(w.push("d", None, 1000, &[1.0]).unwrap(), Pushed::Buffered { ts: 1001 });
        assert_eq!(w.push("d", Some(2000), 1000, &[1.0]).unwrap(), Pushed::Buffered { ts: 2000 });
        assert_eq!(w.push("d", None, 1500, &[1.0]).unwrap(), Pushed::Ready { ts: 2001 });
    }

    #[test]
    fn normalizes_per_feature() {
        let mut w = Windows::new(1, 2, 1);
        w.push("d", Some(1), 0, &[3.0, 10.0]).unwrap();
        let n = Normalize { mean: vec![1.0, 20.0], std: vec![2.0, 5.0] };
        let mut out = [0f32; 2];
        w.write_window("d", Some(&n), &mut out);
        assert_eq!(out, [1.0, -2.0]);
        assert!(!w.write_window("nobody", None, &mut out));
    }
}
