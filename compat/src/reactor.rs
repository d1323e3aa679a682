//! Readiness on one OS: descriptors, interest, a bounded wait.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use polling::{Event, Events, Poller};

use crate::sys::RawSource;

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

/// Keys at or above this are reserved (`polling` uses `usize::MAX` for its own wake-ups).
pub const MAX_KEY: usize = usize::MAX - 1;

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
