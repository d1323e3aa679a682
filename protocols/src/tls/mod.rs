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
//! as [`rustls`]; the crypto provider is aws-lc-rs ([`provider`]).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{IoSlice, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use coring::net::{PooledReader, TcpStream};
use coring::time;

use crate::serve::out_buffer;

mod config;
#[cfg(target_os = "linux")]
mod kernel;
pub use config::{
    CertResolver, ConfigError, certified_key, client_config, default_client_config,
    load_certified_key, provider, roots_from_pem, server_config, server_config_from_pem,
};
#[cfg(target_os = "linux")]
pub use kernel::{direction_keys, kernel_tls};
pub use rustls;
use rustls::pki_types::ServerName;

/// How long a handshake may take unless set.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Plaintext taken from rustls per `recv` at most (one full record).
const READ_CHUNK: usize = 16 * 1024;

/// Why a TLS connection failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
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
        self.accept_after(stream, &[]).await
    }

    /// Runs the server side of the handshake on `stream`, whose first TLS bytes, `received`,
    /// were already read from it (behind a PROXY protocol header, say): rustls takes them
    /// before anything more is read.
    pub async fn accept_after(
        &self,
        stream: TcpStream,
        received: &[u8],
    ) -> Result<TlsStream, TlsError> {
        let conn = rustls::ServerConnection::new(Arc::clone(&self.config))?;
        // Boxed: the handshake's state is large and short-lived, and a task that awaited it
        // in place would carry its size for the connection's whole life.
        Box::pin(TlsStream::handshake(
            stream,
            conn.into(),
            self.handshake_timeout,
            received,
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
            &[],
        ))
        .await
    }
}

/// A TLS connection over a [`TcpStream`], on its core. Reading and writing may go on in two
/// tasks at once; writes from several tasks go out whole, one after another.
pub struct TlsStream {
    inner: Rc<Shared>,
}

