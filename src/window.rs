//! Sliding windows: a fixed ring buffer of the last `window` samples per device.
//!
//! Samples are kept raw (f64, as decoded) so normalization is applied once,
//! exactly, when a window is copied into a batch, and so windows survive a
//! model swap that changes only the normalization constants.
//!
//! Scoring cadence: counting accepted samples from 1, sample `n` completes a
//! window to score when `n >= window` and `(n - window) % hop == 0`.
//! A sample whose `ts` is not newer than the device's newest is refused as out
//! of order (this is also how redelivered telemetry is recognised and not
//! applied twice). A sample without `ts` takes the receive time, nudged to
//! 1 ms after the device's newest so that bursts in one millisecond all count.
//!
//! Memory is bounded: at most `max_devices` rings. A new device at the cap
//! evicts the least recently seen tenth (one selection per tenth, so a flood
//! of new topics costs little per device), which keeps devices that report
//! regularly and drops the flood; devices idle for longer than the idle
//! limit are evicted too. Devices changed since the last `take_dirty` are
//! listed so that only they are written to the store.

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
    last_seen_ms: i64,
    dirty: bool,
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
    max_devices: usize,
    idle_ms: i64,
    devices: HashMap<String, Ring>,
    dirty: Vec<String>,
}

const SNAPSHOT_VERSION: u8 = 1;
const SNAPSHOT_HEADER: usize = 1 + 4 + 4 + 8 + 8 + 8;

impl Windows {
    pub fn new(window: usize, features: usize, hop: usize) -> Self {
        Self::with_limits(window, features, hop, usize::MAX, i64::MAX)
    }

    pub fn with_limits(window: usize, features: usize, hop: usize, max_devices: usize, idle_ms: i64) -> Self {
        assert!(window > 0 && features > 0 && hop > 0, "validated by the card and config");
        Self {
            window,
            features,
            hop: hop as u64,
            max_devices,
            idle_ms,
            devices: HashMap::new(),
            dirty: Vec::new(),
        }
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    fn new_ring(&self) -> Ring {
        Ring {
            buf: vec![0.0; self.window * self.features],
            head: 0,
            count: 0,
            newest_ts: i64::MIN,
            last_seen_ms: 0,
            dirty: false,
        }
    }

    /// Add one sample (`values` in card order) for `device`. Devices evicted
    /// to make room are added to `evicted`.
    pub fn push(
        &mut self,
        device: &str,
        ts: Option<i64>,
        now_ms: i64,
        values: &[f64],
        evicted: &mut Vec<String>,
    ) -> Result<Pushed, Rejection> {
        debug_assert_eq!(values.len(), self.features);
        if !self.devices.contains_key(device) && self.devices.len() >= self.max_devices {
            evicted.extend(self.evict_least_recent());
        }
        let (window, features) = (self.window, self.features);
        if !self.devices.contains_key(device) {
            let ring = self.new_ring();
            self.devices.insert(device.to_string(), ring);
        }
        let ring = self.devices.get_mut(device).expect("inserted above");
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
        ring.last_seen_ms = now_ms;
        if !ring.dirty {
            ring.dirty = true;
            self.dirty.push(device.to_string());
        }
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
        let Some(ring) = self.devices.get(device) else { return false };
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

    /// Drop the least recently seen tenth of the devices (at least one).
    fn evict_least_recent(&mut self) -> Vec<String> {
        let n = (self.devices.len() / 10).max(1);
        let mut by_age: Vec<(i64, &String)> = self.devices.iter().map(|(k, r)| (r.last_seen_ms, k)).collect();
        by_age.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        let evicted: Vec<String> = by_age[..n].iter().map(|(_, k)| (*k).clone()).collect();
        for k in &evicted {
            self.devices.remove(k);
        }
        self.dirty.retain(|d| self.devices.contains_key(d));
        evicted
    }

    /// Drop devices not seen for the idle limit; returns their keys.
    pub fn evict_idle(&mut self, now_ms: i64) -> Vec<String> {
        let idle = self.idle_ms;
        let evicted: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, r)| now_ms.saturating_sub(r.last_seen_ms) > idle)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &evicted {
            self.devices.remove(k);
        }
        if !evicted.is_empty() {
            self.dirty.retain(|d| self.devices.contains_key(d));
        }
        evicted
    }

