//! Readiness on one OS: descriptors, interest, a bounded wait.
//!
//! Unix runs on `mio` (epoll, kqueue): descriptors are registered once, edge-triggered, and a
//! wait is one `epoll_wait`/`kevent` call. Windows runs on `polling` (IOCP through AFD), whose
//! registrations are one-shot and re-armed per wait.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::sys::RawSource;

cfg_select! {
    unix => {
        pub use edge::{Notifier, Reactor};
    }
    _ => {
        pub use oneshot::{Notifier, Reactor};
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

/// The Unix reactor: `mio` over epoll or kqueue.
#[cfg(unix)]
mod edge {
    use super::*;
    use mio::unix::SourceFd;
    use mio::{Events, Poll, Token, Waker};

    /// The key of the cross-thread wake-up.
    const WAKE: Token = Token(MAX_KEY);

    /// The reactor of one thread.
    pub struct Reactor {
        poll: Poll,
        events: Events,
        waker: Arc<Waker>,
    }

    impl std::fmt::Debug for Reactor {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Reactor").finish_non_exhaustive()
        }
    }

    /// Ends a [`Reactor::wait`] from any thread.
    #[derive(Clone)]
    pub struct Notifier {
        waker: Arc<Waker>,
    }

    impl std::fmt::Debug for Notifier {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Notifier").finish_non_exhaustive()
        }
    }

    impl Notifier {
        /// Wakes the reactor's current or next wait.
        pub fn notify(&self) -> io::Result<()> {
            self.waker.wake()
        }
    }

    fn interest_of(interest: Interest) -> mio::Interest {
        match (interest.read, interest.write) {
            (_, false) => mio::Interest::READABLE,
            (false, true) => mio::Interest::WRITABLE,
            (true, true) => mio::Interest::READABLE | mio::Interest::WRITABLE,
        }
    }

    impl Reactor {
        /// A reactor on the platform's readiness API.
        pub fn new() -> io::Result<Reactor> {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            Ok(Reactor {
                poll,
                events: Events::with_capacity(1024),
                waker,
            })
        }

        /// A handle that wakes this reactor from other threads.
        pub fn notifier(&self) -> Notifier {
            Notifier {
                waker: Arc::clone(&self.waker),
            }
        }

        /// Whether [`Reactor::watch`] is available: always, with epoll and kqueue.
        pub fn supports_edges(&self) -> bool {
            true
        }

        /// Watches `source` for both directions until it is removed, reporting each change
        /// (edge-triggered): registered once per descriptor, never re-armed. A report comes
        /// when the descriptor *becomes* ready, so a caller must have seen `WouldBlock` before
        /// it waits.
        ///
        /// # Safety
        ///
        /// `source` must stay open until [`Reactor::remove`] is called for it or it is closed
        /// (the platform then forgets it).
        pub unsafe fn watch(&self, source: RawSource, key: usize) -> io::Result<()> {
            let both = Interest {
                read: true,
                write: true,
            };
            // SAFETY: per the caller's contract.
            unsafe { self.arm(source, key, both, false) }
        }

        /// Registers `source` for `interest` under `key` (edge-triggered here: registering
        /// again only changes the interest). `added` says whether it is already registered;
        /// the call adapts if that belief is stale (a closed and reused descriptor).
        ///
        /// # Safety
        ///
        /// As for [`Reactor::watch`].
        pub unsafe fn arm(
            &self,
            source: RawSource,
            key: usize,
            interest: Interest,
            added: bool,
        ) -> io::Result<()> {
            debug_assert!(key < MAX_KEY);
            let registry = self.poll.registry();
            let (token, interest) = (Token(key), interest_of(interest));
            let mut fd = SourceFd(&source);
            if added {
                match registry.reregister(&mut fd, token, interest) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    other => return other,
                }
            }
            match registry.register(&mut fd, token, interest) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    registry.reregister(&mut fd, token, interest)
                }
                other => other,
            }
        }

        /// Stops watching `source` (before it is closed).
        pub fn remove(&self, source: RawSource) -> io::Result<()> {
            self.poll.registry().deregister(&mut SourceFd(&source))
        }

        /// Waits up to `timeout` (`None`: until something is ready or a notification) and
        /// appends a report per ready source to `out`. Timeouts have millisecond resolution
        /// (rounded up).
        pub fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Ready>) -> io::Result<()> {
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(e),
            }
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

/// The Windows reactor: `polling` over IOCP (AFD), one-shot registrations.
#[cfg(not(unix))]
mod oneshot {
    use super::*;
    use polling::{Event, Events, PollMode, Poller};

    /// The reactor of one thread.
    pub struct Reactor {
        poller: Arc<Poller>,
        events: Events,
    }

    impl std::fmt::Debug for Reactor {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Reactor").finish_non_exhaustive()
        }
    }

    /// Ends a [`Reactor::wait`] from any thread.
    #[derive(Clone)]
    pub struct Notifier {
        poller: Arc<Poller>,
    }

    impl std::fmt::Debug for Notifier {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Notifier").finish_non_exhaustive()
        }
    }

    impl Notifier {
        /// Wakes the reactor's current or next wait.
        pub fn notify(&self) -> io::Result<()> {
            self.poller.notify()
        }
    }

    impl Reactor {
        /// A reactor on the platform's readiness API.
        pub fn new() -> io::Result<Reactor> {
            Ok(Reactor {
                poller: Arc::new(Poller::new()?),
                events: Events::new(),
            })
        }

        /// A handle that wakes this reactor from other threads.
        pub fn notifier(&self) -> Notifier {
            Notifier {
                poller: Arc::clone(&self.poller),
            }
        }

        /// Arms `source` for one readiness report of `interest` under `key` (one-shot: after a
        /// report, arm it again). `added` says whether it is already registered; the call adapts
        /// if that belief is stale (a closed and reused descriptor).
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

        /// Whether [`Reactor::watch`] is available (`polling`'s IOCP backend reports no
        /// edges, so the driver arms one-shot registrations instead).
        pub fn supports_edges(&self) -> bool {
            self.poller.supports_edge()
        }

        /// Watches `source` for both directions until it is removed, reporting each change
        /// (edge-triggered): registered once per descriptor, never re-armed. A report comes when
        /// the descriptor *becomes* ready, so a caller must have seen `WouldBlock` before it waits.
        ///
        /// # Safety
        ///
        /// As for [`Reactor::arm`].
        pub unsafe fn watch(&self, source: RawSource, key: usize) -> io::Result<()> {
            debug_assert!(key < MAX_KEY);
            let ev = Event::all(key);
            // SAFETY: the caller keeps `source` open while registered.
            match unsafe { self.poller.add_with_mode(source, ev, PollMode::Edge) } {
                // A closed and reused number still registered: take the new descriptor's place.
                Err(e) if crate::sys::is_already_registered(&e) => {
                    crate::sys::modify_with_mode(&self.poller, source, ev, PollMode::Edge)
                }
                other => other,
            }
        }

        /// Stops watching `source` (before it is closed).
        pub fn remove(&self, source: RawSource) -> io::Result<()> {
            crate::sys::delete(&self.poller, source)
        }

        /// Waits up to `timeout` (`None`: until something is ready or a notification) and
        /// appends a report per ready source to `out`.
        pub fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Ready>) -> io::Result<()> {
            self.events.clear();
            match self.poller.wait(&mut self.events, timeout) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(e),
            }
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
