//! What `/healthz`, systemd's watchdog and `STATUS=` read: whether the broker
//! is connected, whether each pipeline loop is alive, and throughput.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Shared between the connection task, the pipeline workers and the reporters.
#[derive(Debug)]
pub(crate) struct Health {
    /// The telemetry connection.
    connected: AtomicBool,
    /// The score publisher's connection.
    publishing: AtomicBool,
    /// The Sparkplug Edge Node's connection: 0 none configured, 1 down, 2 up
    /// (shown on the status page; `/healthz` does not read it).
    sparkplug: AtomicU8,
    /// Per pipeline: the last time its loop went round (epoch ms).
    beats: Vec<AtomicI64>,
    /// Per pipeline: why its commits fail, while they do.
    commit_errors: Vec<Mutex<Option<String>>>,
    names: Vec<String>,
    messages: AtomicU64,
    windows: AtomicU64,
    /// When the telemetry connection last came up, and last brought a message (epoch ms).
    connected_since: AtomicI64,
    last_intake: AtomicI64,
    /// `limits.stale_intake_secs` in ms; 0: off.
    stale_after: AtomicI64,
    refusals: Mutex<Refusals>,
    /// Whether `refusals` holds a publish refusal (checked on every acknowledgement).
    any_refused: AtomicBool,
    /// The newest sample time the pipelines applied (epoch ms; 0: none
    /// yet): the daemon's data clock.
    data_clock: AtomicI64,
    /// Times the score publisher's connection came up.
    publisher_ups: AtomicU64,
}

/// What the broker refused, recently.
#[derive(Debug, Default)]
struct Refusals {
    /// Topic -> (reason, when): until a publish to it is accepted, or for [`REFUSAL_MEMORY_MS`].
    publishes: std::collections::HashMap<String, (&'static str, i64)>,
    subscriptions: Vec<String>,
}

/// How long a refused publish keeps `/healthz` unhealthy without another.
pub(crate) const REFUSAL_MEMORY_MS: i64 = 60_000;
/// Topics remembered as refused at most (a wide ACL denial refuses every device's).
const REFUSED_TOPICS: usize = 64;

impl Health {
    pub(crate) fn new(pipelines: &[String]) -> Arc<Health> {
        let now = crate::clock::now_ms();
        Arc::new(Health {
            connected: AtomicBool::new(false),
            publishing: AtomicBool::new(false),
            sparkplug: AtomicU8::new(0),
            beats: pipelines.iter().map(|_| AtomicI64::new(now)).collect(),
            commit_errors: pipelines.iter().map(|_| Mutex::new(None)).collect(),
            names: pipelines.to_vec(),
            messages: AtomicU64::new(0),
            windows: AtomicU64::new(0),
            connected_since: AtomicI64::new(now),
            last_intake: AtomicI64::new(0),
            stale_after: AtomicI64::new(0),
            refusals: Mutex::new(Refusals::default()),
            any_refused: AtomicBool::new(false),
            data_clock: AtomicI64::new(0),
            publisher_ups: AtomicU64::new(0),
        })
    }

    pub(crate) fn set_connected(&self, up: bool) {
        if up && !self.connected.swap(true, Ordering::Relaxed) {
            self.connected_since.store(crate::clock::now_ms(), Ordering::Relaxed);
        }
        self.connected.store(up, Ordering::Relaxed);
    }

    /// Report unhealthy when connected telemetry brings nothing for this long.
    pub(crate) fn set_stale_intake(&self, after: Option<std::time::Duration>) {
        let ms = after.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.stale_after.store(ms, Ordering::Relaxed);
    }

    /// A telemetry message arrived.
    pub(crate) fn intake(&self, now_ms: i64) {
        self.last_intake.store(now_ms, Ordering::Relaxed);
    }

    fn refusals(&self) -> std::sync::MutexGuard<'_, Refusals> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The broker refused a publish to `topic`.
    pub(crate) fn publish_refused(&self, topic: &str, why: &'static str) {
        let mut r = self.refusals();
        if r.publishes.len() < REFUSED_TOPICS || r.publishes.contains_key(topic) {
            r.publishes.insert(topic.to_string(), (why, crate::clock::now_ms()));
        }
        self.any_refused.store(true, Ordering::Relaxed);
    }

