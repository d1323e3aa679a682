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
    /// Ops the kernel still owns, dropped ones included (at snapshot time).
    pub in_flight: u64,
    /// Live tasks (at snapshot time).
    pub tasks: u64,
}
