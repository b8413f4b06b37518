//! Sliding windows: a fixed ring buffer of the last `window` samples per device.
//!
//! Samples are kept as the model will see them: normalized on arrival, in
//! f64 arithmetic with one rounding to f32 (what the numpy/ONNX Runtime
//! reference does), so a window is copied into a batch as it is. That halves
//! the memory of raw f64 windows (10k devices of 16 x 8: 5 instead of 10 MiB)
//! without changing a single model input. A model swap that keeps the window
//! shape but changes the normalization converts the held values (back to raw
//! in f64, then normalized anew); that costs one f32 rounding of the old
//! normalized value, ~1e-7 relative, far below any model's sensitivity.
//!
//! Scoring cadence: counting accepted samples from 1, sample `n` completes a
//! window to score when `n >= window` and `(n - window) % hop == 0`.
//! A sample whose `ts` equals the device's newest is a duplicate (not
//! applied again); one older than that is refused as out of order. This is
//! also how redelivered telemetry is recognised and not applied twice. A sample without `ts` takes the receive time, nudged to
//! 1 ms after the device's newest so that bursts in one millisecond all count.
//!
//! With the card's `max_gap_ms`, a sample more than that after the device's
//! previous one starts its window again: the count restarts at 1, so the
//! next window is scored once `window` samples after the gap have come.
//!
//! Memory is bounded: at most `max_devices` rings. A new device at the cap
//! evicts the least recently seen tenth (one selection per tenth, so a flood
//! of new topics costs little per device), which keeps devices that report
//! regularly and drops the flood; devices idle for longer than the idle
//! limit are evicted too. Devices changed since the last `take_dirty` are
//! listed so that only they are written to the store.

use std::collections::HashMap;
use std::sync::Arc;

use strum::VariantArray;

use crate::ingest::reject::{Reason, Rejection};
use crate::model::card::{Normalize, SampleClock};
use crate::pipeline::grid::{self, Assembly, Step};

#[derive(Debug, Clone)]
struct Ring {
    /// The device's key, shared with the map (std's map lends no key mutably beside its value).
    key: Arc<str>,
    /// `window * features` normalized values; the oldest sample starts at `head * features`.
    buf: Box<[f32]>,
    head: usize,
    /// Accepted samples so far.
    count: u64,
    newest_ts: i64,
    last_seen_ms: i64,
    dirty: bool,
    /// On a sampling clock: the samples being formed.
    grid: Option<Assembly>,
}

/// Result of adding a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored; no window to score yet.
    Buffered { ts: i64 },
    /// Stored, and the device's window is due for scoring.
    Ready { ts: i64 },
    /// Not stored: its `ts` equals the newest already applied (a repeat,
    /// such as a redelivery of a message whose effect is already held).
    Duplicate { ts: i64 },
}

/// The windows of every device of one pipeline.
#[derive(Debug)]
pub struct Windows {
    window: usize,
    features: usize,
    hop: u64,
    max_devices: usize,
    idle_ms: i64,
    normalize: Option<Normalize>,
    /// What the windows are built for (the card's features and window):
    /// written into every snapshot, and a snapshot for anything else is refused.
    fingerprint: u64,
    /// Keys are shared (`Arc<str>`): the dirty list and the pipeline's batch
    /// hold a device by a reference count, not a copy of its name, so the
    /// per-message path does not allocate.
    devices: HashMap<Arc<str>, Ring>,
    dirty: Vec<Arc<str>>,
    /// The card's `max_gap_ms`.
    max_gap_ms: Option<i64>,
    /// The card's sampling clock: samples are formed on its grid.
    clock: Option<SampleClock>,
    /// Windows started again since the last [`Windows::take_resets`], by [`Reset`].
    resets: [u64; Reset::VARIANTS.len()],
}

/// Why a device's window started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reset {
    /// A sample came more than the card's `max_gap_ms` after the previous one.
    Gap,
    /// A grid point where some feature had no value within `stale_after_ms`.
    Stale,
    /// The broker lost the telemetry session: what was published while the
    /// connection was down is gone, so no window may join the samples from
    /// before the hole with those after it.
    SessionLost,
}

/// Snapshot format 3: format and card fingerprint first, a CRC-32 of
/// everything before it last. Formats 1 and 2 (no fingerprint, no
/// checksum) are refused: nothing proves they match the card in force.
const SNAPSHOT_V3: u8 = 3;
/// Format 4: format 3 with the sampling clock's assembly after the values,
/// for a card with a sampling clock (and only for one).
const SNAPSHOT_V4: u8 = 4;
/// Version, fingerprint, window, features, count, newest ts, last seen.
const SNAPSHOT_HEADER: usize = 1 + 8 + 4 + 4 + 8 + 8 + 8;
const CHECKSUM: usize = 4;

