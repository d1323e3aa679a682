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
//! Per connection, one task drives an [`http1::ServerConn`](crate::http1::ServerConn): what is
//! read goes in, every request it hands out is answered in order (pipelining) into one output
//! buffer, written with one send per batch, and the connection's own deadline is the one timer
//! the task arms. A framing error is answered with its status and `Connection: close`, then
//! the connection closes; other connections are untouched. Timeouts: a head must arrive within
//! `header_timeout` of its first byte (slowloris), a body must keep coming, an idle keep-alive
//! connection closes after `idle_timeout` (or `shutdown_drain` once the runtime shuts down), a
//! write must finish within `write_timeout`.

mod admit;
mod body;
mod date;
mod hook;
mod reply;
mod router;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::task::Poll;
use std::time::Duration;

use coring::net::{TcpListener, TcpStream};
use coring::runtime::until_shutdown;
use coring::time::{self, timeout_at};

use crate::cidr::Cidr;
use crate::http1::{Limits, Request, ServerConfig, ServerConn};
use crate::proxy;
use crate::transport::{Chunk, Transport};
pub use admit::{Admission, AdmissionCounters, admission_counters};
use admit::{Gate, SourceSlot};
use body::ConnIo;
pub use body::{BodyError, BodyStream};
pub use hook::{ConnError, ErrorHook, ProxyRefusal, Refusal};
use reply::Source;
pub use reply::{IntoReply, Reply, serve_file};
pub use router::{Params, Router};

/// Answers requests. Implemented for `Fn(Request) -> impl Future<Output = R>` where `R` is a
/// [`Response`](crate::http1::Response) or a [`Reply`] (a file or streamed body).
pub trait Handler: 'static {
    /// What it answers with: a [`Response`](crate::http1::Response) or a [`Reply`].
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
    /// Find each connection's peer address once (one `getpeername`) and give it to every
    /// request ([`Request::client_addr`]). Off by default; a PROXY listener always does, and
    /// so does [`Config::admission`] (which looks the peer up anyway).
    pub client_addr: bool,
    /// Connections begin with a PROXY protocol header (v1 or v2) from a load balancer:
    /// see [`ProxyProtocol`]. On `Server::serve_tls` the header comes in the clear before the
    /// TLS handshake (a balancer relaying TLS in TCP mode).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Called for every connection that ends early: refused, a bad PROXY header, a failed
    /// TLS handshake, broken HTTP, a head or body too slow, a socket that failed
    /// ([`ConnError`]). Each is also logged at debug level. `None` by default.
    pub on_error: Option<ErrorHook>,
    /// Records every connection's traffic (what it read and wrote) into a pcapng file
    /// ([`Capture`](crate::capture::Capture)); `None` by default. Each connection then costs
    /// a `getpeername` and a `getsockname`, and every read and write a copy into the
    /// capture's queue.
    pub capture: Option<crate::capture::Capture>,
    /// Who may connect, how fast, how many at once ([`Admission`]); checked on each accepted
    /// socket before TLS or HTTP (behind a PROXY listener, on the client its header names).
    /// `None` admits everyone (up to `max_connections`).
    pub admission: Option<Admission>,
}

/// How a listener behind a load balancer reads the PROXY protocol header each connection
/// starts with. The client address it carries becomes the connection's client address for
/// everything above ([`Request::client_addr`], [`Upgraded::client_addr`]).
///
/// A connection from a peer outside `trusted` is closed before a byte is read (anyone could
/// claim any address); one whose header is missing, malformed, over `max_header`, cut short or
/// slower than `timeout` is closed too. Each is counted in [`proxy_counters`].
#[derive(Clone, Debug)]
pub struct ProxyProtocol {
    /// The load balancers: peers whose headers are believed.
    pub trusted: Vec<Cidr>,
    /// How long the header may take to arrive after the accept.
    pub timeout: Duration,
    /// The longest header read (version 2 with TLVs can be long).
    pub max_header: usize,
}

impl ProxyProtocol {
    /// Headers believed from `trusted`, within 5 s, up to [`proxy::DEFAULT_MAX`] bytes.
    pub fn trusting(trusted: Vec<Cidr>) -> ProxyProtocol {
        ProxyProtocol {
            trusted,
            timeout: Duration::from_secs(5),
            max_header: proxy::DEFAULT_MAX,
        }
    }
}

