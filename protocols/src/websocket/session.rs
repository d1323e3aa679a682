//! One session: the stream, its pooled reader, the sans-IO connection and the outbound queue,
//! shared by the handles that read, write and send from elsewhere.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use coring::net::TcpStream;
use coring::time;

use super::outbox::{Kind, Outbox, QueuePolicy, Queued, Refused};
use super::sender::{Remote, WsSender};
use super::{Error, Message};
use crate::serve::{Upgraded, out_buffer};
use crate::transport::{Reader, Transport};
use crate::ws::deflate::Agreed;
use crate::ws::{Event, Role, WsConfig, WsConn, WsError};

/// What the handles of one session share (on its core).
pub(crate) struct Inner {
    stream: Rc<Transport>,
    reader: RefCell<Reader>,
    /// A `recv` is waiting on the reader (a second one at once sees the end).
    reading: std::cell::Cell<bool>,
    pub(crate) conn: RefCell<WsConn>,
    pub(crate) out: RefCell<Outbox>,
    remote: std::cell::OnceCell<Arc<Remote>>,
    protocol: Option<Box<str>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(remote) = self.remote.get() {
            remote.close();
        }
    }
}

/// Payloads from this size up are written from where they lie instead of being copied behind
/// their header (below it, a copy costs less than gathering two pieces).
const GATHER_FROM: usize = 2048;

/// A frame's first part as `Bytes`: the encoded buffer itself when it is the whole frame, or a
/// copy of the header when the payload follows it (the buffer goes back to the pool).
fn head_of(buf: Vec<u8>, body: &Bytes) -> Bytes {
    if body.is_empty() {
        return Bytes::from(buf);
    }
    let head = Bytes::copy_from_slice(&buf);
    out_buffer::give_back(buf);
    head
}

fn closed() -> Error {
    Error::Ws(WsError::Closed)
}

/// How the policy may treat a message this connection just encoded.
fn frame_kind(conn: &WsConn) -> Kind {
    if conn.frames_stand_alone() {
        Kind::Droppable
    } else {
        Kind::Kept
    }
}

