//! The seven packets of netcode 1.02 and the challenge token, written and read.
//!
//! The connection request travels in the clear (its payload is the sealed private token):
//!
//! ```text
//! 0x00 | version info (13) | protocol id (8) | expire timestamp (8) | nonce (24) | private (1024)
//! ```
//!
//! Every other packet is `prefix | sequence (1-8 bytes) | sealed body | tag (16)`. The prefix's
//! low four bits are the packet type and its high four the sequence's byte count; the body is
//! sealed under the sender's direction key with the sequence as nonce and `version | protocol id
//! | prefix` as associated data, so neither the type nor the sequence can be changed in flight.

use super::VERSION_INFO;
use super::crypto::{self, Key, MAC_BYTES, NONCE_BYTES};
use super::token::{ConnectToken, PRIVATE_TOKEN_BYTES, USER_DATA_BYTES};
use super::wire::{Reader, Writer};

/// Bytes of a connection request, exactly.
pub const REQUEST_BYTES: usize = 1 + 13 + 8 + 8 + NONCE_BYTES + PRIVATE_TOKEN_BYTES;
/// Bytes of a sealed challenge token.
pub const CHALLENGE_TOKEN_BYTES: usize = 300;
/// The largest payload a packet carries.
pub const MAX_PAYLOAD_BYTES: usize = 1200;
/// The largest packet: a full payload with an eight-byte sequence.
pub const MAX_PACKET_BYTES: usize = 1 + 8 + MAX_PAYLOAD_BYTES + MAC_BYTES;
/// The smallest sealed packet this implementation reads: a prefix, no sequence byte (what
/// renetcode writes for sequence 0; the standard writes at least one) and the tag.
const MIN_SEALED_BYTES: usize = 1 + MAC_BYTES;

/// A packet's type: the low four bits of its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Client to server, in the clear: the connect token's private part.
    Request = 0,
    /// Server to client: no room, or not allowed.
    Denied = 1,
    /// Server to client: a challenge token to echo.
    Challenge = 2,
    /// Client to server: the challenge token echoed.
    Response = 3,
    /// Either way: the session is alive (server to client it also says the client's slot).
    KeepAlive = 4,
    /// Either way: application data.
    Payload = 5,
    /// Either way: the session ends.
    Disconnect = 6,
    /// Not in the standard; only between ends that both enable session resumption (see
    /// `docs/netcode.md`). Client to server: "this session now speaks from here", with the
    /// session's slot in the clear; server to client: a challenge for the new address; client
    /// to server again: the challenge echoed.
    Resume = 7,
}

impl Kind {
    /// The type in a prefix's low four bits, if it is one of the seven.
    pub fn from_bits(bits: u8) -> Option<Kind> {
        Some(match bits {
            0 => Kind::Request,
            1 => Kind::Denied,
            2 => Kind::Challenge,
            3 => Kind::Response,
            4 => Kind::KeepAlive,
            5 => Kind::Payload,
            6 => Kind::Disconnect,
            7 => Kind::Resume,
            _ => return None,
        })
    }

    /// Whether the receiver's replay window applies (the standard's rule: keep-alive,
    /// payload and disconnect).
    pub fn replay_protected(self) -> bool {
        matches!(
            self,
            Kind::KeepAlive | Kind::Payload | Kind::Disconnect | Kind::Resume
        )
    }
}

/// A sealed packet's body, as written or as read once opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// [`Kind::Denied`].
    Denied,
    /// [`Kind::Challenge`]: the token's sequence and the sealed token.
    Challenge {
        /// The challenge token's nonce.
        sequence: u64,
        /// The sealed challenge token.
        token: &'a [u8; CHALLENGE_TOKEN_BYTES],
    },
    /// [`Kind::Response`]: the challenge echoed.
    Response {
        /// The challenge token's nonce.
        sequence: u64,
        /// The sealed challenge token.
        token: &'a [u8; CHALLENGE_TOKEN_BYTES],
    },
    /// [`Kind::KeepAlive`].
    KeepAlive {
        /// The client's slot on the server.
        client_index: u32,
        /// The server's slots.
        max_clients: u32,
    },
    /// [`Kind::Payload`]: 1 to [`MAX_PAYLOAD_BYTES`] bytes.
    Payload(&'a [u8]),
    /// [`Kind::Disconnect`].
    Disconnect,
    /// [`Kind::Resume`]: the path token (zeros from a client announcing a new address; the
    /// server's challenge; the challenge echoed).
    Resume {
        /// The session's slot, sent in the clear (and authenticated) from the client; zero from
        /// the server.
        client_index: u32,
        /// The path token.
        token: [u8; RESUME_TOKEN_BYTES],
    },
}