/// What PROXY listeners did with the connections they accepted, across all cores.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Headers read (the connection then served).
    pub accepted: AtomicU64,
    /// Of those, `LOCAL` headers (the balancer's own health checks): the real peer stands.
    pub local: AtomicU64,
    /// Connections from a peer outside the trusted list.
    pub untrusted: AtomicU64,
    /// Connections that did not start with a header.
    pub missing: AtomicU64,
    /// Headers that broke the grammar or were over the size limit.
    pub malformed: AtomicU64,
    /// Connections that ended or failed before the header was whole.
    pub cut_short: AtomicU64,
    /// Headers slower than the timeout.
    pub timed_out: AtomicU64,
}

/// The process's PROXY listener counters.
pub fn proxy_counters() -> &'static ProxyCounters {
    static COUNTERS: ProxyCounters = ProxyCounters {
        accepted: AtomicU64::new(0),
        local: AtomicU64::new(0),
        untrusted: AtomicU64::new(0),
        missing: AtomicU64::new(0),
        malformed: AtomicU64::new(0),
        cut_short: AtomicU64::new(0),
        timed_out: AtomicU64::new(0),
    };
    &COUNTERS
}

fn gate_of(config: &Config) -> Option<Rc<Gate>> {
    let admission = config.admission.as_ref()?;
    Some(Rc::new(Gate::new(admission, std::time::Instant::now())))
}

/// What a connection's task learns about its client before HTTP starts.
#[derive(Clone, Debug)]
enum Front {
    /// Nothing: requests carry no client address.
    Bare,
    /// The peer address.
    Peer,
    /// A PROXY header first.
    Proxy(Rc<ProxyProtocol>),
}

impl Front {
    fn of(config: &Config) -> Front {
        match &config.proxy_protocol {
            Some(p) => Front::Proxy(Rc::new(p.clone())),
            None if config.client_addr => Front::Peer,
            None => Front::Bare,
        }
    }
}

impl Config {
    /// What each connection enforces (room 1's view of these settings).
    pub fn connection(&self) -> ServerConfig {
        ServerConfig {
            limits: self.limits,
            server_name: self.server_name.as_ref().map(|s| s.as_bytes().to_vec()),
            header_timeout: self.header_timeout,
            // A body must keep coming: each wait for its bytes is held to the head's limit.
            body_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            shutdown_drain: self.shutdown_drain,
            buffer_body_up_to: self.buffer_body_up_to,
            ..ServerConfig::default()
        }
    }
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
            client_addr: false,
            proxy_protocol: None,
            on_error: None,
            capture: None,
            admission: None,
        }
    }
}

