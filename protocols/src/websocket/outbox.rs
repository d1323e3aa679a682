//! A session's outbound queue: encoded frames waiting for the socket, bounded in bytes, with
//! the policy that decides what happens when a reader falls behind.

use std::collections::VecDeque;
use std::task::Waker;

use bytes::Bytes;

/// What a session does when a message would take its outbound queue past its limit
/// ([`WebSocket::set_queue`](super::WebSocket::set_queue)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueuePolicy {
    /// Senders wait for room: backpressure reaches whoever sends (the default).
    Await,
    /// The oldest queued messages are dropped to make room (for state that a newer message
    /// supersedes). Frames that depend on the ones before them (compressed with a window kept
    /// between messages) are never dropped: such a session waits instead.
    DropOldest,
    /// The reader is too slow to keep: queued messages are dropped and the session closes with
    /// this code (1008 policy violation, or 1013 try again later).
    Close(u16),
}

/// The frame was not queued: the session takes no more (closed by either side, by its policy,
/// or by a failed write).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused;

/// How a queued frame may be treated by the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A message that stands alone: the oldest of these may be dropped.
    Droppable,
    /// A message the ones after it depend on (a shared compression window).
    Kept,
    /// A control frame (pong, close): never dropped, never refused.
    Control,
}

/// What happened when a message was queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Queued {
    /// Older messages dropped to make room for it.
    pub dropped: usize,
}

/// The queue. Invariant: frames are queued only while `writing` (a writer owns the socket and
/// takes them in order); with nothing being written the queue is empty.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Each frame as its header (or the whole frame) and the payload sent after it as it is
    /// (empty when the first part is the whole frame).
    frames: VecDeque<(Bytes, Bytes, Kind)>,
    /// Bytes queued or being written.
    held: usize,
    pub(crate) limit: usize,
    pub(crate) policy: QueuePolicy,
    /// A writer (a sender's own write, or the flush task) owns the socket.
    pub(crate) writing: bool,
    /// Tasks waiting for room below the limit or for everything queued to be written; woken
    /// together when either may have changed (each checks again).
    waiting: Vec<Waker>,
    /// No more messages are taken (the session is closing); control frames still go.
    pub(crate) closed: bool,
    /// A write failed: nothing more goes.
    pub(crate) broken: bool,
    /// The policy's close, once it acted: the code to close with.
    pub(crate) cut_off: Option<u16>,
    /// Messages dropped by `DropOldest` over the session's life.
    pub(crate) dropped: u64,
}

/// The default bound on a session's outbound queue.
pub(crate) const DEFAULT_LIMIT: usize = 4 << 20;

/// Frames taken per write (sockets accept at most 1024 pieces per call).
const BATCH_FRAMES: usize = 256;

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            frames: VecDeque::new(),
            held: 0,
            limit: DEFAULT_LIMIT,
            policy: QueuePolicy::Await,
            writing: false,
            waiting: Vec::new(),
            closed: false,
            broken: false,
            cut_off: None,
            dropped: 0,
        }
    }
}

