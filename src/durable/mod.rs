//! Durability: what survives a crash, and the one task that publishes.
//!
//! - [`store`]: the state store (redb): window tails, the outbox of scores
//!   not yet acknowledged by the broker, a few counters; every record with
//!   its own format and checksum, every page verified at open;
//! - [`committer`]: a pipeline's group commits, off its scoring thread; only
//!   after one is durable are the messages behind it acknowledged;
//! - [`ack`]: a message's acknowledgement, shared by the pipelines that
//!   took it, released by the last of them;
//! - [`sink`]: publishes the outbox in order, on its own connection, and
//!   deletes what the broker acknowledged once its commit is done;
//! - [`link`]: between a sink and its connection (the [`link::Publisher`]
//!   it publishes with, the [`link::Link`] news it hears);
//! - [`settings`]: the `[state]` section.
//!
//! In: each pipeline turn's changes and scores. Out: publishes, and
//! acknowledgements released to the acker. Invariants: telemetry is
//! acknowledged only once its effect is durable; a score is deleted only
//! once acknowledged and committed; what is read back is used only when it
//! passes its checks.

pub(crate) mod ack;
pub(crate) mod committer;
pub(crate) mod link;
mod settings;
pub(crate) mod sink;
pub mod store;

pub(crate) use settings::StateSettings;
