//! hyper 1.x on coring cores (feature `hyper`): a hyper HTTP/1 server connection, and so an
//! axum `Router` or any tower service, served on engine streams.
//!
//! - [`HyperIo`] gives any [`FrameIo`] stream (TCP, Unix, TLS) hyper's `rt::Read` and
//!   `rt::Write`. Reads and writes are the engine's owned-buffer operations: one read in flight
//!   into the connection's buffer, hyper's writes gathered and sent one batch at a time.
//! - [`Timer`] is hyper's `rt::Timer` on the core's timer wheel (hyper needs it for its header
//!   read timeout and keep-alive).
//! - [`TowerService`] turns a tower service (an axum `Router`) into a hyper service.
//! - [`serve`] accepts on a listener and serves every connection on this core; services and
//!   their futures need not be `Send`.
//!
//! ```no_run
//! # async fn run(listener: coring::net::TcpListener) {
//! use coring_protocols::hyper_rt;
//! use hyper::{Request, Response, body::Incoming};
//!
//! let hello = hyper::service::service_fn(|_req: Request<Incoming>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(String::from("hello\n")))
//! });
//! hyper_rt::serve(listener, hello).await;
//! # }
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use coring::net::TcpListener;
use hyper::body::{Body, Incoming};
use hyper::rt::ReadBufCursor;
use hyper::server::conn::http1;
use hyper::{Request, Response};

use crate::framed::{FrameIo, FramedError, READ_BYTES};

/// Bytes hyper may queue before its writes wait for the one in flight.
const WRITE_QUEUE: usize = 256 * 1024;

type Reading = Pin<Box<dyn Future<Output = (Result<usize, FramedError>, BytesMut)>>>;
type Writing = Pin<Box<dyn Future<Output = (Result<(), FramedError>, Vec<u8>)>>>;
type Closing = Pin<Box<dyn Future<Output = Result<(), FramedError>>>>;

/// An engine stream as hyper's I/O.
pub struct HyperIo<S> {
    io: Rc<S>,
    /// Bytes received and not yet handed to hyper (taken from the front).
    received: BytesMut,
    reading: Option<Reading>,
    eof: bool,
    /// Bytes hyper wrote that are not yet in flight.
    queued: Vec<u8>,
    /// The buffer of the last write, back for reuse.
    spare: Vec<u8>,
    writing: Option<Writing>,
    closing: Option<Closing>,
}

impl<S> std::fmt::Debug for HyperIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperIo")
            .field("received", &self.received.len())
            .field("queued", &self.queued.len())
            .field("writing", &self.writing.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: FrameIo + 'static> HyperIo<S> {
    /// Wraps `io`.
    pub fn new(io: S) -> HyperIo<S> {
        HyperIo {
            io: Rc::new(io),
            received: BytesMut::new(),
            reading: None,
            eof: false,
            queued: Vec::new(),
            spare: Vec::new(),
            writing: None,
            closing: None,
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Drives the write in flight; starts the next with what is queued once it is done.
    /// Ready once nothing is in flight.
    fn poll_writes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(writing) = self.writing.as_mut() {
                let (r, mut back) = ready!(writing.as_mut().poll(cx));
                self.writing = None;
                back.clear();
                self.spare = back;
                r.map_err(io_error)?;
            }
            if self.queued.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let batch = std::mem::replace(&mut self.queued, std::mem::take(&mut self.spare));
            let io = self.io.clone();
            self.writing = Some(Box::pin(async move { io.write_all(batch).await }));
        }
    }
}

fn io_error(e: FramedError) -> io::Error {
    match e {
        FramedError::Io(e) => e.into(),
        #[cfg(feature = "tls")]
        FramedError::Tls(crate::tls::TlsError::Io(e)) => e.into(),
        #[cfg(feature = "tls")]
        FramedError::Tls(crate::tls::TlsError::Truncated) => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            crate::tls::TlsError::Truncated,
        ),
        other => io::Error::other(other),
    }
}

impl<S: FrameIo + 'static> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut cursor: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.received.is_empty() && !this.eof {
            let reading = this.reading.get_or_insert_with(|| {
                let mut buf = std::mem::take(&mut this.received);
                buf.reserve(READ_BYTES);
                let io = this.io.clone();
                Box::pin(async move { io.read_into(buf).await })
            });
            let (r, buf) = ready!(reading.as_mut().poll(cx));
            this.reading = None;
            this.received = buf;
            if r.map_err(io_error)? == 0 {
                this.eof = true;
            }
        }
        let n = this.received.len().min(cursor.remaining());
        cursor.put_slice(&this.received[..n]);
        this.received.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: FrameIo + 'static> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.queued.len() >= WRITE_QUEUE {
            // Enough queued: wait until the write in flight takes it.
            ready!(this.poll_writes(cx))?;
        }
        this.queued.extend_from_slice(buf);
        // Start it now rather than at the flush (a no-op while one is in flight).
        if let Poll::Ready(Err(e)) = this.poll_writes(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_writes(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_writes(cx))?;
        let closing = this.closing.get_or_insert_with(|| {
            let io = this.io.clone();
            Box::pin(async move { io.shutdown_write().await })
        });
        match ready!(closing.as_mut().poll(cx)).map_err(io_error) {
            // The peer went first (hyper shuts down after reading its end): nothing to end.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}

thread_local! {
    /// The sleeps of hyper's timer on this thread, by key. hyper asks for `Send` sleeps; ours
    /// are the core's timer entries, which never leave their thread, so what hyper holds is
    /// only a key into this table.
    static SLEEPS: RefCell<Sleeps> = RefCell::new((0, HashMap::new()));
}

/// The last key given out, and the sleeps by key.
type Sleeps = (u64, HashMap<u64, Pin<Box<coring::time::Sleep>>>);

/// hyper's timer on the core's timer wheel. Its sleeps are polled and dropped on the core
/// that made them (a hyper connection served by [`serve`] never moves); one polled on another
/// thread panics, and one dropped on another thread leaves its entry until that thread ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timer;

struct CoreSleep {
    key: u64,
    thread: ThreadId,
}

impl CoreSleep {
    fn new(deadline: Instant) -> CoreSleep {
        let key = SLEEPS.with(|s| {
            let mut s = s.borrow_mut();
            s.0 += 1;
            let key = s.0;
            s.1.insert(key, Box::pin(coring::time::sleep_until(deadline)));
            key
        });
        CoreSleep {
            key,
            thread: std::thread::current().id(),
        }
    }
}

impl Future for CoreSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        assert_eq!(
            std::thread::current().id(),
            self.thread,
            "a coring hyper timer polled off its core"
        );
        SLEEPS.with(|s| match s.borrow_mut().1.get_mut(&self.key) {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        })
    }
}

