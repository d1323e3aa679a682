//! The receiver's replay window: 256 sequence numbers, as the standard specifies.

/// Sequence numbers the window remembers.
pub const REPLAY_WINDOW: usize = 256;

/// Which recent sequence numbers have been received. A packet is checked before it is
/// decrypted ([`ReplayWindow::seen`]) and recorded only once it opened
/// ([`ReplayWindow::record`]), so a forged packet cannot burn a sequence number.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    newest: u64,
    slots: Box<[u64; REPLAY_WINDOW]>,
}

/// A slot that holds no sequence number yet.
const EMPTY: u64 = u64::MAX;

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            newest: 0,
            slots: Box::new([EMPTY; REPLAY_WINDOW]),
        }
    }
}

impl ReplayWindow {
    /// Whether `sequence` was received already, or is too old to tell (older than the
    /// window): either way the packet is dropped.
    pub fn seen(&self, sequence: u64) -> bool {
        if sequence.saturating_add(REPLAY_WINDOW as u64) <= self.newest {
            return true;
        }
        let slot = self.slots[sequence as usize % REPLAY_WINDOW];
        slot != EMPTY && slot >= sequence
    }

    /// Records `sequence` as received.
    pub fn record(&mut self, sequence: u64) {
        if sequence > self.newest {
            self.newest = sequence;
        }
        self.slots[sequence as usize % REPLAY_WINDOW] = sequence;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_packets_older_than_the_window_are_seen() {
        let mut w = ReplayWindow::default();
        assert!(!w.seen(0));
        w.record(0);
        assert!(w.seen(0));
        for s in [5, 3, 4] {
            assert!(!w.seen(s));
            w.record(s);
            assert!(w.seen(s));
        }
        assert!(!w.seen(1));
        w.record(1000);
        // 745 is the oldest the window still tells apart; 744 is too old.
        assert!(w.seen(744));
        assert!(!w.seen(745));
        assert!(w.seen(1000));
        assert!(!w.seen(1001));
        // Sequence 5's slot now belongs to 1029: 5 reads as seen (it is out of the window).
        w.record(1029);
        assert!(w.seen(5));
    }
}
