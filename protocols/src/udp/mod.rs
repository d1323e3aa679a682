//! netcode sessions on coring UDP sockets: the loop that drives a [`netcode::Server`] on one
//! core's socket, and a client for tests, load generators and users.
//!
//! The server loop receives into the core's buffer pool (multishot recvmsg on io_uring), opens
//! each payload in the pooled buffer it arrived in, hands it to the handler, and sends the
//! turn's datagrams with one batched submission. Run one per core on a `bind_reuseport` socket:
//! the kernel sends each client address to one core, so each core's server owns its sessions
//! and shares nothing. (Where SO_REUSEPORT does not exist the cores would share one socket and
//! a client's datagrams could reach any core: serve netcode on one core there.)

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coring::buf::PooledBuf;
use coring::net::{UdpPooled, UdpSocket};
use coring::runtime::until_shutdown;
use coring::shard::Mailbox;
use coring::time::{now, timeout, timeout_at};

use crate::netcode::{
    self, ClientIndex, ClientState, ConnectToken, DisconnectReason, MAX_PACKET_BYTES, SendError,
    ServerEvent, ServerStats, USER_DATA_BYTES,
};

/// Datagrams handled per turn before the turn's replies go out.
const BATCH: usize = 64;

/// What happened, as the server loop tells its handler.
#[derive(Debug)]
pub enum Event<'a> {
    /// A client joined a slot.
    Connected {
        /// Its slot.
        client: ClientIndex,
        /// Its id from the token.
        client_id: u64,
        /// Its address.
        addr: SocketAddr,
        /// The token's user data.
        user_data: &'a [u8; USER_DATA_BYTES],
    },
    /// A payload from a client, decrypted where it was received.
    Payload {
        /// From which slot.
        client: ClientIndex,
        /// The payload.
        data: &'a [u8],
    },
    /// A session ended.
    Disconnected {
        /// The slot it held.
        client: ClientIndex,
        /// Its id.
        client_id: u64,
        /// Why.
        reason: DisconnectReason,
    },
    /// A session moved to a new address (resumption; see [`netcode::ServerConfig::resumption`]).
    Moved {
        /// Its slot.
        client: ClientIndex,
        /// The old address.
        from: SocketAddr,
        /// The new one.
        to: SocketAddr,
    },
    /// The tick [`serve_with_tick`] was asked for: a fixed-rate turn for game logic.
    Tick,
}

/// What a handler may do while it handles an event: send, disconnect, look.
#[derive(Debug)]
pub struct Sessions<'s> {
    server: &'s mut netcode::Server,
    out: &'s mut Outbox,
    now: Instant,
}

impl Sessions<'_> {
    /// Queues `payload` to `client`; it goes out with this turn's batch.
    pub fn send(&mut self, client: ClientIndex, payload: &[u8]) -> Result<(), SendError> {
        let mut buf = self.out.buffer();
        match self.server.send(self.now, client, payload, &mut buf) {
            Ok(t) => {
                // Until the client confirms, the server queues a keep-alive to go first.
                self.out.drain(self.server, self.now);
                buf.truncate(t.len);
                self.out.queue.push((buf, t.to));
                Ok(())
            }
            Err(e) => {
                self.out.spare.push(buf);
                Err(e)
            }
        }
    }

    /// Ends `client`'s session (disconnect packets go out with this turn's batch).
    pub fn disconnect(&mut self, client: ClientIndex) {
        self.server.disconnect(client);
    }

    /// The server, to look at its sessions and counters.
    pub fn server(&self) -> &netcode::Server {
        self.server
    }

    /// The slot of index `i` (for loops over slots).
    fn client(&self, i: usize) -> ClientIndex {
        self.server.slot(i)
    }
}

/// The turn's outgoing datagrams, and spare buffers for the next ones.
#[derive(Debug)]
struct Outbox {
    queue: Vec<(Vec<u8>, SocketAddr)>,
    spare: Vec<Vec<u8>>,
    /// Runs of datagrams to one destination go out as one GSO send (until the kernel or the
    /// route refuses one: then never again on this socket).
    gso: bool,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            queue: Vec::new(),
            spare: Vec::new(),
            gso: UdpSocket::SEGMENTATION,
        }
    }
}

