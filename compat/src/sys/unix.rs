//! Unix sockets: Linux (epoll) and macOS/BSD (kqueue).

use std::io;
use std::os::fd::RawFd;

/// A raw descriptor.
pub type RawSource = RawFd;

/// The socket address type of this platform's calls.
pub type SockAddr = libc::sockaddr;

/// The length type of socket addresses.
pub type SockLen = libc::socklen_t;

/// The message header of `sendmsg`/`recvmsg`.
pub type MsgHdr = libc::msghdr;

/// One scatter/gather element of a message.
pub type IoVec = libc::iovec;

/// `shutdown` directions.
pub const SHUT_RD: i32 = libc::SHUT_RD;
/// See [`SHUT_RD`].
pub const SHUT_WR: i32 = libc::SHUT_WR;
/// See [`SHUT_RD`].
pub const SHUT_RDWR: i32 = libc::SHUT_RDWR;

/// The `recvmsg` flag saying a datagram was longer than the buffer.
pub const MSG_TRUNC: i32 = libc::MSG_TRUNC;

/// An element pointing at `len` bytes from `base`.
pub fn io_vec(base: *mut u8, len: usize) -> IoVec {
    libc::iovec {
        iov_base: base.cast(),
        iov_len: len,
    }
}

/// A message header with an address (`name`, may be null) and `count` elements at `iov`, no
/// control data.
pub fn msg_header(name: *mut u8, name_len: SockLen, iov: *mut IoVec, count: usize) -> MsgHdr {
    // SAFETY: `msghdr` is plain data; zero is "no name, no control data, no flags".
    let mut msg: MsgHdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.cast();
    msg.msg_namelen = name_len;
    msg.msg_iov = iov;
    msg.msg_iovlen = count as _;
    msg
}

/// The address length a `recvmsg` wrote.
pub fn msg_name_len(msg: &MsgHdr) -> SockLen {
    msg.msg_namelen
}

/// The flags a `recvmsg` wrote.
pub fn msg_flags(msg: &MsgHdr) -> i32 {
    msg.msg_flags
}

fn check(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `MSG_NOSIGNAL` where it exists (elsewhere sockets carry SO_NOSIGPIPE instead).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
const NO_SIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
const NO_SIGNAL: libc::c_int = 0;

/// Per-socket options the platform needs before use: Apple has no MSG_NOSIGNAL, so writes to a
/// closed peer would raise SIGPIPE without SO_NOSIGPIPE.
pub fn prepare_socket(fd: RawSource) -> io::Result<()> {
    #[cfg(target_vendor = "apple")]
    {
        let one: libc::c_int = 1;
        // SAFETY: sets an int option on a descriptor the caller owns.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        check(ret as isize)?;
    }
    let _ = fd;
    Ok(())
}

/// Accepts a connection, non-blocking and close-on-exec, with the peer's address.
///
/// # Safety
///
/// `addr`/`len` must be null or point at writable storage of `*len` bytes.
pub unsafe fn accept(
    fd: RawSource,
    addr: *mut SockAddr,
    len: *mut SockLen,
) -> io::Result<RawSource> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        // SAFETY: per the caller's contract.
        let new = unsafe { libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) };
        check(new as isize).map(|n| n as RawSource)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        // SAFETY: per the caller's contract.
        let new = unsafe { libc::accept(fd, addr, len) };
        let new = check(new as isize)? as RawSource;
        // SAFETY: plain fcntl calls on the descriptor just accepted.
        unsafe {
            libc::fcntl(new, libc::F_SETFD, libc::FD_CLOEXEC);
            let flags = libc::fcntl(new, libc::F_GETFL);
            libc::fcntl(new, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        prepare_socket(new)?;
        Ok(new)
    }
}

/// Starts or checks a connect: `Ok` once connected, `WouldBlock` while in progress.
///
/// # Safety
///
/// `addr` must point at `len` bytes of a valid socket address.
pub unsafe fn connect(
    fd: RawSource,
    addr: *const SockAddr,
    len: SockLen,
    started: bool,
) -> io::Result<()> {
    if started {
        // Once started, the outcome is read from the socket (as mio does), not from a second
        // connect(), whose answer differs between systems.
        return connect_outcome(fd);
    }
    // SAFETY: per the caller's contract.
    let ret = unsafe { libc::connect(fd, addr, len) };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINPROGRESS) => Err(io::ErrorKind::WouldBlock.into()),
        _ => Err(err),
    }
}