/// Bytes of a resumption path token.
pub const RESUME_TOKEN_BYTES: usize = 8;

impl Body<'_> {
    /// The packet type this body travels as.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Denied => Kind::Denied,
            Body::Challenge { .. } => Kind::Challenge,
            Body::Response { .. } => Kind::Response,
            Body::KeepAlive { .. } => Kind::KeepAlive,
            Body::Payload(_) => Kind::Payload,
            Body::Disconnect => Kind::Disconnect,
            Body::Resume { .. } => Kind::Resume,
        }
    }
}

/// Why bytes are not a packet this endpoint takes. Counted, never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than any packet.
    TooSmall,
    /// Longer than any packet.
    TooLarge,
    /// A type past 6.
    UnknownType,
    /// A sequence of more than eight bytes.
    SequenceLength,
    /// A body of the wrong size for its type.
    BodyLength,
}

/// The clear part of a sealed packet: what may be checked before any decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The packet type.
    pub kind: Kind,
    /// The sender's sequence number.
    pub sequence: u64,
    /// A [`Kind::Resume`] packet's slot, in the clear (zero for other kinds).
    pub client_index: u32,
    /// The prefix byte (part of the associated data).
    prefix: u8,
    /// Where the sealed body starts.
    body_at: usize,
}

/// Reads a sealed packet's prefix and sequence. A request (prefix 0) is not sealed: see
/// [`Request::parse`].
pub fn header(bytes: &[u8]) -> Result<Header, Malformed> {
    if bytes.len() < MIN_SEALED_BYTES {
        return Err(Malformed::TooSmall);
    }
    if bytes.len() > MAX_PACKET_BYTES {
        return Err(Malformed::TooLarge);
    }
    let prefix = bytes[0];
    let kind = Kind::from_bits(prefix & 0x0f).ok_or(Malformed::UnknownType)?;
    let sequence_len = usize::from(prefix >> 4);
    if sequence_len > 8 {
        return Err(Malformed::SequenceLength);
    }
    if bytes.len() < 1 + sequence_len + MAC_BYTES {
        return Err(Malformed::TooSmall);
    }
    let mut sequence = [0u8; 8];
    sequence[..sequence_len].copy_from_slice(&bytes[1..1 + sequence_len]);
    let mut body_at = 1 + sequence_len;
    let mut client_index = 0;
    if kind == Kind::Resume {
        let clear = bytes.get(body_at..body_at + 4).ok_or(Malformed::TooSmall)?;
        client_index = u32::from_le_bytes([clear[0], clear[1], clear[2], clear[3]]);
        body_at += 4;
        if bytes.len() < body_at + MAC_BYTES {
            return Err(Malformed::TooSmall);
        }
    }
    Ok(Header {
        kind,
        sequence: u64::from_le_bytes(sequence),
        client_index,
        prefix,
        body_at,
    })
}

/// Opens a sealed packet in place under `key` and reads its body. The caller checked the
/// header (type allowed here, replay window) first.
pub fn open<'a>(
    bytes: &'a mut [u8],
    header: &Header,
    protocol_id: u64,
    key: &Key,
) -> Result<Body<'a>, OpenError> {
    let aad = packet_aad(protocol_id, header.prefix, header.client_index);
    let sealed = &mut bytes[header.body_at..];
    crypto::open(sealed, header.sequence, key, aad.as_slice(header.kind))
        .map_err(|_| OpenError::Forged)?;
    let body = &sealed[..sealed.len() - MAC_BYTES];
    match read_body(header.kind, body).map_err(OpenError::Malformed)? {
        Body::Resume { token, .. } => Ok(Body::Resume {
            client_index: header.client_index,
            token,
        }),
        other => Ok(other),
    }
}

/// Why a sealed packet did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The tag does not match: not sealed under this key, or changed in flight.
    Forged,
    /// It opened but its body is not what its type says.
    Malformed(Malformed),
}

