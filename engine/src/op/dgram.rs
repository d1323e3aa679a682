//! Datagram operations: sendmsg with a destination (and optional GSO), recvmsg with the source.

use coring_compat::sys::{self as os, IoVec, MsgHdr, SockLen};
use socket2::{SockAddr, SockAddrStorage};

use crate::buf::{IoBuf, IoBufMut, spare_of};
use crate::driver::SharedFd;

/// Room for one `UDP_SEGMENT` control message (a `u16`), 8-byte aligned.
pub(crate) const GSO_CMSG_BYTES: usize = 24;

/// Send `buf` as one datagram (or, with a GSO segment size, as many) to `addr`, or to the
/// connected peer when `addr` is `None`.
pub(crate) struct SendTo<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    parts: Box<SendParts>,
}

/// What the kernel reads for a sendmsg, in one allocation.
///
/// INVARIANT: boxed and never moved out; `msg` points at `iov`, `addr` and `control` inside
/// the same box, and `iov` at the buffer's heap memory. All stay until the last completion.
struct SendParts {
    msg: MsgHdr,
    iov: IoVec,
    addr: Option<SockAddr>,
    control: [u64; GSO_CMSG_BYTES / 8],
}

impl<B: IoBuf> SendTo<B> {
    /// `segment`: with UDP GSO (4.18), the kernel cuts `buf` into datagrams of this size.
    pub(crate) fn new(fd: SharedFd, buf: B, addr: Option<SockAddr>, segment: Option<u16>) -> Self {
        let mut parts = Box::new(SendParts {
            msg: os::msg_header(std::ptr::null_mut(), 0, std::ptr::null_mut(), 0),
            iov: os::io_vec(buf.stable_ptr().cast_mut(), buf.bytes_init()),
            addr,
            control: [0; GSO_CMSG_BYTES / 8],
        });
        let SendParts {
            msg,
            iov,
            addr,
            control,
        } = &mut *parts;
        let (name, name_len) = match addr {
            Some(a) => (a.as_ptr().cast_mut().cast(), a.len()),
            None => (std::ptr::null_mut(), 0),
        };
        *msg = os::msg_header(name, name_len, iov, 1);
        if let Some(size) = segment {
            crate::sys::udp::write_gso(control, msg, size);
        }
        SendTo { fd, buf, parts }
    }

    /// The message header the kernel reads.
    pub(crate) fn msghdr(&self) -> &MsgHdr {
        &self.parts.msg
    }
}

/// Receive one datagram into the spare capacity of `buf`, with its source address.
pub(crate) struct RecvFrom<B> {
    pub(crate) fd: SharedFd,
    pub(crate) buf: B,
    parts: Box<RecvParts>,
}

/// What the kernel reads and writes for a recvmsg, in one allocation.
///
/// INVARIANT: as for `SendParts`; the kernel writes the address into `addr` and the flags and
/// name length into `msg`.
struct RecvParts {
    msg: MsgHdr,
    iov: IoVec,
    addr: SockAddrStorage,
}

impl<B: IoBufMut> RecvFrom<B> {
    pub(crate) fn new(fd: SharedFd, mut buf: B) -> Self {
        let (base, room) = spare_of(&mut buf);
        let mut parts = Box::new(RecvParts {
            msg: os::msg_header(std::ptr::null_mut(), 0, std::ptr::null_mut(), 0),
            iov: os::io_vec(base, room),
            addr: SockAddrStorage::zeroed(),
        });
        let RecvParts { msg, iov, addr } = &mut *parts;
        let addr: *mut SockAddrStorage = addr;
        *msg = os::msg_header(addr.cast(), RECVMSG_NAME_BYTES as SockLen, iov, 1);
        RecvFrom { fd, buf, parts }
    }

    /// The message header the kernel fills.
    pub(crate) fn msghdr_mut(&mut self) -> &mut MsgHdr {
        &mut self.parts.msg
    }

    /// The source address after a successful receive.
    pub(crate) fn source(&self) -> SockAddr {
        let len = os::msg_name_len(&self.parts.msg);
        // SAFETY: `SockAddrStorage` is plain data, so a bitwise copy is valid; the kernel wrote
        // `len` bytes of a valid address (at most the size we gave), and the rest is zeroed.
        unsafe { SockAddr::new(std::ptr::read(&self.parts.addr), len) }
    }

    /// Whether the datagram was longer than the buffer (MSG_TRUNC).
    pub(crate) fn truncated(&self) -> bool {
        os::msg_flags(&self.parts.msg) & os::MSG_TRUNC != 0
    }
}

/// Bytes of `struct io_uring_recvmsg_out` at the start of each pooled datagram buffer.
pub(crate) const RECVMSG_OUT_BYTES: usize = 16;
/// Room reserved for the source address in each pooled datagram buffer.
pub(crate) const RECVMSG_NAME_BYTES: usize = size_of::<SockAddrStorage>();

/// Receive datagrams into pooled buffers until cancelled (multishot recvmsg, 6.0). Each buffer
/// holds a `io_uring_recvmsg_out` header, the source address, then the payload; the readiness
/// path writes the same layout, so readers parse one format.
pub(crate) struct RecvMsgMulti {
    pub(crate) fd: SharedFd,
    pub(crate) pool: std::rc::Rc<crate::buf::pool::Pool>,
    /// INVARIANT: boxed; the template the kernel reads (name and control sizes).
    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "used by the io_uring backend, which only Linux has"
        )
    )]
    pub(crate) msg: Box<MsgHdr>,
    /// Readiness mode: the buffer the last receive filled.
    pub(crate) filled: Option<u16>,
}

impl RecvMsgMulti {
    pub(crate) fn new(fd: SharedFd, pool: std::rc::Rc<crate::buf::pool::Pool>) -> Self {
        // Only the name length is set: the kernel picks the buffer.
        let msg = Box::new(os::msg_header(
            std::ptr::null_mut(),
            RECVMSG_NAME_BYTES as SockLen,
            std::ptr::null_mut(),
            0,
        ));
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
            SockAddr::new(storage, name_len as SockLen)
        }
    });
    Some(DatagramLayout {
        source,
        payload: start.min(end)..end,
        truncated: flags & os::MSG_TRUNC as u32 != 0,
    })
}
