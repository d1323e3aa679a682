//! The client side of netcode 1.02, sans-IO: the standard's state machine, from a connect token
//! to a connected session, trying the token's servers in order.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::cookie::{self, COOKIE_BYTES};
use super::packet::{
    self, Body, CHALLENGE_TOKEN_BYTES, Kind, MAX_PAYLOAD_BYTES, RESUME_TOKEN_BYTES,
};
use super::replay::ReplayWindow;
use super::server::{DISCONNECT_PACKETS, timeout_of};
use super::token::ConnectToken;
use super::{DropCounts, DropReason, SendError, Transmit};

/// Where a client is. The standard's states; the first six are final failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// The token expired before a server took it.
    ConnectTokenExpired,
    /// The token cannot be used (no server addresses).
    InvalidConnectToken,
    /// Connected, then nothing arrived within the token's timeout.
    ConnectionTimedOut,
    /// No server answered the challenge response in time.
    ResponseTimedOut,
    /// No server answered the connection request in time.
    RequestTimedOut,
    /// The last server tried refused (no free slot).
    Denied,
    /// Not connected: disconnected by either side.
    Disconnected,
    /// Sending connection requests to the current server.
    SendingRequest,
    /// Echoing the current server's challenge.
    SendingResponse,
    /// In a session.
    Connected,
}

impl ClientState {
    /// Whether the client is trying to connect or connected (packets will flow).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ClientState::SendingRequest | ClientState::SendingResponse | ClientState::Connected
        )
    }
}

/// A netcode 1.02 client.
#[derive(Debug)]
pub struct Client {
    token: ConnectToken,
    state: ClientState,
    server: usize,
    sequence: u64,
    replay: ReplayWindow,
    start: Instant,
    last_receive: Instant,
    last_send: Option<Instant>,
    challenge: Option<(u64, Box<[u8; CHALLENGE_TOKEN_BYTES]>)>,
    client_index: u32,
    max_clients: u32,
    disconnects_left: u32,
    send_interval: Duration,
    drops: DropCounts,
    /// Session resumption enabled (both ends must agree; see `ServerConfig::resumption`).
    resumption: bool,
    /// Since when resumes have been due (after `rebind`, or a silent server).
    resuming: bool,
    /// A server's path challenge to echo.
    echo: Option<[u8; RESUME_TOKEN_BYTES]>,
    /// Address cookies enabled (both ends must agree; see `ServerConfig::cookies`).
    cookies: bool,
    /// The current server's cookie, sent after each request.
    cookie: Option<[u8; COOKIE_BYTES]>,
    /// The state [`Client::poll_event`] last reported.
    reported: ClientState,
}

/// With resumption, a connected client that has heard nothing for this long announces its
/// address again (its NAT may have moved it without telling it).
pub const RESUME_AFTER: Duration = Duration::from_secs(1);

impl Client {
    /// A client that starts connecting at `now` with `token`, to its first server. A token
    /// without servers leaves it in [`ClientState::InvalidConnectToken`].
    pub fn new(token: ConnectToken, now: Instant) -> Self {
        let state = if token.server_addresses.is_empty() {
            ClientState::InvalidConnectToken
        } else {
            ClientState::SendingRequest
        };
        Client {
            token,
            state,
            server: 0,
            sequence: 0,
            replay: ReplayWindow::default(),
            start: now,
            last_receive: now,
            last_send: None,
            challenge: None,
            client_index: 0,
            max_clients: 0,
            disconnects_left: 0,
            send_interval: Duration::from_millis(100),
            drops: DropCounts::default(),
            resumption: false,
            resuming: false,
            echo: None,
            cookies: false,
            cookie: None,
            reported: ClientState::Disconnected,
        }
    }

    /// The state, when it has changed since the last call (connected, or why the session
    /// ended); `None` otherwise. Changes after [`handle_datagram`](Self::handle_datagram),
    /// [`handle_timeout`](Self::handle_timeout) and [`disconnect`](Self::disconnect).
    pub fn poll_event(&mut self) -> Option<ClientState> {
        if self.state == self.reported {
            return None;
        }
        self.reported = self.state;
        Some(self.state)
    }

    /// Enables session resumption (not in the standard; the server must enable it too): the
    /// session survives a change of this client's address.
    pub fn with_resumption(mut self) -> Self {
        self.resumption = true;
        self
    }

    /// Enables address cookies (not in the standard; see `ServerConfig::cookies`): when the
    /// server answers a request with a cookie, the request goes again at once with the cookie
    /// after it, and so do its resends to that server. Servers that never ask are unaffected.
    pub fn with_cookies(mut self) -> Self {
        self.cookies = true;
        self
    }

