//! Windows sockets (Winsock), under the reactor's IOCP-based readiness (`polling` over AFD).
//!
//! The same calls as the Unix backend with Winsock's types: sockets are `SOCKET` handles, errors
//! come from `WSAGetLastError`, and `recvmsg` is the `WSARecvMsg` extension, looked up once.
//! Writes never raise signals on Windows, so nothing is needed for SIGPIPE. File → socket
//! without a copy (`TransmitFile`) is not offered here: the engine falls back to positioned
//! reads, each sent whole.

use std::io;
use std::os::windows::io::{BorrowedSocket, RawSocket};

use polling::{Event, Poller};
use windows_sys::Win32::Networking::WinSock as ws;

/// A raw socket handle.
pub type RawSource = RawSocket;

/// The socket address type of this platform's calls.
pub type SockAddr = ws::SOCKADDR;

/// The length type of socket addresses.
pub type SockLen = i32;

/// The message header of `sendmsg`/`recvmsg`.
pub type MsgHdr = ws::WSAMSG;

/// One scatter/gather element of a message.
pub type IoVec = ws::WSABUF;

/// The `WSARecvMsg` flag saying a datagram was longer than the buffer.
pub const MSG_TRUNC: i32 = ws::MSG_TRUNC as i32;

/// An element pointing at `len` bytes from `base` (Winsock lengths are 32-bit: longer
/// buffers are used in part, and the call reports how much moved).
pub fn io_vec(base: *mut u8, len: usize) -> IoVec {
    ws::WSABUF {
        len: len.min(u32::MAX as usize) as u32,
        buf: base,
    }
}

/// A message header with an address (`name`, may be null) and `count` elements at `iov`, no
/// control data.
pub fn msg_header(name: *mut u8, name_len: SockLen, iov: *mut IoVec, count: usize) -> MsgHdr {
    ws::WSAMSG {
        name: name.cast(),
        namelen: name_len,
        lpBuffers: iov,
        dwBufferCount: count as u32,
        Control: ws::WSABUF {
            len: 0,
            buf: std::ptr::null_mut(),
        },
        dwFlags: 0,
    }
}

/// The address length a `WSARecvMsg` wrote.
pub fn msg_name_len(msg: &MsgHdr) -> SockLen {
    msg.namelen
}

/// The flags a `WSARecvMsg` wrote.
pub fn msg_flags(msg: &MsgHdr) -> i32 {
    msg.dwFlags as i32
}

/// `shutdown` directions.
pub const SHUT_RD: i32 = ws::SD_RECEIVE;
/// See [`SHUT_RD`].
pub const SHUT_WR: i32 = ws::SD_SEND;
/// See [`SHUT_RD`].
pub const SHUT_RDWR: i32 = ws::SD_BOTH;

fn last_error() -> io::Error {
    // SAFETY: reads the calling thread's last Winsock error; no preconditions.
    io::Error::from_raw_os_error(unsafe { ws::WSAGetLastError() })
}

fn check(ret: i32) -> io::Result<usize> {
    if ret == ws::SOCKET_ERROR {
        Err(last_error())
    } else {
        Ok(ret as usize)
    }
}

fn socket(source: RawSource) -> ws::SOCKET {
    source as ws::SOCKET
}

pub(crate) fn modify(poller: &Poller, source: RawSource, ev: Event) -> io::Result<()> {
    // SAFETY: the reactor's caller keeps `source` open while it is registered.
    poller.modify(unsafe { BorrowedSocket::borrow_raw(source) }, ev)
}

pub(crate) fn delete(poller: &Poller, source: RawSource) -> io::Result<()> {
    // SAFETY: as above; it is still open when removed.
    poller.delete(unsafe { BorrowedSocket::borrow_raw(source) })
}

