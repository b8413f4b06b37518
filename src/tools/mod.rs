//! The commands beside the daemon: `check-config`, `demo`, `simulate`,
//! `record`, `replay`, and the embedded broker the demo (and tests without
//! mosquitto) run on.

pub mod broker;
pub(crate) mod check_config;
pub(crate) mod demo;
pub(crate) mod demo_pair;
pub(crate) mod record;
pub(crate) mod replay;
pub mod sim;
