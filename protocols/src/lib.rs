//! coring-protocols: sans-IO protocol codecs, and the loops that drive them on coring.
//!
//! # The map
//!
//! - [`http1`]: HTTP/1.1 sans-IO: the server connection ([`http1::ServerConn`]: pipelining,
//!   chunked bodies, limits, smuggling defences, keep-alive, `100 Continue`, its deadlines as
//!   data), response encoding, and the client's response framing. No sockets, no clock, no
//!   spawning.
//! - [`ws`]: WebSocket (RFC 6455) sans-IO: frames, the opening handshake both ways, and
//!   [`ws::WsConn`] for either role (fragments, UTF-8 checked as it arrives, limits, the close
//!   handshake, an optional heartbeat).
//! - `serve` (feature `engine`, on by default): the per-connection loop that drives the codec
//!   on coring streams, a small router and the per-core date cache.
//! - `websocket` (feature `engine`): WebSocket sessions upgraded from a route or dialled
//!   (`ws://`), their outbound queues and policies, senders from other cores, and groups
//!   that publish one message to many sessions.
//! - `client` (feature `engine`): an HTTP/1.1 client with a keep-alive pool per host.
//! - `queued` (feature `engine`): queued endpoints (bounded incoming queue, error queue,
//!   pause, retry, operator routes over HTTP) and queued senders with retries (sequenced too).
//! - `reconnect` (feature `engine`): a client that reconnects over TCP, TLS or WebSocket
//!   (backoff with jitter, heartbeats, replay of unacknowledged messages).
//! - [`netwatch`]: network-change events (links up and down, addresses, the default route)
//!   from rtnetlink, sans-IO, and `NetworkChanges` on a core (feature `engine`; Linux).
//! - `dns` (feature `engine`): a stub resolver on the engine (hosts, resolv.conf, A and AAAA
//!   over UDP with TCP on truncation, a TTL cache) and connecting by name.
//! - `tls` (feature `tls`, off by default): rustls on engine streams (acceptor, connector, a
//!   stream that reads from pooled buffers).
//! - [`netcode`]: netcode.io 1.02 sessions sans-IO: connect tokens, admission before crypto,
//!   the server and client state machines, opt-in session resumption.
//! - [`channel`]: reliable and unreliable channels over any datagram session (acks,
//!   retransmission, fragmentation, a tick budget, RTT and loss estimates).
//! - `udp` (feature `engine`): netcode servers on a core's UDP socket, channels over them, and
//!   the clients.
//! - [`room`]: a room's delivery sans-IO: the numbered history a returning member catches up
//!   from, and each member's queue under its policy (ordered, conflated by key, drop-oldest,
//!   disconnect).
//! - `rooms` (feature `engine`): rooms whose members live on any core (one mail per core per
//!   publish, the room's home core numbers and keeps history), WebSocket and netcode members,
//!   and the NATS bridge that spans processes.
//! - `capture` (feature `engine`): a server's traffic as a pcapng file (made-up TCP around
//!   the bytes the application read and wrote) for Wireshark and `tshark`.
//! - [`framing`]: codecs for custom protocols over streams, sans-IO (length-prefixed, lines),
//!   and `framed` (feature `engine`) to run one on a TCP, Unix or TLS stream.
//! - `metrics` (feature `engine`): every core's counters in the Prometheus text format, and
//!   a route that serves them.
//! - [`nats`]: the NATS client protocol sans-IO (what the bridge speaks).
//! - [`proxy`]: the PROXY protocol (v1 and v2) sans-IO, the header a load balancer sends
//!   first; `serve::ProxyProtocol` reads it on a listener from trusted peers only.
//! - [`cidr`]: networks by address and prefix, for allow, deny and trusted lists.
//! - [`admission`]: access lists and per-source token buckets in a fixed table, what the
//!   netcode server and `serve::Admission` refuse sources with before spending on them.
//! - `tick` (feature `engine`): a fixed-rate tick loop on absolute deadlines, its lateness and
//!   work recorded in histograms, overruns counted.
//!
//! Data flows: socket bytes → `ServerConn::handle_shared` → `poll_request` → `Request` → your
//! handler → `Response` → `ServerConn::respond` into one buffer per turn → one write; the
//! connection's `poll_timeout` is the one timer the loop arms.

#![forbid(unsafe_code)]

pub mod admission;
#[cfg(feature = "engine")]
pub mod capture;
pub mod channel;
pub mod cidr;
#[cfg(feature = "engine")]
pub mod client;
#[cfg(feature = "engine")]
pub mod dns;
#[cfg(feature = "engine")]
pub mod framed;
pub mod framing;
pub mod http1;
#[cfg(feature = "hyper")]
pub mod hyper_rt;
#[cfg(feature = "engine")]
pub mod metrics;
pub mod nats;
pub mod netcode;
pub mod netwatch;
pub mod proxy;
#[cfg(feature = "engine")]
pub mod queued;
#[cfg(feature = "engine")]
pub mod reconnect;
pub mod room;
#[cfg(feature = "engine")]
pub mod rooms;
#[cfg(feature = "serde")]
pub mod rpc;
#[cfg(feature = "serde")]
pub mod serialize;
#[cfg(feature = "engine")]
pub mod serve;
#[cfg(feature = "engine")]
pub mod tick;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "engine")]
mod transport;
#[cfg(feature = "engine")]
pub mod udp;
#[cfg(feature = "engine")]
pub mod websocket;
pub mod ws;