/// An HTTP/1.1 server for one core.
pub struct Server<H> {
    handler: Rc<H>,
    config: Rc<Config>,
    connection: Rc<ServerConfig>,
    front: Front,
    /// This core's admission state.
    gate: Option<Rc<Gate>>,
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
        let config = Config::default();
        Server {
            handler: Rc::new(handler),
            connection: Rc::new(config.connection()),
            front: Front::of(&config),
            gate: gate_of(&config),
            config: Rc::new(config),
        }
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.connection = Rc::new(config.connection());
        self.front = Front::of(&config);
        self.gate = gate_of(&config);
        self.config = Rc::new(config);
        self
    }

    /// Accepts and serves connections until the runtime shuts down; then stops accepting and
    /// lets in-flight requests finish; idle connections stay open for [`Config::shutdown_drain`]
    /// in case a request is on its way, then close.
    pub async fn serve(self, listener: TcpListener) {
        self.accept_each(listener, true, |server, stream, live| {
            coring::spawn_local(async move {
                let mut live = live;
                let stream = Rc::new(Transport::Tcp(stream));
                let driven = drive(
                    Rc::clone(&stream),
                    &*server.handler,
                    &server.setup,
                    &mut live,
                )
                .await;
                run(driven, live, &server.setup, &stream);
            });
        })
        .await;
    }

    /// [`Server::serve`] over TLS: each connection's handshake runs in its own task under
    /// the acceptor's deadline, then HTTP is served on the decrypted stream. A failed
    /// handshake ends that connection only (the TLS counters say why). A connection over
    /// `max_connections` is closed at once, before any handshake.
    ///
    /// With [`Config::proxy_protocol`], the PROXY header comes first, in the clear, as a
    /// balancer in TCP mode sends it (HAProxy's `send-proxy-v2` in front of a TLS server): it
    /// is read off the socket before the handshake, and the bytes after it start the handshake.
    #[cfg(feature = "tls")]
    pub async fn serve_tls(self, listener: TcpListener, acceptor: crate::tls::TlsAcceptor) {
        let acceptor = Rc::new(acceptor);
        self.accept_each(listener, false, |mut server, stream, live| {
            let acceptor = Rc::clone(&acceptor);
            coring::spawn_local(async move {
                let mut live = live;
                let _ = stream.set_nodelay(true);
                let mut early = Vec::new();
                let hook = server.setup.hook.as_ref();
                if let Front::Proxy(proxy) = &server.setup.front {
                    let (client, after) = match read_proxy_header_raw(&stream, proxy).await {
                        Ok(read) => read,
                        Err((peer, why)) => return hook::report(hook, peer, ConnError::Proxy(why)),
                    };
                    if let Some(gate) = &server.setup.gate {
                        match gate.admit(client.ip(), std::time::Instant::now()) {
                            Ok(slot) => live.slot = Some(slot),
                            Err(why) => {
                                return hook::report(hook, Some(client), ConnError::Refused(why));
                            }
                        }
                    }
                    early = after;
                    // HTTP starts on the decrypted stream with the client known.
                    server.setup.client = Some(client);
                    server.setup.front = Front::Bare;
                }
                // Who failed a handshake is asked only when someone will be told.
                let peer = match (server.setup.client, hook) {
                    (Some(client), _) => Some(client),
                    (None, Some(_)) => stream.peer_addr().ok(),
                    (None, None) => None,
                };
                let tls = match acceptor.accept_after(stream, &early).await {
                    Ok(tls) => tls,
                    Err(e) => return hook::report(hook, peer, ConnError::Tls(&e)),
                };
                let stream = Rc::new(Transport::Tls(tls));
                let driven = drive(
                    Rc::clone(&stream),
                    &*server.handler,
                    &server.setup,
                    &mut live,
                )
                .await;
                run(driven, live, &server.setup, &stream);
            });
        })
        .await;
    }

    /// Accepts until the runtime shuts down and hands each connection, with its place under
    /// `max_connections`, to `each`; one over the limit is refused (with a 503 when `polite`).
    async fn accept_each(
        &self,
        listener: TcpListener,
        polite: bool,
        mut each: impl FnMut(Conn<H>, TcpStream, Live),
    ) {
        let mut incoming = Some(listener.incoming());
        // After the shutdown: what the kernel had accepted for us as the accept stopped.
        let mut last = Vec::new().into_iter();
        let mut failures = coring::net::AcceptFailures::new();
        let live = Rc::new(LiveCount::default());
        loop {
            let next = match incoming.as_mut() {
                Some(accepting) => match until_shutdown(accepting.next()).await {
                    Some(next) => next,
                    None => {
                        // Stopped without losing a connection: a listener handed over in a
                        // restart goes on accepting in the new process.
                        if let Some(stopped) = incoming.take() {
                            last = stopped.close().await.into_iter();
                        }
                        continue;
                    }
                },
                None => match last.next() {
                    Some(stream) => Ok(stream),
                    None => break,
                },
            };
            let stream = match next {
                Ok(s) => s,
                Err(e) => {
                    failures.handle(&e).await;
                    continue;
                }
            };
            if live.count.get() >= self.config.max_connections {
                // Over the limit: refused rather than queued without bound.
                admit::count(&admission_counters().over_total);
                hook::report(
                    self.config.on_error.as_ref(),
                    None,
                    ConnError::Refused(Refusal::OverCapacity),
                );
                if polite {
                    let _ = stream.write_all(&b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"[..]).await;
                }
                continue;
            }
            let mut client = None;
            let mut slot = None;
            // Admission on the socket's peer, unless a PROXY header is to name the client.
            if let Some(gate) = &self.gate
                && !matches!(self.front, Front::Proxy(_))
            {
                let Ok(peer) = stream.peer_addr() else {
                    continue; // already gone
                };
                match gate.admit(peer.ip(), std::time::Instant::now()) {
                    Ok(s) => slot = Some(s),
                    Err(why) => {
                        // Closed as it drops, before a byte is read.
                        let hook = self.config.on_error.as_ref();
                        hook::report(hook, Some(peer), ConnError::Refused(why));
                        continue;
                    }
                }
                client = Some(peer);
            }
            let conn = Conn {
                handler: Rc::clone(&self.handler),
                setup: Setup {
                    connection: Rc::clone(&self.connection),
                    write_timeout: self.config.write_timeout,
                    front: self.front.clone(),
                    gate: self.gate.clone(),
                    client,
                    hook: self.config.on_error.clone(),
                    capture: self.config.capture.clone(),
                },
            };
            let mut place = Live::count(&live);
            place.slot = slot;
            each(conn, stream, place);
        }
    }
}

/// What one connection's task takes of its server.
struct Conn<H> {
    handler: Rc<H>,
    setup: Setup,
}

