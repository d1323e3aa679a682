//! The HTTP/1.1 server loop on coring: one task per connection, the codec driving it.
//!
//! ```no_run
//! use coring_protocols::http1::Response;
//! use coring_protocols::serve::{Router, Server};
//!
//! coring::Runtime::builder().cores(2).build()?.run(|_core| async {
//!     let router = Router::new()
//!         .route("GET", "/plaintext", |_req, _params| async { Response::new(200).body("Hello") })
//!         .route("GET", "/users/:id", |_req, params| async move {
//!             Response::new(200).body(format!("user {}", params.get("id").unwrap_or("?")))
//!         });
//!     let listener = coring::net::TcpListener::bind_reuseport("127.0.0.1:8080").unwrap();
//!     Server::new(router).serve(listener).await;
//! })?;
//! # Ok::<(), coring::Error>(())
//! ```
//!
//! Per connection: bytes are read into one buffer; every complete request in it is handled in
//! order (pipelining) and its response encoded into one output buffer, written with one send
//! per batch. A framing error is answered with its status and `Connection: close`, then the
//! connection closes; other connections are untouched. Timeouts: a head must arrive within
//! `header_timeout` of its first byte (slowloris), an idle keep-alive connection closes after
//! `idle_timeout`, a write must finish within `write_timeout`.

mod body;
mod date;
mod reply;
mod router;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use coring::net::{TcpListener, TcpStream};
use coring::runtime::until_shutdown;
use coring::time::{self, timeout_at};

use crate::http1::{
    EncodeContext, Framing, Limits, Request, RequestDecoder, Response, encode_response,
};
pub use body::{BodyError, BodyStream};
use body::{ConnIo, IoState};
use reply::Source;
pub use reply::{IntoReply, Reply, serve_file};
pub use router::{Params, Router};

/// Answers requests. Implemented for `Fn(Request) -> impl Future<Output = R>` where `R` is a
/// [`Response`] or a [`Reply`] (a file or streamed body).
pub trait Handler: 'static {
    /// What it answers with: a [`Response`] or a [`Reply`].
    type Output: IntoReply;

    /// The answer to `req`.
    fn call(&self, req: Request) -> impl Future<Output = Self::Output>;
}

impl<F, Fut, R> Handler for F
where
    F: Fn(Request) -> Fut + 'static,
    Fut: Future<Output = R>,
    R: IntoReply,
{
    type Output = R;

    // The caller's future itself, not one wrapped around it: a response is moved once less.
    #[inline]
    fn call(&self, req: Request) -> impl Future<Output = R> {
        self(req)
    }
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Request size limits.
    pub limits: Limits,
    /// The `Server` header value; `None` sends none.
    pub server_name: Option<String>,
    /// From the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
    /// How long one write may take.
    pub write_timeout: Duration,
    /// How long an idle keep-alive connection stays open once the runtime shuts down: a
    /// request already on its way (sent just before or as the shutdown began) is answered,
    /// with `Connection: close`, instead of meeting a closed socket. Keep it under the
    /// runtime's shutdown grace.
    pub shutdown_drain: Duration,
    /// Connections served at once per core; further ones are answered 503 and closed.
    pub max_connections: usize,
    /// Bodies with a Content-Length up to this are read whole before the handler runs
    /// (`Request::body`); larger and chunked ones stream ([`BodyStream`]).
    pub buffer_body_up_to: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            server_name: Some("coring".into()),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            shutdown_drain: Duration::from_millis(250),
            max_connections: 100_000,
            buffer_body_up_to: 64 * 1024,
        }
    }
}

/// An HTTP/1.1 server for one core.
pub struct Server<H> {
    handler: Rc<H>,
    config: Rc<Config>,
}

impl<H> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish()
    }
}

impl<H: Handler> Server<H> {
    /// A server answering with `handler` and the default [`Config`].
    pub fn new(handler: H) -> Self {
        Server {
            handler: Rc::new(handler),
            config: Rc::new(Config::default()),
        }
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Rc::new(config);
        self
    }

