//! monoio, on its io_uring driver or its legacy (epoll) driver: one runtime per core thread,
//! owned-buffer reads and writes, the shared responder.

use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use super::{App, ServerConfig, StaticFile, respond};

/// Which monoio driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// io_uring.
    Uring,
    /// epoll.
    Legacy,
}

/// Serves `config` on monoio with `driver`, one thread per listener; never returns normally.
pub fn serve(config: ServerConfig, driver: Driver) -> Result<(), String> {
    let file = config.static_file()?;
    let app = config.app;
    super::thread_per_listener(config.listeners, move |listener| {
        let file = file.clone();
        let run = async move {
            let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let file = file.clone();
                monoio::spawn(async move {
                    match app {
                        App::Tfb => http(stream, file).await,
                        App::Echo => echo(stream).await,
                        // Refused before serving (`servers::serve`).
                        App::Ws => {}
                    }
                });
            }
        };
        match driver {
            Driver::Uring => RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(1024)
                .build()
                .map_err(|e| format!("monoio io_uring runtime: {e}"))?
                .block_on(run),
            Driver::Legacy => RuntimeBuilder::<LegacyDriver>::new()
                .build()
                .map_err(|e| format!("monoio legacy runtime: {e}"))?
                .block_on(run),
        }
    })
}

async fn http(mut stream: TcpStream, file: Option<std::sync::Arc<StaticFile>>) {
    let mut input: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if input.len() == input.capacity() {
            input.reserve(16 * 1024);
        }
        let len = input.len();
        let (result, slice): (_, SliceMut<Vec<u8>>) = stream.read(input.slice_mut(len..)).await;
        input = slice.into_inner();
        match result {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Ok(used) = respond(&input, &mut out, file.as_deref()) else {
            return;
        };
        input.drain(..used);
        if !out.is_empty() {
            let (result, back) = stream.write_all(out).await;
            out = back;
            if result.is_err() {
                return;
            }
            out.clear();
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (result, back) = stream.read(buf).await;
        buf = back;
        match result {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (result, back) = stream.write_all(buf).await;
        buf = back;
        if result.is_err() {
            return;
        }
    }
}
