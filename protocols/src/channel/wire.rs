//! The channel packet's header and message headers.

/// A packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PacketHeader {
    pub sequence: u16,
    /// The newest packet received from the peer (`u16::MAX` with no bits before any).
    pub ack: u16,
    /// Bit `i`: packet `ack - 1 - i` was received too.
    pub ack_bits: u32,
}

impl PacketHeader {
    pub const LEN: usize = 8;

    pub fn write(&self, out: &mut [u8]) {
        out[..2].copy_from_slice(&self.sequence.to_le_bytes());
        out[2..4].copy_from_slice(&self.ack.to_le_bytes());
        out[4..8].copy_from_slice(&self.ack_bits.to_le_bytes());
    }

    pub fn read(bytes: &[u8]) -> Option<PacketHeader> {
        let h = bytes.get(..Self::LEN)?;
        Some(PacketHeader {
            sequence: u16::from_le_bytes([h[0], h[1]]),
            ack: u16::from_le_bytes([h[2], h[3]]),
            ack_bits: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        })
    }
}

/// A message's header within a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MessageHeader {
    pub channel: u8,
    pub id: u16,
    /// (index, count) when the message is one fragment of a larger one.
    pub fragment: Option<(u16, u16)>,
}

/// Flag bit: the message is a fragment.
const FRAGMENT: u8 = 1;

impl MessageHeader {
    /// The largest header: channel, flags, id, fragment index and count, length.
    pub const MAX_LEN: usize = 10;

    pub fn len(&self) -> usize {
        if self.fragment.is_some() { 10 } else { 6 }
    }

    /// Writes the header and `data` into `out`, which has room (the caller checked
    /// `len() + data.len()`); returns the bytes written.
    pub fn write(&self, data: &[u8], out: &mut [u8]) -> usize {
        out[0] = self.channel;
        out[1] = if self.fragment.is_some() { FRAGMENT } else { 0 };
        out[2..4].copy_from_slice(&self.id.to_le_bytes());
        let mut at = 4;
        if let Some((index, count)) = self.fragment {
            out[4..6].copy_from_slice(&index.to_le_bytes());
            out[6..8].copy_from_slice(&count.to_le_bytes());
            at = 8;
        }
        out[at..at + 2].copy_from_slice(&(data.len() as u16).to_le_bytes());
        at += 2;
        out[at..at + data.len()].copy_from_slice(data);
        at + data.len()
    }

    /// Reads one message: its header, its bytes, and what follows.
    pub fn read(bytes: &[u8]) -> Option<(MessageHeader, &[u8], &[u8])> {
        let u16_at = |i: usize| -> Option<u16> {
            Some(u16::from_le_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]))
        };
        let channel = *bytes.first()?;
        let flags = *bytes.get(1)?;
        if flags & !FRAGMENT != 0 {
            return None;
        }
        let id = u16_at(2)?;
        let (fragment, at) = if flags & FRAGMENT != 0 {
            (Some((u16_at(4)?, u16_at(6)?)), 8)
        } else {
            (None, 4)
        };
        let len = usize::from(u16_at(at)?);
        if len == 0 {
            return None;
        }
        let data = bytes.get(at + 2..at + 2 + len)?;
        let rest = &bytes[at + 2 + len..];
        Some((
            MessageHeader {
                channel,
                id,
                fragment,
            },
            data,
            rest,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_refuse_what_runs_short() {
        let h = PacketHeader {
            sequence: 65535,
            ack: 7,
            ack_bits: 0x8000_0001,
        };
        let mut buf = [0u8; 8];
        h.write(&mut buf);
        assert_eq!(PacketHeader::read(&buf), Some(h));
        assert_eq!(PacketHeader::read(&buf[..7]), None);

        let m = MessageHeader {
            channel: 3,
            id: 513,
            fragment: Some((2, 9)),
        };
        let mut buf = [0u8; 32];
        let n = m.write(b"hello", &mut buf);
        assert_eq!(n, m.len() + 5);
        let (read, data, rest) = MessageHeader::read(&buf[..n]).unwrap();
        assert_eq!((read, data, rest.len()), (m, &b"hello"[..], 0));
        assert!(MessageHeader::read(&buf[..n - 1]).is_none());
        buf[1] = 0x80;
        assert!(MessageHeader::read(&buf[..n]).is_none());
    }
}
