//! Request bodies read from the connection while the handler runs.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use coring::time;

use crate::http1::{Http1Error, Request, ServerConn, Status};
use crate::transport::{Chunk, Reader, Transport};

/// A connection's socket and state, shared by the serve loop and the body stream it hands
/// out.
pub(crate) struct ConnIo {
    pub(crate) stream: Rc<Transport>,
    /// Receives into the core's buffer pool (multishot; plaintext pieces over TLS): an idle
    /// connection holds no buffer.
    pub(crate) reader: RefCell<Option<Reader>>,
    pub(crate) conn: RefCell<ServerConn>,
    /// The client's address, where the server was asked to find it (or a PROXY header gave
    /// it): every request carries it.
    pub(crate) client: std::cell::Cell<Option<std::net::SocketAddr>>,
    /// The listener's admission on this core, for the request bucket.
    pub(crate) gate: Option<Rc<super::Gate>>,
    /// Told of connection-level failures.
    pub(crate) hook: Option<super::ErrorHook>,
    /// Records what the connection reads and writes, when the server captures.
    pub(crate) tap: RefCell<Option<crate::capture::Tap>>,
}

impl ConnIo {
    /// Records `bytes` about to be written, when the server captures.
    pub(crate) fn tap_sent(&self, bytes: &[u8]) {
        if let Some(tap) = self.tap.borrow_mut().as_mut() {
            tap.sent(bytes);
        }
    }

    /// The next received bytes as they arrived (a pooled buffer); `None` at end of stream.
    pub(crate) async fn next_chunk(&self) -> coring::Result<Option<Chunk>> {
        // The reader is taken out while waiting so no borrow is held across the await.
        let Some(mut reader) = self.reader.borrow_mut().take() else {
            return Ok(None);
        };
        let r = reader.next().await;
        *self.reader.borrow_mut() = Some(reader);
        if let (Ok(Some(chunk)), Some(tap)) = (&r, self.tap.borrow_mut().as_mut()) {
            tap.received(chunk.as_ref());
        }
        r
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
/// (their body is in `Request::body`). What the handler leaves unread is dropped by the
/// connection as it arrives.
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
        let io = &self.io;
        loop {
            let step = io.conn.borrow_mut().poll_body();
            if let Status::Complete(piece) = step.map_err(BodyError::Http)? {
                return Ok(piece);
            }
            // A client that announced `Expect: 100-continue` is told to go on.
            let mut owed = Vec::new();
            io.conn.borrow_mut().poll_transmit(&mut owed);
            if !owed.is_empty() {
                io.tap_sent(&owed);
                let (r, _) = io.stream.write_all(owed).await;
                r.map_err(BodyError::Io)?;
            }
            let due = io.conn.borrow().poll_timeout();
            let got = match due {
                Some(due) => time::timeout_at(due, io.next_chunk()).await,
                None => Ok(io.next_chunk().await),
            };
            let now = time::now();
            match got {
                Ok(Ok(Some(buf))) => io.conn.borrow_mut().handle_input(buf.as_ref(), now),
                Ok(Ok(None)) => io.conn.borrow_mut().handle_eof(now),
                Ok(Err(e)) => return Err(BodyError::Io(e)),
                Err(elapsed) => {
                    io.conn.borrow_mut().handle_timeout(now);
                    return Err(BodyError::Io(elapsed.into()));
                }
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
