//! Cooperative budget: a task that keeps finding work ready yields now and then, so one busy
//! task cannot keep the core from collecting I/O completions and running timers.
//!
//! The executor grants [`BUDGET`] units before each task poll; engine futures that could be
//! ready again and again (op results, expired timers, finished joins) spend one unit each when
//! polled, and once the budget is gone they return `Pending` after waking their task, which puts
//! it at the back of the run queue.

use std::cell::Cell;
use std::task::{Context, Poll};

/// Units a task may spend in one poll before it is made to yield.
pub const BUDGET: u32 = 128;

thread_local! {
    static REMAINING: Cell<u32> = const { Cell::new(BUDGET) };
}

/// Gives the current task a fresh budget (the executor calls this before each poll).
pub(crate) fn reset() {
    REMAINING.with(|r| r.set(BUDGET));
}

/// Whether the current task has budget left.
pub(crate) fn has_budget() -> bool {
    REMAINING.with(|r| r.get() > 0)
}

/// Spends one unit; when none are left, wakes the task and returns `Pending`.
pub(crate) fn poll_proceed(cx: &mut Context<'_>) -> Poll<()> {
    REMAINING.with(|r| {
        let left = r.get();
        if left == 0 {
            cx.waker().wake_by_ref();
            Poll::Pending
        } else {
            r.set(left - 1);
            Poll::Ready(())
        }
    })
}

/// Spends one unit of the task's budget, yielding to the core when it runs out. Call it in
/// loops that may never otherwise wait (draining an always-full channel, say).
pub async fn consume_budget() {
    std::future::poll_fn(poll_proceed).await
}
