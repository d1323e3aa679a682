//! WebSocket on the engine: sessions upgraded from an HTTP route ([`accept`]) or dialled
//! ([`connect`]), each a [`WebSocket`] driving the sans-IO [`WsConn`](crate::ws::WsConn) on
//! its stream.
//!
//! - Receiving: [`WebSocket::recv`] (or a [`WsReader`] after [`WebSocket::split`]) reads
//!   pooled buffers (an idle session holds none), answers pings and the peer's close, keeps
//!   the heartbeat and the close handshake's deadline.
//! - Sending: [`WebSocket::send`] on the connection's core (or a [`WsWriter`], which may be
//!   cloned into other tasks there), [`WsSender`] from any core or thread, and [`Group`] to
//!   publish one message to many sessions on a core, framed once. Every frame goes through
//!   the session's outbound queue, bounded in bytes, whose [`QueuePolicy`] decides what a
//!   slow reader costs: senders wait, the oldest messages are dropped, or the reader is
//!   closed (1008 or 1013). Queued frames are written together, one `writev` per turn.
//!
//! ```no_run
//! use coring_protocols::serve::{Router, Server};
//! use coring_protocols::websocket;
//!
//! coring::Runtime::builder().build()?.run(|_core| async {
//!     let router = Router::new().route("GET", "/echo", |req, _params| async move {
//!         websocket::accept(&req, websocket::WsConfig::default(), |mut socket| async move {
//!             while let Ok(Some(message)) = socket.recv().await {
//!                 if socket.send(&message).await.is_err() {
//!                     return;
//!                 }
//!             }
//!         })
//!     });
//!     let listener = coring::net::TcpListener::bind_reuseport("127.0.0.1:9001").unwrap();
//!     Server::new(router).serve(listener).await;
//! })?;
//! # Ok::<(), coring::Error>(())
//! ```

mod broadcast;
mod client;
mod outbox;
mod sender;
mod session;

pub use broadcast::{Group, Published};
pub use client::{ConnectError, ConnectOptions, connect, connect_with};
pub use outbox::QueuePolicy;
pub use sender::{TrySendError, WsSender};
pub use session::{WebSocket, WsReader, WsWriter};

pub use crate::ws::deflate::DeflateConfig;
pub use crate::ws::{CloseFrame, Message, WsConfig};
use crate::ws::{Role, WsError, handshake::Upgrade};

use std::sync::Arc;

use crate::serve::Reply;

/// Why a session ended badly, or a send failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer broke the protocol (it was told, with the matching close code), or the
    /// session is closing and takes no more messages.
    #[error("{0}")]
    Ws(#[from] WsError),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] coring::Error),
}

/// The answer to a WebSocket upgrade request on a route: `101 Switching Protocols` and
/// then `session` with the [`WebSocket`]; a request that is not a valid upgrade gets its
/// refusal (400 or 426) instead and `session` never runs. Pass the configuration as an
/// `Arc<WsConfig>` the route keeps to share it between sessions (a `WsConfig` works too).
pub fn accept<F, Fut>(
    req: &crate::http1::Request,
    config: impl Into<Arc<WsConfig>>,
    session: F,
) -> Reply
where
    F: FnOnce(WebSocket) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let config = config.into();
    match Upgrade::from_request(req) {
        Ok(up) => {
            let agreed = config
                .deflate
                .as_ref()
                .and_then(|d| crate::ws::deflate::negotiate(&up.extensions, d));
            let (agreed, extensions) = match agreed {
                Some((a, header)) => (Some(a), Some(header)),
                None => (None, None),
            };
            let protocol = config.choose_protocol(&up.protocols).map(str::to_owned);
            Reply::upgrade(
                up.response_with(protocol.as_deref(), extensions),
                // The session is made before its future, which then holds only what the session
                // itself needs (an idle session's memory is mostly this future).
                move |upgraded| {
                    let socket =
                        WebSocket::from_upgraded(upgraded, Role::Server, config, agreed, protocol);
                    session(socket)
                },
            )
        }
        Err(e) => e.response().into(),
    }
}

/// A seed for a client's masking keys that a peer or a script cannot predict.
pub(crate) fn random_u64() -> u64 {
    let key = crate::ws::handshake::random_key();
    u64::from_le_bytes([
        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    ])
}
