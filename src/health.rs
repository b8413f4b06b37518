//! What `/healthz`, systemd's watchdog and `STATUS=` read: whether the broker
//! is connected, whether each pipeline loop is alive, and throughput.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Shared between the connection task, the pipeline workers and the reporters.
#[derive(Debug)]
pub struct Health {
    /// The telemetry connection.
    connected: AtomicBool,
    /// The score publisher's connection.
    publishing: AtomicBool,
    /// Per pipeline: the last time its loop went round (epoch ms).
    beats: Vec<AtomicI64>,
    /// Per pipeline: why its commits fail, while they do.
    commit_errors: Vec<Mutex<Option<String>>>,
    names: Vec<String>,
    messages: AtomicU64,
    windows: AtomicU64,
}

impl Health {
    pub fn new(pipelines: &[String]) -> Arc<Health> {
        let now = crate::daemon::now_ms();
        Arc::new(Health {
            connected: AtomicBool::new(false),
            publishing: AtomicBool::new(false),
            beats: pipelines.iter().map(|_| AtomicI64::new(now)).collect(),
            commit_errors: pipelines.iter().map(|_| Mutex::new(None)).collect(),
            names: pipelines.to_vec(),
            messages: AtomicU64::new(0),
            windows: AtomicU64::new(0),
        })
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    pub fn set_publishing(&self, up: bool) {
        self.publishing.store(up, Ordering::Relaxed);
    }

    /// Both connections are up: telemetry comes in and scores go out.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed) && self.publishing.load(Ordering::Relaxed)
    }

    /// A pipeline's commits fail (`Some(why)`), or work again (`None`).
    pub fn set_commit_error(&self, pipeline: usize, why: Option<String>) {
        *self.commit_errors[pipeline].lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// A pipeline loop went round.
    pub fn beat(&self, pipeline: usize) {
        self.beats[pipeline].store(crate::daemon::now_ms(), Ordering::Relaxed);
    }

    pub fn counted(&self, messages: u64, windows: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.windows.fetch_add(windows, Ordering::Relaxed);
    }

    /// `(messages, windows)` since start.
    pub fn totals(&self) -> (u64, u64) {
        (self.messages.load(Ordering::Relaxed), self.windows.load(Ordering::Relaxed))
    }

    /// Pipelines whose loop has not gone round for `max_age_ms`.
    pub fn stalled(&self, max_age_ms: i64) -> Vec<&str> {
        let now = crate::daemon::now_ms();
        self.beats
            .iter()
            .zip(&self.names)
            .filter(|(b, _)| now - b.load(Ordering::Relaxed) > max_age_ms)
            .map(|(_, n)| n.as_str())
            .collect()
    }

    /// `Ok` when healthy, else why not.
    pub fn check(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if !self.connected.load(Ordering::Relaxed) {
            why.push("broker not connected".to_string());
        }
        if !self.publishing.load(Ordering::Relaxed) {
            why.push("score publisher not connected".to_string());
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
pub const STALL_MS: i64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_that_stops_beating_is_stalled_and_unhealthy() {
        let h = Health::new(&["a".into(), "b".into()]);
        h.set_connected(true);
        h.set_publishing(true);
        assert!(h.check().is_ok());
        h.beats[1].store(crate::daemon::now_ms() - 60_000, Ordering::Relaxed);
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
    fn scores_that_cannot_go_out_are_unhealthy() {
        let h = Health::new(&["a".into()]);
        h.set_connected(true);
        assert!(!h.connected());
        assert_eq!(h.check().unwrap_err(), "score publisher not connected");
        h.set_publishing(true);
        assert!(h.connected());
        assert!(h.check().is_ok());
    }
}