/// How a connection is to be served.
struct Setup {
    connection: Rc<ServerConfig>,
    write_timeout: Duration,
    front: Front,
    gate: Option<Rc<Gate>>,
    /// The peer address, where admission already asked for it.
    client: Option<SocketAddr>,
    /// Told of connection-level failures.
    hook: Option<ErrorHook>,
    /// Records the traffic.
    capture: Option<crate::capture::Capture>,
}

/// What a connection's task does once HTTP is done with it.
fn run(
    driven: coring::Result<Option<(reply::UpgradeFn, Upgraded)>>,
    live: Live,
    with: &Setup,
    stream: &Transport,
) {
    match driven {
        // The new protocol runs as a task of its own, so that what the HTTP connection's
        // task held is freed now rather than when it ends.
        Ok(Some((then, upgraded))) => then(upgraded, live),
        Ok(None) => {}
        Err(e) => {
            let client = with.client.or_else(|| stream.tcp().peer_addr().ok());
            hook::report(with.hook.as_ref(), client, ConnError::Io(&e));
        }
    }
}

/// Connections alive, and who waits for them to end.
#[derive(Default)]
pub(crate) struct LiveCount {
    count: std::cell::Cell<usize>,
    waker: std::cell::Cell<Option<std::task::Waker>>,
}

/// A connection's place under `max_connections` (or in `serve_connection`), given back when
/// dropped by the connection's task or the task of the protocol it upgraded to.
pub(crate) struct Live {
    count: Rc<LiveCount>,
    /// The connection's place under its source's cap, where admission keeps one.
    slot: Option<SourceSlot>,
}

impl Live {
    fn count(live: &Rc<LiveCount>) -> Live {
        live.count.set(live.count.get() + 1);
        Live {
            count: Rc::clone(live),
            slot: None,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.slot = None;
        self.count.count.set(self.count.count.get() - 1);
        if let Some(w) = self.count.waker.take() {
            w.wake();
        }
    }
}

/// Sends a body that follows the head: flushes what is buffered, then the file (splice or
/// sendfile) or the stream's chunks as they come.
async fn send_body(io: &ConnIo, source: Source, out: &mut Vec<u8>) -> coring::Result<()> {
    match source {
        Source::Inline => {}
        Source::File { file, offset, len } => {
            io.tap_sent(out);
            flush(&io.stream, out).await?;
            let sent = io.stream.send_file(&file, offset, len).await?;
            if let Some(tap) = io.tap.borrow_mut().as_mut() {
                tap.sent_uncaptured(sent);
            }
            if sent < len {
                // The file shrank under us: the promised length cannot be met.
                return Err(coring::Error::new(
                    coring::ErrorKind::UnexpectedEof,
                    "send_file",
                ));
            }
        }
        Source::Stream(mut body) => {
            while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
                io.conn.borrow_mut().send_chunk(&chunk, out);
                io.tap_sent(out);
                flush(&io.stream, out).await?;
            }
        }
        // Not a body: `answer` hands the connection over after a 101 instead.
        Source::Upgrade(_) => {}
    }
    io.conn.borrow_mut().end_body(out);
    Ok(())
}

/// [`flush`] as the connection's last write (over TLS, with `close_notify`).
async fn flush_last(stream: &Transport, out: &mut Vec<u8>) -> coring::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let (r, back) = stream.write_last(std::mem::take(out)).await;
    *out = back;
    out.clear();
    r
}

async fn flush(stream: &Transport, out: &mut Vec<u8>) -> coring::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let (r, back) = stream.write_all(std::mem::take(out)).await;
    *out = back;
    out.clear();
    r
}

/// Serves one connection until it closes, errs, times out, or the runtime shuts down.
///
/// Bytes arrive in the core's pooled buffers (multishot receive) and go to the connection's
/// [`ServerConn`], which parses heads where they lie; every request it hands out is answered
/// in order into one output buffer, borrowed from the core, and written with one send per
/// batch. Then the loop waits for more bytes, the connection's deadline, or the shutdown.
pub async fn serve_connection<H: Handler>(
    stream: TcpStream,
    handler: &H,
    config: &Config,
) -> coring::Result<()> {
    let setup = Setup {
        connection: Rc::new(config.connection()),
        write_timeout: config.write_timeout,
        front: Front::of(config),
        gate: None,
        client: None,
        hook: config.on_error.clone(),
        capture: config.capture.clone(),
    };
    let count = Rc::new(LiveCount::default());
    let mut live = Live::count(&count);
    let stream = Rc::new(Transport::Tcp(stream));
    let upgraded = match drive(Rc::clone(&stream), handler, &setup, &mut live).await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            let client = stream.tcp().peer_addr().ok();
            hook::report(setup.hook.as_ref(), client, ConnError::Io(&e));
            return Err(e);
        }
    };
    if let Some((then, upgraded)) = upgraded {
        // The session runs as its own task; this waits until it gives its place back.
        then(upgraded, live);
        std::future::poll_fn(|cx| {
            if count.count.get() == 0 {
                return std::task::Poll::Ready(());
            }
            count.waker.set(Some(cx.waker().clone()));
            std::task::Poll::Pending
        })
        .await;
    }
    Ok(())
}

