//! Rooms sans-IO: what a room remembers and what each member is owed.
//!
//! A room numbers its messages (`seq`, from 0) and keeps the last few in a [`History`] ring, so
//! that a member that comes back (a resumed session, a reconnect that says the last `seq` it
//! saw) catches up instead of starting over. Each member has a [`MemberQueue`]: the messages
//! handed to it and not yet written, bounded in bytes, under the room's [`Policy`], which
//! decides what a member that falls behind costs. It never costs the other members anything:
//! a queue only ever holds its own member's messages.
//!
//! No sockets, no clock, no spawning: the engine side is `rooms` (feature `engine`).

use std::collections::VecDeque;

use bytes::Bytes;

#[cfg(test)]
mod tests;

/// One message of a room, as its members receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its place in the room's order: 0 for the room's first message, one more for each after.
    pub seq: u64,
    /// The entity it describes, for [`Policy::Conflate`] (a newer message with the same key
    /// supersedes an older one still queued); `None` for a message that stands alone.
    pub key: Option<u64>,
    /// Its bytes, shared by every member (framing is the member's business).
    pub payload: Bytes,
}

/// What a room does with a member that falls behind: one whose queued and unwritten messages
/// would pass [`RoomConfig::member_limit`] bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Every member gets every message, in the room's order. A member past its limit stops
    /// taking new messages; once what it holds is written it catches up from the room's
    /// history, and is cut off ([`CutOff::Lagged`]) only if what it missed is no longer there.
    #[default]
    Ordered,
    /// Only the latest state of each entity is kept for a member that is behind: a message
    /// with a key replaces the queued one with the same key, where it stands. Past the limit
    /// the oldest messages are dropped.
    Conflate,
    /// Past the limit the oldest queued messages are dropped.
    DropOldest,
    /// Past the limit the member is cut off ([`CutOff::SlowConsumer`]).
    Disconnect,
}

/// Why a room stopped delivering to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CutOff {
    /// It fell past its limit under [`Policy::Disconnect`].
    #[error("the member fell too far behind the room")]
    SlowConsumer,
    /// It fell behind under [`Policy::Ordered`] and the room's history no longer holds the
    /// messages it missed (`missed` of them).
    #[error("the member fell behind by more than the room's history ({missed} messages lost)")]
    Lagged {
        /// Messages it will never get.
        missed: u64,
    },
}

/// How a room behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// What a member that falls behind costs it.
    pub policy: Policy,
    /// Messages kept for members that catch up (0: none).
    pub history: usize,
    /// Bytes a member may hold queued and being written.
    pub member_limit: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            policy: Policy::Ordered,
            history: 1024,
            member_limit: 1 << 20,
        }
    }
}

/// The last messages of a room, numbered.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    ring: VecDeque<Delivery>,
    next: u64,
}

/// What a member that asked for the messages after one it saw gets from [`History::since`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Catchup {
    /// The messages the history still holds, in order.
    pub deliveries: Vec<Delivery>,
    /// Messages it asked for that the history no longer holds (they came before the first of
    /// `deliveries`).
    pub missed: u64,
}

impl History {
    /// A history that keeps the last `capacity` messages.
    pub fn new(capacity: usize) -> History {
        History {
            capacity,
            ring: VecDeque::with_capacity(capacity.min(4096)),
            next: 0,
        }
    }

    /// The `seq` the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Numbers a message and keeps it (the oldest goes once the ring is full).
    pub fn push(&mut self, key: Option<u64>, payload: Bytes) -> Delivery {
        let delivery = Delivery {
            seq: self.next,
            key,
            payload,
        };
        self.next += 1;
        if self.capacity > 0 {
            if self.ring.len() == self.capacity {
                self.ring.pop_front();
            }
            self.ring.push_back(delivery.clone());
        }
        delivery
    }

