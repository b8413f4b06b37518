//! Everything observable: each event writes its log line and its metric
//! together, so counters and logs never drift apart (vector's
//! `internal_events`). A file per stage; no other module calls the
//! `metrics` macros or logs what an operator acts on.
//!
//! One way to emit: the emitter owns a handle for its events (made once,
//! when the emitter is), which registers the handle's metrics at 0 then,
//! and has a method per event. Incrementing a registered counter is an
//! atomic add, so the handles serve the per-message path too.
//!
//! Label values: a value that names a stage's own concept (why a sample was
//! rejected, a score's state, why a window started again) comes from an enum
//! that stage owns, through [`Label`]; the handle registers every value of
//! the enum and counts by it, so no label text is written twice. This floor
//! imports no stage, so such handles are generic over the stage's enums
//! (a stage names them once, in a type it owns). An outcome that only the
//! event knows (a reload's `ok` or `refused`) is an enum here.
//!
//! Warnings that input or a fault can trigger at line rate (rejected
//! samples, broker errors while it is down, refused publishes, failing
//! commits) are rate-limited per kind with [`RateLimit`]: the first is
//! logged at once, the rest are counted and summed up at most every
//! [`LOG_EVERY`]. A dependency's own lines go through the same limit (see
//! `logging`).

pub(crate) mod daemon;
pub(crate) mod durable;
pub(crate) mod model;
pub(crate) mod mqtt;
pub(crate) mod pipeline;
pub(crate) mod redundancy;
pub(crate) mod sparkplug;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use metrics::{counter, Counter};

pub(crate) use crate::ops::metrics::names;

/// How often a rate-limited kind of line is logged at most.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// A label value: one variant of an enum a stage owns, written as its
/// metric label (`#[derive(strum::VariantArray, strum::IntoStaticStr)]`).
pub(crate) trait Label: Copy + Eq + Send + Sync + 'static {
    /// Every value, in the enum's order.
    const ALL: &'static [Self];

    /// As written in the metric's label (and the log line).
    fn as_str(self) -> &'static str;

    /// Its place in [`Label::ALL`].
    fn index(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).expect("every value is in ALL")
    }
}

impl<T> Label for T
where
    T: strum::VariantArray + Copy + Eq + Send + Sync + 'static,
    &'static str: From<T>,
{
    const ALL: &'static [Self] = T::VARIANTS;

    fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One counter per value of `L`, all registered at 0 (a dashboard shows 0,
/// not "No data", and `increase()` sees the first event).
pub(crate) struct ByLabel<L: Label> {
    counters: Vec<Counter>,
    _label: PhantomData<L>,
}

impl<L: Label> ByLabel<L> {
    /// `name{fixed..., key=value}` for every value of `L`.
    pub(crate) fn register(name: &'static str, key: &'static str, fixed: &[(&'static str, &str)]) -> Self {
        let counters = L::ALL
            .iter()
            .map(|v| {
                let mut labels: Vec<metrics::Label> =
                    fixed.iter().map(|(k, v)| metrics::Label::new(*k, v.to_string())).collect();
                labels.push(metrics::Label::new(key, v.as_str()));
                zeroed(counter!(name, labels))
            })
            .collect();
        ByLabel { counters, _label: PhantomData }
    }

    pub(crate) fn add(&self, value: L, n: u64) {
        self.counters[value.index()].increment(n);
    }
}

/// A counter registered at 0.
fn zeroed(c: Counter) -> Counter {
    c.increment(0);
    c
}

/// Per-key log rate limiter.
#[derive(Debug)]
pub(crate) struct RateLimit<K> {
    seen: HashMap<K, (Instant, u64)>,
}

impl<K> Default for RateLimit<K> {
    fn default() -> Self {
        Self { seen: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq> RateLimit<K> {
    /// `Some(suppressed since last)` when a line may be logged now.
    pub(crate) fn allow(&mut self, key: K) -> Option<u64> {
        let now = Instant::now();
        match self.seen.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_EVERY => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                self.seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// " (N more since last report)", or nothing.
fn more(suppressed: u64) -> String {
    if suppressed > 0 {
        format!(" ({suppressed} more since last report)")
    } else {
        String::new()
    }
}
