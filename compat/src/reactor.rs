//! Readiness on one OS: descriptors, interest, a bounded wait.
//!
//! The driver arms a descriptor whenever an op on it would block, and again after each report
//! while waiters remain; what that costs is the backend's business. Unix runs on `mio` (epoll,
//! kqueue): the first arm registers the descriptor for both directions, edge-triggered, and
//! later arms are free, so a wait is one `epoll_wait`/`kevent` call. That is sound because an
//! op only waits after its syscall said `WouldBlock`, so the next change is reported. Windows
//! runs on `polling` (IOCP through AFD), whose registrations are one-shot: every arm is a call.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::sys::RawSource;

cfg_select! {
    unix => {
        use edge as backend;
    }
    _ => {
        use oneshot as backend;
    }
}

/// The reactor of one thread.
#[derive(Debug)]
pub struct Reactor(backend::Reactor);

/// Ends a [`Reactor::wait`] from any thread.
#[derive(Clone, Debug)]
pub struct Notifier(backend::Notifier);

impl Notifier {
    /// Wakes the reactor's current or next wait.
    pub fn notify(&self) -> io::Result<()> {
        self.0.notify()
    }
}

impl Reactor {
    /// A reactor on the platform's readiness API.
    pub fn new() -> io::Result<Reactor> {
        backend::Reactor::new().map(Reactor)
    }

    /// A handle that wakes this reactor from other threads.
    pub fn notifier(&self) -> Notifier {
        Notifier(self.0.notifier())
    }

    /// Arms `source` for a report of `interest` under `key`; call it again after a report while
    /// interest remains. `added` says whether it was armed before; the call adapts if that
    /// belief is stale (a closed and reused descriptor). Only wait after the descriptor's
    /// syscall said `WouldBlock`: edge-triggered backends report changes, not states.
    ///
    /// # Safety
    ///
    /// `source` must stay open until [`Reactor::remove`] is called for it or it is closed (the
    /// platform then forgets it).
    pub unsafe fn arm(
        &self,
        source: RawSource,
        key: usize,
        interest: Interest,
        added: bool,
    ) -> io::Result<()> {
        debug_assert!(key < MAX_KEY);
        // SAFETY: per the caller's contract.
        unsafe { self.0.arm(source, key, interest, added) }
    }

    /// Stops watching `source` (before it is closed).
    pub fn remove(&self, source: RawSource) -> io::Result<()> {
        self.0.remove(source)
    }

    /// Waits up to `timeout` (`None`: until something is ready or a notification) and
    /// appends a report per ready source to `out`. On Unix timeouts have millisecond
    /// resolution (rounded up).
    pub fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Ready>) -> io::Result<()> {
        match self.0.wait(timeout, out) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            other => other,
        }
    }
}

/// What to wait for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Readable (or a connection to accept, or end of stream).
    pub read: bool,
    /// Writable (or a connect that finished).
    pub write: bool,
}

/// A readiness report: the key registered with the source and what it is ready for. A report
/// with neither flag is an error or hang-up: retry both directions to learn which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The key given at registration.
    pub key: usize,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
}

/// Keys at or above this are reserved (the wake-up: `usize::MAX - 1` with mio, `usize::MAX` with
/// polling).
pub const MAX_KEY: usize = usize::MAX - 1;

/// Unix: `mio` over epoll or kqueue, each descriptor registered once for both directions.
#[cfg(unix)]
mod edge {
    use super::*;
    use mio::unix::SourceFd;
    use mio::{Events, Poll, Token, Waker};

    /// The key of the cross-thread wake-up.
    const WAKE: Token = Token(MAX_KEY);

    #[derive(Debug)]
    pub(super) struct Reactor {
        poll: Poll,
        events: Events,
        waker: Arc<Waker>,
    }

    #[derive(Clone, Debug)]
    pub(super) struct Notifier(Arc<Waker>);

    impl Notifier {
        pub(super) fn notify(&self) -> io::Result<()> {
            self.0.wake()
        }
    }