    /// Accepts and serves connections until the runtime shuts down; then stops accepting and
    /// lets in-flight requests finish; idle connections stay open for [`Config::shutdown_drain`]
    /// in case a request is on its way, then close.
    pub async fn serve(self, listener: TcpListener) {
        let mut incoming = listener.incoming();
        let mut failures = coring::net::AcceptFailures::new();
        let live = Rc::new(std::cell::Cell::new(0usize));
        while let Some(next) = until_shutdown(incoming.next()).await {
            let stream = match next {
                Ok(s) => s,
                Err(e) => {
                    failures.handle(&e).await;
                    continue;
                }
            };
            if live.get() >= self.config.max_connections {
                // Over the limit: refuse politely rather than queue without bound.
                let _ = stream.write_all(&b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..]).await;
                continue;
            }
            live.set(live.get() + 1);
            let (handler, config, live) = (self.handler.clone(), self.config.clone(), live.clone());
            coring::spawn_local(async move {
                if let Err(e) = serve_connection(Rc::new(stream), &*handler, &config).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                live.set(live.get() - 1);
            });
        }
    }
}

/// Sends a body that follows the head: flushes what is buffered, then the file (splice or
/// sendfile) or the stream's chunks as they come.
async fn send_body(stream: &TcpStream, source: Source, out: &mut Vec<u8>) -> coring::Result<()> {
    match source {
        Source::Inline => Ok(()),
        Source::File { file, offset, len } => {
            flush(stream, out).await?;
            let sent = stream.send_file(&file, offset, len).await?;
            if sent < len {
                // The file shrank under us: the promised length cannot be met.
                return Err(coring::Error::new(
                    coring::ErrorKind::UnexpectedEof,
                    "send_file",
                ));
            }
            Ok(())
        }
        Source::Stream(mut body) => {
            while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
                crate::http1::encode_chunk(&chunk, out);
                flush(stream, out).await?;
            }
            out.extend_from_slice(crate::http1::LAST_CHUNK);
            Ok(())
        }
    }
}

async fn flush(stream: &TcpStream, out: &mut Vec<u8>) -> coring::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let (r, back) = stream.write_all(std::mem::take(out)).await;
    *out = back;
    out.clear();
    r
}

/// How long a closing connection keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How much it reads at most before giving up on a clean close.
const LINGER_BYTES: usize = 256 * 1024;

/// Closes after the response: our side first (FIN), then the client's unread bytes are drained
/// for a while, so the close does not turn into a reset that could destroy the response before
/// the client read it.
async fn lingering_close(stream: &TcpStream) {
    if stream.shutdown(std::net::Shutdown::Write).await.is_err() {
        return;
    }
    let deadline = time::now() + LINGER;
    let mut drained = 0;
    let mut sink = Vec::with_capacity(16 * 1024);
    while drained < LINGER_BYTES {
        sink.clear();
        match timeout_at(deadline, stream.read(sink)).await {
            Ok((Ok(n), back)) if n > 0 => {
                drained += n;
                sink = back;
            }
            _ => return,
        }
    }
}

