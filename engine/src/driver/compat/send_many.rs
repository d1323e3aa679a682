//! `send_many` on the readiness driver: the datagrams go with as few calls as the platform
//! allows (`sendmmsg` on Linux, one sendmsg each elsewhere); a datagram the kernel refuses gets
//! its error and the rest carry on.

use socket2::SockAddr;

use crate::buf::IoBuf;
use crate::driver::compat::op::Interest;
use crate::driver::{SharedFd, when_ready};
use crate::error::{Error, Result};
use crate::op::SendTo;

pub(crate) async fn send_many<B: IoBuf>(
    fd: &SharedFd,
    datagrams: Vec<(B, SockAddr)>,
) -> Vec<(Result<usize>, B)> {
    let raw = fd.raw();
    // Each op owns its datagram's header, iovec and address (boxed) until the end.
    let ops: Vec<SendTo<B>> = datagrams
        .into_iter()
        .map(|(buf, addr)| SendTo::new(fd.clone(), buf, Some(addr), None))
        .collect();
    let headers: Vec<coring_compat::sys::MsgHdr> = ops.iter().map(|op| *op.msghdr()).collect();
    let mut sent = vec![0usize; ops.len()];
    let mut results = Vec::with_capacity(ops.len());
    while results.len() < ops.len() {
        let next = results.len();
        let batch = when_ready(raw, Interest::Write, || {
            // SAFETY: the headers point into `ops`, which live until this function returns.
            unsafe { coring_compat::sys::sendmsg_batch(raw, &headers[next..], &mut sent[next..]) }
        })
        .await;
        match batch {
            Ok(n) => {
                for &bytes in &sent[next..next + n] {
                    results.push(Ok(bytes));
                }
            }
            Err(e) => results.push(Err(Error::from_io(e, "sendmmsg"))),
        }
    }
    results
        .into_iter()
        .zip(ops)
        .map(|(result, op)| (result, op.buf))
        .collect()
}
