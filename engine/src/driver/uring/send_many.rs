//! `send_many` on io_uring: one SENDMSG SQE per datagram, all queued before any is awaited,
//! so the batch reaches the kernel in one submission.

use socket2::SockAddr;

use crate::buf::IoBuf;
use crate::driver::{Op, SharedFd};
use crate::error::Result;
use crate::op::SendTo;

pub(crate) async fn send_many<B: IoBuf>(
    fd: &SharedFd,
    datagrams: Vec<(B, SockAddr)>,
) -> Vec<(Result<usize>, B)> {
    let ops: Vec<Op<SendTo<B>>> = datagrams
        .into_iter()
        .map(|(buf, addr)| Op::submit(SendTo::new(fd.clone(), buf, Some(addr), None)))
        .collect();
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let done = op.await;
        out.push((done.result.map(|n| n as usize), done.op.buf));
    }
    out
}