    /// The broker took a publish to `topic` (clears an earlier refusal of it).
    pub(crate) fn publish_accepted(&self, topic: &str) {
        if self.any_refused.load(Ordering::Relaxed) {
            let mut r = self.refusals();
            r.publishes.remove(topic);
            self.any_refused.store(!r.publishes.is_empty(), Ordering::Relaxed);
        }
    }

    /// The broker refused the subscription to `filter`.
    pub(crate) fn subscription_refused(&self, filter: &str) {
        let mut r = self.refusals();
        if !r.subscriptions.iter().any(|f| f == filter) {
            r.subscriptions.push(filter.to_string());
        }
    }

    /// Every subscription was granted (after a reconnect).
    pub(crate) fn subscriptions_granted(&self) {
        self.refusals().subscriptions.clear();
    }

    pub(crate) fn set_publishing(&self, up: bool) {
        if up {
            self.publisher_ups.fetch_add(1, Ordering::Relaxed);
        }
        self.publishing.store(up, Ordering::Relaxed);
    }

    /// Whether the score publisher's connection is up, and how many times it
    /// has come up (a reconnect between two looks shows as a new count).
    pub(crate) fn publisher(&self) -> (bool, u64) {
        (self.publishing.load(Ordering::Relaxed), self.publisher_ups.load(Ordering::Relaxed))
    }