impl<'a> Body<'a> {
    /// Reads an opened body of `kind` (what [`open`] does after the tag checks out).
    pub fn parse(kind: Kind, plaintext: &'a [u8]) -> Result<Body<'a>, Malformed> {
        read_body(kind, plaintext)
    }
}

fn read_body(kind: Kind, body: &[u8]) -> Result<Body<'_>, Malformed> {
    let exact = |n: usize| {
        if body.len() == n {
            Ok(())
        } else {
            Err(Malformed::BodyLength)
        }
    };
    Ok(match kind {
        Kind::Request => return Err(Malformed::UnknownType),
        Kind::Denied => {
            exact(0)?;
            Body::Denied
        }
        Kind::Disconnect => {
            exact(0)?;
            Body::Disconnect
        }
        Kind::KeepAlive => {
            exact(8)?;
            let mut r = Reader::new(body);
            let bad = |_| Malformed::BodyLength;
            Body::KeepAlive {
                client_index: r.u32().map_err(bad)?,
                max_clients: r.u32().map_err(bad)?,
            }
        }
        Kind::Challenge | Kind::Response => {
            exact(8 + CHALLENGE_TOKEN_BYTES)?;
            let (sequence, token) = body.split_at(8);
            let sequence =
                u64::from_le_bytes(sequence.try_into().map_err(|_| Malformed::BodyLength)?);
            let token = token.try_into().map_err(|_| Malformed::BodyLength)?;
            if kind == Kind::Challenge {
                Body::Challenge { sequence, token }
            } else {
                Body::Response { sequence, token }
            }
        }
        Kind::Payload => {
            if body.is_empty() || body.len() > MAX_PAYLOAD_BYTES {
                return Err(Malformed::BodyLength);
            }
            Body::Payload(body)
        }
        Kind::Resume => {
            exact(RESUME_TOKEN_BYTES)?;
            let mut token = [0u8; RESUME_TOKEN_BYTES];
            token.copy_from_slice(body);
            Body::Resume {
                client_index: 0,
                token,
            }
        }
    })
}

/// Writes and seals `body` with `sequence` under `key` into `out`, which holds at least
/// [`MAX_PACKET_BYTES`]; returns the packet's length. A payload must be 1 to
/// [`MAX_PAYLOAD_BYTES`] bytes (the callers check).
pub fn seal(body: &Body<'_>, sequence: u64, protocol_id: u64, key: &Key, out: &mut [u8]) -> usize {
    let sequence_len = sequence_bytes(sequence);
    let prefix = body.kind() as u8 | ((sequence_len as u8) << 4);
    out[0] = prefix;
    out[1..1 + sequence_len].copy_from_slice(&sequence.to_le_bytes()[..sequence_len]);
    let mut body_at = 1 + sequence_len;
    let mut clear_index = 0;
    if let Body::Resume { client_index, .. } = body {
        out[body_at..body_at + 4].copy_from_slice(&client_index.to_le_bytes());
        body_at += 4;
        clear_index = *client_index;
    }
    let mut w = Writer::new(&mut out[body_at..]);
    match body {
        Body::Denied | Body::Disconnect => {}
        Body::Challenge { sequence, token } | Body::Response { sequence, token } => {
            w.u64(*sequence);
            w.put(&token[..]);
        }
        Body::KeepAlive {
            client_index,
            max_clients,
        } => {
            w.u32(*client_index);
            w.u32(*max_clients);
        }
        Body::Payload(data) => w.put(data),
        Body::Resume { token, .. } => w.put(token),
    }
    let end = body_at + w.len() + MAC_BYTES;
    let aad = packet_aad(protocol_id, prefix, clear_index);
    crypto::seal(
        &mut out[body_at..end],
        sequence,
        key,
        aad.as_slice(body.kind()),
    );
    end
}

/// Bytes the sequence takes: high zero bytes left out, at least one.
fn sequence_bytes(sequence: u64) -> usize {
    (8 - sequence.leading_zeros() as usize / 8).max(1)
}

/// A packet's associated data: version, protocol id, prefix; for [`Kind::Resume`] also the
/// slot sent in the clear.
struct Aad([u8; 26]);

impl Aad {
    fn as_slice(&self, kind: Kind) -> &[u8] {
        if kind == Kind::Resume {
            &self.0
        } else {
            &self.0[..22]
        }
    }
}

fn packet_aad(protocol_id: u64, prefix: u8, client_index: u32) -> Aad {
    let mut aad = [0; 26];
    aad[..13].copy_from_slice(VERSION_INFO);
    aad[13..21].copy_from_slice(&protocol_id.to_le_bytes());
    aad[21] = prefix;
    aad[22..].copy_from_slice(&client_index.to_le_bytes());
    Aad(aad)
}

/// A connection request's fields, borrowed from the datagram.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The protocol id it claims.
    pub protocol_id: u64,
    /// The token's expiry (checked against the clock, and authenticated by the seal).
    pub expire_timestamp: u64,
    /// The private part's nonce.
    pub nonce: &'a [u8; NONCE_BYTES],
    /// The sealed private part.
    pub private_data: &'a [u8; PRIVATE_TOKEN_BYTES],
}

