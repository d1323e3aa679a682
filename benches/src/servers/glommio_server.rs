//! glommio: one executor per core thread, its own TCP streams, the shared responder.

use std::os::fd::IntoRawFd as _;
use std::os::unix::io::FromRawFd as _;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use super::{App, ServerConfig, StaticFile, respond};

/// Serves `config` on glommio, one executor per listener; never returns normally.
pub fn serve(config: ServerConfig) -> Result<(), String> {
    let file = config.static_file()?;
    let app = config.app;
    super::thread_per_listener(config.listeners, move |listener| {
        let file = file.clone();
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("glommio")
            .make()
            .map_err(|e| format!("glommio executor: {e}"))?;
        executor.run(async move {
            // SAFETY: the raw socket is taken out of the std listener, so this executor is
            // its only owner.
            let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
            loop {
                let Ok(stream) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let file = file.clone();
                glommio::spawn_local(async move {
                    match app {
                        App::Tfb => http(stream, file).await,
                        App::Echo => echo(stream).await,
                        // Refused before serving (`servers::serve`).
                        App::Ws => {}
                    }
                })
                .detach();
            }
        })
    })
}

async fn http(mut stream: TcpStream, file: Option<std::sync::Arc<StaticFile>>) {
    let mut input: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        input.extend_from_slice(&chunk[..n]);
        let Ok(used) = respond(&input, &mut out, file.as_deref()) else {
            return;
        };
        input.drain(..used);
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
