//! What every datagram socket (UDP, Unix datagram) can do, written once over `SockAddr`.

use std::rc::Rc;
use std::task::{Context, Poll};

use socket2::SockAddr;

use crate::buf::pool::BufferClaim;
use crate::buf::{IoBuf, IoBufMut, PooledBuf};
use crate::driver::{MultiOp, Op, SharedFd};
use crate::error::{Error, ErrorKind, Result};
use crate::net::pooled::poll_pooled;
use crate::op::{RecvFrom, RecvMsgMulti, SendTo, parse_datagram};
use crate::runtime::context;

/// A received datagram: its bytes (in a pooled buffer, or your own), where it came from, and
/// whether it was cut short because the buffer was smaller than the datagram.
#[derive(Debug)]
pub struct Datagram<A> {
    /// The payload (truncated to the buffer if `truncated`).
    pub data: PooledBuf,
    /// The sender.
    pub source: A,
    /// The datagram was longer than the buffer; its tail was dropped by the kernel.
    pub truncated: bool,
}

/// Size and origin of a datagram received into a caller's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecvMeta<A> {
    /// Bytes placed in the buffer.
    pub len: usize,
    /// The sender.
    pub source: A,
    /// The datagram was longer than the buffer's spare room.
    pub truncated: bool,
}

#[derive(Debug)]
pub(crate) struct DatagramIo {
    pub(crate) fd: SharedFd,
}

impl DatagramIo {
    pub(crate) async fn send_to<B: IoBuf>(
        &self,
        buf: B,
        addr: Option<SockAddr>,
        segment: Option<u16>,
    ) -> (Result<usize>, B) {
        let done = Op::submit(SendTo::new(self.fd.clone(), buf, addr, segment)).await;
        if let Ok(n) = done.result {
            context::count(|c| c.bytes_out += u64::from(n));
        }
        (done.result.map(|n| n as usize), done.op.buf)
    }

    /// Sends each datagram to its address, as few calls as the driver allows (one submission
    /// on io_uring, `sendmmsg` batches on compat); results come back in order.
    pub(crate) async fn send_many<B: IoBuf>(
        &self,
        datagrams: Vec<(B, SockAddr)>,
    ) -> Vec<(Result<usize>, B)> {
        let results = crate::driver::send_many(&self.fd, datagrams).await;
        let sent: usize = results.iter().filter_map(|(r, _)| r.as_ref().ok()).sum();
        context::count(|c| c.bytes_out += sent as u64);
        results
    }

    pub(crate) async fn recv_from<B: IoBufMut>(&self, buf: B) -> (Result<RecvMeta<SockAddr>>, B) {
        let done = Op::submit(RecvFrom::new(self.fd.clone(), buf)).await;
        let op = done.op;
        let source = op.source();
        let truncated = op.truncated();
        let mut buf = op.buf;
        let result = done.result.map(|n| {
            let n = n as usize;
            let init = buf.bytes_init() + n;
            // SAFETY: the kernel wrote `n` bytes right after the initialised part.
            unsafe { buf.set_init(init) };
            context::count(|c| c.bytes_in += n as u64);
            RecvMeta {
                len: n,
                source,
                truncated,
            }
        });
        (result, buf)
    }

    pub(crate) fn pooled(&self) -> PooledDatagrams {
        PooledDatagrams {
            fd: self.fd.clone(),
            op: None,
            claim: BufferClaim::default(),
        }
    }
}

/// Receives datagrams into the core's buffer pool with one multishot recvmsg (io_uring) or
/// recvmsg on readiness (compat). Each [`Datagram`] holds one pooled buffer until dropped.
pub struct PooledDatagrams {
    fd: SharedFd,
    op: Option<MultiOp<RecvMsgMulti>>,
    claim: BufferClaim,
}

impl PooledDatagrams {
    /// The next datagram, with its source as a raw socket address.
    pub(crate) async fn next_raw(&mut self) -> Result<Datagram<Option<SockAddr>>> {
        std::future::poll_fn(|cx| self.poll_next_raw(cx)).await
    }

    fn poll_next_raw(&mut self, cx: &mut Context<'_>) -> Poll<Result<Datagram<Option<SockAddr>>>> {
        let pool = context::with_current(|ctx| Rc::clone(&ctx.pool));
        let make = || RecvMsgMulti::new(self.fd.clone(), Rc::clone(&pool));
        let cqe = std::task::ready!(poll_pooled(&mut self.op, &mut self.claim, &pool, make, cx));
        let buffer = crate::driver::buffer_id(cqe.flags);
        if cqe.res < 0 {
            if let Some(bid) = buffer {
                pool.give_back(bid);
            }
            return Poll::Ready(Err(Error::from_os(-cqe.res, "recvmsg")));
        }
        let Some(bid) = buffer else {
            return Poll::Ready(Err(Error::new(ErrorKind::Other, "recvmsg (no buffer)")));
        };
        let mut data = pool.hand_out(bid, cqe.res as usize);
        let Some(layout) = parse_datagram(&data, cqe.res as usize) else {
            return Poll::Ready(Err(Error::new(ErrorKind::Other, "recvmsg (short buffer)")));
        };
        data.window(layout.payload.clone());
        context::count(|c| c.bytes_in += layout.payload.len() as u64);
        Poll::Ready(Ok(Datagram {
            data,
            source: layout.source,
            truncated: layout.truncated,
        }))
    }
}

impl Drop for PooledDatagrams {
    fn drop(&mut self) {
        let claim = &mut self.claim;
        context::try_with_current(|ctx| claim.release(&ctx.pool));
    }
}

impl std::fmt::Debug for PooledDatagrams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledDatagrams")
            .field("armed", &self.op.is_some())
            .finish()
    }
}
