//! Typed frames over serde (feature `serde`): a [`Serde`] codec turns each frame of an inner
//! [`framing`](crate::framing) into a value of `T` and back, in [`Json`] or in [`Postcard`]
//! (a compact binary format: varints, no field names).
//!
//! The size limit is the inner framing's: a [`LengthPrefixed`] frame over its maximum is refused
//! from its prefix, before its bytes are buffered, so no value is decoded from more than that.
//! What decoding itself can cost is bounded by the frame: both formats read sequence lengths
//! from the bytes and never reserve more than the bytes can fill, and JSON nests at most 128
//! deep.
//!
//! ```
//! use bytes::BytesMut;
//! use coring_protocols::framing::{Decode, Decoder, Encoder, LengthPrefixed, Prefix};
//! use coring_protocols::serialize::Serde;
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Move { x: i32, y: i32 }
//!
//! let mut codec = Serde::<Move, _>::postcard(LengthPrefixed::new(Prefix::Varint, 1024));
//! let mut wire = Vec::new();
//! codec.encode(&Move { x: -1, y: 300 }, &mut wire).unwrap();
//! assert_eq!(wire.len(), 1 + 3); // a length byte, then -1 and 300 as zigzag varints
//! let mut received = BytesMut::from(&wire[..]);
//! assert_eq!(codec.decode(&mut received).unwrap(), Decode::Frame(Move { x: -1, y: 300 }));
//! ```

use std::fmt;
use std::marker::PhantomData;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::framing::{Decode, Decoder, Encoder, FrameError, LengthPrefixed, Lines, Prefix};

/// A serde data format for frames.
pub trait Format: Copy + fmt::Debug + Default {
    /// Its name, for errors.
    const NAME: &'static str;

    /// Appends `value` in this format to `dst`.
    fn to_writer<T: Serialize + ?Sized>(value: &T, dst: &mut Vec<u8>) -> Result<(), String>;

    /// A `T` read from all of `src`: bytes left after it are an error.
    fn from_slice<T: DeserializeOwned>(src: &[u8]) -> Result<T, String>;
}

/// JSON (serde_json): text a person or another language reads without a schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Format for Json {
    const NAME: &'static str = "JSON";

    fn to_writer<T: Serialize + ?Sized>(value: &T, dst: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(dst, value).map_err(|e| e.to_string())
    }

    fn from_slice<T: DeserializeOwned>(src: &[u8]) -> Result<T, String> {
        serde_json::from_slice(src).map_err(|e| e.to_string())
    }
}