    /// The messages from `seq` on (a member that saw `seq - 1`). A `seq` past the newest asks
    /// for nothing.
    pub fn since(&self, seq: u64) -> Catchup {
        let seq = seq.min(self.next);
        let oldest = self.next - self.ring.len() as u64;
        let missed = oldest.saturating_sub(seq);
        let skip = seq.saturating_sub(oldest) as usize;
        Catchup {
            deliveries: self.ring.iter().skip(skip).cloned().collect(),
            missed,
        }
    }
}

/// What [`MemberQueue::offer`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the member.
    Queued,
    /// It replaced a queued message with the same key ([`Policy::Conflate`]).
    Conflated,
    /// Queued, and this many older messages were dropped to make room.
    DroppedOldest(usize),
    /// Not for this member: it is joining or catching up (the catch-up brings it), or it had
    /// it already.
    Skipped,
    /// The member just fell behind ([`Policy::Ordered`]): it takes no new messages until it
    /// has caught up from the history, starting with this one.
    Behind,
    /// The member was cut off; it takes nothing more.
    CutOff(CutOff),
}

/// Where a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Waiting for the room to say where it starts (its join or catch-up is on its way).
    Joining,
    /// Taking messages from `next` on.
    Live {
        /// The `seq` it expects next.
        next: u64,
    },
    /// Behind ([`Policy::Ordered`]): it missed messages from `from` on and catches up once
    /// what it holds is written.
    Behind {
        /// The first message it did not take.
        from: u64,
    },
    /// Cut off.
    Out(CutOff),
}

/// One member's messages, handed to it and not yet written, under its room's policy.
#[derive(Debug)]
pub struct MemberQueue {
    queue: VecDeque<Delivery>,
    /// Bytes in `queue`.
    queued: usize,
    /// Bytes taken by the writer and not yet reported written.
    in_flight: usize,
    config: RoomConfig,
    standing: Standing,
    /// The last `seq` taken by the writer.
    last_taken: Option<u64>,
    /// The first `seq` it was to get (where it started or caught up from).
    start_at: u64,
    /// It fell behind, wrote what it held, and waits for its catch-up.
    catching_up: bool,
    counts: MemberCounts,
}

/// What happened to one member's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberCounts {
    /// Messages taken by its writer.
    pub taken: u64,
    /// Bytes taken by its writer.
    pub bytes: u64,
    /// Messages replaced by newer ones with the same key.
    pub conflated: u64,
    /// Messages dropped to make room.
    pub dropped: u64,
    /// Times it fell behind and caught up from the history.
    pub caught_up: u64,
}

impl MemberQueue {
    /// An empty queue for a member that has not started yet ([`Standing::Joining`]).
    pub fn new(config: RoomConfig) -> MemberQueue {
        MemberQueue {
            queue: VecDeque::new(),
            queued: 0,
            in_flight: 0,
            config,
            standing: Standing::Joining,
            last_taken: None,
            start_at: 0,
            catching_up: false,
            counts: MemberCounts::default(),
        }
    }

    /// Where the member stands.
    pub fn standing(&self) -> Standing {
        self.standing
    }

    /// What happened to its messages so far.
    pub fn counts(&self) -> MemberCounts {
        self.counts
    }

    /// The last `seq` its writer took: what a member that comes back says it saw.
    pub fn last_taken(&self) -> Option<u64> {
        self.last_taken
    }

    /// Whether it waits for a catch-up after falling behind (not for its first start).
    pub fn is_catching_up(&self) -> bool {
        self.catching_up
    }

    /// Bytes queued and being written.
    pub fn held(&self) -> usize {
        self.queued + self.in_flight
    }

    /// Whether messages wait for the writer.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The member starts (or resumes after catching up) with `backlog` (from
    /// [`History::since`], in order), and takes live messages from `next` on. The backlog is
    /// queued whatever the limit: the history bounds it.
    pub fn start(&mut self, next: u64, backlog: Vec<Delivery>) {
        if let Standing::Out(_) = self.standing {
            return;
        }
        if std::mem::take(&mut self.catching_up) {
            self.counts.caught_up += 1;
        }
        self.start_at = backlog.first().map_or(next, |d| d.seq);
        for d in backlog {
            self.queued += d.payload.len();
            self.queue.push_back(d);
        }
        self.standing = Standing::Live { next };
    }