/// Most datagrams in one GSO send (the kernel's limit, `UDP_MAX_SEGMENTS`, is 64 before 6.11).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send (a UDP datagram's limit, with room for the headers).
const GSO_MAX_BYTES: usize = 65_000;

/// A run of consecutive datagrams in a batch that one GSO send can carry: `len` of them from
/// `start`, all to one destination, each `segment` bytes but the last, which may be shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Train {
    start: usize,
    len: usize,
    segment: usize,
}

/// The trains of two or more datagrams in `batch`, in order, not overlapping.
fn trains(batch: &[(Vec<u8>, SocketAddr)]) -> Vec<Train> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        let (first, to) = (&batch[i].0, batch[i].1);
        let segment = first.len();
        let (mut len, mut bytes) = (1, segment);
        while let Some((next, next_to)) = batch.get(i + len) {
            let fits = *next_to == to
                && next.len() <= segment
                && len < GSO_MAX_SEGMENTS
                && bytes + next.len() <= GSO_MAX_BYTES;
            if !fits {
                break;
            }
            len += 1;
            bytes += next.len();
            // A shorter one ends the train: only the last segment may be short.
            if next.len() < segment {
                break;
            }
        }
        if len >= 2 && segment > 0 {
            found.push(Train {
                start: i,
                len,
                segment,
            });
        }
        i += len;
    }
    found
}

impl Outbox {
    fn buffer(&mut self) -> Vec<u8> {
        let mut buf = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(MAX_PACKET_BYTES));
        buf.resize(MAX_PACKET_BYTES, 0);
        buf
    }

    /// Everything the server has queued (challenges, keep-alives, disconnects, denials).
    fn drain(&mut self, server: &mut netcode::Server, now: Instant) {
        // Nothing queued (the common case, after every payload sent): no buffer taken.
        while server.has_transmit() {
            let mut buf = self.buffer();
            let Some(t) = server.poll_transmit(now, &mut buf) else {
                self.spare.push(buf);
                return;
            };
            buf.truncate(t.len);
            self.queue.push((buf, t.to));
        }
    }

    /// Sends the turn's datagrams: runs to one destination as GSO sends, the rest with one
    /// `send_many`, all in one submission.
    async fn flush(&mut self, socket: &UdpSocket) {
        if self.queue.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.queue);
        let found = if self.gso { trains(&batch) } else { Vec::new() };
        if found.is_empty() {
            for (result, buf) in socket.send_many(batch).await {
                report(result);
                self.spare.push(buf);
            }
            return;
        }
        // Each train's datagrams joined into one buffer (in reverse, so earlier indexes hold).
        let mut joined = Vec::with_capacity(found.len());
        for t in found.iter().rev() {
            let to = batch[t.start].1;
            let mut one = Vec::with_capacity(t.segment * t.len);
            for (buf, _) in batch.drain(t.start..t.start + t.len) {
                one.extend_from_slice(&buf);
                self.spare.push(buf);
            }
            joined.push((one, t.segment as u16, to));
        }
        let refused = std::cell::Cell::new(false);
        let segmented = coring::task::join_all(joined.into_iter().map(|(buf, segment, to)| {
            let refused = &refused;
            async move {
                let (result, buf) = socket.send_segments(buf, segment, to).await;
                if result.is_err() {
                    // Refused (no GSO on this route, or a kernel without it): each one alone.
                    refused.set(true);
                    let one_by_one = buf
                        .chunks(usize::from(segment))
                        .map(|c| (c.to_vec(), to))
                        .collect();
                    for (result, _) in socket.send_many(one_by_one).await {
                        report(result);
                    }
                }
                // The joined buffer is dropped: the spares are the datagrams' own buffers.
                drop(buf);
            }
        }));
        let (singles, ()) = both(socket.send_many(batch), segmented).await;
        for (result, buf) in singles {
            report(result);
            self.spare.push(buf);
        }
        if refused.get() {
            tracing::debug!("UDP GSO refused on this socket; sending datagrams one by one");
            self.gso = false;
        }
    }
}