/// How a connect under way stands: its error (`SO_ERROR`), connected, or still in progress.
fn connect_outcome(fd: RawSource) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` is a writable c_int and `len` says so.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    // SAFETY: all-zero is a valid address buffer to be overwritten.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut peer_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `peer` is writable for `peer_len` bytes.
    if unsafe { libc::getpeername(fd, (&raw mut peer).cast(), &mut peer_len) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTCONN) => Err(io::ErrorKind::WouldBlock.into()),
        _ => Err(e),
    }
}

/// Receives into `buf..buf+len`.
///
/// # Safety
///
/// `buf` must point at `len` writable bytes.
pub unsafe fn recv(fd: RawSource, buf: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: per the caller's contract.
    check(unsafe { libc::recv(fd, buf.cast(), len, libc::MSG_DONTWAIT) })
}

/// Sends `buf..buf+len`.
///
/// # Safety
///
/// `buf` must point at `len` readable bytes.
pub unsafe fn send(fd: RawSource, buf: *const u8, len: usize) -> io::Result<usize> {
    // SAFETY: per the caller's contract.
    check(unsafe { libc::send(fd, buf.cast(), len, libc::MSG_DONTWAIT | NO_SIGNAL) })
}

/// sendmsg.
///
/// # Safety
///
/// `msg` must describe valid memory (name, iovecs, control data).
pub unsafe fn sendmsg(fd: RawSource, msg: *const MsgHdr) -> io::Result<usize> {
    // SAFETY: per the caller's contract.
    check(unsafe { libc::sendmsg(fd, msg, libc::MSG_DONTWAIT | NO_SIGNAL) })
}

/// Sends messages with as few calls as the system allows: one `sendmmsg` for up to 1,024 of
/// them on Linux, one `sendmsg` each elsewhere. Returns how many went (at least one), with the
/// bytes of message `i` in `sent[i]`; an error (or `WouldBlock`) only when the first did not go.
///
/// # Safety
///
/// Every header in `msgs` must describe valid memory (name, iovecs, control data).
pub unsafe fn sendmsg_batch(fd: RawSource, msgs: &[MsgHdr], sent: &mut [usize]) -> io::Result<usize> {
    let count = msgs.len().min(sent.len());
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let count = count.min(1024); // UIO_MAXIOV: the kernel's limit per call
        let mut batch: Vec<libc::mmsghdr> = msgs[..count]
            .iter()
            .map(|&msg_hdr| libc::mmsghdr { msg_hdr, msg_len: 0 })
            .collect();
        // SAFETY: `batch` holds `count` headers the caller vouches for; the kernel writes only
        // their `msg_len` fields.
        let n = unsafe {
            libc::sendmmsg(fd, batch.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT | NO_SIGNAL)
        };
        let n = check(n as isize)?;
        for (out, m) in sent.iter_mut().zip(&batch[..n]) {
            *out = m.msg_len as usize;
        }
        Ok(n)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    // SAFETY: per the caller's contract.
    unsafe {
        super::sendmsg_each(fd, &msgs[..count], &mut sent[..count])
    }
}

/// recvmsg.
///
/// # Safety
///
/// `msg` must describe valid, writable memory.
pub unsafe fn recvmsg(fd: RawSource, msg: *mut MsgHdr) -> io::Result<usize> {
    // SAFETY: per the caller's contract.
    check(unsafe { libc::recvmsg(fd, msg, libc::MSG_DONTWAIT) })
}

/// shutdown(2).
pub fn shutdown(fd: RawSource, how: i32) -> io::Result<()> {
    // SAFETY: plain syscall; an invalid descriptor is reported as EBADF.
    check(unsafe { libc::shutdown(fd, how) } as isize).map(drop)
}

/// Sends up to `count` bytes of file `file` from `*offset` to socket `sock` without a copy
/// through user space; advances `*offset`. `WouldBlock` when the socket is full (possibly after
/// sending part: check `*offset`).
pub fn sendfile(sock: RawSource, file: RawSource, offset: &mut u64, count: usize) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut off = *offset as libc::off_t;
        // SAFETY: plain syscall; `off` is a live local the kernel updates.
        let n = unsafe { libc::sendfile(sock, file, &mut off, count) };
        let n = check(n)?;
        *offset = off as u64;
        Ok(n)
    }
    #[cfg(target_vendor = "apple")]
    {
        let mut len = count as libc::off_t;
        // SAFETY: plain syscall; `len` is a live local the kernel updates with the bytes sent,
        // also when it fails with EAGAIN after sending part.
        let ret = unsafe {
            libc::sendfile(file, sock, *offset as libc::off_t, &mut len, std::ptr::null_mut(), 0)
        };
        *offset += len as u64;
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock && len > 0 {
                return Ok(len as usize);
            }
            return Err(err);
        }
        Ok(len as usize)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    {
        let _ = (sock, file, offset, count);
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// Moves up to `len` bytes between a pipe and another descriptor (Linux `splice(2)`),
/// non-blocking. `off_in`: the input offset for a file, `None` for a pipe.
pub fn splice(fd_in: RawSource, off_in: Option<u64>, fd_out: RawSource, len: usize) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut off = off_in.map(|o| o as libc::loff_t);
        let off_ptr = off.as_mut().map_or(std::ptr::null_mut(), |o| o as *mut libc::loff_t);
        // SAFETY: plain syscall; `off_ptr` is null or a live local.
        let n = unsafe {
            libc::splice(fd_in, off_ptr, fd_out, std::ptr::null_mut(), len, libc::SPLICE_F_NONBLOCK)
        };
        check(n)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (fd_in, off_in, fd_out, len);
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// `pread(2)`: regular files are always "ready", so this never returns `WouldBlock`.
///
/// # Safety
///
/// `buf` must point at `len` writable bytes.
pub unsafe fn pread(fd: RawSource, buf: *mut u8, len: usize, offset: u64) -> io::Result<usize> {
    // SAFETY: per the caller's contract.
    check(unsafe { libc::pread(fd, buf.cast(), len, offset as libc::off_t) })
}
