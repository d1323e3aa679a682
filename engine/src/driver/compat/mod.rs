//! Readiness backend (epoll on Linux, through `polling`): runs every op in readiness mode.
//!
//! An op first tries its non-blocking syscall right away (data is often already there); on
//! `WouldBlock` its task registers interest in the descriptor and sleeps until the reactor
//! reports readiness, then tries again. Nothing the kernel writes outlives a syscall, so a
//! dropped op needs no cancellation: its memory is free as soon as its future is gone.
//!
//! Registrations are one-shot: each readiness event disarms the descriptor, and it is re-armed
//! with whatever interest is still wanted.

pub(crate) mod op;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::task::Waker;
use std::time::Duration;

use polling::{Event, Events, Poller};

use crate::error::{Error, Result};
use crate::stats::DriverStats;
use op::Interest;

/// Event key of the wake-up eventfd (`usize::MAX` is reserved by `polling`; descriptors are
/// small non-negative numbers, so they never collide with it).
const WAKE_KEY: usize = usize::MAX - 1;

pub(crate) struct CompatDriver {
    poller: Poller,
    events: Events,
    fds: HashMap<RawFd, Waiters>,
    wake_fd: OwnedFd,
    stats: DriverStats,
}

/// Tasks waiting on one descriptor.
#[derive(Default)]
struct Waiters {
    read: Vec<Waker>,
    write: Vec<Waker>,
    /// Whether the descriptor is (believed to be) in the poller's set.
    added: bool,
}

impl CompatDriver {
    pub(crate) fn new(wake_fd: OwnedFd) -> Result<CompatDriver> {
        let poller = Poller::new().map_err(|e| Error::from_io(e, "epoll_create"))?;
        // SAFETY: the eventfd is owned by this driver and outlives its registration (the
        // poller is dropped first: field order).
        unsafe { poller.add(wake_fd.as_raw_fd(), Event::readable(WAKE_KEY)) }
            .map_err(|e| Error::from_io(e, "epoll_ctl"))?;
        Ok(CompatDriver {
            poller,
            events: Events::new(),
            fds: HashMap::new(),
            wake_fd,
            stats: DriverStats::default(),
        })
    }

    /// Wakes `waker` when `fd` becomes ready for `interest`.
    pub(crate) fn register(&mut self, fd: RawFd, interest: Interest, waker: &Waker) {
        let waiters = self.fds.entry(fd).or_default();
        let list = match interest {
            Interest::Read => &mut waiters.read,
            Interest::Write => &mut waiters.write,
        };
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
        self.stats.ops_submitted += 1;
        if let Err(e) = arm(&self.poller, fd, waiters) {
            // The fd cannot be watched (closed under us, or not pollable): wake the task so its
            // next attempt reports the real error instead of sleeping forever.
            tracing::debug!(fd, error = %e, "epoll_ctl failed; waking the waiter");
            for w in waiters.read.drain(..).chain(waiters.write.drain(..)) {
                w.wake();
            }
        }
    }

    /// Forgets a descriptor that is being closed.
    pub(crate) fn forget(&mut self, fd: RawFd) {
        if let Some(w) = self.fds.remove(&fd)
            && w.added
        {
            // SAFETY: `fd` is still open (the caller is about to close it).
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            // Closing removes it from epoll anyway; deleting first keeps other backends right.
            let _ = self.poller.delete(borrowed);
        }
    }

    pub(crate) fn stats(&self) -> &DriverStats {
        &self.stats
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.fds
            .values()
            .map(|w| w.read.len() + w.write.len())
            .sum()
    }

    /// Waits for readiness up to `timeout` and wakes the tasks concerned.
    pub(crate) fn turn(&mut self, timeout: Option<Duration>, may_sleep: &dyn Fn() -> bool) {
        let wait = timeout != Some(Duration::ZERO) && may_sleep();
        let timeout = if wait { timeout } else { Some(Duration::ZERO) };
        self.events.clear();
        self.stats.enters += 1;
        match self.poller.wait(&mut self.events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => panic!("epoll_wait failed unexpectedly: {e}"),
        }
        let mut woken = Vec::new();
        for ev in self.events.iter() {
            if ev.key == WAKE_KEY {
                drain_eventfd(&self.wake_fd);
                if let Err(e) = self.poller.modify(&self.wake_fd, Event::readable(WAKE_KEY)) {
                    panic!("re-arming the wake-up eventfd failed: {e}");
                }
                continue;
            }
            let fd = ev.key as RawFd;
            let Some(waiters) = self.fds.get_mut(&fd) else {
                continue;
            };
            self.stats.ops_completed += 1;
            // Errors and hang-ups come without a direction: wake everyone to find out.
            let both = !ev.readable && !ev.writable;
            if ev.readable || both {
                woken.append(&mut waiters.read);
            }
            if ev.writable || both {
                woken.append(&mut waiters.write);
            }
            if !waiters.read.is_empty() || !waiters.write.is_empty() {
                // One-shot: re-arm for what is still wanted.
                let _ = arm(&self.poller, fd, waiters);
            }
        }
        for w in woken {
            w.wake();
        }
    }
}

/// (Re-)arms `fd` with the interest its waiters want.
fn arm(poller: &Poller, fd: RawFd, waiters: &mut Waiters) -> io::Result<()> {
    let ev = Event::new(
        fd as usize,
        !waiters.read.is_empty(),
        !waiters.write.is_empty(),
    );
    // SAFETY: `fd` is open: a task holding it (through its op) is registering right now.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if waiters.added {
        match poller.modify(borrowed, ev) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
    }
    // SAFETY: the descriptor stays open until the net layer closes it, which calls `forget`
    // first (and epoll drops closed descriptors by itself).
    match unsafe { poller.add(fd, ev) } {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => poller.modify(borrowed, ev)?,
        other => other?,
    }
    waiters.added = true;
    Ok(())
}

fn drain_eventfd(fd: &OwnedFd) {
    let mut buf = 0u64;
    // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd we own.
    unsafe { libc::read(fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
}