/// Serves netcode sessions on `socket` until the core shuts down, calling `handler` for each
/// event; at shutdown every session is told (disconnect packets) before the loop returns the
/// server's counters. The socket is set not to fragment ([`UdpSocket::set_dont_fragment`]):
/// no netcode packet is longer than [`MAX_PACKET_BYTES`].
pub async fn serve<H>(socket: UdpSocket, server: netcode::Server, handler: H) -> ServerStats
where
    H: FnMut(&mut Sessions<'_>, Event<'_>),
{
    serve_with_tick(socket, server, None, handler).await
}

/// [`serve`], with an [`Event::Tick`] every `tick` (absolute deadlines: a late tick does not
/// push the next one back).
pub async fn serve_with_tick<H>(
    socket: UdpSocket,
    server: netcode::Server,
    tick: Option<Duration>,
    handler: H,
) -> ServerStats
where
    H: FnMut(&mut Sessions<'_>, Event<'_>),
{
    serve_inner(socket, server, tick, None, handler).await
}

/// [`serve_with_tick`] on one core of several serving one address (`bind_reuseport`), with
/// sessions that may move between them: a resume that reaches a core not holding its session
/// goes to the core that does, and so, after the move, do the datagrams from the session's new
/// address. The server's [`netcode::ServerConfig::index_base`] must be [`Shards::index_base`].
pub async fn serve_sharded<H>(
    socket: UdpSocket,
    server: netcode::Server,
    tick: Option<Duration>,
    shards: Shards,
    handler: H,
) -> ServerStats
where
    H: FnMut(&mut Sessions<'_>, Event<'_>),
{
    serve_inner(socket, server, tick, Some(shards), handler).await
}

async fn serve_inner<H>(
    socket: UdpSocket,
    mut server: netcode::Server,
    tick: Option<Duration>,
    shards: Option<Shards>,
    mut handler: H,
) -> ServerStats
where
    H: FnMut(&mut Sessions<'_>, Event<'_>),
{
    // Netcode packets are at most MAX_PACKET_BYTES, under any real path MTU: they are never
    // fragmented (and on Linux each IPv4 send skips the kernel's IP ID hash).
    if let Err(e) = socket.set_dont_fragment(true)
        && e.kind() != coring::ErrorKind::Unsupported
    {
        tracing::debug!(error = %e, "netcode socket: don't-fragment not set");
    }
    let mut rx = socket.pooled();
    let mut out = Outbox::default();
    let mut next_tick = tick.map(|t| now() + t);
    let mut routes = shards.as_ref().map(|s| Routes::new(s, &server));
    loop {
        let deadline = match next_tick {
            Some(t) => t.min(server.poll_timeout()),
            None => server.poll_timeout(),
        };
        let mail = shards.as_ref().map(Shards::mailbox);
        let first = until_shutdown(timeout_at(deadline, next_input(&mut rx, mail))).await;
        let Some(first) = first else { break };
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(received) = next.take() {
            let now = now();
            match received {
                Ok(Input::Datagram(Ok(datagram))) => {
                    let routed = routes
                        .as_mut()
                        .is_some_and(|r| r.forward(&server, &datagram));
                    if !routed {
                        handle(&mut server, &mut out, &mut handler, now, datagram);
                    }
                    handled += 1;
                }
                Ok(Input::Datagram(Err(e))) => {
                    tracing::warn!(error = %e, "netcode receive failed");
                }
                Ok(Input::Mail(mail)) => {
                    if let Some(r) = routes.as_mut() {
                        r.arrived(&mut server, &mut out, &mut handler, now, mail);
                    }
                    handled += 1;
                }
                Err(_elapsed) => {}
            }
            if handled >= BATCH {
                break;
            }
            if let Some(mail) = shards.as_ref().and_then(|s| s.mailbox().try_recv()) {
                next = Some(Ok(Input::Mail(mail)));
            } else if let Ok(more) = timeout(Duration::ZERO, rx.next()).await {
                next = Some(Ok(Input::Datagram(more)));
            }
        }
        let now = now();
        server.handle_timeout(now);
        events(&mut server, &mut out, &mut handler, now);
        if let (Some(due), Some(period)) = (next_tick, tick)
            && due <= now
        {
            let mut sessions = Sessions {
                server: &mut server,
                out: &mut out,
                now,
            };
            handler(&mut sessions, Event::Tick);
            // Skip ticks missed entirely rather than firing them back to back.
            let mut next = due + period;
            while next <= now {
                next += period;
            }
            next_tick = Some(next);
        }
        out.drain(&mut server, now);
        out.flush(&socket).await;
    }
    // Shutdown: tell every client, once.
    let now = now();
    let clients: Vec<ClientIndex> = server.clients().collect();
    for client in clients {
        server.disconnect(client);
    }
    events(&mut server, &mut out, &mut handler, now);
    out.drain(&mut server, now);
    out.flush(&socket).await;
    server.stats().clone()
}

