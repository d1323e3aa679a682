//! The driver contract: how an operation reaches the kernel and how its result comes back.
//!
//! An operation is a value (`op::Recv`, `op::Accept`, …) that owns everything the kernel may
//! touch. [`OpCode`] is what every operation provides, once per backend:
//!
//! - completion (`uring/op.rs`): the SQE that starts it; the CQE result comes back as-is;
//! - readiness (the compat driver, a later issue): which fd and interest to wait for and the
//!   non-blocking syscall to make when ready.
//!
//! [`Driver`] is the per-core engine behind those ops. Exactly one backend is chosen when a core
//! starts ([`probe`] decides, the builder or `CORING_DRIVER` can force it); everything above this
//! module — net, time, the executor — is written once against [`Op`] and [`MultiOp`].
//!
//! The lifecycle of one operation (see [`lifecycle`]): Submitted → Waiting(waker) →
//! Completed, or Ignored(owned memory parked) when its future is dropped before the kernel's
//! final completion; the memory is freed only after that completion arrives.

pub(crate) mod lifecycle;
pub mod probe;
pub(crate) mod uring;

use std::task::{Context, Poll};
use std::time::Duration;

pub(crate) use lifecycle::{CqeResult, MultiOp, Op};

use crate::error::Result;
use crate::runtime::RuntimeConfig;
use crate::stats::DriverStats;
use probe::Capabilities;
pub use probe::DriverKind;

/// What every operation provides: a name for errors, its completion-mode SQE, and what to do
/// with a completion that arrives after its future was dropped.
pub(crate) trait OpCode: uring::op::UringOp + 'static {
    /// The operation's name in errors (`"recv"`, `"accept"`).
    const NAME: &'static str;

    /// Called for each completion that arrives after the op's future was dropped, before the op
    /// is freed. Ops that produce resources (an accepted fd) release them here.
    fn complete_orphan(&mut self, _res: i32, _flags: u32) {}
}

/// A dropped operation whose memory waits for the kernel's last completion.
pub(crate) trait Orphan {
    fn complete(&mut self, res: i32, flags: u32);
}

/// The per-core driver. One backend per core, chosen at start.
pub(crate) struct Driver {
    backend: uring::UringDriver,
}

impl Driver {
    /// Builds the backend the capability report chose.
    /// `wake_fd` is an eventfd that remote threads write to end a blocking wait.
    pub(crate) fn new(
        config: &RuntimeConfig,
        caps: &Capabilities,
        wake_fd: std::os::fd::OwnedFd,
    ) -> Result<Driver> {
        match caps.driver {
            DriverKind::Uring => Ok(Driver {
                backend: uring::UringDriver::new(config, caps, wake_fd)?,
            }),
            DriverKind::Compat => Err(crate::Error::new(
                crate::ErrorKind::Unsupported,
                "compat driver (not built yet; io_uring is required)",
            )),
        }
    }

    pub(crate) fn kind(&self) -> DriverKind {
        DriverKind::Uring
    }

    /// Queues `op` (no syscall yet); its key identifies it until completion. With a deadline, the
    /// kernel cancels it when the deadline passes and the op completes with `TimedOut`.
    pub(crate) fn submit<T: OpCode>(
        &mut self,
        op: &mut T,
        deadline: Option<&lifecycle::Deadline>,
    ) -> usize {
        self.backend.submit(op, deadline, false)
    }

    /// Queues a multishot op: it completes many times until a completion without "more".
    pub(crate) fn submit_multi<T: OpCode>(&mut self, op: &mut T) -> usize {
        self.backend.submit(op, None, true)
    }

    pub(crate) fn poll_op(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<CqeResult> {
        self.backend.poll_op(key, cx)
    }

    pub(crate) fn poll_multi(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<CqeResult> {
        self.backend.poll_multi(key, cx)
    }

    /// The op's future is gone: cancel it in the kernel and park its memory until the last CQE.
    pub(crate) fn drop_op(&mut self, key: usize, orphan: Box<dyn Orphan>) {
        self.backend.drop_op(key, orphan)
    }

    /// Submits everything queued during this turn in one syscall, then waits for completions up
    /// to `timeout` (`Some(ZERO)`: do not wait; `None`: until something completes or a remote
    /// wake-up) and dispatches them.
    pub(crate) fn turn(&mut self, timeout: Option<Duration>, may_sleep: &dyn Fn() -> bool) {
        self.backend.turn(timeout, may_sleep)
    }

    /// Memory of dropped ops that the kernel has finished with; the caller drops it outside any
    /// driver borrow.
    pub(crate) fn take_graveyard(&mut self) -> Vec<Box<dyn Orphan>> {
        self.backend.take_graveyard()
    }

    /// Ops the kernel still owns (dropped ones included).
    pub(crate) fn in_flight(&self) -> usize {
        self.backend.in_flight()
    }

    pub(crate) fn stats(&self) -> &DriverStats {
        self.backend.stats()
    }
}
