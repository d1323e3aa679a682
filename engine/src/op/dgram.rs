//! Datagram operations: sendmsg with a destination (and optional GSO), recvmsg with the source.

use socket2::{SockAddr, SockAddrStorage};

use crate::buf::{IoBuf, IoBufMut};
use crate::sys::SharedFd;

/// Room for one `UDP_SEGMENT` control message (a `u16`), 8-byte aligned.
pub(crate) const GSO_CMSG_BYTES: usize = 24;

/// Send `buf` as one datagram (or, with a GSO segment size, as many) to `addr`, or to the
/// connected peer when `addr` is `None`.
pub(crate) struct SendTo<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    /// INVARIANT (all boxes): the msghdr points at `addr`, `iov` and `control`; the iovec points
    /// at `buf`'s heap memory. All stay until the last completion.
    #[allow(
        dead_code,
        reason = "owned for the kernel, which reads it through `msg`"
    )]
    addr: Option<Box<SockAddr>>,
    #[allow(
        dead_code,
        reason = "owned for the kernel, which reads it through `msg`"
    )]
    iov: Box<libc::iovec>,
    #[allow(
        dead_code,
        reason = "owned for the kernel, which reads it through `msg`"
    )]
    control: Option<Box<[u64; GSO_CMSG_BYTES / 8]>>,
    pub(crate) msg: Box<libc::msghdr>,
}

impl<B: IoBuf> SendTo<B> {
    /// `segment`: with UDP GSO (4.18), the kernel cuts `buf` into datagrams of this size.
    pub(crate) fn new(fd: SharedFd, buf: B, addr: Option<SockAddr>, segment: Option<u16>) -> Self {
        let addr = addr.map(Box::new);
        let mut iov = Box::new(libc::iovec {
            iov_base: buf.stable_ptr() as *mut libc::c_void,
            iov_len: buf.bytes_init(),
        });
        // SAFETY: `msghdr` is plain data; zero means no name and no control data.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        if let Some(a) = &addr {
            msg.msg_name = a.as_ptr() as *mut libc::c_void;
            msg.msg_namelen = a.len();
        }
        msg.msg_iov = &mut *iov;
        msg.msg_iovlen = 1;
        let mut control = None;
        if let Some(size) = segment {
            let mut space = Box::new([0u64; GSO_CMSG_BYTES / 8]);
            crate::sys::udp::write_gso(&mut space, &mut msg, size);
            control = Some(space);
        }
        SendTo {
            fd,
            buf,
            addr,
            iov,
            control,
            msg,
        }
    }
}

/// Receive one datagram into the spare capacity of `buf`, with its source address.
pub(crate) struct RecvFrom<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    /// INVARIANT: as for `SendTo`; the kernel writes the address into `addr` and the flags and
    /// name length into `msg`.
    addr: Box<SockAddrStorage>,
    #[allow(dead_code, reason = "owned for the kernel, which writes through `msg`")]
    iov: Box<libc::iovec>,
    pub(crate) msg: Box<libc::msghdr>,
}

impl<B: IoBufMut> RecvFrom<B> {
    pub(crate) fn new(fd: SharedFd, mut buf: B) -> Self {
        let init = buf.bytes_init();
        let room = buf.bytes_total() - init;
        // SAFETY: `init <= bytes_total`, so the offset stays inside the buffer.
        let base = unsafe { buf.stable_mut_ptr().add(init) };
        let mut iov = Box::new(libc::iovec {
            iov_base: base.cast(),
            iov_len: room,
        });
        let mut addr = Box::new(SockAddrStorage::zeroed());
        // SAFETY: plain data; zero means no control data.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        let addr_ptr: *mut SockAddrStorage = &mut *addr;
        msg.msg_name = addr_ptr.cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut *iov;
        msg.msg_iovlen = 1;
        RecvFrom {
            fd,
            buf,
            addr,
            iov,
            msg,
        }
    }

    /// The source address after a successful receive.
    pub(crate) fn source(&self) -> SockAddr {
        let len = self.msg.msg_namelen;
        // SAFETY: `SockAddrStorage` is plain data, so a bitwise copy is valid; the kernel wrote
        // `len` bytes of a valid address (at most the size we gave), and the rest is zeroed.
        unsafe { SockAddr::new(std::ptr::read(&*self.addr), len) }
    }

    /// Whether the datagram was longer than the buffer (MSG_TRUNC).
    pub(crate) fn truncated(&self) -> bool {
        self.msg.msg_flags & libc::MSG_TRUNC != 0
    }
}

/// Bytes of `struct io_uring_recvmsg_out` at the start of each pooled datagram buffer.
pub(crate) const RECVMSG_OUT_BYTES: usize = 16;
/// Room reserved for the source address in each pooled datagram buffer.
pub(crate) const RECVMSG_NAME_BYTES: usize = size_of::<libc::sockaddr_storage>();

/// Receive datagrams into pooled buffers until cancelled (multishot recvmsg, 6.0). Each buffer
/// holds a `io_uring_recvmsg_out` header, the source address, then the payload; the readiness
/// path writes the same layout, so readers parse one format.
pub(crate) struct RecvMsgMulti {
    pub(crate) fd: SharedFd,
    pub(crate) pool: std::rc::Rc<crate::buf::pool::Pool>,
    /// INVARIANT: boxed; the template the kernel reads (name and control sizes).
    pub(crate) msg: Box<libc::msghdr>,
    /// Readiness mode: the buffer the last receive filled.
    pub(crate) filled: Option<u16>,
}

impl RecvMsgMulti {
    pub(crate) fn new(fd: SharedFd, pool: std::rc::Rc<crate::buf::pool::Pool>) -> Self {
        // SAFETY: plain data; only the name length is set (no control data).
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_namelen = RECVMSG_NAME_BYTES as libc::socklen_t;
        RecvMsgMulti {
            fd,
            pool,
            msg,
            filled: None,
        }
    }
}

/// One datagram as laid out in a pooled buffer.
pub(crate) struct DatagramLayout {
    pub(crate) source: Option<SockAddr>,
    pub(crate) payload: std::ops::Range<usize>,
    pub(crate) truncated: bool,
}

/// Reads the `io_uring_recvmsg_out` layout from the first `filled` bytes of `buf`.
pub(crate) fn parse_datagram(buf: &[u8], filled: usize) -> Option<DatagramLayout> {
    let head = buf.get(..RECVMSG_OUT_BYTES)?;
    let word = |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (namelen, controllen, payloadlen, flags) = (word(0), word(4), word(8), word(12));
    let start = RECVMSG_OUT_BYTES + RECVMSG_NAME_BYTES + controllen as usize;
    let end = (start + payloadlen as usize).min(filled).min(buf.len());
    let name_len = (namelen as usize).min(RECVMSG_NAME_BYTES);
    let source = (name_len > 0).then(|| {
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: we copy at most `sockaddr_storage` bytes into a storage of that size.
        unsafe {
            let dst: *mut SockAddrStorage = &mut storage;
            std::ptr::copy_nonoverlapping(
                buf[RECVMSG_OUT_BYTES..].as_ptr(),
                dst.cast::<u8>(),
                name_len,
            );
            SockAddr::new(storage, name_len as libc::socklen_t)
        }
    });
    Some(DatagramLayout {
        source,
        payload: start.min(end)..end,
        truncated: flags & libc::MSG_TRUNC as u32 != 0,
    })
}
