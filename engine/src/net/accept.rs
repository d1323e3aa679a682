//! Accepting connections, for every kind of listener.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use socket2::SockAddr;

use crate::driver::SharedFd;
use crate::driver::{MultiOp, Op};
use crate::error::{Error, ErrorKind, Result};
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

/// What an accept loop does when an accept fails: waits a moment when the process is out of
/// descriptors or memory (the connection waits in the backlog until some close; retrying at
/// once would spin), and logs at most once per period with how many failed since the last
/// line, instead of a warning per failure (hundreds a second while descriptors run out).
///
/// ```no_run
/// # async fn serve(listener: coring::net::TcpListener) {
/// let mut failures = coring::net::AcceptFailures::new();
/// let mut incoming = listener.incoming();
/// loop {
///     match incoming.next().await {
///         Ok(stream) => drop(stream), // serve it
///         Err(e) => failures.handle(&e).await,
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AcceptFailures {
    /// When the last line was logged, and the failures since.
    logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptFailures {
    /// How long an accept loop waits after running out of descriptors or memory.
    pub const BACKOFF: Duration = Duration::from_millis(10);
    /// At most one log line per this long.
    pub const LOG_EVERY: Duration = Duration::from_secs(1);

    /// No failures yet.
    pub fn new() -> Self {
        AcceptFailures {
            logged: None,
            unlogged: 0,
        }
    }

    /// Logs `error` if a line is due and waits if it calls for waiting.
    pub async fn handle(&mut self, error: &Error) {
        if let Some(failures) = self.note(crate::time::now()) {
            tracing::warn!(error = %error, failures, "accept failed");
        }
        if matches!(
            error.kind(),
            ErrorKind::TooManyOpenFiles | ErrorKind::OutOfMemory
        ) {
            crate::time::sleep(Self::BACKOFF).await;
        }
    }

    /// Counts a failure at `now`: `Some(n)` when a line is due, `n` the failures it reports
    /// (this one and those since the last line).
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        if self
            .logged
            .is_some_and(|at| now.saturating_duration_since(at) < Self::LOG_EVERY)
        {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

impl Default for AcceptFailures {
    fn default() -> Self {
        Self::new()
    }
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

impl<S> Incoming<S> {
    /// Stops accepting without losing a connection: ends the multishot accept and waits for
    /// its last completion, returning the connections the kernel accepted for it meanwhile
    /// (dropping an `Incoming` closes those instead). Use it where the listener's queue lives
    /// on in another process or core, as in a restart (`coring::restart`): whatever is still
    /// queued is the other listener's to accept.
    pub async fn close(mut self) -> Vec<S> {
        let mut accepted = Vec::new();
        let Some(mut op) = self.op.take() else {
            return accepted;
        };
        op.stop();
        while let Some(cqe) = std::future::poll_fn(|cx| op.poll_next(cx)).await {
            if let Ok(fd) = cqe.result("accept") {
                context::count(|n| n.accepted += 1);
                // SAFETY: a successful accept returns a new descriptor nobody owns.
                accepted.push((self.make)(unsafe { SharedFd::from_accepted(fd) }));
            }
        }
        accepted
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

#[cfg(test)]
mod tests {
    use super::AcceptFailures;
    use std::time::{Duration, Instant};

    #[test]
    fn failures_are_logged_once_per_period_with_their_count() {
        let mut f = AcceptFailures::new();
        let t0 = Instant::now();
        assert_eq!(f.note(t0), Some(1), "the first failure is logged at once");
        // 200 a second, as an fd-exhausted listener produces them: one line per second.
        let mut lines = Vec::new();
        for i in 1..=400u64 {
            if let Some(n) = f.note(t0 + Duration::from_millis(5 * i)) {
                lines.push(n);
            }
        }
        assert_eq!(lines, vec![200, 200]);
        assert_eq!(f.note(t0 + Duration::from_secs(10)), Some(1));
    }
}
