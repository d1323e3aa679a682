//! Accepting connections, for every kind of listener.

use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockAddr;

use crate::driver::SharedFd;
use crate::driver::{MultiOp, Op};
use crate::error::Result;
use crate::op::{Accept, AcceptMulti};
use crate::runtime::context;

/// Accepts one connection on `listener`: its descriptor and the peer's address.
pub(crate) async fn accept_one(listener: &SharedFd) -> Result<(SharedFd, SockAddr)> {
    let done = Op::submit(Accept::new(listener.clone())).await;
    let fd = done.result?;
    context::count(|n| n.accepted += 1);
    // SAFETY: a successful accept returns a new descriptor that nothing else owns.
    let fd = unsafe { SharedFd::from_accepted(fd) };
    Ok((fd, done.op.peer_sockaddr()))
}

/// Connections from one multishot accept (5.19): one SQE serves many connections, and it is
/// re-armed if the kernel ends it. See `TcpListener::incoming`, `UnixListener::incoming`.
///
/// Dropping it cancels the accept; connections the kernel accepted for it afterwards are
/// closed, not leaked.
pub struct Incoming<S> {
    fd: SharedFd,
    op: Option<MultiOp<AcceptMulti>>,
    make: fn(SharedFd) -> S,
}

impl<S> Incoming<S> {
    pub(crate) fn new(fd: SharedFd, make: fn(SharedFd) -> S) -> Self {
        Incoming { fd, op: None, make }
    }

    /// The next connection. Errors (EMFILE, say) are per connection: the stream goes on.
    pub async fn next(&mut self) -> Result<S> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next connection.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<S>> {
        let fd = &self.fd;
        let make = || AcceptMulti { fd: fd.clone() };
        MultiOp::poll_rearming(&mut self.op, make, cx).map(|cqe| {
            cqe.result("accept").map(|fd| {
                context::count(|n| n.accepted += 1);
                // SAFETY: a successful accept returns a new descriptor nobody owns.
                (self.make)(unsafe { SharedFd::from_accepted(fd) })
            })
        })
    }
}

impl<S> futures_core::Stream for Incoming<S> {
    type Item = Result<S>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_accept(cx).map(Some)
    }
}

impl<S> std::fmt::Debug for Incoming<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("armed", &self.op.is_some())
            .finish()
    }
}
