//! A client that reconnects: messages over TCP, TLS (feature `tls`) or WebSocket, kept through
//! whatever ends a connection, with the reason said each time.
//!
//! [`Reconnecting`] holds one connection to a [`Target`] at a time. When it cannot connect,
//! or its connection ends, it waits out a [`Backoff`] (exponential, with jitter, reset once a
//! connection has stayed up for [`Config::stable_after`]) and dials again, resolving the name
//! anew each time (so a server that moved to another address is found there). Each step is an
//! [`Event`] from [`Reconnecting::next`]: connected, a message, the connection lost and why
//! ([`Failure`]), a connect that failed and when the next is due, and giving up after
//! [`Config::max_attempts`].
//!
//! Messages given to [`Reconnecting::send`] while no connection is up are queued (bounded by
//! [`Config::max_queued`]) and written in order once one is. With [`Config::replay`], messages
//! written stay kept until the application acknowledges them ([`Reconnecting::ack`], when its
//! protocol says the server has them); whatever is unacknowledged when a connection ends is
//! written again, first and in order, on the next (at least once). Without replay a written
//! message is forgotten (at most once); one whose write failed is written again.
//!
//! A connection that stays silent is caught by the [`Heartbeat`]: on TCP and TLS, a frame of
//! the application's (`ping`) is written after `interval` without writing, and nothing read for
//! `interval + timeout` ends the connection as [`Failure::HalfOpen`]; on WebSocket the same
//! numbers drive Ping frames and their Pong deadline. [`Reconnecting::watch_network`] ends the
//! connection at once, without waiting for the heartbeat, when the host loses an address or its
//! default route changes ([`Failure::NetworkChanged`]).
//!
//! The failures it handles, each tested against real sockets in `tests/tests/reconnect.rs`,
//! are listed in `docs/reconnect.md`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use coring::net::TcpStream;
use coring::task::JoinHandle;
use coring::time::{self, Sleep};

use crate::dns::{self, ResolveError, Resolver};
use crate::framed::{FrameIo, Framed, FramedError};
use crate::framing::{Decoder, Encoder};
use crate::websocket::{self as ws, ConnectOptions, Message};

/// How long to wait before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait before the second attempt (the first is made at once).
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Each wait is this many times the one before (before jitter).
    pub multiplier: f64,
    /// How the wait is spread, so that clients cut off together do not come back together.
    pub jitter: Jitter,
}

/// Spreading of a [`Backoff`] wait `w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `w`.
    None,
    /// Uniform in `[0, w]` ("full jitter").
    Full,
    /// Uniform in `[w/2, w]` ("equal jitter"): never shorter than half.
    Equal,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Equal,
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failures (`failures ≥ 1`), with `random` any
    /// 64-bit value (uniform draws give uniform waits).
    pub fn delay(&self, failures: u32, random: u64) -> Duration {
        let exponent = failures.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let wait = base.min(self.max.as_secs_f64()).max(0.0);
        let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
        let spread = match self.jitter {
            Jitter::None => wait,
            Jitter::Full => wait * unit,
            Jitter::Equal => wait / 2.0 + wait / 2.0 * unit,
        };
        Duration::from_secs_f64(spread)
    }
}

/// Liveness checks on a connection (see the module docs).
#[derive(Clone, Debug)]
pub struct Heartbeat {
    /// Idle time before a ping is written.
    pub interval: Duration,
    /// How long past `interval` of silence the connection is given before it is ended.
    pub timeout: Duration,
    /// The frame written as a ping on TCP and TLS (its payload, framed by the codec); the
    /// server should answer it with anything. `None`: no pings, silence alone is checked.
    /// WebSocket pings with Ping frames whatever this says.
    pub ping: Option<Bytes>,
}

/// Where to connect.
#[derive(Clone, Debug)]
pub enum Target {
    /// A TCP connection to `host:port` (a name or an address).
    Tcp { host: String, port: u16 },
    /// TLS over TCP, the server's certificate checked for `host` against `config`'s roots.
    #[cfg(feature = "tls")]
    Tls {
        host: String,
        port: u16,
        config: std::sync::Arc<rustls::ClientConfig>,
    },
    /// A WebSocket (`ws://` or `wss://`); messages go out as binary ones.
    WebSocket {
        url: String,
        options: ConnectOptions,
    },
}

