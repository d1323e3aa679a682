//! Channels ([`crate::channel`]) over netcode sessions on the engine: one
//! [`Connection`] per session, its packets carried as netcode payloads, flushed every tick.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coring::net::UdpSocket;
use coring::time::{now, timeout_at};

use super::{ClientError, Event, NetcodeClient, Sessions, serve_with_tick};
use crate::channel::{ChannelError, Connection, ConnectionConfig, ConnectionStats};
use crate::netcode::{
    self, ClientIndex, ConnectToken, DisconnectReason, MAX_PAYLOAD_BYTES, ServerStats,
    USER_DATA_BYTES,
};

/// What happened, as [`serve_channels`] tells its handler.
#[derive(Debug)]
pub enum ChannelEvent<'a> {
    /// A client joined (its channels are ready).
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
    /// A message on one of a client's channels.
    Message {
        /// From which slot.
        client: ClientIndex,
        /// The channel.
        channel: u8,
        /// The message.
        data: Bytes,
    },
    /// A session ended; its queued messages are gone with it.
    Disconnected {
        /// The slot it held.
        client: ClientIndex,
        /// Its id.
        client_id: u64,
        /// Why.
        reason: DisconnectReason,
    },
    /// A session moved to a new address (resumption); its channels carry on.
    Moved {
        /// Its slot.
        client: ClientIndex,
        /// The old address.
        from: SocketAddr,
        /// The new one.
        to: SocketAddr,
    },
    /// The loop's tick: game logic runs here; what it sends goes out at the end of the tick.
    Tick,
}

/// The sessions' channels, as a handler sees them.
#[derive(Debug)]
pub struct ChannelSessions<'s> {
    connections: &'s mut [Option<Connection>],
    now: Instant,
}

impl ChannelSessions<'_> {
    /// Queues `message` on `client`'s `channel`; it goes out with the next tick's packets.
    pub fn send(
        &mut self,
        client: ClientIndex,
        channel: u8,
        message: Bytes,
    ) -> Result<(), ChannelError> {
        match self.connection(client) {
            Some(c) => c.send(channel, message),
            None => Err(ChannelError::NotConnected),
        }
    }

    /// `client`'s estimates and counters.
    pub fn stats(&mut self, client: ClientIndex) -> Option<ConnectionStats> {
        let now = self.now;
        self.connection(client).map(|c| c.stats(now))
    }

    fn connection(&mut self, client: ClientIndex) -> Option<&mut Connection> {
        self.connections
            .get_mut(client.get() as usize)
            .and_then(Option::as_mut)
    }
}

/// Serves channelled sessions on `socket` until the core shuts down: netcode's handshake and
/// timeouts, a [`Connection`] with `config`'s channels per session, and every `tick` the
/// handler's [`ChannelEvent::Tick`] followed by each connection's packets.
pub async fn serve_channels<H>(
    socket: UdpSocket,
    server: netcode::Server,
    config: ConnectionConfig,
    tick: Duration,
    mut handler: H,
) -> ServerStats
where
    H: FnMut(&mut ChannelSessions<'_>, ChannelEvent<'_>),
{
    let max_clients = server.config().max_clients;
    let mut connections: Vec<Option<Connection>> = (0..max_clients).map(|_| None).collect();
    let mut packet = vec![0u8; MAX_PAYLOAD_BYTES];
    let config = ConnectionConfig {
        max_packet_bytes: config.max_packet_bytes.min(MAX_PAYLOAD_BYTES),
        ..config
    };
    // Messages of one packet, handed out after it is read (kept: no allocation per packet).
    let mut delivered: Vec<(u8, Bytes)> = Vec::new();
    serve_with_tick(socket, server, Some(tick), |sessions: &mut Sessions<'_>, event| {
        let now = sessions.now;
        let event = match event {
            Event::Connected {
                client,
                client_id,
                addr,
                user_data,
            } => {
                connections[client.get() as usize] = Some(Connection::new(config.clone(), now));
                ChannelEvent::Connected {
                    client,
                    client_id,
                    addr,
                    user_data,
                }
            }
            Event::Disconnected {
                client,
                client_id,
                reason,
            } => {
                connections[client.get() as usize] = None;
                ChannelEvent::Disconnected {
                    client,
                    client_id,
                    reason,
                }
            }
            Event::Moved { client, from, to } => ChannelEvent::Moved { client, from, to },
            Event::Tick => ChannelEvent::Tick,
            Event::Payload { client, data } => {
                let Some(conn) = connections[client.get() as usize].as_mut() else {
                    return;
                };
                if let Err(e) = conn.handle_packet(now, data) {
                    tracing::debug!(error = %e, client = client.get(), "channel packet dropped");
                    return;
                }
                delivered.extend(std::iter::from_fn(|| conn.receive()));
                let mut ctx = ChannelSessions {
                    connections: &mut connections,
                    now,
                };
                for (channel, data) in delivered.drain(..) {
                    let message = ChannelEvent::Message {
                        client,
                        channel,
                        data,
                    };
                    handler(&mut ctx, message);
                }
                return;
            }
        };
        let tick = matches!(event, ChannelEvent::Tick);
        let mut ctx = ChannelSessions {
            connections: &mut connections,
            now,
        };
        handler(&mut ctx, event);
        if !tick {
            return;
        }
        for (i, conn) in connections.iter_mut().enumerate() {
            let Some(conn) = conn else { continue };
            conn.begin_tick();
            while let Some(n) = conn.poll_packet(now, &mut packet) {
                let client = sessions.client(i);
                // Refused (a moved session's unvalidated address over its budget): the packet
                // counts as lost and what it carried goes again.
                if let Err(e) = sessions.send(client, &packet[..n]) {
                    tracing::debug!(error = %e, "channel packet not sent");
                    break;
                }
            }
        }
    })
    .await
}