/// Serves HTTP on one connection; after a `101` it returns the new protocol's session and the
/// connection to run it on (everything HTTP held is let go by then).
///
/// `live` is the connection's place; behind a PROXY listener with admission, the client's
/// place under its source's cap joins it once the header has named the client.
async fn drive<H: Handler>(
    stream: Rc<Transport>,
    handler: &H,
    with: &Setup,
    live: &mut Live,
) -> coring::Result<Option<(reply::UpgradeFn, Upgraded)>> {
    let write_timeout = with.write_timeout;
    let _ = stream.tcp().set_nodelay(true);
    stream.tcp().set_write_timeout(Some(write_timeout));
    let io = Rc::new(ConnIo {
        reader: RefCell::new(Some(stream.reader())),
        stream,
        conn: RefCell::new(ServerConn::new(Rc::clone(&with.connection), time::now())),
        client: Cell::new(None),
        gate: with.gate.clone(),
        hook: with.hook.clone(),
        tap: RefCell::new(None),
    });
    if let Some(capture) = &with.capture {
        let tcp = io.stream.tcp();
        if let (Ok(peer), Ok(local)) = (tcp.peer_addr(), tcp.local_addr()) {
            *io.tap.borrow_mut() = Some(capture.connection(peer, local));
        }
    }
    let client = match &with.front {
        Front::Bare => with.client,
        Front::Peer => with.client.or_else(|| io.stream.tcp().peer_addr().ok()),
        Front::Proxy(proxy) => {
            let hook = with.hook.as_ref();
            let client = match read_proxy_header(&io, proxy).await {
                Ok(client) => client,
                Err((peer, why)) => {
                    hook::report(hook, peer, ConnError::Proxy(why));
                    return Ok(None);
                }
            };
            if let Some(gate) = &with.gate {
                match gate.admit(client.ip(), std::time::Instant::now()) {
                    Ok(slot) => live.slot = Some(slot),
                    Err(why) => {
                        hook::report(hook, Some(client), ConnError::Refused(why));
                        return Ok(None);
                    }
                }
            }
            Some(client)
        }
    };
    io.client.set(client);
    // The shared holder of received buffers, reused while no request still holds it.
    let mut holder: Option<Rc<Received>> = None;
    let mut waits = Waits {
        shutdown: coring::runtime::shutdown_signal(),
        shutdown_seen: false,
        timer: None,
    };
    loop {
        if !waits.shutdown_seen && coring::runtime::is_shutting_down() {
            waits.shutdown_seen = true;
            io.conn.borrow_mut().begin_shutdown(time::now());
        }
        let mut out = out_buffer::take();
        let mut done = answer(&io, handler, &mut out).await;
        io.conn.borrow_mut().poll_transmit(&mut out);
        io.tap_sent(&out);
        if done.is_ok() {
            // The answer after which the connection closes goes out as its last write.
            let last = io.conn.borrow().is_closing();
            let flushed = if last {
                flush_last(&io.stream, &mut out).await
            } else {
                flush(&io.stream, &mut out).await
            };
            if let Err(e) = flushed {
                done = Err(e);
            }
        }
        out_buffer::give_back(out);
        if let Some(then) = done? {
            // Answered 101: the connection is the new protocol's from here on.
            let leftover = io.conn.borrow_mut().take_upgraded();
            let reader = io.reader.borrow_mut().take();
            // The same timeout for the new protocol's writes, without the timer armed for the
            // 101 (it would keep this task's waker, and so its memory, for as long).
            io.stream.tcp().set_write_timeout(Some(write_timeout));
            let upgraded = Upgraded {
                transport: Rc::clone(&io.stream),
                reader,
                leftover,
                client: io.client.get(),
            };
            return Ok(Some((then, upgraded)));
        }
        if io.conn.borrow().is_closed() {
            if let Some(timer) = io.conn.borrow().timed_out() {
                hook::report(
                    io.hook.as_ref(),
                    io.client.get(),
                    ConnError::TimedOut(timer),
                );
            }
            return Ok(None);
        }
        if io.conn.borrow().is_closing() {
            return linger(&io).await.map(|()| None);
        }
        if io.conn.borrow().is_idle() {
            // Idle: the holder lets go of its buffer (or, if a request still has it, of it).
            if let Some(rc) = holder.as_mut() {
                match Rc::get_mut(rc) {
                    Some(received) => received.0 = None,
                    None => holder = None,
                }
            }
        }
        match waits.next(&io).await {
            Some(Ok(Some(buf))) => {
                let received = hold(&mut holder, buf);
                io.conn.borrow_mut().handle_shared(received, time::now());
            }
            Some(Ok(None)) => io.conn.borrow_mut().handle_eof(time::now()),
            Some(Err(e)) => return Err(e),
            None => {} // a deadline passed: the connection says what follows
        }
    }
}

