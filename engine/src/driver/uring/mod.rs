//! io_uring backend, Linux 5.19+ (6.1+ for every ring flag it asks for).
//!
//! One ring per core. Ops push SQEs as they are created; nothing reaches the kernel until the
//! end of the executor turn, where one `io_uring_enter` submits the whole batch and collects
//! completions (and, with DEFER_TASKRUN, runs the deferred task work). When the SQ fills up in
//! the middle of a turn, the batch so far is submitted and pushing goes on.
//!
//! user_data is the op's slab key; a few keys at the top of the range mark the driver's own
//! entries (cancels, the wait timeout, the wake-up read).

pub(crate) mod bufring;
pub(crate) mod op;
pub(crate) mod send_file;
pub(crate) mod send_many;
mod setup;

use setup::build_ring;
pub(crate) use setup::probe_ring;

use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use crate::buf::pool::Pool;
use crate::driver::lifecycle::{Completions, CqeResult, Lifecycle};
use crate::driver::probe::Capabilities;
use crate::driver::{OpCode, Orphan};
use crate::error::{Error, Result};
use crate::driver::DriverConfig;
use crate::runtime::context::CoreShared;
use crate::stats::DriverStats;

/// Completion of an ASYNC_CANCEL we issued.
const CANCEL_KEY: u64 = u64::MAX;
/// Completion of the read on the wake-up eventfd.
const WAKE_KEY: u64 = u64::MAX - 2;
/// Completion of the TIMEOUT used to bound a wait on kernels without EXT_ARG.
const WAIT_TIMEOUT_KEY: u64 = u64::MAX - 3;

/// Completion posted into this ring by another core's MSG_RING: a wake-up, nothing more.
const DOORBELL_KEY: u64 = u64::MAX - 4;
/// Completions of our own MSG_RING SQEs carry this bit plus the doorbell's slab key.
const DOORBELL_SENT_BIT: u64 = 1 << 62;

/// `IORING_ENTER_GETEVENTS` from the kernel's uapi header (not re-exported by the crate).
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;

/// Most pooled buffers a multishot receive may fill before its task has taken them. At the
/// limit the driver cancels it and the task re-arms it once it has caught up, so the rest
/// waits in the socket's own buffer (TCP flow control) instead of the core's pool: one
/// connection that does not read cannot take the buffers every other connection shares.
/// The kernel may post one more burst before the cancel lands: a multishot receive retries up
/// to 32 times for one wake-up, so a stalled task holds at most this plus about 33 buffers.
pub(crate) const MULTISHOT_QUEUED_BUFFERS: u16 = 16;

/// The timeout of a coalescing wait when no timer is due: long, but given (see `enter_wait`).
const COALESCED_IDLE_WAIT: Duration = Duration::from_secs(3600);

/// How long shutdown waits for the kernel to acknowledge cancellations before it gives up and
/// leaks what is still in flight (never frees it).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct UringDriver {
    // INVARIANT: declared first so it is dropped first. Closing the ring makes the kernel cancel
    // and retire every request, so by the time `ops` (and the memory parked in it) is dropped the
    // kernel no longer writes into any of it. `Drop` also drains explicitly before that.
    ring: IoUring,
    ops: Slab<Lifecycle>,
    /// Memory of dropped ops that the kernel has finished with.
    graveyard: Vec<Box<dyn Orphan>>,
    wake_fd: OwnedFd,
    /// INVARIANT: boxed so the address in the armed READ stays put; the read is re-armed only
    /// after its completion, so the kernel writes here at most once at a time.
    wake_buf: Box<u64>,
    wake_armed: bool,
    ext_arg: bool,
    /// The min-wait window of a sleeping enter, in µs, when coalescing is on and supported.
    coalesce_us: Option<u32>,
    /// INVARIANT: boxed and only rewritten while no wait TIMEOUT is in flight.
    wait_ts: Box<types::Timespec>,
    wait_timeout_armed: bool,
    stats: DriverStats,
    /// The pool whose ring is registered with `ring`; told when the kernel takes a buffer.
    pool: Rc<Pool>,
    /// Cores we rang with MSG_RING whose completion has not come back yet; kept alive (and
    /// their ring fds open) until it has.
    doorbells: Slab<Arc<CoreShared>>,
    /// Multishot receives found over their queue limit in this reap, cancelled after it.
    pausing: Vec<u64>,
}

/// Wakes an io_uring core from another thread: a write to the eventfd on which the core keeps
/// a read armed.
pub(crate) struct Doorbell(OwnedFd);

