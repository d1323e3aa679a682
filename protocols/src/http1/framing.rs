//! The body framing rules requests and responses share (RFC 9112 §6): which header fields
//! delimit a body, and which combinations are refused because two parties could read them
//! differently (the start of request smuggling and response splitting). The server's
//! request decoder and the client's response decoder both go through here, so they cannot
//! disagree.

use super::Http1Error;

/// How the framing fields of one message delimit its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delimited {
    /// Neither field: no body for a request, read until close for a response.
    Unframed,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
}

/// The `Content-Length` and `Transfer-Encoding` fields of one message, seen so far.
#[derive(Debug, Default)]
pub(crate) struct FramingFields {
    length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
}

impl FramingFields {
    /// A `Content-Length` field: `1*DIGIT` with optional whitespace around it, once. A second
    /// field or a list is refused even when the values agree (RFC 9110 §8.6 lets a recipient
    /// refuse them; nginx does): a peer that kept the first and one that kept the last would
    /// frame the message differently if they did not.
    pub(crate) fn content_length(&mut self, value: &[u8]) -> Result<(), Http1Error> {
        let v = trim(value);
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(Http1Error::BadRequest("invalid Content-Length"));
        }
        if self.length.is_some() {
            return Err(Http1Error::BadRequest("repeated Content-Length"));
        }
        self.length = Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
        Ok(())
    }

    /// A `Transfer-Encoding` field (there may be several; their codings form one list).
    /// `chunked` must come last and once; any other coding is not implemented here.
    pub(crate) fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), Http1Error> {
        self.transfer_encoding = true;
        for coding in value.split(|&b| b == b',') {
            let coding = trim(coding);
            if coding.is_empty() {
                continue;
            }
            let is_chunked = token_is(coding, b"chunked");
            if self.chunked {
                // Anything after `chunked` means the body is not framed by chunked.
                return Err(Http1Error::BadRequest(if is_chunked {
                    "chunked applied more than once"
                } else {
                    "chunked is not the final coding"
                }));
            }
            if !is_chunked {
                return Err(Http1Error::UnsupportedTransferCoding);
            }
            self.chunked = true;
        }
        Ok(())
    }

    /// Whether a `Transfer-Encoding` field was seen.
    pub(crate) fn has_transfer_encoding(&self) -> bool {
        self.transfer_encoding
    }

    /// How the body is delimited. Both fields at once is refused (RFC 9112 §6.3 calls it a
    /// likely smuggling attempt), as is a `Transfer-Encoding` that names no coding.
    pub(crate) fn delimited(&self) -> Result<Delimited, Http1Error> {
        match (self.transfer_encoding, self.length) {
            (true, Some(_)) => Err(Http1Error::BadRequest(
                "both Content-Length and Transfer-Encoding",
            )),
            (true, None) if !self.chunked => Err(Http1Error::BadRequest("empty Transfer-Encoding")),
            (true, None) => Ok(Delimited::Chunked),
            (false, Some(n)) => Ok(Delimited::Length(n)),
            (false, None) => Ok(Delimited::Unframed),
        }
    }
}

/// The `close` and `keep-alive` tokens of a `Connection` field.
#[inline]
pub(crate) fn connection_tokens(value: &[u8]) -> (bool, bool) {
    // The usual value is one token: no list to split.
    let whole = trim(value);
    if token_is(whole, b"keep-alive") {
        return (false, true);
    }
    if token_is(whole, b"close") {
        return (true, false);
    }
    let (mut close, mut keep_alive) = (false, false);
    for token in value.split(|&b| b == b',') {
        let token = trim(token);
        close |= token_is(token, b"close");
        keep_alive |= token_is(token, b"keep-alive");
    }
    (close, keep_alive)
}

/// Whether `bytes` is `lower` (letters, digits and `-`, lowercase) in any case.
///
/// ORing 0x20 lowercases the letters and leaves digits and `-` alone; the only other bytes it
/// could turn into one of those are control characters (CR into `-`), which the parser never
/// lets into a header name or value. One pass without an early exit, so it compiles to a few
/// wide operations instead of a branch per byte.
#[inline]
pub(crate) fn token_is(bytes: &[u8], lower: &[u8]) -> bool {
    bytes.len() == lower.len()
        && bytes
            .iter()
            .zip(lower)
            .fold(0u8, |diff, (&b, &l)| diff | ((b | 0x20) ^ l))
            == 0
}

/// `v` without spaces and tabs around it.
pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(fields: &[(&str, &str)]) -> Result<Delimited, Http1Error> {
        let mut f = FramingFields::default();
        for (name, value) in fields {
            match *name {
                "cl" => f.content_length(value.as_bytes())?,
                _ => f.transfer_encoding(value.as_bytes())?,
            }
        }
        f.delimited()
    }

    #[test]
    fn one_rule_for_lengths_and_codings() {
        assert_eq!(framing(&[("cl", " 42 ")]), Ok(Delimited::Length(42)));
        assert_eq!(framing(&[]), Ok(Delimited::Unframed));
        assert_eq!(framing(&[("te", "chunked")]), Ok(Delimited::Chunked));
        assert_eq!(
            framing(&[("te", ""), ("te", "Chunked")]),
            Ok(Delimited::Chunked)
        );
        let bad = |fields: &[(&str, &str)], why: &'static str| {
            assert_eq!(
                framing(fields),
                Err(Http1Error::BadRequest(why)),
                "{fields:?}"
            );
        };
        bad(&[("cl", "5"), ("cl", "5")], "repeated Content-Length");
        bad(&[("cl", "5"), ("cl", "6")], "repeated Content-Length");
        bad(&[("cl", "5, 5")], "invalid Content-Length");
        bad(&[("cl", "+5")], "invalid Content-Length");
        bad(&[("cl", "")], "invalid Content-Length");
        bad(
            &[("cl", "5"), ("te", "chunked")],
            "both Content-Length and Transfer-Encoding",
        );
        bad(
            &[("te", "chunked, chunked")],
            "chunked applied more than once",
        );
        bad(
            &[("te", "chunked"), ("te", "chunked")],
            "chunked applied more than once",
        );
        bad(
            &[("te", "chunked"), ("te", "gzip")],
            "chunked is not the final coding",
        );
        bad(&[("te", " ")], "empty Transfer-Encoding");
        assert_eq!(
            framing(&[("te", "gzip")]),
            Err(Http1Error::UnsupportedTransferCoding)
        );
    }

    #[test]
    fn token_is_ignores_case_and_nothing_else() {
        assert!(token_is(b"Content-Length", b"content-length"));
        assert!(token_is(b"TRANSFER-ENCODING", b"transfer-encoding"));
        assert!(token_is(b"100-Continue", b"100-continue"));
        assert!(!token_is(b"Content_Length", b"content-length"));
        assert!(!token_is(b"Content-Lengt", b"content-length"));
        assert!(!token_is(b"keep-alivf", b"keep-alive"));
        assert!(!token_is(b"close ", b"close"));
    }
}