impl Outbox {
    /// Bytes queued or being written.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Whether a message of `len` bytes fits (one that is larger than the whole limit fits an
    /// empty queue, or it could never be sent).
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.held == 0 || self.held + len <= self.limit
    }

    /// Queues a frame, `head` then `body` as it is (empty when `head` is the whole frame), as
    /// the policy allows. `Await` (and frames that others depend on) never refuse here: their
    /// senders waited for room first, and an encoded frame must go (its mask and compression
    /// window are spent). The caller starts a writer when [`Outbox::needs_writer`] says so.
    pub(crate) fn push_parts(
        &mut self,
        head: Bytes,
        body: Bytes,
        kind: Kind,
    ) -> Result<Queued, Refused> {
        if self.broken || (self.closed && kind != Kind::Control) {
            return Err(Refused);
        }
        let len = head.len() + body.len();
        let mut queued = Queued::default();
        if kind == Kind::Droppable && !self.fits(len) {
            match self.policy {
                QueuePolicy::Await => {}
                QueuePolicy::DropOldest => queued.dropped = self.drop_oldest(len),
                QueuePolicy::Close(code) => {
                    self.cut_off = Some(code);
                    self.closed = true;
                    self.clear_data();
                    return Err(Refused);
                }
            }
        }
        self.held += len;
        self.frames.push_back((head, body, kind));
        Ok(queued)
    }

    /// Takes the socket for a frame of `len` bytes that its sender writes itself; `false` if
    /// a writer already owns it (the frame must be queued).
    pub(crate) fn begin_own(&mut self, len: usize) -> Result<bool, Refused> {
        if self.broken {
            return Err(Refused);
        }
        if self.writing {
            return Ok(false);
        }
        self.writing = true;
        self.held += len;
        Ok(true)
    }

    /// Drops the oldest droppable frames until `len` more bytes fit; how many went.
    fn drop_oldest(&mut self, len: usize) -> usize {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.frames.len() && !self.fits(len) {
            if self.frames[i].2 == Kind::Droppable {
                if let Some((head, body, _)) = self.frames.remove(i) {
                    self.held -= head.len() + body.len();
                    dropped += 1;
                }
            } else {
                i += 1;
            }
        }
        self.dropped += dropped as u64;
        if dropped > 0 {
            self.wake();
        }
        dropped
    }

    /// Drops every queued message (not control frames): the session is being cut off.
    fn clear_data(&mut self) {
        let in_flight = self.held - self.queued_bytes();
        self.frames.retain(|(_, _, kind)| *kind == Kind::Control);
        self.held = in_flight + self.queued_bytes();
        self.wake();
    }

    fn queued_bytes(&self) -> usize {
        self.frames.iter().map(|(h, b, _)| h.len() + b.len()).sum()
    }

    /// Whether frames are waiting.
    pub(crate) fn has_queued(&self) -> bool {
        !self.frames.is_empty()
    }

    /// Whether frames are queued with no writer to take them.
    pub(crate) fn needs_writer(&self) -> bool {
        !self.writing && !self.frames.is_empty()
    }

    /// The next frames to write together, up to a batch, as the pieces to gather.
    pub(crate) fn take_batch(&mut self) -> Vec<Bytes> {
        let n = self.frames.len().min(BATCH_FRAMES);
        let mut pieces = Vec::with_capacity(n);
        for (head, body, _) in self.frames.drain(..n) {
            pieces.push(head);
            if !body.is_empty() {
                pieces.push(body);
            }
        }
        pieces
    }

    /// `len` bytes were written (or given up): room for waiting senders.
    pub(crate) fn written(&mut self, len: usize) {
        self.held = self.held.saturating_sub(len);
        self.wake();
    }

    /// The writer is done: the queue is empty.
    pub(crate) fn writer_done(&mut self) {
        self.writing = false;
        self.wake();
    }

    /// A write failed or was abandoned half way: nothing more is sent, and everyone waiting
    /// is told.
    pub(crate) fn fail(&mut self) {
        self.broken = true;
        self.closed = true;
        let queued = self.queued_bytes();
        self.frames.clear();
        self.held = self.held.saturating_sub(queued);
        self.wake();
    }

    /// Whether everything queued has been written (or nothing more can be).
    pub(crate) fn is_idle(&self) -> bool {
        !self.writing || self.broken
    }

    /// Wakes `waker` when room is made or the queue empties.
    pub(crate) fn wait(&mut self, waker: &Waker) {
        if !self.waiting.iter().any(|w| w.will_wake(waker)) {
            self.waiting.push(waker.clone());
        }
    }

    fn wake(&mut self) {
        for w in self.waiting.drain(..) {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    impl Outbox {
        fn push(&mut self, frame: Bytes, kind: Kind) -> Result<Queued, Refused> {
            self.push_parts(frame, Bytes::new(), kind)
        }
    }

    fn outbox(limit: usize, policy: QueuePolicy) -> Outbox {
        Outbox {
            limit,
            policy,
            writing: true,
            ..Outbox::default()
        }
    }

    #[test]
    fn the_limit_is_what_waiting_senders_check() {
        let mut o = outbox(100, QueuePolicy::Await);
        assert!(o.fits(60));
        o.push(frame(60), Kind::Droppable).unwrap();
        assert!(!o.fits(60));
        // An encoded frame is never refused for room, nor is a control frame.
        o.push(frame(60), Kind::Droppable).unwrap();
        o.push(frame(2), Kind::Control).unwrap();
        assert_eq!(o.held(), 122);
        assert_eq!(o.take_batch().len(), 3);
        o.written(122);
        assert!(o.fits(60));
    }

    #[test]
    fn a_message_larger_than_the_limit_fits_an_empty_queue() {
        let o = outbox(100, QueuePolicy::Await);
        assert!(o.fits(1000));
    }

    #[test]
    fn drop_oldest_drops_only_what_stands_alone() {
        let mut o = outbox(100, QueuePolicy::DropOldest);
        o.push(frame(40), Kind::Droppable).unwrap();
        o.push(frame(2), Kind::Control).unwrap();
        o.push(frame(40), Kind::Droppable).unwrap();
        let q = o.push(frame(40), Kind::Droppable).unwrap();
        assert_eq!(q.dropped, 1);
        assert_eq!(o.held(), 82);
        assert_eq!(o.dropped, 1);
        // Frames that others depend on are never dropped.
        let mut o = outbox(100, QueuePolicy::DropOldest);
        o.push(frame(60), Kind::Kept).unwrap();
        o.push(frame(60), Kind::Kept).unwrap();
        assert_eq!((o.held(), o.dropped), (120, 0));
    }

    #[test]
    fn close_cuts_off_and_keeps_control_frames() {
        let mut o = outbox(100, QueuePolicy::Close(1013));
        o.push(frame(60), Kind::Droppable).unwrap();
        o.push(frame(2), Kind::Control).unwrap();
        assert_eq!(o.push(frame(60), Kind::Droppable), Err(Refused));
        assert_eq!(o.cut_off, Some(1013));
        assert_eq!(o.held(), 2);
        // The close that follows still goes; messages do not.
        o.push(frame(4), Kind::Control).unwrap();
        assert_eq!(o.push(frame(1), Kind::Droppable), Err(Refused));
        assert_eq!(o.take_batch().len(), 2);
    }
}
