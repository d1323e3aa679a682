//! Thin, documented wrappers over the few syscalls the engine makes outside the driver, each
//! behind one name on every platform:
//!
//! - `fd`: descriptors as each platform has them (sockets and files), raw values, pipes;
//! - `fds` (Unix): descriptors passed in `SCM_RIGHTS` control messages;
//! - `thread`: the CPUs this process may use, and pinning a core's thread to one;
//! - `signal`: SIGINT/SIGTERM (Unix) or console control events (Windows, via `console`)
//!   starting a graceful shutdown;
//! - `sock`: socket options that differ by platform (SO_REUSEPORT, SO_REUSEADDR, reading the
//!   keep-alive time);
//! - `udp`: UDP socket options (GSO, GRO, receive buffers);
//! - `probe`: the host facts the capability report reads (kernel release, sysctl, memlock).

#[cfg(windows)]
pub(crate) mod console;
pub(crate) mod fd;
#[cfg(unix)]
pub(crate) mod fds;
pub(crate) mod probe;
pub(crate) mod signal;
pub(crate) mod sock;
pub(crate) mod thread;
pub(crate) mod udp;
