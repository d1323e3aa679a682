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

use crate::driver::{Driver, OpCode, Orphan};
use crate::error::{Error, ErrorKind, Result};
use crate::task::coop;
use crate::time::Sleep;

/// One completion: the kernel's result (`>= 0`, or `-errno`) and its flags.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CqeResult {
    pub(crate) res: i32,
    pub(crate) flags: u32,
}

impl CqeResult {
    /// Whether more completions follow (multishot ops).
    pub(crate) fn more(self) -> bool {
        super::more(self.flags)
    }

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
#[cfg_attr(
    not(target_os = "linux"),
    allow(
        dead_code,
        reason = "used by the io_uring backend, which only Linux has"
    )
)]
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
        queue: Completions,
        /// How many queued completions hold a pooled buffer.
        buffers: u16,
        /// The driver cancelled it because `buffers` reached its limit (the io_uring
        /// driver's `MULTISHOT_QUEUED_BUFFERS`).
        paused: bool,
    },
}

/// A multishot op's completions not yet taken, oldest first. Usually there is at most one (the
/// task takes each as it comes), so the first waits in place: an op that is idle, or takes its
/// completions one by one, allocates nothing for them, and the driver's slot stays small.
#[derive(Debug, Default)]
pub(crate) struct Completions {
    /// The oldest, when `rest` is empty or holds only newer ones.
    first: Option<CqeResult>,
    /// The others, once more than one had to wait (kept for the op's life). Boxed on purpose:
    /// every op's driver slot holds this, and a box is a third of an empty deque.
    #[allow(
        clippy::box_collection,
        reason = "one word in every driver slot instead of four"
    )]
    rest: Option<Box<VecDeque<CqeResult>>>,
}

#[cfg_attr(
    not(target_os = "linux"),
    allow(
        dead_code,
        reason = "used by the io_uring backend, which only Linux has"
    )
)]
impl Completions {
    pub(crate) fn push_back(&mut self, cqe: CqeResult) {
        let waiting = self.rest.as_ref().is_some_and(|r| !r.is_empty());
        if self.first.is_none() && !waiting {
            self.first = Some(cqe);
        } else {
            self.rest.get_or_insert_default().push_back(cqe);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<CqeResult> {
        self.first
            .take()
            .or_else(|| self.rest.as_mut().and_then(|r| r.pop_front()))
    }

    /// Takes them all, oldest first.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = CqeResult> + '_ {
        let rest = self.rest.as_mut().map(|r| r.drain(..));
        self.first
            .take()
            .into_iter()
            .chain(rest.into_iter().flatten())
    }
}

/// Memory of an op whose future was dropped, parked in the driver.
struct Parked<T> {
    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "used by the io_uring backend, which only Linux has"
        )
    )]
    op: T,
}

impl<T: OpCode> Orphan for Parked<T> {
    fn complete(&mut self, res: i32, flags: u32) {
        self.op.complete_orphan(res, flags);
    }
}

/// The output of a finished op: its result and the op back (with its buffer).
pub(crate) struct Completion<T> {
    pub(crate) result: Result<u32>,
    pub(crate) op: T,
}

/// How an op in flight runs.
enum Mode {
    /// Queued on the ring under this slab key. `timer` enforces the deadline: armed once the
    /// op has to wait, and when it fires the op is cancelled in the kernel.
    Uring { key: usize, timer: Option<Sleep> },
    /// Readiness mode: the op tries its syscall when polled; `timer` enforces the deadline.
    Ready { timer: Option<Sleep> },
    /// Finished (its output was taken).
    Done,
}

/// A single-shot operation in flight; await it for its [`Completion`].
pub(crate) struct Op<T: OpCode> {
    mode: Mode,
    op: Option<T>,
    /// The deadline passed and the op was cancelled for it: ECANCELED means TimedOut.
    timed_out: bool,
}

impl<T: OpCode> Op<T> {
    /// Queues `op` on the current core.
    pub(crate) fn submit(op: T) -> Op<T> {
        Self::submit_with_timeout(op, None)
    }

    /// Queues `op`; with `timeout`, the op is cancelled when the time passes and it completes
    /// with [`ErrorKind::TimedOut`].
    ///
    /// The deadline is a core timer on both drivers, armed only once the op has to wait: an op
    /// that completes at once (most writes) never touches a timer, and on io_uring no
    /// LINK_TIMEOUT rides along with every op (it cost a kernel timer, a second completion and
    /// ~160 instructions in user space per write). When the timer fires first, io_uring is asked
    /// to cancel the op.
    pub(crate) fn submit_with_timeout(mut op: T, timeout: Option<Duration>) -> Op<T> {
        let timer = timeout.map(crate::time::sleep);
        let mode = super::current::with(|d| match d {
            Driver::Uring(d) => Mode::Uring {
                key: d.submit(&mut op, false),
                timer,
            },
            Driver::Compat(_) => Mode::Ready { timer },
        });
        Op {
            mode,
            op: Some(op),
            timed_out: false,
        }
    }

