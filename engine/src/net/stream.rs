//! What every connected byte stream (TCP, Unix) can do, written once.

use std::cell::{Cell, RefCell};
use std::net::Shutdown as How;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::buf::{IoBuf, IoBufMut, Slice};
use crate::driver::lifecycle::Completion;
use crate::driver::{Op, OpCode, SharedFd};
use crate::error::{Error, ErrorKind, Result};
use crate::fs::File;
use crate::net::PooledReader;
use crate::op::{Recv, Send, SendVectored};
use crate::runtime::context;
use crate::time::{self, Sleep};

/// A new non-blocking, close-on-exec socket.
pub(crate) fn new_socket(
    domain: socket2::Domain,
    ty: socket2::Type,
    protocol: Option<socket2::Protocol>,
) -> Result<socket2::Socket> {
    let socket =
        socket2::Socket::new(domain, ty, protocol).map_err(|e| Error::from_io(e, "socket"))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::from_io(e, "fcntl(O_NONBLOCK)"))?;
    crate::sys::sock::prepare(&socket)
        .map_err(|e| Error::from_io(e, "setsockopt(SO_NOSIGPIPE)"))?;
    Ok(socket)
}

/// Opens a stream socket and connects it to `addr`, within `timeout` if given.
pub(crate) async fn connect_socket(
    domain: socket2::Domain,
    protocol: Option<socket2::Protocol>,
    addr: socket2::SockAddr,
    timeout: Option<Duration>,
) -> Result<SharedFd> {
    let socket = new_socket(domain, socket2::Type::STREAM, protocol)?;
    let fd = SharedFd::socket(socket);
    let op = crate::op::Connect {
        fd: fd.clone(),
        addr: Box::new(addr),
        started: false,
    };
    Op::submit_with_timeout(op, timeout).await.result?;
    context::count(|n| n.connected += 1);
    Ok(fd)
}

/// The descriptor and per-direction deadlines of a connected stream.
#[derive(Debug)]
pub(crate) struct StreamIo {
    pub(crate) fd: SharedFd,
    pub(crate) read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
    /// One timer for every write's deadline, kept armed between writes: a write that
    /// completes at once (most do) only notes its start, and a timer that fires for an
    /// earlier write is moved to the current one's deadline. A timer per write would cost a
    /// heap insertion and a stale entry to pop for each.
    write_timer: RefCell<Option<Sleep>>,
}

impl StreamIo {
    pub(crate) fn new(fd: SharedFd) -> StreamIo {
        StreamIo {
            fd,
            read_timeout: Cell::new(None),
            write_timeout: Cell::new(None),
            write_timer: RefCell::new(None),
        }
    }

    /// Reads into the spare capacity of `buf` (`len..capacity`) and extends its length.
    /// `Ok(0)` means the peer closed its side (or `buf` had no spare room).
    pub(crate) async fn read<B: IoBufMut>(&self, buf: B) -> (Result<usize>, B) {
        let op = Recv {
            fd: self.fd.clone(),
            buf,
        };
        let done = Op::submit_with_timeout(op, self.read_timeout.get()).await;
        let mut buf = done.op.buf;
        let result = done.result.map(|n| {
            let n = n as usize;
            let init = buf.bytes_init() + n;
            // SAFETY: the kernel wrote `n` bytes right after the initialised part.
            unsafe { buf.set_init(init) };
            context::count(|c| c.bytes_in += n as u64);
            n
        });
        (result, buf)
    }

    /// A receiver that reads into the core's buffer pool: the buffer is picked when data
    /// arrives (multishot receive on io_uring), so an idle connection holds none. Drop the
    /// returned buffers when done with them; they go back to the pool.
    pub(crate) fn pooled(&self) -> PooledReader {
        PooledReader::new(self.fd.clone())
    }

