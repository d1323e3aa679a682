//! WebSocket echo server: every text and binary message comes back unchanged. One listener
//! per core (SO_REUSEPORT); the binaries convention (`--addr`, `--cores`, `--driver`, one
//! `listening on HOST:PORT` line, exit 0 on SIGTERM).
//!
//! `cargo run --release -p coring-protocols --example ws_echo -- --addr 127.0.0.1:9001`

use std::sync::Arc;

use coring::net::TcpListener;
use coring_protocols::serve::{Router, Server};
use coring_protocols::websocket as ws;

fn main() {
    let args = coring_cli::server_args("ws_echo", "WebSocket echo server", 9001);
    let runtime = coring_cli::server_runtime("ws_echo", &args);
    let startup = Arc::new(coring_cli::Startup::new(args.cores));
    let result = runtime.run(|core| {
        let listener = startup.bind(
            "ws_echo",
            &core,
            args.addr,
            TcpListener::bind_reuseport,
            |l| Some(l.local_addr()),
        );
        async move {
            let Some(listener) = listener else {
                return;
            };
            // Compression when the client offers it; one configuration for the core's sessions.
            let config = std::sync::Arc::new(ws::WsConfig {
                deflate: Some(ws::DeflateConfig::default()),
                ..ws::WsConfig::default()
            });
            let router = Router::new().route("GET", "/", move |req, _params| {
                let config = std::sync::Arc::clone(&config);
                async move { ws::accept(&req, config, echo) }
            });
            Server::new(router).serve(listener).await;
        }
    });
    startup.exit("ws_echo", result);
}

async fn echo(mut socket: ws::WebSocket) {
    loop {
        match socket.recv().await {
            Ok(Some(message)) => {
                if socket.send(&message).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "websocket session failed");
                return;
            }
        }
    }
}
