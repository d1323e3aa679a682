//! The server side of netcode 1.02, sans-IO: datagrams in ([`Server::handle_datagram`]),
//! datagrams out ([`Server::poll_transmit`], [`Server::send`]), one deadline
//! ([`Server::poll_timeout`], [`Server::handle_timeout`]) and events ([`Server::poll_event`]).
//!
//! A connection request passes, in order and before any decryption: its length and version,
//! the protocol id, the expiry, the access list, the source's token bucket, an address cookie
//! when [`ServerConfig::cookies`] asks for one (not in the standard: see [`Cookies`]), and the
//! token's tag (a token bound to another address is dropped unread). Only then is the private
//! token opened. The server keeps nothing for a source until a token opens; then it keeps the
//! pending address's keys (bounded by [`ServerConfig::max_pending`]) and answers with a
//! challenge smaller than the request. The client joins a slot when it echoes the challenge.
//! Every reply is smaller than the packet that caused it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::cookie::{self, COOKIE_BYTES, CookieJar, Cookies, OpenRate, ReplyBudget};
use super::crypto::{self, Key, MAC_BYTES};
use super::packet::{
    self, Body, CHALLENGE_TOKEN_BYTES, ChallengeToken, Kind, MAX_PAYLOAD_BYTES, REQUEST_BYTES,
    RESUME_TOKEN_BYTES, Request, RequestError,
};
use super::replay::ReplayWindow;
use super::token::{PrivateToken, TokenError, USER_DATA_BYTES};
use super::{DropCounts, DropReason, SendError, Transmit};
use crate::admission::{AccessList, RateLimit, SourceLimiter};

/// Redundant disconnect packets sent when the server ends a session (the standard's count).
pub const DISCONNECT_PACKETS: u32 = 10;

/// What a server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The game or application's protocol id; requests for another are dropped.
    pub protocol_id: u64,
    /// The key connect tokens are sealed under (shared with the [`super::TokenIssuer`]).
    pub private_key: Key,
    /// Client slots.
    pub max_clients: usize,
    /// Addresses clients reach this server at; a token must name one of them. Empty: any
    /// (for servers behind a translating proxy that do not know their public address).
    pub public_addresses: Vec<SocketAddr>,
    /// Addresses with a request answered but not yet echoed, at most.
    pub max_pending: usize,
    /// Which sources may connect.
    pub access: AccessList,
    /// How fast each source may send connection requests.
    pub rate_limit: RateLimit,
    /// A keep-alive goes to a client the server has sent nothing to for this long.
    pub keep_alive: Duration,
    /// Session resumption (not in the standard; both ends must enable it): a session may move
    /// to a new client address with an authenticated [`Kind::Resume`] packet. See
    /// `docs/netcode.md` for the design and its threat model.
    pub resumption: bool,
    /// Address cookies before any token is opened (not in the standard; clients must enable
    /// them, [`super::Client::with_cookies`]): off by default, always, or under load. See
    /// [`Cookies`] and `docs/netcode.md`.
    pub cookies: Cookies,
    /// Most cookie replies a second (default 10,000; a tenth of it at once): under a flood of
    /// spoofed requests each reply is a send, and past this the requests without a valid
    /// cookie are dropped unanswered ([`super::DropReason::CookieBudget`]). A client that
    /// retries ten times a second still gets one.
    pub cookie_replies_per_second: u32,
    /// Added to the slot in the client index this server tells its clients (keep-alives) and
    /// reads back from their resumes: servers on several cores of one address give each core
    /// its own range (`core × max_clients`), so a resume that reaches the wrong core says
    /// which core holds its session.
    pub index_base: u32,
}

