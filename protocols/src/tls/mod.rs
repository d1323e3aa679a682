//! TLS on engine streams: rustls in user space, over pooled reads.
//!
//! [`TlsAcceptor::accept`] and [`TlsConnector::connect`] run the handshake on a
//! [`TcpStream`] under one deadline and give a [`TlsStream`]: [`TlsStream::recv`] hands out
//! plaintext as it is decrypted, [`TlsStream::read`] fills a caller's buffer,
//! [`TlsStream::write_all`] encrypts and writes, [`TlsStream::shutdown`] sends `close_notify`
//! and then the FIN. Received records arrive in the core's pooled buffers (an idle connection
//! holds no receive buffer of its own); rustls keeps what a record cut between receives left.
//!
//! A peer that ends the stream without `close_notify` is reported as
//! [`TlsError::Truncated`]: the plaintext so far may be cut short. Protocol errors (garbage
//! before a ClientHello, a bad record, a renegotiation attempt) send the alert rustls chose,
//! then fail with [`TlsError::Tls`].
//!
//! Configurations are rustls' own (`rustls::ServerConfig`, `rustls::ClientConfig`), re-exported
//! as [`rustls`]; the crypto provider is ring.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{Read, Write};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use coring::net::{PooledReader, TcpStream};
use coring::time;

use crate::serve::out_buffer;

pub use rustls;
use rustls::pki_types::ServerName;

/// How long a handshake may take unless set.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Plaintext taken from rustls per `recv` at most (one full record).
const READ_CHUNK: usize = 16 * 1024;

/// Why a TLS connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] coring::Error),
    /// The TLS protocol failed (the peer was sent the alert that says why, where one applies).
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The handshake did not finish within its deadline.
    #[error("tls handshake timed out")]
    HandshakeTimeout,
    /// The peer closed the stream during the handshake.
    #[error("the peer closed the connection during the tls handshake")]
    HandshakeEof,
    /// The peer closed the stream without `close_notify`: what came may be cut short.
    #[error("the peer closed the connection without close_notify")]
    Truncated,
    /// A write after our `close_notify` ([`TlsStream::shutdown`]).
    #[error("the tls connection is shut for writing")]
    Closed,
}

/// Accepts TLS connections with one server configuration.
#[derive(Clone, Debug)]
pub struct TlsAcceptor {
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
}

impl TlsAcceptor {
    /// An acceptor for `config` (certificates, ALPN, session storage: rustls' own).
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
        TlsAcceptor {
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// How long a client has to finish its handshake.
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsAcceptor {
        self.handshake_timeout = timeout;
        self
    }

    /// Runs the server side of the handshake on `stream`.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream, TlsError> {
        let conn = rustls::ServerConnection::new(Arc::clone(&self.config))?;
        // Boxed: the handshake's state is large and short-lived, and a task that awaited it
        // in place would carry its size for the connection's whole life.
        Box::pin(TlsStream::handshake(
            stream,
            conn.into(),
            self.handshake_timeout,
        ))
        .await
    }
}

/// Dials TLS over connected streams with one client configuration.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    handshake_timeout: Duration,
}