/// Why a connection request is refused before any decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not exactly [`REQUEST_BYTES`].
    Length,
    /// Another version of netcode.
    Version,
}

impl<'a> Request<'a> {
    /// Reads a request: exactly [`REQUEST_BYTES`], prefix 0, this version.
    pub fn parse(bytes: &'a [u8]) -> Result<Request<'a>, RequestError> {
        if bytes.len() != REQUEST_BYTES || bytes[0] != 0 {
            return Err(RequestError::Length);
        }
        let mut r = Reader::new(&bytes[1..]);
        let mut next = |n| r.take(n).map_err(|_| RequestError::Length);
        if next(VERSION_INFO.len())? != VERSION_INFO {
            return Err(RequestError::Version);
        }
        let protocol_id =
            u64::from_le_bytes(next(8)?.try_into().map_err(|_| RequestError::Length)?);
        let expire_timestamp =
            u64::from_le_bytes(next(8)?.try_into().map_err(|_| RequestError::Length)?);
        let nonce = next(NONCE_BYTES)?
            .try_into()
            .map_err(|_| RequestError::Length)?;
        let private_data = next(PRIVATE_TOKEN_BYTES)?
            .try_into()
            .map_err(|_| RequestError::Length)?;
        Ok(Request {
            protocol_id,
            expire_timestamp,
            nonce,
            private_data,
        })
    }

    /// The private part's tag: sent in the clear, unique per token, so the server can tell a
    /// token it has seen before it spends a decryption.
    pub fn token_mac(&self) -> [u8; MAC_BYTES] {
        let mut mac = [0; MAC_BYTES];
        mac.copy_from_slice(&self.private_data[PRIVATE_TOKEN_BYTES - MAC_BYTES..]);
        mac
    }
}

/// Writes the connection request for `token` into `out` (at least [`REQUEST_BYTES`]).
pub fn write_request(token: &ConnectToken, out: &mut [u8]) -> usize {
    let mut w = Writer::new(out);
    w.put(&[0]);
    w.put(VERSION_INFO);
    w.u64(token.protocol_id);
    w.u64(token.expire_timestamp);
    w.put(&token.nonce);
    w.put(&token.private_data[..]);
    w.len()
}

/// What a challenge token carries back to the server: the client id and the token's user
/// data, sealed under a key only the server holds, so the server keeps nothing between
/// sending a challenge and reading its response but the keys of the pending address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeToken {
    /// The client's id.
    pub client_id: u64,
    /// The connect token's user data.
    pub user_data: Box<[u8; USER_DATA_BYTES]>,
}

impl ChallengeToken {
    /// Seals the token under `key` with nonce `sequence`.
    pub fn seal(&self, sequence: u64, key: &Key) -> [u8; CHALLENGE_TOKEN_BYTES] {
        let mut out = [0u8; CHALLENGE_TOKEN_BYTES];
        out[..8].copy_from_slice(&self.client_id.to_le_bytes());
        out[8..8 + USER_DATA_BYTES].copy_from_slice(&self.user_data[..]);
        crypto::seal(&mut out, sequence, key, &[]);
        out
    }

