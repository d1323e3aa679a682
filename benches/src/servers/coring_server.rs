//! coring, on the driver asked for: the project's own HTTP stack (the `coring-tfb` app with the
//! suite's `Server` name, `/static` through the zero-copy file path; over rustls when given a
//! certificate), a pooled echo, and WebSocket echo upgraded from a route.

use std::rc::Rc;

use coring::driver::probe::DriverChoice;
use coring::net::{TcpListener, TcpStream};
use coring::runtime::{Runtime, shutdown_signal, until_shutdown};
use coring_protocols::http1::{Request, Response};
use coring_protocols::serve::{Config, Reply, Router, Server};
use coring_protocols::websocket::{self, WebSocket, WsConfig};

use super::{App, SERVER_NAME, ServerConfig};

/// A coring runtime on `driver` with one core per listener, each core running `serve` on its
/// own listener (adopted on that core); returns when shut down. The shape every coring-based
/// variant shares.
pub fn per_core<F, Fut>(
    listeners: Vec<std::net::TcpListener>,
    driver: DriverChoice,
    thread_name: &str,
    serve: F,
) -> Result<(), String>
where
    F: Fn(TcpListener) -> Fut + Sync,
    Fut: Future<Output = ()> + 'static,
{
    let rt = Runtime::builder()
        .cores(listeners.len())
        .driver(driver)
        .thread_name(thread_name)
        .build()
        .map_err(|e| e.to_string())?;
    rt.shutdown_on_signals().map_err(|e| e.to_string())?;
    let listeners: Vec<_> = listeners
        .into_iter()
        .map(|l| std::sync::Mutex::new(Some(l)))
        .collect();
    rt.run(|core| {
        let listener = listeners[core.index()]
            .lock()
            .expect("listener lock")
            .take()
            .map(TcpListener::from_std);
        let served = match listener {
            Some(Ok(l)) => Some(serve(l)),
            Some(Err(e)) => {
                eprintln!("{thread_name}: {e}");
                None
            }
            None => None,
        };
        async move {
            if let Some(served) = served {
                served.await;
            }
        }
    })
    .map_err(|e| e.to_string())
}

/// Serves `config` on coring with `driver`, one core per listener; returns when shut down.
pub fn serve(config: ServerConfig, driver: DriverChoice) -> Result<(), String> {
    let (app, file) = (config.app, config.file);
    let tls = match &config.tls {
        Some(files) => Some(std::sync::Arc::new(
            coring_protocols::tls::server_config_from_pem(&files.cert, &files.key)
                .map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    per_core(config.listeners, driver, "coring", |listener| {
        let file = file.clone();
        let tls = tls.clone();
        async move {
            match app {
                App::Tfb => {
                    let file = file.and_then(|p| coring::fs::File::open(p).ok().map(Rc::new));
                    let server_config = Config {
                        server_name: Some(SERVER_NAME.into()),
                        ..Config::default()
                    };
                    let server = Server::new(move |req: Request| handle(req, file.clone()))
                        .config(server_config);
                    match tls {
                        Some(config) => {
                            let acceptor = coring_protocols::tls::TlsAcceptor::new(config);
                            server.serve_tls(listener, acceptor).await;
                        }
                        None => server.serve(listener).await,
                    }
                }
                App::Ws => {
                    // One configuration shared by the core's sessions.
                    let config = std::sync::Arc::new(WsConfig::default());
                    let router = Router::new().route("GET", "/", move |req, _params| {
                        let config = std::sync::Arc::clone(&config);
                        async move { websocket::accept(&req, config, ws_echo) }
                    });
                    Server::new(router).serve(listener).await;
                }
                App::Echo => {
                    let mut incoming = listener.incoming();
                    while let Some(next) = until_shutdown(incoming.next()).await {
                        if let Ok(stream) = next {
                            coring::spawn_local(echo(stream));
                        }
                    }
                }
            }
        }
    })
}

async fn handle(req: Request, file: Option<Rc<coring::fs::File>>) -> Reply {
    let path = req.path();
    match file {
        Some(file) if path == "/static" => match file.len() {
            Ok(len) => Reply::file(
                Response::new(200).header("Content-Type", "application/octet-stream"),
                file,
                0,
                len,
            ),
            Err(_) => Response::new(500).into(),
        },
        _ => crate::tfb_response(path).into(),
    }
}

/// Echoes from the core's buffer pool (multishot receive), each buffer written back as is.
async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = stream.pooled();
    let mut shutdown = shutdown_signal();
    while let Some(Ok(Some(buf))) = shutdown.guard(reader.next()).await {
        let (result, _) = stream.write_all(buf).await;
        if result.is_err() {
            return;
        }
    }
}

/// Echoes every WebSocket message as it comes.
async fn ws_echo(mut socket: WebSocket) {
    while let Ok(Some(message)) = socket.recv().await {
        if socket.send(&message).await.is_err() {
            return;
        }
    }
}
