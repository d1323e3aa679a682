//! Frames (RFC 6455 section 5.2): a header decoded from whatever bytes have arrived, a header
//! encoded into the caller's buffer, and the payload mask applied a word at a time.

use super::WsError;
use crate::http1::Status;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// The next fragment of a message.
    Continuation,
    /// The first (or only) frame of a UTF-8 text message.
    Text,
    /// The first (or only) frame of a binary message.
    Binary,
    /// The closing handshake.
    Close,
    /// A ping: the peer answers with a pong carrying the same bytes.
    Ping,
    /// A pong.
    Pong,
}

impl Opcode {
    /// The opcode of the header's low nibble; `None` for the reserved ones.
    pub fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    /// The header's low nibble.
    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented, allowed between the
    /// fragments of a message.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The last frame of its message.
    pub fin: bool,
    /// RSV1 (permessage-deflate: the message is compressed).
    pub rsv1: bool,
    /// RSV2 or RSV3 set (no extension we speak defines them).
    pub rsv23: bool,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key (frames from a client carry one, frames from a server none).
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

/// Decodes the frame header at the start of `buf`: `Complete((header, header_len))`, or
/// `Partial` until all of it (2 to 14 bytes) is here. Refuses reserved opcodes, fragmented or
/// oversized control frames and 64-bit lengths with the top bit set (1002); what the
/// connection negotiated (masking, RSV bits, size limits) is checked by the connection.
pub fn decode_header(buf: &[u8]) -> Result<Status<(FrameHeader, usize)>, WsError> {
    let [b0, b1, ..] = *buf else {
        return Ok(Status::Partial);
    };
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(WsError::Protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(Status::Partial);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(Status::Partial);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(WsError::Protocol("frame length has its top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(WsError::Protocol("fragmented control frame"));
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(WsError::Protocol("control frame longer than 125 bytes"));
        }
    }
    let mask = if masked {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(Status::Partial);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Ok(Status::Complete((
        FrameHeader {
            fin,
            rsv1: b0 & 0x40 != 0,
            rsv23: b0 & 0x30 != 0,
            opcode,
            mask,
            len,
        },
        at,
    )))
}

/// Appends a frame header to `out`: `rsv1` marks a compressed message, `mask` is the client's
/// key (servers send none).
pub fn encode_header(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    len: u64,
) {
    let b0 = (u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode.bits();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// XORs `data` with `key`, where `data` starts `offset` bytes into the payload (a payload
/// unmasked in the pieces it arrived in). Eight bytes at a time; the compiler widens the loop
/// further where the target allows.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(buf: &[u8]) -> (FrameHeader, usize) {
        match decode_header(buf) {
            Ok(Status::Complete(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn headers_round_trip_at_every_length_form() {
        for len in [0u64, 1, 125, 126, 127, 65_535, 65_536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = Vec::new();
                encode_header(&mut out, true, false, Opcode::Binary, mask, len);
                let (h, n) = header(&out);
                assert_eq!(n, out.len());
                assert_eq!(
                    (h.len, h.mask, h.opcode, h.fin),
                    (len, mask, Opcode::Binary, true)
                );
                // Every shorter prefix asks for more.
                for cut in 0..out.len() {
                    assert_eq!(
                        decode_header(&out[..cut]),
                        Ok(Status::Partial),
                        "{len} {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_headers_are_protocol_errors() {
        let cases: [&[u8]; 5] = [
            &[0x83, 0x00],                           // reserved opcode 3
            &[0x8B, 0x00],                           // reserved control opcode 0xB
            &[0x09, 0x00],                           // ping without FIN
            &[0x89, 126, 0, 126],                    // ping of 126 bytes
            &[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], // top bit of a 64-bit length
        ];
        for case in cases {
            assert!(
                matches!(decode_header(case), Err(WsError::Protocol(_))),
                "{case:?}"
            );
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_whole() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for (i, b) in whole.iter().enumerate() {
            assert_eq!(*b, data[i] ^ key[i % 4]);
        }
        for split in [1, 3, 7, 8, 9, 50] {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }
}
