//! Any [`framing`](crate::framing) codec driven on an engine stream: TCP, Unix (on Unix) and
//! TLS (feature `tls`) streams, through [`FrameIo`].
//!
//! ```no_run
//! # async fn run(stream: coring::net::TcpStream) -> Result<(), coring_protocols::framed::FramedError> {
//! use coring_protocols::framed::Framed;
//! use coring_protocols::framing::Lines;
//!
//! let mut conn = Framed::new(stream, Lines::new(4096).crlf());
//! conn.send("PING").await?;
//! while let Some(line) = conn.next().await? {
//!     println!("{}", String::from_utf8_lossy(&line));
//! }
//! # Ok(()) }
//! ```

use bytes::BytesMut;

use crate::framing::{Decode, Decoder, Encoder, FrameError};

/// Bytes read past what was asked for, per read: the receive buffer grows by this much.
pub const READ_BYTES: usize = 16 * 1024;

/// Why a framed stream stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramedError {
    /// The bytes broke the framing (the connection should be closed).
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] coring::Error),
    /// TLS failed.
    #[cfg(feature = "tls")]
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A stream frames can be read from and written to.
pub trait FrameIo {
    /// Reads some bytes into the spare capacity of `buf`; `Ok(0)` at the end of the stream.
    fn read_into(
        &self,
        buf: BytesMut,
    ) -> impl Future<Output = (Result<usize, FramedError>, BytesMut)>;
    /// Writes all of `data`, handing the buffer back for reuse.
    fn write_all(&self, data: Vec<u8>) -> impl Future<Output = (Result<(), FramedError>, Vec<u8>)>;
    /// Ends the writing side: the peer reads the end of the stream after what was written
    /// (TLS sends `close_notify` first).
    fn shutdown_write(&self) -> impl Future<Output = Result<(), FramedError>>;
}

impl FrameIo for coring::net::TcpStream {
    async fn read_into(&self, buf: BytesMut) -> (Result<usize, FramedError>, BytesMut) {
        let (r, buf) = self.read(buf).await;
        (r.map_err(FramedError::Io), buf)
    }

    async fn write_all(&self, data: Vec<u8>) -> (Result<(), FramedError>, Vec<u8>) {
        let (r, data) = coring::net::TcpStream::write_all(self, data).await;
        (r.map_err(FramedError::Io), data)
    }

    async fn shutdown_write(&self) -> Result<(), FramedError> {
        Ok(self.shutdown(std::net::Shutdown::Write).await?)
    }
}

#[cfg(unix)]
impl FrameIo for coring::net::UnixStream {
    async fn read_into(&self, buf: BytesMut) -> (Result<usize, FramedError>, BytesMut) {
        let (r, buf) = self.read(buf).await;
        (r.map_err(FramedError::Io), buf)
    }

    async fn write_all(&self, data: Vec<u8>) -> (Result<(), FramedError>, Vec<u8>) {
        let (r, data) = coring::net::UnixStream::write_all(self, data).await;
        (r.map_err(FramedError::Io), data)
    }

    async fn shutdown_write(&self) -> Result<(), FramedError> {
        Ok(self.shutdown(std::net::Shutdown::Write).await?)
    }
}

#[cfg(feature = "tls")]
impl FrameIo for crate::tls::TlsStream {
    async fn read_into(&self, mut buf: BytesMut) -> (Result<usize, FramedError>, BytesMut) {
        // rustls hands out plaintext into a Vec of ours: one copy into the frame buffer.
        let (r, plain) = self.read(Vec::with_capacity(READ_BYTES)).await;
        let r = r.inspect(|&n| buf.extend_from_slice(&plain[..n]));
        (r.map_err(FramedError::Tls), buf)
    }

    async fn write_all(&self, data: Vec<u8>) -> (Result<(), FramedError>, Vec<u8>) {
        let r = crate::tls::TlsStream::write_all(self, &data).await;
        (r.map_err(FramedError::Tls), data)
    }

    async fn shutdown_write(&self) -> Result<(), FramedError> {
        Ok(self.shutdown().await?)
    }
}

/// One stream shared by tasks: a reader and a writer each hold an `Rc` of it.
impl<S: FrameIo> FrameIo for std::rc::Rc<S> {
    fn read_into(
        &self,
        buf: bytes::BytesMut,
    ) -> impl Future<Output = (Result<usize, FramedError>, bytes::BytesMut)> {
        (**self).read_into(buf)
    }

    fn write_all(&self, data: Vec<u8>) -> impl Future<Output = (Result<(), FramedError>, Vec<u8>)> {
        (**self).write_all(data)
    }

    fn shutdown_write(&self) -> impl Future<Output = Result<(), FramedError>> {
        (**self).shutdown_write()
    }
}

/// A stream read and written as frames of codec `C`.
#[derive(Debug)]
pub struct Framed<S, C> {
    io: S,
    codec: C,
    /// Received bytes not yet framed.
    received: BytesMut,
    /// Frames encoded and not yet written.
    outgoing: Vec<u8>,
    eof: bool,
}

impl<S: FrameIo, C> Framed<S, C> {
    /// Frames `io` with `codec`.
    pub fn new(io: S, codec: C) -> Framed<S, C> {
        Framed {
            io,
            codec,
            received: BytesMut::new(),
            outgoing: Vec::new(),
            eof: false,
        }
    }

    /// The next frame; `None` once the stream ended cleanly between frames. A stream that
    /// ends inside one is [`FrameError::Truncated`].
    pub async fn next(&mut self) -> Result<Option<C::Item>, FramedError>
    where
        C: Decoder,
    {
        loop {
            if self.eof {
                return Ok(self.codec.decode_eof(&mut self.received)?);
            }
            if let Decode::Frame(item) = self.codec.decode(&mut self.received)? {
                return Ok(Some(item));
            }
            self.received.reserve(READ_BYTES);
            let (r, back) = self.io.read_into(std::mem::take(&mut self.received)).await;
            self.received = back;
            if r? == 0 {
                self.eof = true;
            }
        }
    }

    /// Encodes `item` and writes it (with any frames [`Framed::feed`] buffered before it).
    pub async fn send<I: ?Sized>(&mut self, item: &I) -> Result<(), FramedError>
    where
        C: Encoder<I>,
    {
        self.feed(item)?;
        self.flush().await
    }

    /// Encodes `item` into the outgoing buffer without writing: several frames then go out in
    /// one write with [`Framed::flush`].
    pub fn feed<I: ?Sized>(&mut self, item: &I) -> Result<(), FramedError>
    where
        C: Encoder<I>,
    {
        Ok(self.codec.encode(item, &mut self.outgoing)?)
    }

    /// Writes the frames fed so far.
    pub async fn flush(&mut self) -> Result<(), FramedError> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let (r, mut back) = self.io.write_all(std::mem::take(&mut self.outgoing)).await;
        back.clear();
        self.outgoing = back;
        r
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The codec.
    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }

    /// The stream, and the bytes received past the last frame taken.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.received)
    }
}
