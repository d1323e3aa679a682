//! coring-protocols: sans-IO protocol codecs, and the loops that drive them on coring.
//!
//! # The map
//!
//! - [`http1`]: the HTTP/1.1 codec: request decoding (pipelining, chunked bodies, limits,
//!   smuggling defences) and response encoding. No sockets, no clock, no spawning.
//! - `serve` (feature `engine`, on by default): the per-connection loop that drives the codec
//!   on coring streams, a small router, and the per-core date cache.
//! - `client` (feature `engine`): an HTTP/1.1 client with a keep-alive pool per host.
//!
//! Data flows: socket bytes → `RequestDecoder` → `Request` → your handler → `Response` →
//! `encode_response` into one buffer per turn → one write.

#![forbid(unsafe_code)]

#[cfg(feature = "engine")]
pub mod client;
pub mod http1;
#[cfg(feature = "engine")]
pub mod serve;
