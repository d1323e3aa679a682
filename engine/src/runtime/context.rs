//! The state of the core running on this thread, reachable from anywhere on it.

use crate::sys::fd::{OwnedDesc, RawDesc};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Waker;
use std::time::Instant;

use async_task::Runnable;
use crossbeam_queue::{ArrayQueue, SegQueue};

use crate::buf::pool::Pool;
use crate::driver::{Doorbell, Driver};
use crate::runtime::RuntimeShared;
use crate::stats::{CoreStats, NetStats, Published};
use crate::task::Executor;
use crate::time::Timers;

/// Everything one core owns. Lives in an `Rc` on the core's thread; never crosses threads.
pub(crate) struct CoreContext {
    /// Unique per core instance in the process (wakers compare it with [`current_id`]).
    pub(crate) id: usize,
    /// Position in the runtime, `0..cores`.
    pub(crate) index: usize,
    // Declared before `pool`: the driver (and its ring) goes first, then the buffer memory.
    // INVARIANT: shared only with `driver::current` while the core runs, so this is the last
    // reference when the context drops.
    pub(crate) driver: Rc<RefCell<Driver>>,
    /// The core's receive buffers.
    pub(crate) pool: Rc<Pool>,
    /// Net-layer and timer counters.
    pub(crate) net: Cell<NetStats>,
    /// Where the counters are published for other threads.
    pub(crate) published: Arc<Published>,
    pub(crate) executor: Executor,
    pub(crate) timers: RefCell<Timers>,
    /// Wakers of expired timers, gathered each turn (kept to reuse its allocation).
    pub(crate) due: Cell<Vec<Waker>>,
    /// The clock, read once per loop turn.
    pub(crate) clock: Cell<Instant>,
    /// The part other threads may touch.
    pub(crate) shared: Arc<CoreShared>,
    pub(crate) runtime: Arc<RuntimeShared>,
    /// When this core saw the shutdown request, and the deadline for in-flight work.
    pub(crate) shutdown_deadline: Cell<Option<Instant>>,
    /// Tasks waiting for shutdown, one slot per live `ShutdownSignal` that has been polled.
    pub(crate) shutdown_waiters: RefCell<slab::Slab<Waker>>,
}

/// Closures sent by other cores (`spawn_on`), run on this core.
pub(crate) type Injected = Box<dyn FnOnce() + Send>;

/// The thread-safe part of a core: where remote wake-ups and cross-core work land.
pub(crate) struct CoreShared {
    remote: SegQueue<Runnable>,
    /// Bounded: a full queue is backpressure for `spawn_on`, never a silent drop.
    injected: ArrayQueue<Injected>,
    /// Set while the core is (about to be) blocked in the kernel.
    sleeping: AtomicBool,
    /// Ends the core's blocking wait.
    doorbell: Doorbell,
    /// A duplicate of the core's io_uring fd, so other io_uring cores can ring it with
    /// MSG_RING; it keeps the ring file alive as long as someone may still target it.
    ring_fd: OnceLock<OwnedDesc>,
}

impl CoreShared {
    pub(crate) fn new(doorbell: Doorbell, mailbox: usize) -> CoreShared {
        CoreShared {
            remote: SegQueue::new(),
            injected: ArrayQueue::new(mailbox.max(1)),
            sleeping: AtomicBool::new(false),
            doorbell,
            ring_fd: OnceLock::new(),
        }
    }

