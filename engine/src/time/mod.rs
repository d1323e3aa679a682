//! Time on a core: a clock read once per loop turn, sleeps, timeouts and fixed-rate intervals.
//!
//! [`now`] costs no syscall: the core reads the clock once per loop turn and every task sees
//! that reading. Deadlines are absolute [`Instant`]s; the core's wait in the kernel ends at the
//! earliest one.

mod interval;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use interval::{Interval, MissedTicks, Tick, interval, interval_at};

use slab::Slab;

use crate::error::{Error, ErrorKind};
use crate::runtime::context;
use crate::task::coop;

/// The current core's clock, as read at the start of this loop turn.
///
/// # Panics
///
/// Panics off a coring core.
pub fn now() -> Instant {
    context::with_current(|ctx| ctx.clock.get())
}

/// Waits until `duration` has passed.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(now() + duration)
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
    }
}

/// Runs `future` with a time limit: its output, or [`Elapsed`] once `duration` has passed (the
/// future is then dropped, which cancels whatever it was doing).
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    timeout_at(now() + duration, future)
}

/// Like [`timeout`], with an absolute deadline.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}

/// Future of [`sleep`] and [`sleep_until`].
pub struct Sleep {
    deadline: Instant,
    /// The timer entry while registered.
    entry: Option<TimerKey>,
}

impl Sleep {
    /// When it fires.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (re-arms a finished sleep too).
    pub fn reset(&mut self, deadline: Instant) {
        self.unregister();
        self.deadline = deadline;
    }

    /// Keeps the deadline armed but lets go of the waker of the task that last polled it, so
    /// that a timer kept between uses (a stream's write timer) keeps no finished task alive.
    /// The next poll registers its task again.
    pub(crate) fn release_waker(&mut self) {
        if let Some(key) = self.entry {
            let _ = context::try_with_current(|ctx| {
                ctx.timers.borrow_mut().update(key, Waker::noop());
            });
        }
    }

    fn unregister(&mut self) {
        if let Some(key) = self.entry.take() {
            context::try_with_current(|ctx| ctx.timers.borrow_mut().remove(key));
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if coop::poll_proceed(cx).is_pending() {
            return Poll::Pending;
        }
        context::with_current(|ctx| {
            if ctx.clock.get() >= this.deadline {
                if let Some(key) = this.entry.take() {
                    ctx.timers.borrow_mut().remove(key);
                }
                return Poll::Ready(());
            }
            let mut timers = ctx.timers.borrow_mut();
            match this.entry {
                Some(key) => timers.update(key, cx.waker()),
                None => this.entry = Some(timers.insert(this.deadline, cx.waker().clone())),
            }
            Poll::Pending
        })
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// The deadline of a [`timeout`] passed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for Error {
    fn from(_: Elapsed) -> Error {
        Error::new(ErrorKind::TimedOut, "timeout")
    }
}

impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, Elapsed(()))
    }
}

/// Future of [`timeout`].
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned (never moved out of `self`); `sleep` is
        // `Unpin` and only reached through `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(out) = future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => {
                context::count(|n| n.timeouts += 1);
                Poll::Ready(Err(Elapsed(())))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("sleep", &self.sleep)
            .finish()
    }
}

/// Identifies a registered timer: its slot and the sequence number it was given (a reused
/// slot has another).
type TimerKey = (usize, u64);

/// The timers of one core: a min-heap of deadlines over a slab of wakers. Removing a timer
/// frees its slot at once and leaves its heap entry stale; stale entries are skipped when they
/// reach the top, and the heap is rebuilt when they outnumber the live ones, so memory follows
/// live timers. In steady state nothing is allocated.
#[derive(Default)]
pub(crate) struct Timers {
    slots: Slab<Slot>,
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    seq: u64,
}

struct Slot {
    deadline: Instant,
    seq: u64,
    waker: Waker,
}

impl Timers {
    fn insert(&mut self, deadline: Instant, waker: Waker) -> TimerKey {
        self.seq += 1;
        let seq = self.seq;
        let key = self.slots.insert(Slot {
            deadline,
            seq,
            waker,
        });
        self.heap.push(Reverse((deadline, seq, key)));
        (key, seq)
    }

    fn update(&mut self, (key, seq): TimerKey, waker: &Waker) {
        if let Some(slot) = self.slots.get_mut(key)
            && slot.seq == seq
            && !slot.waker.will_wake(waker)
        {
            slot.waker.clone_from(waker);
        }
    }

    fn remove(&mut self, (key, seq): TimerKey) {
        if self.slots.get(key).is_some_and(|s| s.seq == seq) {
            self.slots.remove(key);
            if self.heap.len() > 2 * self.slots.len() + 64 {
                self.rebuild();
            }
        }
    }

    fn rebuild(&mut self) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(
            self.slots
                .iter()
                .map(|(key, s)| Reverse((s.deadline, s.seq, key))),
        );
        self.heap = BinaryHeap::from(entries);
    }

    fn is_live(&self, seq: u64, key: usize) -> bool {
        self.slots.get(key).is_some_and(|s| s.seq == seq)
    }

    /// The earliest live deadline (stale entries on top are dropped on the way).
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, seq, key))) = self.heap.peek().copied() {
            if self.is_live(seq, key) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Moves the wakers of every timer due at `now` into `due`. Their `Sleep`s see the
    /// deadline passed when polled and finish.
    pub(crate) fn expired(&mut self, now: Instant, due: &mut Vec<Waker>) {
        while let Some(Reverse((deadline, seq, key))) = self.heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if self.is_live(seq, key) {
                due.push(self.slots.remove(key).waker);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_timers_do_not_pile_up_and_order_holds() {
        let mut t = Timers::default();
        let base = Instant::now();
        let keep = t.insert(base + Duration::from_secs(60), Waker::noop().clone());
        for i in 0..100_000u64 {
            // A per-request timeout armed and cancelled, as a server does.
            let k = t.insert(
                base + Duration::from_secs(30 + i % 7),
                Waker::noop().clone(),
            );
            t.remove(k);
            assert!(
                t.heap.len() <= 2 * t.slots.len() + 65,
                "heap {}",
                t.heap.len()
            );
        }
        assert_eq!(t.next_deadline(), Some(base + Duration::from_secs(60)));
        let early = t.insert(base + Duration::from_secs(1), Waker::noop().clone());
        assert_eq!(t.next_deadline(), Some(base + Duration::from_secs(1)));
        let mut due = Vec::new();
        t.expired(base + Duration::from_secs(2), &mut due);
        assert_eq!(due.len(), 1);
        t.remove(early); // already fired: a no-op
        t.remove(keep);
        assert_eq!(t.next_deadline(), None);
    }
}