/// What a stream's handles share: the socket, its reader and rustls' state.
struct Shared {
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
    /// The handshake is running: it writes what rustls owes between its steps.
    handshaking: Cell<bool>,
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
        received: &[u8],
    ) -> Result<TlsStream, TlsError> {
        let reader = stream.pooled();
        let tls = TlsStream {
            inner: Rc::new(Shared {
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
                handshaking: Cell::new(true),
            }),
        };
        let inner = &tls.inner;
        let steps = async {
            // Bytes read before the handshake began go to rustls first.
            let mut rest = received;
            while !rest.is_empty() {
                let mut conn = inner.conn.borrow_mut();
                match conn.read_tls(&mut rest) {
                    Ok(0) => break,
                    Ok(_) => {
                        conn.process_new_packets()?;
                    }
                    Err(e) => return Err(TlsError::Io(coring::Error::from_io(e, "tls read"))),
                }
            }
            while inner.conn.borrow().is_handshaking() {
                inner.flush().await?;
                if !inner.conn.borrow().is_handshaking() {
                    break;
                }
                if !poll_fn(|cx| inner.poll_fill(cx)).await? {
                    return Err(TlsError::HandshakeEof);
                }
            }
            // What the handshake's last step owes: a TLS 1.2 server's Finished, a client's.
            // A TLS 1.3 server owes only its session tickets: they go with its first write
            // (or once the client's first bytes are read), a send less per connection.
            let tickets_only = matches!(&*inner.conn.borrow(), rustls::Connection::Server(_))
                && inner.conn.borrow().protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
            if tickets_only {
                return Ok(());
            }
            inner.flush().await
        };
        let result = match time::timeout(timeout, steps).await {
            Ok(result) => result,
            Err(_) => Err(TlsError::HandshakeTimeout),
        };
        inner.handshaking.set(false);
        if let Err(TlsError::Tls(_)) = result {
            // The alert that says why.
            let _ = time::timeout(OWED_WRITE_TIMEOUT, inner.flush()).await;
        }
        counters::handshake_done(&result, tls.is_resumed());
        result.map(|()| tls)
    }

    /// A second handle on this stream, for the crate's readers and writers.
    pub(crate) fn share(&self) -> TlsStream {
        TlsStream {
            inner: Rc::clone(&self.inner),
        }
    }

    /// The protocol agreed by ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.inner.conn.borrow().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The TLS version in use.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.inner.conn.borrow().protocol_version()
    }

    /// The cipher suite agreed.
    pub fn cipher_suite(&self) -> Option<rustls::CipherSuite> {
        self.inner
            .conn
            .borrow()
            .negotiated_cipher_suite()
            .map(|s| s.suite())
    }

    /// The server name the client asked for (SNI), on a server.
    pub fn server_name(&self) -> Option<String> {
        match &*self.inner.conn.borrow() {
            rustls::Connection::Server(s) => s.server_name().map(str::to_owned),
            rustls::Connection::Client(_) => None,
        }
    }

    /// Whether this connection resumed an earlier session.
    pub fn is_resumed(&self) -> bool {
        let kind = match &*self.inner.conn.borrow() {
            rustls::Connection::Client(c) => c.handshake_kind(),
            rustls::Connection::Server(s) => s.handshake_kind(),
        };
        matches!(kind, Some(rustls::HandshakeKind::Resumed))
    }

    /// The stream beneath, for its addresses and socket options.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner.stream
    }

    /// The next plaintext received: `Ok(None)` once the peer sent `close_notify`.
    pub async fn recv(&self) -> Result<Option<Bytes>, TlsError> {
        poll_fn(|cx| self.poll_recv(cx))
            .await
            .map(|got| got.map(BytesMut::freeze))
    }

    /// [`TlsStream::recv`] as a poll: plaintext rustls holds, in a buffer of its own (one
    /// record at most).
    pub(crate) fn poll_recv(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<BytesMut>, TlsError>> {
        let Some(available) = std::task::ready!(self.poll_plaintext(cx))? else {
            return Poll::Ready(Ok(None));
        };
        let mut chunk = BytesMut::zeroed(available.min(READ_CHUNK));
        let n = self.inner.take_plaintext(&mut chunk)?;
        chunk.truncate(n);
        Poll::Ready(Ok(Some(chunk)))
    }

    /// Ready once rustls holds plaintext (how much), or the peer's side ended cleanly (`None`).
    fn poll_plaintext(&self, cx: &mut Context<'_>) -> Poll<Result<Option<usize>, TlsError>> {
        let inner = &self.inner;
        loop {
            inner.check()?;
            let available = inner.available.get();
            if available > 0 {
                return Poll::Ready(Ok(Some(available)));
            }
            if inner.ended.get() {
                return Poll::Ready(inner.end_of_plaintext().map(|()| None));
            }
            std::task::ready!(inner.poll_fill(cx))?;
        }
    }

    /// Appends received plaintext to `buf`, as much as its spare capacity takes (room for one
    /// record is made if it has none); the count is 0 once the peer sent `close_notify`.
    pub async fn read(&self, mut buf: Vec<u8>) -> (Result<usize, TlsError>, Vec<u8>) {
        let available = match poll_fn(|cx| self.poll_plaintext(cx)).await {
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
        let got = self.inner.take_plaintext(&mut buf[start..]);
        buf.truncate(start + *got.as_ref().unwrap_or(&0));
        (got, buf)
    }

    /// Encrypts all of `data` and writes it.
    pub async fn write_all(&self, data: impl AsRef<[u8]>) -> Result<(), TlsError> {
        self.send(&mut [IoSlice::new(data.as_ref())], false).await
    }

    /// Encrypts all of `parts`, one after another, into the same records (no copy to join
    /// them first) and writes them.
    pub async fn write_all_vectored(&self, parts: &mut [IoSlice<'_>]) -> Result<(), TlsError> {
        self.send(parts, false).await
    }

    /// Encrypts all of `data` and writes it followed by `close_notify`, together: the last
    /// write of a connection that closes after it ([`TlsStream::shutdown`] then sends only the
    /// FIN). Nothing more can be written.
    pub async fn write_last(&self, data: impl AsRef<[u8]>) -> Result<(), TlsError> {
        self.send(&mut [IoSlice::new(data.as_ref())], true).await
    }

    /// Hands `parts` to rustls as its send buffer takes them, writing out what it holds
    /// whenever it is full; `last`: `close_notify` follows the data in the same write.
    async fn send(&self, mut parts: &mut [IoSlice<'_>], last: bool) -> Result<(), TlsError> {
        let inner = &self.inner;
        loop {
            inner.check()?;
            if inner.shut.get() {
                return Err(TlsError::Closed);
            }
            let n = inner
                .conn
                .borrow_mut()
                .writer()
                .write_vectored(parts)
                .map_err(|e| coring::Error::from_io(e, "tls"))?;
            IoSlice::advance_slices(&mut parts, n);
            if parts.is_empty() {
                break;
            }
            if n == 0 && !inner.conn.borrow().wants_write() {
                // Nothing taken with nothing waiting to go: rustls sends no more.
                return Err(TlsError::Closed);
            }
            // rustls' send buffer is full: what it holds goes out, making room.
            inner.flush().await?;
        }
        if last {
            inner.shut.set(true);
            inner.conn.borrow_mut().send_close_notify();
        }
        inner.flush().await
    }

    /// Sends `close_notify`, then closes our side of the stream.
    pub async fn shutdown(&self) -> Result<(), TlsError> {
        let inner = &self.inner;
        if !inner.shut.replace(true) {
            inner.conn.borrow_mut().send_close_notify();
        }
        inner.flush().await?;
        inner.stream.shutdown(std::net::Shutdown::Write).await?;
        Ok(())
    }
}

impl Shared {
    /// The protocol's failure, if it failed.
    fn check(&self) -> Result<(), TlsError> {
        match &*self.failure.borrow() {
            Some(e) => Err(TlsError::Tls(e.clone())),
            None => Ok(()),
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
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::WouldBlock
                ) =>
            {
                counters::count(&counters::TRUNCATED);
                Err(TlsError::Truncated)
            }
            Err(e) => Err(TlsError::Io(coring::Error::from_io(e, "tls"))),
        }
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
    /// stream. What rustls owes the peer by itself (a protocol error's alert, a key update's
    /// answer) is written by a task of its own.
    fn poll_fill(self: &Rc<Self>, cx: &mut Context<'_>) -> Poll<Result<bool, TlsError>> {
        let pending = self.pending.borrow_mut().take();
        let mut buf = match pending {
            Some(buf) => buf,
            None => {
                let next = std::task::ready!(self.reader.borrow_mut().poll_next_buf(cx))?;
                let Some(buf) = next else {
                    // The end of the stream: rustls tells whether it was clean.
                    let _ = self.conn.borrow_mut().read_tls(&mut &[][..]);
                    self.ended.set(true);
                    self.process()?;
                    return Poll::Ready(Ok(false));
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
            self.process()?;
            if self.available.get() > 0 {
                break;
            }
            if taken == 0 {
                // rustls takes nothing while it holds no plaintext: it cannot go on.
                return Poll::Ready(Err(TlsError::Io(coring::Error::new(
                    coring::ErrorKind::InvalidInput,
                    "tls: received bytes not taken",
                ))));
            }
        }
        if !buf.is_empty() {
            *self.pending.borrow_mut() = Some(buf);
        }
        Poll::Ready(Ok(true))
    }

    /// Decrypts what rustls holds. A protocol error is remembered (every later call returns
    /// it) and its alert is sent.
    fn process(self: &Rc<Self>) -> Result<(), TlsError> {
        let processed = self.conn.borrow_mut().process_new_packets();
        let result = match processed {
            Ok(state) => {
                self.available.set(state.plaintext_bytes_to_read());
                if state.peer_has_closed() {
                    self.ended.set(true);
                }
                Ok(())
            }
            Err(e) => {
                counters::count(&counters::PROTOCOL_ERRORS);
                *self.failure.borrow_mut() = Some(e.clone());
                Err(TlsError::Tls(e))
            }
        };
        if !self.handshaking.get() && self.conn.borrow().wants_write() && !self.writing.get() {
            let owed = Rc::clone(self);
            coring::spawn_local(async move {
                let _ = time::timeout(OWED_WRITE_TIMEOUT, owed.flush()).await;
            });
        }
        result
    }
}

/// How long what rustls owes by itself (an alert, say) may take to write.
const OWED_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Gives the socket's write turn to the next waiting task when a flush ends.
struct Turn<'a>(&'a Shared);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.writing.set(false);
        for w in self.0.write_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// What this core's TLS connections did: see [`counters`](fn@counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsCounters {
    /// Handshakes completed (either side).
    pub handshakes: u64,
    /// Of those, resumed sessions.
    pub resumed: u64,
    /// Handshakes that did not finish within their deadline.
    pub handshake_timeouts: u64,
    /// Handshakes the peer closed before they finished.
    pub handshake_eofs: u64,
    /// Handshakes that failed on the socket.
    pub handshake_io_errors: u64,
    /// Protocol failures, in a handshake or after it (garbage, a bad record, a refused
    /// certificate, a renegotiation attempt): each was answered with rustls' alert.
    pub protocol_errors: u64,
    /// Streams the peer ended without `close_notify`.
    pub truncated: u64,
}

/// This core's TLS counters since it started.
pub fn counters() -> TlsCounters {
    use counters::*;
    TlsCounters {
        handshakes: HANDSHAKES.with(Cell::get),
        resumed: RESUMED.with(Cell::get),
        handshake_timeouts: HANDSHAKE_TIMEOUTS.with(Cell::get),
        handshake_eofs: HANDSHAKE_EOFS.with(Cell::get),
        handshake_io_errors: HANDSHAKE_IO_ERRORS.with(Cell::get),
        protocol_errors: PROTOCOL_ERRORS.with(Cell::get),
        truncated: TRUNCATED.with(Cell::get),
    }
}

mod counters {
    use std::cell::Cell;
    use std::thread::LocalKey;

    use super::TlsError;

    thread_local! {
        pub(super) static HANDSHAKES: Cell<u64> = const { Cell::new(0) };
        pub(super) static RESUMED: Cell<u64> = const { Cell::new(0) };
        pub(super) static HANDSHAKE_TIMEOUTS: Cell<u64> = const { Cell::new(0) };
        pub(super) static HANDSHAKE_EOFS: Cell<u64> = const { Cell::new(0) };
        pub(super) static HANDSHAKE_IO_ERRORS: Cell<u64> = const { Cell::new(0) };
        pub(super) static PROTOCOL_ERRORS: Cell<u64> = const { Cell::new(0) };
        pub(super) static TRUNCATED: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) fn count(counter: &'static LocalKey<Cell<u64>>) {
        counter.with(|c| c.set(c.get() + 1));
    }

    /// Counts a handshake's outcome (protocol errors were counted where they arose).
    pub(super) fn handshake_done(result: &Result<(), TlsError>, resumed: bool) {
        match result {
            Ok(()) => {
                count(&HANDSHAKES);
                if resumed {
                    count(&RESUMED);
                }
            }
            Err(TlsError::HandshakeTimeout) => count(&HANDSHAKE_TIMEOUTS),
            Err(TlsError::HandshakeEof) => count(&HANDSHAKE_EOFS),
            Err(TlsError::Io(_)) => count(&HANDSHAKE_IO_ERRORS),
            Err(_) => {}
        }
    }
}
