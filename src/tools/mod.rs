//! The commands beside the daemon: `check-config`, `demo`, `simulate`,
//! `record`, `replay`, and the embedded broker the demo (and tests without
//! mosquitto) run on.

pub mod broker;
pub mod check_config;
pub mod demo;
pub mod record;
pub mod replay;
pub mod sim;