    /// Whether the telemetry connection is up.
    pub(crate) fn intake_up(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A pipeline applied samples up to `ts` (epoch ms).
    pub(crate) fn data_seen(&self, ts: i64) {
        self.data_clock.fetch_max(ts, Ordering::Relaxed);
    }

    /// The newest sample time any pipeline applied (0: none yet).
    pub(crate) fn data_clock(&self) -> i64 {
        self.data_clock.load(Ordering::Relaxed)
    }

    pub(crate) fn set_sparkplug(&self, up: bool) {
        self.sparkplug.store(if up { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// Each broker connection and whether it is up (Sparkplug's only once configured).
    pub(crate) fn connections(&self) -> Vec<(&'static str, bool)> {
        let mut c = vec![
            ("telemetry", self.connected.load(Ordering::Relaxed)),
            ("scores", self.publishing.load(Ordering::Relaxed)),
        ];
        match self.sparkplug.load(Ordering::Relaxed) {
            0 => {}
            s => c.push(("sparkplug", s == 2)),
        }
        c
    }

    /// A pipeline's commits fail (`Some(why)`), or work again (`None`).
    pub(crate) fn set_commit_error(&self, pipeline: usize, why: Option<String>) {
        *self.commit_errors[pipeline].lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// A pipeline loop went round.
    pub(crate) fn beat(&self, pipeline: usize) {
        self.beats[pipeline].store(crate::clock::now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn counted(&self, messages: u64, windows: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.windows.fetch_add(windows, Ordering::Relaxed);
    }

    /// `(messages, windows)` since start.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.messages.load(Ordering::Relaxed), self.windows.load(Ordering::Relaxed))
    }

    /// Pipelines whose loop has not gone round for `max_age_ms`.
    pub(crate) fn stalled(&self, max_age_ms: i64) -> Vec<&str> {
        let now = crate::clock::now_ms();
        self.beats
            .iter()
            .zip(&self.names)
            .filter(|(b, _)| now - b.load(Ordering::Relaxed) > max_age_ms)
            .map(|(_, n)| n.as_str())
            .collect()
    }

    /// `Ok` when healthy, else why not.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if !self.connected.load(Ordering::Relaxed) {
            why.push("broker not connected".to_string());
        }
        if !self.publishing.load(Ordering::Relaxed) {
            why.push("score publisher not connected".to_string());
        }
        let now = crate::clock::now_ms();
        {
            let mut r = self.refusals();
            r.publishes.retain(|_, (_, at)| now - *at <= REFUSAL_MEMORY_MS);
            let mut refused: Vec<(&String, &&str)> = r.publishes.iter().map(|(t, (w, _))| (t, w)).collect();
            refused.sort();
            if let Some((topic, reason)) = refused.first() {
                let more = match refused.len() {
                    1 => String::new(),
                    n => format!(" and {} more topics", n - 1),
                };
                why.push(format!("the broker refuses publishes to {topic} ({reason}){more}"));
            }
            for f in &r.subscriptions {
                why.push(format!("the broker refused the subscription to {f}"));
            }
        }
        let stale = self.stale_after.load(Ordering::Relaxed);
        if stale > 0 && self.connected.load(Ordering::Relaxed) {
            let since =
                self.last_intake.load(Ordering::Relaxed).max(self.connected_since.load(Ordering::Relaxed));
            if now - since > stale {
                why.push(format!(
                    "no telemetry for {} s (limits.stale_intake_secs = {}): is the subscription allowed to read?",
                    (now - since) / 1000,
                    stale / 1000
                ));
            }
        }
        for (name, e) in self.names.iter().zip(&self.commit_errors) {
            if let Some(e) = e.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                why.push(format!("state store cannot commit (pipeline {name}): {e}"));
            }
        }
        let stalled = self.stalled(STALL_MS);
        if !stalled.is_empty() {
            why.push(format!("pipeline loop stalled: {}", stalled.join(", ")));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }
}

/// A pipeline loop wakes at least every second; ten times that is a stall.
pub(crate) const STALL_MS: i64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_that_stops_beating_is_stalled_and_unhealthy() {
        let h = Health::new(&["a".into(), "b".into()]);
        h.set_connected(true);
        h.set_publishing(true);
        assert!(h.check().is_ok());
        h.beats[1].store(crate::clock::now_ms() - 60_000, Ordering::Relaxed);
        assert_eq!(h.stalled(STALL_MS), ["b"]);
        assert!(h.check().unwrap_err().contains("pipeline loop stalled: b"));
        h.beat(1);
        h.set_connected(false);
        assert_eq!(h.check().unwrap_err(), "broker not connected");
    }

    #[test]
    fn failing_commits_are_unhealthy_until_they_work_again() {
        let h = Health::new(&["a".into(), "b".into()]);
        h.set_connected(true);
        h.set_publishing(true);
        h.set_commit_error(1, Some("No space left on device".into()));
        assert_eq!(h.check().unwrap_err(), "state store cannot commit (pipeline b): No space left on device");
        h.set_commit_error(1, None);
        assert!(h.check().is_ok());
    }

    #[test]
    fn refused_publishes_and_subscriptions_and_stale_intake_are_unhealthy() {
        let h = Health::new(&["a".into()]);
        h.set_connected(true);
        h.set_publishing(true);
        h.publish_refused("plant/l1/m1/lineguard/scores", "not authorized");
        h.publish_refused("plant/l1/m2/lineguard/scores", "not authorized");
        assert_eq!(
            h.check().unwrap_err(),
            "the broker refuses publishes to plant/l1/m1/lineguard/scores (not authorized) and 1 more topics"
        );
        h.publish_accepted("plant/l1/m1/lineguard/scores");
        h.publish_accepted("plant/l1/m2/lineguard/scores");
        assert!(h.check().is_ok(), "accepted again");
        h.publish_refused("t", "quota exceeded");
        h.refusals().publishes.get_mut("t").unwrap().1 -= REFUSAL_MEMORY_MS + 1;
        assert!(h.check().is_ok(), "an old refusal is forgotten");
        h.subscription_refused("plant/+/+/telemetry");
        assert!(h.check().unwrap_err().contains("refused the subscription to plant/+/+/telemetry"));
        h.subscriptions_granted();
        h.set_stale_intake(Some(std::time::Duration::from_secs(1)));
        h.connected_since.store(crate::clock::now_ms() - 5000, Ordering::Relaxed);
        assert!(h.check().unwrap_err().starts_with("no telemetry for 5 s"), "{:?}", h.check());
        h.intake(crate::clock::now_ms());
        assert!(h.check().is_ok());
    }

    #[test]
    fn scores_that_cannot_go_out_are_unhealthy() {
        let h = Health::new(&["a".into()]);
        h.set_connected(true);
        assert_eq!(h.check().unwrap_err(), "score publisher not connected");
        h.set_publishing(true);
        assert!(h.check().is_ok());
    }
}
