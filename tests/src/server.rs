//! A coring HTTP server on its own one-core runtime, and a raw exchange with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use coring_protocols::serve::{Config, Handler, Server};

/// A coring HTTP server on a thread of its own; shut down and joined when dropped.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: coring::ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl TestServer {
    /// Asks the server to shut down (graceful: in-flight requests are answered) without
    /// waiting for it; dropping it waits.
    pub fn begin_shutdown(&self) {
        self.shutdown.shutdown();
    }
}

/// Serves the handler `make()` builds (on the server's core) with `config`.
pub fn serve<H, F>(config: Config, make: F) -> TestServer
where
    H: Handler,
    F: FnOnce() -> H + Send + 'static,
{
    let rt = coring::Runtime::builder()
        .shutdown_grace(Duration::from_secs(1))
        .build()
        .unwrap();
    let shutdown = rt.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    let make = std::sync::Mutex::new(Some(make));
    let thread = std::thread::spawn(move || {
        rt.run(|_| {
            let listener = coring::net::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr()).unwrap();
            let handler = (make.lock().unwrap().take().unwrap())();
            let config = config.clone();
            async move { Server::new(handler).config(config).serve(listener).await }
        })
        .unwrap();
    });
    let addr = rx.recv().unwrap();
    TestServer {
        addr,
        shutdown,
        thread: Some(thread),
    }
}

/// Sends `raw`, reads until the server closes (or `limit`), returns what came back and
/// whether the server closed.
pub fn exchange(addr: SocketAddr, raw: &[u8], limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A signal landing on this thread is not the server's doing.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// A UDP service on its own one-core runtime and thread: `serve` gets the socket (bound to a
/// free loopback port) on the core and returns what runs there. The address it listens on,
/// and the handle that shuts it down (gracefully: the future sees `until_shutdown` end).
pub fn udp_service<F, Fut>(serve: F) -> (SocketAddr, coring::ShutdownHandle)
where
    F: FnOnce(coring::net::UdpSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let rt = coring::Runtime::builder()
        .shutdown_grace(Duration::from_secs(1))
        .build()
        .unwrap();
    let shutdown = rt.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    let serve = std::sync::Mutex::new(Some(serve));
    std::thread::spawn(move || {
        rt.run(|_| {
            let socket = coring::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            tx.send(socket.local_addr().unwrap()).unwrap();
            (serve.lock().unwrap().take().unwrap())(socket)
        })
        .unwrap();
    });
    (rx.recv().unwrap(), shutdown)
}