    /// The caller's own deadline for this op passed (a timer it keeps itself): cancel the op;
    /// it completes with [`ErrorKind::TimedOut`] unless it finished first. The caller keeps
    /// polling for that completion.
    pub(crate) fn cancel_for_deadline(&mut self, cx: &mut Context<'_>) {
        if self.timed_out {
            return;
        }
        self.timed_out = true;
        match &mut self.mode {
            Mode::Uring { key, .. } => {
                let key = *key;
                super::current::with(|d| d.uring().cancel_op(key));
            }
            // Nothing is in the kernel: the next poll reports the timeout.
            Mode::Ready { .. } => cx.waker().wake_by_ref(),
            Mode::Done => {}
        }
    }

    fn finish(&mut self, cqe: CqeResult) -> Completion<T> {
        self.mode = Mode::Done;
        let mut result = cqe.result(T::NAME);
        if let Err(e) = &mut result
            && self.timed_out
            && e.raw_os_error() == Some(libc::ECANCELED)
        {
            *e = e.with_kind(ErrorKind::TimedOut);
        }
        let op = self.op.take().expect("op data present until completion");
        Completion { result, op }
    }
}

// The op is never pinned in place: the memory the kernel sees is on the heap (INVARIANT in
// `op/mod.rs`), so moving an `Op` is fine whatever `T` is.
impl<T: OpCode> Unpin for Op<T> {}

impl<T: OpCode> Future for Op<T> {
    type Output = Completion<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion<T>> {
        let this = self.get_mut();
        if coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        let cqe = match &mut this.mode {
            Mode::Uring { key, timer } => {
                let key = *key;
                match super::current::with(|d| d.uring().poll_op(key, cx)) {
                    Poll::Ready(cqe) => cqe,
                    Poll::Pending => {
                        if !this.timed_out
                            && timer
                                .as_mut()
                                .is_some_and(|t| Pin::new(t).poll(cx).is_ready())
                        {
                            // The completion (ECANCELED, or the result if the op won the race)
                            // wakes this task again.
                            this.timed_out = true;
                            *timer = None;
                            super::current::with(|d| d.uring().cancel_op(key));
                        }
                        return Poll::Pending;
                    }
                }
            }
            Mode::Ready { timer } => {
                let op = this.op.as_mut().expect("op data present until completion");
                let cancelled = CqeResult {
                    res: -libc::ECANCELED,
                    flags: 0,
                };
                match if this.timed_out {
                    Poll::Ready(cancelled)
                } else {
                    poll_ready(op, cx)
                } {
                    Poll::Ready(cqe) => cqe,
                    Poll::Pending => {
                        let expired = timer
                            .as_mut()
                            .is_some_and(|t| Pin::new(t).poll(cx).is_ready());
                        if !expired {
                            return Poll::Pending;
                        }
                        this.timed_out = true;
                        CqeResult {
                            res: -libc::ECANCELED,
                            flags: 0,
                        }
                    }
                }
            }
            Mode::Done => panic!("coring op polled after completion"),
        };
        Poll::Ready(this.finish(cqe))
    }
}

impl<T: OpCode> Drop for Op<T> {
    fn drop(&mut self) {
        let Mode::Uring { key, .. } = std::mem::replace(&mut self.mode, Mode::Done) else {
            // Readiness mode: nothing of ours is in the kernel.
            return;
        };
        let Some(op) = self.op.take() else { return };
        let parked = Box::new(Parked { op });
        park(key, parked);
    }
}

