//! Descriptors carried in `SCM_RIGHTS` control messages over Unix sockets: the control block's
//! size, writing one, reading one back. The engine's `SendFds`/`RecvFds` ops and the blocking
//! restart channel share these.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message carries (Linux's `SCM_MAX_FD`; more fails with EINVAL).
pub(crate) const MAX_FDS: usize = 253;

/// Bytes of control data that carry `n` descriptors, as `u64`s (cmsg alignment).
pub(crate) fn control_words(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument (declared unsafe by libc).
    let bytes = unsafe { libc::CMSG_SPACE((n * size_of::<RawFd>()) as u32) } as usize;
    bytes.div_ceil(8)
}

/// Writes one `SCM_RIGHTS` message carrying `fds` into `control` and points `msg` at it.
///
/// `control` must hold [`control_words`]`(fds.len())` words and stay where it is until the
/// kernel has read `msg`.
pub(crate) fn write_rights(msg: &mut libc::msghdr, control: &mut [u64], fds: &[RawFd]) {
    if fds.is_empty() {
        msg.msg_control = std::ptr::null_mut();
        msg.msg_controllen = 0;
        return;
    }
    let data_len = std::mem::size_of_val(fds);
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(data_len as u32) } as _;
    // SAFETY: `control` is 8-byte aligned and at least CMSG_SPACE(data_len) bytes (the caller
    // sized it with `control_words`), so the first header and its data fit in it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), data_len);
    }
}

/// Takes ownership of every descriptor the `SCM_RIGHTS` messages in `msg`'s control data
/// carry (marking each close-on-exec, where the receive could not ask for it).
///
/// # Safety
///
/// `msg` must be the header of a completed `recvmsg`: its control pointer and length describe
/// control data the kernel wrote, whose descriptors nobody else owns yet.
pub(crate) unsafe fn take_rights(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if msg.msg_control.is_null() || msg.msg_controllen == 0 {
        return fds;
    }
    // SAFETY: the caller guarantees `msg` describes control data the kernel wrote; the CMSG
    // macros stay within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let n = ((*cmsg).cmsg_len as usize).saturating_sub(header) / size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..n {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    let fd = OwnedFd::from_raw_fd(raw);
                    #[cfg(not(target_os = "linux"))]
                    {
                        let _ = libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                    fds.push(fd);
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    fds
}

/// The `recvmsg` flags of a receive that takes descriptors: close-on-exec from the start
/// where the system can (Linux), so no child started meanwhile inherits them.
pub(crate) const RECV_FLAGS: libc::c_int = {
    #[cfg(target_os = "linux")]
    {
        libc::MSG_CMSG_CLOEXEC
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
};

/// Sends `data` with `fds` on a blocking Unix stream socket: the descriptors ride with the
/// first byte; the rest of `data` follows.
pub(crate) fn send_blocking(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message (at most {MAX_FDS})",
                fds.len()
            ),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut control = vec![0u64; control_words(raw.len())];
    let mut sent = 0;
    while sent < data.len() {
        let mut iov = libc::iovec {
            iov_base: data[sent..].as_ptr().cast_mut().cast(),
            iov_len: data.len() - sent,
        };
        // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if sent == 0 {
            write_rights(&mut msg, &mut control, &raw);
        }
        // SAFETY: `msg` points at `iov` (into `data`) and `control`, all alive for the call.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, SEND_FLAGS) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
    }
    Ok(())
}

/// Receives into `buf` on a blocking Unix stream socket, with the descriptors that came with
/// those bytes (at most `max_fds`; a message with more is refused, its descriptors closed).
pub(crate) fn recv_blocking(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = vec![0u64; control_words(max_fds.clamp(1, MAX_FDS))];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = (control.len() * 8) as _;
        // SAFETY: `msg` points at `iov` (into `buf`) and `control`, alive for the call.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, RECV_FLAGS) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: a completed recvmsg: the kernel wrote the control data `msg` describes.
        let fds = unsafe { take_rights(&msg) };
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(truncated());
        }
        return Ok((n as usize, fds));
    }
}

/// The error of a message whose descriptors did not fit (the kernel closed the rest).
pub(crate) fn truncated() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "more descriptors came than were asked for (the rest were closed)",
    )
}

/// No SIGPIPE when the peer has gone (where the flag exists; elsewhere the socket says so).
const SEND_FLAGS: libc::c_int = {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        libc::MSG_NOSIGNAL
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        0
    }
};