impl Inner {
    /// Waits until a message of `len` bytes fits the queue, where the policy says senders
    /// wait (`Await`, and any session whose frames depend on the ones before); fails once the
    /// session takes no more messages.
    pub(crate) async fn room_for(&self, len: usize) -> Result<(), Error> {
        poll_fn(|cx| {
            let mut out = self.out.borrow_mut();
            if out.closed {
                return Poll::Ready(Err(closed()));
            }
            let waits = match out.policy {
                QueuePolicy::Await => true,
                QueuePolicy::DropOldest => !self.conn.borrow().frames_stand_alone(),
                QueuePolicy::Close(_) => false,
            };
            if !waits || out.fits(len) {
                return Poll::Ready(Ok(()));
            }
            out.wait(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Encodes `message` and sends it, after waiting for room as the policy says. A payload
    /// from `GATHER_FROM` bytes up that goes out as it is is not copied: the frame's header
    /// and the message's own bytes are written together.
    pub(crate) async fn send(self: &Rc<Self>, message: &Message) -> Result<Queued, Error> {
        self.send_as(message, true).await
    }

    /// [`Inner::send`]; `here`: the caller may write the frame itself (otherwise it is queued
    /// for the flush task, so that the caller never waits on this session's socket).
    pub(crate) async fn send_as(
        self: &Rc<Self>,
        message: &Message,
        here: bool,
    ) -> Result<Queued, Error> {
        let payload = message.bytes();
        self.room_for(payload.len()).await?;
        let mut buf = out_buffer::take();
        let encoded = if payload.len() >= GATHER_FROM {
            self.conn.borrow_mut().send_header(message, &mut buf)
        } else {
            self.conn
                .borrow_mut()
                .send(message, &mut buf)
                .map(|()| false)
        };
        let header_only = match encoded {
            Ok(h) => h,
            Err(e) => {
                out_buffer::give_back(buf);
                return Err(e.into());
            }
        };
        let body = if header_only {
            payload.clone()
        } else {
            Bytes::new()
        };
        let kind = frame_kind(&self.conn.borrow());
        if !here {
            return self.queue_parts(head_of(buf, &body), body, kind);
        }
        self.transmit(buf, body, kind).await
    }

    /// Sends an encoded frame (`buf`, then `body` as it is): written at once by this caller
    /// when nothing else is being written (the common case: no queue, no other task), queued
    /// behind the writer otherwise.
    async fn transmit(
        self: &Rc<Self>,
        buf: Vec<u8>,
        body: Bytes,
        kind: Kind,
    ) -> Result<Queued, Error> {
        let own = self.out.borrow_mut().begin_own(buf.len() + body.len());
        match own {
            // Boxed: a session's future is as large as its largest state, and an idle session
            // would otherwise carry a write's state it is not making.
            Ok(true) => Box::pin(self.write_own(buf, body))
                .await
                .map(|()| Queued::default()),
            Ok(false) => self.queue_parts(head_of(buf, &body), body, kind),
            Err(Refused) => {
                out_buffer::give_back(buf);
                Err(closed())
            }
        }
    }

    /// Writes a frame its caller encoded while the caller owns the socket, then hands the
    /// socket to the flush task if frames were queued meanwhile. A caller that gives up half
    /// way (its future dropped) may leave a frame cut short on the wire: the session is over.
    async fn write_own(self: &Rc<Self>, buf: Vec<u8>, body: Bytes) -> Result<(), Error> {
        let len = buf.len() + body.len();
        let mut owner = Owner(self, true);
        let result = if body.is_empty() {
            let (result, back) = self.stream.write_all(buf).await;
            out_buffer::give_back(back);
            result
        } else {
            self.stream
                .write_batch(vec![head_of(buf, &body), body])
                .await
        };
        owner.1 = false;
        self.own_write_done(len, result)
    }

    /// Sends `messages` as frames written together (one gathered write when nothing else is
    /// being written; queued behind the writer otherwise) and waits until they are written.
    /// Small frames share one buffer; a payload from `GATHER_FROM` bytes up that goes out as it
    /// is follows its header from where it lies. Nothing here waits for room: the caller
    /// bounds what it hands over (a room's member queue).
    pub(crate) async fn send_all(
        self: &Rc<Self>,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<(), Error> {
        let mut frames: Vec<(Bytes, Bytes)> = Vec::new();
        let mut small = out_buffer::take();
        let kind = {
            let mut conn = self.conn.borrow_mut();
            for message in messages {
                let encoded = if message.bytes().len() >= GATHER_FROM {
                    let mut head = Vec::with_capacity(16);
                    conn.send_header(&message, &mut head)
                        .map(|h| Some((h, head)))
                } else {
                    conn.send(&message, &mut small).map(|()| None)
                };
                match encoded {
                    Err(e) => {
                        out_buffer::give_back(small);
                        return Err(e.into());
                    }
                    Ok(None) => {}
                    Ok(Some((header_only, head))) => {
                        if !small.is_empty() {
                            frames.push((Bytes::from(std::mem::take(&mut small)), Bytes::new()));
                        }
                        let body = if header_only {
                            message.bytes().clone()
                        } else {
                            Bytes::new()
                        };
                        frames.push((Bytes::from(head), body));
                    }
                }
            }
            frame_kind(&conn)
        };
        if small.is_empty() {
            out_buffer::give_back(small);
        } else {
            frames.push((Bytes::from(small), Bytes::new()));
        }
        let len = frames.iter().map(|(h, b)| h.len() + b.len()).sum();
        let own = self.out.borrow_mut().begin_own(len);
        match own {
            Ok(true) => {
                let parts = frames
                    .into_iter()
                    .flat_map(|(h, b)| [h, b])
                    .filter(|p| !p.is_empty())
                    .collect();
                let mut owner = Owner(self, true);
                let result = self.stream.write_batch(parts).await;
                owner.1 = false;
                self.own_write_done(len, result)
            }
            Ok(false) => {
                for (head, body) in frames {
                    self.queue_parts(head, body, kind)?;
                }
                self.flushed().await
            }
            Err(Refused) => Err(closed()),
        }
    }

    /// Writes a frame shared with other sessions while this one owns the socket (taken with
    /// `begin_own`), as [`Inner::write_own`] does.
    pub(crate) async fn write_shared(self: Rc<Self>, frame: Bytes) {
        let len = frame.len();
        let mut owner = Owner(&self, true);
        let (result, _) = self.stream.write_all(frame).await;
        owner.1 = false;
        let _ = self.own_write_done(len, result);
    }

    /// A write made while owning the socket is over: the socket goes to the flush task if
    /// frames were queued meanwhile, or is let go.
    fn own_write_done(
        self: &Rc<Self>,
        len: usize,
        result: coring::Result<()>,
    ) -> Result<(), Error> {
        let mut out = self.out.borrow_mut();
        out.written(len);
        if let Err(e) = result {
            out.fail();
            out.writer_done();
            return Err(e.into());
        }
        if out.has_queued() {
            drop(out);
            coring::spawn_local(flush(Rc::clone(self)));
        } else {
            out.writer_done();
        }
        Ok(())
    }

    /// Queues an encoded frame and makes sure a writer takes it.
    pub(crate) fn queue(self: &Rc<Self>, frame: Bytes, kind: Kind) -> Result<Queued, Error> {
        self.queue_parts(frame, Bytes::new(), kind)
    }

    /// [`Inner::queue`] for a frame in two parts: `head`, then `body` as it is.
    fn queue_parts(self: &Rc<Self>, head: Bytes, body: Bytes, kind: Kind) -> Result<Queued, Error> {
        let pushed = self.out.borrow_mut().push_parts(head, body, kind);
        match pushed {
            Ok(queued) => {
                self.start_writer();
                Ok(queued)
            }
            Err(Refused) => {
                let cut_off = self.out.borrow_mut().cut_off.take();
                if let Some(code) = cut_off {
                    self.cut_off(code);
                }
                Err(closed())
            }
        }
    }

    fn start_writer(self: &Rc<Self>) {
        let mut out = self.out.borrow_mut();
        if out.needs_writer() {
            out.writing = true;
            drop(out);
            coring::spawn_local(flush(Rc::clone(self)));
        }
    }

    /// The policy closed the session: what was queued is dropped, our close goes out, and the
    /// reader has `close_timeout` to take it and answer before the socket is shut.
    pub(crate) fn cut_off(self: &Rc<Self>, code: u16) {
        let mut buf = Vec::new();
        let timeout = {
            let mut conn = self.conn.borrow_mut();
            conn.close(code, "reader too slow", time::now(), &mut buf);
            conn.config().close_timeout
        };
        self.push_control(buf);
        let stream = Rc::clone(&self.stream);
        coring::spawn_local(async move {
            time::sleep(timeout).await;
            let _ = stream.shutdown(std::net::Shutdown::Both).await;
        });
    }

    /// Queues control frames the connection owes (pongs, a close).
    fn push_control(self: &Rc<Self>, buf: Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let _ = self.queue(Bytes::from(buf), Kind::Control);
    }

    /// Queues what the connection owes the peer by itself.
    fn push_owed(self: &Rc<Self>) {
        let mut conn = self.conn.borrow_mut();
        let mut buf = Vec::new();
        conn.poll_transmit(&mut buf);
        if !conn.can_send() {
            // Closing: no more messages, only what the close handshake needs.
            self.out.borrow_mut().closed = true;
        }
        drop(conn);
        self.push_control(buf);
    }

    /// Waits until everything queued is written; fails if a write failed.
    pub(crate) async fn flushed(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            let mut out = self.out.borrow_mut();
            if out.broken {
                return Poll::Ready(Err(closed()));
            }
            if out.is_idle() {
                return Poll::Ready(Ok(()));
            }
            out.wait(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The next message; see [`WebSocket::recv`].
    async fn recv(self: &Rc<Self>) -> Result<Option<Message>, Error> {
        loop {
            // In a block of its own, so that nothing decided here is held across the wait: an
            // idle session's future is its wait for bytes and little else.
            {
                let ended = {
                    let event = self.conn.borrow_mut().poll_event();
                    self.push_owed();
                    match event {
                        Some(Ok(Event::Message(m))) => return Ok(Some(m)),
                        Some(Ok(Event::Ping(_) | Event::Pong(_))) => continue,
                        Some(Ok(Event::Close(_))) => Some(Ok(None)),
                        Some(Err(WsError::Abrupt)) => {
                            self.out.borrow_mut().closed = true;
                            return Ok(None);
                        }
                        Some(Err(e)) => Some(Err(e.into())),
                        None if self.conn.borrow().is_closed() => Some(Ok(None)),
                        None => None,
                    }
                };
                if let Some(result) = ended {
                    // Boxed, the result with it: a rare step, kept out of the future's size.
                    return Box::pin(async move {
                        self.finish().await;
                        result
                    })
                    .await;
                }
            }
            if let Some(message) = self.wait().await? {
                return Ok(Some(message));
            }
        }
    }

    /// Waits for bytes or the connection's deadline and hands them over; a large message that
    /// came whole in one pooled buffer comes back at once, as a view of that buffer. A plain
    /// future over the reader where it lies and one timer: all an idle session holds.
    fn wait(&self) -> impl Future<Output = Result<Option<Message>, Error>> + '_ {
        let mut deadline = self
            .conn
            .borrow()
            .poll_timeout()
            .map(|(_, at)| time::sleep_until(at));
        // Another task is reading (two `recv` at once): this one sees the end.
        let reading = (!self.reading.replace(true)).then(|| Reading(&self.reading));
        poll_fn(move |cx| {
            let now = time::now();
            if reading.is_none() {
                self.conn.borrow_mut().handle_eof(now);
                return Poll::Ready(Ok(None));
            }
            let got = self.reader.borrow_mut().poll_next(cx);
            let mut conn = self.conn.borrow_mut();
            match got {
                Poll::Ready(Ok(Some(buf))) => {
                    return Poll::Ready(Ok(conn.handle_buffer(buf, now)));
                }
                Poll::Ready(Ok(None)) => conn.handle_eof(now),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {
                    let due = deadline
                        .as_mut()
                        .is_some_and(|sleep| Pin::new(sleep).poll(cx).is_ready());
                    if !due {
                        return Poll::Pending;
                    }
                    conn.handle_timeout(now);
                }
            }
            Poll::Ready(Ok(None))
        })
    }

    /// The session is over: what is owed is written (bounded by the close timeout), then our
    /// side of the stream closes (a server closes first, RFC 6455 section 7.1.1).
    async fn finish(self: &Rc<Self>) {
        self.push_owed();
        self.out.borrow_mut().closed = true;
        let timeout = self.conn.borrow().config().close_timeout;
        let _ = time::timeout(timeout, self.flushed()).await;
        let _ = self.stream.shutdown(std::net::Shutdown::Write).await;
        if let Some(remote) = self.remote.get() {
            remote.close();
        }
    }

    /// Starts the closing handshake and waits (up to the close timeout) for our close to be
    /// written.
    async fn close(self: &Rc<Self>, code: u16, reason: &str) -> Result<(), Error> {
        let mut buf = Vec::new();
        let timeout = {
            let mut conn = self.conn.borrow_mut();
            conn.close(code, reason, time::now(), &mut buf);
            conn.config().close_timeout
        };
        self.out.borrow_mut().closed = true;
        self.push_control(buf);
        time::timeout(timeout, self.flushed())
            .await
            .unwrap_or(Ok(()))
    }

    async fn ping(self: &Rc<Self>, payload: &[u8]) -> Result<(), Error> {
        let mut buf = out_buffer::take();
        let encoded = self.conn.borrow_mut().ping(payload, &mut buf);
        if let Err(e) = encoded {
            out_buffer::give_back(buf);
            return Err(e.into());
        }
        self.transmit(buf, Bytes::new(), Kind::Control)
            .await
            .map(|_| ())
    }

    fn sender(self: &Rc<Self>) -> WsSender {
        let remote = self.remote.get_or_init(|| {
            let r = Remote::new(self.out.borrow().limit);
            if self.out.borrow().closed {
                r.close();
            }
            coring::spawn_local(super::sender::drain(Rc::downgrade(self), Arc::clone(&r)));
            r
        });
        WsSender::new(Arc::clone(remote))
    }

    fn set_queue(&self, limit: usize, policy: QueuePolicy) {
        let mut out = self.out.borrow_mut();
        out.limit = limit.max(1);
        out.policy = policy;
    }
}

/// Marks the reader free again when a `recv` stops waiting (done, or its future dropped).
struct Reading<'a>(&'a std::cell::Cell<bool>);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Ends a session whose own write was given up half way (the future holding it dropped): a
/// frame may be cut short on the wire.
struct Owner<'a>(&'a Inner, bool);

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        if self.1 {
            let mut out = self.0.out.borrow_mut();
            out.fail();
            out.writer_done();
        }
    }
}

/// Writes queued frames until none are left, a batch per write, then lets the socket go.
async fn flush(inner: Rc<Inner>) {
    loop {
        let batch = {
            let mut out = inner.out.borrow_mut();
            let batch = out.take_batch();
            if batch.is_empty() || out.broken {
                out.writer_done();
                return;
            }
            batch
        };
        let len = batch.iter().map(Bytes::len).sum();
        let result = inner.stream.write_batch(batch).await;
        let mut out = inner.out.borrow_mut();
        out.written(len);
        if result.is_err() {
            out.fail();
            out.writer_done();
            return;
        }
    }
}

/// The methods a [`WebSocket`] and its [`WsWriter`]s share: everything that sends.
macro_rules! sending_methods {
    () => {
        /// Sends `message` as one frame: written before this returns when nothing else is
        /// being written, queued behind what is otherwise (waiting for room as the
        /// [`QueuePolicy`] says). Fails once the session is closing.
        pub async fn send(&self, message: &Message) -> Result<(), Error> {
            self.inner.send(message).await.map(|_| ())
        }

        /// Sends a ping (at most 125 bytes); its pong comes back through `recv`.
        pub async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
            self.inner.ping(payload).await
        }

        /// Starts the closing handshake: our close is written (queued messages go first);
        /// `recv` returns `Ok(None)` once the peer answered or the close timeout passed.
        pub async fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
            self.inner.close(code, reason).await
        }

        /// Waits until every queued frame is written.
        pub async fn flush(&self) -> Result<(), Error> {
            self.inner.flushed().await
        }

        /// Bounds the session's outbound queue at `limit` bytes (queued and being written;
        /// 4 MiB unless set) and says what happens to a message that would go past it.
        pub fn set_queue(&self, limit: usize, policy: QueuePolicy) {
            self.inner.set_queue(limit, policy);
        }

        /// Bytes queued or being written.
        pub fn queued_bytes(&self) -> usize {
            self.inner.out.borrow().held()
        }

        /// Messages `QueuePolicy::DropOldest` has dropped so far.
        pub fn dropped(&self) -> u64 {
            self.inner.out.borrow().dropped
        }

        /// The subprotocol the handshake agreed.
        pub fn protocol(&self) -> Option<&str> {
            self.inner.protocol.as_deref()
        }

        /// A handle any core or thread can send through (see [`WsSender`]).
        pub fn sender(&self) -> WsSender {
            self.inner.sender()
        }

        /// The stream beneath, for its addresses and socket options. Reading or writing it
        /// directly would cut across the session's frames.
        pub fn stream(&self) -> &TcpStream {
            self.inner.stream.tcp()
        }
    };
}

