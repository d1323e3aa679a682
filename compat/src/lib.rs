//! coring-compat: what coring needs where io_uring is missing.
//!
//! # The map
//!
//! - [`reactor`]: a readiness reactor over `mio` (epoll on Linux, kqueue on macOS and the BSDs:
//!   descriptors registered once, edge-triggered) or `polling` (IOCP on Windows: one-shot
//!   interest, re-armed per wait), a bounded wait, and a thread-safe [`reactor::Notifier`]
//!   that ends the wait from another thread.
//! - [`sys`]: the non-blocking socket calls the engine's readiness driver makes, one file per
//!   platform family, selected once below.
//! - [`error`]: the portable [`ErrorKind`] and the translation of OS codes into it.
//!
//! Nothing here knows about tasks, futures or operations: the engine's compat driver keeps the
//! wakers and decides what to retry.

pub mod error;
pub mod reactor;
pub mod sys;

pub use error::ErrorKind;
