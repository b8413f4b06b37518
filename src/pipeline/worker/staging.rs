//! What a turn has staged, until its end hands it over: the messages it
//! publishes, the acknowledgements it releases and the devices it forgot.

use crate::durable::ack::Ack;
use crate::durable::store::NewEntry;

/// One turn's results, in the order they were made.
#[derive(Default)]
pub(crate) struct Staged {
    /// Scores, alarm states, shadow scores (and, replaying, dead letters),
    /// each with the input message that caused it (replay's order; 0 in
    /// the daemon).
    pub published: Vec<(u64, NewEntry)>,
    /// The acknowledgements of the turn's messages, released once its
    /// changes are durable.
    pub acks: Vec<Ack>,
    /// Devices whose stored windows go.
    pub forget: Vec<String>,
}

impl Staged {
    pub(crate) fn publish(&mut self, cause: u64, entry: NewEntry) {
        self.published.push((cause, entry));
    }

    /// Whether the turn has anything to hand over, windows aside.
    pub(crate) fn is_empty(&self) -> bool {
        self.published.is_empty() && self.acks.is_empty() && self.forget.is_empty()
    }

    /// Forget it all (replaying: nothing is acknowledged or stored).
    pub(crate) fn clear(&mut self) {
        self.published.clear();
        self.acks.clear();
        self.forget.clear();
    }
}