/// Runs `a` and `b` together (both submit before either is awaited); both outputs.
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    use std::task::Poll;
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut a_out, mut b_out) = (None, None);
    std::future::poll_fn(|cx| {
        if a_out.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            a_out = Some(v);
        }
        if b_out.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            b_out = Some(v);
        }
        match (a_out.take(), b_out.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                (a_out, b_out) = (a, b);
                Poll::Pending
            }
        }
    })
    .await
}

fn report(result: coring::Result<usize>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "netcode send failed");
    }
}

fn handle<H>(
    server: &mut netcode::Server,
    out: &mut Outbox,
    handler: &mut H,
    now: Instant,
    datagram: coring::net::Datagram<SocketAddr>,
) where
    H: FnMut(&mut Sessions<'_>, Event<'_>),
{
    let source = datagram.source;
    let mut data = datagram.data;
    if datagram.truncated {
        // Larger than the pool's buffers, so larger than any netcode packet.
        server.count_oversize();
        return;
    }
    handle_bytes(server, out, handler, now, source, data.as_mut_slice());
}

fn handle_bytes<H>(
    server: &mut netcode::Server,
    out: &mut Outbox,
    handler: &mut H,
    now: Instant,
    source: SocketAddr,
    bytes: &mut [u8],
) where
    H: FnMut(&mut Sessions<'_>, Event<'_>),
{
    let received = server.handle_datagram(now, source, bytes);
    // A response may have connected the client: its event goes first.
    events(server, out, handler, now);
    if let Some(r) = received {
        let mut sessions = Sessions { server, out, now };
        handler(
            &mut sessions,
            Event::Payload {
                client: r.client,
                data: r.data,
            },
        );
    }
}

fn events<H>(server: &mut netcode::Server, out: &mut Outbox, handler: &mut H, now: Instant)
where
    H: FnMut(&mut Sessions<'_>, Event<'_>),
{
    while let Some(event) = server.poll_event() {
        let mut sessions = Sessions { server, out, now };
        match event {
            ServerEvent::Connected {
                client,
                client_id,
                addr,
                user_data,
            } => handler(
                &mut sessions,
                Event::Connected {
                    client,
                    client_id,
                    addr,
                    user_data: &user_data,
                },
            ),
            ServerEvent::Moved { client, from, to } => {
                handler(&mut sessions, Event::Moved { client, from, to })
            }
            ServerEvent::Disconnected {
                client,
                client_id,
                reason,
            } => handler(
                &mut sessions,
                Event::Disconnected {
                    client,
                    client_id,
                    reason,
                },
            ),
        }
    }
}

/// Why a client could not connect, or its session ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("netcode client socket: {0}")]
    Io(#[from] coring::Error),
    /// The session is over (or never started): the state says why.
    #[error("netcode session ended: {0:?}")]
    Closed(ClientState),
    /// [`NetcodeClient::send`] refused the payload.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// A netcode client on a coring UDP socket.
#[derive(Debug)]
pub struct NetcodeClient {
    socket: UdpSocket,
    rx: UdpPooled,
    client: netcode::Client,
    buf: Vec<u8>,
}

/// A payload received by [`NetcodeClient::recv`], in the pooled buffer it arrived in.
#[derive(Debug)]
pub struct Payload {
    buf: PooledBuf,
    start: usize,
    len: usize,
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf.as_slice()[self.start..self.start + self.len]
    }
}