/// Serves one connection until it closes, errs, times out, or the runtime shuts down.
///
/// Bytes arrive in the core's pooled buffers (multishot receive); a head that lies whole in
/// one is parsed where it is, and the request keeps that buffer. Heads split across buffers
/// and bodies are copied into a per-connection buffer. Responses of one batch are encoded into
/// one output buffer borrowed from the core and written with one send.
pub async fn serve_connection<H: Handler>(
    stream: Rc<TcpStream>,
    handler: &H,
    config: &Config,
) -> coring::Result<()> {
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(config.write_timeout));
    let io = Rc::new(ConnIo {
        reader: RefCell::new(Some(stream.pooled())),
        stream: Rc::clone(&stream),
        state: RefCell::new(IoState {
            input: BytesMut::new(),
            decoder: RequestDecoder::new(config.limits),
            continue_owed: false,
            head_timeout: config.header_timeout,
        }),
    });
    let server = config.server_name.as_deref().map(str::as_bytes);
    let mut request_started = None;
    // The idle timer is armed once and re-armed only when it fires early: between requests a
    // busy connection touches no timer, it only notes when it went idle.
    let mut idle = time::sleep(config.idle_timeout);
    let mut idle_since: std::time::Instant;
    let mut shutdown = coring::runtime::shutdown_signal();
    let mut draining = false;
    // The pooled buffer being parsed, and how far.
    let mut chunk: Option<Chunk> = None;
    // The shared holder of received buffers, reused while no request still holds it.
    let mut holder: Option<Rc<Received>> = None;
    loop {
        let mut out = out_buffer::take();
        let mut close = false;
        // Every complete request already here, answered in order into one buffer.
        loop {
            let head = next_head(&io, &mut chunk);
            let (mut req, framing) = match head {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => {
                    encode_error(e, server, &mut out);
                    close = true;
                    break;
                }
            };
            request_started = None;
            if framing != Framing::None {
                // The body goes through the connection's input buffer.
                if let Some((data, at)) = chunk.take() {
                    let rest = &(*data).as_ref()[at..];
                    io.state.borrow_mut().input.extend_from_slice(rest);
                }
                io.state.borrow_mut().continue_owed = req.expects_continue();
                let whole = match framing {
                    Framing::Length(n) => n <= config.buffer_body_up_to,
                    _ => false,
                };
                flush(&stream, &mut out).await?;
                if whole {
                    // Small bodies are read whole before the handler runs.
                    let body = BodyStream::new(Rc::clone(&io));
                    match body.read_all(config.limits.max_body_bytes).await {
                        Ok(body) => req.set_body(body),
                        Err(BodyError::Http(e)) => {
                            encode_error(e, server, &mut out);
                            close = true;
                            break;
                        }
                        Err(BodyError::Io(e)) => return Err(e),
                    }
                } else {
                    // Large or chunked bodies stream: the handler pulls them (see BodyStream).
                    req.set_extension(Rc::new(BodyStream::new(Rc::clone(&io))));
                }
            }
            let keep_alive = req.keep_alive() && !coring::runtime::is_shutting_down();
            let http10 = req.version() == crate::http1::Version::Http10;
            let head_request = req.is_head();
            // Encoded from where the answer lies; only a body that follows moves it again.
            let answer = handler.call(req).await;
            // Whatever the handler left of a streamed body is read and dropped, so the next
            // request starts where it should.
            if io.state.borrow().decoder.in_body() {
                match BodyStream::new(Rc::clone(&io)).discard().await {
                    Ok(()) => {}
                    Err(BodyError::Http(e)) => {
                        encode_error(e, server, &mut out);
                        close = true;
                        break;
                    }
                    Err(BodyError::Io(e)) => return Err(e),
                }
            }
            date::with_date(|date| {
                let cx = EncodeContext {
                    date,
                    server,
                    head_request,
                    keep_alive,
                    http10,
                };
                encode_response(answer.response(), &cx, &mut out);
            });
            if !head_request && answer.body_follows() {
                send_body(&stream, answer.into_reply().source, &mut out).await?;
            }
            if !keep_alive {
                close = true;
                break;
            }
        }
        let flushed = flush(&stream, &mut out).await;
        out_buffer::give_back(out);
        flushed?;
        if close {
            // Stop the multishot receive; what the client still sends is drained below.
            drop(io.reader.borrow_mut().take());
            lingering_close(&stream).await;
            return Ok(());
        }
        // Wait for more: a head in progress has until its deadline, an idle connection until
        // the idle timeout or shutdown.
        let mid_request = !io.state.borrow().input.is_empty();
        if mid_request {
            // Counted from the request's first byte, not from the last read: a client that
            // trickles one byte at a time still runs out of time.
            let deadline = *request_started.get_or_insert(time::now()) + config.header_timeout;
            match timeout_at(deadline, io.fill()).await {
                Ok(r) => {
                    if !r? {
                        return Ok(());
                    }
                }
                Err(_) => return Ok(()), // slow head: close
            }
        } else {
            request_started = None;
            idle_since = time::now();
            // Idle: the holder lets go of its buffer (or, if a request still has it, of it).
            if let Some(rc) = holder.as_mut() {
                match Rc::get_mut(rc) {
                    Some(received) => received.0 = None,
                    None => holder = None,
                }
            }
            let mut next = std::pin::pin!(io.next_chunk());
            let mut due = idle_since + config.idle_timeout;
            let waited = std::future::poll_fn(|cx| {
                // Bytes that are here are served (a request that arrived with the shutdown is
                // in flight, and its response says `Connection: close`); only a connection
                // that has to wait registers for shutdown, once, and the idle timer.
                if let Poll::Ready(r) = next.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if !draining && Pin::new(&mut shutdown).poll(cx).is_ready() {
                    // Shutting down: stay a little longer for a request already on its way.
                    draining = true;
                    due = due.min(time::now() + config.shutdown_drain);
                    idle.reset(due);
                }
                while Pin::new(&mut idle).poll(cx).is_ready() {
                    if time::now() >= due {
                        return Poll::Ready(None);
                    }
                    idle.reset(due);
                }
                Poll::Pending
            })
            .await;
            match waited {
                Some(Ok(Some(buf))) => {
                    chunk = Some((hold(&mut holder, buf), 0));
                }
                Some(Ok(None)) => return Ok(()), // end of stream
                Some(Err(e)) => return Err(e),
                None => return Ok(()), // idle timeout, or the shutdown's drain is over
            }
        }
    }
}