    /// A message for the member, as its policy says.
    pub fn offer(&mut self, d: &Delivery) -> Offer {
        let Standing::Live { next } = self.standing else {
            return match self.standing {
                Standing::Out(why) => Offer::CutOff(why),
                _ => Offer::Skipped,
            };
        };
        if d.seq < next {
            return Offer::Skipped;
        }
        self.standing = Standing::Live { next: d.seq + 1 };
        let len = d.payload.len();
        let fits = self.held() == 0 || self.held() + len <= self.config.member_limit;
        match self.config.policy {
            Policy::Conflate => {
                if let Some(key) = d.key
                    && let Some(old) = self.queue.iter_mut().find(|q| q.key == Some(key))
                {
                    self.queued = self.queued - old.payload.len() + len;
                    *old = d.clone();
                    self.counts.conflated += 1;
                    let dropped = self.drop_to_limit();
                    return if dropped > 0 {
                        Offer::DroppedOldest(dropped)
                    } else {
                        Offer::Conflated
                    };
                }
                self.push(d);
                match self.drop_to_limit() {
                    0 => Offer::Queued,
                    n => Offer::DroppedOldest(n),
                }
            }
            Policy::DropOldest => {
                self.push(d);
                match self.drop_to_limit() {
                    0 => Offer::Queued,
                    n => Offer::DroppedOldest(n),
                }
            }
            Policy::Ordered if fits => {
                self.push(d);
                Offer::Queued
            }
            Policy::Ordered => {
                self.standing = Standing::Behind { from: d.seq };
                Offer::Behind
            }
            Policy::Disconnect if fits => {
                self.push(d);
                Offer::Queued
            }
            Policy::Disconnect => {
                self.cut_off(CutOff::SlowConsumer);
                Offer::CutOff(CutOff::SlowConsumer)
            }
        }
    }

    fn push(&mut self, d: &Delivery) {
        self.queued += d.payload.len();
        self.queue.push_back(d.clone());
    }

    /// Drops the oldest queued messages until what is held fits (keeping the newest).
    fn drop_to_limit(&mut self) -> usize {
        let mut dropped = 0;
        while self.held() > self.config.member_limit && self.queue.len() > 1 {
            if let Some(old) = self.queue.pop_front() {
                self.queued -= old.payload.len();
                dropped += 1;
            }
        }
        self.counts.dropped += dropped as u64;
        dropped
    }

    /// Stops delivering: what was queued is dropped.
    pub fn cut_off(&mut self, why: CutOff) {
        self.queue.clear();
        self.queued = 0;
        self.standing = Standing::Out(why);
    }

    /// Hands everything queued to the writer (appended to `batch`, in order), counted in flight
    /// until [`MemberQueue::written`].
    pub fn take(&mut self, batch: &mut Vec<Delivery>) {
        let Some(last) = self.queue.back() else {
            return;
        };
        self.last_taken = Some(last.seq);
        self.counts.taken += self.queue.len() as u64;
        self.counts.bytes += self.queued as u64;
        self.in_flight += self.queued;
        self.queued = 0;
        batch.extend(self.queue.drain(..));
    }

    /// The writer wrote what it took. Returns where a member that is behind must catch up
    /// from, once nothing is left to write: it is then [`Standing::Joining`] until
    /// [`MemberQueue::start`].
    pub fn written(&mut self) -> Option<u64> {
        self.in_flight = 0;
        match self.standing {
            Standing::Behind { from } if self.queue.is_empty() => {
                self.standing = Standing::Joining;
                self.catching_up = true;
                Some(from)
            }
            _ => None,
        }
    }

    /// How many messages the member is behind `newest` (the `seq` of the last message the room
    /// sent): 0 when it has taken everything.
    pub fn lag(&self, newest: Option<u64>) -> u64 {
        let Some(newest) = newest else { return 0 };
        let taken_to = self.last_taken.map_or(self.start_at, |last| last + 1);
        (newest + 1).saturating_sub(taken_to.max(self.start_at))
    }
}
