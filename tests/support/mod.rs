//! Shared harness for the integration tests: a real broker, the real daemon
//! binary, plain MQTT clients, and the ONNX Runtime golden fixtures.
#![allow(dead_code)]

pub mod broker;
pub mod chromium;
pub mod daemon;
pub mod golden;
pub mod line;
pub mod mqtt;
pub mod nats;
pub mod sparkplug;
pub mod stream;
pub mod tags;
pub mod tmpfs;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A path inside the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Poll `f` every 100 ms until it holds; fail naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