impl TlsConnector {
    /// A connector for `config` (roots, ALPN, session resumption: rustls' own).
    pub fn new(config: Arc<rustls::ClientConfig>) -> TlsConnector {
        TlsConnector {
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// How long the server has to finish the handshake.
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsConnector {
        self.handshake_timeout = timeout;
        self
    }

    /// Runs the client side of the handshake on `stream`, checking the server's certificate
    /// for `name` (also sent as SNI when it is a DNS name).
    pub async fn connect(
        &self,
        name: ServerName<'static>,
        stream: TcpStream,
    ) -> Result<TlsStream, TlsError> {
        let conn = rustls::ClientConnection::new(Arc::clone(&self.config), name)?;
        // Boxed, as in `TlsAcceptor::accept`.
        Box::pin(TlsStream::handshake(
            stream,
            conn.into(),
            self.handshake_timeout,
        ))
        .await
    }
}

/// A TLS connection over a [`TcpStream`], on its core. Reading and writing may go on in two
/// tasks at once; writes from several tasks go out whole, one after another.
pub struct TlsStream {
    stream: TcpStream,
    reader: RefCell<PooledReader>,
    conn: RefCell<rustls::Connection>,
    /// Received bytes not yet given to rustls: it takes more only once the plaintext it holds
    /// has been read.
    pending: RefCell<Option<coring::buf::PooledBuf>>,
    /// Plaintext rustls holds, ready to read.
    available: Cell<usize>,
    /// The peer's side is over (close_notify or end of stream seen by rustls).
    ended: Cell<bool>,
    /// Our close_notify is sent: nothing more is written.
    shut: Cell<bool>,
    /// The protocol failed: every later read and write says so.
    failure: RefCell<Option<rustls::Error>>,
    /// A task is writing TLS bytes to the socket; the others wait their turn.
    writing: Cell<bool>,
    write_waiters: RefCell<Vec<Waker>>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("alpn", &self.alpn_protocol())
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    async fn handshake(
        stream: TcpStream,
        conn: rustls::Connection,
        timeout: Duration,
    ) -> Result<TlsStream, TlsError> {
        let reader = stream.pooled();
        let tls = TlsStream {
            stream,
            reader: RefCell::new(reader),
            conn: RefCell::new(conn),
            pending: RefCell::new(None),
            available: Cell::new(0),
            ended: Cell::new(false),
            failure: RefCell::new(None),
            shut: Cell::new(false),
            writing: Cell::new(false),
            write_waiters: RefCell::new(Vec::new()),
        };
        let steps = async {
            while tls.conn.borrow().is_handshaking() {
                tls.flush().await?;
                if !tls.conn.borrow().is_handshaking() {
                    break;
                }
                if !tls.fill().await? {
                    return Err(TlsError::HandshakeEof);
                }
            }
            // What the handshake's last step owes (a server's session tickets, say).
            tls.flush().await
        };
        match time::timeout(timeout, steps).await {
            Ok(result) => result.map(|()| tls),
            Err(_) => Err(TlsError::HandshakeTimeout),
        }
    }

    /// The protocol agreed by ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.conn.borrow().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The TLS version in use.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.borrow().protocol_version()
    }

    /// The server name the client asked for (SNI), on a server.
    pub fn server_name(&self) -> Option<String> {
        match &*self.conn.borrow() {
            rustls::Connection::Server(s) => s.server_name().map(str::to_owned),
            rustls::Connection::Client(_) => None,
        }
    }

    /// Whether this client connection resumed an earlier session.
    pub fn is_resumed(&self) -> bool {
        match &*self.conn.borrow() {
            rustls::Connection::Client(c) => {
                matches!(c.handshake_kind(), Some(rustls::HandshakeKind::Resumed))
            }
            rustls::Connection::Server(s) => {
                matches!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed))
            }
        }
    }

    /// The stream beneath, for its addresses and socket options.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The next plaintext received: `Ok(None)` once the peer sent `close_notify`.
    pub async fn recv(&self) -> Result<Option<Bytes>, TlsError> {
        let Some(available) = self.plaintext_ready().await? else {
            return Ok(None);
        };
        let mut chunk = vec![0u8; available.min(READ_CHUNK)];
        let n = self.take_plaintext(&mut chunk)?;
        chunk.truncate(n);
        Ok(Some(Bytes::from(chunk)))
    }

    /// Appends received plaintext to `buf`, as much as its spare capacity takes (room for one
    /// record is made if it has none); the count is 0 once the peer sent `close_notify`.
    pub async fn read(&self, mut buf: Vec<u8>) -> (Result<usize, TlsError>, Vec<u8>) {
        let available = match self.plaintext_ready().await {
            Ok(Some(available)) => available,
            Ok(None) => return (Ok(0), buf),
            Err(e) => return (Err(e), buf),
        };
        if buf.capacity() == buf.len() {
            buf.reserve(READ_CHUNK);
        }
        let start = buf.len();
        let room = (buf.capacity() - start).min(available);
        buf.resize(start + room, 0);
        let got = self.take_plaintext(&mut buf[start..]);
        buf.truncate(start + *got.as_ref().unwrap_or(&0));
        (got, buf)
    }

    /// Waits until rustls holds plaintext (how much), or the peer's side ended cleanly (`None`).
    async fn plaintext_ready(&self) -> Result<Option<usize>, TlsError> {
        loop {
            self.check()?;
            let available = self.available.get();
            if available > 0 {
                return Ok(Some(available));
            }
            if self.ended.get() {
                return self.end_of_plaintext().map(|()| None);
            }
            self.fill().await?;
        }
    }

    /// Reads plaintext rustls holds into `into`.
    fn take_plaintext(&self, into: &mut [u8]) -> Result<usize, TlsError> {
        let n = self
            .conn
            .borrow_mut()
            .reader()
            .read(into)
            .map_err(|e| coring::Error::from_io(e, "tls"))?;
        self.available.set(self.available.get().saturating_sub(n));
        Ok(n)
    }

    /// The peer's side ended with nothing left to read: cleanly (`close_notify`) or cut short.
    fn end_of_plaintext(&self) -> Result<(), TlsError> {
        match self.conn.borrow_mut().reader().read(&mut [0u8; 1]) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TlsError::Truncated),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(TlsError::Truncated),
            Err(e) => Err(TlsError::Io(coring::Error::from_io(e, "tls"))),
        }
    }

    /// Encrypts all of `data` and writes it.
    pub async fn write_all(&self, data: impl AsRef<[u8]>) -> Result<(), TlsError> {
        let mut data = data.as_ref();
        while !data.is_empty() {
            self.check()?;
            if self.shut.get() {
                return Err(TlsError::Closed);
            }
            let n = self
                .conn
                .borrow_mut()
                .writer()
                .write(data)
                .map_err(|e| coring::Error::from_io(e, "tls"))?;
            self.flush().await?;
            if n == 0 {
                // Nothing taken even with the queue written out: the connection sends no more
                // (our close_notify went out).
                return Err(TlsError::Io(coring::Error::new(
                    coring::ErrorKind::WriteZero,
                    "tls: the connection takes no more data",
                )));
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// The protocol's failure, if it failed.
    fn check(&self) -> Result<(), TlsError> {
        match &*self.failure.borrow() {
            Some(e) => Err(TlsError::Tls(e.clone())),
            None => Ok(()),
        }
    }

    /// Sends `close_notify`, then closes our side of the stream.
    pub async fn shutdown(&self) -> Result<(), TlsError> {
        self.shut.set(true);
        self.conn.borrow_mut().send_close_notify();
        self.flush().await?;
        self.stream.shutdown(std::net::Shutdown::Write).await?;
        Ok(())
    }

    /// Writes what rustls has to send, one task at a time.
    async fn flush(&self) -> Result<(), TlsError> {
        poll_fn(|cx| {
            if self.writing.get() {
                self.write_waiters.borrow_mut().push(cx.waker().clone());
                return Poll::Pending;
            }
            self.writing.set(true);
            Poll::Ready(())
        })
        .await;
        let _turn = Turn(self);
        loop {
            // The core's reusable output buffers: no allocation per write.
            let mut out = out_buffer::take();
            let drained = {
                let mut conn = self.conn.borrow_mut();
                let mut drained = Ok(());
                while drained.is_ok() && conn.wants_write() {
                    drained = conn.write_tls(&mut out).map(|_| ());
                }
                drained
            };
            if let Err(e) = drained {
                out_buffer::give_back(out);
                return Err(coring::Error::from_io(e, "tls").into());
            }
            if out.is_empty() {
                out_buffer::give_back(out);
                return Ok(());
            }
            let (result, back) = self.stream.write_all(out).await;
            out_buffer::give_back(back);
            result?;
        }
    }

    /// Gives rustls the next received bytes and processes them, until it holds plaintext or
    /// the bytes run out (what is left waits for the next call); false at the end of the
    /// stream. A protocol error sends its alert before it is returned.
    async fn fill(&self) -> Result<bool, TlsError> {
        let pending = self.pending.borrow_mut().take();
        let mut buf = match pending {
            Some(buf) => buf,
            None => {
                let next = poll_fn(|cx| self.reader.borrow_mut().poll_next_buf(cx)).await?;
                let Some(buf) = next else {
                    // The end of the stream: rustls tells whether it was clean.
                    let _ = self.conn.borrow_mut().read_tls(&mut &[][..]);
                    self.ended.set(true);
                    self.process().await?;
                    return Ok(false);
                };
                buf
            }
        };
        while !buf.is_empty() {
            let taken = {
                let mut bytes = &buf[..];
                self.conn
                    .borrow_mut()
                    .read_tls(&mut bytes)
                    .map_err(|e| coring::Error::from_io(e, "tls"))?
            };
            bytes::Buf::advance(&mut buf, taken);
            self.process().await?;
            if self.available.get() > 0 || taken == 0 {
                break;
            }
        }
        if !buf.is_empty() {
            *self.pending.borrow_mut() = Some(buf);
        }
        Ok(true)
    }

    /// Decrypts what rustls holds; on a protocol error the alert goes out first.
    async fn process(&self) -> Result<(), TlsError> {
        let processed = self.conn.borrow_mut().process_new_packets();
        match processed {
            Ok(state) => {
                self.available.set(state.plaintext_bytes_to_read());
                if state.peer_has_closed() {
                    self.ended.set(true);
                }
                Ok(())
            }
            Err(e) => {
                *self.failure.borrow_mut() = Some(e.clone());
                let _ = self.flush().await;
                Err(TlsError::Tls(e))
            }
        }
    }
}

/// Gives the socket's write turn to the next waiting task when a flush ends.
struct Turn<'a>(&'a TlsStream);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.writing.set(false);
        for w in self.0.write_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}