/// How a [`Reconnecting`] client behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Waits between attempts.
    pub backoff: Backoff,
    /// Deadline for one attempt: resolving, connecting and any handshake.
    pub connect_timeout: Duration,
    /// A connection up this long resets the backoff (the next failure waits `initial`).
    pub stable_after: Duration,
    /// Consecutive failed attempts before [`Event::GaveUp`] (`None`: never).
    pub max_attempts: Option<u32>,
    /// Liveness checks.
    pub heartbeat: Option<Heartbeat>,
    /// Keep written messages until acknowledged and write them again after a reconnect.
    pub replay: bool,
    /// Messages held (queued, and kept for replay) before [`SendError::QueueFull`].
    pub max_queued: usize,
    /// Resolves the target's name (the core's own when `None`).
    pub resolver: Option<Resolver>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            stable_after: Duration::from_secs(5),
            max_attempts: None,
            heartbeat: None,
            replay: false,
            max_queued: 4096,
            resolver: None,
        }
    }
}

/// Why a connection ended or could not be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The name did not resolve (no such name, no server answered...).
    #[error("{0}")]
    Resolve(ResolveError),
    /// Nothing listens there (a server down or restarting).
    #[error("connection refused")]
    Refused,
    /// The attempt did not finish within `connect_timeout`.
    #[error("connect timed out")]
    ConnectTimedOut,
    /// The peer reset the connection.
    #[error("connection reset")]
    Reset,
    /// The peer closed the connection (a server shutting down or restarting).
    #[error("closed by the peer")]
    Closed,
    /// Nothing arrived for `interval + timeout` of the heartbeat: the peer or the path is gone.
    #[error("no sign of life from the peer")]
    HalfOpen,
    /// The host's network changed under the connection (see `watch_network`).
    #[error("the network changed")]
    NetworkChanged,
    /// [`Reconnecting::reconnect`] asked for a new connection.
    #[error("reconnect asked for")]
    Asked,
    /// TLS failed (a handshake, a certificate).
    #[error("tls: {0}")]
    Tls(String),
    /// The peer broke the framing or the WebSocket protocol, or refused the upgrade.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Another socket error.
    #[error("{0}")]
    Io(coring::Error),
}

/// Identifies a message given to [`Reconnecting::send`] (increasing from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub u64);

/// What happened, from [`Reconnecting::next`].
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A connection is up after `attempt` attempts; `replayed` unacknowledged messages and
    /// `queued` held ones are being written on it, in that order.
    Connected {
        attempt: u32,
        replayed: usize,
        queued: usize,
    },
    /// A message from the server.
    Message(Bytes),
    /// The connection ended; the next attempt is in `retry_in`.
    Disconnected {
        failure: Failure,
        retry_in: Duration,
    },
    /// An attempt failed; the next is in `retry_in`.
    ConnectFailed {
        failure: Failure,
        attempt: u32,
        retry_in: Duration,
    },
    /// The codec refused to frame a message (over its size limit): it is handed back, not
    /// written, and the connection goes on.
    Unsendable {
        id: MsgId,
        message: Bytes,
        reason: String,
    },
    /// `max_attempts` attempts failed in a row: no more are made. The messages still held are
    /// handed back (nothing is dropped unsaid); `next` keeps returning this.
    GaveUp {
        failure: Failure,
        attempts: u32,
        unsent: Vec<(MsgId, Bytes)>,
    },
}

/// Why [`Reconnecting::send`] refused a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// `max_queued` messages are held already.
    #[error("queue full")]
    QueueFull(Bytes),
    /// The client gave up; nothing more is sent.
    #[error("gave up")]
    GaveUp(Bytes),
}

