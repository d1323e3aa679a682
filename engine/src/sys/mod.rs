//! Thin, documented wrappers over the few syscalls the engine makes outside the driver:
//! file-descriptor ownership, CPU affinity, eventfd and the facts the capability report reads.
//!
//! Everything here is Linux; the compat issue adds the other platforms behind the same names.

#[cfg(windows)]
pub(crate) mod console;
pub(crate) mod fd;
pub(crate) mod probe;
pub(crate) mod thread;
pub(crate) mod udp;

pub(crate) use fd::SharedFd;
