//! Per-core counters.

/// Counters of one core's driver and executor. Read a snapshot with
/// [`crate::runtime::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Ops queued for the kernel.
    pub ops_submitted: u64,
    /// Op completions received (each multishot completion counts).
    pub ops_completed: u64,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Times the SQ was full mid-turn and had to be flushed early.
    pub sq_full: u64,
    /// Turns that found the CQ overflowed (completions held by the kernel, FEAT_NODROP).
    pub cq_overflow: u64,
    /// Completions the kernel dropped (only on kernels without FEAT_NODROP).
    pub cq_dropped: u64,
    /// `io_uring_enter` calls answered EBUSY/EAGAIN (the kernel asked us to reap first).
    pub enter_busy: u64,
    /// Cancellations issued for dropped ops.
    pub cancels: u64,
    /// Cancellations the kernel refused with an unexpected error (each is also logged).
    pub cancel_failures: u64,
    /// Per-op deadlines that fired.
    pub timeouts: u64,
    /// MSG_RING doorbells sent to wake other cores.
    pub doorbells: u64,
    /// Doorbells the kernel refused (the target was then woken through its eventfd).
    pub doorbell_failures: u64,
    /// Ops the kernel still owns, dropped ones included (at snapshot time).
    pub in_flight: u64,
    /// Live tasks (at snapshot time).
    pub tasks: u64,
    /// Pipes made for `send_file`'s splices (io_uring; each core keeps a few for reuse).
    pub pipes_made: u64,
}

/// Counters kept by the net layer and the timers of one core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetStats {
    /// Connections accepted by listeners on this core.
    pub accepted: u64,
    /// Connections opened by `connect` on this core.
    pub connected: u64,
    /// Connections (streams) closed on this core.
    pub closed: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// `time::timeout` deadlines that passed.
    pub timeouts: u64,
}

impl NetStats {
    /// Connections open right now (accepted + connected - closed).
    pub fn open(&self) -> u64 {
        (self.accepted + self.connected).saturating_sub(self.closed)
    }
}

/// Everything one core counts, as of its last loop turn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoreStats {
    /// The core's index in its runtime.
    pub core: usize,
    /// Driver counters (ops, syscalls, SQ/CQ events, cancels, per-op deadlines).
    pub driver: DriverStats,
    /// Buffer pool figures.
    pub pool: crate::buf::PoolStats,
    /// Connections, bytes and timeouts.
    pub net: NetStats,
}

/// Where a core publishes its counters for other threads: once per loop turn, before the core
/// may sleep. Readers hold the lock only to copy the snapshot.
#[derive(Debug)]
pub(crate) struct Published {
    snapshot: std::sync::Mutex<CoreStats>,
}

impl Published {
    /// The slot of core `core`, reporting zeros until the core's first turn.
    pub(crate) fn new(core: usize) -> Published {
        Published {
            snapshot: std::sync::Mutex::new(CoreStats {
                core,
                ..CoreStats::default()
            }),
        }
    }

    pub(crate) fn publish(&self, stats: CoreStats) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }

    pub(crate) fn read(&self) -> CoreStats {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
