//! The integration tests, in one binary: they share one build of the
//! harness (`tests/support`) and one link against the library, and run
//! side by side. Each module is what a user would try of one part of
//! lineguard: against a real mosquitto on a free port, the real daemon
//! binary, and ONNX Runtime's numbers.
//!
//! `cargo test --test e2e faults::` runs one module. Binaries apart: the
//! allocation counts (`allocations`, a counting allocator of its own), the
//! stock broker's pace (`stock_broker`, alone on the cores) and the Debian
//! package (`package`, ignored by a plain `cargo test`).

#[path = "../support/mod.rs"]
mod support;

mod brokers;
mod cli;
mod cluster;
mod daemon;
mod explain;
mod faults;
mod forecast;
mod formats;
mod fuzz_regressions;
mod golden;
mod operations;
mod reconstruction;
mod redundancy;
mod reliability;
mod replay;
mod security;
mod shadow;
mod sparkplug;
mod status_page;
mod store_damage;