/// Readiness mode: try the syscall; on `WouldBlock`, wait for the descriptor.
fn poll_ready<T: OpCode>(op: &mut T, cx: &mut Context<'_>) -> Poll<CqeResult> {
    loop {
        match op.perform() {
            Ok(n) => {
                return Poll::Ready(CqeResult {
                    res: i32::try_from(n).unwrap_or(i32::MAX),
                    flags: op.result_flags(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let (fd, interest) = op.readiness();
                super::current::with(|d| d.compat().register(fd, interest, cx.waker()));
                return Poll::Pending;
            }
            Err(e) => {
                return Poll::Ready(CqeResult {
                    res: -e.raw_os_error().unwrap_or(libc::EIO),
                    flags: 0,
                });
            }
        }
    }
}

/// Readiness mode for a call that has no io_uring counterpart (sendfile on the compat driver):
/// tries `f`, and while it would block waits for `interest` on `fd`.
pub(crate) async fn when_ready<R>(
    fd: crate::sys::fd::RawDesc,
    interest: crate::driver::compat::op::Interest,
    mut f: impl FnMut() -> std::io::Result<R>,
) -> std::io::Result<R> {
    std::future::poll_fn(|cx| {
        if coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        loop {
            match f() {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    super::current::with(|d| d.compat().register(fd, interest, cx.waker()));
                    return Poll::Pending;
                }
                other => return Poll::Ready(other),
            }
        }
    })
    .await
}

/// A multishot operation: yields completions until the kernel ends it. In readiness mode it
/// is emulated by repeating the single-shot syscall while the descriptor is ready.
pub(crate) struct MultiOp<T: OpCode> {
    /// `Some(key)` on io_uring until the final completion was taken; `None` in readiness mode.
    key: Option<usize>,
    ready_mode: bool,
    finished: bool,
    op: Option<T>,
}

impl<T: OpCode> MultiOp<T> {
    pub(crate) fn submit(mut op: T) -> MultiOp<T> {
        let key = super::current::with(|d| match d {
            Driver::Uring(d) => Some(d.submit(&mut op, true)),
            Driver::Compat(_) => None,
        });
        MultiOp {
            ready_mode: key.is_none(),
            key,
            finished: false,
            op: Some(op),
        }
    }

    /// Asks the op to end: on io_uring the kernel is told to cancel it, and the completions
    /// it posted meanwhile are still delivered, then `None`; in readiness mode it ends at once
    /// (nothing is in the kernel).
    pub(crate) fn stop(&mut self) {
        if self.finished {
            return;
        }
        match self.key {
            Some(key) => super::current::with(|d| d.uring().cancel_multi(key)),
            None => self.finished = true,
        }
    }

    /// Whether the op has ended (its final completion was taken); re-arm with a new one.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next completion; `None` after the op ended.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<CqeResult>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        if self.ready_mode {
            let op = self.op.as_mut().expect("op data present while armed");
            return poll_ready(op, cx).map(|mut cqe| {
                cqe.flags |= super::CQE_F_MORE;
                Some(cqe)
            });
        }
        let key = self.key.expect("armed multishot op has a key");
        match super::current::with(|d| d.uring().poll_multi(key, cx)) {
            Poll::Ready(cqe) => {
                if !cqe.more() {
                    self.key = None;
                    self.finished = true;
                }
                Poll::Ready(Some(cqe))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: OpCode> MultiOp<T> {
    /// Polls the multishot op in `slot`, arming one with `make` when there is none and
    /// re-arming when the kernel ends it; `slot` is emptied after the op's final completion.
    pub(crate) fn poll_rearming(
        slot: &mut Option<MultiOp<T>>,
        make: impl Fn() -> T,
        cx: &mut Context<'_>,
    ) -> Poll<CqeResult> {
        loop {
            let op = slot.get_or_insert_with(|| MultiOp::submit(make()));
            match op.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => *slot = None,
                Poll::Ready(Some(cqe)) => {
                    if op.is_finished() {
                        *slot = None;
                    }
                    return Poll::Ready(cqe);
                }
            }
        }
    }
}

impl<T: OpCode> Drop for MultiOp<T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let Some(op) = self.op.take() else { return };
        park(key, Box::new(Parked { op }));
    }
}

/// Hands a dropped op to the driver. Off a core (a thread-local being torn down), the driver is
/// unreachable; the memory is leaked on purpose, since the kernel may still write into it.
fn park(key: usize, parked: Box<dyn Orphan>) {
    let mut parked = Some(parked);
    super::current::try_with(|d| {
        if let Some(parked) = parked.take() {
            d.uring().drop_op(key, parked);
        }
    });
    if let Some(parked) = parked {
        std::mem::forget(parked);
    }
}

#[cfg(test)]
mod tests {
    use super::{Completions, CqeResult};

    fn cqe(res: i32) -> CqeResult {
        CqeResult { res, flags: 0 }
    }

    #[test]
    fn completions_come_out_in_arrival_order() {
        let mut q = Completions::default();
        assert!(q.pop_front().is_none());
        q.push_back(cqe(1));
        assert_eq!(q.pop_front().map(|c| c.res), Some(1));
        for res in 2..=5 {
            q.push_back(cqe(res));
        }
        assert_eq!(q.pop_front().map(|c| c.res), Some(2));
        // The first slot is free again while older ones wait behind it: a new one queues last.
        q.push_back(cqe(6));
        let rest: Vec<i32> = std::iter::from_fn(|| q.pop_front())
            .map(|c| c.res)
            .collect();
        assert_eq!(rest, [3, 4, 5, 6]);
        q.push_back(cqe(7));
        q.push_back(cqe(8));
        let drained: Vec<i32> = q.drain().map(|c| c.res).collect();
        assert_eq!(drained, [7, 8]);
        assert!(q.pop_front().is_none());
    }
}