impl NetcodeClient {
    /// Connects with `token` from a fresh socket (the address family of the token's first
    /// server), trying each of its servers as the standard says; returns once connected.
    pub async fn connect(token: ConnectToken) -> Result<NetcodeClient, ClientError> {
        let local: SocketAddr = match token.server_addresses.first() {
            Some(SocketAddr::V6(_)) => SocketAddr::from(([0u16; 8], 0)),
            _ => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let socket = UdpSocket::bind(local)?;
        Self::connect_on(socket, token).await
    }

    /// [`connect`](Self::connect) on a socket of the caller's.
    pub async fn connect_on(
        socket: UdpSocket,
        token: ConnectToken,
    ) -> Result<NetcodeClient, ClientError> {
        Self::connect_with(socket, netcode::Client::new(token, now())).await
    }

    /// Connects with a state machine the caller made (to enable
    /// [`netcode::Client::with_resumption`], say), on `socket`.
    pub async fn connect_with(
        socket: UdpSocket,
        client: netcode::Client,
    ) -> Result<NetcodeClient, ClientError> {
        let rx = socket.pooled();
        let mut this = NetcodeClient {
            client,
            socket,
            rx,
            buf: vec![0; MAX_PACKET_BYTES],
        };
        while this.client.state() != ClientState::Connected {
            if let Some(payload) = this.turn().await? {
                // Payloads before connected are dropped by the state machine; none arrive.
                drop(payload);
            }
        }
        Ok(this)
    }

    /// Sends one payload (1 to 1,200 bytes), after whatever the state machine has due (a
    /// resume after [`rebind`](Self::rebind) goes first).
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.flush().await?;
        // A send cancelled mid-way took the buffer with it.
        self.buf.resize(MAX_PACKET_BYTES, 0);
        let t = self.client.send(now(), payload, &mut self.buf)?;
        let buf = std::mem::take(&mut self.buf);
        let (r, mut buf) = self.socket.send_to(slice(buf, t.len), t.to).await;
        buf.resize(MAX_PACKET_BYTES, 0);
        self.buf = buf;
        r?;
        Ok(())
    }

    /// The next payload from the server; keep-alives and timeouts are handled meanwhile.
    /// Cancel-safe: dropped while waiting, no datagram is lost.
    pub async fn recv(&mut self) -> Result<Payload, ClientError> {
        loop {
            if let Some(payload) = self.turn().await? {
                return Ok(payload);
            }
        }
    }

    /// Carries on from `socket` (a new local address: another network, a new port). With
    /// resumption on both ends the session follows; without, the server does not know the new
    /// address and the session times out.
    pub fn rebind(&mut self, socket: UdpSocket) {
        self.rx = socket.pooled();
        self.socket = socket;
        self.client.rebind(now());
    }