/// Why a stored window was not restored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Unrestored {
    /// The bytes fail their checksum (a damaged page).
    Checksum,
    /// Not a snapshot of the current format (an older version, or garbage).
    Format,
    /// Made for another card: other features, feature order or window.
    Card,
    /// Its newest sample lies further ahead of the clock than any sample may.
    Future,
    /// The store rolled back its last commit: no stored window can be trusted.
    RolledBack,
    /// The stored windows could not be read at all (counted once, not per window).
    Unreadable,
}

impl Unrestored {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

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
            normalize: None,
            fingerprint: 0,
            devices: HashMap::new(),
            dirty: Vec::new(),
            max_gap_ms: None,
            clock: None,
            resets: [0; Reset::VARIANTS.len()],
        }
    }

    /// Form samples on the card's sampling clock (see [`grid`]): values go in
    /// through [`Windows::admit`], [`Windows::advance`] and [`Windows::hold`], not [`Windows::push`].
    pub fn on_clock(mut self, clock: Option<SampleClock>) -> Self {
        debug_assert!(self.devices.is_empty());
        self.clock = clock;
        self
    }

    /// Start a device's window again when a sample comes more than `gap_ms`
    /// after its previous one (the card's `max_gap_ms`).
    pub fn resetting_after(mut self, gap_ms: Option<i64>) -> Self {
        self.max_gap_ms = gap_ms;
        self
    }

    /// Windows started again since the last call, by [`Reset`] (in
    /// [`Reset`]'s order).
    pub fn take_resets(&mut self) -> [u64; Reset::VARIANTS.len()] {
        std::mem::take(&mut self.resets)
    }

    /// Normalize samples with `normalize` (z-score per feature) from now on.
    /// Call before the first `push`; a model swap uses `renormalize`.
    pub fn normalizing(mut self, normalize: Option<Normalize>) -> Self {
        debug_assert!(self.devices.is_empty());
        self.normalize = normalize;
        self
    }

    /// Stamp snapshots with the fingerprint of the input they are built for
    /// (`ModelCard::input_fingerprint`); restore only those.
    pub fn identified_by(mut self, fingerprint: u64) -> Self {
        self.fingerprint = fingerprint;
        self
    }

    /// Switch to other normalization constants, converting every held window.
    pub fn renormalize(&mut self, normalize: Option<Normalize>) {
        if normalize == self.normalize {
            return;
        }
        let f = self.features;
        for ring in self.devices.values_mut() {
            for (i, v) in ring.buf.iter_mut().enumerate() {
                *v = convert(*v, i % f, self.normalize.as_ref(), normalize.as_ref());
            }
            // The store must get the converted window too.
            ring.dirty = true;
        }
        self.dirty = self.devices.keys().cloned().collect();
        self.normalize = normalize;
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Every device's window: how full, its newest sample, when last seen.
    pub fn fills(&self) -> impl Iterator<Item = crate::pipeline::recent::WindowFill<'_>> {
        self.devices.iter().map(|(device, r)| crate::pipeline::recent::WindowFill {
            device,
            fill: usize::try_from(r.count).unwrap_or(usize::MAX).min(self.window),
            newest_ts: (r.newest_ts != i64::MIN).then_some(r.newest_ts),
            last_seen_ms: (r.last_seen_ms > 0).then_some(r.last_seen_ms),
        })
    }

    fn new_ring(&self, key: Arc<str>) -> Ring {
        Ring {
            key,
            buf: vec![0.0; self.window * self.features].into_boxed_slice(),
            head: 0,
            count: 0,
            newest_ts: i64::MIN,
            last_seen_ms: 0,
            dirty: false,
            grid: self.clock.map(|_| Assembly::new(self.features)),
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
        debug_assert!(self.clock.is_none(), "on a sampling clock, values go through offer()");
        self.ensure(device, evicted);
        let ring = self.devices.get_mut(device).expect("inserted above");
        let ts = match ts {
            Some(t) if t == ring.newest_ts => return Ok(Pushed::Duplicate { ts: t }),
            Some(t) if t < ring.newest_ts => {
                return Err(Rejection::new(
                    Reason::OutOfOrder,
                    format!("ts {t} is not newer than {} already in the window of {device}", ring.newest_ts),
                ))
            }
            Some(t) => t,
            None => now_ms.max(ring.newest_ts.saturating_add(1)),
        };
        if self.max_gap_ms.is_some_and(|gap| ring.count > 0 && ts - ring.newest_ts > gap) {
            // The samples before the gap are not the model's kind of window
            // with the ones after it: they are dropped, not scored across.
            ring.count = 0;
            self.resets[Reset::Gap as usize] += 1;
        }
        ring.last_seen_ms = now_ms;
        mark_ring_dirty(ring, &mut self.dirty);
        Ok(store(ring, self.normalize.as_ref(), self.hop, ts, values))
    }

    /// Every window starts again (its samples are dropped, not scored
    /// across `reason`'s hole); the devices stay. Not on a sampling clock,
    /// whose stale rule starts a window again where a hole makes one.
    pub(crate) fn restart_all(&mut self, reason: Reset) {
        if self.clock.is_some() {
            return;
        }
        for ring in self.devices.values_mut() {
            if ring.count > 0 {
                ring.count = 0;
                self.resets[reason as usize] += 1;
                mark_ring_dirty(ring, &mut self.dirty);
            }
        }
    }

    /// A ring for `device`, made (evicting at the cap) if it is new.
    fn ensure(&mut self, device: &str, evicted: &mut Vec<String>) {
        if !self.devices.contains_key(device) {
            if self.devices.len() >= self.max_devices {
                evicted.extend(self.evict_least_recent());
            }
            let key: Arc<str> = Arc::from(device);
            let ring = self.new_ring(Arc::clone(&key));
            self.devices.insert(key, ring);
        }
    }

    /// On a sampling clock, step 1 of taking values stamped `ts` for
    /// `device`: refused as late when `ts` is at or before a grid point
    /// already final. Then call [`Windows::advance`] until it returns
    /// `None`, and [`Windows::hold`] the values.
    pub fn admit(
        &mut self,
        device: &str,
        ts: i64,
        now_ms: i64,
        evicted: &mut Vec<String>,
    ) -> Result<(), Rejection> {
        self.ensure(device, evicted);
        let ring = self.devices.get_mut(device).expect("inserted above");
        let a = ring.grid.as_ref().expect("windows on a sampling clock");
        if !a.admits(ts) {
            let last = a.final_ts().unwrap_or_default();
            return Err(Rejection::new(
                Reason::Late,
                format!("ts {ts} is at or before {last}, a grid point of {device} already made final"),
            ));
        }
        ring.last_seen_ms = now_ms;
        mark_ring_dirty(ring, &mut self.dirty);
        Ok(())
    }

    /// Step 2: make the next grid point before `ts` final. A sample goes
    /// into the window (stamped with its grid time); a stale point starts
    /// the window again. `None` once no point before `ts` is left.
    pub fn advance(&mut self, device: &str, ts: i64) -> Option<Pushed> {
        let clock = self.clock?;
        let ring = self.devices.get_mut(device)?;
        let mut row = [0f64; 64];
        let mut heap;
        let row: &mut [f64] = if self.features <= row.len() {
            &mut row[..self.features]
        } else {
            heap = vec![0f64; self.features];
            &mut heap
        };
        loop {
            match ring.grid.as_mut()?.advance(clock, ts, row)? {
                Step::Sample(t) => return Some(store(ring, self.normalize.as_ref(), self.hop, t, row)),
                Step::Stale(_) => {
                    if ring.count > 0 {
                        ring.count = 0;
                        self.resets[Reset::Stale as usize] += 1;
                    }
                }
            }
        }
    }

    /// Step 3: keep `values` (card order, NaN: absent) stamped `ts` for the
    /// grid points after it. Returns whether they were all held already (a
    /// repeat, such as a redelivery).
    pub fn hold(&mut self, device: &str, ts: i64, values: &[f64]) -> bool {
        self.devices.get_mut(device).and_then(|r| r.grid.as_mut()).is_some_and(|a| a.hold(ts, values))
    }

    /// Copy `device`'s window, oldest sample first, normalized, into `out`
    /// (`window * features` f32). Returns false for an unknown device.
    pub fn write_window(&self, device: &str, out: &mut [f32]) -> bool {
        let Some(ring) = self.devices.get(device) else { return false };
        let split = ring.head * self.features;
        let (newer, older) = ring.buf.split_at(split);
        out[..older.len()].copy_from_slice(older);
        out[older.len()..older.len() + newer.len()].copy_from_slice(newer);
        true
    }

    /// `device`'s key, shared: holding a device by it costs a reference
    /// count, not a copy of the name.
    pub fn key(&self, device: &str) -> Option<Arc<str>> {
        self.devices.get(device).map(|r| Arc::clone(&r.key))
    }

    /// Drop the least recently seen tenth of the devices (at least one).
    fn evict_least_recent(&mut self) -> Vec<String> {
        let n = (self.devices.len() / 10).max(1);
        let mut by_age: Vec<(i64, &Arc<str>)> =
            self.devices.iter().map(|(k, r)| (r.last_seen_ms, k)).collect();
        by_age.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        let evicted: Vec<String> = by_age[..n].iter().map(|(_, k)| k.to_string()).collect();
        for k in &evicted {
            self.devices.remove(k.as_str());
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
            .map(|(k, _)| k.to_string())
            .collect();
        for k in &evicted {
            self.devices.remove(k.as_str());
        }
        if !evicted.is_empty() {
            self.dirty.retain(|d| self.devices.contains_key(d));
        }
        evicted
    }

    /// Devices changed since the last call, with their snapshots. The list
    /// keeps its capacity, so marking a device dirty does not allocate.
    pub fn take_dirty(&mut self) -> Vec<(Arc<str>, Vec<u8>)> {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut taken = Vec::with_capacity(dirty.len());
        for d in dirty.drain(..) {
            let Some(ring) = self.devices.get_mut(&d) else { continue };
            ring.dirty = false;
            let snap = snapshot(&self.devices[&d], self);
            taken.push((d, snap));
        }
        self.dirty = dirty;
        taken
    }

    /// Forget which devices changed, without their snapshots (nothing will
    /// store them: `lineguard replay`).
    pub fn clear_dirty(&mut self) {
        for d in self.dirty.drain(..) {
            if let Some(ring) = self.devices.get_mut(&d) {
                ring.dirty = false;
            }
        }
    }

    /// Whether some device changed since the last `take_dirty`.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Write `device` again at the next `take_dirty` (after a failed commit).
    pub fn mark_dirty(&mut self, device: &str) {
        if let Some(r) = self.devices.get_mut(device) {
            if !r.dirty {
                r.dirty = true;
                self.dirty.push(Arc::clone(&r.key));
            }
        }
    }

    /// Restore a device from a snapshot written by `take_dirty`. Refused,
    /// changing nothing, unless it passes its checksum, is of the current
    /// format, was made for the same input (fingerprint, window, features)
    /// and its newest sample is not after `newest_allowed`.
    pub fn restore(&mut self, device: &str, bytes: &[u8], newest_allowed: i64) -> Result<(), Unrestored> {
        let (w, f) = (self.window, self.features);
        let n = w * f;
        let Some(split) = bytes.len().checked_sub(CHECKSUM) else { return Err(Unrestored::Format) };
        let (body, sum) = bytes.split_at(split);
        if crc32fast::hash(body).to_le_bytes() != sum {
            return Err(Unrestored::Checksum);
        }
        let format = if self.clock.is_some() { SNAPSHOT_V4 } else { SNAPSHOT_V3 };
        let assembly_len = if self.clock.is_some() { grid::encoded_len(f) } else { 0 };
        if body.len() < SNAPSHOT_HEADER + 1 + assembly_len || body[0] != format {
            return Err(Unrestored::Format);
        }
        let (body, assembly) = body.split_at(body.len() - assembly_len);
        let grid = match self.clock {
            None => None,
            Some(_) => Some(Assembly::decode(assembly, f).ok_or(Unrestored::Format)?),
        };
        let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().expect("4 bytes")) as usize;
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        if u64_at(1) != self.fingerprint || u32_at(9) != w || u32_at(13) != f {
            return Err(Unrestored::Card);
        }
        let (count, newest_ts, last_seen_ms) = (u64_at(17), u64_at(25) as i64, u64_at(33) as i64);
        if newest_ts > newest_allowed {
            return Err(Unrestored::Future);
        }
        let rest = &body[SNAPSHOT_HEADER..];
        let buf: Box<[f32]> = match rest[0] {
            0 if rest.len() == 1 + 4 * n => f32s(&rest[1..])
                .iter()
                .enumerate()
                .map(|(i, &v)| convert(v, i % f, None, self.normalize.as_ref()))
                .collect(),
            1 if rest.len() == 1 + 16 * f + 4 * n => {
                let consts: Vec<f64> = rest[1..1 + 16 * f]
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                let made_with = Normalize { mean: consts[..f].to_vec(), std: consts[f..].to_vec() };
                let values = f32s(&rest[1 + 16 * f..]);
                if Some(&made_with) == self.normalize.as_ref() {
                    values.into_boxed_slice()
                } else {
                    let now = self.normalize.as_ref();
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| convert(v, i % f, Some(&made_with), now))
                        .collect()
                }
            }
            _ => return Err(Unrestored::Format),
        };
        let key: Arc<str> = Arc::from(device);
        let ring =
            Ring { key: Arc::clone(&key), buf, head: 0, count, newest_ts, last_seen_ms, dirty: false, grid };
        self.devices.insert(key, ring);
        Ok(())
    }

    /// Mark every device's window for writing at the next `take_dirty`
    /// (after the store lost what it held of them).
    pub fn mark_all_dirty(&mut self) {
        for ring in self.devices.values_mut() {
            if !ring.dirty {
                ring.dirty = true;
                self.dirty.push(Arc::clone(&ring.key));
            }
        }
    }

    /// Forget every device (a new model needs other windows).
    pub fn clear(&mut self) -> Vec<String> {
        self.dirty.clear();
        self.devices.drain().map(|(k, _)| k.to_string()).collect()
    }
}