impl Drop for CoreSleep {
    fn drop(&mut self) {
        if std::thread::current().id() == self.thread {
            // `try_with`: a sleep dropped while the thread's locals are torn down has no entry
            // left to remove.
            let _ = SLEEPS.try_with(|s| s.borrow_mut().1.remove(&self.key));
        }
    }
}

impl hyper::rt::Sleep for CoreSleep {}

impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoreSleep::new(Instant::now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoreSleep::new(deadline))
    }
}

/// Runs the futures hyper hands it as tasks on this core (`!Send` ones too).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, future: F) {
        drop(coring::spawn_local(async move {
            future.await;
        }));
    }
}

/// A tower service (an axum `Router`, a `ServiceBuilder` stack) as a hyper service: each
/// request goes to a clone of it, once it says it is ready.
#[derive(Debug, Clone)]
pub struct TowerService<T>(pub T);

impl<T, B> hyper::service::Service<Request<Incoming>> for TowerService<T>
where
    T: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<B>;
    type Error = T::Error;
    type Future = Oneshot<T, Request<Incoming>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Oneshot::Waiting {
            service: self.0.clone(),
            req: Some(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// A tower service called once: waits until it is ready, then for its answer.
    #[project = OneshotProj]
    #[allow(missing_docs)]
    #[derive(Debug)]
    pub enum Oneshot<T: tower_service::Service<R>, R> {
        Waiting { service: T, req: Option<R> },
        Called { #[pin] future: T::Future },
    }
}

impl<T: tower_service::Service<R>, R> Future for Oneshot<T, R> {
    type Output = Result<T::Response, T::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                OneshotProj::Waiting { service, req } => {
                    ready!(service.poll_ready(cx))?;
                    let Some(req) = req.take() else {
                        panic!("Oneshot polled after it called its service");
                    };
                    let future = service.call(req);
                    self.set(Oneshot::Called { future });
                }
                OneshotProj::Called { future } => return future.poll(cx),
            }
        }
    }
}

/// hyper's HTTP/1 server builder with the core's [`Timer`] (so its header read timeout, 30 s
/// by default, applies) and pipelined responses flushed together.
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.timer(Timer).pipeline_flush(true);
    builder
}

/// Serves one connection with `service` through [`http1_builder`]. Once the runtime shuts
/// down, hyper finishes the request in flight, answers it with `Connection: close` and closes.
pub async fn serve_connection<S, Svc, B>(io: S, service: Svc) -> Result<(), hyper::Error>
where
    S: FrameIo + 'static,
    Svc: hyper::service::HttpService<Incoming, ResBody = B>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_connection_with(&http1_builder(), io, service).await
}

/// [`serve_connection`] with a builder of one's own (give it the [`Timer`] for its timeouts).
pub async fn serve_connection_with<S, Svc, B>(
    builder: &http1::Builder,
    io: S,
    service: Svc,
) -> Result<(), hyper::Error>
where
    S: FrameIo + 'static,
    Svc: hyper::service::HttpService<Incoming, ResBody = B>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(HyperIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = std::pin::pin!(coring::runtime::shutdown_signal());
    let mut draining = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = conn.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        if !draining && shutdown.as_mut().poll(cx).is_ready() {
            draining = true;
            conn.as_mut().graceful_shutdown();
            return conn.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}

/// Accepts on `listener` until the runtime shuts down (or the listener fails), serving each
/// connection (`TCP_NODELAY` set) in a task of its own with a clone of `service`; connections
/// still open at the shutdown finish their request in flight and close.
pub async fn serve<Svc, B>(listener: TcpListener, service: Svc)
where
    Svc: hyper::service::HttpService<Incoming, ResBody = B> + Clone + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, http1_builder(), service).await;
}

/// [`serve`] with a builder of one's own.
pub async fn serve_with<Svc, B>(listener: TcpListener, builder: http1::Builder, service: Svc)
where
    Svc: hyper::service::HttpService<Incoming, ResBody = B> + Clone + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Rc::new(builder);
    while let Some(Ok((stream, _))) = coring::runtime::until_shutdown(listener.accept()).await {
        let _ = stream.set_nodelay(true);
        let (builder, service) = (builder.clone(), service.clone());
        drop(coring::spawn_local(async move {
            if let Err(e) = serve_connection_with(&builder, stream, service).await {
                tracing::debug!(error = %e, "hyper connection ended");
            }
        }));
    }
}
