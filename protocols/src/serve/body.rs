//! Request bodies read from the connection while the handler runs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use coring::buf::PooledBuf;
use coring::net::{PooledReader, TcpStream};

use crate::http1::{Http1Error, Request, RequestDecoder};

/// The connection's input side, shared by the serve loop and the body stream it hands out.
pub(crate) struct ConnIo {
    pub(crate) stream: Rc<TcpStream>,
    /// Receives into the core's buffer pool (multishot): an idle connection holds no buffer.
    pub(crate) reader: RefCell<Option<PooledReader>>,
    pub(crate) state: RefCell<IoState>,
}

pub(crate) struct IoState {
    pub(crate) input: BytesMut,
    pub(crate) decoder: RequestDecoder,
    /// The client waits for `100 Continue` before sending the body.
    pub(crate) continue_owed: bool,
    /// How long one read of body bytes may take.
    pub(crate) head_timeout: Duration,
}

impl ConnIo {
    /// The next received bytes as they arrived (a pooled buffer); `None` at end of stream.
    pub(crate) async fn next_chunk(&self) -> coring::Result<Option<PooledBuf>> {
        // The reader is taken out while waiting so no borrow is held across the await.
        let Some(mut reader) = self.reader.borrow_mut().take() else {
            return Ok(None);
        };
        let r = reader.next().await;
        *self.reader.borrow_mut() = Some(reader);
        r
    }

    /// Reads more input and appends it to the input buffer (a copy: used for bodies and for
    /// heads that arrive in pieces); `Ok(false)` at end of stream.
    pub(crate) async fn fill(&self) -> coring::Result<bool> {
        match self.next_chunk().await? {
            Some(chunk) => {
                self.state.borrow_mut().input.extend_from_slice(&chunk);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body violates the framing rules or a limit (the connection will be closed).
    #[error("{0}")]
    Http(Http1Error),
    /// Reading failed or timed out.
    #[error("{0}")]
    Io(coring::Error),
}

/// A request body arriving on the connection: pull it chunk by chunk with
/// [`BodyStream::next`], or whole with [`BodyStream::read_all`]. Get it with
/// [`BodyStream::of`]; requests whose body was small enough to be read up front have none
/// (their body is in `Request::body`). What the handler leaves unread is discarded after it
/// returns.
pub struct BodyStream {
    io: Rc<ConnIo>,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream").finish_non_exhaustive()
    }
}

impl BodyStream {
    pub(crate) fn new(io: Rc<ConnIo>) -> Self {
        BodyStream { io }
    }

    /// The body stream of `req`, if its body streams.
    pub fn of(req: &Request) -> Option<&BodyStream> {
        req.extension()?.downcast_ref::<BodyStream>()
    }

    /// The next piece of the body; `None` once it is complete.
    pub async fn next(&self) -> Result<Option<Bytes>, BodyError> {
        loop {
            let owed = std::mem::take(&mut self.io.state.borrow_mut().continue_owed);
            if owed {
                let (r, _) = self
                    .io
                    .stream
                    .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                    .await;
                r.map_err(BodyError::Io)?;
            }
            let mut out = Vec::new();
            let done = {
                let mut st = self.io.state.borrow_mut();
                let IoState { input, decoder, .. } = &mut *st;
                decoder
                    .decode_body(input, &mut out)
                    .map_err(BodyError::Http)?
            };
            if !out.is_empty() {
                return Ok(Some(Bytes::from(out)));
            }
            if done {
                return Ok(None);
            }
            let limit = self.io.state.borrow().head_timeout;
            match coring::time::timeout(limit, self.io.fill()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    return Err(BodyError::Http(Http1Error::BadRequest("body cut short")));
                }
                Ok(Err(e)) => return Err(BodyError::Io(e)),
                Err(elapsed) => return Err(BodyError::Io(elapsed.into())),
            }
        }
    }

    /// The rest of the body, up to `limit` bytes (more is `BodyTooLarge`).
    pub async fn read_all(&self, limit: u64) -> Result<Bytes, BodyError> {
        let mut whole = Vec::new();
        while let Some(piece) = self.next().await? {
            if (whole.len() + piece.len()) as u64 > limit {
                return Err(BodyError::Http(Http1Error::BodyTooLarge));
            }
            whole.extend_from_slice(&piece);
        }
        Ok(Bytes::from(whole))
    }

    /// Reads and drops the rest of the body.
    pub(crate) async fn discard(&self) -> Result<(), BodyError> {
        while self.next().await?.is_some() {}
        Ok(())
    }
}