    /// Lets io_uring cores wake this one with MSG_RING.
    pub(crate) fn set_ring_fd(&self, fd: OwnedDesc) {
        let _ = self.ring_fd.set(fd);
    }

    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "used by the io_uring backend, which only Linux has"
        )
    )]
    pub(crate) fn ring_fd(&self) -> Option<RawDesc> {
        self.ring_fd.get().map(crate::sys::fd::raw_of)
    }

    /// Queues a task woken from another thread and wakes the core if it sleeps.
    pub(crate) fn push_remote(self: &Arc<Self>, runnable: Runnable) {
        self.remote.push(runnable);
        self.wake();
    }

    /// Queues a closure to run on this core; gives it back when the queue is full.
    pub(crate) fn inject(self: &Arc<Self>, f: Injected) -> Result<(), Injected> {
        self.injected.push(f)?;
        self.wake();
        Ok(())
    }

    pub(crate) fn pop_injected(&self) -> Option<Injected> {
        self.injected.pop()
    }

    /// Ends the core's blocking wait, if it is in one. From an io_uring core the doorbell is a
    /// MSG_RING, batched with that core's other SQEs; from anywhere else, the eventfd.
    pub(crate) fn wake(self: &Arc<Self>) {
        if self.sleeping.swap(false, Ordering::SeqCst) && !ring_via_current(self) {
            self.doorbell.ring();
        }
    }

    /// Wakes the core at once through its own doorbell, never through this thread's ring: a
    /// MSG_RING queued on the caller's ring goes out only at the caller's next submission,
    /// and a caller that then blocks (joining the woken core's thread, say) would wait for
    /// ever.
    pub(crate) fn wake_now(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.doorbell.ring();
        }
    }

    /// Wakes the core through its own doorbell (not MSG_RING).
    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "used by the io_uring backend, which only Linux has"
        )
    )]
    pub(crate) fn ring_doorbell(&self) {
        self.doorbell.ring();
    }

    /// Announces that the core is about to block; returns false if it must not: work arrived,
    /// or `must_stay_awake` (checked after the announcement, so a thread that changes what it
    /// checks and then wakes us cannot slip in between) says so.
    pub(crate) fn prepare_sleep(&self, must_stay_awake: impl Fn() -> bool) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if !self.remote.is_empty() || !self.injected.is_empty() || must_stay_awake() {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    pub(crate) fn pop_remote(&self) -> Option<Runnable> {
        self.remote.pop()
    }
}

/// Rings `target` with MSG_RING from the current core's ring, if this thread is an io_uring
/// core that can do so right now.
fn ring_via_current(target: &Arc<CoreShared>) -> bool {
    if target.ring_fd.get().is_none() {
        return false;
    }
    crate::driver::current::try_with(|driver| match driver {
        Driver::Uring(d) => d.ring_doorbell(Arc::clone(target)),
        Driver::Compat(_) => false,
    })
    .unwrap_or(false)
}

static NEXT_CORE_ID: AtomicUsize = AtomicUsize::new(1);

pub(crate) fn next_core_id() -> usize {
    NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<CoreContext>>> = const { RefCell::new(None) };
    static CURRENT_ID: Cell<usize> = const { Cell::new(0) };
}

/// The id of the core on this thread, 0 if none.
pub(crate) fn current_id() -> usize {
    CURRENT_ID.try_with(Cell::get).unwrap_or(0)
}

/// Makes `ctx` this thread's core until the guard drops.
pub(crate) fn enter(ctx: Rc<CoreContext>) -> EnterGuard {
    CURRENT_ID.with(|id| id.set(ctx.id));
    CURRENT.with(|c| {
        let prev = c.borrow_mut().replace(ctx);
        assert!(
            prev.is_none(),
            "a coring core is already running on this thread"
        );
    });
    EnterGuard
}

pub(crate) struct EnterGuard;

impl Drop for EnterGuard {
    fn drop(&mut self) {
        CURRENT_ID.with(|id| id.set(0));
        let ctx = CURRENT.with(|c| c.borrow_mut().take());
        drop(ctx);
    }
}

/// Runs `f` with this thread's core.
///
/// # Panics
///
/// Panics off a coring core.
pub(crate) fn with_current<R>(f: impl FnOnce(&CoreContext) -> R) -> R {
    CURRENT.with(|c| {
        let borrowed = c.borrow();
        let ctx = borrowed
            .as_ref()
            .expect("this must be called on a coring core (inside Runtime::run or block_on)");
        f(ctx)
    })
}

/// Runs `f` with this thread's core, if there is one and it is not being torn down.
pub(crate) fn try_with_current<R>(f: impl FnOnce(&CoreContext) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| {
            let borrowed = c.try_borrow().ok()?;
            borrowed.as_deref().map(f)
        })
        .ok()
        .flatten()
}

impl CoreContext {
    /// Everything this core counts, now.
    pub(crate) fn snapshot(&self) -> CoreStats {
        let driver = self.driver.borrow();
        let mut d = driver.stats().clone();
        d.in_flight = driver.in_flight() as u64;
        d.tasks = self.executor.live() as u64;
        CoreStats {
            core: self.index,
            driver: d,
            pool: self.pool.stats(),
            net: self.net.get(),
        }
    }
}

/// Updates the current core's net counters (no-op off a core).
pub(crate) fn count(f: impl FnOnce(&mut NetStats)) {
    try_with_current(|ctx| {
        let mut n = ctx.net.get();
        f(&mut n);
        ctx.net.set(n);
    });
}
