//! [`Group`]: one message to many sessions on a core, framed once.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use bytes::Bytes;

use super::Message;
use super::outbox::Kind;
use super::session::{Inner, WsWriter};
use crate::ws::{SharedEncoder, Sharing};

/// Sessions on one core that receive the same messages (a room, a topic). [`Group::publish`]
/// frames a message once per kind of peer (plain; compressed without context takeover, per
/// window and level) and queues the same bytes to every member, so a thousand members cost one
/// encoding and a thousand reference counts; members whose compressor keeps its window get
/// their own encoding. Each member's queue policy decides what a slow one costs; the others
/// are not held up unless a member's policy is `Await`.
///
/// Members leave by [`Group::leave`] or by closing: closed sessions are swept on publish.
#[derive(Default)]
pub struct Group {
    members: RefCell<Vec<Weak<Inner>>>,
    encoder: RefCell<SharedEncoder>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("members", &self.len())
            .finish_non_exhaustive()
    }
}

/// The member's session, if it still takes messages.
fn open(member: &Weak<Inner>) -> Option<Rc<Inner>> {
    member.upgrade().filter(|inner| !inner.out.borrow().closed)
}

/// What one [`Group::publish`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Members the message was queued (or written) for.
    pub queued: usize,
    /// Older messages dropped by members' `DropOldest` policies to make room.
    pub dropped: usize,
    /// Members that took no more (closed, or cut off by their policy on this message).
    pub closed: usize,
}

impl Group {
    /// An empty group.
    pub fn new() -> Group {
        Group::default()
    }

    /// Adds a session.
    pub fn join(&self, member: &WsWriter) {
        self.members.borrow_mut().push(member.downgrade());
    }

    /// Removes a session.
    pub fn leave(&self, member: &WsWriter) {
        let gone = member.downgrade();
        self.members.borrow_mut().retain(|m| !m.ptr_eq(&gone));
    }

    /// Members that are still open.
    pub fn len(&self) -> usize {
        self.members
            .borrow()
            .iter()
            .filter(|m| open(m).is_some())
            .count()
    }

    /// Whether no member is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `message` to every member. Members with nothing being written get the frame
    /// written at once, all of them from one task; the others have it queued. Waits only where
    /// a member's policy says senders wait and its queue is full.
    pub async fn publish(&self, message: &Message) -> Published {
        // The open members, and the closed ones swept, in one pass.
        let mut members = Vec::new();
        self.members.borrow_mut().retain(|m| match open(m) {
            Some(inner) => {
                members.push(inner);
                true
            }
            None => false,
        });
        let mut frames: Vec<(Sharing, Bytes)> = Vec::new();
        let mut report = Published::default();
        let mut direct = Vec::new();
        let len = message.bytes().len();
        for member in members {
            let sharing = member.conn.borrow().sharing();
            let Some(sharing) = sharing else {
                // Framed for this member alone, and queued.
                match member.send_as(message, false).await {
                    Ok(q) => {
                        report.queued += 1;
                        report.dropped += q.dropped;
                    }
                    Err(_) => report.closed += 1,
                }
                continue;
            };
            let frame = match frames.iter().find(|(s, _)| *s == sharing) {
                Some((_, f)) => f.clone(),
                None => {
                    let mut buf = Vec::with_capacity(len + 14);
                    self.encoder.borrow_mut().encode(message, sharing, &mut buf);
                    let f = Bytes::from(buf);
                    frames.push((sharing, f.clone()));
                    f
                }
            };
            let idle = {
                let mut out = member.out.borrow_mut();
                !out.closed && out.begin_own(frame.len()) == Ok(true)
            };
            if idle {
                report.queued += 1;
                direct.push((member, frame));
                continue;
            }
            if member.room_for(len).await.is_err() {
                report.closed += 1;
                continue;
            }
            match member.queue(frame, Kind::Droppable) {
                Ok(q) => {
                    report.queued += 1;
                    report.dropped += q.dropped;
                }
                Err(_) => report.closed += 1,
            }
        }
        if !direct.is_empty() {
            coring::spawn_local(coring::task::join_all(
                direct
                    .into_iter()
                    .map(|(member, frame)| member.write_shared(frame)),
            ));
        }
        report
    }
}