    /// Devices changed since the last call, with their snapshots.
    pub fn take_dirty(&mut self) -> Vec<(String, Vec<u8>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|d| {
                let ring = self.devices.get_mut(&d)?;
                ring.dirty = false;
                let snap = snapshot(ring, self.window, self.features);
                Some((d, snap))
            })
            .collect()
    }

    /// Write `device` again at the next `take_dirty` (after a failed commit).
    pub fn mark_dirty(&mut self, device: &str) {
        if let Some(r) = self.devices.get_mut(device) {
            if !r.dirty {
                r.dirty = true;
                self.dirty.push(device.to_string());
            }
        }
    }

    /// Restore a device from a snapshot written by `take_dirty`. Fails (and
    /// changes nothing) when the snapshot is for another window shape.
    pub fn restore(&mut self, device: &str, bytes: &[u8]) -> Result<(), String> {
        let (w, f) = (self.window, self.features);
        let n = w * f;
        if bytes.len() != SNAPSHOT_HEADER + 8 * n || bytes[0] != SNAPSHOT_VERSION {
            return Err(format!("snapshot of {} bytes is not a window of {w} x {f}", bytes.len()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes")) as usize;
        let i64_at = |i: usize| i64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(1) != w || u32_at(5) != f {
            return Err(format!("snapshot is {} x {}, the model needs {w} x {f}", u32_at(1), u32_at(5)));
        }
        let buf: Vec<f64> = bytes[SNAPSHOT_HEADER..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let ring = Ring {
            buf,
            head: 0,
            count: i64_at(9) as u64,
            newest_ts: i64_at(17),
            last_seen_ms: i64_at(25),
            dirty: false,
        };
        self.devices.insert(device.to_string(), ring);
        Ok(())
    }

    /// Forget every device (a new model needs other windows).
    pub fn clear(&mut self) -> Vec<String> {
        self.dirty.clear();
        self.devices.drain().map(|(k, _)| k).collect()
    }
}

/// Header (version, window, features, count, newest ts, last seen), then the
/// values oldest sample first, all little-endian.
fn snapshot(ring: &Ring, window: usize, features: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER + 8 * ring.buf.len());
    out.push(SNAPSHOT_VERSION);
    out.extend_from_slice(&(window as u32).to_le_bytes());
    out.extend_from_slice(&(features as u32).to_le_bytes());
    out.extend_from_slice(&ring.count.to_le_bytes());
    out.extend_from_slice(&ring.newest_ts.to_le_bytes());
    out.extend_from_slice(&ring.last_seen_ms.to_le_bytes());
    let split = ring.head * features;
    for v in ring.buf[split..].iter().chain(&ring.buf[..split]) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
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
            if let Pushed::Ready { ts } = w.push("d", Some(100 + i), 0, &v, &mut Vec::new()).unwrap() {
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
        assert_eq!(w.push("d", Some(10), 0, &[1.0], &mut Vec::new()).unwrap(), Pushed::Buffered { ts: 10 });
        let err = w.push("d", Some(10), 0, &[9.0], &mut Vec::new()).unwrap_err();
        assert_eq!(err.reason, Reason::OutOfOrder);
        assert_eq!(w.push("d", Some(5), 0, &[9.0], &mut Vec::new()).unwrap_err().reason, Reason::OutOfOrder);
        assert_eq!(
            w.push("e", Some(5), 0, &[9.0], &mut Vec::new()).unwrap(),
            Pushed::Buffered { ts: 5 },
            "devices are independent"
        );
        assert_eq!(w.push("d", Some(11), 0, &[2.0], &mut Vec::new()).unwrap(), Pushed::Ready { ts: 11 });
        let mut out = [0f32; 2];
        w.write_window("d", None, &mut out);
        assert_eq!(out, [1.0, 2.0]);
    }

    #[test]
    fn missing_ts_takes_receive_time_and_stays_monotonic() {
        let mut w = Windows::new(4, 1, 1);
        assert_eq!(w.push("d", None, 1000, &[1.0], &mut Vec::new()).unwrap(), Pushed::Buffered { ts: 1000 });
        assert_eq!(w.push("d", None, 1000, &[1.0], &mut Vec::new()).unwrap(), Pushed::Buffered { ts: 1001 });
        assert_eq!(
            w.push("d", Some(2000), 1000, &[1.0], &mut Vec::new()).unwrap(),
            Pushed::Buffered { ts: 2000 }
        );
        assert_eq!(w.push("d", None, 1500, &[1.0], &mut Vec::new()).unwrap(), Pushed::Ready { ts: 2001 });
    }

    #[test]
    fn normalizes_per_feature() {
        let mut w = Windows::new(1, 2, 1);
        w.push("d", Some(1), 0, &[3.0, 10.0], &mut Vec::new()).unwrap();
        let n = Normalize { mean: vec![1.0, 20.0], std: vec![2.0, 5.0] };
        let mut out = [0f32; 2];
        w.write_window("d", Some(&n), &mut out);
        assert_eq!(out, [1.0, -2.0]);
        assert!(!w.write_window("nobody", None, &mut out));
    }

    #[test]
    fn snapshots_restore_the_same_window_and_cadence() {
        let mut a = Windows::new(3, 2, 2);
        for i in 0..4 {
            a.push("d", Some(i), 0, &[i as f64, -(i as f64)], &mut Vec::new()).unwrap();
        }
        let dirty = a.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert!(a.take_dirty().is_empty(), "clean after take");
        let mut b = Windows::new(3, 2, 2);
        b.restore("d", &dirty[0].1).unwrap();
        let (mut wa, mut wb) = ([0f32; 6], [0f32; 6]);
        a.write_window("d", None, &mut wa);
        b.write_window("d", None, &mut wb);
        assert_eq!(wa, wb);
        // Same next steps: sample 5 is due (hop 2), ts 3 is a replay.
        assert_eq!(
            b.push("d", Some(3), 0, &[0.0, 0.0], &mut Vec::new()).unwrap_err().reason,
            Reason::OutOfOrder
        );
        assert_eq!(
            a.push("d", Some(4), 0, &[4.0, 4.0], &mut Vec::new()).unwrap(),
            b.push("d", Some(4), 0, &[4.0, 4.0], &mut Vec::new()).unwrap()
        );
        assert!(Windows::new(4, 2, 1).restore("d", &dirty[0].1).is_err(), "other shape refused");
        assert!(b.restore("d", b"junk").is_err());
    }

    #[test]
    fn device_cap_evicts_the_least_recently_seen_and_idle_ones() {
        let mut w = Windows::with_limits(2, 1, 1, 2, 1000);
        let mut evicted = Vec::new();
        w.push("a", Some(1), 0, &[1.0], &mut evicted).unwrap();
        w.push("b", Some(1), 500, &[1.0], &mut evicted).unwrap();
        w.push("a", Some(2), 600, &[1.0], &mut evicted).unwrap();
        // At the cap, `c` makes room by evicting `b` (seen at 500, before `a` at 600).
        assert!(w.push("c", Some(1), 900, &[1.0], &mut evicted).is_ok());
        assert_eq!(evicted, ["b"]);
        assert_eq!(w.devices(), 2);
        let mut out = [0f32; 2];
        assert!(!w.write_window("b", None, &mut out), "b was evicted");
        assert!(w.write_window("a", None, &mut out), "a, seen more recently, stays");
        assert_eq!(w.evict_idle(10_000).len(), 2, "idle devices go too");
    }

    #[test]
    fn a_flood_of_new_devices_keeps_the_regular_ones() {
        let mut w = Windows::with_limits(2, 1, 1, 100, i64::MAX);
        let mut evicted = Vec::new();
        for t in 0..5000i64 {
            // A real device every 10 ms, flood devices in between.
            if t % 10 == 0 {
                w.push("real", Some(t), t, &[1.0], &mut evicted).unwrap();
            }
            w.push(&format!("flood{t}"), Some(t), t, &[1.0], &mut evicted).unwrap();
            assert!(w.devices() <= 100);
        }
        let mut out = [0f32; 2];
        assert!(w.write_window("real", None, &mut out));
        assert!(evicted.len() >= 4900);
    }
}
