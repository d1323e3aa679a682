//! Reliable channels: the sender keeps each message until every fragment is acked and resends
//! what the retransmission timeout finds unacked; the receiver puts fragments together, drops
//! duplicates, and delivers in order (ordered) or as messages complete (unordered).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::wire::MessageHeader;

/// The largest reordering window: ids are 16 bits, and "older" must stay unambiguous.
const MAX_WINDOW: usize = 1 << 14;

/// The receive window for `max_queued`: a power of two, so ids map to slots across wrap-around.
pub(super) fn window(max_queued: usize) -> usize {
    max_queued.clamp(1, MAX_WINDOW).next_power_of_two()
}

#[derive(Debug)]
pub(super) struct ReliableSend {
    max_queued: usize,
    next_id: u16,
    /// Unacked messages, oldest first; their ids are consecutive.
    queue: VecDeque<Outgoing>,
}

#[derive(Debug)]
struct Outgoing {
    id: u16,
    data: Bytes,
    /// Per fragment (one for a message that fits): acked, and when last sent.
    fragments: Vec<(bool, Option<Instant>)>,
}

impl ReliableSend {
    pub fn new(max_queued: usize) -> Self {
        ReliableSend {
            max_queued: max_queued.clamp(1, MAX_WINDOW),
            next_id: 0,
            queue: VecDeque::new(),
        }
    }

    /// Queues a message; `false` when the window is full.
    pub fn push(&mut self, data: Bytes, fragment_bytes: usize) -> bool {
        if self.queue.len() >= self.max_queued {
            return false;
        }
        let count = data.len().div_ceil(fragment_bytes).max(1);
        self.queue.push_back(Outgoing {
            id: self.next_id,
            data,
            fragments: vec![(false, None); count],
        });
        self.next_id = self.next_id.wrapping_add(1);
        true
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Writes fragments never sent, or unacked for `rto`, oldest first, while they fit.
    pub fn write(
        &mut self,
        channel: u8,
        now: Instant,
        rto: Duration,
        fragment_bytes: usize,
        out: &mut [u8],
        carried: &mut Vec<(u8, u16, u16)>,
    ) -> usize {
        let mut at = 0;
        for m in &mut self.queue {
            let count = m.fragments.len();
            for (i, (acked, last_sent)) in m.fragments.iter_mut().enumerate() {
                if *acked || last_sent.is_some_and(|t| now.saturating_duration_since(t) < rto) {
                    continue;
                }
                let (data, fragment) = if count == 1 {
                    (&m.data[..], None)
                } else {
                    let start = i * fragment_bytes;
                    let end = (start + fragment_bytes).min(m.data.len());
                    (&m.data[start..end], Some((i as u16, count as u16)))
                };
                let header = MessageHeader {
                    channel,
                    id: m.id,
                    fragment,
                };
                if header.len() + data.len() > out.len() - at {
                    // Full: what is left waits for the next packet.
                    return at;
                }
                at += header.write(data, &mut out[at..]);
                *last_sent = Some(now);
                carried.push((channel, m.id, i as u16));
            }
        }
        at
    }

    /// Fragment `fragment` of message `id` arrived; fully acked messages at the front go.
    pub fn ack(&mut self, id: u16, fragment: u16) {
        let Some(front) = self.queue.front() else {
            return;
        };
        let index = usize::from(id.wrapping_sub(front.id));
        if let Some(m) = self.queue.get_mut(index)
            && m.id == id
            && let Some(f) = m.fragments.get_mut(usize::from(fragment))
        {
            f.0 = true;
        }
        while self
            .queue
            .front()
            .is_some_and(|m| m.fragments.iter().all(|f| f.0))
        {
            self.queue.pop_front();
        }
    }
}

#[derive(Debug)]
pub(super) struct ReliableReceive {
    ordered: bool,
    /// Every id before this one has been delivered.
    base: u16,
    /// Slot `id & (len - 1)` for each id in `[base, base + len)`.
    slots: Vec<Slot>,
}

#[derive(Debug)]
enum Slot {
    Empty,
    Assembling(Assembly),
    /// Complete, waiting for the messages before it (ordered).
    Complete(Bytes),
    /// Delivered (unordered), kept to drop duplicates until `base` passes it.
    Delivered,
}

/// Fragments of one message so far.
#[derive(Debug)]
pub(super) struct Assembly {
    pub id: u16,
    count: u16,
    got: u16,
    parts: Vec<Option<Bytes>>,
}

impl Assembly {
    pub fn new(id: u16, count: u16) -> Self {
        Assembly {
            id,
            count,
            got: 0,
            parts: vec![None; usize::from(count)],
        }
    }

    /// Adds a fragment; the whole message once the last one is in. A fragment whose count
    /// disagrees with the first one's, or that arrived already, changes nothing.
    pub fn add(&mut self, index: u16, count: u16, data: Bytes) -> Option<Bytes> {
        if count != self.count {
            return None;
        }
        let part = self.parts.get_mut(usize::from(index))?;
        if part.is_some() {
            return None;
        }
        *part = Some(data);
        self.got += 1;
        if self.got < self.count {
            return None;
        }
        let mut whole = BytesMut::with_capacity(self.parts.iter().flatten().map(Bytes::len).sum());
        for p in self.parts.iter_mut() {
            if let Some(p) = p.take() {
                whole.extend_from_slice(&p);
            }
        }
        Some(whole.freeze())
    }
}

impl ReliableReceive {
    pub fn new(ordered: bool, max_queued: usize) -> Self {
        ReliableReceive {
            ordered,
            base: 0,
            slots: (0..window(max_queued)).map(|_| Slot::Empty).collect(),
        }
    }

    pub fn take(
        &mut self,
        id: u16,
        fragment: Option<(u16, u16)>,
        data: Bytes,
        deliver: &mut impl FnMut(Bytes),
    ) {
        let window = self.slots.len();
        if usize::from(id.wrapping_sub(self.base)) >= window {
            // Delivered already (its ack was lost), or past the window.
            return;
        }
        let slot = &mut self.slots[usize::from(id) & (window - 1)];
        let whole = match (fragment, &mut *slot) {
            (None, Slot::Empty) => Some(data),
            (Some((index, count)), Slot::Empty) => {
                let mut a = Assembly::new(id, count);
                let whole = a.add(index, count, data);
                if whole.is_none() {
                    *slot = Slot::Assembling(a);
                }
                whole
            }
            (Some((index, count)), Slot::Assembling(a)) => a.add(index, count, data),
            // A duplicate, or a whole message where fragments were expected: nothing new.
            _ => None,
        };
        let Some(whole) = whole else {
            return;
        };
        if self.ordered {
            *slot = Slot::Complete(whole);
        } else {
            deliver(whole);
            *slot = Slot::Delivered;
        }
        loop {
            let slot = &mut self.slots[usize::from(self.base) & (window - 1)];
            match std::mem::replace(slot, Slot::Empty) {
                Slot::Complete(bytes) => deliver(bytes),
                Slot::Delivered => {}
                other => {
                    *slot = other;
                    break;
                }
            }
            self.base = self.base.wrapping_add(1);
        }
    }
}