/// One WebSocket session on its core. `recv` reads (answering pings and the peer's close by
/// itself), `send` writes one message; [`WebSocket::split`] gives the two sides to two tasks,
/// [`WebSocket::sender`] a handle for other cores and threads.
pub struct WebSocket {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("queued_bytes", &self.queued_bytes())
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// A session on a connection the HTTP server upgraded.
    pub(crate) fn from_upgraded(
        upgraded: Upgraded,
        role: Role,
        config: Arc<WsConfig>,
        deflate: Option<Agreed>,
        protocol: Option<String>,
    ) -> WebSocket {
        WebSocket::on_stream(
            upgraded.transport,
            upgraded.reader,
            &upgraded.leftover,
            role,
            config,
            deflate,
            protocol,
        )
    }

    /// A session on `stream` whose handshake is done; `early` is what the peer sent right
    /// behind its handshake.
    pub(crate) fn on_stream(
        stream: Rc<Transport>,
        reader: Option<Reader>,
        early: &[u8],
        role: Role,
        config: Arc<WsConfig>,
        deflate: Option<Agreed>,
        protocol: Option<String>,
    ) -> WebSocket {
        let now = time::now();
        let mut conn = WsConn::new(role, config, now, super::random_u64());
        if let Some(agreed) = deflate {
            conn.enable_deflate(agreed);
        }
        if !early.is_empty() {
            conn.handle_input(early, now);
        }
        let reader = reader.unwrap_or_else(|| stream.reader());
        WebSocket {
            inner: Rc::new(Inner {
                stream,
                reader: RefCell::new(reader),
                reading: std::cell::Cell::new(false),
                conn: RefCell::new(conn),
                out: RefCell::new(Outbox::default()),
                remote: std::cell::OnceCell::new(),
                protocol: protocol.map(String::into_boxed_str),
            }),
        }
    }

