//! Request/response RPC over length-prefixed frames (feature `serde`): many calls in flight on
//! one connection, answered in any order, each with its own deadline, cancellable, and errors
//! that come back as typed values.
//!
//! The wire is sans-IO and small enough for another language to speak. Each frame is a big-endian
//! `u32` length, then one message: a [`Header`] (`id`, `kind`, `timeout_ms`) and a body.
//!
//! | kind | sent by | body |
//! |---|---|---|
//! | `call` | client | the request; `timeout_ms`: how long the client waits (or `null`) |
//! | `reply` | server | the answer to call `id` |
//! | `fail` | server | a [`Fault`]: the handler's error, or why the call was not run |
//! | `cancel` | client | none: the client gave up on call `id` and wants no answer |
//!
//! In [`Json`] a message is one object,
//! `{"id":7,"kind":"call","timeout_ms":250,"body":{...}}`; in
//! [`Postcard`] it is the postcard header followed by the postcard
//! body. Ids are the client's to choose; a server answers each call once (a reply or a fault)
//! unless it was cancelled first.
//!
//! The engine side (feature `engine`): [`Client`] and [`serve`].

#[cfg(feature = "engine")]
mod engine;

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
pub use engine::{Client, Config, RpcError, ServeError, ServeStats, serve};

use crate::framing::FrameError;
use crate::serialize::{Format, FormatError, Json, Postcard};

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A request.
    Call,
    /// The answer to a call.
    Reply,
    /// A call that failed: its body is a [`Fault`].
    Fail,
    /// The client no longer wants the answer to a call.
    Cancel,
}

/// The part of a message read before its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The call this message belongs to.
    pub id: u64,
    /// What the message is.
    pub kind: Kind,
    /// On a call, how long the client waits for its answer, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Why a call has no answer of the expected type: sent in a `fail` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault<E> {
    /// The handler ran and returned this error.
    Handler(E),
    /// The call's deadline passed while its handler ran; the handler was stopped.
    DeadlineExceeded,
    /// The server had as many calls in flight on this connection as it allows.
    Overloaded,
    /// A call with this id is already in flight on this connection.
    DuplicateId,
    /// The request's body is not the server's request type.
    BadRequest(String),
    /// The handler panicked.
    Panicked,
    /// The handler answered, but its answer could not be sent (over the frame limit, or the
    /// format could not write it).
    BadAnswer(String),
}

impl<E: fmt::Display> fmt::Display for Fault<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Handler(e) => write!(f, "{e}"),
            Fault::DeadlineExceeded => f.write_str("the call's deadline passed on the server"),
            Fault::Overloaded => f.write_str("the server has too many calls in flight"),
            Fault::DuplicateId => f.write_str("a call with this id is already in flight"),
            Fault::BadRequest(why) => write!(f, "the server could not read the request: {why}"),
            Fault::Panicked => f.write_str("the handler panicked"),
            Fault::BadAnswer(why) => write!(f, "the answer could not be sent: {why}"),
        }
    }
}

/// A format messages can be written in: how a header and a body share a frame.
pub trait RpcFormat: Format {
    /// Appends a message to `dst`; `body` is `None` for a cancel.
    fn write_message<B: Serialize + ?Sized>(
        header: &Header,
        body: Option<&B>,
        dst: &mut Vec<u8>,
    ) -> Result<(), String>;

    /// The header of `message`, and where in it the body is (`None`: it has none).
    fn read_header(message: &[u8]) -> Result<(Header, Option<Range<usize>>), String>;

    /// A body of type `B` from `message[range]`; a message without one reads as `B`'s unit
    /// form (JSON's `null`, postcard's no bytes).
    fn read_body<B: DeserializeOwned>(
        message: &[u8],
        range: Option<Range<usize>>,
    ) -> Result<B, FormatError> {
        let bytes = match range {
            Some(range) => &message[range],
            None => Self::UNIT,
        };
        crate::serialize::decode_frame::<B, Self>(bytes)
    }

    /// A body-less value in this format.
    const UNIT: &'static [u8];
}

impl RpcFormat for Json {
    const UNIT: &'static [u8] = b"null";

    fn write_message<B: Serialize + ?Sized>(
        header: &Header,
        body: Option<&B>,
        dst: &mut Vec<u8>,
    ) -> Result<(), String> {
        #[derive(Serialize)]
        struct Message<'a, B: ?Sized> {
            id: u64,
            kind: Kind,
            timeout_ms: Option<u64>,
            body: Option<&'a B>,
        }
        let message = Message {
            id: header.id,
            kind: header.kind,
            timeout_ms: header.timeout_ms,
            body,
        };
        serde_json::to_writer(dst, &message).map_err(|e| e.to_string())
    }

    fn read_header(message: &[u8]) -> Result<(Header, Option<Range<usize>>), String> {
        #[derive(Deserialize)]
        struct Message<'a> {
            id: u64,
            kind: Kind,
            #[serde(default)]
            timeout_ms: Option<u64>,
            #[serde(default, borrow)]
            body: Option<&'a serde_json::value::RawValue>,
        }
        let m: Message<'_> = serde_json::from_slice(message).map_err(|e| e.to_string())?;
        let body = m.body.map(|raw| {
            // The raw body is a slice of `message`: its place in it, by address.
            let start = raw.get().as_ptr() as usize - message.as_ptr() as usize;
            start..start + raw.get().len()
        });
        let header = Header {
            id: m.id,
            kind: m.kind,
            timeout_ms: m.timeout_ms,
        };
        Ok((header, body))
    }
}

