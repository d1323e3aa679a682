//! The per-core executor: local tasks, join handles, cooperative budget.
//!
//! Tasks spawned with [`spawn_local`] live on the core that spawned them and never move, so
//! their futures need not be `Send`. A task woken from its own core goes on the local run queue;
//! woken from another thread, it goes through the core's remote queue and the core is woken if
//! it sleeps. Every live task is tracked so that a core that stops can drop each remaining
//! future on its own thread instead of leaking it.

pub mod coop;
mod join;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use async_task::Runnable;
use slab::Slab;

pub use coop::consume_budget;
pub use join::{JoinError, JoinHandle, panic_message};

use crate::runtime::context::{self, CoreShared};

/// Spawns a task on the current core. The future may hold `!Send` state; it runs only here.
///
/// # Panics
///
/// Panics when called outside a coring core.
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    context::with_current(|ctx| ctx.executor.spawn(future, ctx.id, &ctx.shared))
}

/// Runs `futures` together in the task that awaits this, until every one is done. One
/// allocation for them all, where a task each would cost an allocation, a schedule and a waker
/// apiece: the shape of a fan-out (one frame written to thousands of sockets). Each wake of the
/// task polls the futures not yet done, round the ring from where the last poll stopped, and
/// yields once the task's cooperative budget is spent; best for many short futures.
pub async fn join_all<F: Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    let mut slots: Box<[Option<F>]> = futures.into_iter().map(Some).collect();
    let (mut left, mut cursor) = (slots.len(), 0);
    std::future::poll_fn(|cx| {
        let n = slots.len();
        for _ in 0..n {
            if left == 0 {
                break;
            }
            let i = cursor;
            let Some(future) = slots[i].as_mut() else {
                cursor = (i + 1) % n;
                continue;
            };
            if !coop::has_budget() {
                // Yield; this one is first when the task runs again.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // SAFETY: the futures live in a boxed slice that is never moved, resized or
            // reallocated while they are in it (only this closure touches it, in place), and
            // a finished one is dropped where it lies, so each stays pinned until dropped.
            let future = unsafe { Pin::new_unchecked(future) };
            if future.poll(cx).is_ready() {
                slots[i] = None;
                left -= 1;
            }
            cursor = (i + 1) % n;
        }
        if left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Yields once: the task goes to the back of the run queue, after pending I/O is collected.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// The run queue and the register of live tasks of one core.
pub(crate) struct Executor {
    queue: RefCell<VecDeque<Runnable>>,
    /// One entry per live task: its waker once it has been polled.
    live: RefCell<Slab<Option<Waker>>>,
    /// Set when the core stops: every task's next poll drops its future.
    closing: Cell<bool>,
}

impl Executor {
    pub(crate) fn new() -> Executor {
        Executor {
            queue: RefCell::new(VecDeque::with_capacity(256)),
            live: RefCell::new(Slab::with_capacity(256)),
            closing: Cell::new(false),
        }
    }

    fn spawn<F>(&self, future: F, core_id: usize, shared: &Arc<CoreShared>) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let slot = self.live.borrow_mut().insert(None);
        let tracked = Tracked {
            future: Some(future),
            slot,
            polled: false,
        };
        let shared = Arc::clone(shared);
        let schedule = move |runnable: Runnable| {
            if context::current_id() == core_id {
                context::with_current(|ctx| ctx.executor.queue.borrow_mut().push_back(runnable));
            } else {
                shared.push_remote(runnable);
            }
        };
        let (runnable, task) = async_task::spawn_local(tracked, schedule);
        runnable.schedule();
        JoinHandle::new(task)
    }

    /// Runs the tasks queued now, at most `max`; returns how many ran. Tasks woken while these
    /// run (a task that yields, say) wait for the next turn, after the driver has collected
    /// completions and the clock has moved.
    pub(crate) fn run(&self, max: usize) -> usize {
        let max = max.min(self.queue.borrow().len());
        let mut ran = 0;
        while ran < max {
            let Some(runnable) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            coop::reset();
            runnable.run();
            ran += 1;
        }
        ran
    }

    pub(crate) fn push(&self, runnable: Runnable) {
        self.queue.borrow_mut().push_back(runnable);
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Live tasks, the root included.
    pub(crate) fn live(&self) -> usize {
        self.live.borrow().len()
    }

    /// Cancels every live task and runs each once so its future is dropped here, on its core.
    pub(crate) fn close(&self) {
        self.closing.set(true);
        let wakers: Vec<Waker> = self
            .live
            .borrow()
            .iter()
            .filter_map(|(_, w)| w.clone())
            .collect();
        for w in wakers {
            w.wake();
        }
        while self.run(usize::MAX) > 0 {}
    }
}

/// A spawned future plus its entry in the live register; catches panics so one task's panic
/// ends that task, not the core.
struct Tracked<F> {
    // INVARIANT: structurally pinned; only ever dropped in place via `Pin::set`.
    future: Option<F>,
    slot: usize,
    polled: bool,
}

impl<F: Future> Future for Tracked<F> {
    type Output = Result<F::Output, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned (never moved out; dropped in place with
        // `Pin::set`), and the other fields are plain data that is never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        if !this.polled {
            this.polled = true;
            let waker = cx.waker().clone();
            let slot = this.slot;
            context::with_current(|ctx| {
                if let Some(w) = ctx.executor.live.borrow_mut().get_mut(slot) {
                    *w = Some(waker);
                }
            });
        }
        // SAFETY: see above; this is the pinned projection of `future`.
        let mut future = unsafe { Pin::new_unchecked(&mut this.future) };
        if context::with_current(|ctx| ctx.executor.closing.get()) {
            future.set(None);
            return Poll::Ready(Err(JoinError::Cancelled));
        }
        let Some(inner) = future.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(JoinError::Cancelled));
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                future.set(None);
                Poll::Ready(Ok(out))
            }
            Err(payload) => {
                tracing::error!(
                    panic = join::panic_message(&*payload),
                    "task panicked; the core keeps running"
                );
                future.set(None);
                Poll::Ready(Err(JoinError::Panicked(payload)))
            }
        }
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        let slot = self.slot;
        context::try_with_current(|ctx| {
            // The waker is dropped after the borrow ends: dropping it may release a task.
            let waker = ctx.executor.live.borrow_mut().try_remove(slot);
            drop(waker);
        });
    }
}
