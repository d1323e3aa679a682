//! The loop each core runs: tasks, then one driver turn, then timers, until it may stop.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::runtime::context::{self, CoreContext};
use crate::task::{JoinError, JoinHandle, spawn_local};

/// Tasks run per turn before the driver is turned again, so completions keep flowing while
/// many tasks are ready.
const TASKS_PER_TURN: usize = 256;

/// How stale a busy core's published counters may get.
const PUBLISH_EVERY: Duration = Duration::from_millis(1);

/// When a core stops.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exit {
    /// As soon as the root future is done (`block_on`): remaining tasks are cancelled.
    RootDone,
    /// When the root is done and no task is left, or when a shutdown's grace period ends
    /// (`Runtime::run`).
    Drained,
}

/// Runs `root` on the core `ctx` until `exit` says stop; returns the root's output if it
/// finished.
pub(crate) fn run<F>(ctx: Rc<CoreContext>, root: F, exit: Exit) -> Result<F::Output, JoinError>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let _guard = context::enter(Rc::clone(&ctx));
    // Dropped before `_guard` (and so before `ctx` lets go of the driver): the core's driver
    // goes before its pool.
    let _driver = crate::driver::current::enter(Rc::clone(&ctx.driver));
    ctx.clock.set(Instant::now());
    let mut root = spawn_local(root).cancel_on_drop();
    let mut output = None;
    let mut last_publish = ctx.clock.get();

    loop {
        ctx.executor.run(TASKS_PER_TURN);
        // Ops the tasks just dropped after the kernel was done with them wait here, not until
        // the next turn ends: that turn may sleep without end, and a parked op keeps its socket
        // open (a connection closed by its write timeout stayed open until other work arrived).
        bury(&ctx);
        // Buffers shared as `Bytes` and let go on other threads come back.
        ctx.pool.collect_returned();

        if output.is_none() && root.is_finished() {
            output = Some(take_output(&mut root));
            if let Exit::Drained = exit {
                ctx.runtime.root_done();
            }
        }
        let now = ctx.clock.get();
        let shutdown_unseen = observe_shutdown(&ctx, now);
        let past_grace = ctx.shutdown_deadline.get().is_some_and(|d| now >= d);
        let stop = match exit {
            Exit::RootDone => output.is_some(),
            Exit::Drained => {
                (output.is_some() && ctx.executor.live() == 0 && ctx.runtime.all_roots_done())
                    || past_grace
            }
        };
        if stop {
            if past_grace && ctx.executor.live() > 0 {
                tracing::warn!(
                    core = ctx.index,
                    tasks = ctx.executor.live(),
                    "shutdown grace over: cancelling the tasks still running"
                );
            }
            break;
        }

        let timeout = if ctx.executor.has_ready() || shutdown_unseen {
            Some(Duration::ZERO)
        } else {
            let timer = ctx.timers.borrow_mut().next_deadline();
            let grace = ctx.shutdown_deadline.get();
            let deadline = match (timer, grace) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            deadline.map(|d| d.saturating_duration_since(now))
        };
        // Published before the core may sleep, so readers see everything done so far, and
        // at most every PUBLISH_EVERY while it is busy (not on every turn of a busy loop).
        if timeout != Some(Duration::ZERO) || now >= last_publish + PUBLISH_EVERY {
            ctx.published.publish(ctx.snapshot());
            last_publish = now;
        }
        let root_done = output.is_some();
        // Checked after the core says it sleeps: work another thread queued before it could
        // see that (and so did not ring) keeps it awake.
        let must_stay_awake = || {
            shutdown_unseen
                || (ctx.shutdown_deadline.get().is_none() && ctx.runtime.shutdown_requested())
                || (root_done && ctx.runtime.all_roots_done())
                || ctx.pool.has_returned()
        };
        ctx.driver
            .borrow_mut()
            .turn(timeout, &|| ctx.shared.prepare_sleep(must_stay_awake));
        ctx.shared.awake();
        after_turn(&ctx);
    }

    if output.is_none() {
        if root.is_finished() {
            output = Some(take_output(&mut root));
        }
        if let Exit::Drained = exit {
            ctx.runtime.root_done();
        }
    }
    drop(root);
    close(&ctx);
    ctx.published.publish(ctx.snapshot());
    output.unwrap_or(Err(JoinError::Cancelled))
}

/// Clock, timers and remote wake-ups, after each driver turn.
fn after_turn(ctx: &CoreContext) {
    let now = Instant::now();
    ctx.clock.set(now);
    let mut due = ctx.due.take();
    ctx.timers.borrow_mut().expired(now, &mut due);
    for waker in due.drain(..) {
        waker.wake();
    }
    ctx.due.set(due);
    while let Some(runnable) = ctx.shared.pop_remote() {
        ctx.executor.push(runnable);
    }
    // Work sent by other cores: each closure spawns its task here.
    while let Some(injected) = ctx.shared.pop_injected() {
        injected();
    }
}

/// Frees the ops the kernel has let go of. Never inside a driver call: what they own (a
/// descriptor's last handle, pooled buffers) reaches back into the driver when dropped.
fn bury(ctx: &CoreContext) {
    let graveyard = ctx.driver.borrow_mut().take_graveyard();
    drop(graveyard);
}

/// Notices a shutdown request once: fixes the grace deadline and wakes the waiters. Returns
/// whether a request is pending that this core had not seen before this call.
fn observe_shutdown(ctx: &CoreContext, now: Instant) -> bool {
    if ctx.shutdown_deadline.get().is_some() || !ctx.runtime.shutdown_requested() {
        return false;
    }
    ctx.shutdown_deadline.set(Some(now + ctx.runtime.grace));
    let waiters: Vec<Waker> = ctx.shutdown_waiters.borrow_mut().drain().collect();
    for w in waiters {
        w.wake();
    }
    true
}

/// Stops the core: cancels every task on this thread, then lets the driver retire what the
/// kernel still holds (the driver's own drop waits for the last completions).
fn close(ctx: &CoreContext) {
    ctx.executor.close();
    bury(ctx);
}

fn take_output<T>(root: &mut JoinHandle<T>) -> Result<T, JoinError> {
    crate::task::coop::reset();
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(root).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => Err(JoinError::Cancelled),
    }
}