/// Postcard: compact and fast, with varint integers and no field names; both ends need the
/// same types (a field added is a breaking change).
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl Format for Postcard {
    const NAME: &'static str = "postcard";

    fn to_writer<T: Serialize + ?Sized>(value: &T, dst: &mut Vec<u8>) -> Result<(), String> {
        postcard::to_io(value, dst)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn from_slice<T: DeserializeOwned>(src: &[u8]) -> Result<T, String> {
        match postcard::take_from_bytes(src) {
            Ok((value, [])) => Ok(value),
            Ok((_, rest)) => Err(format!("{} bytes after the value", rest.len())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Why a frame's bytes are not a value of the expected type, or a value cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {reason}")]
pub struct FormatError {
    /// The format's name.
    pub format: &'static str,
    /// What its decoder or encoder said.
    pub reason: String,
}

/// Why a typed frame could not be taken or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerdeError {
    /// The framing broke: the connection should be closed.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// A whole frame came whose bytes are not a `T` (the frame is consumed: the stream stays
    /// framed, and a protocol may answer and go on), or a value could not be encoded.
    #[error("{0}")]
    Format(#[from] FormatError),
}

/// Values of `T` in format `F`, one per frame of `Fr`.
pub struct Serde<T, F, Fr = LengthPrefixed> {
    frames: Fr,
    scratch: Vec<u8>,
    _format: PhantomData<F>,
    _item: PhantomData<fn(T) -> T>,
}

impl<T, F, Fr: fmt::Debug> fmt::Debug for Serde<T, F, Fr> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serde")
            .field("frames", &self.frames)
            .field("format", &std::any::type_name::<F>())
            .finish_non_exhaustive()
    }
}

impl<T, F, Fr: Clone> Clone for Serde<T, F, Fr> {
    fn clone(&self) -> Self {
        Serde {
            frames: self.frames.clone(),
            scratch: Vec::new(),
            _format: PhantomData,
            _item: PhantomData,
        }
    }
}

impl<T, Fr> Serde<T, Json, Fr> {
    /// JSON values, one per frame of `frames`. Over [`Lines`] this is newline-delimited JSON
    /// (compact JSON holds no line break).
    pub fn json(frames: Fr) -> Self {
        Serde::new(frames)
    }
}

impl<T, Fr> Serde<T, Postcard, Fr> {
    /// Postcard values, one per frame of `frames` (a length-prefixed framing: postcard's bytes
    /// may hold any byte, line breaks too).
    pub fn postcard(frames: Fr) -> Self {
        Serde::new(frames)
    }
}

impl<T, F, Fr> Serde<T, F, Fr> {
    /// Values in format `F` over `frames`.
    pub fn new(frames: Fr) -> Self {
        Serde {
            frames,
            scratch: Vec::new(),
            _format: PhantomData,
            _item: PhantomData,
        }
    }

    /// The inner framing.
    pub fn frames(&self) -> &Fr {
        &self.frames
    }
}

impl<T> Serde<T, Json, Lines> {
    /// Newline-delimited JSON, lines of at most `max` bytes.
    pub fn ndjson(max: usize) -> Self {
        Serde::new(Lines::new(max))
    }
}

impl<T, F> Serde<T, F, LengthPrefixed> {
    /// Values after a big-endian `u32` length, frames of at most `max` bytes.
    pub fn u32_prefixed(max: usize) -> Self {
        Serde::new(LengthPrefixed::new(Prefix::U32, max))
    }
}

/// `bytes` decoded as a `T` in format `F`.
pub fn decode_frame<T: DeserializeOwned, F: Format>(bytes: &[u8]) -> Result<T, FormatError> {
    F::from_slice(bytes).map_err(|reason| FormatError {
        format: F::NAME,
        reason,
    })
}

impl<T: DeserializeOwned, F: Format, Fr: Decoder<Item = Bytes>> Serde<T, F, Fr> {
    /// The next value, or a [`SerdeError::Format`] for a whole frame that is not one (taken
    /// off the buffer, so the next call goes on with the frame after it).
    pub fn decode_value(&mut self, src: &mut BytesMut) -> Result<Decode<T>, SerdeError> {
        match self.frames.decode(src)? {
            Decode::Frame(bytes) => Ok(Decode::Frame(decode_frame::<T, F>(&bytes)?)),
            Decode::Partial => Ok(Decode::Partial),
        }
    }
}

impl<T: Serialize, F: Format, Fr: Encoder<[u8]>> Serde<T, F, Fr> {
    /// Appends `value`, framed, to `dst`; a value the format cannot write is a
    /// [`SerdeError::Format`] and `dst` is left as it was.
    pub fn encode_value(&mut self, value: &T, dst: &mut Vec<u8>) -> Result<(), SerdeError> {
        self.scratch.clear();
        F::to_writer(value, &mut self.scratch).map_err(|reason| FormatError {
            format: F::NAME,
            reason,
        })?;
        self.frames.encode(&self.scratch[..], dst)?;
        if self.scratch.capacity() > 64 * 1024 {
            // A large value once does not pin its buffer for the connection's life.
            self.scratch = Vec::new();
        }
        Ok(())
    }
}

/// As a [`Decoder`], a frame that is not a `T` ends the stream with [`FrameError::Payload`]:
/// use [`Serde::decode_value`] to go on past one.
impl<T: DeserializeOwned, F: Format, Fr: Decoder<Item = Bytes>> Decoder for Serde<T, F, Fr> {
    type Item = T;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Decode<T>, FrameError> {
        self.decode_value(src).map_err(SerdeError::into_frame_error)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<T>, FrameError> {
        match self.frames.decode_eof(src)? {
            Some(bytes) => Ok(Some(
                decode_frame::<T, F>(&bytes).map_err(|e| FrameError::Payload(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }
}

impl<T: Serialize, F: Format, Fr: Encoder<[u8]>> Encoder<T> for Serde<T, F, Fr> {
    fn encode(&mut self, value: &T, dst: &mut Vec<u8>) -> Result<(), FrameError> {
        self.encode_value(value, dst)
            .map_err(SerdeError::into_frame_error)
    }
}

impl SerdeError {
    fn into_frame_error(self) -> FrameError {
        match self {
            SerdeError::Frame(e) => e,
            SerdeError::Format(e) => FrameError::Payload(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Event {
        Joined { name: String, room: u32 },
        Moved(i32, i32),
        Left,
        Chat(Vec<u8>),
    }

    fn events() -> Vec<Event> {
        vec![
            Event::Joined {
                name: "ada".into(),
                room: 7,
            },
            Event::Moved(-3, 1 << 20),
            Event::Left,
            Event::Chat(vec![b'\n'; 300]),
        ]
    }

    fn round_trip<F: Format, Fr: Decoder<Item = Bytes> + Encoder<[u8]> + Clone>(frames: Fr) {
        let mut codec = Serde::<Event, F, Fr>::new(frames);
        let mut wire = Vec::new();
        for e in events() {
            codec.encode(&e, &mut wire).unwrap();
        }
        crate::framing::tests::every_split(&codec, &wire, &events());
    }

    #[test]
    fn values_round_trip_over_any_split() {
        round_trip::<Json, _>(LengthPrefixed::new(Prefix::U32, 4096));
        round_trip::<Json, _>(Lines::new(4096));
        round_trip::<Postcard, _>(LengthPrefixed::new(Prefix::Varint, 4096));
    }

    #[test]
    fn a_frame_that_is_not_a_value_is_a_typed_error_and_the_next_one_decodes() {
        let mut frames = LengthPrefixed::new(Prefix::U16, 64);
        let mut wire = Vec::new();
        frames.encode(b"{\"Moved\":[1]}", &mut wire).unwrap(); // one field short
        frames.encode(b"\"Left\"", &mut wire).unwrap();
        let mut codec = Serde::<Event, Json>::new(frames);
        let mut src = BytesMut::from(&wire[..]);
        match codec.decode_value(&mut src) {
            Err(SerdeError::Format(e)) => assert_eq!(e.format, "JSON"),
            other => panic!("{other:?}"),
        }
        assert_eq!(codec.decode_value(&mut src), Ok(Decode::Frame(Event::Left)));

        // Postcard: trailing bytes and an unknown variant are refused.
        let mut frames = LengthPrefixed::new(Prefix::U16, 64);
        let mut wire = Vec::new();
        frames.encode(&[2u8, 0], &mut wire).unwrap(); // Left, then a stray byte
        frames.encode(&[9u8], &mut wire).unwrap(); // no ninth variant
        let mut codec = Serde::<Event, Postcard>::new(frames);
        let mut src = BytesMut::from(&wire[..]);
        assert!(matches!(
            codec.decode_value(&mut src),
            Err(SerdeError::Format(_))
        ));
        assert!(matches!(
            codec.decode_value(&mut src),
            Err(SerdeError::Format(_))
        ));
        assert!(src.is_empty());
    }

    #[test]
    fn the_size_limit_holds_before_anything_is_decoded() {
        // A postcard Vec announcing four billion elements, in a frame within the limit: the
        // decoder fails on the bytes that are not there, not on an allocation.
        let mut frames = LengthPrefixed::new(Prefix::U32, 64);
        let mut wire = Vec::new();
        frames
            .encode(&[3u8, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3], &mut wire)
            .unwrap();
        let mut codec = Serde::<Event, Postcard>::new(frames);
        assert!(matches!(
            codec.decode_value(&mut BytesMut::from(&wire[..])),
            Err(SerdeError::Format(_))
        ));
        // A frame over the limit is refused from its prefix alone.
        let mut codec = Serde::<Event, Json>::u32_prefixed(64);
        let mut src = BytesMut::from(&[0, 0, 1, 0][..]);
        assert_eq!(
            codec.decode_value(&mut src),
            Err(SerdeError::Frame(FrameError::TooLong { len: 256, max: 64 }))
        );
        // And a value too large to send is refused, leaving the output as it was.
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            codec.encode_value(&Event::Chat(vec![0; 100]), &mut out),
            Err(SerdeError::Frame(FrameError::TooLong { .. }))
        ));
        assert_eq!(out, [1, 2, 3]);
        // JSON nested past serde_json's recursion limit is an error, not a stack overflow.
        let deep = "[".repeat(10_000);
        assert!(decode_frame::<serde_json::Value, Json>(deep.as_bytes()).is_err());
    }
}
