//! Non-blocking socket calls, one file per platform family. Every backend provides:
//!
//! - `RawSource`, the raw descriptor type, and `modify`/`delete`/`is_not_registered`/
//!   `is_already_registered` for the reactor;
//! - `accept`, `connect`, `recv`, `send`, `sendmsg`, `recvmsg`, `shutdown`: the calls the
//!   readiness driver makes; each returns `WouldBlock` instead of blocking, and never raises
//!   SIGPIPE;
//! - `prepare_socket`, for per-socket options the platform needs (SO_NOSIGPIPE on Apple).

cfg_select! {
    unix => {
        mod unix;
        pub use unix::*;
    }
    windows => {
        mod windows;
        pub use windows::*;
    }
    _ => {
        compile_error!("coring-compat supports Unix (epoll, kqueue) and Windows (IOCP) only");
    }
}

/// `sendmsg_batch` where the system has no batch call: one `sendmsg` per message, stopping at
/// the first that does not go. Returns how many went (at least one), with the bytes of message
/// `i` in `sent[i]`; an error (or `WouldBlock`) only when the first did not go.
///
/// # Safety
///
/// Every header in `msgs` must describe valid memory (name, buffers, control data).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
unsafe fn sendmsg_each(
    source: RawSource,
    msgs: &[MsgHdr],
    sent: &mut [usize],
) -> std::io::Result<usize> {
    let count = msgs.len().min(sent.len());
    for i in 0..count {
        // SAFETY: per the caller's contract.
        match unsafe { sendmsg(source, &msgs[i]) } {
            Ok(n) => sent[i] = n,
            Err(e) if i == 0 => return Err(e),
            Err(_) => return Ok(i),
        }
    }
    Ok(count)
}
