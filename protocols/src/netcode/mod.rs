//! netcode 1.02: secure client/server sessions over UDP, sans-IO and wire compatible with the
//! standard (<https://github.com/mas-bandwidth/netcode/blob/main/STANDARD.md>).
//!
//! # The map
//!
//! - [`TokenIssuer`] and [`ConnectToken`]: what a web backend gives a client; the private part
//!   is sealed with XChaCha20-Poly1305 under the key the servers hold.
//! - [`Server`]: admission before crypto (access list, a token bucket per source, the token's
//!   tag), the challenge, slots, keep-alives, timeouts, the replay window, payloads decrypted in
//!   place.
//! - [`Client`]: the standard's client state machine.
//! - `packet`, `crypto`, `replay`, `admission`, `wire`: the formats and checks they share.
//!
//! Both ends take datagrams with `handle_datagram(now, from, bytes)`, write what they owe into
//! a caller's buffer with `poll_transmit(now, out)` (and `send` for payloads), and keep their
//! timers as data (`poll_timeout`, `handle_timeout`). Neither reads a clock or touches a socket;
//! the engine loop in `crate::udp` (feature `engine`) drives them on coring sockets.
//!
//! # Against the standard's text
//!
//! - Sequence numbers are written in one to eight bytes (the reference implementation's rule);
//!   a sealed packet with no sequence byte (renetcode's sequence 0) is read as sequence 0.
//! - IPv6 server addresses are eight 16-bit groups, each little endian, as the reference
//!   writes them (renetcode writes the sixteen octets in network order; IPv4 is unaffected).
//! - The server's send sequence of a client starts with its challenge and carries on into the
//!   session, so no nonce repeats under the client's key (the reference restarts at zero on
//!   connection, after challenges sent from a global counter under the same key).

mod client;
mod cookie;
mod crypto;
mod packet;
mod replay;
mod server;
mod token;
mod wire;

use std::net::SocketAddr;

pub use crate::admission::{AccessList, RateLimit, SourceLimiter};
pub use crate::cidr::{Cidr, CidrError};
pub use client::{Client, ClientState, RESUME_AFTER};
pub use cookie::{
    COOKIE_BYTES, COOKIE_KIND, COOKIE_LIFETIME_SECONDS, COOKIE_PACKET_BYTES, Cookies,
};
pub use crypto::{KEY_BYTES, Key, MAC_BYTES, NONCE_BYTES};
pub use packet::{
    Body, CHALLENGE_TOKEN_BYTES, ChallengeToken, Header, Kind, MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES,
    Malformed, OpenError, REQUEST_BYTES, RESUME_TOKEN_BYTES, Request, RequestError, header, open,
    seal, write_request,
};
pub use replay::{REPLAY_WINDOW, ReplayWindow};
pub use server::{
    ClientIndex, DISCONNECT_PACKETS, DisconnectReason, Received, Server, ServerConfig, ServerEvent,
    ServerStats, UNVALIDATED_SEND_FACTOR,
};
pub use token::{
    CONNECT_TOKEN_BYTES, ConnectToken, PRIVATE_TOKEN_BYTES, PrivateToken, TokenError, TokenIssuer,
    TokenRequest, USER_DATA_BYTES,
};
pub use wire::MAX_SERVER_ADDRESSES;

/// The version string every token and packet's associated data starts with.
pub const VERSION_INFO: &[u8; 13] = b"NETCODE 1.02\0";

/// A datagram written into the caller's buffer: `out[..len]` goes to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub to: SocketAddr,
    /// Bytes written at the start of the buffer.
    pub len: usize,
}

/// Why a payload was not sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Payloads are 1 to [`MAX_PAYLOAD_BYTES`] bytes.
    #[error("a netcode payload is 1 to 1200 bytes, not {0}")]
    PayloadSize(usize),
    /// No session (not yet connected, or gone).
    #[error("not connected")]
    NotConnected,
    /// The session moved to an address that has not echoed its challenge yet, and has had
    /// its budget (three times what it sent).
    #[error("the session's new address is not validated yet")]
    PathBudget,
}

