//! The driver contract: how an operation reaches the kernel and how its result comes back.
//!
//! An operation is a value (`op::Recv`, `op::Accept`, …) that owns everything the kernel may
//! touch. `OpCode` is what every operation provides, once per backend:
//!
//! - completion (`uring/op.rs`): the SQE that starts it; the CQE result comes back as-is;
//! - readiness (`compat/op.rs`): which fd and interest to wait for and the non-blocking syscall
//!   to make when ready.
//!
//! `Driver` is the per-core engine behind those ops. Exactly one backend is chosen when a core
//! starts ([`probe`] decides, the builder or `CORING_DRIVER` can force it); everything above this
//! module — net, time, the executor — is written once against `Op` and `MultiOp`.
//!
//! The lifecycle of one operation (see `lifecycle`): Submitted → Waiting(waker) →
//! Completed, or Ignored(owned memory parked) when its future is dropped before the kernel's
//! final completion; the memory is freed only after that completion arrives.

pub(crate) mod compat;
pub(crate) mod current;
mod fd;
pub(crate) mod lifecycle;
pub mod probe;

// The one place that picks what exists on this platform: the io_uring backend on Linux, an
// uninhabited stand-in elsewhere (so the contract and the lifecycle compile unchanged).
cfg_select! {
    target_os = "linux" => {
        pub(crate) mod uring;
    }
    _ => {
        #[path = "uring_none.rs"]
        pub(crate) mod uring;
    }
}

use std::time::Duration;

pub(crate) use fd::SharedFd;
pub(crate) use lifecycle::{CqeResult, MultiOp, Op, when_ready};

use crate::error::Result;
use crate::stats::DriverStats;
use probe::Capabilities;
pub use probe::DriverKind;

/// The error code of a pooled receive that found no free buffer (ENOBUFS: what io_uring
/// reports for an empty buffer ring; the readiness driver reports the same).
pub(crate) const NO_BUFFERS: i32 = libc::ENOBUFS;

/// The last completion of a multishot receive the driver paused (see the io_uring
/// driver's `MULTISHOT_QUEUED_BUFFERS`); outside the errno range, it never reaches a caller.
pub(crate) const PAUSED: i32 = -4096;

/// `IORING_CQE_F_BUFFER`: the completion carries the id of a pooled buffer it filled.
pub(crate) const CQE_F_BUFFER: u32 = 1 << 0;

/// `IORING_CQE_F_MORE`: more completions will follow for this op (multishot). The readiness
/// driver sets it too, for the multishot ops it emulates.
pub(crate) const CQE_F_MORE: u32 = 1 << 1;

/// Whether more completions follow the one with these flags.
pub(crate) fn more(flags: u32) -> bool {
    flags & CQE_F_MORE != 0
}

/// The pooled buffer a completion filled, if any.
pub(crate) fn buffer_id(flags: u32) -> Option<u16> {
    (flags & CQE_F_BUFFER != 0).then_some((flags >> 16) as u16)
}

/// What every operation provides: a name for errors, both of its halves (completion-mode
/// SQE, readiness-mode syscall), and what to do with a completion that arrives after its future
/// was dropped.
pub(crate) trait OpCode: uring::op::UringOp + compat::op::ReadyOp + 'static {
    /// The operation's name in errors (`"recv"`, `"accept"`).
    const NAME: &'static str;

    /// Called for each completion that arrives after the op's future was dropped, before the op
    /// is freed. Ops that produce resources (an accepted fd) release them here.
    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "used by the io_uring backend, which only Linux has"
        )
    )]
    fn complete_orphan(&mut self, _res: i32, _flags: u32) {}
}

/// A dropped operation whose memory waits for the kernel's last completion.
pub(crate) trait Orphan {
    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "used by the io_uring backend, which only Linux has"
        )
    )]
    fn complete(&mut self, res: i32, flags: u32);
}

/// The ring of free buffers the kernel picks from, for a pool of `count` buffers (a power of
/// two), when the chosen backend has one (io_uring); `None` means a free list.
pub(crate) fn kernel_ring(
    kind: DriverKind,
    count: u16,
) -> Option<Box<dyn crate::buf::pool::KernelRing>> {
    match kind {
        DriverKind::Uring => Some(Box::new(uring::bufring::BufRing::new(count))),
        DriverKind::Compat => None,
    }
}

/// What a write made of several ops (a file sent to a socket) needs of the stream it writes
/// to: the socket, and the stream's write deadline for each op that may wait.
pub(crate) trait WriteTarget {
    /// The socket written to.
    fn socket(&self) -> &SharedFd;

    /// Runs `op`, a write-side op on [`WriteTarget::socket`], under the stream's write
    /// deadline.
    fn with_deadline<T: OpCode>(
        &self,
        op: Op<T>,
    ) -> impl std::future::Future<Output = lifecycle::Completion<T>> + '_;
}

/// Bytes moved per round trip of `send_file` (per splice through the pipe on io_uring, per
/// sendfile call on compat).
pub const SEND_FILE_CHUNK_BYTES: usize = 1 << 20;

/// Sends `len` bytes of `file` from `offset` to `target`'s socket (fewer if the file ends
/// first) without copying them through user space where the backend can: file → pipe →
/// socket with splice on io_uring, sendfile(2) on compat, and positioned reads written out
/// where the system has no sendfile. Returns the bytes sent (the caller counts them).
pub(crate) async fn send_file(
    target: &impl WriteTarget,
    file: &SharedFd,
    offset: u64,
    len: u64,
) -> Result<u64> {
    match current::with(|d| d.kind()) {
        DriverKind::Uring => uring::send_file::send_file(target, file, offset, len).await,
        DriverKind::Compat => compat::send_file::send_file(target, file, offset, len).await,
    }
}