/// A received buffer shared with the requests parsed from it, and how far parsing got.
type Chunk = (Rc<dyn AsRef<[u8]>>, usize);

/// A received buffer behind the `Rc` its requests share; empty while the connection is idle.
struct Received(Option<coring::buf::PooledBuf>);

impl AsRef<[u8]> for Received {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |b| b.as_ref())
    }
}

/// `buf` behind a shared handle: the connection's holder again when no request from the last
/// buffer is alive (no allocation per read), else a new one.
fn hold(holder: &mut Option<Rc<Received>>, buf: coring::buf::PooledBuf) -> Rc<dyn AsRef<[u8]>> {
    if let Some(rc) = holder.as_mut()
        && let Some(received) = Rc::get_mut(rc)
    {
        received.0 = Some(buf);
        return Rc::clone(rc) as Rc<dyn AsRef<[u8]>>;
    }
    let rc = Rc::new(Received(Some(buf)));
    *holder = Some(Rc::clone(&rc));
    rc
}

/// The next request head: from the copy buffer if a head is being assembled there, else in
/// place from the pooled buffer being parsed. A head cut off at the end of a pooled buffer is
/// moved to the copy buffer to be completed by the next read.
#[inline]
fn next_head(
    io: &ConnIo,
    chunk: &mut Option<Chunk>,
) -> Result<Option<(Request, Framing)>, crate::http1::Http1Error> {
    let mut st = io.state.borrow_mut();
    let IoState { input, decoder, .. } = &mut *st;
    if !input.is_empty() {
        return decoder.decode_head(input);
    }
    let Some((data, at)) = chunk.as_mut() else {
        return Ok(None);
    };
    let len = (**data).as_ref().len();
    if *at >= len {
        *chunk = None;
        return Ok(None);
    }
    match decoder.decode_head_shared(data, *at)? {
        Some((req, framing, end)) => {
            *at = end;
            Ok(Some((req, framing)))
        }
        None => {
            input.extend_from_slice(&(**data).as_ref()[*at..]);
            *chunk = None;
            Ok(None)
        }
    }
}

/// Output buffers lent to connections for one batch of responses, so an idle connection holds
/// none.
mod out_buffer {
    use std::cell::RefCell;

    /// Buffers kept for reuse per core.
    const KEEP: usize = 64;
    /// Buffers grown past this are not kept.
    const KEEP_BYTES: usize = 256 * 1024;

    thread_local! {
        static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> Vec<u8> {
        FREE.with(|f| f.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(16 * 1024))
    }

    pub(super) fn give_back(mut buf: Vec<u8>) {
        if buf.capacity() > KEEP_BYTES {
            return;
        }
        buf.clear();
        FREE.with(|f| {
            let mut free = f.borrow_mut();
            if free.len() < KEEP {
                free.push(buf);
            }
        });
    }
}

fn encode_error(e: crate::http1::Http1Error, server: Option<&[u8]>, out: &mut Vec<u8>) {
    // Framing can no longer be trusted: answer, then close.
    let resp = Response::new(e.status())
        .header("Content-Type", "text/plain")
        .body(e.to_string());
    date::with_date(|date| {
        let cx = EncodeContext {
            date,
            server,
            head_request: false,
            keep_alive: false,
            http10: false,
        };
        encode_response(&resp, &cx, out);
    });
}
