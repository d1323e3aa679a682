//! Readiness backend (epoll or kqueue through `mio`, IOCP through `polling`): runs every op in
//! readiness mode.
//!
//! An op first tries its non-blocking syscall right away (data is often already there); on
//! `WouldBlock` its task registers interest in the descriptor and sleeps until the reactor
//! reports readiness, then tries again. Nothing the kernel writes outlives a syscall, so a
//! dropped op needs no cancellation: its memory is free as soon as its future is gone.
//!
//! A descriptor is armed when an op on it would block, and re-armed after a report with
//! whatever interest is still wanted. On epoll and kqueue that costs one registration per
//! descriptor (edge-triggered, both directions; every op tries its syscall before it waits, so
//! a wait always follows `WouldBlock`); on IOCP each arm is a one-shot registration.

pub(crate) mod op;
pub(crate) mod send_file;
pub(crate) mod send_many;

use std::collections::HashMap;
use std::task::Waker;
use std::time::Duration;

use coring_compat::reactor::{self, Reactor};
use coring_compat::sys::RawSource;

use crate::driver::Doorbell;
use crate::error::{Error, Result};
use crate::stats::DriverStats;
use op::Interest;

/// Hashes descriptors, which are small distinct integers: one multiplication (Fibonacci
/// hashing) spreads them over the table; the default SipHash costs more than the rest of a
/// readiness wait's bookkeeping.
#[derive(Default)]
struct FdHasher(u64);

impl std::hash::Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i32(&mut self, n: i32) {
        self.write_u64(n as u32 as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type FdMap<V> = HashMap<RawSource, V, std::hash::BuildHasherDefault<FdHasher>>;

pub(crate) struct CompatDriver {
    reactor: Reactor,
    fds: FdMap<Waiters>,
    /// Reports of the last wait (kept to reuse its allocation).
    ready: Vec<reactor::Ready>,
    stats: DriverStats,
}

/// Tasks waiting on one descriptor.
#[derive(Default)]
struct Waiters {
    read: Vec<Waker>,
    write: Vec<Waker>,
    /// Whether the descriptor is (believed to be) registered with the reactor.
    added: bool,
}

impl Waiters {
    fn interest(&self) -> reactor::Interest {
        reactor::Interest {
            read: !self.read.is_empty(),
            write: !self.write.is_empty(),
        }
    }
}

impl CompatDriver {
    pub(crate) fn new() -> Result<(CompatDriver, Doorbell)> {
        let reactor = Reactor::new().map_err(|e| Error::from_io(e, "reactor"))?;
        let bell = Doorbell::Compat(reactor.notifier());
        Ok((
            CompatDriver {
                reactor,
                fds: FdMap::default(),
                ready: Vec::new(),
                stats: DriverStats::default(),
            },
            bell,
        ))
    }

    /// Wakes `waker` when `fd` becomes ready for `interest`.
    pub(crate) fn register(&mut self, fd: RawSource, interest: Interest, waker: &Waker) {
        let waiters = self.fds.entry(fd).or_default();
        let list = match interest {
            Interest::Read => &mut waiters.read,
            Interest::Write => &mut waiters.write,
        };
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
        self.stats.ops_submitted += 1;
        if let Err(e) = arm(&self.reactor, fd, waiters) {
            // The fd cannot be watched (closed under us, or not pollable): wake the task so its
            // next attempt reports the real error instead of sleeping forever.
            tracing::debug!(fd, error = %e, "arming readiness failed; waking the waiter");
            for w in waiters.read.drain(..).chain(waiters.write.drain(..)) {
                w.wake();
            }
        }
    }

    /// Forgets a descriptor that is being closed.
    pub(crate) fn forget(&mut self, fd: RawSource) {
        if let Some(w) = self.fds.remove(&fd)
            && w.added
        {
            // Closing removes it from epoll/kqueue anyway; removing first keeps IOCP right.
            let _ = self.reactor.remove(fd);
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
        self.stats.enters += 1;
        self.ready.clear();
        if let Err(e) = self.reactor.wait(timeout, &mut self.ready) {
            panic!("waiting for readiness failed unexpectedly: {e}");
        }
        let mut woken = Vec::new();
        for ready in &self.ready {
            let fd = ready.key as RawSource;
            let Some(waiters) = self.fds.get_mut(&fd) else {
                continue;
            };
            self.stats.ops_completed += 1;
            // Errors and hang-ups come without a direction: wake everyone to find out.
            let both = !ready.read && !ready.write;
            if ready.read || both {
                woken.append(&mut waiters.read);
            }
            if ready.write || both {
                woken.append(&mut waiters.write);
            }
            let rest = waiters.interest();
            if rest.read || rest.write {
                // Re-arm for what is still wanted (free where registrations are edge-triggered).
                let _ = arm(&self.reactor, fd, waiters);
            }
        }
        for w in woken {
            w.wake();
        }
    }
}

/// (Re-)arms `fd` with the interest its waiters want.
fn arm(reactor: &Reactor, fd: RawSource, waiters: &mut Waiters) -> std::io::Result<()> {
    // SAFETY: `fd` is open: a task holding it (through its op) is registering right now, and
    // the net layer calls `forget` before closing it.
    unsafe { reactor.arm(fd, fd as usize, waiters.interest(), waiters.added) }?;
    waiters.added = true;
    Ok(())
}
