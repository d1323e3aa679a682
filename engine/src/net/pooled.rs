//! Receiving into the core's buffer pool.

use std::rc::Rc;
use std::task::{Context, Poll, ready};

use crate::buf::PooledBuf;
use crate::buf::pool::{BufferClaim, Pool};
use crate::driver::SharedFd;
use crate::driver::{CqeResult, MultiOp, OpCode};
use crate::error::{Error, ErrorKind, Result};
use crate::op::RecvMulti;
use crate::runtime::context;

/// Receives a connection's bytes into pooled buffers; see `TcpStream::pooled`.
///
/// One multishot receive serves it on io_uring. If the pool runs dry (ENOBUFS) it waits until
/// a buffer comes back and re-arms, and it re-arms when the kernel ends the multishot; neither
/// is an error and neither spins. Dropping it cancels the receive; buffers the kernel filled
/// for it meanwhile go back to the pool.
pub struct PooledReader {
    pub(crate) fd: SharedFd,
    pub(crate) op: Option<MultiOp<RecvMulti>>,
    pub(crate) eof: bool,
    claim: BufferClaim,
}

impl PooledReader {
    pub(crate) fn new(fd: SharedFd) -> PooledReader {
        PooledReader {
            fd,
            op: None,
            eof: false,
            claim: BufferClaim::default(),
        }
    }

    /// The next received bytes; `None` once the peer has closed its side.
    pub async fn next(&mut self) -> Result<Option<PooledBuf>> {
        std::future::poll_fn(|cx| self.poll_next_buf(cx)).await
    }

    /// Polls for the next received bytes.
    pub fn poll_next_buf(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<PooledBuf>>> {
        if self.eof {
            return Poll::Ready(Ok(None));
        }
        let pool = context::with_current(|ctx| Rc::clone(&ctx.pool));
        let make = || RecvMulti {
            fd: self.fd.clone(),
            pool: Rc::clone(&pool),
            filled: None,
        };
        let cqe = ready!(poll_pooled(&mut self.op, &mut self.claim, &pool, make, cx));
        let buffer = crate::driver::buffer_id(cqe.flags);
        if cqe.res <= 0 {
            if let Some(bid) = buffer {
                pool.give_back(bid);
            }
            if cqe.res == 0 {
                self.eof = true;
                return Poll::Ready(Ok(None));
            }
            return Poll::Ready(Err(Error::from_os(-cqe.res, "recv")));
        }
        let Some(bid) = buffer else {
            return Poll::Ready(Err(Error::new(ErrorKind::Other, "recv (no buffer)")));
        };
        context::count(|c| c.bytes_in += cqe.res as u64);
        Poll::Ready(Ok(Some(pool.hand_out(bid, cqe.res as usize))))
    }
}

/// Polls a pooled multishot receive (stream or datagram) for its next completion other than
/// ENOBUFS: arms it with `make` once `claim` allows, re-arms it when the kernel ends it, and
/// waits out a dry pool (re-arming with a claimed buffer, or queued for the next returned one).
pub(crate) fn poll_pooled<T: OpCode>(
    op: &mut Option<MultiOp<T>>,
    claim: &mut BufferClaim,
    pool: &Pool,
    make: impl Fn() -> T,
    cx: &mut Context<'_>,
) -> Poll<CqeResult> {
    loop {
        ready!(claim.poll_arm(pool, cx));
        let cqe = ready!(MultiOp::poll_rearming(op, &make, cx));
        if cqe.res == crate::driver::PAUSED {
            // The driver stopped it while this task was behind; it is caught up now.
            continue;
        }
        if cqe.res != -crate::driver::NO_BUFFERS {
            claim.settled();
            return Poll::Ready(cqe);
        }
        *op = None;
        ready!(claim.on_enobufs(pool, cx));
    }
}

impl Drop for PooledReader {
    fn drop(&mut self) {
        let claim = &mut self.claim;
        context::try_with_current(|ctx| claim.release(&ctx.pool));
    }
}

impl std::fmt::Debug for PooledReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledReader")
            .field("armed", &self.op.is_some())
            .field("eof", &self.eof)
            .finish()
    }
}
