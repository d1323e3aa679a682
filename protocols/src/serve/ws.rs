//! WebSocket sessions on the engine: a route accepts the upgrade ([`accept`]), and the
//! session gets a [`WebSocket`] that drives a `WsConn` on the stream.
//!
//! ```no_run
//! use coring_protocols::serve::{Router, Server, ws};
//!
//! coring::Runtime::builder().build()?.run(|_core| async {
//!     let router = Router::new().route("GET", "/echo", |req, _params| async move {
//!         ws::accept(&req, ws::WsConfig::default(), |socket| async move {
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

use std::cell::RefCell;
use std::rc::Rc;

use coring::net::{PooledReader, TcpStream};
use coring::time::{self, timeout_at};

pub use crate::ws::deflate::DeflateConfig;
use crate::ws::handshake::Upgrade;
pub use crate::ws::{CloseFrame, Message, WsConfig};
use crate::ws::{Event, Role, WsConn, WsError};

use super::{Reply, Upgraded, out_buffer};

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer broke the protocol (it was told, with the matching close code).
    #[error("{0}")]
    Ws(#[from] WsError),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] coring::Error),
}

/// The answer to a WebSocket upgrade request on a route: `101 Switching Protocols` and
/// then `session` with the [`WebSocket`]; a request that is not a valid upgrade gets its
/// refusal (400 or 426) instead and `session` never runs.
pub fn accept<F, Fut>(req: &crate::http1::Request, config: WsConfig, session: F) -> Reply
where
    F: FnOnce(WebSocket) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
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
            Reply::upgrade(
                up.response_with(None, extensions),
                move |upgraded| async move {
                    let mut socket = WebSocket::new(upgraded, Role::Server, config);
                    if let Some(agreed) = agreed {
                        socket.enable_deflate(agreed);
                    }
                    session(socket).await;
                },
            )
        }
        Err(e) => e.response().into(),
    }
}

/// One WebSocket session on the engine. Use it from one task: `recv` answers pings and the
/// peer's close by itself, `send` writes one message.
pub struct WebSocket {
    stream: Rc<TcpStream>,
    reader: RefCell<Option<PooledReader>>,
    conn: RefCell<WsConn>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket").finish_non_exhaustive()
    }
}

impl WebSocket {
    /// A session on an upgraded connection, in `role`.
    pub fn new(upgraded: Upgraded, role: Role, config: WsConfig) -> WebSocket {
        let now = time::now();
        let mut conn = WsConn::new(role, config, now, mask_seed());
        if !upgraded.leftover.is_empty() {
            conn.handle_input(&upgraded.leftover, now);
        }
        let reader = upgraded.reader.unwrap_or_else(|| upgraded.stream.pooled());
        WebSocket {
            stream: upgraded.stream,
            reader: RefCell::new(Some(reader)),
            conn: RefCell::new(conn),
        }
    }

    /// Compresses and inflates messages as the handshake agreed (permessage-deflate).
    fn enable_deflate(&mut self, agreed: crate::ws::deflate::Agreed) {
        self.conn.get_mut().enable_deflate(agreed);
    }

    /// The next message: `Ok(None)` once the peer closed (the close was answered). Pings are
    /// answered and pongs taken on the way; a protocol error is reported to the peer with its
    /// close code, then returned.
    pub async fn recv(&self) -> Result<Option<Message>, Error> {
        loop {
            let event = self.conn.borrow_mut().poll_event();
            self.flush_owed().await?;
            match event {
                Some(Ok(Event::Message(m))) => return Ok(Some(m)),
                Some(Ok(Event::Ping(_) | Event::Pong(_))) => continue,
                Some(Ok(Event::Close(_))) => {
                    self.finish().await;
                    return Ok(None);
                }
                Some(Err(WsError::Abrupt)) => return Ok(None),
                Some(Err(e)) => {
                    self.finish().await;
                    return Err(e.into());
                }
                None => {}
            }
            if self.conn.borrow().is_closed() {
                self.finish().await;
                return Ok(None);
            }
            self.wait().await?;
        }
    }

    /// Sends `message` as one frame. Fails once the session is closing.
    pub async fn send(&self, message: &Message) -> Result<(), Error> {
        let mut out = out_buffer::take();
        let encoded = self.conn.borrow_mut().send(message, &mut out);
        if let Err(e) = encoded {
            out_buffer::give_back(out);
            return Err(e.into());
        }
        self.write(out).await
    }

    /// Sends a ping (at most 125 bytes); its pong comes back through `recv`.
    pub async fn ping(&self, payload: &[u8]) -> Result<(), Error> {
        let mut out = out_buffer::take();
        let encoded = self.conn.borrow_mut().ping(payload, &mut out);
        if let Err(e) = encoded {
            out_buffer::give_back(out);
            return Err(e.into());
        }
        self.write(out).await
    }

    /// Starts the closing handshake; `recv` returns `Ok(None)` once the peer answered (or
    /// the close timeout passed).
    pub async fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        let mut out = out_buffer::take();
        self.conn
            .borrow_mut()
            .close(code, reason, time::now(), &mut out);
        self.write(out).await
    }

    /// Waits for bytes or the connection's deadline and hands them over.
    async fn wait(&self) -> Result<(), Error> {
        let due = self.conn.borrow().poll_timeout().map(|(_, at)| at);
        let Some(mut reader) = self.reader.borrow_mut().take() else {
            self.conn.borrow_mut().handle_eof(time::now());
            return Ok(());
        };
        let got = match due {
            Some(due) => timeout_at(due, reader.next()).await.ok(),
            None => Some(reader.next().await),
        };
        *self.reader.borrow_mut() = Some(reader);
        let now = time::now();
        let mut conn = self.conn.borrow_mut();
        match got {
            Some(Ok(Some(buf))) => conn.handle_input(&buf, now),
            Some(Ok(None)) => conn.handle_eof(now),
            Some(Err(e)) => return Err(e.into()),
            None => conn.handle_timeout(now),
        }
        Ok(())
    }

    /// Writes what the connection owes the peer (pongs, the close reply).
    async fn flush_owed(&self) -> Result<(), Error> {
        // Usually nothing is owed: an empty Vec costs no allocation and no trip to the pool.
        let mut out = Vec::new();
        self.conn.borrow_mut().poll_transmit(&mut out);
        self.write(out).await
    }

    /// Writes `out` and gives the buffer to the core's pool (`out_buffer`, which `send` takes
    /// from): sending allocates nothing per message, and an idle session holds no buffer.
    async fn write(&self, out: Vec<u8>) -> Result<(), Error> {
        if out.is_empty() {
            out_buffer::give_back(out);
            return Ok(());
        }
        let (r, back) = self.stream.write_all(out).await;
        out_buffer::give_back(back);
        r.map_err(Error::from)
    }

    /// The session is over: our side of the stream closes (a server closes first, RFC 6455
    /// section 7.1.1).
    async fn finish(&self) {
        let _ = self.flush_owed().await;
        let _ = self.stream.shutdown(std::net::Shutdown::Write).await;
    }
}

/// A seed for a client's masking keys from the OS's random source (std's hasher keys are
/// drawn from it), so a peer or a script cannot predict the masks.
fn mask_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