/// Mark `ring` for the next `take_dirty`.
fn mark_ring_dirty(ring: &mut Ring, dirty: &mut Vec<Arc<str>>) {
    if !ring.dirty {
        ring.dirty = true;
        dirty.push(Arc::clone(&ring.key));
    }
}

/// Write one sample (raw values, card order) stamped `ts` into `ring`.
fn store(ring: &mut Ring, normalize: Option<&Normalize>, hop: u64, ts: i64, values: &[f64]) -> Pushed {
    let features = values.len();
    let window = ring.buf.len() / features;
    let slot = ring.head * features;
    let row = &mut ring.buf[slot..slot + features];
    match normalize {
        None => row.iter_mut().zip(values).for_each(|(o, &v)| *o = v as f32),
        Some(n) => row.iter_mut().zip(values).enumerate().for_each(|(k, (o, &v))| *o = normalized(v, n, k)),
    }
    ring.head = (ring.head + 1) % window;
    ring.count += 1;
    ring.newest_ts = ts;
    let n = ring.count;
    let w = window as u64;
    if n >= w && (n - w).is_multiple_of(hop) {
        Pushed::Ready { ts }
    } else {
        Pushed::Buffered { ts }
    }
}

/// One value normalized: f64 arithmetic, one rounding to f32, as the
/// reference (numpy) computes it.
fn normalized(v: f64, n: &Normalize, k: usize) -> f32 {
    ((v - n.mean[k]) / n.std[k]) as f32
}