    impl Reactor {
        pub(super) fn new() -> io::Result<Reactor> {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            Ok(Reactor {
                poll,
                events: Events::with_capacity(1024),
                waker,
            })
        }

        pub(super) fn notifier(&self) -> Notifier {
            Notifier(Arc::clone(&self.waker))
        }

        /// Registered for both directions, edge-triggered, the first time; free after that.
        pub(super) unsafe fn arm(
            &self,
            source: RawSource,
            key: usize,
            _interest: Interest,
            added: bool,
        ) -> io::Result<()> {
            if added {
                return Ok(());
            }
            let registry = self.poll.registry();
            let both = mio::Interest::READABLE | mio::Interest::WRITABLE;
            let mut fd = SourceFd(&source);
            match registry.register(&mut fd, Token(key), both) {
                // A closed and reused number still registered: take the new descriptor's place.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    registry.reregister(&mut fd, Token(key), both)
                }
                other => other,
            }
        }

        pub(super) fn remove(&self, source: RawSource) -> io::Result<()> {
            self.poll.registry().deregister(&mut SourceFd(&source))
        }

        pub(super) fn wait(
            &mut self,
            timeout: Option<Duration>,
            out: &mut Vec<Ready>,
        ) -> io::Result<()> {
            self.poll.poll(&mut self.events, timeout)?;
            for ev in self.events.iter() {
                if ev.token() == WAKE {
                    continue; // the wait ending was the point
                }
                // Errors and hang-ups count for both directions: the next syscall says which.
                let failed = ev.is_error();
                out.push(Ready {
                    key: ev.token().0,
                    read: ev.is_readable() || ev.is_read_closed() || failed,
                    write: ev.is_writable() || ev.is_write_closed() || failed,
                });
            }
            Ok(())
        }
    }
}

/// Windows: `polling` over IOCP (AFD), one-shot registrations re-armed per wait.
#[cfg(not(unix))]
mod oneshot {
    use super::*;
    use polling::{Event, Events, Poller};

    #[derive(Debug)]
    pub(super) struct Reactor {
        poller: Arc<Poller>,
        events: Events,
    }

    #[derive(Clone, Debug)]
    pub(super) struct Notifier(Arc<Poller>);

    impl Notifier {
        pub(super) fn notify(&self) -> io::Result<()> {
            self.0.notify()
        }
    }

    impl Reactor {
        pub(super) fn new() -> io::Result<Reactor> {
            Ok(Reactor {
                poller: Arc::new(Poller::new()?),
                events: Events::new(),
            })
        }

        pub(super) fn notifier(&self) -> Notifier {
            Notifier(Arc::clone(&self.poller))
        }

        /// One report of `interest`, then disarmed until armed again.
        pub(super) unsafe fn arm(
            &self,
            source: RawSource,
            key: usize,
            interest: Interest,
            added: bool,
        ) -> io::Result<()> {
            let ev = Event::new(key, interest.read, interest.write);
            if added {
                match crate::sys::modify(&self.poller, source, ev) {
                    Err(e) if crate::sys::is_not_registered(&e) => {}
                    other => return other,
                }
            }
            // SAFETY: the caller keeps `source` open while registered.
            match unsafe { self.poller.add(source, ev) } {
                Err(e) if crate::sys::is_already_registered(&e) => {
                    crate::sys::modify(&self.poller, source, ev)
                }
                other => other,
            }
        }

        pub(super) fn remove(&self, source: RawSource) -> io::Result<()> {
            crate::sys::delete(&self.poller, source)
        }

        pub(super) fn wait(
            &mut self,
            timeout: Option<Duration>,
            out: &mut Vec<Ready>,
        ) -> io::Result<()> {
            self.events.clear();
            self.poller.wait(&mut self.events, timeout)?;
            for ev in self.events.iter() {
                out.push(Ready {
                    key: ev.key,
                    read: ev.readable,
                    write: ev.writable,
                });
            }
            Ok(())
        }
    }
}
