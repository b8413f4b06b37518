//! The commands beside the daemon: `check-config`, `demo`, `simulate`,
//! `record`, `replay`, and the embedded broker the demo (and tests without
//! mosquitto) run on.

pub mod broker;
pub mod check_config;
pub mod demo;
pub mod record;
pub mod replay;
pub mod sim;

/// The async runtime every command runs on: one thread. The async side only
/// moves messages between the broker connections and the pipeline threads
/// (where the CPU work is), and doing that within one thread avoids a
/// kernel context switch per hand-off. Pipeline workers drive their waits
/// through its handle; the caller's `block_on` drives the timers and I/O.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
