//! Unreliable channels: messages go out once; a fragmented one is delivered whole or not at
//! all; the sequenced kind never delivers a message older than one it delivered.

use std::collections::VecDeque;

use bytes::Bytes;

use super::reliable::Assembly;
use super::stats::Estimates;
use super::wire::MessageHeader;

/// Messages being put together at once; a new one past this evicts the oldest, incomplete.
const ASSEMBLIES: usize = 16;

#[derive(Debug)]
pub(super) struct UnreliableSend {
    max_queued: usize,
    next_id: u16,
    queue: VecDeque<(u16, Bytes)>,
    /// Fragments of the front message already written.
    cursor: usize,
}

impl UnreliableSend {
    pub fn new(max_queued: usize) -> Self {
        UnreliableSend {
            max_queued: max_queued.max(1),
            next_id: 0,
            queue: VecDeque::new(),
            cursor: 0,
        }
    }

    pub fn push(&mut self, data: Bytes) -> bool {
        if self.queue.len() >= self.max_queued {
            return false;
        }
        self.queue.push_back((self.next_id, data));
        self.next_id = self.next_id.wrapping_add(1);
        true
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Writes queued messages (or the next fragments of one) while they fit.
    pub fn write(&mut self, channel: u8, fragment_bytes: usize, out: &mut [u8]) -> usize {
        let mut at = 0;
        while let Some((id, data)) = self.queue.front() {
            let count = data.len().div_ceil(fragment_bytes);
            let (slice, fragment) = if count <= 1 {
                (&data[..], None)
            } else {
                let start = self.cursor * fragment_bytes;
                let end = (start + fragment_bytes).min(data.len());
                (&data[start..end], Some((self.cursor as u16, count as u16)))
            };
            let header = MessageHeader {
                channel,
                id: *id,
                fragment,
            };
            if header.len() + slice.len() > out.len() - at {
                break;
            }
            at += header.write(slice, &mut out[at..]);
            if count <= 1 || self.cursor + 1 == count {
                self.queue.pop_front();
                self.cursor = 0;
            } else {
                self.cursor += 1;
            }
        }
        at
    }
}

#[derive(Debug)]
pub(super) struct UnreliableReceive {
    sequenced: bool,
    newest: Option<u16>,
    assemblies: VecDeque<Assembly>,
}

/// Whether `a` comes after `b` in 16-bit sequence space.
fn newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl UnreliableReceive {
    pub fn new(sequenced: bool) -> Self {
        UnreliableReceive {
            sequenced,
            newest: None,
            assemblies: VecDeque::new(),
        }
    }

    pub fn take(
        &mut self,
        id: u16,
        fragment: Option<(u16, u16)>,
        data: Bytes,
        deliver: &mut impl FnMut(Bytes),
        estimates: &mut Estimates,
    ) {
        if self.stale(id) {
            estimates.stale += 1;
            return;
        }
        let whole = match fragment {
            None => data,
            Some((index, count)) => {
                let at = match self.assemblies.iter().position(|a| a.id == id) {
                    Some(at) => at,
                    None => {
                        if self.assemblies.len() >= ASSEMBLIES {
                            self.assemblies.pop_front();
                            estimates.incomplete += 1;
                        }
                        self.assemblies.push_back(Assembly::new(id, count));
                        self.assemblies.len() - 1
                    }
                };
                let Some(whole) = self.assemblies[at].add(index, count, data) else {
                    return;
                };
                self.assemblies.remove(at);
                whole
            }
        };
        if self.sequenced {
            // Anything older still being put together can never be delivered now.
            let before = self.assemblies.len();
            self.assemblies.retain(|a| newer(a.id, id));
            estimates.incomplete += (before - self.assemblies.len()) as u64;
            self.newest = Some(id);
        }
        deliver(whole);
    }

    fn stale(&self, id: u16) -> bool {
        self.sequenced && self.newest.is_some_and(|n| !newer(id, n))
    }
}
