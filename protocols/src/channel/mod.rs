//! Channels over an unreliable datagram session (netcode payloads, or any transport of
//! packets up to [`ConnectionConfig::max_packet_bytes`]): reliable-ordered, reliable-unordered,
//! unreliable-sequenced and unreliable, sans-IO.
//!
//! # The map
//!
//! - [`Connection`]: one end's channels. [`Connection::send`] queues a message;
//!   [`Connection::poll_packet`] writes the next packet (acks, new messages by channel
//!   priority, reliable messages due again) into the caller's buffer;
//!   [`Connection::handle_packet`] reads the peer's; [`Connection::receive`] yields messages.
//! - `wire`: the packet format. `reliable`, `unreliable`: each channel kind's two halves.
//! - `stats`: RTT (smoothed, variance), packet loss, bandwidth each way.
//!
//! # The packet
//!
//! ```text
//! sequence (u16) | ack: newest received (u16) | ack bits: the 32 before it (u32)
//! then messages: channel (u8) | flags (u8: 1 = fragment) | id (u16)
//!                [| fragment index (u16) | fragment count (u16)] | length (u16) | bytes
//! ```
//!
//! Acks are per packet; each packet remembers which reliable fragments it carried, and an ack
//! marks them delivered. A reliable fragment not acked within the retransmission timeout goes
//! out again in a later packet. A message larger than one packet is cut into fragments of
//! [`FRAGMENT_BYTES`] and put together at the receiver: on reliable channels every fragment
//! arrives eventually; on unreliable ones the message arrives whole or not at all (counted in
//! [`ConnectionStats::incomplete`]). A message over the channel's
//! [`ChannelConfig::max_message_bytes`] is refused by `send` with a typed error, never dropped.

mod reliable;
mod stats;
mod unreliable;
mod wire;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use reliable::{ReliableReceive, ReliableSend};
pub use stats::ConnectionStats;
use stats::Estimates;
use unreliable::{UnreliableReceive, UnreliableSend};
use wire::{MessageHeader, PacketHeader};

/// Payload bytes of one fragment.
pub const FRAGMENT_BYTES: usize = 1024;
/// Sent packets remembered for acks.
const SENT_PACKETS: usize = 1024;
/// Packets sent and not yet acked or counted lost, at most: past it only acks go out. Half of
/// netcode's 256-packet replay window, so a burst reordered in flight is not refused there as
/// too old; well inside the record of sent packets.
const MAX_IN_FLIGHT: usize = 128;
/// Packets read and not yet acked, remembered at most.
const MAX_UNREPORTED: usize = 1024;

/// How a channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Every message, exactly once, in the order sent.
    ReliableOrdered,
    /// Every message, exactly once, as it arrives.
    ReliableUnordered,
    /// Some messages, never one older than a message already delivered.
    UnreliableSequenced,
    /// Some messages, as they arrive.
    Unreliable,
}

impl ChannelKind {
    fn reliable(self) -> bool {
        matches!(
            self,
            ChannelKind::ReliableOrdered | ChannelKind::ReliableUnordered
        )
    }
}

/// One channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelConfig {
    /// How it delivers.
    pub kind: ChannelKind,
    /// The largest message, in bytes.
    pub max_message_bytes: usize,
    /// Messages queued and not yet acked (reliable) or not yet sent (unreliable), at most;
    /// `send` past it is [`ChannelError::QueueFull`]. Both ends must agree on it for a
    /// reliable channel: it is the receiver's reordering window.
    pub max_queued: usize,
    /// Higher goes first when a packet or the tick's budget has room for only some.
    pub priority: u8,
}

impl ChannelConfig {
    /// A channel of `kind`: 64 KiB messages, 1,024 queued, priority 0.
    pub fn new(kind: ChannelKind) -> Self {
        ChannelConfig {
            kind,
            max_message_bytes: 64 * 1024,
            max_queued: 1024,
            priority: 0,
        }
    }
}

/// Both ends' channels (the same list on each side) and the packet size.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Channels by number (at most 64).
    pub channels: Vec<ChannelConfig>,
    /// The largest packet written (netcode payloads: 1,200).
    pub max_packet_bytes: usize,
    /// Bytes of messages sent per [`Connection::begin_tick`] at most; `None`: no budget.
    pub tick_budget: Option<usize>,
}

