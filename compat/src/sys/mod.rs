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