    /// Opens a sealed token (a copy).
    pub fn open(
        sealed: &[u8; CHALLENGE_TOKEN_BYTES],
        sequence: u64,
        key: &Key,
    ) -> Option<ChallengeToken> {
        let mut plain = *sealed;
        crypto::open(&mut plain, sequence, key, &[]).ok()?;
        let mut user_data = Box::new([0u8; USER_DATA_BYTES]);
        user_data.copy_from_slice(&plain[8..8 + USER_DATA_BYTES]);
        Some(ChallengeToken {
            client_id: u64::from_le_bytes(plain[..8].try_into().ok()?),
            user_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key([3; 32]);

    fn round_trip(body: Body<'_>, sequence: u64) -> usize {
        let mut buf = [0u8; MAX_PACKET_BYTES];
        let n = seal(&body, sequence, 42, &KEY, &mut buf);
        let h = header(&buf[..n]).unwrap();
        assert_eq!((h.kind, h.sequence), (body.kind(), sequence));
        let mut copy = buf;
        assert_eq!(open(&mut copy[..n], &h, 42, &KEY).unwrap(), body);
        // Another protocol id, a changed prefix or a flipped bit: forged.
        let mut copy = buf;
        assert_eq!(open(&mut copy[..n], &h, 43, &KEY), Err(OpenError::Forged));
        let mut copy = buf;
        copy[n - 1] ^= 1;
        assert_eq!(open(&mut copy[..n], &h, 42, &KEY), Err(OpenError::Forged));
        n
    }

    #[test]
    fn every_sealed_packet_round_trips_and_sizes_follow_the_standard() {
        let token = [9u8; CHALLENGE_TOKEN_BYTES];
        assert_eq!(round_trip(Body::Denied, 0), 1 + 1 + 16);
        assert_eq!(round_trip(Body::Disconnect, 1000), 1 + 2 + 16);
        assert_eq!(
            round_trip(
                Body::KeepAlive {
                    client_index: 3,
                    max_clients: 64
                },
                u64::MAX
            ),
            1 + 8 + 8 + 16
        );
        assert_eq!(
            round_trip(
                Body::Challenge {
                    sequence: 5,
                    token: &token
                },
                1
            ),
            1 + 1 + 308 + 16
        );
        round_trip(
            Body::Response {
                sequence: 5,
                token: &token,
            },
            1 << 40,
        );
        assert_eq!(
            round_trip(
                Body::Resume {
                    client_index: 9,
                    token: [4; RESUME_TOKEN_BYTES]
                },
                3
            ),
            1 + 1 + 4 + 8 + 16
        );
        let payload = [7u8; MAX_PAYLOAD_BYTES];
        assert_eq!(round_trip(Body::Payload(&payload), 1), MAX_PACKET_BYTES - 7);
    }

    #[test]
    fn sequence_bytes_are_written_low_first_with_high_zeros_left_out() {
        // The standard's example: 1000 is 0x3e8, two bytes e8 03 (its text says three and
        // shows the nibbles; the reference code writes two).
        let mut buf = [0u8; MAX_PACKET_BYTES];
        seal(&Body::Disconnect, 1000, 1, &KEY, &mut buf);
        assert_eq!(buf[..3], [0x26, 0xe8, 0x03]);
        assert_eq!(sequence_bytes(0), 1);
        assert_eq!(sequence_bytes(255), 1);
        assert_eq!(sequence_bytes(256), 2);
        assert_eq!(sequence_bytes(u64::MAX), 8);
    }

    #[test]
    fn headers_refuse_what_cannot_be_a_packet() {
        assert_eq!(header(&[0x15; 10]), Err(Malformed::TooSmall));
        assert_eq!(header(&[0x15; 2000]), Err(Malformed::TooLarge));
        assert_eq!(header(&[0x18; 40]), Err(Malformed::UnknownType));
        assert_eq!(header(&[0x95; 40]), Err(Malformed::SequenceLength));
        // renetcode's sequence 0 with no sequence byte reads as 0.
        let h = header(&[0x06; 17]).unwrap();
        assert_eq!((h.kind, h.sequence), (Kind::Disconnect, 0));
    }

    #[test]
    fn bodies_of_the_wrong_size_are_malformed_even_when_sealed() {
        let mut buf = [0u8; MAX_PACKET_BYTES];
        // A keep-alive prefix over a four-byte body.
        let n = seal(&Body::Payload(&[1, 2, 3, 4]), 1, 42, &KEY, &mut buf);
        buf[0] = (buf[0] & 0xf0) | Kind::KeepAlive as u8;
        // The prefix is authenticated, so the change shows as forgery...
        let h = header(&buf[..n]).unwrap();
        assert_eq!(open(&mut buf[..n], &h, 42, &KEY), Err(OpenError::Forged));
        // ...and a correctly sealed wrong size as malformed.
        assert_eq!(
            read_body(Kind::KeepAlive, &[0; 4]),
            Err(Malformed::BodyLength)
        );
        assert_eq!(read_body(Kind::Payload, &[]), Err(Malformed::BodyLength));
        assert_eq!(read_body(Kind::Denied, &[0]), Err(Malformed::BodyLength));
    }

    #[test]
    fn challenge_tokens_open_only_under_the_servers_key_and_sequence() {
        let token = ChallengeToken {
            client_id: 77,
            user_data: Box::new([5; USER_DATA_BYTES]),
        };
        let sealed = token.seal(9, &KEY);
        assert_eq!(ChallengeToken::open(&sealed, 9, &KEY), Some(token));
        assert_eq!(ChallengeToken::open(&sealed, 10, &KEY), None);
        assert_eq!(ChallengeToken::open(&sealed, 9, &Key([4; 32])), None);
    }
}