impl ServerConfig {
    /// A configuration for `protocol_id` and `private_key` with the defaults: 256 slots, any
    /// address, 1,024 pending, everyone admitted, 20 requests a second per source, keep-alive
    /// every 100 ms.
    pub fn new(protocol_id: u64, private_key: Key) -> Self {
        ServerConfig {
            protocol_id,
            private_key,
            max_clients: 256,
            public_addresses: Vec::new(),
            max_pending: 1024,
            access: AccessList::default(),
            rate_limit: RateLimit::default(),
            keep_alive: Duration::from_millis(100),
            resumption: false,
            cookies: Cookies::Off,
            cookie_replies_per_second: 10_000,
            index_base: 0,
        }
    }
}

/// Bytes sent to a session's new address, for each byte received from it, until the address
/// has echoed its challenge (no amplification through a spoofed move).
pub const UNVALIDATED_SEND_FACTOR: u64 = 3;

/// A client's slot on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientIndex(u32);

impl ClientIndex {
    /// The slot number, `0..max_clients`.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client echoed its challenge and holds a slot.
    Connected {
        /// Its slot.
        client: ClientIndex,
        /// Its id from the token.
        client_id: u64,
        /// Where its packets come from.
        addr: SocketAddr,
        /// The token's user data.
        user_data: Box<[u8; USER_DATA_BYTES]>,
    },
    /// A session moved to a new address (an authenticated resume from it). Until the address
    /// echoes its challenge the server sends it at most [`UNVALIDATED_SEND_FACTOR`] times what
    /// it received from it.
    Moved {
        /// Its slot.
        client: ClientIndex,
        /// The address it spoke from.
        from: SocketAddr,
        /// The address it speaks from now.
        to: SocketAddr,
    },
    /// A session ended; its slot is free.
    Disconnected {
        /// The slot it held.
        client: ClientIndex,
        /// Its id.
        client_id: u64,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Nothing arrived within the token's timeout.
    TimedOut,
    /// The client sent a disconnect packet.
    ByClient,
    /// [`Server::disconnect`].
    ByServer,
}

/// A payload that arrived, decrypted in place in the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Received<'a> {
    /// From which session.
    pub client: ClientIndex,
    /// The payload.
    pub data: &'a [u8],
}

/// Counters of one server.
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    /// Datagrams handed to [`Server::handle_datagram`].
    pub received: u64,
    /// Datagrams written by [`Server::poll_transmit`] and [`Server::send`].
    pub sent: u64,
    /// Bytes of those datagrams.
    pub sent_bytes: u64,
    /// Connection requests whose token opened.
    pub tokens_opened: u64,
    /// Requests answered with an address cookie instead of being read further.
    pub cookies_sent: u64,
    /// Of those, requests that carried a cookie this server did not make for their address
    /// or made too long ago.
    pub cookies_refused: u64,
    /// Requests answered with a denial (no free slot).
    pub denied: u64,
    /// Sessions that joined a slot.
    pub connected: u64,
    /// Sessions that ended.
    pub disconnected: u64,
    /// Sessions that moved to a new address.
    pub moved: u64,
    /// Datagrams not sent to an unvalidated address because of its budget.
    pub path_budget_refusals: u64,
    /// Datagrams dropped, by reason.
    pub drops: DropCounts,
}

/// A source whose token opened, between the challenge and its echo.
#[derive(Debug)]
struct Pending {
    client_id: u64,
    receive_key: Key,
    send_key: Key,
    send_sequence: u64,
    timeout: Option<Duration>,
    expire_unix: u64,
    last_receive: Instant,
}

/// A connected session.
#[derive(Debug)]
struct Session {
    addr: SocketAddr,
    client_id: u64,
    receive_key: Key,
    send_key: Key,
    send_sequence: u64,
    replay: ReplayWindow,
    timeout: Option<Duration>,
    last_receive: Instant,
    last_send: Instant,
    /// The client has sent a keep-alive or payload since joining (until then every payload
    /// is preceded by a keep-alive, which is what moves the client to connected).
    confirmed: bool,
    /// After a move: the new address's challenge and its send budget, until it echoes it.
    path: Option<PathCheck>,
}

#[derive(Debug)]
struct PathCheck {
    token: [u8; RESUME_TOKEN_BYTES],
    received: u64,
    sent: u64,
}