impl Default for ConnectionConfig {
    /// Channel 0 reliable-ordered, 1 unreliable-sequenced, 2 unreliable; 1,200-byte packets.
    fn default() -> Self {
        ConnectionConfig {
            channels: vec![
                ChannelConfig::new(ChannelKind::ReliableOrdered),
                ChannelConfig::new(ChannelKind::UnreliableSequenced),
                ChannelConfig::new(ChannelKind::Unreliable),
            ],
            max_packet_bytes: 1200,
            tick_budget: None,
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// No channel with this number.
    #[error("no channel {0}")]
    UnknownChannel(u8),
    /// Larger than the channel's [`ChannelConfig::max_message_bytes`].
    #[error("a message of {len} bytes is over channel {channel}'s {max}")]
    TooLarge {
        /// The channel.
        channel: u8,
        /// The message's size.
        len: usize,
        /// The channel's limit.
        max: usize,
    },
    /// The channel holds [`ChannelConfig::max_queued`] messages already.
    #[error("channel {0}'s queue is full")]
    QueueFull(u8),
    /// Empty messages carry nothing.
    #[error("empty message")]
    Empty,
    /// No session in that slot (never connected, or gone).
    #[error("no session in that slot")]
    NotConnected,
}

/// Why a packet was not read (the packet is dropped; the connection goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Cut short, or a field runs past the end.
    #[error("truncated channel packet")]
    Truncated,
    /// A message for a channel that does not exist.
    #[error("message for unknown channel {0}")]
    UnknownChannel(u8),
    /// Fragment fields that cannot be right (index past count, a size past the limit).
    #[error("malformed fragment")]
    Fragment,
    /// This packet arrived already.
    #[error("duplicate packet")]
    Duplicate,
}

/// One end of a channelled connection. See the module docs.
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    /// Channel numbers, highest priority first.
    order: Vec<u8>,
    senders: Vec<Sender>,
    receivers: Vec<Receiver>,
    next_sequence: u16,
    sent: Box<[Option<SentPacket>]>,
    /// Packets neither acked nor counted lost, and the oldest sequence that may be one.
    in_flight: usize,
    oldest: u16,
    /// Acks owed: the newest packet received and the 32 before it.
    remote: Option<(u16, u32)>,
    /// Received packet sequences, for dropping duplicates.
    seen: Box<[Option<u16>]>,
    ack_owed: bool,
    /// Packets read and not yet named by an ack this end sent. One that falls out of the ack
    /// field (reordered, or one of a burst) gets an ack packet of its own.
    unreported: Vec<u16>,
    delivered: VecDeque<(u8, Bytes)>,
    budget_left: Option<usize>,
    /// Payload bytes per fragment: [`FRAGMENT_BYTES`], or less for small packets.
    fragment_bytes: usize,
    estimates: Estimates,
}

#[derive(Debug)]
enum Sender {
    Reliable(ReliableSend),
    Unreliable(UnreliableSend),
}

#[derive(Debug)]
enum Receiver {
    Reliable(ReliableReceive),
    Unreliable(UnreliableReceive),
}

/// What a sent packet carried that an ack settles.
#[derive(Debug)]
struct SentPacket {
    sequence: u16,
    at: Instant,
    bytes: usize,
    acked: bool,
    /// Unacked for twice the timeout: counted lost (an ack may still come and settle it).
    lost: bool,
    /// (channel, message id, fragment index) of reliable fragments.
    carried: Vec<(u8, u16, u16)>,
}