/// A held value of feature `k` made under `from`, as `to` would have made it.
fn convert(v: f32, k: usize, from: Option<&Normalize>, to: Option<&Normalize>) -> f32 {
    let raw = from.map_or(v as f64, |n| v as f64 * n.std[k] + n.mean[k]);
    to.map_or(raw as f32, |n| normalized(raw, n, k))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}

/// Header (format, fingerprint, window, features, count, newest ts, last
/// seen), then whether values are normalized (0 or 1) and if so the means
/// and stds (f64), then the values oldest sample first (f32), then (format
/// 4, on a sampling clock) the assembly, then a CRC-32 of all of it, all
/// little-endian.
fn snapshot(ring: &Ring, w: &Windows) -> Vec<u8> {
    let (window, features) = (w.window, w.features);
    let consts = w.normalize.as_ref().map_or(0, |_| 16 * features);
    let assembly = ring.grid.as_ref().map_or(0, |_| grid::encoded_len(features));
    // Room for what the worker appends: the device's alarm record (a few scores).
    let room = 64;
    let mut out =
        Vec::with_capacity(SNAPSHOT_HEADER + 1 + consts + 4 * ring.buf.len() + assembly + CHECKSUM + room);
    out.push(if ring.grid.is_some() { SNAPSHOT_V4 } else { SNAPSHOT_V3 });
    out.extend_from_slice(&w.fingerprint.to_le_bytes());
    out.extend_from_slice(&(window as u32).to_le_bytes());
    out.extend_from_slice(&(features as u32).to_le_bytes());
    out.extend_from_slice(&ring.count.to_le_bytes());
    out.extend_from_slice(&ring.newest_ts.to_le_bytes());
    out.extend_from_slice(&ring.last_seen_ms.to_le_bytes());
    match &w.normalize {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            n.mean.iter().chain(&n.std).for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
    }
    let split = ring.head * features;
    for v in ring.buf[split..].iter().chain(&ring.buf[..split]) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(a) = &ring.grid {
        a.encode(&mut out);
    }
    let sum = crc32fast::hash(&out);
    out.extend_from_slice(&sum.to_le_bytes());
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
                assert!(w.write_window("d", &mut out));
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
        assert_eq!(w.push("d", Some(10), 0, &[9.0], &mut Vec::new()).unwrap(), Pushed::Duplicate { ts: 10 });
        assert_eq!(w.push("d", Some(5), 0, &[9.0], &mut Vec::new()).unwrap_err().reason, Reason::OutOfOrder);
        assert_eq!(
            w.push("e", Some(5), 0, &[9.0], &mut Vec::new()).unwrap(),
            Pushed::Buffered { ts: 5 },
            "devices are independent"
        );
        assert_eq!(w.push("d", Some(11), 0, &[2.0], &mut Vec::new()).unwrap(), Pushed::Ready { ts: 11 });
        let mut out = [0f32; 2];
        w.write_window("d", &mut out);
        assert_eq!(out, [1.0, 2.0]);
    }

    #[test]
    fn a_gap_starts_the_window_again_and_is_counted() {
        let mut w = Windows::new(3, 1, 1).resetting_after(Some(1000));
        let push =
            |w: &mut Windows, ts: i64, v: f64| w.push("d", Some(ts), 0, &[v], &mut Vec::new()).unwrap();
        push(&mut w, 0, 1.0);
        push(&mut w, 500, 2.0);
        assert_eq!(push(&mut w, 1500, 3.0), Pushed::Ready { ts: 1500 }, "1000 ms apart is no gap");
        assert_eq!(w.take_resets(), [0, 0, 0]);
        // 1001 ms after the newest: the window starts again with this sample.
        assert_eq!(push(&mut w, 2501, 4.0), Pushed::Buffered { ts: 2501 });
        assert_eq!(w.take_resets(), [1, 0, 0], "one gap reset");
        assert_eq!(w.take_resets(), [0, 0, 0], "taken once");
        assert_eq!(push(&mut w, 2600, 5.0), Pushed::Buffered { ts: 2600 });
        assert_eq!(push(&mut w, 2700, 6.0), Pushed::Ready { ts: 2700 });
        let mut out = [0f32; 3];
        assert!(w.write_window("d", &mut out));
        assert_eq!(out, [4.0, 5.0, 6.0], "only samples after the gap");
        let mut plain = Windows::new(2, 1, 1);
        plain.push("d", Some(0), 0, &[1.0], &mut Vec::new()).unwrap();
        assert_eq!(
            plain.push("d", Some(1 << 40), 0, &[1.0], &mut Vec::new()).unwrap(),
            Pushed::Ready { ts: 1 << 40 }
        );
        assert_eq!(plain.take_resets(), [0, 0, 0], "no max_gap_ms, no reset");
    }

    /// Values of one feature (of 2) through admit / advance / hold; the windows it completes.
    fn offer(w: &mut Windows, ts: i64, f: usize, v: f64) -> Result<Vec<i64>, Reason> {
        w.admit("d", ts, 0, &mut Vec::new()).map_err(|r| r.reason)?;
        let mut ready = Vec::new();
        while let Some(p) = w.advance("d", ts) {
            if let Pushed::Ready { ts } = p {
                ready.push(ts);
            }
        }
        let mut row = [f64::NAN; 2];
        row[f] = v;
        w.hold("d", ts, &row);
        Ok(ready)
    }

    #[test]
    fn on_a_clock_windows_are_consecutive_grid_samples() {
        let clock = SampleClock { period_ms: 100, stale_after_ms: 150 };
        let mut w = Windows::new(2, 2, 1).on_clock(Some(clock));
        assert_eq!(offer(&mut w, 1010, 0, 1.0), Ok(vec![]));
        assert_eq!(offer(&mut w, 1020, 1, 10.0), Ok(vec![]));
        assert_eq!(offer(&mut w, 1110, 0, 2.0), Ok(vec![]), "1100: the first sample");
        assert_eq!(offer(&mut w, 1120, 1, 20.0), Ok(vec![]));
        assert_eq!(offer(&mut w, 1201, 0, 3.0), Ok(vec![1200]), "1200 completes a window of 2");
        let mut out = [0f32; 4];
        assert!(w.write_window("d", &mut out));
        assert_eq!(out, [1.0, 10.0, 2.0, 20.0]);
        assert_eq!(offer(&mut w, 1150, 1, 9.0), Err(Reason::Late));
        // Feature 1 falls silent: 1300 still holds 20.0 (180 ms > 150: stale).
        assert_eq!(offer(&mut w, 1301, 0, 4.0), Ok(vec![]), "1300 is stale");
        assert_eq!(w.take_resets(), [0, 1, 0]);
        let snap = w.take_dirty().pop().unwrap().1;
        assert_eq!(snap[0], SNAPSHOT_V4);
        let mut back = Windows::new(2, 2, 1).on_clock(Some(clock));
        back.restore("d", &snap, i64::MAX).unwrap();
        let mut plain = Windows::new(2, 2, 1);
        assert_eq!(plain.restore("d", &snap, i64::MAX), Err(Unrestored::Format), "no clock, no assembly");
        for w in [&mut w, &mut back] {
            assert_eq!(offer(w, 1310, 1, 30.0), Ok(vec![]));
            assert_eq!(offer(w, 1401, 0, 5.0), Ok(vec![]), "1400: the first sample after the reset");
            assert_eq!(offer(w, 1501, 0, 6.0), Ok(vec![]), "1500: feature 1's 30.0 is 190 ms old: stale");
            assert_eq!(offer(w, 1510, 1, 40.0), Ok(vec![]));
            assert_eq!(offer(w, 1601, 1, 41.0), Ok(vec![]), "1600: a sample");
            assert_eq!(offer(w, 1650, 0, 6.5), Ok(vec![]));
            assert_eq!(offer(w, 1701, 0, 7.0), Ok(vec![1700]));
            let mut out = [0f32; 4];
            assert!(w.write_window("d", &mut out));
            assert_eq!(out, [6.0, 40.0, 6.5, 41.0], "1600 and 1700: the restored assembly goes on alike");
        }
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
        let n = Normalize { mean: vec![1.0, 20.0], std: vec![2.0, 5.0] };
        let mut w = Windows::new(1, 2, 1).normalizing(Some(n));
        w.push("d", Some(1), 0, &[3.0, 10.0], &mut Vec::new()).unwrap();
        let mut out = [0f32; 2];
        w.write_window("d", &mut out);
        assert_eq!(out, [1.0, -2.0]);
        assert!(!w.write_window("nobody", &mut out));
    }

    /// A large mean with a small spread (spindle speed ~1200 rpm, std 3):
    /// the held value must be exactly what f64 normalization rounded once gives.
    #[test]
    fn holds_exactly_the_reference_input() {
        let n = Normalize { mean: vec![1200.123456789], std: vec![3.1] };
        let mut w = Windows::new(1, 1, 1).normalizing(Some(n.clone()));
        let v = 1203.987654321;
        w.push("d", Some(1), 0, &[v], &mut Vec::new()).unwrap();
        let mut out = [0f32];
        w.write_window("d", &mut out);
        assert_eq!(out[0], ((v - n.mean[0]) / n.std[0]) as f32);
    }

    #[test]
    fn a_new_normalization_converts_held_windows_and_marks_them_for_the_store() {
        let old = Normalize { mean: vec![1200.0, 0.0], std: vec![3.0, 1.0] };
        let new = Normalize { mean: vec![1201.0, 5.0], std: vec![4.0, 2.0] };
        let raw = [[1203.5, 7.0], [1198.25, -1.0]];
        let mut held = Windows::new(2, 2, 1).normalizing(Some(old));
        let mut fresh = Windows::new(2, 2, 1).normalizing(Some(new.clone()));
        for (i, r) in raw.iter().enumerate() {
            held.push("d", Some(i as i64), 0, r, &mut Vec::new()).unwrap();
            fresh.push("d", Some(i as i64), 0, r, &mut Vec::new()).unwrap();
        }
        held.take_dirty();
        held.renormalize(Some(new));
        assert_eq!(held.take_dirty().len(), 1, "converted windows go to the store");
        let (mut a, mut b) = ([0f32; 4], [0f32; 4]);
        held.write_window("d", &mut a);
        fresh.write_window("d", &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{a:?} vs {b:?}");
        }
        held.renormalize(None);
        held.write_window("d", &mut a);
        assert!((a[0] - 1203.5).abs() < 1e-3 && (a[3] + 1.0).abs() < 1e-6, "back to raw: {a:?}");
    }

    #[test]
    fn snapshots_convert_to_the_normalization_in_force() {
        let old = Normalize { mean: vec![10.0], std: vec![2.0] };
        let new = Normalize { mean: vec![12.0], std: vec![4.0] };
        let mut a = Windows::new(2, 1, 1).normalizing(Some(old));
        a.push("d", Some(1), 0, &[14.0], &mut Vec::new()).unwrap();
        a.push("d", Some(2), 0, &[8.0], &mut Vec::new()).unwrap();
        let snap = a.take_dirty().remove(0).1;
        let mut b = Windows::new(2, 1, 1).normalizing(Some(new));
        b.restore("d", &snap, i64::MAX).unwrap();
        let mut out = [0f32; 2];
        b.write_window("d", &mut out);
        assert_eq!(out, [0.5, -1.0]);
    }

    /// A stored window is used only when it is certainly the one written:
    /// any damaged byte, an older format, another card or a sample from the
    /// future refuses it, and nothing of it is restored.
    #[test]
    fn snapshots_that_cannot_be_trusted_are_refused() {
        let mut a = Windows::new(2, 2, 1).identified_by(7);
        a.push("d", Some(100), 0, &[1.0, 2.0], &mut Vec::new()).unwrap();
        a.push("d", Some(200), 0, &[3.0, 4.0], &mut Vec::new()).unwrap();
        let snap = a.take_dirty().remove(0).1;
        let fresh = || Windows::new(2, 2, 1).identified_by(7);
        assert!(fresh().restore("d", &snap, 200).is_ok());
        for i in 0..snap.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = snap.clone();
                bad[i] ^= bit;
                let mut w = fresh();
                assert_eq!(
                    w.restore("d", &bad, i64::MAX),
                    Err(Unrestored::Checksum),
                    "byte {i} bit {bit:#x}"
                );
                assert_eq!(w.devices(), 0);
            }
        }
        assert_eq!(fresh().restore("d", &snap[..snap.len() - 1], i64::MAX), Err(Unrestored::Checksum));
        assert_eq!(fresh().restore("d", b"", i64::MAX), Err(Unrestored::Format));
        let mut other_version = snap[..snap.len() - CHECKSUM].to_vec();
        other_version[0] = 2;
        let sum = crc32fast::hash(&other_version);
        other_version.extend_from_slice(&sum.to_le_bytes());
        assert_eq!(fresh().restore("d", &other_version, i64::MAX), Err(Unrestored::Format));
        let mut other_card = Windows::new(2, 2, 1).identified_by(8);
        assert_eq!(other_card.restore("d", &snap, i64::MAX), Err(Unrestored::Card));
        assert_eq!(
            Windows::new(3, 2, 1).identified_by(7).restore("d", &snap, i64::MAX),
            Err(Unrestored::Card)
        );
        assert_eq!(fresh().restore("d", &snap, 199), Err(Unrestored::Future));
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
        b.restore("d", &dirty[0].1, i64::MAX).unwrap();
        let (mut wa, mut wb) = ([0f32; 6], [0f32; 6]);
        a.write_window("d", &mut wa);
        b.write_window("d", &mut wb);
        assert_eq!(wa, wb);
        // Same next steps: sample 5 is due (hop 2), ts 3 is a replay, ts 2 out of order.
        assert_eq!(
            b.push("d", Some(3), 0, &[0.0, 0.0], &mut Vec::new()).unwrap(),
            Pushed::Duplicate { ts: 3 }
        );
        assert_eq!(
            b.push("d", Some(2), 0, &[0.0, 0.0], &mut Vec::new()).unwrap_err().reason,
            Reason::OutOfOrder
        );
        assert_eq!(
            a.push("d", Some(4), 0, &[4.0, 4.0], &mut Vec::new()).unwrap(),
            b.push("d", Some(4), 0, &[4.0, 4.0], &mut Vec::new()).unwrap()
        );
        assert!(Windows::new(4, 2, 1).restore("d", &dirty[0].1, i64::MAX).is_err(), "other shape refused");
        assert!(b.restore("d", b"junk", i64::MAX).is_err());
        b.take_dirty();
        b.mark_all_dirty();
        assert_eq!(b.take_dirty().len(), 1, "every window is written again");
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
        assert!(!w.write_window("b", &mut out), "b was evicted");
        assert!(w.write_window("a", &mut out), "a, seen more recently, stays");
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
        assert!(w.write_window("real", &mut out));
        assert!(evicted.len() >= 4900);
    }
}
