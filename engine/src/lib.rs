//! coring: an io_uring-first, thread-per-core server engine.
//!
//! # The map
//!
//! - [`runtime`]: [`Runtime`] runs one pinned thread per core, each with its own driver,
//!   executor, timers and counters; [`block_on`] runs one core on the calling thread.
//! - [`task`]: `spawn_local` (futures need not be `Send`), [`task::JoinHandle`], cooperative
//!   budget.
//! - [`time`]: the per-turn clock ([`time::now`]), `sleep`, `timeout`, fixed-rate `interval`.
//! - [`net`]: TCP listeners and streams, UDP and Unix sockets with the owned-buffer ("rent")
//!   API, `read(buf) -> (Result<usize>, buf)`, and pooled receives into the core's buffers.
//! - [`fs`]: files read at an offset and sent to sockets without a copy (`send_file`).
//! - [`shard`]: cross-core work: mailboxes and `spawn_on`, woken by MSG_RING or an eventfd.
//! - [`buf`]: the buffer traits those APIs take, and the per-core receive pool.
//! - [`driver`]: the driver contract, the capability [`driver::probe`] and the choice between
//!   the io_uring backend and the compat (readiness) backend; the op lifecycle lives here too.
//! - `op` (private): operation structs, declared once; each backend says how it runs them.
//! - `sys` (private): thin wrappers over descriptors, socket options, thread pinning, signals.
//! - `stats` (re-exported): per-core counters ([`CoreStats`], [`DriverStats`], [`NetStats`]).
//! - [`Error`]: one error type with a portable [`ErrorKind`], the raw OS code and the failing op.
//! - [`test`]: `#[coring::test]`, one test run on every driver (from `coring-macros`).
//!
//! # How one read travels
//!
//! `TcpStream::read(buf)` builds an `op::Recv` that owns a clone of the socket's descriptor and
//! the buffer, and queues its SQE on the core's ring (no syscall). When the executor has run
//! every ready task, the core submits all SQEs of the turn with one `io_uring_enter`, which also
//! waits for completions when nothing else is ready. The CQE wakes the task, which gets the
//! buffer back with the result. If the task drops the read first, the op is cancelled and the
//! buffer stays parked in the driver until the kernel's last completion for it.
//!
//! ```no_run
//! use coring::net::{TcpListener, TcpStream};
//!
//! fn main() -> coring::Result<()> {
//!     coring::Runtime::builder().cores(2).pin(true).build()?.run(|_core| async {
//!         let listener = TcpListener::bind_reuseport("127.0.0.1:7000").unwrap();
//!         let mut incoming = listener.incoming();
//!         while let Ok(stream) = incoming.next().await {
//!             coring::spawn_local(echo(stream));
//!         }
//!     })
//! }
//!
//! async fn echo(stream: TcpStream) {
//!     // Bytes land in the core's buffer pool when they arrive (an idle connection holds no
//!     // buffer), and the same buffer is written back.
//!     let mut incoming = stream.pooled();
//!     while let Ok(Some(buf)) = incoming.next().await {
//!         if stream.write_all(buf).await.0.is_err() {
//!             return;
//!         }
//!     }
//! }
//! ```

// `#[coring::test]` names `::coring`, here too.
extern crate self as coring;

#[doc(hidden)]
#[path = "test_support.rs"]
pub mod __test;
pub mod buf;
pub mod driver;
mod error;
pub mod fs;
pub mod net;
mod op;
#[cfg(unix)]
pub mod restart;
pub mod runtime;
pub mod shard;
mod stats;
mod sys;
pub mod task;
pub mod time;

pub use error::{Error, ErrorKind, Result};
pub use runtime::{Builder, Core, Runtime, ShutdownHandle, StatsHandle, block_on};
pub use stats::{CoreStats, DriverStats, NetStats};
pub use task::spawn_local;

/// One test, run on every driver: `uring_NAME` and `compat_NAME` (see `coring-macros`).
pub use coring_macros::test;

/// The README's code blocks compile as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Compile-time proof that per-core handles stay on their core: `check` only resolves when the
/// type is not `Send` (two impls would apply otherwise, and the call would be ambiguous).
#[allow(dead_code, reason = "compile-time assertions only")]
mod assert_not_send {
    trait AmbiguousIfSend<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    struct IsSend;
    impl<T: ?Sized + Send> AmbiguousIfSend<IsSend> for T {}

    fn per_core_types_are_not_send() {
        <crate::net::TcpStream as AmbiguousIfSend<_>>::check();
        <crate::net::TcpListener as AmbiguousIfSend<_>>::check();
        <crate::net::Incoming<crate::net::TcpStream> as AmbiguousIfSend<_>>::check();
        <crate::runtime::context::CoreContext as AmbiguousIfSend<_>>::check();
    }
}