impl Doorbell {
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live `u64` to an eventfd we own. A full counter
        // (EAGAIN) still leaves the fd readable, which is all the wake-up needs.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&raw const one).cast(),
                size_of::<u64>(),
            )
        };
    }
}

impl UringDriver {
    pub(crate) fn new(
        config: &DriverConfig,
        caps: &Capabilities,
        pool: &Rc<Pool>,
    ) -> Result<(UringDriver, crate::driver::Doorbell)> {
        let wake_fd = eventfd()?;
        let bell = crate::driver::Doorbell::Uring(Doorbell(
            wake_fd
                .try_clone()
                .map_err(|e| Error::from_io(e, "dup eventfd"))?,
        ));
        let setup = caps
            .ring
            .as_ref()
            .ok_or_else(|| Error::new(crate::ErrorKind::Unsupported, "io_uring_setup"))?;
        let ring = build_ring(setup, config.sqpoll_idle)
            .map_err(|e| Error::from_io(e, "io_uring_setup"))?;
        let ext_arg = ring.params().is_feature_ext_arg();
        if let Some((addr, entries)) = pool.ring() {
            // SAFETY: the ring memory belongs to `pool`, which this driver keeps alive (`pool`
            // field) past the ring's closing (`ring` is dropped first).
            unsafe {
                ring.submitter()
                    .register_buf_ring_with_flags(addr, entries, bufring::POOL_GROUP, 0)
            }
            .map_err(|e| Error::from_io(e, "io_uring_register(PBUF_RING)"))?;
        }
        let driver = UringDriver {
            ring,
            ops: Slab::with_capacity(setup.entries as usize),
            graveyard: Vec::new(),
            wake_fd,
            wake_buf: Box::new(0),
            wake_armed: false,
            ext_arg,
            coalesce_us: config
                .coalesce
                .filter(|_| caps.min_wait && ext_arg)
                .map(|w| w.as_micros().clamp(1, u128::from(u32::MAX)) as u32),
            wait_ts: Box::new(types::Timespec::new()),
            wait_timeout_armed: false,
            stats: DriverStats::default(),
            pool: Rc::clone(pool),
            doorbells: Slab::new(),
            pausing: Vec::new(),
        };
        Ok((driver, bell))
    }

    pub(crate) fn submit<T: OpCode>(
        &mut self,
        op: &mut T,
        multishot: bool,
    ) -> usize {
        let key = self.ops.insert(if multishot {
            Lifecycle::Multi {
                waker: None,
                queue: Completions::default(),
                buffers: 0,
                paused: false,
            }
        } else {
            Lifecycle::Submitted
        });
        let entry = op.entry().user_data(key as u64);
        self.push(&[entry]);
        self.stats.ops_submitted += 1;
        key
    }

