//! What an instance of a redundant pair knows of the Sparkplug sessions of
//! the Edge Node the two share (one `group_id` / `edge_node_id`), from the
//! node's NBIRTH and NDEATH it hears on its watch connection and from the
//! peer's status.
//!
//! A host must never see two sessions of the node online at once, and a
//! late NDEATH of an old session must not end the new one. So an instance
//! that becomes active births only once the node is free of the peer's
//! session (its NDEATH heard: sent on standing down, or its will; the
//! peer's status names the session it holds, for an instance that started
//! after its NBIRTH), and takes
//! the `bdSeq` after the newest one heard, so that the old session's NDEATH,
//! however late, carries another `bdSeq` than the new session's NBIRTH.
//! Its own sessions need no such care: a connect under its client id ends
//! the old connection, and the broker publishes that one's will first.

/// The peer's session of the node, as heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerSession {
    /// None online: its last NDEATH was heard, or it never had one.
    None,
    /// Born with this `bdSeq` (heard, or named by the peer's status) and
    /// not dead yet.
    Online(u64),
}

#[derive(Debug)]
pub(crate) struct NodeSessions {
    peer: PeerSession,
    /// The `bdSeq` of this instance's latest connect.
    own: Option<u64>,
    /// The newest `bdSeq` heard, in a birth or a death.
    newest: Option<u64>,
    /// The `bdSeq` of the last NDEATH heard (a status sent before it may
    /// arrive after it, on the peer's other connection).
    dead: Option<u64>,
}

impl Default for NodeSessions {
    fn default() -> Self {
        NodeSessions { peer: PeerSession::None, own: None, newest: None, dead: None }
    }
}

impl NodeSessions {
    /// An NBIRTH of the node.
    pub(crate) fn birth(&mut self, bd_seq: u64) {
        self.newest = Some(bd_seq);
        if self.own != Some(bd_seq) {
            self.peer = PeerSession::Online(bd_seq);
        }
    }

    /// An NDEATH of the node.
    pub(crate) fn death(&mut self, bd_seq: u64) {
        if self.own == Some(bd_seq) {
            return;
        }
        self.dead = Some(bd_seq);
        match self.peer {
            // The late death of an older session: the newer one lives on.
            PeerSession::Online(b) if b != bd_seq => {}
            _ => {
                self.peer = PeerSession::None;
                self.newest = Some(bd_seq);
            }
        }
    }

    /// The peer's status names the session it holds (`bd_seq`), if any.
    pub(crate) fn peer_holds(&mut self, bd_seq: Option<u64>) {
        let Some(b) = bd_seq else { return };
        if self.dead == Some(b) || self.own == Some(b) || self.peer == PeerSession::Online(b) {
            return;
        }
        self.peer = PeerSession::Online(b);
        self.newest = Some(b);
    }

    /// The `bdSeq` of this instance's latest connect.
    pub(crate) fn own(&self) -> Option<u64> {
        self.own
    }

    /// No session of the peer's is online, as far as this instance heard.
    pub(crate) fn free(&self) -> bool {
        self.peer == PeerSession::None
    }

    /// The `bdSeq` of this instance's next connect: after the newest heard,
    /// else `stored` (its own, kept across restarts).
    pub(crate) fn connecting(&mut self, stored: u64) -> u64 {
        let next = self.newest.map_or(stored, |n| (n + 1) % 256);
        self.own = Some(next);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peers_session_ends_with_its_own_ndeath_only() {
        let mut s = NodeSessions::default();
        assert!(s.free());
        s.birth(7);
        assert!(!s.free());
        s.death(6); // an older session's will, late
        assert!(!s.free());
        s.death(7);
        assert!(s.free());
        assert_eq!(s.connecting(0), 8, "after the newest heard");
    }

    #[test]
    fn a_session_named_by_the_peers_status_is_online_until_its_ndeath() {
        let mut s = NodeSessions::default();
        s.peer_holds(None);
        assert!(s.free(), "a peer without a session");
        s.peer_holds(Some(41));
        assert!(!s.free());
        s.death(41);
        assert!(s.free());
        // A status sent before that NDEATH, arriving after it.
        s.peer_holds(Some(41));
        assert!(s.free());
        assert_eq!(s.connecting(3), 42);
        // Its own birth and death do not count as the peer's.
        s.birth(42);
        assert!(s.free());
        assert_eq!(s.own(), Some(42));
        s.peer_holds(Some(43));
        s.death(42);
        assert!(!s.free());
        s.death(43);
        assert!(s.free());
    }

    #[test]
    fn bd_seq_wraps_and_falls_back_to_the_stored_one() {
        let mut s = NodeSessions::default();
        assert_eq!(s.connecting(17), 17);
        s.birth(255);
        assert_eq!(s.connecting(0), 0);
    }
}