impl RpcFormat for Postcard {
    const UNIT: &'static [u8] = b"";

    fn write_message<B: Serialize + ?Sized>(
        header: &Header,
        body: Option<&B>,
        dst: &mut Vec<u8>,
    ) -> Result<(), String> {
        Postcard::to_writer(header, dst)?;
        match body {
            Some(body) => Postcard::to_writer(body, dst),
            None => Ok(()),
        }
    }

    fn read_header(message: &[u8]) -> Result<(Header, Option<Range<usize>>), String> {
        let (header, rest) =
            postcard::take_from_bytes::<Header>(message).map_err(|e| e.to_string())?;
        let start = message.len() - rest.len();
        Ok((header, Some(start..message.len())))
    }
}

/// Appends one message as a frame (a `u32` length, then the message) to `dst`; a message over
/// `max` bytes, or one the format cannot write, leaves `dst` as it was.
pub fn write_frame<F: RpcFormat, B: Serialize + ?Sized>(
    header: &Header,
    body: Option<&B>,
    max: usize,
    dst: &mut Vec<u8>,
) -> Result<(), WriteError> {
    let start = dst.len();
    dst.extend_from_slice(&[0; 4]);
    if let Err(reason) = F::write_message(header, body, dst) {
        dst.truncate(start);
        return Err(WriteError::Format(FormatError {
            format: F::NAME,
            reason,
        }));
    }
    let len = dst.len() - start - 4;
    match u32::try_from(len) {
        Ok(n) if len <= max => {
            dst[start..start + 4].copy_from_slice(&n.to_be_bytes());
            Ok(())
        }
        _ => {
            dst.truncate(start);
            Err(WriteError::Frame(FrameError::TooLong { len, max }))
        }
    }
}

/// Why a message could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Over the frame limit.
    #[error("{0}")]
    Frame(FrameError),
    /// The format could not write the body.
    #[error("{0}")]
    Format(FormatError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<F: RpcFormat>(header: Header, body: Option<&Vec<u32>>) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame::<F, _>(&header, body, 1024, &mut out).unwrap();
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        out.split_off(4)
    }

    fn headers_and_bodies_round_trip<F: RpcFormat>() {
        let call = Header {
            id: u64::MAX,
            kind: Kind::Call,
            timeout_ms: Some(250),
        };
        let m = message::<F>(call, Some(&vec![1, 2, 3]));
        let (header, body) = F::read_header(&m).unwrap();
        assert_eq!(header, call);
        assert_eq!(
            F::read_body::<Vec<u32>>(&m, body).unwrap(),
            vec![1, 2, 3],
            "{}",
            F::NAME
        );
        let cancel = Header {
            id: 9,
            kind: Kind::Cancel,
            timeout_ms: None,
        };
        let m = message::<F>(cancel, None);
        let (header, body) = F::read_header(&m).unwrap();
        assert_eq!(header, cancel);
        F::read_body::<()>(&m, body).unwrap();

        let fault: Fault<String> = Fault::Handler("no such room".into());
        let mut m = Vec::new();
        F::write_message(&header, Some(&fault), &mut m).unwrap();
        let (_, body) = F::read_header(&m).unwrap();
        assert_eq!(F::read_body::<Fault<String>>(&m, body).unwrap(), fault);
    }

    #[test]
    fn messages_round_trip_in_both_formats() {
        headers_and_bodies_round_trip::<Json>();
        headers_and_bodies_round_trip::<Postcard>();
    }

    #[test]
    fn json_messages_read_as_another_language_writes_them() {
        let m = br#"{"kind":"call","body":{"Handler":"x"},"id":3}"#;
        let (header, body) = Json::read_header(m).unwrap();
        assert_eq!(header.id, 3);
        assert_eq!(header.timeout_ms, None);
        assert_eq!(
            Json::read_body::<Fault<String>>(m, body).unwrap(),
            Fault::Handler("x".into())
        );
        assert!(Json::read_header(br#"{"id":-1,"kind":"call"}"#).is_err());
        assert!(Json::read_header(br#"{"id":1,"kind":"shout"}"#).is_err());
        let m = br#"{"id":1,"kind":"reply"}"#;
        let (_, body) = Json::read_header(m).unwrap();
        Json::read_body::<()>(m, body).unwrap();
    }

    #[test]
    fn a_message_over_the_limit_is_refused_and_the_output_kept() {
        let mut out = vec![7];
        let call = Header {
            id: 1,
            kind: Kind::Call,
            timeout_ms: None,
        };
        assert!(matches!(
            write_frame::<Postcard, _>(&call, Some(&vec![0u8; 100]), 64, &mut out),
            Err(WriteError::Frame(FrameError::TooLong { .. }))
        ));
        assert_eq!(out, [7]);
    }
}