/// Counts since the client was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconnectStats {
    /// Connections made.
    pub connects: u64,
    /// Attempts that failed.
    pub connect_failures: u64,
    /// Connections that ended.
    pub disconnects: u64,
    /// Messages written again after a reconnect.
    pub replayed: u64,
    /// Messages written (replays and pings included).
    pub written: u64,
    /// Messages received.
    pub received: u64,
    /// Pings written.
    pub pings: u64,
}

/// A TCP or TLS stream, read and written as frames.
enum AnyStream {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(crate::tls::TlsStream),
}

impl FrameIo for AnyStream {
    async fn read_into(&self, buf: BytesMut) -> (Result<usize, FramedError>, BytesMut) {
        match self {
            AnyStream::Tcp(s) => s.read_into(buf).await,
            #[cfg(feature = "tls")]
            AnyStream::Tls(s) => s.read_into(buf).await,
        }
    }

    async fn write_all(&self, data: Vec<u8>) -> (Result<(), FramedError>, Vec<u8>) {
        match self {
            AnyStream::Tcp(s) => FrameIo::write_all(s, data).await,
            #[cfg(feature = "tls")]
            AnyStream::Tls(s) => FrameIo::write_all(s, data).await,
        }
    }

    async fn shutdown_write(&self) -> Result<(), FramedError> {
        match self {
            AnyStream::Tcp(s) => s.shutdown_write().await,
            #[cfg(feature = "tls")]
            AnyStream::Tls(s) => s.shutdown_write().await,
        }
    }
}

/// The untracked id pings are written under.
const PING: MsgId = MsgId(0);

/// What one connection's reader and writer tasks share with the client.
#[derive(Default)]
struct Shared {
    inbox: RefCell<VecDeque<Bytes>>,
    /// To write on this connection, in order.
    outbox: RefCell<VecDeque<(MsgId, Bytes)>>,
    /// Written, kept for replay (when replay is on).
    written: RefCell<VecDeque<(MsgId, Bytes)>>,
    failure: RefCell<Option<Failure>>,
    unsendable: RefCell<VecDeque<(MsgId, Bytes, String)>>,
    last_read: Cell<Option<Instant>>,
    last_write: Cell<Option<Instant>>,
    writes: Cell<u64>,
    client: RefCell<Option<Waker>>,
    writer: RefCell<Option<Waker>>,
}

impl Shared {
    fn fail(&self, failure: Failure) {
        self.failure.borrow_mut().get_or_insert(failure);
        self.wake_client();
    }

    fn wake_client(&self) {
        if let Some(w) = self.client.borrow_mut().take() {
            w.wake();
        }
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
    }
}

/// A live connection: its tasks and what they share.
struct Link {
    shared: Rc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    since: Instant,
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &mut self.tasks {
            task.abort();
        }
    }
}

/// A client that reconnects (see the module docs). `C` frames messages on TCP and TLS
/// targets (WebSocket frames its own).
pub struct Reconnecting<C> {
    target: Target,
    codec: C,
    config: Config,
    link: Option<Link>,
    /// Held while no connection is up: written first thing on the next one.
    queued: VecDeque<(MsgId, Bytes)>,
    /// Written and not yet acknowledged, oldest first (replay only).
    unacked: VecDeque<(MsgId, Bytes)>,
    next_id: u64,
    /// Consecutive failures (attempts, and connections that ended before `stable_after`):
    /// what the backoff grows with.
    failures: u32,
    /// Attempts since a connection was last up.
    round: u32,
    /// The wait announced for the next attempt.
    pending_wait: Option<Duration>,
    /// Why the last connection ended, not yet reported.
    ended: Option<Failure>,
    gave_up: Option<(Failure, u32)>,
    network: Option<(Rc<Cell<bool>>, JoinHandle<()>)>,
    network_waker: Rc<RefCell<Option<Waker>>>,
    heartbeat: Pin<Box<Sleep>>,
    random: u64,
    stats: ReconnectStats,
}

impl<C> Drop for Reconnecting<C> {
    fn drop(&mut self) {
        if let Some((_, task)) = &mut self.network {
            task.abort();
        }
    }
}