/// Why a datagram was dropped. Nothing dropped is answered; everything dropped is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a packet: too short, too long, an unknown type, a bad sequence or body length.
    Malformed(Malformed),
    /// A connection request of the wrong length.
    RequestLength,
    /// Another version of netcode.
    Version,
    /// Another game's protocol id.
    ProtocolId,
    /// The token has expired.
    Expired,
    /// The access list refuses the source.
    NotAdmitted,
    /// The source's token bucket is empty.
    RateLimited,
    /// The token is bound to another address already.
    TokenReused,
    /// The token's private part does not open under the server's key.
    TokenForged,
    /// The private part opened but does not read as a token.
    TokenMalformed,
    /// The token does not name this server.
    WrongServer,
    /// The address or client id already holds a session.
    AlreadyConnected,
    /// The pending table (or the table of tokens seen) is full.
    PendingFull,
    /// No session or pending connection at this address.
    UnknownSource,
    /// A packet type this side does not take in this state.
    UnexpectedType,
    /// A sealed packet that does not open: forged, or changed in flight.
    Forged,
    /// A sequence number already received, or older than the replay window.
    Replayed,
    /// A challenge response whose challenge token the server did not make.
    ChallengeForged,
    /// A request without a valid address cookie while the server's cookie replies are spent
    /// ([`ServerConfig::cookie_replies_per_second`]).
    CookieBudget,
}

impl From<OpenError> for DropReason {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Forged => DropReason::Forged,
            OpenError::Malformed(m) => DropReason::Malformed(m),
        }
    }
}

impl DropReason {
    /// Every reason, in the order [`DropCounts::iter`] reports them.
    pub const ALL: [DropReason; 23] = [
        DropReason::Malformed(Malformed::TooSmall),
        DropReason::Malformed(Malformed::TooLarge),
        DropReason::Malformed(Malformed::UnknownType),
        DropReason::Malformed(Malformed::SequenceLength),
        DropReason::Malformed(Malformed::BodyLength),
        DropReason::RequestLength,
        DropReason::Version,
        DropReason::ProtocolId,
        DropReason::Expired,
        DropReason::NotAdmitted,
        DropReason::RateLimited,
        DropReason::TokenReused,
        DropReason::TokenForged,
        DropReason::TokenMalformed,
        DropReason::WrongServer,
        DropReason::AlreadyConnected,
        DropReason::PendingFull,
        DropReason::UnknownSource,
        DropReason::UnexpectedType,
        DropReason::Forged,
        DropReason::Replayed,
        DropReason::ChallengeForged,
        DropReason::CookieBudget,
    ];

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed(Malformed::TooSmall) => "too_small",
            DropReason::Malformed(Malformed::TooLarge) => "too_large",
            DropReason::Malformed(Malformed::UnknownType) => "unknown_type",
            DropReason::Malformed(Malformed::SequenceLength) => "sequence_length",
            DropReason::Malformed(Malformed::BodyLength) => "body_length",
            DropReason::RequestLength => "request_length",
            DropReason::Version => "version",
            DropReason::ProtocolId => "protocol_id",
            DropReason::Expired => "expired",
            DropReason::NotAdmitted => "not_admitted",
            DropReason::RateLimited => "rate_limited",
            DropReason::TokenReused => "token_reused",
            DropReason::TokenForged => "token_forged",
            DropReason::TokenMalformed => "token_malformed",
            DropReason::WrongServer => "wrong_server",
            DropReason::AlreadyConnected => "already_connected",
            DropReason::PendingFull => "pending_full",
            DropReason::UnknownSource => "unknown_source",
            DropReason::UnexpectedType => "unexpected_type",
            DropReason::Forged => "forged",
            DropReason::Replayed => "replayed",
            DropReason::ChallengeForged => "challenge_forged",
            DropReason::CookieBudget => "cookie_budget",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_else(|| unreachable!("ALL lists every reason"))
    }
}

/// Datagrams dropped, per [`DropReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// Drops for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each reason with its count, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().copied().zip(self.0.iter().copied())
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    pub(crate) fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
}

#[cfg(test)]
mod tests;