impl Connection {
    /// A connection with `config`'s channels, started at `now`.
    ///
    /// # Panics
    ///
    /// With more than 64 channels, or packets under 64 bytes.
    pub fn new(config: ConnectionConfig, now: Instant) -> Self {
        assert!(config.channels.len() <= 64, "at most 64 channels");
        assert!(
            config.max_packet_bytes >= 64,
            "packets of at least 64 bytes"
        );
        let mut order: Vec<u8> = (0..config.channels.len() as u8).collect();
        order.sort_by_key(|&c| std::cmp::Reverse(config.channels[c as usize].priority));
        let senders = config
            .channels
            .iter()
            .map(|c| {
                if c.kind.reliable() {
                    Sender::Reliable(ReliableSend::new(c.max_queued))
                } else {
                    Sender::Unreliable(UnreliableSend::new(c.max_queued))
                }
            })
            .collect();
        let receivers = config
            .channels
            .iter()
            .map(|c| match c.kind {
                ChannelKind::ReliableOrdered => {
                    Receiver::Reliable(ReliableReceive::new(true, c.max_queued))
                }
                ChannelKind::ReliableUnordered => {
                    Receiver::Reliable(ReliableReceive::new(false, c.max_queued))
                }
                ChannelKind::UnreliableSequenced => {
                    Receiver::Unreliable(UnreliableReceive::new(true))
                }
                ChannelKind::Unreliable => Receiver::Unreliable(UnreliableReceive::new(false)),
            })
            .collect();
        let fragment_bytes = FRAGMENT_BYTES
            .min(config.max_packet_bytes - PacketHeader::LEN - MessageHeader::MAX_LEN);
        Connection {
            fragment_bytes,
            budget_left: config.tick_budget,
            config,
            order,
            senders,
            receivers,
            next_sequence: 0,
            sent: (0..SENT_PACKETS).map(|_| None).collect(),
            in_flight: 0,
            oldest: 0,
            remote: None,
            seen: (0..SENT_PACKETS).map(|_| None).collect(),
            ack_owed: false,
            unreported: Vec::new(),
            delivered: VecDeque::new(),
            estimates: Estimates::new(now),
        }
    }

    /// Queues `message` on `channel`.
    pub fn send(&mut self, channel: u8, message: Bytes) -> Result<(), ChannelError> {
        let config = self
            .config
            .channels
            .get(channel as usize)
            .ok_or(ChannelError::UnknownChannel(channel))?;
        if message.is_empty() {
            return Err(ChannelError::Empty);
        }
        if message.len() > config.max_message_bytes {
            return Err(ChannelError::TooLarge {
                channel,
                len: message.len(),
                max: config.max_message_bytes,
            });
        }
        let queued = match &mut self.senders[channel as usize] {
            Sender::Reliable(s) => s.push(message, self.fragment_bytes),
            Sender::Unreliable(s) => s.push(message),
        };
        if queued {
            Ok(())
        } else {
            Err(ChannelError::QueueFull(channel))
        }
    }

    /// Starts a tick: the budget of [`ConnectionConfig::tick_budget`] bytes is available
    /// again to [`poll_packet`](Self::poll_packet).
    pub fn begin_tick(&mut self) {
        self.budget_left = self.config.tick_budget;
    }