    /// The next message: `Ok(None)` once the peer closed (the close was answered) or the
    /// close handshake ended. Pings are answered and pongs taken on the way; a protocol error
    /// is reported to the peer with its close code, then returned. Keep calling it: it also
    /// runs the heartbeat and the close handshake's deadline.
    pub fn recv(&mut self) -> impl Future<Output = Result<Option<Message>, Error>> + '_ {
        self.inner.recv()
    }

    sending_methods!();

    /// A writing handle for other tasks on this core.
    pub fn writer(&self) -> WsWriter {
        WsWriter {
            inner: Rc::clone(&self.inner),
        }
    }

    /// The reading and the writing side, for two tasks on this core.
    pub fn split(self) -> (WsReader, WsWriter) {
        let writer = self.writer();
        (WsReader { inner: self.inner }, writer)
    }
}

/// The reading side of a [`WebSocket`] (see [`WebSocket::split`]).
pub struct WsReader {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for WsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader").finish_non_exhaustive()
    }
}

impl WsReader {
    /// See [`WebSocket::recv`].
    pub fn recv(&mut self) -> impl Future<Output = Result<Option<Message>, Error>> + '_ {
        self.inner.recv()
    }
}

/// The writing side of a [`WebSocket`], for any task on its core: clone it freely. Frames
/// from every handle go out whole and in the order they were sent.
#[derive(Clone)]
pub struct WsWriter {
    pub(crate) inner: Rc<Inner>,
}

impl std::fmt::Debug for WsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsWriter")
            .field("queued_bytes", &self.queued_bytes())
            .finish_non_exhaustive()
    }
}

impl WsWriter {
    sending_methods!();

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Rc::downgrade(&self.inner)
    }
}