    pub(crate) fn poll_op(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<CqeResult> {
        let slot = self.ops.get_mut(key).expect("op key is live while polled");
        match slot {
            Lifecycle::Completed(cqe) => {
                let cqe = *cqe;
                self.ops.remove(key);
                Poll::Ready(cqe)
            }
            Lifecycle::Waiting(waker) => {
                if !waker.will_wake(cx.waker()) {
                    waker.clone_from(cx.waker());
                }
                Poll::Pending
            }
            Lifecycle::Submitted => {
                *slot = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Ignored(_) | Lifecycle::Multi { .. } => {
                unreachable!("single-shot op polled in a foreign state")
            }
        }
    }

    pub(crate) fn poll_multi(&mut self, key: usize, cx: &mut Context<'_>) -> Poll<CqeResult> {
        let Some(Lifecycle::Multi {
            waker,
            queue,
            buffers,
            ..
        }) = self.ops.get_mut(key)
        else {
            unreachable!("multishot op key is live while polled");
        };
        match queue.pop_front() {
            Some(cqe) => {
                if cqe.flags & crate::driver::CQE_F_BUFFER != 0 {
                    *buffers -= 1;
                }
                if !crate::driver::more(cqe.flags) {
                    self.ops.remove(key);
                }
                Poll::Ready(cqe)
            }
            None => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    pub(crate) fn drop_op(&mut self, key: usize, mut orphan: Box<dyn Orphan>) {
        let Some(slot) = self.ops.get_mut(key) else {
            return;
        };
        match slot {
            Lifecycle::Completed(_) => {
                self.ops.remove(key);
                self.graveyard.push(orphan);
            }
            Lifecycle::Multi { queue, .. } => {
                // Completions that were queued but never taken still carry resources.
                let mut ended = false;
                for cqe in queue.drain() {
                    orphan.complete(cqe.res, cqe.flags);
                    ended |= !crate::driver::more(cqe.flags);
                }
                if ended {
                    self.ops.remove(key);
                    self.graveyard.push(orphan);
                } else {
                    *slot = Lifecycle::Ignored(orphan);
                    self.cancel(key as u64);
                }
            }
            Lifecycle::Submitted | Lifecycle::Waiting(_) => {
                *slot = Lifecycle::Ignored(orphan);
                self.cancel(key as u64);
            }
            Lifecycle::Ignored(_) => unreachable!("op dropped twice"),
        }
    }

    /// An op's deadline passed: asks the kernel to cancel it. The op completes as usual,
    /// with -ECANCELED or, if it won the race, with its result.
    pub(crate) fn cancel_op(&mut self, key: usize) {
        if let Some(Lifecycle::Submitted | Lifecycle::Waiting(_)) = self.ops.get(key) {
            self.stats.timeouts += 1;
            self.cancel(key as u64);
        }
    }

    /// Asks the kernel to end the multishot op `key`; its remaining completions, then a final
    /// one, still come to its owner.
    pub(crate) fn cancel_multi(&mut self, key: usize) {
        if let Some(Lifecycle::Multi { .. } | Lifecycle::Submitted | Lifecycle::Waiting(_)) =
            self.ops.get(key)
        {
            self.cancel(key as u64);
        }
    }

    /// This ring's fd (duplicated so other cores can target it with MSG_RING).
    pub(crate) fn ring_fd(&self) -> std::io::Result<OwnedFd> {
        let fd = self.ring.as_raw_fd();
        // SAFETY: the ring fd is open for as long as `self.ring` lives; we only duplicate it.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
    }

    /// Queues a MSG_RING that posts a wake-up completion into `target`'s ring; it goes to the
    /// kernel with the rest of this turn's batch. False if `target` has no ring.
    pub(crate) fn ring_doorbell(&mut self, target: Arc<CoreShared>) -> bool {
        let Some(fd) = target.ring_fd() else {
            return false;
        };
        let key = self.doorbells.insert(target);
        let entry = opcode::MsgRingData::new(types::Fd(fd), 0, DOORBELL_KEY, None)
            .build()
            .user_data(DOORBELL_SENT_BIT | key as u64);
        self.push(&[entry]);
        self.stats.doorbells += 1;
        true
    }

    pub(crate) fn take_graveyard(&mut self) -> Vec<Box<dyn Orphan>> {
        std::mem::take(&mut self.graveyard)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// One driver turn: submit the batch, maybe wait, dispatch completions.
    pub(crate) fn turn(&mut self, timeout: Option<Duration>, may_sleep: &dyn Fn() -> bool) {
        if self.ring.submission().cq_overflow() {
            // With FEAT_NODROP the kernel holds the overflow and hands it back on this enter.
            self.stats.cq_overflow += 1;
        }
        let wait = timeout != Some(Duration::ZERO);
        if wait {
            self.arm_wake_read();
        }
        // Checked last: a remote thread that queued work before we flagged ourselves asleep is
        // seen here; one that queues after sees the flag and writes the eventfd.
        let wait = wait && may_sleep();
        let result = if wait {
            self.enter_wait(timeout)
        } else {
            self.enter(0)
        };
        if let Err(e) = result {
            match e.raw_os_error() {
                // Interrupted, timed out, or the kernel wants us to reap first: all handled by
                // reaping below and coming back next turn.
                Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN) => {
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        self.stats.enter_busy += 1;
                    }
                }
                _ => panic!("io_uring_enter failed unexpectedly: {e}"),
            }
        }
        self.reap();
    }

    /// Pushes SQEs as one group, flushing the SQ to the kernel first if they do not fit.
    fn push(&mut self, entries: &[squeue::Entry]) {
        loop {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() >= entries.len() {
                for entry in entries {
                    // SAFETY: every SQE built by this driver points only at memory owned by its
                    // op (INVARIANT of each op struct in `op.rs`), by a parked orphan, or by the
                    // driver itself (`wake_buf`, `wait_ts`), all of which outlive the request.
                    // Room was checked just above.
                    unsafe { sq.push(entry).expect("room checked") };
                }
                return;
            }
            drop(sq);
            self.stats.sq_full += 1;
            self.flush();
        }
    }

    /// Submits what is queued without waiting, for an SQ that is full mid-turn. Completions it
    /// brings are dispatched so the CQ cannot overflow while we keep pushing.
    fn flush(&mut self) {
        loop {
            match self.enter(0) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    self.stats.enter_busy += 1;
                    self.reap();
                }
                Err(e) => panic!("io_uring_enter failed unexpectedly: {e}"),
            }
        }
        self.reap();
    }

    /// `io_uring_enter(to_submit, min_complete, GETEVENTS)`. GETEVENTS is always set: with
    /// DEFER_TASKRUN, completions are only produced while we are in the kernel asking for them.
    fn enter(&mut self, min_complete: u32) -> std::io::Result<()> {
        self.stats.enters += 1;
        if self.ring.params().is_setup_sqpoll() {
            // The kernel thread takes the SQEs; the crate's helper wakes it when it sleeps
            // (SQ_WAKEUP). No DEFER_TASKRUN in this mode, so GETEVENTS is only needed to wait.
            return self
                .ring
                .submitter()
                .submit_and_wait(min_complete as usize)
                .map(drop);
        }
        let to_submit = self.ring.submission().len() as u32;
        let flags = IORING_ENTER_GETEVENTS;
        // SAFETY: a plain enter with no extra argument; the SQEs it submits point at memory that
        // outlives the requests (see `push`).
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, min_complete, flags, None)
        }
        .map(drop)
    }

    fn enter_wait(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        let due = timeout.unwrap_or(COALESCED_IDLE_WAIT);
        // The window never outlasts the timeout: the kernel sleeps through the whole window
        // before it looks at the timeout, so a timer due sooner would fire late.
        let window = self
            .coalesce_us
            .map(|w| w.min(u32::try_from(due.as_micros()).unwrap_or(u32::MAX)))
            .filter(|w| *w > 0);
        if let Some(window) = window {
            // Min-wait (6.12): sleep until `COALESCE_BATCH` completions are ready, or `window`
            // has passed with at least one, or the timeout. The timeout must be given: without
            // one the kernel ends the wait at `window` even with nothing ready.
            let ts = types::Timespec::from(due);
            let args = types::SubmitArgs::new().timespec(&ts).min_wait_usec(window);
            self.stats.enters += 1;
            return self
                .ring
                .submitter()
                .submit_with_args(crate::runtime::COALESCE_BATCH as usize, &args)
                .map(drop);
        }
        let Some(timeout) = timeout else {
            return self.enter(1);
        };
        if self.ext_arg {
            // EXT_ARG (5.11): the timeout rides along with the enter; no SQE needed.
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.stats.enters += 1;
            return self.ring.submitter().submit_with_args(1, &args).map(drop);
        }
        if !self.wait_timeout_armed {
            *self.wait_ts = types::Timespec::from(timeout);
            let entry = opcode::Timeout::new(&*self.wait_ts)
                .build()
                .user_data(WAIT_TIMEOUT_KEY);
            self.push(&[entry]);
            self.wait_timeout_armed = true;
        }
        self.enter(1)
    }

    fn arm_wake_read(&mut self) {
        if self.wake_armed {
            return;
        }
        let entry = opcode::Read::new(
            types::Fd(self.wake_fd.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(WAKE_KEY);
        self.push(&[entry]);
        self.wake_armed = true;
    }

    /// Queues an ASYNC_CANCEL for the op. `push` flushes a full SQ and retries, so the cancel
    /// always gets in; its own failure is reported when its completion comes back.
    fn cancel(&mut self, key: u64) {
        self.stats.cancels += 1;
        let entry = opcode::AsyncCancel::new(key).build().user_data(CANCEL_KEY);
        self.push(&[entry]);
    }

    fn reap(&mut self) {
        let UringDriver {
            ring,
            ops,
            graveyard,
            stats,
            wake_armed,
            wait_timeout_armed,
            pool,
            doorbells,
            pausing,
            ..
        } = self;
        let mut cq = ring.completion();
        let dropped = u64::from(cq.overflow());
        if dropped > stats.cq_dropped {
            // Only without FEAT_NODROP (5.5) are completions lost; the count says the CQ is
            // too small for the load.
            stats.cq_dropped = dropped;
        }
        for entry in &mut cq {
            let cqe = CqeResult {
                res: entry.result(),
                flags: entry.flags(),
            };
            match entry.user_data() {
                CANCEL_KEY => {
                    // ENOENT: already completed; EALREADY: being cancelled. Anything else means
                    // the cancel itself failed and the op runs to its normal end: report it.
                    if cqe.res < 0 && cqe.res != -libc::ENOENT && cqe.res != -libc::EALREADY {
                        stats.cancel_failures += 1;
                        tracing::warn!(
                            error = %Error::from_os(-cqe.res, "async_cancel"),
                            "io_uring cancel failed; the op stays parked until it completes"
                        );
                    }
                }
                WAKE_KEY => *wake_armed = false,
                DOORBELL_KEY => {}
                key if key & DOORBELL_SENT_BIT != 0 && key < WAIT_TIMEOUT_KEY => {
                    let target = doorbells.try_remove((key & !DOORBELL_SENT_BIT) as usize);
                    if cqe.res < 0
                        && let Some(target) = target
                    {
                        // The target's CQ was full or its ring is gone: use its eventfd.
                        stats.doorbell_failures += 1;
                        target.ring_doorbell();
                    }
                }
                WAIT_TIMEOUT_KEY => *wait_timeout_armed = false,
                key => {
                    stats.ops_completed += 1;
                    if cqe.flags & crate::driver::CQE_F_BUFFER != 0 {
                        pool.consumed_by_kernel();
                    }
                    if complete(ops, graveyard, key as usize, cqe) {
                        pausing.push(key);
                    }
                }
            }
        }
        drop(cq);
        for key in std::mem::take(&mut self.pausing) {
            self.cancel(key);
        }
    }
}

/// Hands one completion to its op's slot. Returns whether the op is a multishot receive
/// whose task fell behind and must be cancelled (see `MULTISHOT_QUEUED_BUFFERS`).
fn complete(
    ops: &mut Slab<Lifecycle>,
    graveyard: &mut Vec<Box<dyn Orphan>>,
    key: usize,
    mut cqe: CqeResult,
) -> bool {
    let Some(slot) = ops.get_mut(key) else {
        unreachable!("completion for an unknown op {key}");
    };
    match slot {
        Lifecycle::Submitted => *slot = Lifecycle::Completed(cqe),
        Lifecycle::Waiting(_) => {
            if let Lifecycle::Waiting(waker) = std::mem::replace(slot, Lifecycle::Completed(cqe)) {
                waker.wake();
            }
        }
        Lifecycle::Multi {
            waker,
            queue,
            buffers,
            paused,
        } => {
            let more = crate::driver::more(cqe.flags);
            if *paused && !more && cqe.res == -libc::ECANCELED {
                // Our cancel ended it, not the peer or the kernel: the task re-arms it.
                cqe.res = crate::driver::PAUSED;
            }
            if cqe.flags & crate::driver::CQE_F_BUFFER != 0 {
                *buffers += 1;
            }
            queue.push_back(cqe);
            if let Some(w) = waker.take() {
                w.wake();
            }
            if more && !*paused && *buffers >= MULTISHOT_QUEUED_BUFFERS {
                *paused = true;
                return true;
            }
        }
        Lifecycle::Ignored(orphan) => {
            orphan.complete(cqe.res, cqe.flags);
            if !crate::driver::more(cqe.flags)
                && let Lifecycle::Ignored(orphan) = ops.remove(key)
            {
                graveyard.push(orphan);
            }
        }
        Lifecycle::Completed(_) => unreachable!("second completion for a single-shot op"),
    }
    false
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // SQEs queued in the last turn still go out: a doorbell to another core among them
        // must not be lost.
        let _ = self.enter(0);
        self.reap();
        // Cancel everything still in flight and wait (bounded) for the kernel to let go of it.
        let keys: Vec<u64> = self.ops.iter().map(|(k, _)| k as u64).collect();
        for key in keys {
            self.cancel(key);
        }
        let give_up = std::time::Instant::now() + DRAIN_TIMEOUT;
        while (!self.ops.is_empty() || !self.doorbells.is_empty())
            && std::time::Instant::now() < give_up
        {
            let _ = self.enter_wait(Some(Duration::from_millis(10)));
            self.reap();
        }
        if !self.ops.is_empty() {
            tracing::warn!(
                ops = self.ops.len(),
                "ring closed with ops still in flight; their memory is leaked, not freed"
            );
            for (_, slot) in std::mem::take(&mut self.ops) {
                std::mem::forget(slot);
            }
        }
        // `ring` is dropped first (field order), then the now-empty slab.
    }
}

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::last_os("eventfd"));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}