    /// The client now sends from a new address (a new socket, a new network): with
    /// resumption, it announces the move with resume packets until the server answers.
    pub fn rebind(&mut self, now: Instant) {
        if self.resumption && self.state == ClientState::Connected {
            self.resuming = true;
            self.last_send = None;
            self.last_receive = self.last_receive.min(now);
        }
    }

    /// The state. Changes after [`handle_datagram`](Self::handle_datagram),
    /// [`handle_timeout`](Self::handle_timeout) and [`disconnect`](Self::disconnect).
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The server being tried or connected to.
    pub fn server_addr(&self) -> SocketAddr {
        let addrs = &self.token.server_addresses;
        addrs[self.server.min(addrs.len().saturating_sub(1))]
    }

    /// The slot the server gave this client, and its number of slots (once connected).
    pub fn slot(&self) -> Option<(u32, u32)> {
        (self.state == ClientState::Connected).then_some((self.client_index, self.max_clients))
    }

    /// Datagrams dropped, by reason.
    pub fn drops(&self) -> &DropCounts {
        &self.drops
    }

    /// Takes one datagram from `from`; a payload is decrypted in place and returned.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a mut [u8],
    ) -> Option<&'a [u8]> {
        match self.receive(now, from, bytes) {
            Ok(payload) => payload,
            Err(reason) => {
                self.drops.add(reason);
                None
            }
        }
    }

    fn receive<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &'a mut [u8],
    ) -> Result<Option<&'a [u8]>, DropReason> {
        if !self.state.is_active() || from != self.server_addr() {
            return Err(DropReason::UnknownSource);
        }
        if self.cookies
            && self.state == ClientState::SendingRequest
            && let Some(cookie) = cookie::read_packet(bytes)
        {
            // Unauthenticated, like the request it answers: a forged one costs one round
            // trip, since the server answers a bad cookie with a good one.
            self.cookie = Some(cookie);
            self.last_send = None;
            return Ok(None);
        }
        let header = packet::header(bytes).map_err(DropReason::Malformed)?;
        let expected = match self.state {
            ClientState::SendingRequest => matches!(header.kind, Kind::Denied | Kind::Challenge),
            ClientState::SendingResponse => matches!(header.kind, Kind::Denied | Kind::KeepAlive),
            _ => {
                matches!(
                    header.kind,
                    Kind::KeepAlive | Kind::Payload | Kind::Disconnect
                ) || (header.kind == Kind::Resume && self.resumption)
            }
        };
        if !expected {
            return Err(DropReason::UnexpectedType);
        }
        if header.kind.replay_protected() && self.replay.seen(header.sequence) {
            return Err(DropReason::Replayed);
        }
        let token = &self.token;
        let body = packet::open(
            bytes,
            &header,
            token.protocol_id,
            &token.server_to_client_key,
        )?;
        if header.kind.replay_protected() {
            self.replay.record(header.sequence);
        }
        match body {
            Body::Denied => self.next_server(now, ClientState::Denied),
            Body::Challenge { sequence, token } => {
                self.challenge = Some((sequence, Box::new(*token)));
                self.state = ClientState::SendingResponse;
                self.last_receive = now;
                self.last_send = None;
            }
            Body::KeepAlive {
                client_index,
                max_clients,
            } => {
                if self.state == ClientState::SendingResponse {
                    self.client_index = client_index;
                    self.max_clients = max_clients;
                    self.state = ClientState::Connected;
                    self.last_send = None;
                }
                self.last_receive = now;
            }
            Body::Payload(data) => {
                self.last_receive = now;
                return Ok(Some(data));
            }
            Body::Disconnect => self.state = ClientState::Disconnected,
            Body::Resume { token, .. } => {
                // The server saw the move and challenges the new address.
                self.echo = Some(token);
                self.last_receive = now;
            }
            Body::Response { .. } => return Err(DropReason::UnexpectedType),
        }
        if self.state == ClientState::Connected {
            self.resuming = false;
        }
        Ok(None)
    }

    /// The next datagram due at `now` (a request, a response, a keep-alive, or one of the
    /// redundant disconnects), written into `out` (at least [`super::MAX_PACKET_BYTES`]).
    /// Changes with time and after every other call.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let to = self.server_addr();
        let protocol_id = self.token.protocol_id;
        if self.disconnects_left > 0 {
            self.disconnects_left -= 1;
            let len = self.seal(&Body::Disconnect, protocol_id, out);
            return Some(Transmit { to, len });
        }
        if let Some(token) = self.echo.take() {
            let body = Body::Resume {
                client_index: self.client_index,
                token,
            };
            let len = self.seal(&body, protocol_id, out);
            self.last_send = Some(now);
            return Some(Transmit { to, len });
        }
        if self.resumption
            && self.state == ClientState::Connected
            && self.last_receive + RESUME_AFTER <= now
        {
            self.resuming = true;
        }
        if !self.state.is_active() || self.last_send.is_some_and(|t| t + self.send_interval > now) {
            return None;
        }
        let len = match self.state {
            ClientState::SendingRequest => {
                let len = packet::write_request(&self.token, out);
                match &self.cookie {
                    Some(c) => {
                        out[len..len + COOKIE_BYTES].copy_from_slice(c);
                        len + COOKIE_BYTES
                    }
                    None => len,
                }
            }
            ClientState::SendingResponse => {
                let (sequence, token) = self.challenge.take()?;
                let len = self.seal(
                    &Body::Response {
                        sequence,
                        token: &token,
                    },
                    protocol_id,
                    out,
                );
                self.challenge = Some((sequence, token));
                len
            }
            _ if self.resuming => self.seal(
                &Body::Resume {
                    client_index: self.client_index,
                    token: [0; RESUME_TOKEN_BYTES],
                },
                protocol_id,
                out,
            ),
            _ => self.seal(
                &Body::KeepAlive {
                    client_index: self.client_index,
                    max_clients: self.max_clients,
                },
                protocol_id,
                out,
            ),
        };
        self.last_send = Some(now);
        Some(Transmit { to, len })
    }

    /// Seals `payload` into `out` (at least [`super::MAX_PACKET_BYTES`]); only when connected.
    pub fn send(
        &mut self,
        now: Instant,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<Transmit, SendError> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SendError::PayloadSize(payload.len()));
        }
        if self.state != ClientState::Connected {
            return Err(SendError::NotConnected);
        }
        let len = self.seal(&Body::Payload(payload), self.token.protocol_id, out);
        self.last_send = Some(now);
        Ok(Transmit {
            to: self.server_addr(),
            len,
        })
    }

    fn seal(&mut self, body: &Body<'_>, protocol_id: u64, out: &mut [u8]) -> usize {
        let len = packet::seal(
            body,
            self.sequence,
            protocol_id,
            &self.token.client_to_server_key,
            out,
        );
        self.sequence += 1;
        len
    }

    /// Ends the session: [`DISCONNECT_PACKETS`] disconnect packets are due
    /// ([`poll_transmit`](Self::poll_transmit)) if connected, and the state is
    /// [`ClientState::Disconnected`].
    pub fn disconnect(&mut self) {
        if self.state == ClientState::Connected {
            self.disconnects_left = DISCONNECT_PACKETS;
        }
        if self.state.is_active() {
            self.state = ClientState::Disconnected;
        }
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) has work; `None` once inactive with nothing to
    /// send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.disconnects_left > 0 || self.echo.is_some() {
            // Due now.
            return Some(self.start.min(self.last_receive));
        }
        if !self.state.is_active() {
            return None;
        }
        let send = self
            .last_send
            .map_or(self.last_receive, |t| t + self.send_interval);
        let mut next = send.min(self.expiry());
        if let Some(t) = timeout_of(self.token.timeout_seconds) {
            next = next.min(self.last_receive + t);
        }
        Some(next)
    }

    /// Moves on when the token has expired or the server has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.state.is_active() {
            return;
        }
        if self.state != ClientState::Connected && self.expiry() <= now {
            self.state = ClientState::ConnectTokenExpired;
            return;
        }
        let Some(timeout) = timeout_of(self.token.timeout_seconds) else {
            return;
        };
        if self.last_receive + timeout > now {
            return;
        }
        match self.state {
            ClientState::SendingRequest => self.next_server(now, ClientState::RequestTimedOut),
            ClientState::SendingResponse => self.next_server(now, ClientState::ResponseTimedOut),
            _ => self.state = ClientState::ConnectionTimedOut,
        }
    }

    /// The token's lifetime on this client's clock (its own clock may disagree with the
    /// backend's, so the lifetime, not the timestamp, is what counts).
    fn expiry(&self) -> Instant {
        let life = self
            .token
            .expire_timestamp
            .saturating_sub(self.token.create_timestamp);
        self.start + Duration::from_secs(life)
    }

    /// The next server in the token, or `failure` when none is left.
    fn next_server(&mut self, now: Instant, failure: ClientState) {
        if self.server + 1 < self.token.server_addresses.len() {
            self.server += 1;
            self.state = ClientState::SendingRequest;
            self.last_receive = now;
            self.last_send = None;
            self.challenge = None;
            self.cookie = None;
        } else {
            self.state = failure;
        }
    }
}