/// Answers every request the connection has complete, in order, into `out`. Returns what
/// takes the connection over when an answer was `101 Switching Protocols`.
async fn answer<H: Handler>(
    io: &Rc<ConnIo>,
    handler: &H,
    out: &mut Vec<u8>,
) -> coring::Result<Option<reply::UpgradeFn>> {
    loop {
        let next = io.conn.borrow_mut().poll_request();
        let mut req = match next {
            None => return Ok(None),
            Some(Ok(req)) => req,
            Some(Err(e)) => {
                hook::report(io.hook.as_ref(), io.client.get(), ConnError::Http(&e));
                date::with_date(|_, date| io.conn.borrow_mut().respond_error(&e, date, out));
                return Ok(None);
            }
        };
        req.set_client_addr(io.client.get());
        if let Some(gate) = &io.gate
            && let Some(client) = io.client.get()
            && !gate.admit_request(client.ip(), std::time::Instant::now())
        {
            if !too_many_requests(io, out).await? {
                return Ok(None);
            }
            continue;
        }
        if io.conn.borrow().body_streams() {
            // Earlier answers go out first: the client may wait for them before it sends.
            flush(&io.stream, out).await?;
            req.set_extension(Rc::new(BodyStream::new(Rc::clone(io))));
        }
        // Encoded from where the answer lies; only a body that follows moves it again.
        let answer = handler.call(req).await;
        if io.conn.borrow().body_streams() {
            // What the handler left of its body is read first: if it breaks the framing, the
            // client is told that instead of the handler's answer.
            match BodyStream::new(Rc::clone(io)).discard().await {
                Ok(()) => {}
                Err(BodyError::Http(e)) => {
                    hook::report(io.hook.as_ref(), io.client.get(), ConnError::Http(&e));
                    date::with_date(|_, date| io.conn.borrow_mut().respond_error(&e, date, out));
                    return Ok(None);
                }
                Err(BodyError::Io(e)) => return Err(e),
            }
        }
        let follows = date::with_date(|now, date| {
            io.conn
                .borrow_mut()
                .respond(answer.response(), now, date, out)
        });
        if follows {
            send_body(io, answer.into_reply().source, out).await?;
        } else if io.conn.borrow().is_upgraded()
            && let Source::Upgrade(then) = answer.into_reply().source
        {
            return Ok(Some(then));
        }
    }
}

/// Answers a request over its source's request bucket with `429 Too Many Requests` (after
/// reading past a body it did not carry whole). `false` if the body broke the framing (the
/// error was answered instead).
async fn too_many_requests(io: &Rc<ConnIo>, out: &mut Vec<u8>) -> coring::Result<bool> {
    if io.conn.borrow().body_streams() {
        match BodyStream::new(Rc::clone(io)).discard().await {
            Ok(()) => {}
            Err(BodyError::Http(e)) => {
                hook::report(io.hook.as_ref(), io.client.get(), ConnError::Http(&e));
                date::with_date(|_, date| io.conn.borrow_mut().respond_error(&e, date, out));
                return Ok(false);
            }
            Err(BodyError::Io(e)) => return Err(e),
        }
    }
    let refusal = crate::http1::Response::new(429)
        .header("Retry-After", "1")
        .body("too many requests\n");
    date::with_date(|now, date| io.conn.borrow_mut().respond(&refusal, now, date, out));
    Ok(true)
}

/// A connection after its `101 Switching Protocols`: the stream, its pooled reader, and what
/// the client sent after the upgrade request (already read off the socket).
pub struct Upgraded {
    pub(crate) transport: Rc<Transport>,
    pub(crate) reader: Option<crate::transport::Reader>,
    /// Bytes that arrived with or right after the upgrade request: the new protocol's first.
    pub leftover: bytes::Bytes,
    pub(crate) client: Option<SocketAddr>,
}