    /// Ends the session: the standard's redundant disconnect packets, then the socket closes.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.client.disconnect();
        self.flush().await
    }

    /// The state machine, for its state, slot and counters.
    pub fn state(&self) -> &netcode::Client {
        &self.client
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.socket.local_addr()?)
    }

    /// Sends what is due, then waits for one datagram or the next timer.
    async fn turn(&mut self) -> Result<Option<Payload>, ClientError> {
        self.flush().await?;
        if !self.client.state().is_active() {
            return Err(ClientError::Closed(self.client.state()));
        }
        let deadline = self
            .client
            .poll_timeout()
            .unwrap_or_else(|| now() + Duration::from_millis(100));
        match timeout_at(deadline, self.rx.next()).await {
            Ok(Ok(d)) => {
                let mut data = d.data;
                let base = data.as_slice().as_ptr() as usize;
                let got = self
                    .client
                    .handle_datagram(now(), d.source, data.as_mut_slice())
                    .map(|p| (p.as_ptr() as usize - base, p.len()));
                Ok(got.map(|(start, len)| Payload {
                    buf: data,
                    start,
                    len,
                }))
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_elapsed) => {
                self.client.handle_timeout(now());
                Ok(None)
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        self.buf.resize(MAX_PACKET_BYTES, 0);
        while let Some(t) = self.client.poll_transmit(now(), &mut self.buf) {
            let buf = std::mem::take(&mut self.buf);
            let (r, mut buf) = self.socket.send_to(slice(buf, t.len), t.to).await;
            buf.resize(MAX_PACKET_BYTES, 0);
            self.buf = buf;
            r?;
        }
        Ok(())
    }
}

fn slice(mut buf: Vec<u8>, len: usize) -> Vec<u8> {
    buf.truncate(len);
    buf
}

mod channels;

pub use channels::{ChannelClient, ChannelEvent, ChannelSessions, serve_channels};

/// What wakes the loop: a datagram, or mail from another core.
enum Input {
    Datagram(coring::Result<coring::net::Datagram<SocketAddr>>),
    Mail(Forwarded),
}

/// The next datagram or piece of mail, whichever comes first (both are cancel-safe: a
/// datagram or message not taken stays queued).
async fn next_input(rx: &mut UdpPooled, mail: Option<&Mailbox<Forwarded>>) -> Input {
    let Some(mail) = mail else {
        return Input::Datagram(rx.next().await);
    };
    let mut datagram = std::pin::pin!(rx.next());
    let mut letter = std::pin::pin!(mail.recv());
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(m) = letter.as_mut().poll(cx) {
            return std::task::Poll::Ready(Input::Mail(m));
        }
        datagram.as_mut().poll(cx).map(Input::Datagram)
    })
    .await
}

/// The cores serving one address together: their mailboxes and what crossed between them.
/// Make it before the runtime runs; clone it into every core.
#[derive(Debug, Clone)]
pub struct Shards {
    mailbox: Mailbox<Forwarded>,
    counters: Arc<ShardCounters>,
}

/// What [`Shards`] forwarded.
#[derive(Debug, Default)]
pub struct ShardCounters {
    /// Datagrams handed to the core holding their session.
    pub forwarded: AtomicU64,
    /// Routes installed: a moved session's address, on the core the kernel sends it to.
    pub routes: AtomicU64,
}

/// Mail between the cores of [`Shards`].
#[derive(Debug)]
pub enum Forwarded {
    /// A datagram for the receiving core's session, from the core it arrived at.
    Datagram {
        /// Its source.
        from: SocketAddr,
        /// Its bytes.
        bytes: Vec<u8>,
        /// The core it arrived at.
        via: usize,
    },
    /// From now on, datagrams from `addr` go to `core`.
    Route {
        /// The session's new address.
        addr: SocketAddr,
        /// The core holding it.
        core: usize,
    },
}

/// Routes a core keeps, at most (the oldest go first; a stale route costs one hop and a drop).
const MAX_ROUTES: usize = 4096;
/// Mail a core's mailbox holds.
const MAILBOX: usize = 4096;

impl Shards {
    /// Mailboxes for every core of `runtime`.
    pub fn new(runtime: &coring::Runtime) -> Shards {
        Shards {
            mailbox: Mailbox::new(runtime, MAILBOX),
            counters: Arc::new(ShardCounters::default()),
        }
    }

    /// The [`netcode::ServerConfig::index_base`] of the current core's server: its range of
    /// client indexes, `core × max_clients`.
    pub fn index_base(max_clients: usize) -> u32 {
        (coring::runtime::core_index() * max_clients) as u32
    }

    /// What crossed between the cores so far.
    pub fn counters(&self) -> &ShardCounters {
        &self.counters
    }

    fn mailbox(&self) -> &Mailbox<Forwarded> {
        &self.mailbox
    }
}

/// One core's routing: where datagrams for other cores' sessions go.
struct Routes {
    shards: Shards,
    core: usize,
    max_clients: u32,
    table: HashMap<SocketAddr, usize>,
    order: VecDeque<SocketAddr>,
}