    /// Writes some of `buf`; returns how many bytes were taken.
    pub(crate) fn write<B: IoBuf>(&self, buf: B) -> Write<'_, B> {
        let op = Send {
            fd: self.fd.clone(),
            buf,
        };
        Write(self.with_write_deadline(Op::submit(op)))
    }

    /// Writes all of `buf`.
    pub(crate) async fn write_all<B: IoBuf>(&self, buf: B) -> (Result<()>, B) {
        let total = buf.bytes_init();
        let mut slice = Slice::new(buf, 0, total);
        let mut written = 0;
        while written < total {
            let (result, back) = self.write(slice).await;
            let buf = back.into_inner();
            match result {
                Ok(0) => return (Err(Error::new(ErrorKind::WriteZero, "send")), buf),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
            slice = Slice::new(buf, written, total);
        }
        (Ok(()), slice.into_inner())
    }

    /// Writes several buffers with one sendmsg; returns how many bytes were taken in all.
    pub(crate) async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> (Result<usize>, Vec<B>) {
        let op = SendVectored::new(self.fd.clone(), bufs);
        let done = self.with_write_deadline(Op::submit(op)).await;
        if let Ok(n) = done.result {
            context::count(|c| c.bytes_out += u64::from(n));
        }
        (done.result.map(|n| n as usize), done.op.bufs)
    }

    /// Reads until `buf` is full (`len == capacity`), or fails with `UnexpectedEof`.
    pub(crate) async fn read_exact<B: IoBufMut>(&self, mut buf: B) -> (Result<()>, B) {
        while buf.bytes_init() < buf.bytes_total() {
            let (result, back) = self.read(buf).await;
            buf = back;
            match result {
                Ok(0) => return (Err(Error::new(ErrorKind::UnexpectedEof, "recv")), buf),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Shuts down the read side, the write side (the peer reads end-of-stream), or both.
    ///
    /// A direct shutdown(2), on every driver: on a stream socket it never blocks, while
    /// io_uring's SHUTDOWN op always goes to a kernel worker thread (a thread switch per
    /// close). Writes this stream's callers awaited are in the socket before the FIN.
    pub(crate) async fn shutdown(&self, how: How) -> Result<()> {
        let how_raw = crate::sys::sock::shutdown_how(how);
        coring_compat::sys::shutdown(self.fd.raw(), how_raw)
            .map_err(|e| crate::Error::from_io(e, "shutdown"))
    }

    /// Runs a write op under the write timeout, if one is set: past it, the op is cancelled
    /// and completes with `TimedOut` (unless it finished first). The timer wakes the task that
    /// last polled it, so one task writes to a stream at a time (as ordered writes need anyway).
    fn with_write_deadline<T: OpCode>(&self, op: Op<T>) -> WriteDeadline<'_, T> {
        WriteDeadline {
            due: self.write_timeout.get().map(|limit| time::now() + limit),
            io: self,
            op,
            waited: false,
        }
    }

    /// Deadline for each read; a read that takes longer fails with `TimedOut`.
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.read_timeout.set(timeout);
    }

    /// Deadline for each write. The timer armed for earlier writes goes.
    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.write_timeout.set(timeout);
        drop(self.write_timer.take());
    }
}

/// A write op under the stream's write deadline, if one is set: the stream's one write timer
/// (kept armed between writes) follows this write's deadline while it waits, and cancels the op
/// when it passes. A named future, not an `async fn`, so that the op is held once (an async
/// fn keeps its argument and its moved copy apart, and every idle connection pays for both).
pub(crate) struct WriteDeadline<'a, T: OpCode> {
    io: &'a StreamIo,
    op: Op<T>,
    due: Option<std::time::Instant>,
    /// The write timer holds this task's waker.
    waited: bool,
}

impl<T: OpCode> Future for WriteDeadline<'_, T> {
    type Output = Completion<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Completion<T>> {
        let this = self.get_mut();
        if let Poll::Ready(done) = Pin::new(&mut this.op).poll(cx) {
            this.release_timer();
            return Poll::Ready(done);
        }
        let Some(due) = this.due else {
            return Poll::Pending;
        };
        this.waited = true;
        let mut timer = this.io.write_timer.borrow_mut();
        let timer = timer.get_or_insert_with(|| time::sleep_until(due));
        if timer.deadline() > due {
            // Armed under a longer timeout than the one now set.
            timer.reset(due);
        }
        while Pin::new(&mut *timer).poll(cx).is_ready() {
            if time::now() >= due {
                this.op.cancel_for_deadline(cx);
                break;
            }
            // It fired for an earlier write: follow this one.
            timer.reset(due);
        }
        Poll::Pending
    }
}

impl<T: OpCode> WriteDeadline<'_, T> {
    /// The write is over (done or given up): the timer stays armed for the next one, without
    /// this task's waker, so it keeps no finished task alive.
    fn release_timer(&mut self) {
        if std::mem::take(&mut self.waited)
            && let Some(timer) = self.io.write_timer.borrow_mut().as_mut()
        {
            timer.release_waker();
        }
    }
}

impl<T: OpCode> Drop for WriteDeadline<'_, T> {
    fn drop(&mut self) {
        self.release_timer();
    }
}