impl Upgraded {
    /// The client's address as the HTTP connection knew it ([`Request::client_addr`]).
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client
    }

    /// The TCP stream beneath (under TLS, if the connection is encrypted), for its addresses
    /// and socket options.
    pub fn stream(&self) -> &TcpStream {
        self.transport.tcp()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(&*self.transport, Transport::Tcp(_))
    }

    /// Writes all of `data` (encrypted, over TLS).
    pub async fn write_all(&self, data: Vec<u8>) -> coring::Result<()> {
        self.transport.write_all(data).await.0
    }

    /// The next bytes the client sent after [`Upgraded::leftover`] (decrypted, over TLS);
    /// `None` once it closed its side.
    pub async fn recv(&mut self) -> coring::Result<Option<bytes::Bytes>> {
        let reader = self.reader.get_or_insert_with(|| self.transport.reader());
        let chunk = reader.next().await?;
        // A view of the pooled buffer or of the plaintext piece: no copy.
        Ok(chunk.map(crate::ws::RecvBuffer::into_bytes))
    }

    /// Closes our side of the stream (after `close_notify`, over TLS).
    pub async fn shutdown(&self) -> coring::Result<()> {
        self.transport.shutdown(std::net::Shutdown::Write).await
    }
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

/// Reads the PROXY header a connection starts with: the client it names (or, for the
/// balancer's own `LOCAL` connections, the peer), with the bytes after it handed to HTTP.
/// A PROXY listener closing a connection: the peer (when it could be asked) and why.
type ProxyClosed = (Option<SocketAddr>, ProxyRefusal);

/// `Err`: the connection is to be closed (untrusted peer, bad, slow or missing header), with
/// the peer and why; it was counted.
async fn read_proxy_header(io: &ConnIo, proxy: &ProxyProtocol) -> Result<SocketAddr, ProxyClosed> {
    let counters = proxy_counters();
    let peer = io
        .stream
        .tcp()
        .peer_addr()
        .map_err(|_| (None, ProxyRefusal::CutShort))?;
    trusts(proxy, peer)?;
    let deadline = time::now() + proxy.timeout;
    // A header split over receives is gathered here; one that arrives whole (the usual case)
    // is decoded where it lies.
    let mut held = Vec::new();
    loop {
        let chunk = match timeout_at(deadline, io.next_chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None) | Err(_)) => {
                admit::count(&counters.cut_short);
                return Err((Some(peer), ProxyRefusal::CutShort));
            }
            Err(_) => {
                admit::count(&counters.timed_out);
                return Err((Some(peer), ProxyRefusal::TimedOut));
            }
        };
        let bytes: &[u8] = if held.is_empty() {
            chunk.as_ref()
        } else {
            held.extend_from_slice(chunk.as_ref());
            &held
        };
        match decode_header(bytes, proxy, peer)? {
            Some((client, len)) => {
                if len < bytes.len() {
                    io.conn
                        .borrow_mut()
                        .handle_input(&bytes[len..], time::now());
                }
                return Ok(client);
            }
            None => {
                if held.is_empty() {
                    held.extend_from_slice(chunk.as_ref());
                }
            }
        }
    }
}

/// [`read_proxy_header`] for a TLS listener, on the socket itself (before any TLS): reads only
/// when asked, so nothing past what it returns is taken off the socket. The client and the
/// bytes that followed the header (the start of the TLS handshake).
#[cfg(feature = "tls")]
async fn read_proxy_header_raw(
    stream: &TcpStream,
    proxy: &ProxyProtocol,
) -> Result<(SocketAddr, Vec<u8>), ProxyClosed> {
    let counters = proxy_counters();
    let peer = stream
        .peer_addr()
        .map_err(|_| (None, ProxyRefusal::CutShort))?;
    trusts(proxy, peer)?;
    let deadline = time::now() + proxy.timeout;
    let mut held = Vec::new();
    loop {
        held.reserve(proxy.max_header.clamp(64, 4096));
        let (read, back) = match timeout_at(deadline, stream.read(held)).await {
            Ok(read) => read,
            Err(_) => {
                admit::count(&counters.timed_out);
                return Err((Some(peer), ProxyRefusal::TimedOut));
            }
        };
        held = back;
        if !matches!(read, Ok(n) if n > 0) {
            admit::count(&counters.cut_short);
            return Err((Some(peer), ProxyRefusal::CutShort));
        }
        if let Some((client, len)) = decode_header(&held, proxy, peer)? {
            return Ok((client, held.split_off(len)));
        }
    }
}

/// Whether `peer` may send PROXY headers; counted when not.
fn trusts(proxy: &ProxyProtocol, peer: SocketAddr) -> Result<(), ProxyClosed> {
    if proxy.trusted.iter().any(|net| net.contains(peer.ip())) {
        return Ok(());
    }
    admit::count(&proxy_counters().untrusted);
    Err((Some(peer), ProxyRefusal::Untrusted))
}