impl<C> std::fmt::Debug for Reconnecting<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting")
            .field("target", &self.target)
            .field("connected", &self.link.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn connect_failure(e: dns::ConnectError) -> Failure {
    match e {
        dns::ConnectError::Resolve(e) => Failure::Resolve(e),
        dns::ConnectError::TimedOut => Failure::ConnectTimedOut,
        dns::ConnectError::Connect(e) => io_failure(e),
    }
}

fn io_failure(e: coring::Error) -> Failure {
    match e.kind() {
        coring::ErrorKind::ConnectionRefused => Failure::Refused,
        coring::ErrorKind::ConnectionReset | coring::ErrorKind::BrokenPipe => Failure::Reset,
        coring::ErrorKind::UnexpectedEof => Failure::Closed,
        // (A connect's own deadline is `ConnectTimedOut`, said where it is set; any other
        // timeout is the socket's.)
        _ => Failure::Io(e),
    }
}

fn framed_failure(e: FramedError) -> Failure {
    match e {
        FramedError::Io(e) => io_failure(e),
        FramedError::Frame(e) => Failure::Protocol(e.to_string()),
        #[cfg(feature = "tls")]
        FramedError::Tls(crate::tls::TlsError::Io(e)) => io_failure(e),
        // Ended with close_notify, or without (a peer that stopped): closed either way.
        #[cfg(feature = "tls")]
        FramedError::Tls(crate::tls::TlsError::Closed | crate::tls::TlsError::Truncated) => {
            Failure::Closed
        }
        #[cfg(feature = "tls")]
        FramedError::Tls(e) => Failure::Tls(e.to_string()),
    }
}

fn ws_failure(e: ws::Error) -> Failure {
    match e {
        ws::Error::Io(e) => io_failure(e),
        ws::Error::Ws(crate::ws::WsError::PeerUnresponsive) => Failure::HalfOpen,
        ws::Error::Ws(crate::ws::WsError::Abrupt) => Failure::Reset,
        ws::Error::Ws(crate::ws::WsError::Closed) => Failure::Closed,
        ws::Error::Ws(e) => Failure::Protocol(e.to_string()),
    }
}

fn ws_connect_failure(e: ws::ConnectError) -> Failure {
    match e {
        ws::ConnectError::Resolve(e) => Failure::Resolve(e),
        ws::ConnectError::Io(e) => io_failure(e),
        ws::ConnectError::Timeout => Failure::ConnectTimedOut,
        #[cfg(feature = "tls")]
        ws::ConnectError::Tls(e) => Failure::Tls(e.to_string()),
        other => Failure::Protocol(other.to_string()),
    }
}

impl<C> Reconnecting<C>
where
    C: Decoder<Item = Bytes> + Encoder<[u8]> + Clone + 'static,
{
    /// A client of `target`, framing messages with `codec` (TCP and TLS). It connects on the
    /// first [`Reconnecting::next`].
    pub fn new(target: Target, codec: C, config: Config) -> Reconnecting<C> {
        let seed = crate::websocket::random_u64() | 1;
        Reconnecting {
            target,
            codec,
            config,
            link: None,
            queued: VecDeque::new(),
            unacked: VecDeque::new(),
            next_id: 0,
            failures: 0,
            round: 0,
            pending_wait: None,
            ended: None,
            gave_up: None,
            network: None,
            network_waker: Rc::new(RefCell::new(None)),
            heartbeat: Box::pin(time::sleep(Duration::from_secs(3600))),
            random: seed,
            stats: ReconnectStats::default(),
        }
    }

    /// Sends `message`: written now if a connection is up, else held for the next.
    pub fn send(&mut self, message: impl Into<Bytes>) -> Result<MsgId, SendError> {
        let message = message.into();
        if self.gave_up.is_some() {
            return Err(SendError::GaveUp(message));
        }
        if self.held() >= self.config.max_queued {
            return Err(SendError::QueueFull(message));
        }
        self.next_id += 1;
        let id = MsgId(self.next_id);
        match &self.link {
            Some(link) => {
                link.shared.outbox.borrow_mut().push_back((id, message));
                link.shared.wake_writer();
            }
            None => self.queued.push_back((id, message)),
        }
        Ok(id)
    }

    /// Messages held: queued, being written, and kept for replay.
    pub fn held(&self) -> usize {
        let on_link = self.link.as_ref().map_or(0, |l| {
            l.shared.outbox.borrow().len() + l.shared.written.borrow().len()
        });
        self.queued.len() + self.unacked.len() + on_link
    }

    /// Acknowledges every message up to and including `id` (replay: they are not written
    /// again). Returns how many were released.
    pub fn ack(&mut self, id: MsgId) -> usize {
        self.collect_written();
        let before = self.unacked.len();
        self.unacked.retain(|(held, _)| *held > id);
        before - self.unacked.len()
    }

    /// Messages written and not acknowledged (replay only).
    pub fn unacked(&self) -> usize {
        self.unacked.len()
            + self
                .link
                .as_ref()
                .map_or(0, |l| l.shared.written.borrow().len())
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// Counts so far.
    pub fn stats(&self) -> ReconnectStats {
        let mut stats = self.stats;
        if let Some(link) = &self.link {
            stats.written += link.shared.writes.get();
        }
        stats
    }

    /// Ends the current connection (reported as [`Failure::Asked`]) and connects again at
    /// once.
    pub fn reconnect(&mut self) {
        if self.link.is_some() {
            self.drop_link(Failure::Asked);
        }
    }

    /// Ends the connection at once when the host loses an address, a link goes down or the
    /// default route changes, instead of waiting for the heartbeat to notice.
    pub fn watch_network(&mut self, mut changes: crate::netwatch::NetworkChanges) {
        use crate::netwatch::NetEvent;
        let flag = Rc::new(Cell::new(false));
        let (set, waker) = (flag.clone(), self.network_waker.clone());
        let task = coring::spawn_local(async move {
            // The links there are are reported first; they are no change.
            let mut settled = false;
            loop {
                let event = match time::timeout(Duration::from_millis(200), changes.next()).await {
                    Err(_) => {
                        settled = true;
                        continue;
                    }
                    Ok(Ok(event)) => event,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "network-change events ended");
                        return;
                    }
                };
                let change = match event {
                    NetEvent::AddressRemoved { .. }
                    | NetEvent::DefaultRoute { .. }
                    | NetEvent::LinkRemoved { .. }
                    | NetEvent::Overflow
                    | NetEvent::Link { up: false, .. } => true,
                    NetEvent::Link { up: true, .. } | NetEvent::AddressAdded { .. } => false,
                };
                if change && settled {
                    set.set(true);
                    if let Some(w) = waker.borrow_mut().take() {
                        w.wake();
                    }
                }
            }
        });
        self.network = Some((flag, task));
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: jitter needs spread, not secrecy.
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Moves what the writer wrote on the current connection into `unacked`.
    fn collect_written(&mut self) {
        if let Some(link) = &self.link {
            self.unacked
                .extend(link.shared.written.borrow_mut().drain(..));
        }
    }

    fn drop_link(&mut self, failure: Failure) {
        self.collect_written();
        let Some(link) = self.link.take() else {
            return;
        };
        self.stats.disconnects += 1;
        self.stats.written += link.shared.writes.get();
        // A connection the host ended (or the application did) is no fault of the server's:
        // the next attempt is made at once. So it is after a connection that stayed up.
        let ours = matches!(failure, Failure::NetworkChanged | Failure::Asked);
        if ours || link.since.elapsed() >= self.config.stable_after {
            self.failures = 0;
        } else {
            self.failures += 1;
        }
        // Not yet written: held for the next connection, ahead of anything queued since.
        let unwritten: Vec<_> = link.shared.outbox.borrow_mut().drain(..).collect();
        for item in unwritten.into_iter().rev() {
            if item.0 != PING {
                self.queued.push_front(item);
            }
        }
        drop(link);
        self.ended = Some(failure);
    }

    /// The next event. Drive it continuously: connecting, reading, heartbeats and replay all
    /// happen inside it.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some((failure, attempts)) = &self.gave_up {
                return Event::GaveUp {
                    failure: failure.clone(),
                    attempts: *attempts,
                    unsent: Vec::new(),
                };
            }
            if let Some(failure) = self.ended.take() {
                let retry_in = self.retry_delay();
                self.pending_wait = Some(retry_in);
                return Event::Disconnected { failure, retry_in };
            }
            if self.link.is_none() {
                if let Some(event) = self.connect().await {
                    return event;
                }
                continue;
            }
            match self.serve().await {
                Ok(event) => return event,
                Err(failure) => self.drop_link(failure),
            }
        }
    }

    /// The wait before the next attempt (none right after a connection that was up).
    fn retry_delay(&mut self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let random = self.random();
        self.config.backoff.delay(self.failures, random)
    }

    /// One attempt (after its backoff wait). `None`: connected, go on serving.
    async fn connect(&mut self) -> Option<Event> {
        if let Some(wait) = self.pending_wait.take()
            && !wait.is_zero()
        {
            time::sleep(wait).await;
        }
        self.round += 1;
        let attempt = self.round;
        let failure = match time::timeout(self.config.connect_timeout, self.dial()).await {
            Ok(Ok((shared, tasks))) => {
                self.round = 0;
                // A change seen while no connection was up is no reason to drop this one.
                if let Some((changed, _)) = &self.network {
                    changed.set(false);
                }
                self.stats.connects += 1;
                let replayed = if self.config.replay {
                    self.unacked.len()
                } else {
                    0
                };
                let queued = self.queued.len();
                self.stats.replayed += replayed as u64;
                {
                    let mut outbox = shared.outbox.borrow_mut();
                    outbox.extend(self.unacked.drain(..));
                    outbox.extend(self.queued.drain(..));
                }
                shared.wake_writer();
                self.link = Some(Link {
                    shared,
                    tasks,
                    since: time::now(),
                });
                return Some(Event::Connected {
                    attempt,
                    replayed,
                    queued,
                });
            }
            Ok(Err(failure)) => failure,
            Err(_) => Failure::ConnectTimedOut,
        };
        self.failures += 1;
        self.stats.connect_failures += 1;
        if self.config.max_attempts.is_some_and(|max| attempt >= max) {
            let unsent: Vec<_> = self
                .unacked
                .drain(..)
                .chain(self.queued.drain(..))
                .collect();
            self.gave_up = Some((failure.clone(), attempt));
            return Some(Event::GaveUp {
                failure,
                attempts: attempt,
                unsent,
            });
        }
        let retry_in = self.retry_delay();
        self.pending_wait = Some(retry_in);
        Some(Event::ConnectFailed {
            failure,
            attempt,
            retry_in,
        })
    }

    /// Connects to the target and starts the connection's reader and writer.
    async fn dial(&self) -> Result<(Rc<Shared>, Vec<JoinHandle<()>>), Failure> {
        let shared = Rc::new(Shared::default());
        let now = time::now();
        shared.last_read.set(Some(now));
        shared.last_write.set(Some(now));
        let timeout = self.config.connect_timeout;
        let resolver = self.config.resolver.as_ref();
        let tasks = match &self.target {
            Target::Tcp { host, port } => {
                let stream = dns::connect_with(resolver, host, *port, timeout)
                    .await
                    .map_err(connect_failure)?;
                self.spawn_stream(AnyStream::Tcp(stream), &shared)
            }
            #[cfg(feature = "tls")]
            Target::Tls { host, port, config } => {
                let stream = dns::connect_with(resolver, host, *port, timeout)
                    .await
                    .map_err(connect_failure)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| Failure::Tls(format!("{host}: not a server name")))?;
                let tls = crate::tls::TlsConnector::new(config.clone())
                    .handshake_timeout(timeout)
                    .connect(name, stream)
                    .await
                    .map_err(|e| match e {
                        crate::tls::TlsError::Io(e) => io_failure(e),
                        crate::tls::TlsError::HandshakeTimeout => Failure::ConnectTimedOut,
                        e => Failure::Tls(e.to_string()),
                    })?;
                self.spawn_stream(AnyStream::Tls(tls), &shared)
            }
            Target::WebSocket { url, options } => {
                let mut options = options.clone();
                options.timeout = timeout;
                if options.resolver.is_none() {
                    options.resolver = self.config.resolver.clone();
                }
                if let Some(heartbeat) = &self.config.heartbeat {
                    options.config.ping_after_idle = Some(heartbeat.interval);
                    options.config.pong_timeout = heartbeat.timeout;
                }
                let socket = ws::connect_with(url, &options)
                    .await
                    .map_err(ws_connect_failure)?;
                spawn_ws(socket, &shared, self.config.replay)
            }
        };
        Ok((shared, tasks))
    }

    fn spawn_stream(&self, stream: AnyStream, shared: &Rc<Shared>) -> Vec<JoinHandle<()>> {
        let stream = Rc::new(stream);
        let mut framed = Framed::new(Rc::clone(&stream), self.codec.clone());
        let reading = Rc::clone(shared);
        let reader = coring::spawn_local(async move {
            loop {
                match framed.next().await {
                    Ok(Some(frame)) => {
                        reading.last_read.set(Some(time::now()));
                        reading.inbox.borrow_mut().push_back(frame);
                        reading.wake_client();
                    }
                    Ok(None) => return reading.fail(Failure::Closed),
                    Err(e) => return reading.fail(framed_failure(e)),
                }
            }
        });
        let writing = Rc::clone(shared);
        let mut codec = self.codec.clone();
        let replay = self.config.replay;
        let writer = coring::spawn_local(async move {
            let mut out = Vec::new();
            loop {
                let batch = next_batch(&writing).await;
                out.clear();
                let mut framed_ok = Vec::with_capacity(batch.len());
                for (id, message) in batch {
                    match codec.encode(&message[..], &mut out) {
                        Ok(()) => framed_ok.push((id, message)),
                        Err(e) => {
                            writing
                                .unsendable
                                .borrow_mut()
                                .push_back((id, message, e.to_string()));
                            writing.wake_client();
                        }
                    }
                }
                if framed_ok.is_empty() {
                    continue;
                }
                let (written, back) = stream.write_all(std::mem::take(&mut out)).await;
                out = back;
                if let Err(e) = written {
                    requeue(&writing, framed_ok);
                    return writing.fail(framed_failure(e));
                }
                wrote(&writing, framed_ok, replay);
            }
        });
        vec![reader, writer]
    }

    /// Serves the connection until it yields an event, or fails.
    async fn serve(&mut self) -> Result<Event, Failure> {
        let Some(link) = self.link.as_ref() else {
            return Err(Failure::Closed);
        };
        let shared = Rc::clone(&link.shared);
        let silence_check = !matches!(self.target, Target::WebSocket { .. });
        let heartbeat = self.config.heartbeat.clone().filter(|_| silence_check);
        let network = self.network.as_ref().map(|(flag, _)| Rc::clone(flag));
        let network_waker = Rc::clone(&self.network_waker);
        let timer = &mut self.heartbeat;
        let mut pings = 0;
        let result = std::future::poll_fn(|cx| {
            loop {
                if let Some(message) = shared.inbox.borrow_mut().pop_front() {
                    return Poll::Ready(Ok(Event::Message(message)));
                }
                if let Some((id, message, reason)) = shared.unsendable.borrow_mut().pop_front() {
                    return Poll::Ready(Ok(Event::Unsendable {
                        id,
                        message,
                        reason,
                    }));
                }
                if let Some(failure) = shared.failure.borrow_mut().take() {
                    return Poll::Ready(Err(failure));
                }
                if let Some(flag) = &network {
                    if flag.replace(false) {
                        return Poll::Ready(Err(Failure::NetworkChanged));
                    }
                    *network_waker.borrow_mut() = Some(cx.waker().clone());
                }
                *shared.client.borrow_mut() = Some(cx.waker().clone());
                let Some(heartbeat) = &heartbeat else {
                    return Poll::Pending;
                };
                let now = time::now();
                let last_read = shared.last_read.get().unwrap_or(now);
                let dead_at = last_read + heartbeat.interval + heartbeat.timeout;
                if now >= dead_at {
                    return Poll::Ready(Err(Failure::HalfOpen));
                }
                let mut wake_at = dead_at;
                if let Some(ping) = &heartbeat.ping {
                    let last_write = shared.last_write.get().unwrap_or(now);
                    if now >= last_write + heartbeat.interval {
                        shared.outbox.borrow_mut().push_back((PING, ping.clone()));
                        shared.last_write.set(Some(now));
                        shared.wake_writer();
                        pings += 1;
                        wake_at = wake_at.min(now + heartbeat.interval);
                    } else {
                        wake_at = wake_at.min(last_write + heartbeat.interval);
                    }
                }
                timer.as_mut().reset(wake_at);
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await;
        self.stats.pings += pings;
        if matches!(result, Ok(Event::Message(_))) {
            self.stats.received += 1;
        }
        result
    }
}

/// Everything queued for the writer, once there is something.
async fn next_batch(shared: &Shared) -> Vec<(MsgId, Bytes)> {
    std::future::poll_fn(|cx| {
        let mut outbox = shared.outbox.borrow_mut();
        if outbox.is_empty() {
            *shared.writer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(outbox.drain(..).collect())
        }
    })
    .await
}

/// Messages whose write failed go back to the front of the outbox (the client requeues them).
fn requeue(shared: &Shared, batch: Vec<(MsgId, Bytes)>) {
    let mut outbox = shared.outbox.borrow_mut();
    for item in batch.into_iter().rev() {
        outbox.push_front(item);
    }
}

/// Counts written messages and keeps them for replay.
fn wrote(shared: &Shared, batch: Vec<(MsgId, Bytes)>, replay: bool) {
    shared.last_write.set(Some(time::now()));
    shared.writes.set(shared.writes.get() + batch.len() as u64);
    if replay {
        shared
            .written
            .borrow_mut()
            .extend(batch.into_iter().filter(|(id, _)| *id != PING));
    }
}

fn spawn_ws(socket: ws::WebSocket, shared: &Rc<Shared>, replay: bool) -> Vec<JoinHandle<()>> {
    let (mut reader, writer) = socket.split();
    let reading = Rc::clone(shared);
    let reader = coring::spawn_local(async move {
        loop {
            match reader.recv().await {
                Ok(Some(message)) => {
                    reading.last_read.set(Some(time::now()));
                    reading
                        .inbox
                        .borrow_mut()
                        .push_back(message.bytes().clone());
                    reading.wake_client();
                }
                Ok(None) => return reading.fail(Failure::Closed),
                Err(e) => return reading.fail(ws_failure(e)),
            }
        }
    });
    let writing = Rc::clone(shared);
    let writer = coring::spawn_local(async move {
        loop {
            let mut batch: VecDeque<_> = next_batch(&writing).await.into();
            while let Some((id, message)) = batch.pop_front() {
                if id == PING {
                    continue;
                }
                if let Err(e) = writer.send(&Message::Binary(message.clone())).await {
                    batch.push_front((id, message));
                    requeue(&writing, batch.into());
                    return writing.fail(ws_failure(e));
                }
                wrote(&writing, vec![(id, message)], replay);
            }
        }
    });
    vec![reader, writer]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_within_its_jitter() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: Jitter::None,
        };
        let waits: Vec<u128> = (1..=7).map(|n| backoff.delay(n, 0).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff.delay(u32::MAX, 0), Duration::from_secs(2));
        let equal = Backoff {
            jitter: Jitter::Equal,
            ..backoff
        };
        let full = Backoff {
            jitter: Jitter::Full,
            ..backoff
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let (mut low, mut high) = (Duration::MAX, Duration::ZERO);
        for _ in 0..10_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let e = equal.delay(3, state);
            assert!(e >= Duration::from_millis(200) && e <= Duration::from_millis(400));
            let f = full.delay(3, state);
            assert!(f <= Duration::from_millis(400));
            low = low.min(f);
            high = high.max(f);
        }
        assert!(low < Duration::from_millis(20) && high > Duration::from_millis(380));
    }
}
