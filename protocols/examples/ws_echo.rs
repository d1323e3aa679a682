//! WebSocket echo server: every text and binary message comes back unchanged. One listener
//! per core (SO_REUSEPORT); the binaries convention (`--addr`, `--cores`, `--driver`, one
//! `listening on HOST:PORT` line, exit 0 on SIGTERM). With `--tls-cert PEM --tls-key PEM`
//! (built with the `tls` feature) it serves WSS.
//!
//! `cargo run --release -p coring-protocols --example ws_echo -- --addr 127.0.0.1:9001`
//! `cargo run --release -p coring-protocols --features tls --example ws_echo -- --tls-cert
//! cert.pem --tls-key key.pem`

use std::sync::Arc;

use coring::net::TcpListener;
use coring_protocols::serve::{Router, Server};
use coring_protocols::websocket as ws;

fn main() {
    let args = coring_cli::server_args_tls("ws_echo", "WebSocket echo server", 9001);
    let tls = tls_config(&args);
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
        let tls = tls.clone();
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
            let server = Server::new(router);
            match tls {
                #[cfg(feature = "tls")]
                Some(config) => {
                    let acceptor = coring_protocols::tls::TlsAcceptor::new(config);
                    server.serve_tls(listener, acceptor).await;
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match never {},
                None => server.serve(listener).await,
            }
        }
    });
    startup.exit("ws_echo", result);
}

/// The server configuration from `--tls-cert` and `--tls-key`, if given; exits 2 with the
/// reason if they do not load.
#[cfg(feature = "tls")]
fn tls_config(
    args: &coring_cli::ServerArgs,
) -> Option<Arc<coring_protocols::tls::rustls::ServerConfig>> {
    let files = args.tls.as_ref()?;
    match coring_protocols::tls::server_config_from_pem(&files.cert, &files.key) {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            eprintln!("ws_echo: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(not(feature = "tls"))]
fn tls_config(args: &coring_cli::ServerArgs) -> Option<NoTls> {
    if args.tls.is_some() {
        eprintln!("ws_echo: built without TLS (cargo build --features tls)");
        std::process::exit(2);
    }
    None
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

/// No TLS in this build: no value, so the match on it needs no arm.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum NoTls {}