/// Decodes the header at the start of `bytes`: `Some((client, header length))` once whole,
/// `None` while partial, `Err` when the connection is to be closed; counted.
fn decode_header(
    bytes: &[u8],
    proxy: &ProxyProtocol,
    peer: SocketAddr,
) -> Result<Option<(SocketAddr, usize)>, ProxyClosed> {
    let counters = proxy_counters();
    match proxy::decode(bytes, proxy.max_header) {
        Ok(proxy::Decoded::Complete { header, len }) => {
            admit::count(&counters.accepted);
            if header.command == proxy::Command::Local {
                admit::count(&counters.local);
            }
            Ok(Some((header.client().unwrap_or(peer), len)))
        }
        Ok(proxy::Decoded::Partial) => Ok(None),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "PROXY listener: closed");
            let why = match e {
                proxy::ProxyError::Missing => {
                    admit::count(&counters.missing);
                    ProxyRefusal::Missing
                }
                _ => {
                    admit::count(&counters.malformed);
                    ProxyRefusal::Malformed
                }
            };
            Err((Some(peer), why))
        }
    }
}

/// Closes after the answer: our side first (FIN), then the client's unread bytes are dropped
/// for a while, so the close does not turn into a reset that could destroy the answer before
/// the client read it.
async fn linger(io: &ConnIo) -> coring::Result<()> {
    if io.stream.shutdown(std::net::Shutdown::Write).await.is_err() {
        return Ok(());
    }
    io.conn.borrow_mut().linger(time::now());
    loop {
        let Some(due) = io.conn.borrow().poll_timeout() else {
            break;
        };
        let got = timeout_at(due, io.next_chunk()).await;
        let now = time::now();
        let mut conn = io.conn.borrow_mut();
        match got {
            Ok(Ok(Some(buf))) => conn.handle_input(buf.as_ref(), now),
            Ok(Ok(None)) => conn.handle_eof(now),
            Ok(Err(_)) => return Ok(()),
            Err(_) => conn.handle_timeout(now),
        }
        if conn.is_closed() {
            break;
        }
    }
    Ok(())
}

/// What a waiting connection listens to besides its socket.
struct Waits {
    shutdown: coring::runtime::ShutdownSignal,
    shutdown_seen: bool,
    /// The connection's one timer, armed on its first wait and moved only when it fires
    /// early or must fire sooner: a busy connection touches no timer between requests.
    timer: Option<time::Sleep>,
}

impl Waits {
    /// The next received bytes, or `None` once the connection's deadline passed (it was told).
    /// Bytes that are here come first; only a connection that has to wait registers for
    /// shutdown (telling the connection, which then drains) and arms its timer.
    async fn next(&mut self, io: &ConnIo) -> Option<coring::Result<Option<Chunk>>> {
        let mut next = std::pin::pin!(io.next_chunk());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = next.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            if !self.shutdown_seen && Pin::new(&mut self.shutdown).poll(cx).is_ready() {
                self.shutdown_seen = true;
                io.conn.borrow_mut().begin_shutdown(time::now());
            }
            let Some(due) = io.conn.borrow().poll_timeout() else {
                return Poll::Pending;
            };
            let timer = self.timer.get_or_insert_with(|| time::sleep_until(due));
            if timer.deadline() > due {
                timer.reset(due);
            }
            while Pin::new(&mut *timer).poll(cx).is_ready() {
                let now = time::now();
                if now >= due {
                    io.conn.borrow_mut().handle_timeout(now);
                    return Poll::Ready(None);
                }
                timer.reset(due);
            }
            Poll::Pending
        })
        .await
    }
}

/// A received buffer behind the `Rc` its requests share; empty while the connection is idle.
struct Received(Option<Chunk>);

impl AsRef<[u8]> for Received {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |b| b.as_ref())
    }
}

/// `buf` behind a shared handle: the connection's holder again when no request from the last
/// buffer is alive (no allocation per read), else a new one.
fn hold(holder: &mut Option<Rc<Received>>, buf: Chunk) -> Rc<dyn AsRef<[u8]>> {
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

/// Output buffers lent to connections for one batch of responses, so an idle connection holds
/// none.
pub(crate) mod out_buffer {
    use std::cell::RefCell;

    /// Buffers kept for reuse per core.
    const KEEP: usize = 64;
    /// Buffers grown past this are not kept.
    const KEEP_BYTES: usize = 256 * 1024;

    thread_local! {
        static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn take() -> Vec<u8> {
        FREE.with(|f| f.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(16 * 1024))
    }

    pub(crate) fn give_back(mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > KEEP_BYTES {
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
