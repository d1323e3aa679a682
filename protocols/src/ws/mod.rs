//! WebSocket (RFC 6455) sans-IO: frames, the opening handshake, and a connection that turns
//! received bytes into messages and events and messages into bytes for the caller to send.
//!
//! - [`frame`]: headers decoded from whatever has arrived, encoded into the caller's buffer,
//!   the payload mask applied a word at a time.
//! - [`handshake`]: the server's check of an upgrade request and its `101` answer
//!   (`Sec-WebSocket-Accept`, subprotocol choice); the client's request and its check of the
//!   answer.
//! - [`WsConn`]: one connection, either role. Bytes go in with [`WsConn::handle_input`];
//!   [`WsConn::poll_event`] hands out messages, pings, pongs and the peer's close in order;
//!   [`WsConn::send`], [`WsConn::ping`] and [`WsConn::close`] encode into the caller's buffer;
//!   what the connection owes by itself (a pong, the close reply) comes from
//!   [`WsConn::poll_transmit`]; its deadlines (the close handshake, the optional heartbeat)
//!   are [`WsConn::poll_timeout`] and [`WsConn::handle_timeout`]. No sockets, no clock.
//!
//! Protocol violations end the connection with the close code RFC 6455 gives them (1002 for
//! framing, 1007 for text that is not UTF-8, 1009 past a size limit); nothing past a limit is
//! buffered.

mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
mod utf8;

#[cfg(test)]
mod tests;

pub use conn::{
    CloseFrame, Event, Message, RecvBuffer, Role, SharedEncoder, Sharing, Timer, WsConfig, WsConn,
};
pub use utf8::{InvalidUtf8, Utf8Stream};

/// Why a WebSocket connection failed. Each maps to the close code sent to the peer
/// ([`WsError::close_code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The peer broke the framing rules (1002).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or a close reason is not UTF-8 (1007).
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A frame or message is larger than the configured limit (1009).
    #[error("{0} larger than the limit")]
    TooBig(&'static str),
    /// The peer stopped answering: no pong within the heartbeat's deadline.
    #[error("no pong within the heartbeat deadline")]
    PeerUnresponsive,
    /// The peer ended the connection without a close frame (1006: never sent).
    #[error("connection closed without a close frame")]
    Abrupt,
    /// The connection is closing or closed: nothing more can be sent.
    #[error("the connection is closed")]
    Closed,
}

impl WsError {
    /// The close code for the peer.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Protocol(_) => 1002,
            WsError::InvalidUtf8 => 1007,
            WsError::TooBig(_) => 1009,
            WsError::PeerUnresponsive => 1011,
            WsError::Abrupt => 1006,
            WsError::Closed => 1000,
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 section 7.4 and the IANA
/// registry: 1004–1006 and 1015 are never sent, 1016–2999 are reserved).
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
