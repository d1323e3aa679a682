//! The life of one operation, from submission to its last completion.
//!
//! ```text
//!   submit ──> Submitted ──poll──> Waiting(waker) ──CQE──> Completed ──poll──> (freed)
//!                  │                    │
//!                  └──── future dropped ┴──> Ignored(memory parked) ──last CQE──> (freed)
//! ```
//!
//! A multishot op stays in `Multi` and queues its completions until one arrives without the
//! "more" flag. Dropping its stream moves it to `Ignored` too; queued and later completions are
//! handed to the op's [`Orphan`] hook (which closes accepted descriptors) before it is freed.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::driver::{OpCode, Orphan};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::context;
use crate::task::coop;

/// One completion: the kernel's result (`>= 0`, or `-errno`) and its flags.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CqeResult {
    pub(crate) res: i32,
    pub(crate) flags: u32,
}

impl CqeResult {
    /// The result as the op's output count, or its error.
    pub(crate) fn result(self, op: &'static str) -> Result<u32> {
        if self.res >= 0 {
            Ok(self.res as u32)
        } else {
            Err(Error::from_os(-self.res, op))
        }
    }
}

/// A driver slot.
pub(crate) enum Lifecycle {
    /// Queued or in the kernel; nobody has polled it yet.
    Submitted,
    /// A task waits for the completion.
    Waiting(Waker),
    /// The completion arrived and waits to be polled.
    Completed(CqeResult),
    /// The future is gone; the op's memory stays here until its last completion.
    Ignored(Box<dyn Orphan>),
    /// A multishot op with the completions not yet taken.
    Multi {
        waker: Option<Waker>,
        queue: VecDeque<CqeResult>,
    },
}

/// A per-op deadline, enforced by the kernel with a linked timeout.
///
/// INVARIANT: `ts` is boxed so the address in the LINK_TIMEOUT SQE stays valid while the op
/// moves; the box lives with the op (or its orphan) until the op's last completion, which is
/// after the kernel has read it at submission.
pub(crate) struct Deadline {
    pub(crate) ts: Box<io_uring::types::Timespec>,
}

impl Deadline {
    pub(crate) fn after(dur: Duration) -> Deadline {
        Deadline {
            ts: Box::new(io_uring::types::Timespec::from(dur)),
        }
    }
}

/// Memory of an op whose future was dropped, parked in the driver.
struct Parked<T> {
    op: T,
    _deadline: Option<Deadline>,
}

impl<T: OpCode> Orphan for Parked<T> {
    fn complete(&mut self, res: i32, flags: u32) {
        self.op.complete_orphan(res, flags);
    }
}

/// The output of a finished op: its result, the CQE flags, and the op back (with its buffer).
pub(crate) struct Completion<T> {
    pub(crate) result: Result<u32>,
    #[allow(
        dead_code,
        reason = "read by ops that look at CQE flags (buffer ids, notif)"
    )]
    pub(crate) flags: u32,
    pub(crate) op: T,
}

/// A single-shot operation in flight; await it for its [`Completion`].
pub(crate) struct Op<T: OpCode> {
    /// `None` once completed.
    key: Option<usize>,
    op: Option<T>,
    deadline: Option<Deadline>,
}

impl<T: OpCode> Op<T> {
    /// Queues `op` on the current core.
    pub(crate) fn submit(op: T) -> Op<T> {
        Self::submit_with_timeout(op, None)
    }

    /// Queues `op`; with `timeout`, the kernel cancels it when the time passes and it completes
    /// with [`ErrorKind::TimedOut`].
    pub(crate) fn submit_with_timeout(mut op: T, timeout: Option<Duration>) -> Op<T> {
        let deadline = timeout.map(Deadline::after);
        let key = context::with_driver(|d| d.submit(&mut op, deadline.as_ref()));
        Op {
            key: Some(key),
            op: Some(op),
            deadline,
        }
    }
}

// The op is never pinned in place: the memory the kernel sees is on the heap (INVARIANT in
// `op/mod.rs`), so moving an `Op` is fine whatever `T` is.
impl<T: OpCode> Unpin for Op<T> {}

impl<T: OpCode> Future for Op<T> {
    type Output = Completion<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion<T>> {
        let this = self.get_mut();
        let Some(key) = this.key else {
            panic!("coring op polled after completion");
        };
        if coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        let cqe = match context::with_driver(|d| d.poll_op(key, cx)) {
            Poll::Ready(cqe) => cqe,
            Poll::Pending => return Poll::Pending,
        };
        this.key = None;
        let mut result = cqe.result(T::NAME);
        if let Err(e) = &mut result
            && this.deadline.is_some()
            && e.raw_os_error() == Some(libc::ECANCELED)
        {
            *e = e.with_kind(ErrorKind::TimedOut);
        }
        let op = this.op.take().expect("op data present until completion");
        Poll::Ready(Completion {
            result,
            flags: cqe.flags,
            op,
        })
    }
}

impl<T: OpCode> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let Some(op) = self.op.take() else { return };
        let parked = Box::new(Parked {
            op,
            _deadline: self.deadline.take(),
        });
        park(key, parked);
    }
}

/// A multishot operation: yields completions until the kernel ends it.
pub(crate) struct MultiOp<T: OpCode> {
    /// `None` once the final completion was taken.
    key: Option<usize>,
    op: Option<T>,
}

impl<T: OpCode> MultiOp<T> {
    pub(crate) fn submit(mut op: T) -> MultiOp<T> {
        let key = context::with_driver(|d| d.submit_multi(&mut op));
        MultiOp {
            key: Some(key),
            op: Some(op),
        }
    }

    /// Whether the kernel has ended the op (its final completion was taken).
    pub(crate) fn is_finished(&self) -> bool {
        self.key.is_none()
    }

    /// The next completion; `None` after the kernel ended the op (re-arm with a new one).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<CqeResult>> {
        let Some(key) = self.key else {
            return Poll::Ready(None);
        };
        if coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        match context::with_driver(|d| d.poll_multi(key, cx)) {
            Poll::Ready(cqe) => {
                if !io_uring::cqueue::more(cqe.flags) {
                    self.key = None;
                }
                Poll::Ready(Some(cqe))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: OpCode> Drop for MultiOp<T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let Some(op) = self.op.take() else { return };
        park(
            key,
            Box::new(Parked {
                op,
                _deadline: None,
            }),
        );
    }
}

/// Hands a dropped op to the driver. Off a core (a thread-local being torn down), the driver is
/// unreachable; the memory is leaked on purpose, since the kernel may still write into it.
fn park(key: usize, parked: Box<dyn Orphan>) {
    if let Err(parked) =
        context::try_with_driver(key, parked, |d, key, parked| d.drop_op(key, parked))
    {
        std::mem::forget(parked);
    }
}