/// A channelled client on the engine: a [`NetcodeClient`] and its [`Connection`].
#[derive(Debug)]
pub struct ChannelClient {
    client: NetcodeClient,
    connection: Connection,
    tick: Duration,
    next_tick: Instant,
    packet: Vec<u8>,
}

impl ChannelClient {
    /// Connects with `token` and opens `config`'s channels (the server's list); packets go
    /// out every `tick` while [`recv`](Self::recv) or [`flush`](Self::flush) runs.
    pub async fn connect(
        token: ConnectToken,
        config: ConnectionConfig,
        tick: Duration,
    ) -> Result<ChannelClient, ClientError> {
        Self::over(NetcodeClient::connect(token).await?, config, tick)
    }

    /// [`connect`](Self::connect) on a socket of the caller's.
    pub async fn connect_on(
        socket: UdpSocket,
        token: ConnectToken,
        config: ConnectionConfig,
        tick: Duration,
    ) -> Result<ChannelClient, ClientError> {
        Self::over(
            NetcodeClient::connect_on(socket, token).await?,
            config,
            tick,
        )
    }

    /// Connects with a netcode state machine the caller made (resumption, say) on `socket`.
    pub async fn connect_with(
        socket: UdpSocket,
        client: netcode::Client,
        config: ConnectionConfig,
        tick: Duration,
    ) -> Result<ChannelClient, ClientError> {
        Self::over(
            NetcodeClient::connect_with(socket, client).await?,
            config,
            tick,
        )
    }

    /// Carries on from `socket` (see [`NetcodeClient::rebind`]): with resumption the session and
    /// every channel's state survive the move.
    pub fn rebind(&mut self, socket: UdpSocket) {
        self.client.rebind(socket);
    }

    fn over(
        client: NetcodeClient,
        config: ConnectionConfig,
        tick: Duration,
    ) -> Result<ChannelClient, ClientError> {
        let config = ConnectionConfig {
            max_packet_bytes: config.max_packet_bytes.min(MAX_PAYLOAD_BYTES),
            ..config
        };
        let now = now();
        Ok(ChannelClient {
            client,
            connection: Connection::new(config, now),
            tick,
            next_tick: now,
            packet: vec![0; MAX_PAYLOAD_BYTES],
        })
    }

    /// Queues `message` on `channel` (sent with the next tick's packets).
    pub fn send(&mut self, channel: u8, message: Bytes) -> Result<(), ChannelError> {
        self.connection.send(channel, message)
    }

    /// The next message, with its channel; packets go out every tick meanwhile.
    pub async fn recv(&mut self) -> Result<(u8, Bytes), ClientError> {
        loop {
            if let Some(m) = self.connection.receive() {
                return Ok(m);
            }
            self.tick_if_due().await?;
            match timeout_at(self.next_tick, self.client.recv()).await {
                Ok(payload) => {
                    let payload = payload?;
                    if let Err(e) = self.connection.handle_packet(now(), &payload) {
                        tracing::debug!(error = %e, "channel packet dropped");
                    }
                }
                Err(_tick) => {}
            }
        }
    }

    /// Runs ticks until every reliable message is acked, or `limit` passes.
    pub async fn flush(&mut self, limit: Duration) -> Result<bool, ClientError> {
        let end = now() + limit;
        while !self.connection.is_idle() {
            if now() >= end {
                return Ok(false);
            }
            self.tick_if_due().await?;
            if let Ok(payload) = timeout_at(self.next_tick.min(end), self.client.recv()).await {
                let payload = payload?;
                if let Err(e) = self.connection.handle_packet(now(), &payload) {
                    tracing::debug!(error = %e, "channel packet dropped");
                }
            }
        }
        Ok(true)
    }

    /// The connection's estimates and counters.
    pub fn stats(&self) -> ConnectionStats {
        self.connection.stats(now())
    }

    /// The netcode client underneath.
    pub fn netcode(&self) -> &NetcodeClient {
        &self.client
    }

    /// Ends the session (netcode's disconnect packets).
    pub async fn disconnect(self) -> Result<(), ClientError> {
        self.client.disconnect().await
    }

    async fn tick_if_due(&mut self) -> Result<(), ClientError> {
        let now = now();
        if now < self.next_tick {
            return Ok(());
        }
        self.next_tick += self.tick;
        while self.next_tick <= now {
            self.next_tick += self.tick;
        }
        self.connection.begin_tick();
        while let Some(n) = self.connection.poll_packet(now, &mut self.packet) {
            let packet = self.packet[..n].to_vec();
            self.client.send(&packet).await?;
        }
        Ok(())
    }
}
