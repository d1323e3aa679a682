//! The WebSocket peers: tokio-tungstenite, and fastwebsockets on hyper's upgrade, each a
//! current-thread tokio runtime per core thread on its own SO_REUSEPORT listener, echoing every
//! text and binary message as its own examples do.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ServerConfig;

/// Which library frames the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// tokio-tungstenite's `accept_async` and its `Stream`/`Sink`.
    TokioTungstenite,
    /// fastwebsockets' `upgrade` under hyper, with its `FragmentCollector`.
    FastWebSockets,
}

/// Serves WebSocket echo with `peer`, one thread per listener; never returns normally.
pub fn serve(config: ServerConfig, peer: Peer) -> Result<(), String> {
    super::tokio_hyper::per_listener(config.listeners, move |stream| async move {
        match peer {
            Peer::TokioTungstenite => tungstenite_echo(stream).await,
            Peer::FastWebSockets => fastwebsockets_connection(stream).await,
        }
    })
}

async fn tungstenite_echo(stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

async fn fastwebsockets_connection(stream: TcpStream) {
    let service = service_fn(|mut req: Request<Incoming>| async move {
        let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut req)?;
        tokio::spawn(async move {
            let _ = fastwebsockets_echo(upgrade).await;
        });
        Ok::<Response<Empty<Bytes>>, fastwebsockets::WebSocketError>(response)
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn fastwebsockets_echo(
    upgrade: fastwebsockets::upgrade::UpgradeFut,
) -> Result<(), fastwebsockets::WebSocketError> {
    let mut ws = fastwebsockets::FragmentCollector::new(upgrade.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            fastwebsockets::OpCode::Close => return Ok(()),
            fastwebsockets::OpCode::Text | fastwebsockets::OpCode::Binary => {
                ws.write_frame(frame).await?;
            }
            _ => {}
        }
    }
}