/// The future of [`StreamIo::write`]: how many bytes were taken, and the buffer back.
pub(crate) struct Write<'a, B: IoBuf>(WriteDeadline<'a, Send<B>>);

impl<B: IoBuf> Future for Write<'_, B> {
    type Output = (Result<usize>, B);

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Poll::Ready(done) = Pin::new(&mut this.0).poll(cx) else {
            return Poll::Pending;
        };
        if let Ok(n) = done.result {
            context::count(|c| c.bytes_out += u64::from(n));
        }
        Poll::Ready((done.result.map(|n| n as usize), done.op.buf))
    }
}

impl StreamIo {
    /// Sends `len` bytes of `file` from `offset` (fewer if the file ends first) without copying
    /// them through user space where the driver can (see `driver::send_file`). Returns the
    /// bytes sent.
    pub(crate) async fn send_file(&self, file: &File, offset: u64, len: u64) -> Result<u64> {
        let sent = crate::driver::send_file(self, &file.fd, offset, len).await?;
        context::count(|c| c.bytes_out += sent);
        Ok(sent)
    }
}

impl crate::driver::WriteTarget for StreamIo {
    fn socket(&self) -> &SharedFd {
        &self.fd
    }

    fn with_deadline<T: OpCode>(&self, op: Op<T>) -> impl Future<Output = Completion<T>> + '_ {
        self.with_write_deadline(op)
    }
}

/// The stream methods of a type with an `io: StreamIo` field, with their docs.
macro_rules! stream_io_methods {
    () => {
        /// Reads into the spare capacity of `buf` (`len..capacity`) and extends its length.
        /// `Ok(0)` means the peer closed its side (or `buf` had no spare room).
        pub fn read<B: crate::buf::IoBufMut>(
            &self,
            buf: B,
        ) -> impl Future<Output = (crate::Result<usize>, B)> + '_ {
            self.io.read(buf)
        }

        /// Reads until `buf` is full (`len == capacity`), or fails with `UnexpectedEof`.
        pub fn read_exact<B: crate::buf::IoBufMut>(
            &self,
            buf: B,
        ) -> impl Future<Output = (crate::Result<()>, B)> + '_ {
            self.io.read_exact(buf)
        }

        /// A receiver that reads into the core's buffer pool: the buffer is picked when data
        /// arrives (multishot receive on io_uring), so an idle connection holds none. Drop the
        /// returned buffers when done with them; they go back to the pool.
        pub fn pooled(&self) -> crate::net::PooledReader {
            self.io.pooled()
        }

        /// Writes some of `buf`; returns how many bytes were taken.
        pub fn write<B: crate::buf::IoBuf>(
            &self,
            buf: B,
        ) -> impl Future<Output = (crate::Result<usize>, B)> + '_ {
            self.io.write(buf)
        }

        /// Writes all of `buf`.
        pub fn write_all<B: crate::buf::IoBuf>(
            &self,
            buf: B,
        ) -> impl Future<Output = (crate::Result<()>, B)> + '_ {
            self.io.write_all(buf)
        }

        /// Writes several buffers with one sendmsg; returns how many bytes were taken in all.
        pub fn writev<B: crate::buf::IoBuf>(
            &self,
            bufs: Vec<B>,
        ) -> impl Future<Output = (crate::Result<usize>, Vec<B>)> + '_ {
            self.io.writev(bufs)
        }

        /// Shuts down the read side, the write side (the peer reads end-of-stream), or both.
        pub fn shutdown(
            &self,
            how: std::net::Shutdown,
        ) -> impl Future<Output = crate::Result<()>> + '_ {
            self.io.shutdown(how)
        }

        /// Sends `len` bytes of `file` from `offset` without copying them through user space
        /// (splice on io_uring, sendfile on compat); fewer if the file ends first. Returns the
        /// bytes sent.
        pub async fn send_file(
            &self,
            file: &crate::fs::File,
            offset: u64,
            len: u64,
        ) -> crate::Result<u64> {
            self.io.send_file(file, offset, len).await
        }

        /// Deadline for each read; a read that takes longer fails with `TimedOut`.
        pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) {
            self.io.set_read_timeout(timeout)
        }

        /// Deadline for each write. Between writes the stream keeps one timer armed for the
        /// next (so that a write does not cost a timer of its own); setting the timeout, to
        /// anything, lets that timer go.
        pub fn set_write_timeout(&self, timeout: Option<std::time::Duration>) {
            self.io.set_write_timeout(timeout)
        }
    };
}

pub(crate) use stream_io_methods;