    /// Writes the next packet due at `now` into `out` (at least
    /// [`ConnectionConfig::max_packet_bytes`]) and returns its length: new messages and
    /// reliable fragments due again, highest priority first, within the tick's budget; or acks
    /// alone when acks are owed and nothing else is due. `None` when there is nothing to send.
    /// Changes after `send`, `handle_packet`, `begin_tick` and with time.
    pub fn poll_packet(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let limit = self.config.max_packet_bytes.min(out.len());
        let mut at = PacketHeader::LEN;
        let mut carried = Vec::new();
        let rto = self.estimates.rto();
        self.expire(now, rto);
        // Packets the ack field no longer reaches are acked first, alone.
        let snapshot = self.stale_ack();
        let mut budget = self.budget_left.unwrap_or(usize::MAX);
        if self.in_flight >= MAX_IN_FLIGHT || snapshot.is_some() {
            budget = 0;
        }
        for &channel in &self.order {
            let room = (limit - at).min(budget);
            if room <= MessageHeader::MAX_LEN {
                break;
            }
            let written = match &mut self.senders[channel as usize] {
                Sender::Reliable(s) => s.write(
                    channel,
                    now,
                    rto,
                    self.fragment_bytes,
                    &mut out[at..at + room],
                    &mut carried,
                ),
                Sender::Unreliable(s) => {
                    s.write(channel, self.fragment_bytes, &mut out[at..at + room])
                }
            };
            at += written;
            budget -= written;
        }
        if snapshot.is_none() && at == PacketHeader::LEN && !self.ack_owed {
            return None;
        }
        if snapshot.is_none()
            && let Some(b) = &mut self.budget_left
        {
            *b = budget;
        }
        let (ack, ack_bits) = snapshot.or(self.remote).unwrap_or((u16::MAX, 0));
        let sequence = self.next_sequence;
        self.next_sequence = sequence.wrapping_add(1);
        PacketHeader {
            sequence,
            ack,
            ack_bits,
        }
        .write(&mut out[..PacketHeader::LEN]);
        let slot = sequence as usize % SENT_PACKETS;
        if let Some(old) = self.sent[slot].take()
            && !old.acked
            && !old.lost
        {
            self.in_flight -= 1;
            self.estimates.lost(old.bytes);
        }
        // Acks alone are not acked in turn: they are neither in flight nor ever lost.
        let ack_only = at == PacketHeader::LEN;
        if !ack_only {
            self.in_flight += 1;
        }
        self.sent[slot] = Some(SentPacket {
            sequence,
            at: now,
            bytes: at,
            acked: ack_only,
            lost: false,
            carried,
        });
        if snapshot.is_none() {
            self.ack_owed = false;
        }
        self.unreported.retain(|&s| !acks(ack, ack_bits, s));
        self.estimates.sent(now, at);
        Some(at)
    }