impl Session {
    /// Seals `body` with the next send sequence into `out`; the length, or `None` when the
    /// session's unvalidated new address has had its budget (the sequence is spent either way).
    fn seal(&mut self, body: &Body<'_>, protocol_id: u64, out: &mut [u8]) -> Option<usize> {
        let len = packet::seal(body, self.send_sequence, protocol_id, &self.send_key, out);
        self.send_sequence += 1;
        self.may_send(len).then_some(len)
    }

    /// Whether `len` more bytes may go to the session's address; counts them if so.
    fn may_send(&mut self, len: usize) -> bool {
        match &mut self.path {
            None => true,
            Some(p) if p.sent + len as u64 <= UNVALIDATED_SEND_FACTOR * p.received => {
                p.sent += len as u64;
                true
            }
            Some(_) => false,
        }
    }
}

/// A datagram owed to someone, sealed when it is written out.
#[derive(Debug)]
enum Outgoing {
    Challenge {
        to: SocketAddr,
        sequence: u64,
        token: Box<[u8; CHALLENGE_TOKEN_BYTES]>,
    },
    KeepAlive(ClientIndex),
    /// A moved session's challenge to its new address.
    PathChallenge(ClientIndex),
    /// An address cookie, asked for before a request's token is opened.
    Cookie {
        to: SocketAddr,
        cookie: [u8; COOKIE_BYTES],
    },
    /// A denial or a disconnect, to an address no longer tied to a slot or pending entry.
    Farewell {
        to: SocketAddr,
        kind: Kind,
        key: Key,
        sequence: u64,
    },
}

/// A netcode 1.02 server. See the module docs.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    challenge_key: Key,
    challenge_sequence: u64,
    cookies: CookieJar,
    open_rate: OpenRate,
    cookie_budget: ReplyBudget,
    limiter: SourceLimiter,
    sessions: Vec<Option<Session>>,
    by_addr: HashMap<SocketAddr, ClientIndex>,
    by_id: HashMap<u64, ClientIndex>,
    pending: HashMap<SocketAddr, Pending>,
    /// Tokens seen (by their tag) and the address each is bound to, until they expire.
    tokens: HashMap<[u8; MAC_BYTES], (SocketAddr, u64)>,
    outgoing: VecDeque<Outgoing>,
    events: VecDeque<ServerEvent>,
    next_housekeeping: Instant,
    clock: UnixClock,
    stats: ServerStats,
}

/// Unix seconds from the monotonic clock, given one reading of both at the start.
#[derive(Debug, Clone, Copy)]
struct UnixClock {
    at: Instant,
    unix: Duration,
}

impl UnixClock {
    fn seconds(&self, now: Instant) -> u64 {
        (self.unix + now.saturating_duration_since(self.at)).as_secs()
    }
}

impl Server {
    /// A server for `config`, started at `now`, when the wall clock read `unix_time` since
    /// the Unix epoch (tokens carry Unix timestamps; the server reads no clock itself).
    pub fn new(config: ServerConfig, now: Instant, unix_time: Duration) -> Self {
        Self::with_challenge_key(config, now, unix_time, Key::random())
    }

    /// [`new`](Self::new) with the challenge key given (deterministic tests).
    pub fn with_challenge_key(
        config: ServerConfig,
        now: Instant,
        unix_time: Duration,
        challenge_key: Key,
    ) -> Self {
        let limiter = SourceLimiter::new(config.rate_limit, now);
        let sessions = (0..config.max_clients).map(|_| None).collect();
        Server {
            // Its own key: a cookie says nothing of the challenge key, nor the other way.
            cookies: CookieJar::derived_from(&challenge_key),
            open_rate: OpenRate::default(),
            cookie_budget: ReplyBudget::new(config.cookie_replies_per_second, now),
            challenge_key,
            challenge_sequence: 0,
            limiter,
            sessions,
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            pending: HashMap::new(),
            tokens: HashMap::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            next_housekeeping: now + config.keep_alive,
            clock: UnixClock {
                at: now,
                unix: unix_time,
            },
            stats: ServerStats::default(),
            config,
        }
    }

