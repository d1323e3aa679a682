//! What can be wrong with a request, and the status it earns.

/// A request the server must refuse. After any of these the connection is answered with
/// [`Http1Error::status`] and closed: framing can no longer be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Http1Error {
    /// Malformed request line, header syntax, or framing (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request target is longer than the head limit allows (414).
    #[error("request target too long")]
    UriTooLong,
    /// The head (request line and headers) exceeds its byte limit, or has too many headers (431).
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// The body exceeds the configured limit (413).
    #[error("request body too large")]
    BodyTooLarge,
    /// A transfer coding other than `chunked` (501).
    #[error("transfer coding not implemented")]
    UnsupportedTransferCoding,
    /// An HTTP version other than 1.0 and 1.1 (505).
    #[error("HTTP version not supported")]
    VersionNotSupported,
}

impl Http1Error {
    /// The response status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Http1Error::BadRequest(_) => 400,
            Http1Error::UriTooLong => 414,
            Http1Error::HeadersTooLarge => 431,
            Http1Error::BodyTooLarge => 413,
            Http1Error::UnsupportedTransferCoding => 501,
            Http1Error::VersionNotSupported => 505,
        }
    }
}