/// Sends each datagram to its address with as few calls as the backend allows (one
/// submission on io_uring; `sendmmsg` batches of up to 1,024 on compat where the system has
/// it); results come back in order (the caller counts the bytes), and a datagram the kernel
/// refuses does not stop the rest.
pub(crate) async fn send_many<B: crate::buf::IoBuf>(
    fd: &SharedFd,
    datagrams: Vec<(B, socket2::SockAddr)>,
) -> Vec<(Result<usize>, B)> {
    match current::with(|d| d.kind()) {
        DriverKind::Uring => uring::send_many::send_many(fd, datagrams).await,
        DriverKind::Compat => compat::send_many::send_many(fd, datagrams).await,
    }
}

/// Tells this core's driver, if any, that `fd` is about to be closed (the readiness driver
/// drops what it keeps for it, so a reused number starts clean).
fn forget_fd(fd: crate::sys::fd::RawDesc) {
    current::try_with(|driver| driver.forget_fd(fd));
}

/// What the drivers and the probe take from the runtime's settings.
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    /// SQ entries asked for (the probe fits them under RLIMIT_MEMLOCK).
    pub(crate) ring_entries: u32,
    /// SQPOLL's idle time, when asked for.
    pub(crate) sqpoll_idle: Option<Duration>,
    /// The wake-up coalescing window asked for (io_uring min-wait).
    pub(crate) coalesce: Option<Duration>,
    /// The driver asked for.
    pub(crate) driver: probe::DriverChoice,
    /// Who asked for it, for the report ("builder", "CORING_DRIVER", "default", ...).
    pub(crate) driver_source: &'static str,
}

/// How other threads end a core's blocking wait: each backend's own wake-up.
pub(crate) enum Doorbell {
    /// An eventfd on which the io_uring driver keeps a read armed.
    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "built by the io_uring backend, which only Linux has"
        )
    )]
    Uring(uring::Doorbell),
    /// The compat reactor's notification.
    Compat(coring_compat::reactor::Notifier),
}

impl Doorbell {
    /// Wakes the core (or makes its next wait return at once).
    pub(crate) fn ring(&self) {
        match self {
            Doorbell::Uring(bell) => bell.ring(),
            Doorbell::Compat(n) => {
                if let Err(e) = n.notify() {
                    tracing::warn!(error = %e, "waking a compat core failed");
                }
            }
        }
    }
}

/// The per-core driver. One backend per core, chosen at start.
#[allow(
    clippy::large_enum_variant,
    reason = "one per core, never moved after start; boxing would add a hop on every op"
)]
pub(crate) enum Driver {
    Uring(uring::UringDriver),
    Compat(compat::CompatDriver),
}

impl Driver {
    /// Builds the backend the capability report chose, and the doorbell other threads use
    /// to end its blocking wait.
    pub(crate) fn new(
        config: &DriverConfig,
        caps: &Capabilities,
        pool: &std::rc::Rc<crate::buf::pool::Pool>,
    ) -> Result<(Driver, Doorbell)> {
        Ok(match caps.driver {
            DriverKind::Uring => {
                let (d, bell) = uring::UringDriver::new(config, caps, pool)?;
                (Driver::Uring(d), bell)
            }
            DriverKind::Compat => {
                let (d, bell) = compat::CompatDriver::new()?;
                (Driver::Compat(d), bell)
            }
        })
    }

    pub(crate) fn kind(&self) -> DriverKind {
        match self {
            Driver::Uring(_) => DriverKind::Uring,
            Driver::Compat(_) => DriverKind::Compat,
        }
    }

    /// The io_uring backend; ops reach it only when they were submitted in completion mode.
    pub(crate) fn uring(&mut self) -> &mut uring::UringDriver {
        match self {
            Driver::Uring(d) => d,
            Driver::Compat(_) => unreachable!("completion-mode op on the compat driver"),
        }
    }

    /// The readiness backend.
    pub(crate) fn compat(&mut self) -> &mut compat::CompatDriver {
        match self {
            Driver::Compat(d) => d,
            Driver::Uring(_) => unreachable!("readiness-mode op on the io_uring driver"),
        }
    }

    /// Submits everything queued during this turn, then waits for completions or readiness up
    /// to `timeout` (`Some(ZERO)`: do not wait; `None`: until something happens or a remote
    /// wake-up) and dispatches them. `may_sleep` is asked last, right before a blocking wait.
    pub(crate) fn turn(&mut self, timeout: Option<Duration>, may_sleep: &dyn Fn() -> bool) {
        match self {
            Driver::Uring(d) => d.turn(timeout, may_sleep),
            Driver::Compat(d) => d.turn(timeout, may_sleep),
        }
    }

    /// Memory of dropped ops that the kernel has finished with; the caller drops it outside any
    /// driver borrow.
    pub(crate) fn take_graveyard(&mut self) -> Vec<Box<dyn Orphan>> {
        match self {
            Driver::Uring(d) => d.take_graveyard(),
            Driver::Compat(_) => Vec::new(),
        }
    }

    /// A descriptor is about to be closed.
    pub(crate) fn forget_fd(&mut self, fd: crate::sys::fd::RawDesc) {
        if let Driver::Compat(d) = self {
            d.forget(fd);
        }
    }

    /// Ops the kernel still owns (dropped ones included), or waits registered (compat).
    pub(crate) fn in_flight(&self) -> usize {
        match self {
            Driver::Uring(d) => d.in_flight(),
            Driver::Compat(d) => d.in_flight(),
        }
    }

    pub(crate) fn stats(&self) -> &DriverStats {
        match self {
            Driver::Uring(d) => d.stats(),
            Driver::Compat(d) => d.stats(),
        }
    }
}