    /// Reads one packet from the peer: its acks settle what this end sent; its messages go to
    /// their channels and, once deliverable, to [`receive`](Self::receive). A packet that does
    /// not read is dropped whole, with the reason.
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), PacketError> {
        let header = PacketHeader::read(packet).ok_or(PacketError::Truncated)?;
        // Parse every message before acting on any: a bad packet changes nothing.
        let mut messages = Vec::new();
        let mut rest = &packet[PacketHeader::LEN..];
        while !rest.is_empty() {
            let (m, data, tail) = MessageHeader::read(rest).ok_or(PacketError::Truncated)?;
            let config = self
                .config
                .channels
                .get(m.channel as usize)
                .ok_or(PacketError::UnknownChannel(m.channel))?;
            if let Some((index, count)) = m.fragment
                && (index >= count
                    || count as usize > config.max_message_bytes.div_ceil(self.fragment_bytes))
            {
                return Err(PacketError::Fragment);
            }
            messages.push((m, data));
            rest = tail;
        }
        let slot = header.sequence as usize % SENT_PACKETS;
        if self.seen[slot] == Some(header.sequence) {
            return Err(PacketError::Duplicate);
        }
        self.seen[slot] = Some(header.sequence);
        self.estimates.received(now, packet.len());
        self.record_remote(header.sequence);
        self.settle(now, header.ack, header.ack_bits);
        if !messages.is_empty() {
            self.ack_owed = true;
            if self.unreported.len() >= MAX_UNREPORTED {
                // The peer resends what these carried, by timeout.
                self.unreported.remove(0);
            }
            self.unreported.push(header.sequence);
        }
        for (m, data) in messages {
            let data = Bytes::copy_from_slice(data);
            let channel = m.channel;
            let out = &mut self.delivered;
            let mut deliver = |bytes: Bytes| out.push_back((channel, bytes));
            match &mut self.receivers[channel as usize] {
                Receiver::Reliable(r) => r.take(m.id, m.fragment, data, &mut deliver),
                Receiver::Unreliable(r) => {
                    r.take(m.id, m.fragment, data, &mut deliver, &mut self.estimates)
                }
            }
        }
        Ok(())
    }

    /// The next message delivered, with its channel. Changes after
    /// [`handle_packet`](Self::handle_packet).
    pub fn receive(&mut self) -> Option<(u8, Bytes)> {
        self.delivered.pop_front()
    }

    /// RTT, loss and bandwidth estimates at `now`, and the counters.
    pub fn stats(&self, now: Instant) -> ConnectionStats {
        let mut s = self.estimates.snapshot(now);
        s.queued = self
            .senders
            .iter()
            .map(|s| match s {
                Sender::Reliable(r) => r.len(),
                Sender::Unreliable(u) => u.len(),
            })
            .sum();
        s
    }

    /// Whether every reliable message sent so far has been acked and nothing is queued.
    pub fn is_idle(&self) -> bool {
        self.senders.iter().all(|s| match s {
            Sender::Reliable(r) => r.len() == 0,
            Sender::Unreliable(u) => u.len() == 0,
        })
    }

    /// The retransmission timeout now in force.
    pub fn rto(&self) -> Duration {
        self.estimates.rto()
    }

    /// An ack for the newest packet read that the current ack field does not reach, with the
    /// bits of the others near it.
    fn stale_ack(&self) -> Option<(u16, u32)> {
        let (newest, bits) = self.remote?;
        let stale = self
            .unreported
            .iter()
            .copied()
            .filter(|&s| !acks(newest, bits, s))
            .min_by_key(|&s| newest.wrapping_sub(s))?;
        let bits = self
            .unreported
            .iter()
            .map(|&s| stale.wrapping_sub(s))
            .filter(|d| (1..=32).contains(d))
            .fold(0u32, |b, d| b | 1 << (d - 1));
        Some((stale, bits))
    }

    fn record_remote(&mut self, sequence: u16) {
        self.remote = Some(match self.remote {
            None => (sequence, 0),
            Some((newest, bits)) => {
                let ahead = sequence.wrapping_sub(newest);
                if ahead == 0 {
                    (newest, bits)
                } else if ahead < 0x8000 {
                    // Newer: shift the window along; the old newest becomes a bit.
                    let shift = u32::from(ahead);
                    let bits = if shift > 32 {
                        0
                    } else {
                        ((u64::from(bits) << shift) | (1u64 << (shift - 1))) as u32
                    };
                    (sequence, bits)
                } else {
                    let behind = newest.wrapping_sub(sequence);
                    if behind <= 32 {
                        (newest, bits | (1 << (behind - 1)))
                    } else {
                        (newest, bits)
                    }
                }
            }
        });
    }

    /// Marks the packets `ack` and `ack_bits` name as delivered, and what they carried.
    fn settle(&mut self, now: Instant, ack: u16, ack_bits: u32) {
        let acked = std::iter::once(ack).chain(
            (0..32)
                .filter(|i| ack_bits & (1 << i) != 0)
                .map(|i| ack.wrapping_sub(i + 1)),
        );
        for sequence in acked {
            let slot = sequence as usize % SENT_PACKETS;
            let Some(p) = &mut self.sent[slot] else {
                continue;
            };
            if p.sequence != sequence || p.acked {
                continue;
            }
            p.acked = true;
            if p.lost {
                self.estimates.found();
            } else {
                self.in_flight -= 1;
                self.estimates.acked(now.saturating_duration_since(p.at));
            }
            for &(channel, id, fragment) in &p.carried {
                if let Sender::Reliable(s) = &mut self.senders[channel as usize] {
                    s.ack(id, fragment);
                }
            }
        }
    }

    /// Counts as lost the packets unacked for twice the timeout (their acks, if any, are lost
    /// too), oldest first, so a dead link cannot hold the in-flight limit for ever.
    fn expire(&mut self, now: Instant, rto: Duration) {
        while self.oldest != self.next_sequence {
            let slot = self.oldest as usize % SENT_PACKETS;
            if let Some(p) = &mut self.sent[slot]
                && p.sequence == self.oldest
                && !p.acked
                && !p.lost
            {
                if now.saturating_duration_since(p.at) < 2 * rto {
                    return;
                }
                p.lost = true;
                self.in_flight -= 1;
                self.estimates.lost(p.bytes);
            }
            self.oldest = self.oldest.wrapping_add(1);
        }
    }
}

/// Whether an ack field `(ack, bits)` names packet `sequence`.
fn acks(ack: u16, bits: u32, sequence: u16) -> bool {
    let d = ack.wrapping_sub(sequence);
    d == 0 || ((1..=32).contains(&d) && bits & (1 << (d - 1)) != 0)
}

#[cfg(test)]
mod tests;
