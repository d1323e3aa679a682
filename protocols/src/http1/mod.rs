//! HTTP/1.1, sans-IO: bytes in, requests out; responses in, bytes out.
//!
//! [`ServerConn`] is one server connection: bytes in, requests out (pipelined ones in order),
//! answers in, bytes out, and its deadlines ([`Timer`]) as data. It enforces [`Limits`] and the
//! framing rules of RFC 9112 that stop request smuggling (one rule for requests and responses,
//! in `framing.rs`): a request with both Content-Length and Transfer-Encoding, repeated
//! Content-Length, a malformed chunk size, obs-fold, a bare CR, whitespace before a colon, or a
//! non-token header name is refused with a typed [`Http1Error`] that says which status to send;
//! after one, the connection is answered and closed. Tokenising is httparse's.
//! [`encode_response`] writes a response into a buffer the caller owns; [`ResponseFramer`]
//! and [`encode_request`] are the client's side.
//!
//! Nothing here does I/O or reads a clock: `now` and the `Date` value are passed in.

mod chunked;
mod client_codec;
mod error;
mod framing;
mod request;
mod response;
mod server;

pub use chunked::{ChunkedDecoder, MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES};
pub use client_codec::{
    ClientResponse, FramedResponse, ResponseDecoder, ResponseFramer, encode_request,
};
pub use error::Http1Error;
pub use request::{Framing, Request};
pub use response::{
    BodyFraming, EncodeContext, HeaderValue, LAST_CHUNK, Response, encode_chunk, encode_response,
    reason,
};
pub use server::{ServerConfig, ServerConn, Timer};

/// What a parsing step found: a complete item, or the need for more bytes (a status, not an
/// error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// The item.
    Complete(T),
    /// More bytes are needed.
    Partial,
}

/// HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// Size limits of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers, in bytes (default 8 KiB).
    pub max_head_bytes: usize,
    /// Header fields (default 100).
    pub max_headers: usize,
    /// Body bytes (default 1 MiB).
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            max_headers: 100,
            max_body_bytes: 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests;