pub(crate) fn is_not_registered(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

pub(crate) fn is_already_registered(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AlreadyExists
}

/// Puts a socket in non-blocking mode (Windows has no per-call flag for it).
pub fn set_nonblocking(source: RawSource) -> io::Result<()> {
    let mut on: u32 = 1;
    // SAFETY: FIONBIO reads one u32 from a pointer that is valid for the call.
    check(unsafe { ws::ioctlsocket(socket(source), ws::FIONBIO, &mut on) }).map(|_| ())
}

/// Per-socket options the platform needs before use: non-blocking mode.
pub fn prepare_socket(source: RawSource) -> io::Result<()> {
    set_nonblocking(source)
}

/// Accepts a connection, non-blocking, with the peer's address.
///
/// # Safety
///
/// `addr`/`len` must be null or point at writable storage of `*len` bytes.
pub unsafe fn accept(
    source: RawSource,
    addr: *mut SockAddr,
    len: *mut SockLen,
) -> io::Result<RawSource> {
    // SAFETY: the caller vouches for `addr`/`len`.
    let s = unsafe { ws::accept(socket(source), addr, len) };
    if s == ws::INVALID_SOCKET {
        return Err(last_error());
    }
    let accepted = s as RawSource;
    if let Err(e) = set_nonblocking(accepted) {
        // SAFETY: `s` was just accepted here and is owned by nobody else.
        unsafe { ws::closesocket(s) };
        return Err(e);
    }
    Ok(accepted)
}

/// Starts or checks a connect: `Ok` once connected, `WouldBlock` while in progress.
///
/// # Safety
///
/// `addr` must point at `len` bytes of a valid socket address.
pub unsafe fn connect(
    source: RawSource,
    addr: *const SockAddr,
    len: SockLen,
    started: bool,
) -> io::Result<()> {
    if started {
        // Once started, the outcome is read from the socket, as mio does: a second connect()
        // answers something else on some stacks (Wine says WSAECONNABORTED for a refusal).
        return connect_outcome(source);
    }
    // SAFETY: the caller vouches for `addr`.
    match check(unsafe { ws::connect(socket(source), addr, len) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(ws::WSAEWOULDBLOCK) => {
            Err(io::ErrorKind::WouldBlock.into())
        }
        Err(e) => Err(e),
    }
}

/// How a connect under way stands: its error (`SO_ERROR`), connected, or still in progress.
fn connect_outcome(source: RawSource) -> io::Result<()> {
    let mut err: i32 = 0;
    let mut len = size_of::<i32>() as i32;
    // SAFETY: `err` is a writable i32 and `len` says so.
    check(unsafe {
        ws::getsockopt(
            socket(source),
            ws::SOL_SOCKET,
            ws::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        )
    })?;
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    // SAFETY: all-zero is a valid address buffer to be overwritten.
    let mut peer: ws::SOCKADDR_STORAGE = unsafe { std::mem::zeroed() };
    let mut peer_len = size_of::<ws::SOCKADDR_STORAGE>() as i32;
    // SAFETY: `peer` is writable for `peer_len` bytes.
    match check(unsafe { ws::getpeername(socket(source), (&raw mut peer).cast(), &mut peer_len) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(ws::WSAENOTCONN) => {
            Err(io::ErrorKind::WouldBlock.into())
        }
        Err(e) => Err(e),
    }
}

/// Receives into `buf..buf+len`.
///
/// # Safety
///
/// `buf` must point at `len` writable bytes.
pub unsafe fn recv(source: RawSource, buf: *mut u8, len: usize) -> io::Result<usize> {
    let len = len.min(i32::MAX as usize) as i32;
    // SAFETY: the caller vouches for the buffer.
    check(unsafe { ws::recv(socket(source), buf, len, 0) })
}

/// Sends `buf..buf+len`.
///
/// # Safety
///
/// `buf` must point at `len` readable bytes.
pub unsafe fn send(source: RawSource, buf: *const u8, len: usize) -> io::Result<usize> {
    let len = len.min(i32::MAX as usize) as i32;
    // SAFETY: the caller vouches for the buffer.
    check(unsafe { ws::send(socket(source), buf, len, 0) })
}

/// WSASendMsg.
///
/// # Safety
///
/// `msg` must describe valid memory (name, buffers, control data).
pub unsafe fn sendmsg(source: RawSource, msg: *const MsgHdr) -> io::Result<usize> {
    let mut sent: u32 = 0;
    // SAFETY: the caller vouches for `msg`; no overlapped I/O (the socket is non-blocking).
    let ret = unsafe {
        ws::WSASendMsg(
            socket(source),
            msg,
            0,
            &mut sent,
            std::ptr::null_mut(),
            None,
        )
    };
    check(ret).map(|_| sent as usize)
}

/// Sends messages one `WSASendMsg` each (Winsock has no batch call). Returns how many went
/// (at least one), with the bytes of message `i` in `sent[i]`; an error (or `WouldBlock`) only
/// when the first did not go.
///
/// # Safety
///
/// Every header in `msgs` must describe valid memory (name, buffers, control data).
pub unsafe fn sendmsg_batch(source: RawSource, msgs: &[MsgHdr], sent: &mut [usize]) -> io::Result<usize> {
    // SAFETY: per the caller's contract.
    unsafe { super::sendmsg_each(source, msgs, sent) }
}

/// WSARecvMsg (a Winsock extension, looked up through a socket once).
///
/// # Safety
///
/// `msg` must describe valid, writable memory.
pub unsafe fn recvmsg(source: RawSource, msg: *mut MsgHdr) -> io::Result<usize> {
    let recv_msg = recv_msg_fn(source)?;
    let mut received: u32 = 0;
    // SAFETY: `recv_msg` is the provider's WSARecvMsg; the caller vouches for `msg`.
    let ret = unsafe {
        recv_msg(
            socket(source),
            msg,
            &mut received,
            std::ptr::null_mut(),
            None,
        )
    };
    match check(ret) {
        Ok(_) => Ok(received as usize),
        // A datagram longer than the buffers fills them and fails with WSAEMSGSIZE; report it
        // as Unix does: the bytes that fit, with MSG_TRUNC set.
        Err(e) if e.raw_os_error() == Some(ws::WSAEMSGSIZE) => {
            // SAFETY: the caller vouches for `msg` and the buffers it names.
            let msg = unsafe { &mut *msg };
            // SAFETY: `lpBuffers` points at `dwBufferCount` buffers (the caller's contract).
            let buffers =
                unsafe { std::slice::from_raw_parts(msg.lpBuffers, msg.dwBufferCount as usize) };
            msg.dwFlags |= ws::MSG_TRUNC;
            Ok(buffers.iter().map(|b| b.len as usize).sum())
        }
        Err(e) => Err(e),
    }
}

type RecvMsgFn = unsafe extern "system" fn(
    ws::SOCKET,
    *mut ws::WSAMSG,
    *mut u32,
    *mut windows_sys::Win32::System::IO::OVERLAPPED,
    ws::LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32;

/// `WSARecvMsg`, looked up with the first socket that needs it and kept: the TCP/IP provider
/// (mswsock) serves every socket the engine makes, and the lookup is a syscall.
fn recv_msg_fn(source: RawSource) -> io::Result<RecvMsgFn> {
    static RECV_MSG: std::sync::OnceLock<RecvMsgFn> = std::sync::OnceLock::new();
    if let Some(f) = RECV_MSG.get() {
        return Ok(*f);
    }
    let f = lookup_recv_msg(source)?;
    Ok(*RECV_MSG.get_or_init(|| f))
}

fn lookup_recv_msg(source: RawSource) -> io::Result<RecvMsgFn> {
    let guid = ws::WSAID_WSARECVMSG;
    let mut f: ws::LPFN_WSARECVMSG = None;
    let mut returned: u32 = 0;
    // SAFETY: the in and out buffers are a GUID and a function pointer slot, both valid for
    // the sizes given.
    let ret = unsafe {
        ws::WSAIoctl(
            socket(source),
            ws::SIO_GET_EXTENSION_FUNCTION_POINTER,
            (&guid as *const windows_sys::core::GUID).cast(),
            size_of::<windows_sys::core::GUID>() as u32,
            (&mut f as *mut ws::LPFN_WSARECVMSG).cast(),
            size_of::<ws::LPFN_WSARECVMSG>() as u32,
            &mut returned,
            std::ptr::null_mut(),
            None,
        )
    };
    check(ret)?;
    f.ok_or_else(|| io::Error::from(io::ErrorKind::Unsupported))
}

/// shutdown.
pub fn shutdown(source: RawSource, how: i32) -> io::Result<()> {
    // SAFETY: a plain call on a socket handle.
    check(unsafe { ws::shutdown(socket(source), how) }).map(|_| ())
}

/// Reads up to `len` bytes of a file at `offset` (files are always "ready").
///
/// # Safety
///
/// `buf` must point at `len` writable bytes; `file` must be an open file handle.
pub unsafe fn pread(
    file: RawSource,
    buf: *mut u8,
    len: usize,
    offset: u64,
) -> io::Result<usize> {
    use std::os::windows::fs::FileExt as _;
    use std::os::windows::io::FromRawHandle as _;
    // SAFETY: the handle is borrowed for the call only (ManuallyDrop: not closed here).
    let f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_handle(file as _) });
    // SAFETY: the caller vouches for the buffer.
    let out = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    f.seek_read(out, offset)
}

/// File → socket without a copy is not offered on Windows (`TransmitFile` blocks a
/// non-overlapped caller until the whole file is sent): `Unsupported`, and the engine falls
/// back to a pooled read/send loop.
pub fn sendfile(sock: RawSource, file: RawSource, offset: &mut u64, count: usize) -> io::Result<usize> {
    let _ = (sock, file, offset, count);
    Err(io::ErrorKind::Unsupported.into())
}

/// No pipes to splice through on Windows: `Unsupported`.
pub fn splice(fd_in: RawSource, off_in: Option<u64>, fd_out: RawSource, len: usize) -> io::Result<usize> {
    let _ = (fd_in, off_in, fd_out, len);
    Err(io::ErrorKind::Unsupported.into())
}