impl Routes {
    fn new(shards: &Shards, server: &netcode::Server) -> Routes {
        Routes {
            shards: shards.clone(),
            core: coring::runtime::core_index(),
            max_clients: server.config().max_clients.max(1) as u32,
            table: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Sends the datagram to the core holding its session, if that is another core; whether
    /// it did. A datagram from an address this core serves stays here.
    fn forward(&mut self, server: &netcode::Server, d: &coring::net::Datagram<SocketAddr>) -> bool {
        if server.knows(d.source) {
            return false;
        }
        let bytes = d.data.as_slice();
        let owner = match self.table.get(&d.source) {
            Some(&core) => core,
            None => match netcode::header(bytes) {
                Ok(h) if h.kind == netcode::Kind::Resume => {
                    (h.client_index / self.max_clients) as usize
                }
                _ => return false,
            },
        };
        if owner == self.core {
            return false;
        }
        let mail = Forwarded::Datagram {
            from: d.source,
            bytes: bytes.to_vec(),
            via: self.core,
        };
        match self.shards.mailbox.try_send(owner, mail) {
            Ok(()) => {
                self.shards
                    .counters
                    .forwarded
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            // No such core (a forged index) or its mailbox is full: handled here, where it
            // is dropped and counted.
            Err(_) => false,
        }
    }

    /// Mail from another core.
    fn arrived<H>(
        &mut self,
        server: &mut netcode::Server,
        out: &mut Outbox,
        handler: &mut H,
        now: Instant,
        mail: Forwarded,
    ) where
        H: FnMut(&mut Sessions<'_>, Event<'_>),
    {
        match mail {
            Forwarded::Datagram {
                from,
                mut bytes,
                via,
            } => {
                let moved = server.stats().moved;
                handle_bytes(server, out, handler, now, from, &mut bytes);
                if server.stats().moved > moved && server.client_at(from).is_some() {
                    // The session moved to an address the kernel sends to `via`: from now on
                    // that core hands its datagrams here.
                    let route = Forwarded::Route {
                        addr: from,
                        core: self.core,
                    };
                    if self.shards.mailbox.try_send(via, route).is_err() {
                        tracing::debug!(core = via, "route not sent: mailbox full");
                    }
                }
            }
            Forwarded::Route { addr, core } => {
                if self.table.len() >= MAX_ROUTES
                    && let Some(old) = self.order.pop_front()
                {
                    self.table.remove(&old);
                }
                if self.table.insert(addr, core).is_none() {
                    self.order.push_back(addr);
                }
                self.shards.counters.routes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod gso_tests {
    use super::*;

    fn batch(items: &[(usize, u16)]) -> Vec<(Vec<u8>, SocketAddr)> {
        items
            .iter()
            .map(|&(len, port)| (vec![0; len], SocketAddr::from(([10, 0, 0, 1], port))))
            .collect()
    }

    fn found(items: &[(usize, u16)]) -> Vec<(usize, usize, usize)> {
        trains(&batch(items))
            .into_iter()
            .map(|t| (t.start, t.len, t.segment))
            .collect()
    }

    #[test]
    fn trains_are_runs_to_one_destination_with_only_the_last_datagram_short() {
        // Alone, or alternating destinations: no train.
        assert_eq!(found(&[(100, 1)]), vec![]);
        assert_eq!(found(&[(100, 1), (100, 2), (100, 1)]), vec![]);
        // Equal sizes to one destination, then a short last one.
        assert_eq!(found(&[(100, 1), (100, 1), (60, 1)]), vec![(0, 3, 100)]);
        // A short one ends the train; the next starts another.
        assert_eq!(
            found(&[(100, 1), (60, 1), (100, 1), (100, 1)]),
            vec![(0, 2, 100), (2, 2, 100)]
        );
        // A longer one cannot follow.
        assert_eq!(found(&[(100, 1), (200, 1)]), vec![]);
        // Between other destinations' datagrams.
        assert_eq!(
            found(&[(50, 2), (80, 1), (80, 1), (50, 3)]),
            vec![(1, 2, 80)]
        );
    }

    #[test]
    fn trains_keep_to_the_kernels_limits() {
        let large = vec![(1200, 1); 100];
        assert_eq!(found(&large)[0], (0, GSO_MAX_BYTES / 1200, 1200));
        let small = vec![(10, 1); 100];
        assert_eq!(found(&small), vec![(0, 64, 10), (64, 36, 10)]);
    }
}