    /// Takes one datagram from `from`. A payload is decrypted in place and returned; anything
    /// else updates the sessions and may queue replies ([`poll_transmit`](Self::poll_transmit))
    /// and events ([`poll_event`](Self::poll_event)). What is not a valid packet for this
    /// server is dropped and counted in [`stats`](Self::stats), never answered.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a mut [u8],
    ) -> Option<Received<'a>> {
        self.stats.received += 1;
        match self.receive(now, from, bytes) {
            Ok(received) => received,
            Err(reason) => {
                self.stats.drops.add(reason);
                None
            }
        }
    }

    fn receive<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a mut [u8],
    ) -> Result<Option<Received<'a>>, DropReason> {
        if bytes.first() == Some(&0) {
            self.request(now, from, bytes)?;
            return Ok(None);
        }
        let header = packet::header(bytes).map_err(DropReason::Malformed)?;
        if let Some(&client) = self.by_addr.get(&from) {
            return self.session_packet(now, client, header, bytes);
        }
        if self.pending.contains_key(&from) {
            self.response(now, from, header, bytes)?;
            return Ok(None);
        }
        if header.kind == Kind::Resume && self.config.resumption {
            self.resume(now, from, header, bytes)?;
            return Ok(None);
        }
        Err(DropReason::UnknownSource)
    }

    /// Whether a request must carry a valid cookie now.
    fn cookie_wanted(&mut self, unix: u64) -> bool {
        match self.config.cookies {
            Cookies::Off => false,
            Cookies::Always => true,
            Cookies::UnderLoad { opens_per_second } => {
                self.open_rate.reached(unix, opens_per_second)
            }
        }
    }

    /// A connection request: the cheap checks, then the token.
    fn request(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Result<(), DropReason> {
        // With cookies on, a request may carry one after the standard's bytes.
        let (bytes, cookie) = match bytes.split_at_checked(REQUEST_BYTES) {
            Some((request, tail))
                if self.config.cookies != Cookies::Off && tail.len() == COOKIE_BYTES =>
            {
                (request, <&[u8; COOKIE_BYTES]>::try_from(tail).ok())
            }
            _ => (bytes, None),
        };
        let request = Request::parse(bytes).map_err(|e| match e {
            RequestError::Length => DropReason::RequestLength,
            RequestError::Version => DropReason::Version,
        })?;
        if request.protocol_id != self.config.protocol_id {
            return Err(DropReason::ProtocolId);
        }
        let unix = self.clock.seconds(now);
        if request.expire_timestamp <= unix {
            return Err(DropReason::Expired);
        }
        if !self.config.access.admits(from.ip()) {
            return Err(DropReason::NotAdmitted);
        }
        if !self.limiter.admit(from.ip(), now) {
            return Err(DropReason::RateLimited);
        }
        if self.cookie_wanted(unix) {
            let checked = cookie.map(|c| self.cookies.check(from, c, unix));
            if checked != Some(Ok(())) {
                if checked.is_some() {
                    self.stats.cookies_refused += 1;
                }
                if !self.cookie_budget.take(now) {
                    return Err(DropReason::CookieBudget);
                }
                self.stats.cookies_sent += 1;
                let cookie = self.cookies.issue(from, unix);
                self.outgoing
                    .push_back(Outgoing::Cookie { to: from, cookie });
                return Ok(());
            }
        }
        if self.by_addr.contains_key(&from) {
            return Err(DropReason::AlreadyConnected);
        }
        let mac = request.token_mac();
        if let Some(&(bound, _)) = self.tokens.get(&mac)
            && bound != from
        {
            return Err(DropReason::TokenReused);
        }

        self.open_rate.count(unix);
        let private = PrivateToken::open(
            request.private_data,
            self.config.protocol_id,
            request.expire_timestamp,
            request.nonce,
            &self.config.private_key,
        )
        .map_err(|e| match e {
            TokenError::Forged => DropReason::TokenForged,
            _ => DropReason::TokenMalformed,
        })?;
        self.stats.tokens_opened += 1;
        if !self.config.public_addresses.is_empty()
            && !private
                .server_addresses
                .iter()
                .any(|a| self.config.public_addresses.contains(a))
        {
            return Err(DropReason::WrongServer);
        }
        if self.by_id.contains_key(&private.client_id) {
            return Err(DropReason::AlreadyConnected);
        }
        if !self.tokens.contains_key(&mac) {
            if self.tokens.len() >= 4 * self.config.max_pending.max(1) {
                self.tokens.retain(|_, (_, expire)| *expire > unix);
                if self.tokens.len() >= 4 * self.config.max_pending.max(1) {
                    return Err(DropReason::PendingFull);
                }
            }
            self.tokens.insert(mac, (from, request.expire_timestamp));
        }

        let timeout = timeout_of(private.timeout_seconds);
        if self.by_addr.len() >= self.config.max_clients {
            let sequence = self.pending.remove(&from).map_or(0, |p| p.send_sequence);
            self.stats.denied += 1;
            self.outgoing.push_back(Outgoing::Farewell {
                to: from,
                kind: Kind::Denied,
                key: private.server_to_client_key,
                sequence,
            });
            return Ok(());
        }
        match self.pending.get_mut(&from) {
            // A resent request: the same keys, a fresh challenge.
            Some(p) => p.last_receive = now,
            None => {
                if self.pending.len() >= self.config.max_pending {
                    return Err(DropReason::PendingFull);
                }
                self.pending.insert(
                    from,
                    Pending {
                        client_id: private.client_id,
                        receive_key: private.client_to_server_key,
                        send_key: private.server_to_client_key,
                        send_sequence: 0,
                        timeout,
                        expire_unix: request.expire_timestamp,
                        last_receive: now,
                    },
                );
            }
        }
        let token = ChallengeToken {
            client_id: private.client_id,
            user_data: private.user_data,
        };
        let sequence = self.challenge_sequence;
        self.challenge_sequence += 1;
        self.outgoing.push_back(Outgoing::Challenge {
            to: from,
            sequence,
            token: Box::new(token.seal(sequence, &self.challenge_key)),
        });
        Ok(())
    }

    /// A packet from a pending address: only its challenge response counts.
    fn response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: packet::Header,
        bytes: &mut [u8],
    ) -> Result<(), DropReason> {
        if header.kind != Kind::Response {
            return Err(DropReason::UnexpectedType);
        }
        let Some(p) = self.pending.get(&from) else {
            return Err(DropReason::UnknownSource);
        };
        let body = packet::open(bytes, &header, self.config.protocol_id, &p.receive_key)
            .map_err(DropReason::from)?;
        let Body::Response { sequence, token } = body else {
            return Err(DropReason::UnexpectedType);
        };
        let Some(challenge) = ChallengeToken::open(token, sequence, &self.challenge_key) else {
            return Err(DropReason::ChallengeForged);
        };
        if challenge.client_id != p.client_id || self.by_id.contains_key(&challenge.client_id) {
            return Err(DropReason::AlreadyConnected);
        }
        let Some(p) = self.pending.remove(&from) else {
            return Err(DropReason::UnknownSource);
        };
        let Some(slot) = self.sessions.iter().position(Option::is_none) else {
            self.stats.denied += 1;
            self.outgoing.push_back(Outgoing::Farewell {
                to: from,
                kind: Kind::Denied,
                key: p.send_key,
                sequence: p.send_sequence,
            });
            return Ok(());
        };
        let client = ClientIndex(slot as u32);
        self.sessions[slot] = Some(Session {
            addr: from,
            client_id: p.client_id,
            receive_key: p.receive_key,
            send_key: p.send_key,
            send_sequence: p.send_sequence,
            replay: ReplayWindow::default(),
            timeout: p.timeout,
            last_receive: now,
            last_send: now,
            confirmed: false,
            path: None,
        });
        self.by_addr.insert(from, client);
        self.by_id.insert(p.client_id, client);
        self.stats.connected += 1;
        self.events.push_back(ServerEvent::Connected {
            client,
            client_id: p.client_id,
            addr: from,
            user_data: challenge.user_data,
        });
        self.outgoing.push_back(Outgoing::KeepAlive(client));
        Ok(())
    }

    /// An authenticated resume from a new address moves the session there.
    fn resume(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: packet::Header,
        bytes: &mut [u8],
    ) -> Result<(), DropReason> {
        let protocol_id = self.config.protocol_id;
        let len = bytes.len();
        let Some(slot) = header.client_index.checked_sub(self.config.index_base) else {
            return Err(DropReason::UnknownSource);
        };
        let client = ClientIndex(slot);
        let Some(session) = self.session_mut(client) else {
            return Err(DropReason::UnknownSource);
        };
        if session.replay.seen(header.sequence) {
            return Err(DropReason::Replayed);
        }
        packet::open(bytes, &header, protocol_id, &session.receive_key)
            .map_err(DropReason::from)?;
        session.replay.record(header.sequence);
        session.last_receive = now;
        let old = std::mem::replace(&mut session.addr, from);
        session.path = Some(PathCheck {
            token: crypto::random_bytes(),
            received: len as u64,
            sent: 0,
        });
        self.by_addr.remove(&old);
        self.by_addr.insert(from, client);
        self.stats.moved += 1;
        self.events.push_back(ServerEvent::Moved {
            client,
            from: old,
            to: from,
        });
        self.outgoing.push_back(Outgoing::PathChallenge(client));
        Ok(())
    }

    /// A packet from a connected address.
    fn session_packet<'a>(
        &mut self,
        now: Instant,
        client: ClientIndex,
        header: packet::Header,
        bytes: &'a mut [u8],
    ) -> Result<Option<Received<'a>>, DropReason> {
        let protocol_id = self.config.protocol_id;
        let resumption = self.config.resumption;
        let len = bytes.len() as u64;
        let Some(session) = self.session_mut(client) else {
            return Err(DropReason::UnknownSource);
        };
        if !header.kind.replay_protected() || (header.kind == Kind::Resume && !resumption) {
            // A response resent before the client saw its keep-alive, or a stray packet.
            return Err(DropReason::UnexpectedType);
        }
        if session.replay.seen(header.sequence) {
            return Err(DropReason::Replayed);
        }
        let body = packet::open(bytes, &header, protocol_id, &session.receive_key)
            .map_err(DropReason::from)?;
        session.replay.record(header.sequence);
        session.last_receive = now;
        if let Some(p) = &mut session.path {
            p.received += len;
        }
        match body {
            Body::Resume { token, .. } => {
                // The challenge echoed from the new address: validated. (Zeros: a resume from
                // the address already in use, nothing to do.)
                if session.path.as_ref().is_some_and(|p| p.token == token) {
                    session.path = None;
                }
                Ok(None)
            }
            Body::KeepAlive { .. } => {
                session.confirmed = true;
                Ok(None)
            }
            Body::Payload(data) => {
                session.confirmed = true;
                Ok(Some(Received { client, data }))
            }
            Body::Disconnect => {
                self.end(client, DisconnectReason::ByClient, false);
                Ok(None)
            }
            _ => Err(DropReason::UnexpectedType),
        }
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has a datagram queued.
    pub fn has_transmit(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Writes the next queued datagram into `out` (at least
    /// [`super::MAX_PACKET_BYTES`]). Changes after [`handle_datagram`](Self::handle_datagram),
    /// [`handle_timeout`](Self::handle_timeout), [`send`](Self::send) and
    /// [`disconnect`](Self::disconnect).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let protocol_id = self.config.protocol_id;
        loop {
            let transmit = match self.outgoing.pop_front()? {
                Outgoing::Challenge {
                    to,
                    sequence,
                    token,
                } => {
                    // The pending entry may have gone (expired) since this was queued.
                    let Some(p) = self.pending.get_mut(&to) else {
                        continue;
                    };
                    let body = Body::Challenge {
                        sequence,
                        token: &token,
                    };
                    let len = packet::seal(&body, p.send_sequence, protocol_id, &p.send_key, out);
                    p.send_sequence += 1;
                    Transmit { to, len }
                }
                Outgoing::KeepAlive(client) => {
                    let max_clients = self.config.max_clients as u32;
                    let index = self.config.index_base + client.0;
                    let Some(s) = self.session_mut(client) else {
                        continue;
                    };
                    let body = Body::KeepAlive {
                        client_index: index,
                        max_clients,
                    };
                    let Some(len) = s.seal(&body, protocol_id, out) else {
                        self.stats.path_budget_refusals += 1;
                        continue;
                    };
                    s.last_send = now;
                    Transmit { to: s.addr, len }
                }
                Outgoing::PathChallenge(client) => {
                    let Some(s) = self.session_mut(client) else {
                        continue;
                    };
                    let Some(token) = s.path.as_ref().map(|p| p.token) else {
                        continue;
                    };
                    let body = Body::Resume {
                        client_index: 0,
                        token,
                    };
                    let Some(len) = s.seal(&body, protocol_id, out) else {
                        self.stats.path_budget_refusals += 1;
                        continue;
                    };
                    Transmit { to: s.addr, len }
                }
                Outgoing::Cookie { to, cookie } => Transmit {
                    to,
                    len: cookie::write_packet(&cookie, out),
                },
                Outgoing::Farewell {
                    to,
                    kind,
                    key,
                    sequence,
                } => {
                    let body = if kind == Kind::Denied {
                        Body::Denied
                    } else {
                        Body::Disconnect
                    };
                    let len = packet::seal(&body, sequence, protocol_id, &key, out);
                    Transmit { to, len }
                }
            };
            self.stats.sent += 1;
            self.stats.sent_bytes += transmit.len as u64;
            return Some(transmit);
        }
    }

    /// Seals `payload` for `client` into `out` (at least [`super::MAX_PACKET_BYTES`]) and
    /// says where it goes. Until the client has confirmed its session a keep-alive is queued
    /// first ([`poll_transmit`](Self::poll_transmit)); send both, the keep-alive first.
    pub fn send(
        &mut self,
        now: Instant,
        client: ClientIndex,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<Transmit, SendError> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SendError::PayloadSize(payload.len()));
        }
        let protocol_id = self.config.protocol_id;
        let session = self.session_mut(client).ok_or(SendError::NotConnected)?;
        let unconfirmed = !session.confirmed;
        let Some(len) = session.seal(&Body::Payload(payload), protocol_id, out) else {
            self.stats.path_budget_refusals += 1;
            return Err(SendError::PathBudget);
        };
        session.last_send = now;
        let to = session.addr;
        if unconfirmed {
            self.outgoing.push_back(Outgoing::KeepAlive(client));
        }
        self.stats.sent += 1;
        self.stats.sent_bytes += len as u64;
        Ok(Transmit { to, len })
    }

    /// Ends `client`'s session: its slot is free now, and [`DISCONNECT_PACKETS`] disconnect
    /// packets are queued to it.
    pub fn disconnect(&mut self, client: ClientIndex) {
        self.end(client, DisconnectReason::ByServer, true);
    }

    fn end(&mut self, client: ClientIndex, reason: DisconnectReason, notify: bool) {
        let Some(session) = self
            .sessions
            .get_mut(client.0 as usize)
            .and_then(Option::take)
        else {
            return;
        };
        self.by_addr.remove(&session.addr);
        self.by_id.remove(&session.client_id);
        if notify {
            for i in 0..u64::from(DISCONNECT_PACKETS) {
                self.outgoing.push_back(Outgoing::Farewell {
                    to: session.addr,
                    kind: Kind::Disconnect,
                    key: session.send_key.clone(),
                    sequence: session.send_sequence + i,
                });
            }
        }
        self.stats.disconnected += 1;
        self.events.push_back(ServerEvent::Disconnected {
            client,
            client_id: session.client_id,
            reason,
        });
    }

    /// The next event. Changes after [`handle_datagram`](Self::handle_datagram),
    /// [`handle_timeout`](Self::handle_timeout) and [`disconnect`](Self::disconnect).
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work: the next keep-alive and
    /// timeout sweep, every [`ServerConfig::keep_alive`]. Changes after `handle_timeout`.
    pub fn poll_timeout(&self) -> Instant {
        self.next_housekeeping
    }

    /// Sweeps the sessions: those silent past their timeout end (with disconnect packets, as
    /// the reference server does), those the server has been silent to get a keep-alive;
    /// pending addresses past their timeout or their token's expiry are forgotten.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now + self.config.keep_alive;
        let keep_alive = self.config.keep_alive;
        let mut timed_out = Vec::new();
        for (slot, session) in self.sessions.iter().enumerate() {
            let Some(s) = session else { continue };
            let client = ClientIndex(slot as u32);
            if s.timeout.is_some_and(|t| s.last_receive + t <= now) {
                timed_out.push(client);
            } else if s.last_send + keep_alive <= now {
                self.outgoing.push_back(Outgoing::KeepAlive(client));
            }
        }
        for client in timed_out {
            self.end(client, DisconnectReason::TimedOut, true);
        }
        let unix = self.clock.seconds(now);
        self.pending.retain(|_, p| {
            p.expire_unix > unix && p.timeout.is_none_or(|t| p.last_receive + t > now)
        });
        self.tokens.retain(|_, (_, expire)| *expire > unix);
    }

    /// The session in `client`'s slot: its address, if connected.
    pub fn client_addr(&self, client: ClientIndex) -> Option<SocketAddr> {
        self.session(client).map(|s| s.addr)
    }

    /// The client id in `client`'s slot, if connected.
    pub fn client_id(&self, client: ClientIndex) -> Option<u64> {
        self.session(client).map(|s| s.client_id)
    }

    /// The slot of the session at `addr`, if any.
    pub fn client_at(&self, addr: SocketAddr) -> Option<ClientIndex> {
        self.by_addr.get(&addr).copied()
    }

    /// Whether a datagram from `from` belongs to a session or a pending connection here.
    pub fn knows(&self, from: SocketAddr) -> bool {
        self.by_addr.contains_key(&from) || self.pending.contains_key(&from)
    }

    /// Slot `i` (`0..max_clients`) as an index.
    pub fn slot(&self, i: usize) -> ClientIndex {
        ClientIndex(i as u32)
    }

    /// The slots holding a session.
    pub fn clients(&self) -> impl Iterator<Item = ClientIndex> + '_ {
        self.sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| ClientIndex(i as u32))
    }

    /// Counts a datagram the socket cut short because it was larger than any packet.
    pub fn count_oversize(&mut self) {
        self.stats.received += 1;
        self.stats
            .drops
            .add(DropReason::Malformed(packet::Malformed::TooLarge));
    }

    /// Connected sessions.
    pub fn connected(&self) -> usize {
        self.by_addr.len()
    }

    /// Addresses whose token opened, waiting for their response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn session(&self, client: ClientIndex) -> Option<&Session> {
        self.sessions.get(client.0 as usize)?.as_ref()
    }

    fn session_mut(&mut self, client: ClientIndex) -> Option<&mut Session> {
        self.sessions.get_mut(client.0 as usize)?.as_mut()
    }
}

/// A token's timeout: seconds, or none when zero or negative (as the reference reads it).
pub(crate) fn timeout_of(seconds: i32) -> Option<Duration> {
    u64::try_from(seconds)
        .ok()
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}
